"""The post-processing chain: the decision rule, the threshold search, the chain's order, and `tune` →
`test` → `predict` through the same path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from data_trees import folder_args
from helpers import TinyRun, assert_one_line_error, tiny_args

from lightning_seg.cli import main, run_cli
from lightning_seg.errors import ConfigError
from lightning_seg.postprocess import (
    ClassThresholds,
    LabelConsistency,
    PostProcess,
    Prediction,
    SmallComponents,
    decide,
)
from lightning_seg.postprocess.thresholds import ThresholdHistogram, best_thresholds, grid


# ------------------------------------------------------------------------------------ decision rule
def test_decision_rule() -> None:
    pixels = torch.tensor([[0.5, 0.1, 0.3], [0.3, 0.5, 0.3], [0.2, 0.4, 0.4]])  # one row per pixel
    p = pixels.T.reshape(3, 1, 3)  # K×H×W
    assert decide(p).tolist() == [[0, 1, 1]]  # the argmax (ties: the first)
    assert decide(p, torch.zeros(3)).tolist() == decide(p).tolist()  # thresholds all 0: the argmax
    # class 0 needs 0.6: pixel 0's only candidate is 2 (0.3 ≥ 0.2) though class 0 is more probable;
    # pixel 2's candidates 1 and 2 tie at 0.4: the most probable candidate, the first of a tie
    t = torch.tensor([0.6, 0.25, 0.2])
    assert decide(p, t).tolist() == [[2, 1, 1]]
    # margin: pixel 1: 1 → 0.25, 2 → 0.1; pixel 2: 1 → 0.15, 2 → 0.2
    assert decide(p, t, rule="margin").tolist() == [[2, 1, 2]]
    # no candidate: background, or the argmax on request
    high = torch.tensor([0.9, 0.9, 0.9])
    assert decide(p, high).tolist() == [[0, 0, 0]]
    assert decide(p, high, fallback="argmax").tolist() == decide(p).tolist()


def test_the_fallback_is_class_0_only_where_class_0_is_a_background() -> None:
    """CamVid's class 0 is Sky: an undecided pixel must not become Sky (it did before fallback: auto)."""
    from lightning_seg.postprocess import ClassThresholds

    assert ClassThresholds().for_classes(["Sky", "Building", "Road"]).fallback == "argmax"
    assert ClassThresholds().for_classes(["background", "cat"]).fallback == "background"
    assert ClassThresholds().for_classes(["_background_", "aeroplane"]).fallback == "background"
    assert (
        ClassThresholds(fallback="background").for_classes(["Sky", "Road"]).fallback == "background"
    )  # as asked


# -------------------------------------------------------------------------------- threshold search
def _direct_best(probabilities: torch.Tensor, positive: torch.Tensor, steps: int = 101) -> torch.Tensor:
    """The threshold maximising Dice, by brute force over the grid (the reference for the histogram)."""
    best = []
    for c in range(probabilities.shape[1]):
        scores = []
        for t in grid(steps).tolist():
            chosen = probabilities[:, c] >= torch.tensor(t, dtype=torch.float32)
            tp = (chosen & positive[:, c]).sum().item()
            fp = (chosen & ~positive[:, c]).sum().item()
            fn = (~chosen & positive[:, c]).sum().item()
            scores.append(2 * tp / max(2 * tp + fp + fn, 1))
        best.append(max(scores))
    return torch.tensor(best, dtype=torch.float64)


def test_thresholds_recover_known_optima_within_one_grid_step() -> None:
    """Per class, positives have probabilities in [t*, 1] and negatives in [0, t*): the best threshold is t*."""
    generator = torch.Generator().manual_seed(0)
    optimum = torch.tensor([0.2, 0.45, 0.7, 0.33])
    n = 4000
    positive = torch.rand(n, 4, generator=generator) < 0.3
    low = torch.rand(n, 4, generator=generator) * optimum * 0.999
    high = optimum + torch.rand(n, 4, generator=generator) * (1 - optimum)
    probabilities = torch.where(positive, high, low)
    histogram = ThresholdHistogram(4)
    # in two updates, as batches come: the counts add up
    histogram.update(probabilities[:2000], positive[:2000], torch.ones(2000, dtype=torch.bool))
    histogram.update(probabilities[2000:], positive[2000:], torch.ones(2000, dtype=torch.bool))
    result = best_thresholds(histogram, "dice")
    assert torch.tensor(result["thresholds"]) == pytest.approx(optimum.tolist(), abs=0.0101)
    assert result["score"] == pytest.approx([1.0] * 4)


def test_threshold_scores_equal_a_direct_count_at_every_threshold() -> None:
    generator = torch.Generator().manual_seed(1)
    n = 3000
    positive = torch.rand(n, 3, generator=generator) < torch.tensor([0.5, 0.2, 0.05])
    noise = torch.rand(n, 3, generator=generator)
    probabilities = torch.where(positive, 0.3 + 0.7 * noise, 0.8 * noise)  # overlapping: no perfect cut
    valid = torch.rand(n, generator=generator) > 0.1
    histogram = ThresholdHistogram(3)
    histogram.update(probabilities, positive, valid)
    result = best_thresholds(histogram, "dice")
    assert result["score"] == pytest.approx(_direct_best(probabilities[valid], positive[valid]).tolist())
    assert result["positives"] == positive[valid].sum(0).tolist()


def test_pixel_histogram_ignores_ignored_pixels_and_leaves_absent_classes_untuned() -> None:
    probabilities = torch.rand(1, 3, 4, 5)
    target = torch.zeros(1, 4, 5, dtype=torch.long)
    target[0, :2] = 1
    target[0, 3] = 255
    histogram = ThresholdHistogram(3)
    classes = torch.arange(3).view(1, 3, 1, 1)
    histogram.update(probabilities, target[:, None] == classes, target != 255)
    assert histogram.positive.sum(1).tolist() == [5, 10, 0]
    assert histogram.positive.sum() + histogram.negative.sum() == 3 * 15
    result = best_thresholds(histogram, "iou")
    assert result["untuned"] == [2] and result["thresholds"][2] is None


# ---------------------------------------------------------------------------------------- the chain
def test_chain_order_is_checked() -> None:
    with pytest.raises(ConfigError, match="out of order"):
        PostProcess([SmallComponents(min_area=3), ClassThresholds()])
    with pytest.raises(ConfigError, match="more than one decision"):
        PostProcess([ClassThresholds(), ClassThresholds()])


def test_chain_reports_each_stage_and_consistency_removes_absent_classes() -> None:
    probabilities = torch.zeros(3, 4, 4)
    probabilities[0] = 0.2
    probabilities[1, :, :2] = 0.7  # class 1 on the left half
    probabilities[2, :, 2:] = 0.7  # class 2 on the right half
    probabilities[1, :, 2:] = 0.1
    probabilities[2, :, :2] = 0.1
    prediction = Prediction(probabilities.clone(), present_classes=torch.tensor([True, True, False]))
    chain = PostProcess([LabelConsistency()])
    seen = []

    def decide_plain(item: Prediction) -> None:
        item.classes = item.probabilities.argmax(0)

    chain.run([prediction], decide_plain, lambda name, items: seen.append((name, items[0].classes.clone())))
    assert [name for name, _ in seen] == ["consistency"]
    # class 2 is absent: its pixels take the most probable allowed class (background 0.2 > class 1 0.1)
    assert prediction.classes[:, 2:].eq(0).all() and prediction.classes[:, :2].eq(1).all()


# ------------------------------------------------------------------------------- end to end (CLI)
CHAIN = [
    "--model.init_args.postprocess+=lightning_seg.postprocess.ClassThresholds",
    "--model.init_args.postprocess+=lightning_seg.postprocess.SmallComponents",
    "--model.init_args.postprocess.min_area=4",
]


def test_tune_test_and_predict_share_one_path_on_folder_data(tmp_path: Path, capsys) -> None:
    """Non-square images of three sizes trained at 24×24: `tune` writes thresholds beside the checkpoint,
    `test` with thresholds + small components reports one row per stage, and its mIoU equals predict's
    index PNGs scored against the masks as stored."""
    from data_trees import folder_tree, miou_of_index_pngs

    data = folder_tree(tmp_path / "data", count=12, sizes=((32, 48), (40, 40), (27, 33)))
    runs = tmp_path / "runs"
    common = folder_args(data)
    fit = run_cli(["fit", *tiny_args(runs, *common, epochs=3)])
    best = Path(fit.trainer.checkpoint_callback.best_model_path)

    tuned = run_cli(["tune", *tiny_args(runs, *common), "--ckpt_path", str(best)])
    assert tuned is not None
    thresholds_file = best.with_name(best.stem + ".thresholds.json")
    record = json.loads(thresholds_file.read_text())
    assert record["class_names"] == ["a", "b", "c"] and len(record["classes"]["thresholds"]) == 3
    tune_summary = json.loads((Path(tuned.trainer.default_root_dir) / "summary.json").read_text())
    assert tune_summary["stage"] == "tune"
    assert [row["stage"] for row in tune_summary["stages"]] == ["raw", "+ thresholds"]
    assert "one-vs-rest" in capsys.readouterr().out

    tested = run_cli(["test", *tiny_args(runs, *common, *CHAIN), "--ckpt_path", str(best)])
    summary = json.loads((Path(tested.trainer.log_dir) / "summary.json").read_text())
    assert [row["stage"] for row in summary["stages"]] == ["raw", "+ thresholds", "+ components (< 4 px)"]
    assert summary["stages"][-1]["mIoU"] == pytest.approx(summary["metrics"]["test/mIoU"], abs=1e-6)
    assert set(summary["stages"][0]["IoU"]) == {"a", "b", "c"}

    predicted = run_cli(["predict", *tiny_args(runs, *common, *CHAIN), "--ckpt_path", str(best)])
    expected, count = miou_of_index_pngs(Path(predicted.trainer.log_dir) / "predictions", data / "masks")
    assert count == 4
    assert summary["metrics"]["test/mIoU"] == pytest.approx(expected, abs=1e-6)


def test_thresholds_steps_change_the_decision(tmp_path: Path) -> None:
    """A thresholds file that leaves only the background as a candidate changes test's numbers, row by row."""
    runs = tmp_path / "runs"
    fit = run_cli(["fit", *tiny_args(runs, epochs=2)])
    best = Path(fit.trainer.checkpoint_callback.best_model_path)
    assert run_cli(["tune", *tiny_args(runs), "--ckpt_path", str(best)]) is not None
    path = best.with_name(best.stem + ".thresholds.json")
    record = json.loads(path.read_text())
    record["classes"]["thresholds"] = [0.0] + [1.0] * (len(record["class_names"]) - 1)
    other = tmp_path / "extreme.json"
    other.write_text(json.dumps(record))
    chain = [
        "--model.init_args.postprocess+=lightning_seg.postprocess.ClassThresholds",
        f"--model.init_args.postprocess.path={other}",
    ]
    tested = run_cli(["test", *tiny_args(runs, *chain), "--ckpt_path", str(best)])
    rows = tested.model.results.get("test").table
    assert [row["stage"] for row in rows] == ["raw", "+ thresholds"]
    # every pixel is background now: its IoU is its share of the pixels, the others' IoU is 0
    assert rows[1]["IoU"]["background"] == pytest.approx(rows[1]["acc"]) and rows[1]["acc"] > 0.5
    assert all(rows[1]["IoU"][name] in (0.0, None) for name in record["class_names"][1:])
    assert rows[1] != rows[0]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--split", "test"], "never on test"),
        (["--steps", "1"], "--steps must be >= 2"),
    ],
)
def test_tune_refuses_bad_arguments(run_root: Path, extra: list[str], needle: str, capsys) -> None:
    assert main(["tune", *tiny_args(run_root), "--allow_untrained=true", *extra]) == 2
    assert_one_line_error(capsys, needle)


def test_bad_thresholds_files_are_one_line(tmp_path: Path, run_root: Path, tiny_run: TinyRun, capsys) -> None:
    runs, best = run_root, tiny_run.best
    chain = ["--model.init_args.postprocess+=lightning_seg.postprocess.ClassThresholds"]
    # not tuned yet
    assert main(["test", *tiny_args(runs, *chain), "--ckpt_path", str(best)]) == 2
    assert_one_line_error(capsys, "run `python -m lightning_seg tune`")
    assert run_cli(["tune", *tiny_args(runs), "--ckpt_path", str(best)]) is not None
    capsys.readouterr()
    path = best.with_name(best.stem + ".thresholds.json")
    record = json.loads(path.read_text())
    # for another number of classes
    wrong = dict(record, class_names=record["class_names"][:3])
    wrong["classes"] = dict(record["classes"], thresholds=record["classes"]["thresholds"][:3])
    other = tmp_path / "three.json"
    other.write_text(json.dumps(wrong))
    assert (
        main(
            [
                "test",
                *tiny_args(runs, *chain, f"--model.init_args.postprocess.path={other}"),
                "--ckpt_path",
                str(best),
            ]
        )
        == 2
    )
    assert_one_line_error(capsys, "thresholds for 3 classes, the model has 5")
    # the checkpoint changed since it was tuned
    checkpoint = torch.load(best, weights_only=False)
    checkpoint["epoch"] = 99
    torch.save(checkpoint, best)
    assert main(["test", *tiny_args(runs, *chain), "--ckpt_path", str(best)]) == 2
    assert_one_line_error(capsys, "run tune again")


def test_crf_in_the_chain_reads_each_image_as_stored(tmp_path: Path) -> None:
    """A DenseCRF step makes the data keep each original image; test reports its row and predict writes
    what test scored."""
    pytest.importorskip("pydensecrf")
    from data_trees import folder_tree, miou_of_index_pngs

    data = folder_tree(tmp_path / "data", count=12, sizes=((32, 48), (27, 33)))
    runs = tmp_path / "runs"
    crf = [
        "--model.init_args.postprocess+=lightning_seg.postprocess.DenseCRF",
        "--model.init_args.postprocess.iterations=3",
        "--model.init_args.postprocess.workers=0",
    ]
    fit = run_cli(["fit", *tiny_args(runs, *folder_args(data), epochs=2)])
    best = fit.trainer.checkpoint_callback.best_model_path
    tested = run_cli(["test", *tiny_args(runs, *folder_args(data), *crf), "--ckpt_path", best])
    rows = tested.model.results.get("test").table
    assert [row["stage"] for row in rows] == ["raw", "+ crf (3 iterations)"]
    assert tested.datamodule.datasets["test"].keep_original_image
    miou = float(tested.trainer.callback_metrics["test/mIoU"])
    assert miou == pytest.approx(rows[-1]["mIoU"], abs=1e-6)
    # predict with the same chain writes the classes test scored: its PNGs against the masks give test's mIoU
    predicted = run_cli(["predict", *tiny_args(runs, *folder_args(data), *crf), "--ckpt_path", best])
    expected, count = miou_of_index_pngs(Path(predicted.trainer.log_dir) / "predictions", data / "masks")
    assert count == len(tested.datamodule.datasets["test"]) == 4
    assert miou == pytest.approx(expected, abs=1e-6)


def test_a_class_without_a_threshold_is_left_to_the_argmax() -> None:
    # class 1 untuned (NaN); thresholds bg 0.6, class 2 0.5: pixel (0.55, 0.05, 0.40) has no tuned candidate,
    # and class 1 is not its argmax: background, not the class with p = 0.05
    p = torch.tensor([[0.55, 0.05, 0.40], [0.2, 0.7, 0.1]]).T.reshape(3, 1, 2)
    t = torch.tensor([0.6, float("nan"), 0.5])
    assert decide(p, t).tolist() == [[0, 1]]  # pixel 1: class 1 is its argmax, so a candidate
    assert decide(p, t, rule="margin").tolist() == [[0, 1]]


def test_classes_no_label_speaks_about_are_never_removed() -> None:
    from lightning_seg.labels import classes_of_labels, label_class_map

    # MSD-like: labels None/Scratch/Stain and classes background/scratch/stain/dust (dust has no label)
    table = label_class_map(
        ["None", "Scratch", "Stain"], ["background", "scratch", "stain", "dust"], "single", False
    )
    present = classes_of_labels(torch.tensor([[False, True, False]]), table)
    assert present.tolist() == [[True, True, False, True]]
    # binary MSD masks: every defect label names the one "defect" class
    binary = label_class_map(
        ["None", "Scratch", "Stain"], ["background", "defect"], "single", False, (None, "defect", "defect")
    )
    assert classes_of_labels(torch.tensor([[False, False, True]]), binary).tolist() == [[True, True]]
    assert classes_of_labels(torch.tensor([[True, False, False]]), binary).tolist() == [[True, False]]


def test_thresholds_tuned_on_other_probabilities_are_refused(
    tmp_path: Path, run_root: Path, tiny_run: TinyRun, capsys
) -> None:
    runs, best = run_root, tiny_run.best
    # tuned into the configured file, which test then reads
    configured = tmp_path / "mine.json"
    chain = [
        "--model.init_args.postprocess+=lightning_seg.postprocess.ClassThresholds",
        f"--model.init_args.postprocess.path={configured}",
    ]
    assert run_cli(["tune", *tiny_args(runs, *chain), "--ckpt_path", str(best)]) is not None
    assert configured.is_file() and not best.with_name(best.stem + ".thresholds.json").exists()
    assert run_cli(["test", *tiny_args(runs, *chain), "--ckpt_path", str(best)]) is not None
    capsys.readouterr()
    tta = [
        "--model.init_args.inference=lightning_seg.inference.Inference",
        "--model.init_args.inference.hflip=true",
    ]
    assert main(["test", *tiny_args(runs, *chain, *tta), "--ckpt_path", str(best)]) == 2
    assert_one_line_error(capsys, "tuned with inference 'resize', this run uses 'resize + hflip'")


def test_label_consistency_needs_an_image_level_head(run_root: Path, capsys) -> None:
    chain = ["--model.init_args.postprocess+=lightning_seg.postprocess.LabelConsistency"]
    assert main(["test", *tiny_args(run_root, *chain), "--allow_untrained=true"]) == 2
    assert_one_line_error(capsys, "has no image-level head")
    # the oracle ablation needs no head, and says what it is
    oracle = [*chain, "--model.init_args.postprocess.oracle=true"]
    tested = run_cli(["test", *tiny_args(run_root, *oracle), "--allow_untrained=true"])
    assert [row["stage"] for row in tested.model.results.get("test").table] == [
        "raw",
        "+ consistency (oracle labels)",
    ]


def test_tune_runs_from_a_runs_recorded_config(run_root: Path) -> None:
    """The README's way: a run's config.yaml (which records fit's weights_only) drives tune as it drives test."""
    fit = run_cli(["fit", *tiny_args(run_root)])
    run = Path(fit.trainer.log_dir)
    best = fit.trainer.checkpoint_callback.best_model_path
    tuned = run_cli(["tune", "--config", str(run / "config.yaml"), "--ckpt_path", best])
    assert tuned is not None
    assert Path(tuned.trainer.default_root_dir).parent == run / "tune"
    assert json.loads((Path(tuned.trainer.default_root_dir) / "summary.json").read_text())["stage"] == "tune"


def test_a_multi_label_head_gets_tuned_thresholds_that_consistency_reads(run_root: Path) -> None:
    micro = [
        "--model.init_args.net=lightning_seg.models.MicroUNet",
        "--model.init_args.net.base_width=8",
        "--model.init_args.label_mode=multi",
    ]
    fit = run_cli(["fit", *tiny_args(run_root, *micro)])
    best = Path(fit.trainer.checkpoint_callback.best_model_path)
    assert run_cli(["tune", *tiny_args(run_root, *micro), "--ckpt_path", str(best)]) is not None
    record = json.loads(best.with_name(best.stem + ".thresholds.json").read_text())
    assert record["labels"]["names"] == ["disc", "square", "triangle", "ring"]
    assert len(record["labels"]["thresholds"]) == 4
    chain = [
        "--model.init_args.postprocess+=lightning_seg.postprocess.ClassThresholds",
        "--model.init_args.postprocess+=lightning_seg.postprocess.LabelConsistency",
    ]
    tested = run_cli(["test", *tiny_args(run_root, *micro, *chain), "--ckpt_path", str(best)])
    tuned = [0.5 if t is None else t for t in record["labels"]["thresholds"]]
    assert tested.model.tuned_label_thresholds().tolist() == pytest.approx(tuned)
    rows = [row["stage"] for row in tested.model.results.get("test").table]
    assert rows == ["raw", "+ thresholds", "+ consistency"]
    summary = json.loads((Path(tested.trainer.log_dir) / "summary.json").read_text())
    assert summary["labels"]["names"] == record["labels"]["names"]
