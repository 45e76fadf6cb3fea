"""RunPlots: the plots and tables of a run folder, after a tiny real fit, test, resume and tune on the default
synthetic data; a plot that fails and a Ctrl-C never cost the run its summary; and the pieces behind them
(per-image scores, the best/worst ranking and its compact class maps, the palette, empty figures, names
drawn literally, figures of 150 classes)."""

from __future__ import annotations

import copy
import csv
import json
import pickle
import random
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import tiny_args as lean_tiny_args
from lightning.pytorch.trainer.states import TrainerStatus
from torchvision.io import decode_png, read_file

import lightning_seg
from lightning_seg.callbacks import RunPlots
from lightning_seg.callbacks import plots as run_plots
from lightning_seg.callbacks.plots import HISTORY_FILE as HISTORY
from lightning_seg.cli import run_cli
from lightning_seg.data.synthetic import SyntheticDataModule
from lightning_seg.postprocess.thresholds import ThresholdHistogram, precision_recall_curve
from lightning_seg.reports import figures
from lightning_seg.reports.drawing import class_legend
from lightning_seg.reports.image_ranking import ImageRanking, image_miou
from lightning_seg.reports.palette import default_palette
from lightning_seg.reports.publish import figure_pixels


def tiny_args(root: Path, *extra: str, epochs: int = 1) -> list[str]:
    """helpers.tiny_args with the run plots and sample overlays this module is about."""
    return lean_tiny_args(root, *extra, epochs=epochs, plots=True)


# SmallComponents makes the final class maps differ from the plain argmax, so a ranking made from the
# plain predictions (what test_step returned before) would not match the recomputation below
COMMON = (
    "--model.init_args.lr_scheduler=null",  # a constant rate: the run can be extended by a resume
    "--model.init_args.postprocess+=lightning_seg.postprocess.SmallComponents",
    "--model.init_args.postprocess.min_area=12",
    # validating every second epoch, the checkpoint of epoch 2 is written at its validation, before that
    # epoch's training row exists: the resume must take it from plots/history.json
    "--trainer.check_val_every_n_epoch=2",
)
REVERSED_CALLBACKS = """
trainer:
  callbacks:
    - class_path: lightning_seg.callbacks.ModelCheckpoint
      init_args: {monitor: val/mIoU, mode: max, save_last: true}
    - class_path: lightning_seg.callbacks.RunPlots
    - class_path: lightning_seg.callbacks.RunSummary
      init_args: {print_table: false}
"""
FIT_FILES = {
    "curves.png",
    "history.json",
    "confusion.png",
    "confusion.csv",
    "iou.png",
    "iou.csv",
    "label_histogram.png",
    "label_histogram.csv",
}
TEST_FILES = {
    "confusion.png",
    "confusion.csv",
    "iou.png",
    "iou.csv",
    "stages.csv",
    "best_worst.png",
    "best_worst.csv",
    "reliability.png",
    "reliability.csv",
}


def _run_plots(cli: Any) -> RunPlots:
    return next(c for c in cli.trainer.callbacks if isinstance(c, RunPlots))


def _summary(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "summary.json").read_text())


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """fit 2 epochs → test its last checkpoint → resume to 4 epochs (the callbacks in the other order)
    → tune."""
    tmp = tmp_path_factory.mktemp("plots")
    root = tmp / "runs"
    fit = run_cli(["fit", *tiny_args(root, *COMMON, epochs=2)])
    run = Path(fit.trainer.log_dir)
    out: dict[str, Any] = {
        "run": run,
        "fit_summary": _summary(run),
        "fit_history": copy.deepcopy(_run_plots(fit).history),
    }
    tested = tmp / "tested.ckpt"  # the resume rewrites last.ckpt
    shutil.copy(run / "checkpoints" / "last.ckpt", tested)
    test = run_cli(["test", *tiny_args(root, *COMMON), "--ckpt_path", str(tested)])
    out.update(test_dir=Path(test.trainer.log_dir), checkpoint=tested, test_data=test.datamodule)
    out["test_summary"] = _summary(out["test_dir"])
    reversed_config = tmp / "reversed.yaml"
    reversed_config.write_text(REVERSED_CALLBACKS)
    resumed = run_cli(
        ["fit", *tiny_args(root, *COMMON, "--config", str(reversed_config), epochs=4), "--ckpt_path", "last"]
    )
    out.update(resumed_history=_run_plots(resumed).history, resumed_summary=_summary(run))
    tune = run_cli(["tune", *tiny_args(root, *COMMON), "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    out["tune_dir"] = Path(tune.trainer.default_root_dir)
    return out


def _check_png(path: Path) -> None:
    image = decode_png(read_file(str(path)))
    assert image.dtype == torch.uint8 and image.shape[0] in (3, 4)
    height, width = image.shape[-2:]
    assert 150 <= height <= 2500 and 150 <= width <= 2500, (path.name, height, width)
    assert image[:3].float().std() > 10, f"{path.name} is blank"


def test_fit_writes_curves_confusion_iou_and_label_histogram(runs: dict[str, Any]) -> None:
    folder = runs["run"] / "plots"
    for summary in (runs["fit_summary"], runs["resumed_summary"]):  # RunSummary before RunPlots, then after
        assert {Path(p).name for p in summary["plots"]} == FIT_FILES
        assert all(Path(p).parent == folder for p in summary["plots"])
    assert {p.name for p in folder.iterdir()} == FIT_FILES
    for name in FIT_FILES:
        if name.endswith(".png"):
            _check_png(folder / name)
    # the tables hold the numbers the summary holds
    summary = runs["resumed_summary"]
    counts = [
        [int(v) for k, v in row.items() if k != "true \\ predicted"]
        for row in _rows(folder / "confusion.csv")
    ]
    assert counts == summary["confusion"]["rows_target_cols_prediction"]
    for row in _rows(folder / "iou.csv"):
        logged = summary["metrics"].get(f"val/IoU/{row['class']}")
        assert (row["IoU"] == "") == (logged is None)
        if logged is not None:
            assert float(row["IoU"]) == pytest.approx(logged)
    shares = [float(row["pixel_share"]) for row in _rows(folder / "label_histogram.csv")]
    assert sum(shares) == pytest.approx(1.0) and all(s > 0 for s in shares)


def test_iou_figure_and_table_carry_dice_beside_iou(runs: dict[str, Any]) -> None:
    for folder, summary, stage in (
        (runs["test_dir"], runs["test_summary"], "test"),
        (runs["run"], runs["resumed_summary"], "val"),
    ):
        rows = _rows(folder / "plots" / "iou.csv")
        assert [row["class"] for row in rows] == list(runs["test_data"].class_names)
        for row in rows:
            logged = summary["metrics"].get(f"{stage}/Dice/{row['class']}")
            assert (row["Dice"] == "") == (logged is None)
            if logged is not None:
                assert float(row["Dice"]) == pytest.approx(logged, abs=1e-6)
        assert any(row["Dice"] for row in rows)
    # the figure: a Dice panel beside the IoU one, sharing the class rows
    names = ["a", "b", "c"]
    figure = figures.iou_figure(names, [0.5, None, 0.25], "t", dice=[2 / 3, None, 0.4])
    iou_axis, dice_axis = figure.axes
    assert iou_axis.get_xlabel() == "IoU" and dice_axis.get_xlabel() == "Dice"
    assert [text.get_text() for text in dice_axis.texts] == ["0.667", "absent from the split", "0.400"]
    assert len(figures.iou_figure(names, [0.5, None, 0.25], "t").axes) == 1  # IoU alone without Dice


def test_test_writes_its_plots_and_tables_into_its_own_record(runs: dict[str, Any]) -> None:
    folder = runs["test_dir"] / "plots"
    assert {Path(p).name for p in runs["test_summary"]["plots"]} == TEST_FILES
    assert {p.name for p in folder.iterdir()} == TEST_FILES
    for name in TEST_FILES:
        if name.endswith(".png"):
            _check_png(folder / name)
    stages = _rows(folder / "stages.csv")
    assert [row["stage"] for row in stages] == [row["stage"] for row in runs["test_summary"]["stages"]]
    assert float(stages[-1]["mIoU"]) == pytest.approx(runs["test_summary"]["metrics"]["test/mIoU"], abs=1e-6)
    # the reliability bins: every scored pixel in one bin; over all bins, the accuracy of the argmax before
    # the class-map steps (the stage table's raw row: SmallComponents then changes the maps)
    bins = _rows(folder / "reliability.csv")
    pixels = sum(float(row["pixels"]) for row in bins)
    correct = sum(float(row["pixels"]) * float(row["accuracy"]) for row in bins if row["accuracy"] != "nan")
    assert pixels == sum(sum(row) for row in runs["test_summary"]["confusion"]["rows_target_cols_prediction"])
    assert correct / pixels == pytest.approx(float(stages[0]["acc"]), abs=1e-5)


def _reference_miou(prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Mean IoU over the classes in the target or the prediction, one class at a time."""
    ious = []
    for c in range(num_classes):
        p, t = prediction == c, target == c
        union = int((p | t).sum())
        if union:
            ious.append(int((p & t).sum()) / union)
    return sum(ious) / len(ious)


def test_best_and_worst_are_the_final_class_maps_that_predict_writes(runs: dict[str, Any]) -> None:
    data = runs["test_data"]
    dataset = data.datasets["test"]
    samples = [dataset[i] for i in range(len(dataset))]
    model = lightning_seg.load(runs["checkpoint"], device="cpu")  # predict's path, SmallComponents included
    results = model.predict([s["image"] for s in samples], probabilities=True)
    k = data.num_classes
    final = {
        s["name"]: _reference_miou(r.classes.long(), s["mask"], k)
        for s, r in zip(samples, results, strict=True)
    }
    plain = {
        s["name"]: _reference_miou(r.probabilities.argmax(0), s["mask"], k)
        for s, r in zip(samples, results, strict=True)
    }
    rows = _rows(runs["test_dir"] / "plots" / "best_worst.csv")
    worst = [r for r in rows if r["end"] == "worst"]
    best = [r for r in rows if r["end"] == "best"]
    assert len(worst) == len(best) == 4
    for row in rows:
        assert float(row["mIoU"]) == pytest.approx(final[row["name"]], abs=1e-9), row
    # the chosen images are the ends of the whole split, in order
    assert [float(r["mIoU"]) for r in worst] == pytest.approx(sorted(final.values())[:4], abs=1e-9)
    assert [float(r["mIoU"]) for r in best] == pytest.approx(
        sorted(final.values(), reverse=True)[:4], abs=1e-9
    )
    # and the check can fail: the plain argmax scores differ from the final maps' here
    assert any(abs(plain[r["name"]] - final[r["name"]]) > 1e-6 for r in rows)


def test_curves_history_survives_a_resume(runs: dict[str, Any]) -> None:
    first, resumed = runs["fit_history"], runs["resumed_history"]
    assert [row["epoch"] for row in first["train"]] == [1.0, 2.0]
    assert [row["epoch"] for row in resumed["train"]] == [1.0, 2.0, 3.0, 4.0]
    assert [row["epoch"] for row in resumed["val"]] == [2.0, 4.0]  # every second epoch
    assert resumed["train"][:2] == first["train"]  # nothing lost, nothing changed
    assert resumed["val"][:1] == first["val"]
    assert all("train/loss" in row and "train/loss/ce" in row and row["lr"] > 0 for row in resumed["train"])
    assert len(first["val"]) == 1 and 0 <= first["val"][0]["val/mIoU"] <= 1
    # the checkpoint carries it as plain data, and so does the run folder
    checkpoint = torch.load(runs["run"] / "checkpoints" / "last.ckpt", weights_only=True)
    saved = checkpoint["callbacks"]["RunPlots"]["history"]
    # (written at epoch 4's validation, before that epoch's training row: the run folder's record has it)
    assert saved["val"] == resumed["val"] and saved["train"] == resumed["train"][: len(saved["train"])]
    assert len(saved["train"]) >= 3
    assert json.loads((runs["run"] / "plots" / "history.json").read_text()) == resumed


def test_curves_history_keeps_train_and_val_scores(runs: dict[str, Any]) -> None:
    # the default run monitors val/mIoU: its train counterpart, logged by the module after RunPlots' own
    # epoch-end hook, completes each training row (the last one at the end of training)
    history = runs["resumed_history"]
    assert all(0 <= row["train/mIoU"] <= 1 for row in history["train"])
    assert all(0 <= row["val/mIoU"] <= 1 for row in history["val"])


def test_curves_figure_draws_the_monitored_and_label_scores_and_old_histories() -> None:
    train = [
        {"epoch": e, "train/loss": 1 / e, "lr": 0.1, "train/dice": 0.3 * e, "train/label_f1": 0.2 * e}
        for e in (1.0, 2.0)
    ]
    val = [
        {"epoch": e, "val/mIoU": 0.2 * e, "val/dice": 0.25 * e, "val/label_f1": 0.1 * e} for e in (1.0, 2.0)
    ]
    figure = figures.curves_figure(train, val, monitor="dice")
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[1:4] == [
        "mIoU: train solid, val dashed",
        "dice (monitored): train solid, val dashed",
        "image-level head (train solid, val dashed)",
    ]
    lines = {line.get_label() for line in figure.axes[2].get_lines()} | {
        line.get_label() for line in figure.axes[3].get_lines()
    }
    assert {"dice (train)", "dice (val)", "f1 (train)", "f1 (val)"} <= lines
    # a history written before train scores were kept: val mIoU alone, and no panel for what is not there
    old = figures.curves_figure(
        [{"epoch": 1.0, "train/loss": 1.0, "lr": 0.1}], [{"epoch": 1.0, "val/mIoU": 0.4}]
    )
    assert [ax.get_title() for ax in old.axes] == [
        "loss terms (train solid, val dashed)",
        "mIoU (monitored): train solid, val dashed",
        "learning rate (at each epoch's end)",
    ]


def test_tune_writes_its_threshold_curves(runs: dict[str, Any]) -> None:
    folder = runs["tune_dir"]
    summary = _summary(folder)
    assert summary["plots"] == [str(folder / "plots" / "threshold_curves.png")]
    _check_png(folder / "plots" / "threshold_curves.png")
    curves = summary["curves"]
    assert len(curves["thresholds"]) == 101 and curves["thresholds"][50] == 0.5
    assert len(curves["classes"]) == len(summary["class_names"])
    for i, chosen in enumerate(summary["classes"]["thresholds"]):
        if chosen is None:
            continue
        curve = curves["classes"][i]
        at = curves["thresholds"].index(chosen)
        assert curve[at] == pytest.approx(summary["classes"]["score"][i], abs=1e-6)
        assert curve[at] == pytest.approx(max(v for v in curve if v is not None), abs=1e-6)


# --------------------------------------------------------------- a binary head with an image-level head
BINARY_CALLBACKS = """
trainer:
  callbacks:
    - class_path: lightning_seg.callbacks.ModelCheckpoint
      init_args: {monitor: val/dice, mode: max, save_last: true}
    - class_path: lightning_seg.callbacks.RunPlots
      init_args: {num_images: 0, label_histogram: false}
"""


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """MicroUNet with one sigmoid mask channel and its image-level head, checkpoints chosen by val/dice:
    fit one epoch, then test its last checkpoint."""
    from data_trees import folder_args, folder_tree

    tmp = tmp_path_factory.mktemp("binary")
    data = folder_tree(tmp / "data", count=8, num_classes=2)
    callbacks = tmp / "callbacks.yaml"
    callbacks.write_text(BINARY_CALLBACKS)
    args = [
        *(value if value != "[a,b,c]" else "[background,pet]" for value in folder_args(data)),
        "--model.init_args.binary_head=true",
        "--model.init_args.net=lightning_seg.models.MicroUNet",
        "--model.init_args.net.base_width=4",
        "--config",
        str(callbacks),
    ]
    fit = run_cli(["fit", *tiny_args(tmp / "runs", *args)])
    run = Path(fit.trainer.log_dir)
    last = run / "checkpoints" / "last.ckpt"
    test = run_cli(["test", *tiny_args(tmp / "runs", *args), "--ckpt_path", str(last)])
    return {
        "run": run,
        "checkpoint": last,
        "history": copy.deepcopy(_run_plots(fit).history),
        "test_dir": Path(test.trainer.log_dir),
        "test_data": test.datamodule,
        "data": data,
    }


def test_curves_keep_train_and_val_of_the_monitored_and_label_scores(binary_run: dict[str, Any]) -> None:
    history = binary_run["history"]
    (train,), (val,) = history["train"], history["val"]
    for stage, row in (("train", train), ("val", val)):
        for name in ("mIoU", "dice", "label_f1", "label_acc"):  # (a single-label head logs no mAP)
            assert 0 <= row[f"{stage}/{name}"] <= 1, (stage, name)
    # saved at the epoch's end, the checkpoint holds the whole row; so does the run folder's record
    checkpoint = torch.load(binary_run["checkpoint"], weights_only=True)
    assert checkpoint["callbacks"]["RunPlots"]["history"] == history
    assert json.loads((binary_run["run"] / "plots" / HISTORY).read_text()) == history
    _check_png(binary_run["run"] / "plots" / "curves.png")


def test_test_draws_the_binary_heads_precision_recall_curve(binary_run: dict[str, Any]) -> None:
    folder = binary_run["test_dir"] / "plots"
    _check_png(folder / "precision_recall.png")
    rows = sorted(_rows(folder / "precision_recall.csv"), key=lambda row: -float(row["threshold"]))
    recall = [float(row["recall"]) for row in rows]
    assert recall == sorted(recall) and recall[-1] == 1.0  # threshold falling: recall never falls
    # the pixels test scored: predict's probabilities of each test image file against its mask as stored
    # (test scores at the original size), 255 left out
    dataset = binary_run["test_data"].datasets["test"]
    names = [dataset[i]["name"] for i in range(len(dataset))]
    data = binary_run["data"]
    model = lightning_seg.load(binary_run["checkpoint"], device="cpu")
    results = model.predict([data / "images" / f"{name}.png" for name in names], probabilities=True)
    scores, truths = [], []
    for name, result in zip(names, results, strict=True):
        mask = decode_png(read_file(str(data / "masks" / f"{name}.png")))[0].long()
        valid = mask != 255
        scores.append(result.probabilities[-1][valid])
        truths.append(mask[valid] == 1)
    # the table's counts are those pixels' (a one-step net scores them all within 0.002: in two bins, so
    # the binned AP is checked against scikit-learn in the test below, on spread probabilities)
    histogram = ThresholdHistogram(1, len(rows))
    score, truth = torch.cat(scores), torch.cat(truths)
    histogram.update(score[None, None], truth[None, None], torch.ones_like(truth)[None])
    counts = histogram.compute()
    for key in ("tp", "fp", "fn"):
        assert [int(row[key]) for row in reversed(rows)] == counts[key][0].tolist()
    assert int(rows[-1]["tp"]) + int(rows[-1]["fp"]) == len(score)  # threshold 0: every pixel scored


def test_binned_precision_recall_matches_scikit_learn() -> None:
    """The accumulator on known probabilities: exact where they sit on the grid, within a bin's spread
    otherwise; ignored pixels left out; recall rises as the threshold falls."""
    from sklearn.metrics import average_precision_score

    generator = torch.Generator().manual_seed(0)
    truth = torch.rand(2, 1, 16, 16, generator=generator) < 0.3
    noisy = (truth.float() * 0.35 + torch.rand(truth.shape, generator=generator) * 0.65).clamp(0, 1)
    valid = torch.rand(2, 16, 16, generator=generator) > 0.1
    keep = valid[:, None]
    for probabilities, steps, tolerance in ((noisy, 1001, 2e-3), ((noisy * 100).round() / 100, 101, 1e-9)):
        histogram = ThresholdHistogram(1, steps)
        histogram.update(probabilities[:1], truth[:1], valid[:1])  # two batches
        histogram.update(probabilities[1:], truth[1:], valid[1:])
        counts = histogram.compute()
        curve = precision_recall_curve(counts["tp"][0], counts["fp"][0], counts["fn"][0])
        expected = average_precision_score(truth[keep].numpy(), probabilities[keep].numpy())
        assert float(curve["average_precision"]) == pytest.approx(expected, abs=tolerance)
        recall = curve["recall"].flip(0)
        assert bool((recall[1:] >= recall[:-1]).all()) and float(recall[-1]) == 1.0
        assert int(counts["tp"][0, 0] + counts["fp"][0, 0]) == int(valid.sum())
    empty = precision_recall_curve(
        torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)
    )
    assert empty["average_precision"].isnan()  # no foreground pixel: no AP


# ------------------------------------------------------------------------------------------ the pieces
def test_image_miou_matches_a_class_by_class_count() -> None:
    generator = torch.Generator().manual_seed(0)
    predictions = [torch.randint(0, 4, (9, 7), generator=generator) for _ in range(3)]
    targets = [torch.randint(0, 4, (9, 7), generator=generator) for _ in range(3)]
    targets[1][:3] = 255  # partly ignored
    scores = image_miou(predictions, targets, 4, 255)
    for prediction, target, score in zip(predictions, targets, scores.tolist(), strict=True):
        valid = target != 255
        assert score == pytest.approx(_reference_miou(prediction[valid], target[valid], 4))
    # images of different sizes, and a wholly ignored one (no score)
    mixed = image_miou(
        [predictions[0], torch.zeros(5, 6, dtype=torch.long)], [targets[0], torch.full((5, 6), 255)], 4, 255
    )
    assert mixed[0] == pytest.approx(scores[0]) and mixed[1].isnan()


def _ranked(ranking: ImageRanking, batches: list[list[tuple[str, float]]]) -> list[str]:
    """Feed ``batches`` of (name, score); the names whose tensors were fetched (copied to the host)."""
    fetched: list[str] = []
    for batch in batches:

        def fetch(i: int, batch: list[tuple[str, float]] = batch) -> tuple[torch.Tensor, ...]:
            fetched.append(batch[i][0])
            zeros = torch.zeros(2, 2, dtype=torch.long)
            return torch.zeros(3, 2, 2, dtype=torch.uint8), zeros, zeros

        ranking.update([score for _, score in batch], [name for name, _ in batch], fetch, 4, 255)
    return fetched


def test_ranking_keeps_the_ends_whatever_the_order_and_copies_only_them() -> None:
    items = [(f"img{i}", s) for i, s in enumerate([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, float("nan")])]
    for seed in range(3):
        shuffled = random.Random(seed).sample(items, len(items))
        ranking = ImageRanking(2)
        fetched = _ranked(ranking, [shuffled[i : i + 3] for i in range(0, len(shuffled), 3)])
        assert [i.name for i in ranking.best] == ["img2", "img6"]
        assert [i.name for i in ranking.worst] == ["img1", "img5"]
        assert "img7" not in fetched  # no score (a wholly ignored image): never kept
    # images that enter neither end are never copied
    ranking = ImageRanking(2)
    fetched = _ranked(ranking, [[("a", 0.1), ("b", 0.2), ("c", 0.8), ("d", 0.9)], [("e", 0.5), ("f", 0.3)]])
    assert fetched == ["a", "b", "c", "d"]
    # ties are broken by name, so the processes of a DDP run agree with a single one
    ranking.merge([([], [])])
    assert [i.name for i in ranking.worst] == ["a", "b"]


def test_figures_without_data_are_skipped() -> None:
    assert figures.curves_figure([], []) is None
    assert figures.curves_figure([{"epoch": 1.0, "step": 4}], []) is None
    assert figures.iou_figure(["a", "b"], [None, None], "t") is None
    assert figures.confusion_figure(torch.zeros(2, 2, dtype=torch.long), ["a", "b"], "t") is None
    assert figures.label_head_figure(None, "t") is None
    assert figures.best_worst_figure([], [], ["a", "b"], 255) is None
    untuned = figures.ThresholdPanel("t", ["a", "b"], [[None, None], [None, None]], [None, None], "Dice")
    assert figures.threshold_curves_figure([0.0, 1.0], [untuned]) is None
    assert figures.label_histogram_figure(["a", "b"], [0.0, 0.0], None, 0) is None
    no_foreground = {"recall": [None, None], "precision": [0.0, None], "positives": 0, "pixels": 4}
    assert figures.precision_recall_figure(no_foreground) is None


# --------------------------------------------------------------------------- failures keep the record
def test_a_plot_that_fails_is_left_out_and_the_summary_is_still_written(
    run_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    publish_table = run_plots.publish_table

    def full_disk_for_the_confusion_counts(
        trainer: Any, tag: str, columns: Any, rows: Any, path: Path
    ) -> Path:
        if path.name == "confusion.csv":
            full_disk()
        return publish_table(trainer, tag, columns, rows, path)

    monkeypatch.setattr(figures, "iou_figure", full_disk)  # a whole plot fails
    monkeypatch.setattr(run_plots, "publish_table", full_disk_for_the_confusion_counts)  # a plot's 2nd file
    with pytest.warns(UserWarning) as warned:
        fit = run_cli(["fit", *tiny_args(run_root)])
    summary = _summary(Path(fit.trainer.log_dir))
    assert summary["status"] == "completed" and 0 <= summary["metrics"]["val/mIoU"] <= 1
    # what was written is listed (the confusion figure came before its table), what failed is not
    assert {Path(p).name for p in summary["plots"]} == FIT_FILES - {"iou.png", "iou.csv", "confusion.csv"}
    assert [str(w.message) for w in warned if "RunPlots" in str(w.message)] == [
        "RunPlots: fit plot 'confusion' not drawn (OSError: [Errno 28] No space left on device)",
        "RunPlots: fit plot 'iou' not drawn (OSError: [Errno 28] No space left on device)",
    ]


def test_ctrl_c_records_the_plots_without_a_pass_over_the_training_masks(
    run_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    statuses: list[Any] = []  # the trainer's status at each request for the class statistics
    class_statistics = SyntheticDataModule.class_statistics

    def counted(self: SyntheticDataModule, split: str = "train") -> Any:
        statuses.append(self.trainer.state.status if self.trainer is not None else None)
        return class_statistics(self, split)

    monkeypatch.setattr(SyntheticDataModule, "class_statistics", counted)
    handler = signal.getsignal(signal.SIGINT)  # Lightning ignores further Ctrl-C while it shuts down
    interrupt = ("--trainer.callbacks+=helpers.InterruptAtStep", "--trainer.callbacks.step=6")
    try:
        with pytest.warns(UserWarning, match="label histogram left out"), pytest.raises(SystemExit):
            run_cli(["fit", *tiny_args(run_root, *interrupt, epochs=3)])
    finally:
        signal.signal(signal.SIGINT, handler)
    (run,) = (run_root / "default").iterdir()
    summary = _summary(run)
    assert summary["status"] == "interrupted"
    assert {Path(p).name for p in summary["plots"]} == FIT_FILES - {
        "label_histogram.png",
        "label_histogram.csv",
    }
    assert TrainerStatus.INTERRUPTED not in statuses


# ------------------------------------------------------------------------------- names, colours, size
TAB20_ROWS = [
    [0, 0, 0],
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
    [174, 199, 232],
    [255, 187, 120],
    [152, 223, 138],
    [255, 152, 150],
    [197, 176, 213],
    [196, 156, 148],
    [247, 182, 210],
    [199, 199, 199],
    [219, 219, 141],
    [158, 218, 229],
]
"""The palette's rows before it grew past 21 colours: what users' colour PNGs hold."""


def test_the_palette_has_a_distinct_colour_for_every_class() -> None:
    palette = default_palette(300)
    assert palette.shape == (300, 3) and palette.dtype == torch.uint8
    rows = [tuple(row) for row in palette.tolist()]
    assert len(set(rows)) == 300 and (255, 255, 255) not in rows  # white: ignored pixels
    assert palette[:21].tolist() == TAB20_ROWS  # the first 21 as they were
    for k in (2, 5, 21, 22, 150):  # a class's colour does not depend on how many classes there are
        assert torch.equal(default_palette(k), palette[:k])


def _every_figure(names: list[str], item: figures.RankedImage) -> dict[str, Any]:
    """Each figure builder of a run's plots, on ``names`` (K classes) and one ranked image."""
    k = len(names)
    generator = torch.Generator().manual_seed(0)
    confusion = torch.randint(0, 50, (k, k), generator=generator) + 1000 * torch.eye(k, dtype=torch.long)
    scores = [[0.1, 0.6, 0.3]] * k
    return {
        "curves": figures.curves_figure(
            [{"epoch": 1.0, "train/loss": 1.0, "lr": 0.1}, {"epoch": 2.0, "train/loss": 0.5, "lr": 0.01}],
            [{"epoch": 2.0, "val/loss": 0.7, "val/mIoU": 0.4}],
        ),
        "confusion": figures.confusion_figure(confusion, names, "val: confusion"),
        "iou": figures.iou_figure(names, [None if i % 7 == 3 else i / k for i in range(k)], "val: IoU"),
        "label_histogram": figures.label_histogram_figure(names, [1 / k] * k, [0.5] * k, 100),
        "label_head": figures.label_head_figure(
            {"names": names, "precision": [0.5] * k, "recall": [None] * k, "f1": 0.5, "acc": 0.5}, "head"
        ),
        "best_worst": figures.best_worst_figure([item] * 8, [item] * 8, names, 255),  # 16 rows
        "threshold_curves": figures.threshold_curves_figure(
            [0.0, 0.5, 1.0], [figures.ThresholdPanel("classes", names, scores, [0.5] * k, "Dice")]
        ),
    }


def test_names_are_drawn_as_written_not_as_mathtext() -> None:
    from matplotlib import cbook
    from matplotlib.text import Text

    # "$x^$" is broken mathtext: read as such, drawing the figure would raise
    names = ["background", "$x^$", "cost ($)", "a$b$c"]
    maps = torch.arange(64).view(8, 8) % 4
    item = figures.RankedImage("$img^$", 0.5, torch.zeros(3, 8, 8, dtype=torch.uint8), maps, maps.flip(0))
    for name, figure in _every_figure(names, item).items():
        figure_pixels(figure)
        texts = [t.get_text() for t in figure.findobj(Text)]
        assert not any(cbook.is_math_text(text) for text in texts), name
    shown = [handle.get_label() for handle in class_legend(names)]
    assert [label.replace(r"\$", "$") for label in shown] == names


def test_figures_of_150_classes_stay_legible_and_bounded() -> None:
    k = 150
    names = [f"class {i:03d}" for i in range(k)]
    maps = (torch.arange(20 * 30) % 40).view(20, 30)  # 40 of the 150 classes in the images
    item = figures.RankedImage("img", 0.5, torch.zeros(3, 20, 30, dtype=torch.uint8), maps, maps.flip(1))
    built = _every_figure(names, item)
    for name, figure in built.items():
        pixels = figure_pixels(figure)
        assert max(pixels.shape[1:]) <= 3000, (name, pixels.shape)
    axis = built["confusion"].axes[0]
    named = [label.get_text() for label in axis.get_yticklabels() if label.get_text()]
    assert 20 <= len(named) < k and not axis.texts  # one name in n; no numbers in 22500 cells
    legend = built["best_worst"].legends[0]
    assert len(legend.get_texts()) == 40  # only the classes in the pictures


# ------------------------------------------------------------------------------ compact ranked images
def test_ranked_class_maps_are_kept_in_the_smallest_type() -> None:
    from lightning_seg.data.base import mask_wire_dtype as class_map_dtype

    assert class_map_dtype(4, 255) == class_map_dtype(255, 255) == torch.uint8
    assert class_map_dtype(300, 255) == class_map_dtype(4, -100) == torch.int16
    assert class_map_dtype(40_000, 255) == torch.int32
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    target = torch.randint(0, 4, (64, 64))
    target[0, :3] = torch.tensor([255, 7, -1])  # ignored; and two labels the metrics ignore too
    prediction = torch.randint(0, 4, (64, 64))
    ranking = ImageRanking(1)
    ranking.update([0.5], ["a"], lambda i: (image, target, prediction), 4, 255)
    (item,) = ranking.best
    assert item.target.dtype == item.prediction.dtype == torch.uint8
    assert torch.equal(item.prediction.long(), prediction) and torch.equal(item.image, image)
    expected = target.clone()
    expected[0, 1:3] = 255
    assert torch.equal(item.target.long(), expected)
    # what DDP's all_gather_object copies: the class maps at 1 byte a pixel instead of 8
    wide = figures.RankedImage("a", 0.5, image, target, prediction)
    assert len(pickle.dumps(ranking.best)) < 0.35 * len(pickle.dumps([wide]))
