"""``cv``: folds that are disjoint, stratified and grouped; the data module's fold splits; k tiny fits in their
own processes, scored on their folds, as mean ± std; a re-run keeps what is done; bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from data_trees import camvid_tree, voc_tree, write_index_pair
from helpers import DEFAULT_CONFIG, TINY_CALLBACKS, assert_one_line_error

from lightning_seg.cli import main
from lightning_seg.data import CamVidDataModule, FolderDataModule, VOCDataModule
from lightning_seg.data.folds import assign_folds, group_keys
from lightning_seg.errors import ConfigError

GROUPS = r"^(d\d+)_"


def test_folds_cover_every_sample_once_spread_each_class_and_keep_groups() -> None:
    generator = torch.Generator().manual_seed(3)
    presence = torch.rand(60, 4, generator=generator) < torch.tensor([0.9, 0.5, 0.2, 0.05])
    presence[:3, 3] = True  # at least three images of the rare class
    singles = [f"s{i}" for i in range(60)]
    folds = assign_folds(presence, singles, 3, seed=0)
    assert sorted(set(folds)) == [0, 1, 2] and len(folds) == 60
    sizes = torch.bincount(torch.tensor(folds), minlength=3)
    assert int(sizes.max() - sizes.min()) <= 1
    per_fold = torch.stack([presence[torch.tensor(folds) == f].sum(0) for f in range(3)])
    # each class's images spread over the folds within one image of each other where they are rare
    assert int(per_fold[:, 3].max() - per_fold[:, 3].min()) <= 1
    assert int(per_fold[:, 2].max() - per_fold[:, 2].min()) <= 2
    assert assign_folds(presence, singles, 3, seed=0) == folds  # seeded
    assert assign_folds(presence, singles, 3, seed=1) != folds
    # groups: every group's samples share one fold, and the folds stay close in size
    groups = group_keys([f"d{i // 4}_f{i}" for i in range(60)], GROUPS)
    grouped = assign_folds(presence, groups, 3, seed=0)
    for group in set(groups):
        assert len({f for f, g in zip(grouped, groups, strict=True) if g == group}) == 1
    sizes = torch.bincount(torch.tensor(grouped), minlength=3)
    assert int(sizes.max() - sizes.min()) <= 4  # one group of 4


def test_groups_that_cannot_fill_the_folds_or_do_not_match_are_refused() -> None:
    with pytest.raises(ConfigError, match="2 groups \\(data.group_by\\) cannot fill 3 folds"):
        assign_folds(torch.ones(4, 1, dtype=torch.bool), ["a", "a", "b", "b"], 3, seed=0)
    with pytest.raises(ConfigError, match="does not match the sample 'x_1'"):
        group_keys(["d1_a", "x_1"], GROUPS)
    with pytest.raises(ConfigError, match="is not a regular expression"):
        group_keys(["a"], "(")


def _drive_tree(root: Path, drives: int = 6, frames: int = 3) -> Path:
    """``d{g}_f{i}`` frames of ``drives`` drives: 3 classes, class 2 a corner square in every other drive."""
    for g in range(drives):
        for i in range(frames):
            mask = torch.zeros(32, 32, dtype=torch.int64)
            mask[:, 16:] = 1
            if g % 2 == 0:
                mask[:6, :6] = 2
            write_index_pair(root, f"d{g}_f{i}", mask)
    return root


def test_a_folder_s_folds_validate_each_sample_once_and_leave_test_alone(tmp_path: Path) -> None:
    data = _drive_tree(tmp_path / "data", drives=8)
    args = {"root": str(data), "class_names": ["a", "b", "c"], "test_fraction": 0.2, "size": (32, 32)}
    plain = FolderDataModule(**args)
    folds = [FolderDataModule(**args, folds=3, fold=k, group_by=GROUPS) for k in range(3)]
    names = {split: [s.name for s in plain.split_samples(split)] for split in ("train", "val", "test")}
    pool = sorted(names["train"] + names["val"])
    validated = sorted(s.name for module in folds for s in module.split_samples("val"))
    assert validated == pool  # every train/val sample validated exactly once
    for module in folds:
        train, val = module.split_samples("train"), module.split_samples("val")
        assert [s.name for s in module.split_samples("test")] == names["test"]
        assert sorted(s.name for s in train + val) == pool
        drives = {s.name.split("_")[0] for s in val}
        assert not drives & {s.name.split("_")[0] for s in train}  # no drive straddles
    with pytest.raises(ConfigError, match="data.folds must be >= 2 and data.fold in 0..folds-1"):
        FolderDataModule(**args, folds=3, fold=3)
    with pytest.raises(ConfigError, match="data.group_by groups cross-validation folds"):
        FolderDataModule(**args, group_by=GROUPS)


def _cv_args(data: Path, output: Path, *extra: str) -> list[str]:
    return [
        "cv", "--config", DEFAULT_CONFIG, "--config", TINY_CALLBACKS, "--folds", "2", "--group_by", GROUPS,
        "--output", str(output),
        "--data=lightning_seg.data.FolderDataModule", f"--data.root={data}", "--data.class_names=[a,b,c]",
        "--data.size=[32,32]", "--data.batch_size=4", "--data.num_workers=0", "--data.test_fraction=0.2",
        "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--model.init_args.net.init_args.base_width=4", "--model.init_args.net.init_args.depth=2",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished_cv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-fold cv of tiny fits on a 6-drive folder, run once for this module: (data, cv folder)."""
    root = tmp_path_factory.mktemp("cv")
    data = _drive_tree(root / "data")
    output = root / "cv"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # the ensemble's test and predict records go beside it, never into the repository
        assert main(_cv_args(data, output)) == 0
    return data, output


def test_cv_fits_each_fold_scores_it_on_its_fold_and_a_rerun_keeps_it(finished_cv, capsys) -> None:
    data, output = finished_cv
    summary = json.loads((output / "summary.json").read_text())
    assert summary["folds"] == 2 and summary["scored"] == 2 and summary["group_by"] == GROUPS
    per_fold = [fold["metrics"]["val/mIoU"] for fold in summary["per_fold"]]
    assert summary["mean"]["val/mIoU"] == pytest.approx(sum(per_fold) / 2)
    assert summary["std"]["val/mIoU"] == pytest.approx(abs(per_fold[0] - per_fold[1]) / 2**0.5)
    for k, fold in enumerate(summary["per_fold"]):
        assert fold["fold"] == k and Path(fold["run"]).parent == output / f"fold_{k}"
        config = (Path(fold["run"]) / "config.yaml").read_text()
        assert f"fold: {k}" in config and "folds: 2" in config
        assert "val/IoU/c" in fold["metrics"]
    table = (output / "results.md").read_text()
    assert "| val/mIoU |" in table and "± " in table and "fold 1" in table
    # --refit: one more trial, fold -1 (every training image, no validation), in <output>/refit
    assert summary["refit"] is None
    assert main(_cv_args(data, output, "--refit", "true", "--dry_run", "true")) == 0
    planned = capsys.readouterr().out
    assert "refit: python -m lightning_seg fit" in planned and "--data.init_args.fold=-1" in planned
    # a cv killed while scoring fold 1 (its out-of-fold pass unfinished): the same command again keeps both
    # fits, keeps fold 0's scoring and scores fold 1 again
    (output / "fold_1" / "oof" / "index.json").unlink()
    config = str(output / "ensemble" / "config.yaml")
    assert main(["tune", "--config", config, "--oof", str(output)]) == 2  # not before every fold is scored
    assert "fold_1/oof: no out-of-fold probabilities" in capsys.readouterr().err
    assert main(_cv_args(data, output)) == 0
    out = capsys.readouterr().out
    assert "2 trials finished before, kept" in out and "(up to date)" in out
    for k, fold in enumerate(summary["per_fold"]):
        assert len(list((Path(fold["run"]) / "validate").glob("*/summary.json"))) == 1 + k
        scored = json.loads((output / f"fold_{k}" / "scored.json").read_text())
        assert scored["checkpoint"] == fold["checkpoint"]
        assert (output / f"fold_{k}" / "oof" / "index.json").is_file()
    assert json.loads((output / "summary.json").read_text())["mean"] == summary["mean"]


def test_every_training_image_has_one_out_of_fold_prediction_from_the_model_that_never_saw_it(
    finished_cv,
) -> None:
    import lightning_seg
    from lightning_seg.callbacks.out_of_fold import load_out_of_fold, read_out_of_fold
    from lightning_seg.data.io import read_image, read_mask

    data, output = finished_cv
    summary = json.loads((output / "summary.json").read_text())
    names = []
    for fold in summary["per_fold"]:
        index, files = read_out_of_fold(output / f"fold_{fold['fold']}" / "oof")
        assert index["checkpoint"] == fold["checkpoint"] and index["images"] == len(files) > 0
        model = lightning_seg.load(fold["checkpoint"])
        for file in files:
            probabilities, mask = load_out_of_fold(file)
            names.append(file.stem)
            assert torch.equal(mask, read_mask(data / "masks" / f"{file.stem}.png")[0].long())
            # the fold model's own prediction of the image, within the uint8 quantisation
            expected = model.predict(read_image(data / "images" / f"{file.stem}.png"), probabilities=True)
            assert probabilities.shape == expected.probabilities.shape
            assert (probabilities - expected.probabilities).abs().max() <= 0.5 / 255 + 1e-6
    plain = FolderDataModule(root=str(data), class_names=["a", "b", "c"], test_fraction=0.2, size=(32, 32))
    pool = sorted(s.name for split in ("train", "val") for s in plain.split_samples(split))
    assert sorted(names) == pool  # every training image once, no test image


def test_the_folds_ensemble_tests_what_it_predicts_and_tune_calibrates_on_out_of_fold(
    finished_cv, capsys, monkeypatch
) -> None:
    from data_trees import miou_of_index_pngs

    from lightning_seg.cli import run_cli

    data, output = finished_cv
    config = output / "ensemble" / "config.yaml"
    monkeypatch.chdir(output.parent)
    quiet = ["--trainer.enable_progress_bar=false"]
    tested = run_cli(["test", "--config", str(config), *quiet])
    predicted = run_cli(["predict", "--config", str(config), *quiet])
    assert tested is not None and predicted is not None
    expected, count = miou_of_index_pngs(Path(predicted.trainer.log_dir) / "predictions", data / "masks")
    assert count == len(tested.datamodule.datasets["test"]) > 0
    assert float(tested.trainer.callback_metrics["test/mIoU"]) == pytest.approx(expected, abs=1e-6)
    # its members trained on every val image: validating the ensemble on val is refused
    assert main(["validate", "--config", str(config), *quiet]) == 2
    assert "were in the checkpoint's training split" in capsys.readouterr().err
    # thresholds for the ensemble from every training image's out-of-fold probabilities
    assert main(["tune", "--config", str(config), "--oof", str(output), *quiet]) == 0
    thresholds = output / "ensemble" / "checkpoints" / "ensemble.thresholds.json"
    record = json.loads(thresholds.read_text())
    assert record["split"] == "out-of-fold" and record["out_of_fold"]["folds"] == 2
    assert record["out_of_fold"]["images"] == 18 - count  # every image but the test split's
    # thresholds from these files are for the folds or their ensemble only
    other = next((output / "fold_0").glob("version_*/checkpoints/last.ckpt"))
    fold_config = str(other.parent.parent / "config.yaml")
    assert main(["tune", "--config", fold_config, "--oof", str(output), f"--ckpt_path={other}", *quiet]) == 2
    assert "is neither one of the folds of" in capsys.readouterr().err
    # the refit joins an ensemble only once it exists
    assert main(["ensemble", "--cv", str(output), "--refit", "true"]) == 2
    assert "the cv has no finished refit (run cv with --refit true)" in capsys.readouterr().err
    tuned = run_cli(
        [
            "test",
            "--config",
            str(config),
            *quiet,
            "--model.init_args.postprocess+=lightning_seg.postprocess.ClassThresholds",
        ]
    )
    assert tuned is not None and "thresholds" in tuned.model.evaluation.describe()
    # a fixed temperature applies to the stored probabilities; one to fit needs val's pass, refused here
    step = "{class_path: lightning_seg.postprocess.TemperatureScaling, init_args: {temperature: 1.5}}"
    fixed = f"--model.init_args.postprocess=[{step}]"
    assert main(["tune", "--config", str(config), "--oof", str(output), *quiet, fixed]) == 0
    assert json.loads(thresholds.read_text())["tuned_after"] == ["temperature"]
    fitted = "--model.init_args.postprocess=[{class_path: lightning_seg.postprocess.TemperatureScaling}]"
    assert main(["tune", "--config", str(config), "--oof", str(output), *quiet, fitted]) == 2
    assert_one_line_error(capsys, "tune --oof: fit TemperatureScaling on val")


def test_cv_options_it_sets_itself_are_refused_in_one_line(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    assert main(_cv_args(data, tmp_path / "cv", "--data.init_args.fold=1")) == 2
    assert_one_line_error(capsys, "--data.init_args.fold is set by cv itself")
    assert main(_cv_args(data, tmp_path / "cv", "--trainer.default_root_dir=x")) == 2
    assert_one_line_error(capsys, "--trainer.default_root_dir is set by cv itself")
    assert main(_cv_args(data, tmp_path / "cv", "--data.fold_seed=3")) == 2
    assert_one_line_error(capsys, "--data.fold_seed is set by cv itself")
    assert main(_cv_args(data, tmp_path / "cv", "--budget", "5m")) == 2
    assert_one_line_error(capsys, "cv: --budget would time each fold on its own")
    assert main(["cv", "--config", DEFAULT_CONFIG, "--folds", "1"]) == 2
    assert_one_line_error(capsys, "--folds must be at least 2")


def test_a_module_with_fixed_split_folders_folds_its_train_and_val_together(tmp_path: Path) -> None:
    """CamVid lists its splits by folder (no drawn split): its train and val images are folded all the same."""
    root = camvid_tree(tmp_path / "camvid", counts={"train": 6, "val": 4, "test": 3})
    plain = CamVidDataModule(root=str(root), size=(36, 48))
    pool = sorted(s.name for split in ("train", "val") for s in plain.split_samples(split))
    folds = [CamVidDataModule(root=str(root), size=(36, 48), folds=2, fold=k) for k in range(2)]
    assert sorted(s.name for module in folds for s in module.split_samples("val")) == pool
    assert all(
        len(module.split_samples("train")) + len(module.split_samples("val")) == 10 for module in folds
    )
    assert [s.name for s in folds[0].split_samples("test")] == [s.name for s in plain.split_samples("test")]


def test_folds_of_a_module_that_tests_on_its_val_split_are_refused(tmp_path: Path) -> None:
    """VOC scores ``test`` on its val list: folding val into training would train on the test images."""
    root = voc_tree(tmp_path / "voc", {"train": 4, "val": 2})
    for fold in range(2):  # refused whichever fold: every fold but one would train on the test images
        module = VOCDataModule(str(root), size=(32, 32), allow_absent_classes=True, folds=2, fold=fold)
        with pytest.raises(
            ConfigError, match="data.folds would train on test images \\(2 of the train and val"
        ):
            module.split_samples("val")
