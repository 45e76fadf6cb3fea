"""``ensemble``: checkpoints as one model for every command after training. Two copies of one checkpoint are
that checkpoint (test, predict, load, export); members are re-normalised exactly; members that predict other
classes are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import TinyRun, assert_one_line_error, tiny_args

import lightning_seg
from lightning_seg.checkpoints.record import RECORD_KEY
from lightning_seg.cli import main, run_cli
from lightning_seg.errors import ConfigError
from lightning_seg.task.ensemble import EnsembleNet, check_members


def _pngs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.glob("*_index.png"))}


def test_an_ensemble_of_one_checkpoint_twice_is_that_checkpoint(
    tiny_run: TinyRun, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "ensemble"
    assert (
        main(["ensemble", "--checkpoints", str(tiny_run.best), str(tiny_run.best), "--output", str(output)])
        == 0
    )
    described = json.loads((output / "ensemble.json").read_text())
    assert [m["weight"] for m in described["members"]] == [0.5, 0.5]
    config = output / "config.yaml"
    runs = tmp_path / "runs"
    quiet = ["--trainer.enable_progress_bar=false"]
    single = run_cli(["test", *tiny_args(runs), "--ckpt_path", str(tiny_run.best)])
    both = run_cli(["test", "--config", str(config), *quiet])
    assert single is not None and both is not None
    for key in ("test/mIoU", "test/dice", "test/acc"):
        assert float(both.trainer.callback_metrics[key]) == float(single.trainer.callback_metrics[key])
    # the loss of log(mean p) = the single model's loss
    assert float(both.trainer.callback_metrics["test/loss/ce"]) == pytest.approx(
        float(single.trainer.callback_metrics["test/loss/ce"]), abs=1e-5
    )
    predicted_single = run_cli(["predict", *tiny_args(runs), "--ckpt_path", str(tiny_run.best)])
    predicted_both = run_cli(["predict", "--config", str(config), *quiet])
    pngs = _pngs(Path(predicted_both.trainer.log_dir) / "predictions")
    assert pngs and pngs == _pngs(Path(predicted_single.trainer.log_dir) / "predictions")
    # the Python API and the exported graph: one net whose softmax is the members' mean probability
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    alone = lightning_seg.load(tiny_run.best).predict(image, probabilities=True)
    together = lightning_seg.load(output / "checkpoints" / "ensemble.ckpt").predict(image, probabilities=True)
    assert torch.equal(alone.classes, together.classes)
    torch.testing.assert_close(together.probabilities, alone.probabilities, atol=1e-6, rtol=0)
    capsys.readouterr()
    assert main(["export", "--config", str(config), "--formats=[onnx]", *quiet]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("export: onnx ") and "class agreement 100.0000%" in line for line in lines)


def test_members_are_renormalised_to_their_own_statistics(tiny_run: TinyRun) -> None:
    member = lightning_seg.load(tiny_run.best).module
    image = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(member.mean).view(1, 3, 1, 1), torch.tensor(member.std).view(1, 3, 1, 1)
    other_mean, other_std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    ensemble = EnsembleNet(member.num_classes, [member], input_mean=other_mean, input_std=other_std).eval()
    given = (image - torch.tensor(other_mean).view(1, 3, 1, 1)) / torch.tensor(other_std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = member((image - mean) / std).mask.softmax(1)
        torch.testing.assert_close(ensemble(given)["mask"].softmax(1), expected, atol=1e-5, rtol=0)


def test_members_that_predict_other_classes_or_bad_weights_are_refused_in_one_line(
    tiny_run: TinyRun, tmp_path: Path, capsys
) -> None:
    import shutil

    other_run = tmp_path / "other" / "version_0"
    shutil.copytree(tiny_run.run, other_run)
    other = other_run / "checkpoints" / tiny_run.best.name
    checkpoint = torch.load(other, weights_only=True)
    checkpoint[RECORD_KEY]["model"]["init_args"]["class_names"] = ["sky", "road", "car"]
    torch.save(checkpoint, other)
    output = tmp_path / "ensemble"
    assert main(["ensemble", "--checkpoints", str(tiny_run.best), str(other), "--output", str(output)]) == 2
    assert_one_line_error(
        capsys, "has class_names ['sky', 'road', 'car']", "members must predict the same classes"
    )
    assert not output.exists()  # nothing half-written
    assert (
        main(["ensemble", "--checkpoints", str(tiny_run.best), "--weights", "1", "2", "--output", "x"]) == 2
    )
    assert_one_line_error(capsys, "ensemble --weights: 2 weights for 1 checkpoints")
    member = lightning_seg.load(tiny_run.best).module
    for weights in ([-1.0], [float("nan")], [0.0], [1.0, 1.0]):
        with pytest.raises(ConfigError, match="one finite, non-negative weight per member"):
            EnsembleNet(
                member.num_classes, [member], weights=weights, input_mean=(0,) * 3, input_std=(1,) * 3
            )
    assert main(["ensemble", "--cv", str(tmp_path)]) == 2
    assert_one_line_error(capsys, "no summary.json (is it a cv folder? run cv first)")
    # never into a run folder: its records describe its own weights
    assert main(["ensemble", "--checkpoints", str(tiny_run.best), "--output", str(tiny_run.run)]) == 2
    assert_one_line_error(capsys, "holds a run (config.yaml) that is not an ensemble")
    # members that decide differently, or prepare images differently, are refused before anything is built
    record = torch.load(tiny_run.best, weights_only=True)[RECORD_KEY]
    for change, needle in (
        (("model", "init_args", "label_mode"), "has label_mode"),
        (("model", "init_args", "binary_threshold"), "has binary_threshold"),
        (("input", "eval_augmentations"), "prepares images with data.eval_augmentations"),
    ):
        other = json.loads(json.dumps(record))
        *path, key = change
        target = other
        for part in path:
            target = target[part]
        target[key] = (
            [{"class_path": "kornia.augmentation.Normalize"}] if key == "eval_augmentations" else 0.3
        )
        with pytest.raises(ConfigError, match=needle):
            check_members([record, other])
