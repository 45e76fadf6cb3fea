"""The bad command lines of the corpus as data: ``CLI_CASES`` holds ``(id, build, expected)`` where
``build(tmp: Path, checkpoint: Path) -> list[str]`` returns the arguments of ``lightning_seg.cli.main``
(it may write files under ``tmp``; ``checkpoint`` is a tiny trained checkpoint of the default config with
``tiny_args``, see :func:`helpers.make_checkpoint`) and ``expected`` is a substring of the error line.
Run by test_bad_input_corpus.py; checked as data by test_cli_errors.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from helpers import tiny_args

from lightning_seg.data.synthetic import SyntheticDataModule

MAX_LINE = 220

Build = Callable[[Path, Path], list[str]]


class FourShapes(SyntheticDataModule):
    """The shapes without rings: one class fewer than the default data (named by class_path below)."""

    class_names = ("background", "disc", "square", "triangle")


def fit_case(*extra: str) -> Build:
    return lambda tmp, ckpt: ["fit", *tiny_args(tmp / "runs", *extra)]


def with_file(name: str, content: bytes | str, *before: str) -> Build:
    """``fit`` with the tiny overrides and then ``--config <tmp>/<name>`` holding ``content``."""

    def build(tmp: Path, ckpt: Path) -> list[str]:
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return ["fit", *tiny_args(tmp / "runs"), *before, "--config", str(path)]

    return build


def _with_ckpt(subcommand: str, make: Callable[[Path, Path], Path], *extra: str) -> Build:
    """``subcommand`` with ``--ckpt_path`` set to what ``make(tmp, checkpoint)`` returns."""
    return lambda tmp, ckpt: [
        subcommand,
        *tiny_args(tmp / "runs", *extra),
        "--ckpt_path",
        str(make(tmp, ckpt)),
    ]


def _write(name: str, data: Callable[[Path], bytes]) -> Callable[[Path, Path], Path]:
    def make(tmp: Path, ckpt: Path) -> Path:
        path = tmp / name
        path.write_bytes(data(ckpt))
        return path

    return make


def _trained(tmp: Path, ckpt: Path) -> Path:
    return ckpt


# jsonargparse's Union messages (400-1,240 characters) reduced to key, value and what was expected
PARSE_CASES: list[tuple[str, Build, str]] = [
    (
        "net-class-typo",
        fit_case("--model.init_args.net", "lightning_seg.models.UNett"),
        "model.init_args.net: no class lightning_seg.models.UNett; did you mean lightning_seg.models.UNet?",
    ),
    (
        "net-class-typo-in-yaml",
        with_file(
            "typo.yaml", "model:\n  init_args:\n    net:\n      class_path: lightning_seg.models.UNett\n"
        ),
        "did you mean lightning_seg.models.UNet?",
    ),
    (
        "net-module-typo",
        fit_case("--model.init_args.net", "lightning_seg.modells.UNet"),
        "did you mean lightning_seg.models.UNet?",
    ),
    (
        "data-class-typo",
        fit_case("--data", "lightning_seg.data.SyntheticDataModul"),
        "data: no class lightning_seg.data.SyntheticDataModul; did you mean lightning_seg.data.SyntheticDataModule?",
    ),
    (
        "optimizer-class-typo",
        fit_case("--model.init_args.optimizer", "torch.optim.Adamm"),
        "model.init_args.optimizer: no class torch.optim.Adamm; did you mean torch.optim.Adam?",
    ),
    (
        "mask-mode-literal",
        lambda tmp, ckpt: [
            "fit",
            *tiny_args(tmp / "runs", "--data", "lightning_seg.data.FolderDataModule", f"--data.root={tmp}"),
            *("--data.init_args.mask_mode", "idx"),
        ],
        "data.init_args.mask_mode: 'idx' is not one of 'index', 'rgb', 'binary'; did you mean 'index'?",
    ),
    (
        "scheduler-interval-literal",
        fit_case("--model.init_args.scheduler_interval", "stepp"),
        "model.init_args.scheduler_interval: 'stepp' is not one of 'step', 'epoch'",
    ),
    (
        "precision-literal",
        fit_case("--trainer.precision", "bf16-mixd"),
        "trainer.precision: 'bf16-mixd' is not one of",
    ),
    (
        "unknown-model-key",
        fit_case("--model.init_args.no_such_key=1"),
        "model.init_args.no_such_key: unknown key, not an argument of SegmentationModule",
    ),
    (
        "unknown-net-key",
        fit_case("--model.init_args.net.init_args.base_widht=4"),
        "model.init_args.net.init_args.base_widht: unknown key, not an argument of UNet; did you mean base_width?",
    ),
    (
        "lr-not-a-number",
        fit_case("--model.init_args.optimizer.init_args.lr", "fast"),
        "model.init_args.optimizer.init_args.lr: expected a float, got 'fast'",
    ),
    (
        "max-epochs-not-a-number",
        fit_case("--trainer.max_epochs=abc"),
        "trainer.max_epochs: expected an int or null",
    ),
    (
        "batch-size-not-a-number",
        fit_case("--data.init_args.batch_size=many"),
        "data.init_args.batch_size: expected an int",
    ),
    (
        "unknown-trainer-option",
        fit_case("--trainer.max_epocs", "1"),
        "unknown option --trainer.max_epocs for fit; did you mean --trainer.max_epochs?",
    ),
]

# values only torch or Lightning would reject, and only once the run is under way: checked up front
VALUE_CASES: list[tuple[str, Build, str]] = [
    (
        "negative-lr",
        fit_case("--model.init_args.optimizer.init_args.lr", "-0.1"),
        "model.init_args.optimizer.init_args.lr: Invalid learning rate: -0.1",
    ),
    (
        "scheduler-pct-start",
        fit_case("--model.init_args.lr_scheduler.init_args.pct_start", "1.5"),
        "model.init_args.lr_scheduler.init_args.pct_start:",
    ),
    (
        "negative-num-workers",
        fit_case("--data.init_args.num_workers", "-1"),
        "data.num_workers must be >= 0",  # SegDataModule checks it as it is built
    ),
    (
        "check-val-every-zero-epochs",
        fit_case("--trainer.check_val_every_n_epoch", "0"),
        "trainer.check_val_every_n_epoch must be >= 1",
    ),
    (
        "unknown-accelerator",
        fit_case("--trainer.accelerator", "tpuu"),
        "trainer.accelerator: You selected an invalid accelerator name",
    ),
    (
        "negative-max-epochs",
        fit_case("--trainer.max_epochs", "-5"),
        "trainer.max_epochs must be a non-negative integer or -1",
    ),
]

CHECKPOINT_CASES: list[tuple[str, Build, str]] = [
    (
        "other-class-count",
        _with_ckpt("test", _trained, f"--data={__name__}.FourShapes"),
        "has 5 classes, the data has 4",
    ),
    (
        "other-net-depth",
        _with_ckpt("test", _trained, "--model.init_args.net.init_args.depth=3"),
        "was trained with another net: 26 keys missing (net.downs.2.",
    ),
    (
        "other-net-class",
        _with_ckpt("predict", _trained, "--model.init_args.net", "lightning_seg.models.MicroUNet"),
        "was trained with a UNet, not a MicroUNet",
    ),
    (
        "other-class-count-on-resume",
        _with_ckpt("fit", _trained, f"--data={__name__}.FourShapes"),
        "has 5 classes, the data has 4",
    ),
    (
        "empty-file",
        _with_ckpt("test", _write("empty.ckpt", lambda ckpt: b"")),
        "empty.ckpt: empty file (0 bytes)",
    ),
    (
        "truncated",
        _with_ckpt("test", _write("cut.ckpt", lambda ckpt: ckpt.read_bytes()[: ckpt.stat().st_size // 2])),
        "cut.ckpt: not a readable checkpoint (truncated or corrupt)",
    ),
    (
        "corrupt",
        _with_ckpt("predict", _write("noise.ckpt", lambda ckpt: bytes(range(256)) * 40)),
        "noise.ckpt: not a readable checkpoint (truncated or corrupt)",
    ),
    (
        "not-a-lightning-checkpoint",
        _with_ckpt("test", _write("plain.ckpt", lambda ckpt: _torch_bytes({"weight": [1.0]}))),
        "plain.ckpt: not a Lightning checkpoint",
    ),
    (
        "folder",
        _with_ckpt("test", lambda tmp, ckpt: ckpt.parent),
        "checkpoints: is a folder, not a checkpoint file",
    ),
    ("missing", _with_ckpt("test", lambda tmp, ckpt: tmp / "gone.ckpt"), "gone.ckpt: no such file"),
]

UNTRAINED_CASES: list[tuple[str, Build, str]] = [
    (subcommand, lambda tmp, ckpt, s=subcommand: [s, *tiny_args(tmp / "runs")], "--allow_untrained true")
    for subcommand in ("predict", "test", "validate")
]

CONFIG_FILE_CASES: list[tuple[str, Build, str]] = [
    (
        "binary",
        with_file("weights.yaml", bytes(range(256))),
        "weights.yaml: a binary file, not a YAML config",
    ),
    (
        "latin-1",
        with_file("latin.yaml", "trainer:\n  max_epochs: 1 # café\n".encode("latin-1")),
        "latin.yaml: not UTF-8",
    ),
    ("a-list", with_file("list.yaml", "- trainer\n- model\n"), "list.yaml: the top level must be a mapping"),
    ("a-string", with_file("word.yaml", "fit\n"), "word.yaml: the top level must be a mapping"),
    (
        "yaml-syntax",
        with_file("broken.yaml", "trainer:\n  max_epochs: 3\n   min_epochs: 1\n"),
        "broken.yaml: YAML syntax error at line 3, column 14",
    ),
    (
        "yaml-unclosed",
        with_file("open.yaml", "model:\n  init_args: {a: [1,\n  b: 2\n"),
        "open.yaml: YAML syntax error at line 4, column 1",
    ),
    ("a-folder", lambda tmp, ckpt: ["fit", "--config", str(tmp)], ": is a folder, not a YAML file"),
]

CLI_CASES: list[tuple[str, Build, str]] = [
    *PARSE_CASES,
    *VALUE_CASES,
    *CHECKPOINT_CASES,
    *UNTRAINED_CASES,
    *CONFIG_FILE_CASES,
]


def _torch_bytes(obj: object) -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()
