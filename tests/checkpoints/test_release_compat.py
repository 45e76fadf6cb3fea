"""Runs written by the release before the package was laid out in rooms keep working.

``tests/fixtures/release_0_1/`` holds what that release wrote for a tiny default run (2 epochs, a 2-level U-Net
of width 4, WarmupCosineLR named by its old path ``lightning_seg.schedulers``, focal + median-frequency
class weights): its best checkpoint (optimizer and loop state left out), the run's ``config.yaml``, and the
mask logits that release's ``lightning_seg.load`` gave on a fixed input. The test mIoU below is what that
release's ``test`` printed for it.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml

import lightning_seg
from lightning_seg import _graveyard
from lightning_seg.checkpoints.record import build_module
from lightning_seg.cli import run_cli

RELEASE = Path(__file__).resolve().parents[1] / "fixtures" / "release_0_1"
RELEASE_TEST_MIOU = 0.017603034153580666
"""``lightning_seg test --config config.yaml --ckpt_path model.ckpt`` with the release (commit 136bbd2)."""


def test_a_release_checkpoint_rebuilds_and_predicts_the_same() -> None:
    expected = torch.load(RELEASE / "expected.pt", weights_only=True)
    loaded = lightning_seg.load(RELEASE / "model.ckpt")
    with torch.no_grad():
        logits = loaded.module(expected["image"]).mask
    torch.testing.assert_close(logits, expected["logits"])


@pytest.mark.parametrize(
    ("key", "old"),
    [
        ("model", "lightning_seg.module.SegmentationModule"),
        ("lr_scheduler", "lightning_seg.schedulers.WarmupCosineLR"),
    ],
)
def test_old_class_paths_in_a_record_rebuild_with_a_deprecation_warning(key: str, old: str) -> None:
    record = copy.deepcopy(torch.load(RELEASE / "model.ckpt", weights_only=True)["lightning_seg"])
    if key == "model":
        record["model"]["class_path"] = old
    else:
        assert record["model"]["init_args"][key]["class_path"] == old  # as the release wrote it
    module_name = old.rsplit(".", 1)[0]
    fresh = module_name not in __import__("sys").modules
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = build_module(record, for_training=True)
    assert type(module).__name__ == "SegmentationModule"
    if fresh:  # the first import of the old path says where it went
        assert any(issubclass(w.category, FutureWarning) and module_name in str(w.message) for w in caught)


def test_every_old_path_imports_the_same_objects() -> None:
    """Each old module path gives the very objects of the modules that hold them now."""
    import importlib

    for old, targets in _graveyard.MOVED.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = importlib.import_module(old)
        for target in targets:
            new = importlib.import_module(target)
            public = [name for name in vars(new) if not name.startswith("_")]
            assert public, target
            for name in public[:5]:
                assert getattr(module, name) is getattr(new, name), (old, name)


def test_a_release_config_and_checkpoint_test_to_the_same_score(tmp_path: Path) -> None:
    """The release's run record through today's CLI: the config parses (old class paths included), the
    checkpoint without a split record evaluates with a warning, and test prints the release's mIoU."""
    config = yaml.safe_load((RELEASE / "config.yaml").read_text())
    config["trainer"]["default_root_dir"] = str(tmp_path)
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path)
    config["trainer"]["enable_progress_bar"] = False
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.warns(UserWarning, match="records no training split"):
        cli = run_cli(["test", "--config", str(path), "--ckpt_path", str(RELEASE / "model.ckpt")])
    assert cli is not None
    summary = json.loads((Path(cli.trainer.log_dir) / "summary.json").read_text())
    assert summary["metrics"]["test/mIoU"] == pytest.approx(RELEASE_TEST_MIOU, abs=1e-6)


def test_an_old_config_default_and_an_old_entry_module_still_resolve() -> None:
    """What a release's config.yaml records for an optimizer left unset, and ``python -m lightning_seg.demo``
    (the release's ``make demo``), both through the old paths."""
    import importlib.util
    import runpy

    from lightning_seg.task.optimizers import default_optimizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from lightning_seg.module import _default_optimizer  # type: ignore[attr-defined]

        namespace = runpy.run_module("lightning_seg.demo", run_name="demo_as_imported")
    assert _default_optimizer is default_optimizer
    # python -m puts the spec's origin in sys.argv[0] (argparse reads it): the new module's file
    assert importlib.util.find_spec("lightning_seg.demo").origin.endswith("cli/demo.py")
    assert callable(namespace["run"]) and namespace["DEFAULT_CONFIG"] == "configs/default.yaml"
