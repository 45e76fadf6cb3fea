"""The image-level head: multi-label targets from mask presence, single-label data labels (MSD), label
metrics against hand counts, label losses against direct torch computations, the class-balanced sampler,
``labels.csv`` from predict and the label scores in summary.json."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import pytest
import torch
from data_trees import msd_tree
from helpers import REPO, tiny_args
from torch.nn import functional as F
from torchmetrics.classification import MultilabelAveragePrecision

from lightning_seg.cli import run_cli
from lightning_seg.data.label_sampling import balancing_weights, rarest_present_class
from lightning_seg.data.sampling import EpochSampler
from lightning_seg.data.stats import ClassStatistics
from lightning_seg.errors import ConfigError
from lightning_seg.labels import (
    NO_LABEL,
    MultiLabelMetrics,
    SingleLabelMetrics,
    label_class_map,
    presence_labels,
    rule_weights,
)
from lightning_seg.losses import CompoundLoss
from lightning_seg.models import MicroUNet, SMPNet
from lightning_seg.models.outputs import NetOutput
from lightning_seg.task.module import SegmentationModule

IGNORE = 255
SHAPES = ["disc", "square", "triangle", "ring"]  # SyntheticShapes' foreground classes


# -------------------------------------------------------------------------------------------- targets
def test_multi_label_targets_are_the_classes_present_in_the_mask() -> None:
    masks = torch.zeros(3, 4, 4, dtype=torch.long)
    masks[0, :2, :2] = 2
    masks[0, 3, 3] = 3
    masks[0, 0, 3] = IGNORE
    masks[1] = IGNORE  # nothing labelled: no target at all, not "nothing present"
    masks[2, 1, 1] = 1
    assert presence_labels(masks, 4, IGNORE).tolist() == [[0, 1, 1], [NO_LABEL] * 3, [1, 0, 0]]


def test_label_mode_and_head_size_follow_the_data() -> None:
    names = ["background", "a", "b", "c"]
    multi = SegmentationModule(
        net=functools.partial(MicroUNet, base_width=4), num_classes=4, class_names=names, label_mode="multi"
    )
    assert multi.label_mode == "multi" and multi.label_names == ["a", "b", "c"]
    # without data labels the default stays the dominant class (checkpoints of before load unchanged)
    default = SegmentationModule(
        net=functools.partial(MicroUNet, base_width=4), num_classes=4, class_names=names
    )
    assert default.label_mode == "single" and default.label_names == names
    assert multi(torch.randn(2, 3, 32, 32)).label.shape == (2, 3)  # K-1 labels, not K
    single = SegmentationModule(
        net=functools.partial(MicroUNet, base_width=4), num_classes=4, class_names=names, label_mode="single"
    )
    assert single.label_names == names and single(torch.randn(1, 3, 32, 32)).label.shape == (1, 4)
    batch = {"mask": torch.tensor([[[0, 2], [2, 3]]])}
    assert single.label_targets(batch).tolist() == [2]  # the dominant class, as before
    assert multi.label_targets(batch).tolist() == [[0.0, 1.0, 1.0]]
    # a net without a head by default does not grow one for derived labels
    smp = SegmentationModule(net=functools.partial(SMPNet, encoder_name="resnet18"), num_classes=4)
    assert smp(torch.randn(1, 3, 64, 64)).label is None
    msd = SegmentationModule(
        net=functools.partial(MicroUNet, base_width=4),
        num_classes=2,
        label_names=["None", "Scratch", "Stain", "Oil"],
    )
    assert msd.label_mode == "single"
    # data labels forced to multi: one-hot targets
    forced = SegmentationModule(
        net=functools.partial(MicroUNet, base_width=4),
        num_classes=2,
        label_names=["None", "Scratch", "Stain", "Oil"],
        label_mode="multi",
    )
    target = forced.label_targets({"label": torch.tensor([2, NO_LABEL]), "mask": torch.zeros(2, 2, 2)})
    assert target.tolist() == [[0, 0, 1, 0], [NO_LABEL] * 4]


def test_probabilities_decisions_and_the_classes_they_imply() -> None:
    module = SegmentationModule(
        net=functools.partial(MicroUNet, base_width=4),
        num_classes=4,
        class_names=["background", "a", "b", "c"],
        label_mode="multi",
        label_thresholds=[0.5, 0.2, 0.9],
    )
    logits = torch.tensor([[0.0, -1.0, 2.0], [-3.0, 3.0, -3.0]])
    probabilities = module.label_probabilities(logits)
    assert probabilities.dtype == torch.float32 and torch.allclose(probabilities, logits.sigmoid())
    decisions = module.label_decisions(probabilities)  # 0.5 ≥ 0.5; 0.27 ≥ 0.2; 0.88 < 0.9
    assert decisions.tolist() == [[True, True, False], [False, True, False]]
    assert module.label_decisions(probabilities, torch.tensor(0.5)).tolist() == [
        [True, False, True],
        [False, True, False],
    ]
    assert module.classes_of_labels(decisions).tolist() == [
        [True, True, True, False],
        [True, False, True, False],
    ]
    # single-label: one-hot argmax over the softmax
    single = label_class_map(
        ["None", "Scratch", "Oil"], ["background", "scratch", "stain", "oil"], "single", False
    )
    assert single.tolist() == [[False] * 4, [False, True, False, False], [False, False, False, True]]


def test_the_relative_label_rule_keeps_the_labels_near_the_image_s_most_likely() -> None:
    """The VOC notebook's rule: a label is present when p >= 0.5 · max p, whatever the thresholds say."""
    module = SegmentationModule(
        net=functools.partial(MicroUNet, base_width=4),
        num_classes=4,
        class_names=["background", "a", "b", "c"],
        label_mode="multi",
        label_thresholds=[0.9, 0.9, 0.9],
        label_relative=0.5,
    )
    probabilities = torch.tensor([[0.30, 0.16, 0.14], [0.02, 0.01, 0.015]])
    assert module.label_decisions(probabilities).tolist() == [[True, True, False], [True, True, True]]
    assert module.label_decisions(probabilities, torch.tensor(0.1)).tolist() == [
        [True, True, False],
        [True, True, True],
    ]  # tuned thresholds are not used with it
    with pytest.raises(ConfigError, match="model.label_relative: a share in \\(0, 1\\]"):
        SegmentationModule(
            net=functools.partial(MicroUNet, base_width=4),
            num_classes=3,
            label_mode="single",
            label_relative=0.5,
        )


# -------------------------------------------------------------------------------------------- metrics
def test_single_label_metrics_against_hand_counts() -> None:
    metric = SingleLabelMetrics(3)
    target = torch.tensor([0, 0, 1, 1, 2, NO_LABEL])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])
    decisions = F.one_hot(pred, 3).bool()
    metric.update(torch.rand(6, 3), decisions[:3], target[:3])
    metric.update(torch.rand(6, 3), decisions[3:], target[3:])
    scores = metric.compute()
    assert scores["confusion"].tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # precision: 1/2, 2/3, undefined (never predicted); recall: 1/2, 1, 0
    precision = scores["precision"].tolist()
    assert precision[:2] == pytest.approx([0.5, 2 / 3]) and precision[2] != precision[2]
    assert scores["recall"].tolist() == pytest.approx([0.5, 1.0, 0.0])
    # F1 per label: 1/2, 4/5, 0 → macro over the three labels that occur
    assert float(scores["f1"]) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert float(scores["acc"]) == pytest.approx(3 / 5)


def test_multi_label_metrics_against_hand_counts_and_torchmetrics_ap() -> None:
    metric = MultiLabelMetrics(2)
    probabilities = torch.tensor([[0.9, 0.2], [0.6, 0.7], [0.3, 0.8], [0.1, 0.4], [0.8, 0.9]])
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [NO_LABEL, NO_LABEL]])
    decisions = probabilities >= torch.tensor([0.5, 0.5])
    metric.update(probabilities, decisions, target)
    scores = metric.compute()
    # label 0: TP 1 (row 0), FP 1 (row 1), FN 1 (row 2); label 1: TP 2, FP 0, FN 0; row 4 unknown
    assert (metric.tp.tolist(), metric.fp.tolist(), metric.fn.tolist()) == ([1, 2], [1, 0], [1, 0])
    assert scores["precision"].tolist() == pytest.approx([0.5, 1.0])
    assert scores["recall"].tolist() == pytest.approx([0.5, 1.0])
    assert float(scores["f1"]) == pytest.approx((0.5 + 1.0) / 2)
    assert float(scores["acc"]) == pytest.approx(2 / 4)  # rows 0 and 3 wholly right
    reference = MultilabelAveragePrecision(num_labels=2, thresholds=101, average="none")
    reference.update(probabilities[:4], target[:4].long())
    assert scores["ap"].tolist() == pytest.approx(reference.compute().tolist(), abs=1e-6)
    assert float(scores["mAP"]) == pytest.approx(float(reference.compute().mean()), abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU to detect host syncs")
def test_label_targets_and_metric_updates_never_sync_with_the_host() -> None:
    module = SegmentationModule(
        net=functools.partial(MicroUNet, base_width=4), num_classes=4, class_names=["bg", "a", "b", "c"]
    ).cuda()
    single = SingleLabelMetrics(3).cuda()
    mask = torch.randint(0, 4, (4, 8, 8), device="cuda")
    logits = torch.randn(4, 3, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        target = module.label_targets({"mask": mask})
        probabilities = module.label_probabilities(logits)
        decisions = module.label_decisions(probabilities)
        module.label_metrics["train_"].update(probabilities, decisions, target)
        module.classes_of_labels(decisions)
        single.update(probabilities, F.one_hot(probabilities.argmax(1), 3).bool(), probabilities.argmax(1))
        module.loss.label_term(logits, target)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# --------------------------------------------------------------------------------------------- losses
def _label_loss(mode: str, num_labels: int, **kwargs) -> CompoundLoss:
    return CompoundLoss(weights={"ce": 1.0}, label_weight=1.0, **kwargs).for_task(3, IGNORE, mode, num_labels)


def _parts(loss: CompoundLoss, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    mask = torch.zeros(logits.shape[0], 4, 4, dtype=torch.long)
    return loss(NetOutput(torch.randn(logits.shape[0], 3, 4, 4), label=logits), mask, target)


def test_multi_label_bce_and_focal_against_torch() -> None:
    from torchvision.ops import sigmoid_focal_loss

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=generator)
    target = (torch.rand(6, 4, generator=generator) > 0.6).float()
    parts = _parts(_label_loss("multi", 4), logits, target)
    assert float(parts["label"]) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits, target)), rel=1e-6
    )
    weights = [0.5, 1.0, 2.0, 4.0]
    parts = _parts(_label_loss("multi", 4, label_class_weights=weights), logits, target)
    expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(weights))
    assert float(parts["label"]) == pytest.approx(float(expected), rel=1e-6)
    parts = _parts(_label_loss("multi", 4, label_loss="focal", focal_gamma=2.0), logits, target)
    expected = sigmoid_focal_loss(logits, target, alpha=-1, gamma=2.0, reduction="mean")
    assert float(parts["label"]) == pytest.approx(float(expected), rel=1e-5)
    # unknown rows count nowhere; all unknown: 0 with a zero gradient
    unknown = torch.cat([target[:3], torch.full((3, 4), float(NO_LABEL))])
    parts = _parts(_label_loss("multi", 4), logits, unknown)
    expected = F.binary_cross_entropy_with_logits(logits[:3], target[:3])
    assert float(parts["label"]) == pytest.approx(float(expected), rel=1e-6)
    leaf = logits.clone().requires_grad_()
    parts = _parts(_label_loss("multi", 4), leaf, torch.full((6, 4), float(NO_LABEL)))
    parts["label"].backward()
    assert float(parts["label"].detach()) == 0.0 and torch.equal(leaf.grad, torch.zeros_like(leaf))


def test_single_label_weighted_ce_and_focal_against_torch() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 4, generator=generator)
    target = torch.tensor([0, 0, 0, 0, 1, 2, 3, NO_LABEL])
    weights = torch.tensor([0.25, 1.0, 2.0, 3.0])
    parts = _parts(_label_loss("single", 4, label_class_weights=weights.tolist()), logits, target)
    expected = F.cross_entropy(logits, target, weight=weights)
    assert float(parts["label"]) == pytest.approx(float(expected), rel=1e-6)
    parts = _parts(_label_loss("single", 4, label_loss="focal", focal_gamma=2.0), logits, target)
    p_t = logits[:7].softmax(1).gather(1, target[:7, None])[:, 0]
    expected = ((1 - p_t) ** 2 * -p_t.log()).mean()
    assert float(parts["label"]) == pytest.approx(float(expected), rel=1e-5)


def test_label_loss_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="label_loss='ce' does not fit multi-label heads"):
        _label_loss("multi", 4, label_loss="ce")
    with pytest.raises(ConfigError, match="label_class_weights has 2 values, the class head has 4 labels"):
        _label_loss("multi", 4, label_class_weights=[1.0, 2.0])


def test_label_weight_rules_are_the_pixel_rules_on_label_counts() -> None:
    counts = torch.tensor([71, 10, 10, 5, 4, 0])  # 71% defect-free, one label never seen
    p = counts[:5].double() / 100
    inverse = rule_weights(counts, "inverse_frequency")
    assert inverse[:5].tolist() == pytest.approx((1 / (5 * p)).tolist(), rel=1e-6) and inverse[5] == 0
    median = rule_weights(counts, "median_frequency")
    assert median[:5].tolist() == pytest.approx((p.quantile(0.5) / p).tolist(), rel=1e-6)
    enet = rule_weights(counts, "enet")
    assert enet[:5].tolist() == pytest.approx((1 / torch.log(1.02 + p)).tolist(), rel=1e-6)
    # the same code as for pixels: image counts in place of pixel counts
    stats = ClassStatistics(counts, torch.full_like(counts, 100), counts, 0, 100)
    assert torch.equal(median, stats.weights("median_frequency"))


# -------------------------------------------------------------------------------------------- sampler
def test_balanced_sampler_draws_rare_labels_more_often_and_repeats_for_the_same_epoch() -> None:
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    weights = balancing_weights(labels)
    dataset = list(range(100))

    def order(epoch: int, seed: int = 7, **kwargs) -> list[int]:
        sampler = EpochSampler(
            dataset, 1, 0, shuffle=True, seed=seed, batch_size=4, weights=weights, **kwargs
        )
        sampler.set_epoch(epoch)
        return list(sampler)

    first = order(0)
    assert len(first) == 100 and first == order(0) and first != order(1) and first != order(0, seed=8)
    drawn = torch.bincount(labels[first], minlength=3)
    plain = EpochSampler(dataset, 1, 0, shuffle=True, seed=7, batch_size=4)
    assert torch.bincount(labels[list(plain)], minlength=3).tolist() == [90, 9, 1]
    assert drawn[2] > 10 and drawn[0] < 60  # about a third each instead of 90/9/1
    # resumed after 3 batches: the rest of the same epoch
    resumed = EpochSampler(dataset, 1, 0, shuffle=True, seed=7, batch_size=4, weights=weights)
    resumed.resume_at(0, 3)
    assert list(resumed) == first[12:]
    # two processes split the same draw
    shards = [
        list(EpochSampler(dataset, 2, rank, shuffle=True, seed=7, batch_size=4, weights=weights))
        for rank in (0, 1)
    ]
    assert [i for pair in zip(*shards, strict=True) for i in pair] == first


def test_without_data_labels_images_are_grouped_by_their_rarest_class() -> None:
    presence = torch.tensor(
        [
            [True, True, False, False],
            [True, True, True, False],
            [True, False, False, False],
            [True, True, False, True],
        ]
    )  # class 1 in 3 images, class 2 and 3 in one
    assert rarest_present_class(presence).tolist() == [1, 2, 0, 3]
    from lightning_seg.data.synthetic import SyntheticDataModule

    dm = SyntheticDataModule(num_train=16, num_val=4, size=32, batch_size=4, balanced_labels=True)
    dm.setup("fit")
    weights = dm.balance_weights()
    assert weights.shape == (16,) and bool((weights > 0).all())
    assert dm.train_dataloader().sampler.weights is weights


# ----------------------------------------------------------------------------------- through the CLI
def _msd_args(runs: Path, data: Path, *extra: str) -> list[str]:
    return [
        "--config", str(REPO / "configs" / "msd" / "micro_unet.yaml"),
        f"--trainer.default_root_dir={runs}",
        f"--trainer.logger.init_args.save_dir={runs}",
        "--trainer.max_epochs=1",
        "--trainer.precision=32-true",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.log_every_n_steps=1",
        "--model.init_args.net.init_args.base_width=4",
        f"--data.init_args.root={data}",
        "--data.init_args.size=[32,64]",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
        "--data.init_args.val_fraction=0.25",
        "--data.init_args.test_fraction=0.25",
        *extra,
    ]  # fmt: skip


def test_single_label_msd_with_weights_balance_summary_and_labels_csv(tmp_path: Path) -> None:
    data = msd_tree(tmp_path / "msd", good=4)
    runs = tmp_path / "runs"
    options = (
        "--model.init_args.loss.init_args.label_class_weights=inverse_frequency",
        "--model.init_args.loss.init_args.label_loss=focal",
        "--data.init_args.balanced_labels=true",
    )
    fit = run_cli(["fit", *_msd_args(runs, data, *options)])
    model = fit.model
    assert model.label_mode == "single" and model.label_names == ["None", "Scratch", "Stain", "Oil"]
    metrics = fit.trainer.callback_metrics
    assert {"train/loss/label", "val/label_f1", "val/label_acc"} <= set(metrics)
    weights = model.loss.label_weight_tensor
    assert weights is not None and weights.shape == (4,) and bool((weights > 0).all())
    assert fit.trainer.train_dataloader.sampler.weights is not None
    best = fit.trainer.checkpoint_callback.best_model_path
    assert torch.equal(torch.load(best, weights_only=False)["loss_label_class_weights"], weights)

    tested = run_cli(["test", *_msd_args(runs, data, *options), "--ckpt_path", best])
    assert torch.equal(tested.model.loss.label_weight_tensor, weights)  # restored, not recounted
    summary = json.loads((Path(tested.trainer.log_dir) / "summary.json").read_text())
    labels = summary["labels"]
    assert labels["mode"] == "single" and labels["names"] == ["None", "Scratch", "Stain", "Oil"]
    confusion = labels["rows_target_cols_prediction"]
    test_labels = [s.label for s in tested.datamodule.datasets["test"].samples]
    assert len(confusion) == 4 and [sum(row) for row in confusion] == [test_labels.count(i) for i in range(4)]
    assert len(labels["precision"]) == len(labels["recall"]) == 4
    assert "test/label_f1" in summary["metrics"] and "test/label_acc" in summary["metrics"]

    predicted = run_cli(["predict", *_msd_args(runs, data), "--ckpt_path", best])
    with (Path(predicted.trainer.log_dir) / "predictions" / "labels.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["name", "label", "probability"]
    assert len(rows) == 1 + len(predicted.datamodule.datasets["predict"])
    assert all(
        row[1] in ("None", "Scratch", "Stain", "Oil") and 0.25 <= float(row[2]) <= 1 for row in rows[1:]
    )


def test_multi_label_from_masks_through_fit_test_and_predict(run_root: Path) -> None:
    micro = ("--model.init_args.net=lightning_seg.models.MicroUNet", "--model.init_args.net.base_width=8")
    options = (
        *micro,
        "--model.init_args.loss.init_args.label_class_weights=median_frequency",
        "--model.init_args.label_thresholds=[0.4]",
        "--model.init_args.label_mode=multi",
    )
    fit = run_cli(["fit", *tiny_args(run_root, *options)])
    model = fit.model
    assert model.label_mode == "multi" and model.label_names == SHAPES
    assert {"val/label_f1", "val/label_mAP", "val/label_acc", "train/loss/label"} <= set(
        fit.trainer.callback_metrics
    )
    assert 0.0 <= float(fit.trainer.callback_metrics["val/label_mAP"]) <= 1.0
    counts = fit.datamodule.class_statistics("train").image_counts[1:]
    assert torch.equal(model.loss.label_weight_tensor, rule_weights(counts, "median_frequency"))
    fitted = json.loads((Path(fit.trainer.log_dir) / "summary.json").read_text())["labels"]
    assert fitted["names"] == SHAPES and 0.0 <= fitted["mAP"] <= 1.0  # the last validation's scores
    best = fit.trainer.checkpoint_callback.best_model_path

    tested = run_cli(["test", *tiny_args(run_root, *options), "--ckpt_path", best])
    labels = json.loads((Path(tested.trainer.log_dir) / "summary.json").read_text())["labels"]
    assert (
        labels["mode"] == "multi"
        and labels["names"] == SHAPES
        and labels["rows_target_cols_prediction"] is None
    )
    assert len(labels["precision"]) == len(labels["recall"]) == len(labels["ap"]) == 4

    predicted = run_cli(["predict", *tiny_args(run_root, *options), "--ckpt_path", best])
    with (Path(predicted.trainer.log_dir) / "predictions" / "labels.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["name", "labels", *SHAPES] and len(rows) == 1 + 4
    for row in rows[1:]:
        probabilities = [float(v) for v in row[2:]]
        decided = [name for name, p in zip(SHAPES, probabilities, strict=True) if p >= 0.4]
        assert row[1] == ";".join(decided)
