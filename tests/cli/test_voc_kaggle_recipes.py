"""The shipped VOC 2009 Kaggle competition recipes run on the fake tree, offline, with random weights: the
DeepLabV3 fine-tune goes fit → tune → test → submit; the DETR zero-shot one test → submit without a
checkpoint (it trains nothing; its COCO head is kept through the COCO→VOC table)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_trees import VOC_KAGGLE_TEST_IDS, voc_kaggle_tree
from helpers import shipped_voc_kaggle_args

from lightning_seg.callbacks import BackboneFinetuning
from lightning_seg.cli import run_cli
from tests.commands.test_submit import check_submission
from tests.models.test_transformers_net import _coco_detr_folder, needs_transformers


def test_deeplabv3_finetune_fit_tune_test_submit(tmp_path: Path) -> None:
    data = voc_kaggle_tree(tmp_path / "voc")
    runs = tmp_path / "runs"
    args = shipped_voc_kaggle_args(
        "deeplabv3_finetune", runs, data, "--model.init_args.net.init_args.weights=null"
    )
    fit = run_cli(["fit", *args])
    finetuning = [c for c in fit.trainer.callbacks if isinstance(c, BackboneFinetuning)]
    assert finetuning and finetuning[0].unfreeze_at_epoch == 5  # the notebook's 5 frozen epochs
    assert all(not p.requires_grad for p in fit.model.net.backbone.parameters())  # frozen in epoch 0
    ckpt = fit.trainer.checkpoint_callback.last_model_path
    assert run_cli(["tune", *args, "--ckpt_path", ckpt]) is not None
    tested = run_cli(["test", *args, "--ckpt_path", ckpt])
    assert {"test/competition_dice", "test/dice"} <= set(tested.trainer.callback_metrics)
    run_cli(["submit", *args, "--ckpt_path", ckpt])
    (folder,) = (Path(ckpt).parent.parent / "submit").iterdir()
    ids = list(VOC_KAGGLE_TEST_IDS)
    assert check_submission(folder / "submission.csv", folder / "predictions", 21, ids) == len(ids)


@needs_transformers
def test_detr_zero_shot_test_and_submit(tmp_path: Path) -> None:
    data = voc_kaggle_tree(tmp_path / "voc")
    runs = tmp_path / "runs"
    model = _coco_detr_folder(tmp_path / "detr")
    args = shipped_voc_kaggle_args(
        "detr_zero_shot", runs, data, f"--model.init_args.net.init_args.model={model}"
    )
    tested = run_cli(["test", *args])
    assert tested.model.net.head_is_pretrained  # the mapping keeps the COCO head: zero-shot
    assert 0.0 <= float(tested.trainer.callback_metrics["test/competition_dice"]) <= 1.0
    run_cli(["submit", *args])
    (csv_path,) = runs.rglob("submission.csv")
    ids = list(VOC_KAGGLE_TEST_IDS)
    assert check_submission(csv_path, csv_path.parent / "predictions", 21, ids) == len(ids)


@pytest.mark.parametrize("name", ["deeplabv3_finetune", "detr_zero_shot", "classifier"])
def test_recipes_name_the_competition_data(name: str) -> None:
    from helpers import REPO

    text = (REPO / "configs" / "voc_kaggle" / f"{name}.yaml").read_text()
    assert "lightning_seg.data.VOCKaggleDataModule" in text
