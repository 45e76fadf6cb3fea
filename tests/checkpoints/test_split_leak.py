"""An evaluation never scores a sample its checkpoint was trained on.

The case: a folder run is fitted without a test split (``data.test_fraction`` 0, the default). ``test`` then
says "the test split is empty; set data.test_list or data.test_fraction", and a user follows that hint with
``test --data.init_args.test_fraction 0.1 --ckpt_path best``. The seeded split keeps the val split and draws
the test images out of the old *training* pool, so the test score is one of images the net was trained on,
printed like any other. The same happens when ``validate``/``tune``/``attack`` run with another
``split_seed`` or a larger ``val_fraction`` than the fit had.

The checkpoint's record (``checkpoint["lightning_seg"]["splits"]``) says which samples trained it; every
command that scores a split against masks (validate, test, tune, attack) refuses, in one line and before it
reads any data, a split holding such a sample, and says how to evaluate honestly. ``predict`` scores nothing
and is not refused; a checkpoint written before the record existed evaluates, with a warning.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from helpers import DEFAULT_CONFIG

from lightning_seg.cli import main, run_cli
from lightning_seg.data import FolderDataModule
from tests.data_trees import block_mask, image_for, write_png

IMAGES = 40  # val_fraction 0.2: 32 train + 8 val; test_fraction 0.1 then draws 4 more
CLASSES = ["a", "b", "c"]
MESSAGE_LIMIT = 200  # as in test_bad_input_corpus.py: the message without the temporary folder
TEST_SPLIT = ("--data.init_args.test_fraction", "0.1")  # the hint of the empty-test-split error, followed


# ------------------------------------------------------------------------------------------ the harness
def write_folder(data: Path, count: int = IMAGES) -> Path:
    """data/images/img_000.png ... + data/masks/img_000.png ...: 32 px, 3 classes in 8 px blocks.
    Zero-padded names: no name is a substring of another (the tests look for one in the error line)."""
    for i in range(count):
        mask = block_mask(32, 32, len(CLASSES), seed=i)
        write_png(data / "images" / f"img_{i:03d}.png", image_for(mask))
        write_png(data / "masks" / f"img_{i:03d}.png", mask.to(torch.uint8))
    return data


def folder_args(root: Path, stage: str, *extra: str) -> list[str]:
    """A FolderDataModule run on ``root/data`` shrunk to seconds: 32 px, a 2-level U-Net of width 4, 1 epoch."""
    return [
        stage,
        "--config", DEFAULT_CONFIG,
        "--data", "lightning_seg.data.FolderDataModule",
        "--data.root", str(root / "data"),
        "--data.class_names", f"[{','.join(CLASSES)}]",
        "--data.size", "[32,32]",
        "--data.batch_size", "4",
        f"--trainer.default_root_dir={root / 'runs'}",
        f"--trainer.logger.init_args.save_dir={root / 'runs'}",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--model.init_args.net.init_args.base_width=4",
        "--model.init_args.net.init_args.depth=2",
        *extra,
    ]  # fmt: skip


def folder_module(root: Path, *overrides: str) -> FolderDataModule:
    """The data module the command line builds from ``folder_args`` plus ``overrides``
    (``--data.init_args.<key> <value>`` pairs), built directly: how its splits come out."""
    kwargs = {}
    for key, value in zip(overrides[::2], overrides[1::2], strict=True):
        name = key.removeprefix("--data.init_args.")
        kwargs[name] = int(value) if name == "split_seed" else float(value)
    return FolderDataModule(str(root / "data"), class_names=CLASSES, size=(32, 32), batch_size=4, **kwargs)


def trained_names(root: Path, fit_overrides: tuple[str, ...] = ()) -> set[str]:
    return {sample.name for sample in folder_module(root, *fit_overrides).splits()["train"]}


def leaked(root: Path, split: str, overrides: tuple[str, ...], fit_overrides: tuple[str, ...] = ()):
    """(the names of ``split`` under ``overrides`` that the fit trained on, sorted; the split's size)."""
    names = [sample.name for sample in folder_module(root, *overrides).splits()[split]]
    return sorted(set(names) & trained_names(root, fit_overrides)), len(names)


def fit(root: Path, *extra: str) -> Path:
    """Fit a tiny folder run; its best checkpoint."""
    cli = run_cli(folder_args(root, "fit", *extra))
    assert cli is not None
    best = cli.trainer.checkpoint_callback.best_model_path
    assert best and Path(best).is_file()
    return Path(best)


SCORES = ("summary.json", "*.thresholds.json", "robustness.json")
"""What validate/test, tune and attack write once they have scored a split."""


def scores(root: Path) -> dict[Path, int]:
    """Every file under the run folder that a scoring pass writes, with its modification time."""
    runs = root / "runs"
    return {path: path.stat().st_mtime_ns for pattern in SCORES for path in runs.rglob(pattern)}


def one_error_line(code: int, err: str, root: Path) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit code {code}, expected 2 (refused); stderr: {err[-2000:]}"
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("lightning-seg: error: "), line
    message = line.removeprefix("lightning-seg: error: ").replace(str(root), "")
    assert len(message) <= MESSAGE_LIMIT, f"{len(message)} characters: {message}"
    return line


@pytest.fixture(scope="module")
def leaky_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A folder run fitted WITHOUT a test split (test_fraction 0, the default): (root, best checkpoint)."""
    root = tmp_path_factory.mktemp("leaky")
    write_folder(root / "data")
    return root, fit(root)


@pytest.fixture(scope="module")
def honest_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same data fitted WITH a test split held out (test_fraction 0.1): (root, best checkpoint)."""
    root = tmp_path_factory.mktemp("honest")
    write_folder(root / "data")
    return root, fit(root, *TEST_SPLIT)


# ------------------------------------------------------------------------------------------ the premise
def test_the_split_drawn_after_the_fit_lies_in_its_training_split(tmp_path: Path) -> None:
    """Why the refusal is needed: with the fit's seed, a test_fraction added later keeps the val split and
    takes every test image out of the fit's training split (the split is a pure function of names and seed,
    so this holds today and after the fix)."""
    write_folder(tmp_path / "data")
    fit_splits = folder_module(tmp_path).splits()
    names, total = leaked(tmp_path, "test", TEST_SPLIT)
    print(
        f"\nfit (test_fraction 0): train {len(fit_splits['train'])}, val {len(fit_splits['val'])}, "
        f"test {len(fit_splits['test'])}; test with test_fraction 0.1: {len(names)} of {total} test "
        f"samples were in the training split ({', '.join(names)})"
    )
    assert len(fit_splits["train"]) == 32 and len(fit_splits["val"]) == 8 and not fit_splits["test"]
    assert total == 4 and len(names) == total  # every test image was trained on
    later = folder_module(tmp_path, *TEST_SPLIT).splits()
    # the val split is kept: nothing looks off
    assert [s.name for s in later["val"]] == [s.name for s in fit_splits["val"]]
    # the other ways an evaluation split grows into the training pool
    for overrides in (("--data.init_args.split_seed", "1"), ("--data.init_args.val_fraction", "0.3")):
        names, total = leaked(tmp_path, "val", overrides)
        print(
            f"val with {' '.join(overrides)}: {len(names)} of {total} val samples were in the training split"
        )
        assert names


# ------------------------------------------------------------------------------------------ the refusals
LEAKS = [
    # (subcommand, its arguments, the split it scores)
    pytest.param("test", TEST_SPLIT, "test", id="test-with-a-test_fraction-added"),
    pytest.param(
        "validate", ("--data.init_args.split_seed", "1"), "val", id="validate-with-another-split_seed"
    ),
    pytest.param(
        "tune", ("--data.init_args.val_fraction", "0.3"), "val", id="tune-with-a-larger-val_fraction"
    ),
    pytest.param(
        "attack",
        (*TEST_SPLIT, "--attacks", "[fgsm]", "--epsilons", "[0, 8/255]", "--steps", "1", "--panels", "1"),
        "test",
        id="attack-with-a-test_fraction-added",
    ),
]


@pytest.mark.parametrize(("subcommand", "extra", "split"), LEAKS)
def test_an_evaluation_split_holding_trained_samples_is_refused(
    leaky_run: tuple[Path, Path],
    subcommand: str,
    extra: tuple[str, ...],
    split: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, best = leaky_run
    data_overrides = tuple(
        x for i, key in enumerate(extra) if key.startswith("--data.") for x in (key, extra[i + 1])
    )
    names, total = leaked(root, split, data_overrides)
    assert names, "the case must leak (see test_the_split_drawn_after_the_fit_lies_in_its_training_split)"
    print(
        f"\n{subcommand} {' '.join(data_overrides)}: {len(names)} of {total} {split} samples were trained on"
    )
    before = scores(root)
    capsys.readouterr()
    code = main(folder_args(root, subcommand, *extra, "--ckpt_path", str(best)))
    line = one_error_line(code, capsys.readouterr().err, root)
    assert "training split" in line, line
    assert re.search(rf"\b{len(names)} of {total}\b", line), (
        f"the count '{len(names)} of {total}' not in {line!r}"
    )
    assert any(re.search(rf"\b{name}\b", line) for name in names), f"no trained sample named in {line!r}"
    # how to evaluate honestly: hold the samples out of training (the split's fraction or list)
    assert f"{split}_fraction" in line or f"{split}_list" in line, line
    # refused before the pass: nothing scored, no summary, thresholds or robustness table written
    assert scores(root) == before


def test_the_hint_of_the_empty_test_split_then_the_leak(
    leaky_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The way a user meets the leak: test says the split is empty and names test_fraction; following that
    hint on the same checkpoint is refused, and the refusal points at the honest ways (validate, refit)."""
    root, best = leaky_run
    capsys.readouterr()
    code = main(folder_args(root, "test", "--ckpt_path", str(best)))
    line = one_error_line(code, capsys.readouterr().err, root)
    assert "the test split is empty" in line and "test_fraction" in line, line
    code = main(folder_args(root, "test", *TEST_SPLIT, "--ckpt_path", str(best)))
    line = one_error_line(code, capsys.readouterr().err, root)
    assert "training split" in line and "validate" in line, line


# ------------------------------------------------------------------------------------------ what still runs
def test_validate_on_the_runs_own_val_split_passes(leaky_run: tuple[Path, Path]) -> None:
    root, best = leaky_run
    cli = run_cli(folder_args(root, "validate", "--ckpt_path", str(best)))
    assert cli is not None
    summary = json.loads((Path(cli.trainer.log_dir) / "summary.json").read_text())
    assert summary["stage"] == "validate" and 0.0 <= summary["metrics"]["val/mIoU"] <= 1.0


def test_predict_scores_nothing_and_is_not_refused(leaky_run: tuple[Path, Path]) -> None:
    root, best = leaky_run
    assert run_cli(folder_args(root, "predict", *TEST_SPLIT, "--ckpt_path", str(best))) is not None


def test_a_run_fitted_with_a_test_split_is_tested_on_it(honest_run: tuple[Path, Path]) -> None:
    root, best = honest_run
    names, total = leaked(root, "test", TEST_SPLIT, fit_overrides=TEST_SPLIT)
    assert total == 4 and not names
    cli = run_cli(folder_args(root, "test", *TEST_SPLIT, "--ckpt_path", str(best)))
    assert cli is not None
    summary = json.loads((Path(cli.trainer.log_dir) / "summary.json").read_text())
    assert summary["stage"] == "test" and 0.0 <= summary["metrics"]["test/mIoU"] <= 1.0
    # and its own val split validates
    assert run_cli(folder_args(root, "validate", *TEST_SPLIT, "--ckpt_path", str(best))) is not None


# ------------------------------------------------------------------------------------------ the record
def test_the_checkpoint_records_its_split(leaky_run: tuple[Path, Path]) -> None:
    """``checkpoint["lightning_seg"]["splits"]``: per split its size (and for train what identifies its
    samples), plain data so that ``weights_only`` loading reads it."""
    _, best = leaky_run
    record = torch.load(best, map_location="cpu", weights_only=True)["lightning_seg"]
    splits = record["splits"]
    assert {split: splits[split]["count"] for split in ("train", "val", "test")} == {
        "train": 32,
        "val": 8,
        "test": 0,
    }


def test_a_checkpoint_without_the_split_record_evaluates_with_a_warning(
    leaky_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """A checkpoint written before the record existed cannot be checked: it evaluates as before (refusing
    would break every older run), and says the check was not made."""
    root, best = leaky_run
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    checkpoint["lightning_seg"].pop("splits", None)
    old = best.with_name("old.ckpt")
    torch.save(checkpoint, old)
    try:
        with pytest.warns(UserWarning, match=r"records no training split"):
            cli = run_cli(folder_args(root, "test", *TEST_SPLIT, "--ckpt_path", str(old)))
        assert cli is not None
    finally:
        old.unlink()


def test_other_data_with_the_same_names_is_scored_when_asked(leaky_run: tuple[Path, Path]) -> None:
    """``--allow_trained_samples true``: the user says the names only coincide (another dataset); it runs."""
    root, best = leaky_run
    cli = run_cli(
        folder_args(root, "test", *TEST_SPLIT, "--allow_trained_samples", "true", "--ckpt_path", str(best))
    )
    assert cli is not None and cli.trainer.state.finished
