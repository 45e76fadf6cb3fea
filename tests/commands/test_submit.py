"""``submit``: the CSV decodes exactly to the class maps that the same path writes as PNGs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from helpers import TinyRun, assert_one_line_error, shipped_voc_kaggle_args, tiny_args, voc_kaggle_args
from torchvision.io import decode_png, read_file

from lightning_seg.cli import main, run_cli
from lightning_seg.submission import decode, decode_class_planes


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle))


def check_submission(
    csv_path: Path, predictions: Path, num_classes: int, ids: list[str] | None = None
) -> int:
    """Every segmentation row decodes to the planes ``index == c`` (c = 1..K-1) of the index PNG the same
    command wrote for that image; every classification row to the classes present in it (or, for a label
    head, to a 0/1 vector of the right length). Returns the number of images."""
    rows = _rows(csv_path)
    assert rows[0] == ["Id", "Predicted"]
    body = rows[1:]
    assert len(body) % 2 == 0
    seen = []
    for classification, segmentation in zip(body[::2], body[1::2], strict=True):
        identifier = classification[0].removesuffix("_classification")
        assert classification[0] == f"{identifier}_classification"
        assert segmentation[0] == f"{identifier}_segmentation"
        seen.append(identifier)
        index = decode_png(read_file(str(predictions / f"{identifier}_index.png")))[0].numpy()
        planes = decode_class_planes(segmentation[1], num_classes - 1, *index.shape)
        expected = np.stack([index == c for c in range(1, num_classes)])
        assert np.array_equal(planes, expected), identifier
        labels = decode(classification[1], (num_classes - 1,))
        assert labels.shape == (num_classes - 1,)
    if ids is not None:
        assert seen == ids
    return len(seen)


def test_submit_decodes_to_the_predicted_class_maps(run_root: Path, tiny_run: TinyRun) -> None:
    ckpt = str(tiny_run.last)
    run_cli(["submit", *tiny_args(run_root), "--ckpt_path", ckpt])
    (folder,) = (Path(ckpt).parent.parent / "submit").iterdir()
    assert check_submission(folder / "submission.csv", folder / "predictions", num_classes=5) == 4
    # the classification rows come from the masks here (the U-Net has no head): the present classes
    for classification, _ in zip(*[iter(_rows(folder / "submission.csv")[1:])] * 2, strict=True):
        identifier = classification[0].removesuffix("_classification")
        index = decode_png(read_file(str(folder / "predictions" / f"{identifier}_index.png")))[0].numpy()
        present = np.isin(np.arange(1, 5), np.unique(index))
        assert np.array_equal(decode(classification[1], (4,)), present)


def test_submit_refuses_labels_from_a_head_the_net_lacks(
    run_root: Path, tiny_run: TinyRun, capsys: pytest.CaptureFixture
) -> None:
    ckpt = str(tiny_run.last)
    assert main(["submit", *tiny_args(run_root), "--ckpt_path", ckpt, "--labels_from", "head"]) == 2
    assert_one_line_error(capsys, "has no image-level head; use --labels_from mask")


def test_voc_kaggle_fit_tune_test_submit_with_one_config(tmp_path: Path) -> None:
    """The competition path end to end with configs/voc_kaggle/unet.yaml (shrunk): fit, tune (class and
    label thresholds), test, submit; the CSV is in test_set.csv's order, its planes decode to the class maps
    the same path wrote, and its classification rows to the head's decisions with the tuned label
    thresholds (labels.csv of the same command)."""
    from data_trees import VOC_KAGGLE_TEST_IDS, voc_kaggle_tree

    data = voc_kaggle_tree(tmp_path / "voc")
    runs = tmp_path / "runs"
    args = shipped_voc_kaggle_args("unet", runs, data, "--model.init_args.net.init_args.base_width=8")
    fit = run_cli(["fit", *args])
    ckpt = fit.trainer.checkpoint_callback.last_model_path
    assert main(["test", *args, "--ckpt_path", ckpt]) == 2  # before tune: one line, "run tune"
    assert run_cli(["tune", *args, "--ckpt_path", ckpt]) is not None
    tested = run_cli(["test", *args, "--ckpt_path", ckpt])
    assert "test/competition_dice" in tested.trainer.callback_metrics
    assert [row["stage"] for row in tested.model.results.get("test").table][-1] == "+ thresholds"
    assert all("competition_dice" in row for row in tested.model.results.get("test").table)
    run_cli(["submit", *args, "--ckpt_path", ckpt])
    (folder,) = (Path(ckpt).parent.parent / "submit").iterdir()
    ids = list(VOC_KAGGLE_TEST_IDS)
    assert check_submission(folder / "submission.csv", folder / "predictions", 21, ids) == len(ids)
    with (folder / "predictions" / "labels.csv").open(newline="") as handle:
        decided = {
            row["name"]: row["labels"].split(";") if row["labels"] else [] for row in csv.DictReader(handle)
        }
    names = list(tested.model.label_names)
    for classification, _ in zip(*[iter(_rows(folder / "submission.csv")[1:])] * 2, strict=True):
        identifier = classification[0].removesuffix("_classification")
        expected = np.array([name in decided[identifier] for name in names])
        assert np.array_equal(decode(classification[1], (20,)), expected), identifier


def test_classification_rows_follow_the_test_csv_column_order(tmp_path: Path) -> None:
    """A test_set.csv whose label columns are in another order than VOC's gets its vectors in that order
    (matched by name), never VOC's order under another header."""
    from data_trees import voc_kaggle_tree

    data = voc_kaggle_tree(tmp_path / "voc")
    test_csv = data / "test" / "test_set.csv"
    rows = _rows(test_csv)
    reordered = [[row[0], *reversed(row[1:])] for row in rows]
    with test_csv.open("w", newline="") as handle:
        csv.writer(handle).writerows(reordered)
    runs = tmp_path / "runs"
    fit = run_cli(["fit", *voc_kaggle_args(runs, data)])
    ckpt = fit.trainer.checkpoint_callback.last_model_path
    run_cli(["submit", *voc_kaggle_args(runs, data), "--ckpt_path", ckpt])
    (folder,) = (Path(ckpt).parent.parent / "submit").iterdir()
    with (folder / "predictions" / "labels.csv").open(newline="") as handle:
        decided = {
            row["name"]: row["labels"].split(";") if row["labels"] else [] for row in csv.DictReader(handle)
        }
    columns = reordered[0][1:]
    assert columns[0] == "tvmonitor"
    body = _rows(folder / "submission.csv")[1:]
    for classification in body[::2]:
        identifier = classification[0].removesuffix("_classification")
        expected = np.array([name in decided[identifier] for name in columns])
        assert np.array_equal(decode(classification[1], (20,)), expected), identifier


def test_submit_refuses_before_the_pass_when_a_test_image_was_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from data_trees import VOC_KAGGLE_TEST_IDS, voc_kaggle_tree

    data = voc_kaggle_tree(tmp_path / "voc")
    runs = tmp_path / "runs"
    fit = run_cli(["fit", *voc_kaggle_args(runs, data)])
    ckpt = fit.trainer.checkpoint_callback.last_model_path
    missing = VOC_KAGGLE_TEST_IDS[1]
    (data / "test" / "img" / f"test_{missing}.npy").unlink()
    skip = "--data.init_args.on_bad_sample=skip"
    assert main(["submit", *voc_kaggle_args(runs, data), skip, "--ckpt_path", ckpt]) == 2
    assert_one_line_error(
        capsys, f"1 test images of the competition CSV were skipped as bad files (Id {missing}, ...)"
    )
    assert not list((Path(ckpt).parent.parent / "submit").glob("*/submission.csv"))


def test_labels_from_a_file_fill_the_classification_rows_and_correct_the_maps(
    run_root: Path, tiny_run: TinyRun, tmp_path: Path
) -> None:
    """Another model's labels (here a 0/1 file saying only ``disc`` is present) drive both the
    classification rows (``--labels_from``) and LabelConsistency (``labels:``) of a net without a head:
    every row says disc only, and every map holds background and disc only."""
    labels = tmp_path / "labels.csv"
    names = [f"shapes_3_{i:05d}" for i in range(4)]  # the synthetic predict split of seed 0
    labels.write_text("name,disc,square,triangle,ring\n" + "".join(f"{n},1,0,0,0\n" for n in names))
    consistency = (
        f"[{{class_path: lightning_seg.postprocess.LabelConsistency, init_args: {{labels: {labels}}}}}]"
    )
    ckpt = str(tiny_run.last)
    # tune reads no image labels (the file covers the predicted images, not val's)
    assert run_cli(
        ["tune", *tiny_args(run_root), "--ckpt_path", ckpt, "--model.init_args.postprocess", consistency]
    )
    args = [*tiny_args(run_root), "--ckpt_path", ckpt, "--labels_from", str(labels)]
    run_cli(["submit", *args, "--model.init_args.postprocess", consistency])
    (folder,) = (Path(ckpt).parent.parent / "submit").iterdir()
    assert check_submission(folder / "submission.csv", folder / "predictions", num_classes=5) == 4
    for classification, segmentation in zip(*[iter(_rows(folder / "submission.csv")[1:])] * 2, strict=True):
        assert decode(classification[1], (4,)).tolist() == [True, False, False, False]
        planes = decode_class_planes(segmentation[1], 4, 32, 32)
        assert not planes[1:].any()
