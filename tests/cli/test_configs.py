"""Every run config parses (keys, types, class paths) as shipped."""

from __future__ import annotations

import pytest
import yaml
from helpers import DEFAULT_CONFIG, REPO

from lightning_seg.cli import build_cli

RUN_CONFIGS = sorted(
    p
    for p in (REPO / "configs").glob("*/*.yaml")
    if p.parent.name not in ("data", "trainer", "sweeps")  # sweeps: tests/sweep/test_sweep.py
)


def _print_config(*configs: str, capsys: pytest.CaptureFixture[str]) -> dict:
    args = ["fit"]
    for config in configs:
        args += ["--config", config]
    with pytest.raises(SystemExit) as stop:
        build_cli([*args, "--print_config"])
    assert stop.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in RUN_CONFIGS])
def test_run_config_parses(path, capsys) -> None:
    config = _print_config(str(path), capsys=capsys)
    assert config["data"]["class_path"].startswith("lightning_seg.data.")
    monitor = config["trainer"]["callbacks"][0]["init_args"]["monitor"]
    if config["model"]["class_path"] == "lightning_seg.ImageClassifierModule":  # labels only
        assert monitor == "val/label_mAP"
    else:
        assert config["model"]["class_path"] == "lightning_seg.SegmentationModule"
        # the checkpoint follows val/mIoU, or the config's own composite score (model.score)
        score = config["model"]["init_args"].get("score")
        assert monitor == ("val/score" if score else "val/mIoU")
    # the data module is the only source of num_classes: no config states it
    assert "num_classes" not in path.read_text()


def test_ddp_trainer_config_composes(capsys) -> None:
    config = _print_config(DEFAULT_CONFIG, str(REPO / "configs/trainer/ddp.yaml"), capsys=capsys)
    assert config["trainer"]["strategy"] == "ddp" and config["trainer"]["sync_batchnorm"] is True


def test_all_issue_configs_exist() -> None:
    names = {f"{p.parent.name}/{p.name}" for p in RUN_CONFIGS}
    assert names >= {
        "camvid/unet.yaml",
        "camvid/resnet_unet.yaml",
        "camvid/smp_deeplabv3plus.yaml",
        "msd/micro_unet.yaml",
        "pets/smp_unet.yaml",
        "voc/torchvision_deeplabv3.yaml",
        "voc/deeplabv3_coco_finetune.yaml",
        "voc/detr_zero_shot.yaml",
        "camvid/lite0_unet.yaml",
        "folder/lite0_unet_binary.yaml",
        "folder/lite0_unet_multiclass.yaml",
    }


def test_wandb_logger_config_composes(capsys) -> None:
    config = _print_config(DEFAULT_CONFIG, str(REPO / "configs/trainer/wandb.yaml"), capsys=capsys)
    assert config["trainer"]["logger"]["class_path"] == "lightning.pytorch.loggers.WandbLogger"
    assert config["trainer"]["logger"]["init_args"]["project"] == "lightning_seg"
