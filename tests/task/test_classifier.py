"""The standalone image classifier (configs/voc_kaggle/classifier.yaml) on the fake VOC Kaggle tree: fit,
tune (per-label thresholds), test (label F1/mAP/AUC), predict (labels.csv), then a segmentation run's submit
takes its labels (``--labels_from <its checkpoint>``) for the classification rows, and LabelConsistency
(``labels: <its labels.csv>``) corrects the class maps with them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, shipped_voc_kaggle_args, voc_kaggle_args
from torchvision.io import decode_png, read_file

import lightning_seg
from lightning_seg.cli import main, run_cli
from lightning_seg.errors import ConfigError
from lightning_seg.submission import decode, decode_class_planes


def classifier_args(runs: Path, data: Path) -> list[str]:
    """configs/voc_kaggle/classifier.yaml shrunk to seconds: timm's resnet10t."""
    return shipped_voc_kaggle_args(
        "classifier", runs, data, "--model.init_args.net.init_args.model_name=resnet10t"
    )


def test_classifier_fit_tune_test_predict_then_its_labels_drive_a_submission(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from data_trees import VOC_KAGGLE_TEST_IDS, voc_kaggle_tree

    data = voc_kaggle_tree(tmp_path / "voc")
    runs = tmp_path / "runs"
    args = classifier_args(runs, data)
    fit = run_cli(["fit", *args])
    metrics = fit.trainer.callback_metrics
    assert {"val/label_f1", "val/label_mAP", "val/label_AUC", "val/loss"} <= set(metrics)
    ckpt = fit.trainer.checkpoint_callback.last_model_path
    tuned = run_cli(["tune", *args, "--ckpt_path", ckpt])
    thresholds = json.loads(Path(ckpt).with_name("last.thresholds.json").read_text())
    assert thresholds["labels"]["names"] == list(fit.model.label_names) and len(fit.model.label_names) == 20
    assert thresholds["f1_after"] >= thresholds["f1_before"]  # the F1-maximising thresholds, on the same val
    assert tuned is not None
    # the command's own passes: its record is tune's, with no validate table or record of the passes
    record = json.loads((Path(tuned.trainer.default_root_dir) / "summary.json").read_text())
    assert record["stage"] == "tune" and "validate" not in capsys.readouterr().out
    tested = run_cli(["test", *args, "--ckpt_path", ckpt])
    assert tested.model.tuned is not None  # test decides with the tuned thresholds
    assert "test/label_AUC" in tested.trainer.callback_metrics
    run_cli(["predict", *args, "--ckpt_path", ckpt])
    (labels,) = (Path(ckpt).parent.parent / "predict").glob("*/predictions/labels.csv")
    with labels.open(newline="") as handle:
        rows = {row["name"]: row["labels"] for row in csv.DictReader(handle)}
    assert sorted(rows) == sorted(VOC_KAGGLE_TEST_IDS)
    # the mask commands refuse a classifier, pointing at its labels
    assert main(["submit", *args, "--ckpt_path", ckpt]) == 2
    assert_one_line_error(capsys, "an image classifier predicts labels, not masks")
    with pytest.raises(ConfigError, match="predicts image labels, not masks"):
        lightning_seg.load(ckpt)

    # a segmentation run submits with the classifier's labels: rows and class maps follow them
    seg_runs = tmp_path / "seg"
    seg = run_cli(["fit", *voc_kaggle_args(seg_runs, data)])
    seg_ckpt = seg.trainer.checkpoint_callback.last_model_path
    consistency = (
        f"[{{class_path: lightning_seg.postprocess.LabelConsistency, init_args: {{labels: {labels}}}}}]"
    )
    run_cli([
        "submit", *voc_kaggle_args(seg_runs, data), "--ckpt_path", seg_ckpt, "--labels_from", str(labels),
        "--model.init_args.postprocess", consistency,
    ])  # fmt: skip
    (submission,) = (Path(seg_ckpt).parent.parent / "submit").glob("*/submission.csv")
    with submission.open(newline="") as handle:
        body = list(csv.reader(handle))[1:]
    names = list(fit.model.label_names)
    for classification, segmentation in zip(body[::2], body[1::2], strict=True):
        identifier = classification[0].removesuffix("_classification")
        present = np.array([name in rows[identifier].split(";") for name in names])
        assert np.array_equal(decode(classification[1], (20,)), present), identifier
        png = Path(submission).parent / "predictions" / f"{identifier}_index.png"
        index = decode_png(read_file(str(png)))[0].numpy()
        planes = decode_class_planes(segmentation[1], 20, *index.shape)
        assert not planes[~present].any(), identifier  # no pixel of a class the labels say is absent


@pytest.mark.slow
def test_labels_from_a_checkpoint_run_that_runs_predict(tmp_path: Path) -> None:
    """``submit --labels_from <checkpoint>`` runs that run's predict in its own process (seconds of imports:
    slow) with its own config: the labels equal those of a predict run here."""
    from data_trees import voc_kaggle_tree

    data = voc_kaggle_tree(tmp_path / "voc")
    args = classifier_args(tmp_path / "runs", data)
    ckpt = run_cli(["fit", *args]).trainer.checkpoint_callback.last_model_path
    run_cli(["predict", *args, "--ckpt_path", ckpt])
    (labels,) = (Path(ckpt).parent.parent / "predict").glob("*/predictions/labels.csv")
    seg_runs = tmp_path / "seg"
    seg_ckpt = run_cli(["fit", *voc_kaggle_args(seg_runs, data)]).trainer.checkpoint_callback.last_model_path
    run_cli(["submit", *voc_kaggle_args(seg_runs, data), "--ckpt_path", seg_ckpt, "--labels_from", ckpt])
    (submission,) = (Path(seg_ckpt).parent.parent / "submit").glob("*/submission.csv")
    assert (submission.parent / "labels_from.csv").read_text() == labels.read_text()


def test_classifier_auc_matches_sklearn() -> None:
    """The binned ROC AUC of the multi-label metric against sklearn's exact one, within the bin width."""
    from sklearn.metrics import roc_auc_score

    from lightning_seg.labels import MultiLabelMetrics

    generator = torch.Generator().manual_seed(0)
    target = (torch.rand(200, 3, generator=generator) > 0.6).float()
    probabilities = (0.35 * target + 0.65 * torch.rand(200, 3, generator=generator)).clamp(0, 1)
    metric = MultiLabelMetrics(3, num_thresholds=1001)
    metric.update(probabilities, probabilities > 0.5, target)
    auc = metric.compute()["auc"]
    for label in range(3):
        expected = roc_auc_score(target[:, label].numpy(), probabilities[:, label].numpy())
        assert abs(float(auc[label]) - expected) < 2e-3


def test_a_weights_file_fills_the_backbone_and_torchvision_models_get_a_new_head(tmp_path: Path) -> None:
    """A local weights file (a timm model's state dict, its 1000-class head included) loads into the
    backbone by name, the head left out; a torchvision classifier's last linear layer becomes the new head."""
    import timm

    from lightning_seg.models import ImageClassifier

    torch.manual_seed(0)
    source = timm.create_model("resnet10t", num_classes=1000)
    torch.save(source.state_dict(), tmp_path / "resnet10t.pth")
    net = ImageClassifier(3, "resnet10t", weights=str(tmp_path / "resnet10t.pth"))
    for key, value in net.backbone.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key
    assert net(torch.randn(2, 3, 32, 32))["label"].shape == (2, 3)
    torchvision_net = ImageClassifier(4, "resnet18", library="torchvision")
    assert torchvision_net(torch.randn(2, 3, 32, 32))["label"].shape == (2, 4)
    with pytest.raises(ConfigError, match="has no weights 'NOPE'"):
        ImageClassifier(4, "resnet18", library="torchvision", weights="NOPE")
