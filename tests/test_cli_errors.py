"""Bad command-line input ends with exit code 2 and one readable line ``lightning-seg: error: ...`` that
names the key or file; ``LIGHTNING_SEG_DEBUG=1`` raises with the full original error instead.

``CLI_CASES`` holds the cases as data for other modules: ``(id, build, expected)`` where
``build(tmp: Path, checkpoint: Path) -> list[str]`` returns the arguments of ``lightning_seg.cli.main``
(it may write files under ``tmp``; ``checkpoint`` is a tiny trained checkpoint of the default config with
``tiny_args``, see :func:`make_checkpoint`) and ``expected`` is a substring of the error line.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from lightning_seg import cli as cli_module
from lightning_seg.checkpoints import atomic_io as checkpoint_io
from lightning_seg.cli import checks as checks_module
from lightning_seg.cli import main
from lightning_seg.data.synthetic import SyntheticDataModule
from lightning_seg.utils import atomic
from lightning_seg.utils.parse_errors import reduce_parse_error
from tests.conftest import tiny_args

MAX_LINE = 220

Build = Callable[[Path, Path], list[str]]


class FourShapes(SyntheticDataModule):
    """The shapes without rings: one class fewer than the default data (named by class_path below)."""

    class_names = ("background", "disc", "square", "triangle")


def make_checkpoint(root: Path) -> Path:
    """Train the default config with ``tiny_args`` for one epoch; its ``last.ckpt`` (a few seconds)."""
    assert main(["fit", *tiny_args(root)]) == 0
    return next(root.glob("*/version_*/checkpoints/last.ckpt"))


def _fit(*extra: str) -> Build:
    return lambda tmp, ckpt: ["fit", *tiny_args(tmp / "runs", *extra)]


def _with_file(name: str, content: bytes | str, *before: str) -> Build:
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
        _fit("--model.init_args.net", "lightning_seg.models.UNett"),
        "model.init_args.net: no class lightning_seg.models.UNett; did you mean lightning_seg.models.UNet?",
    ),
    (
        "net-class-typo-in-yaml",
        _with_file(
            "typo.yaml", "model:\n  init_args:\n    net:\n      class_path: lightning_seg.models.UNett\n"
        ),
        "did you mean lightning_seg.models.UNet?",
    ),
    (
        "net-module-typo",
        _fit("--model.init_args.net", "lightning_seg.modells.UNet"),
        "did you mean lightning_seg.models.UNet?",
    ),
    (
        "data-class-typo",
        _fit("--data", "lightning_seg.data.SyntheticDataModul"),
        "data: no class lightning_seg.data.SyntheticDataModul; did you mean lightning_seg.data.SyntheticDataModule?",
    ),
    (
        "optimizer-class-typo",
        _fit("--model.init_args.optimizer", "torch.optim.Adamm"),
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
        _fit("--model.init_args.scheduler_interval", "stepp"),
        "model.init_args.scheduler_interval: 'stepp' is not one of 'step', 'epoch'",
    ),
    (
        "precision-literal",
        _fit("--trainer.precision", "bf16-mixd"),
        "trainer.precision: 'bf16-mixd' is not one of",
    ),
    (
        "unknown-model-key",
        _fit("--model.init_args.no_such_key=1"),
        "model.init_args.no_such_key: unknown key, not an argument of SegmentationModule",
    ),
    (
        "unknown-net-key",
        _fit("--model.init_args.net.init_args.base_widht=4"),
        "model.init_args.net.init_args.base_widht: unknown key, not an argument of UNet; did you mean base_width?",
    ),
    (
        "lr-not-a-number",
        _fit("--model.init_args.optimizer.init_args.lr", "fast"),
        "model.init_args.optimizer.init_args.lr: expected a float, got 'fast'",
    ),
    (
        "max-epochs-not-a-number",
        _fit("--trainer.max_epochs=abc"),
        "trainer.max_epochs: expected an int or null",
    ),
    (
        "batch-size-not-a-number",
        _fit("--data.init_args.batch_size=many"),
        "data.init_args.batch_size: expected an int",
    ),
    (
        "unknown-trainer-option",
        _fit("--trainer.max_epocs", "1"),
        "unknown option --trainer.max_epocs for fit; did you mean --trainer.max_epochs?",
    ),
]

# values only torch or Lightning would reject, and only once the run is under way: checked up front
VALUE_CASES: list[tuple[str, Build, str]] = [
    (
        "negative-lr",
        _fit("--model.init_args.optimizer.init_args.lr", "-0.1"),
        "model.init_args.optimizer.init_args.lr: Invalid learning rate: -0.1",
    ),
    (
        "scheduler-pct-start",
        _fit("--model.init_args.lr_scheduler.init_args.pct_start", "1.5"),
        "model.init_args.lr_scheduler.init_args.pct_start:",
    ),
    (
        "negative-num-workers",
        _fit("--data.init_args.num_workers", "-1"),
        "data.num_workers must be >= 0",  # SegDataModule checks it as it is built
    ),
    (
        "check-val-every-zero-epochs",
        _fit("--trainer.check_val_every_n_epoch", "0"),
        "trainer.check_val_every_n_epoch must be >= 1",
    ),
    (
        "unknown-accelerator",
        _fit("--trainer.accelerator", "tpuu"),
        "trainer.accelerator: You selected an invalid accelerator name",
    ),
    (
        "negative-max-epochs",
        _fit("--trainer.max_epochs", "-5"),
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
        _with_file("weights.yaml", bytes(range(256))),
        "weights.yaml: a binary file, not a YAML config",
    ),
    (
        "latin-1",
        _with_file("latin.yaml", "trainer:\n  max_epochs: 1 # café\n".encode("latin-1")),
        "latin.yaml: not UTF-8",
    ),
    ("a-list", _with_file("list.yaml", "- trainer\n- model\n"), "list.yaml: the top level must be a mapping"),
    ("a-string", _with_file("word.yaml", "fit\n"), "word.yaml: the top level must be a mapping"),
    (
        "yaml-syntax",
        _with_file("broken.yaml", "trainer:\n  max_epochs: 3\n   min_epochs: 1\n"),
        "broken.yaml: YAML syntax error at line 3, column 14",
    ),
    (
        "yaml-unclosed",
        _with_file("open.yaml", "model:\n  init_args: {a: [1,\n  b: 2\n"),
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


def _ids(cases: list[tuple[str, Build, str]]) -> list[str]:
    return [case[0] for case in cases]


def assert_one_error_line(capsys: pytest.CaptureFixture[str], expected: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("lightning-seg: error: "), line
    assert len(line) <= MAX_LINE, (len(line), line)
    assert expected in line, line
    assert "Traceback" not in line
    return line


def test_allow_untrained_predicts_on_purpose(tmp_path: Path) -> None:
    args = [
        "predict",
        *tiny_args(tmp_path / "runs"),
        "--data.init_args.num_predict=2",
        "--allow_untrained=true",
    ]
    assert main(args) == 0


@pytest.mark.parametrize(
    ("key", "extra"),
    [
        ("trainer.logger.init_args.save_dir", ["--trainer.default_root_dir={locked}/runs"]),
        ("trainer.default_root_dir", ["--trainer.logger=false"]),
    ],
    ids=["logger-save-dir", "default-root-dir-without-logger"],
)
@pytest.mark.parametrize("how", ["chmod", "simulated"])
def test_read_only_output_folder_is_one_line(
    key: str, extra: list[str], how: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    if how == "chmod":
        locked.chmod(0o555)
        try:
            (locked / "probe").write_text("x")
        except PermissionError:
            pass
        else:
            locked.chmod(0o755)
            pytest.skip("this user can write into a 0o555 folder (root)")
    else:  # as if os.access saw a read-only folder
        real_access = os.access
        monkeypatch.setattr(
            checks_module.os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode)
        )
    extra = [arg.format(locked=locked) for arg in extra]
    args = ["fit", *tiny_args(tmp_path / "runs", *extra), f"--{key}={locked / 'runs'}"]
    try:
        assert main(args) == 2
    finally:
        locked.chmod(0o755)
    line = assert_one_error_line(capsys, f"{key}: cannot write to")
    assert "locked" in line


def test_full_disk_names_the_run_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    def no_space(path, data, durable=False) -> None:  # an error that names no file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_io, "atomic_write", no_space)
    root = tmp_path / "runs"
    assert main(["fit", *tiny_args(root)]) == 2
    # the logger's save_dir decides where a run writes (tiny_args sets it): that is the key to change
    line = assert_one_error_line(capsys, "no space left on device; pass --trainer.logger.init_args.save_dir")
    assert str(root) in line or "version_0" in line


def test_full_disk_with_a_file_name(tmp_path: Path, monkeypatch, capsys) -> None:
    def no_space(obj, handle) -> None:  # the disk fills up while the checkpoint is written
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_io.torch, "save", no_space)
    assert main(["fit", *tiny_args(tmp_path / "runs")]) == 2
    assert_one_error_line(capsys, ".ckpt: no space left on device")


@pytest.mark.parametrize(
    ("build", "original"),
    [
        (
            _fit("--model.init_args.net", "lightning_seg.models.UNett"),
            "Does not validate against any of the Union",
        ),
        (_fit("--model.init_args.optimizer.init_args.lr", "-0.1"), "Invalid learning rate"),
        (_with_file("list.yaml", "- a\n"), "top level must be a mapping"),
    ],
    ids=["parse", "torch", "config-file"],
)
def test_debug_env_raises_with_the_original_error(
    build: Build, original: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv(cli_module.DEBUG_ENV, "1")
    with pytest.raises(Exception) as raised:
        main(build(tmp_path, Path("unused.ckpt")))
    chain, error = [], raised.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert any(original in text for text in chain)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "x" * 5000,
        "Parser key \"a\":\n  - Problem with given class_path 'b.C':\n\n" + "   weird\n" * 300,
        'Parser key "model":\n  Does not validate against any of the Union subtypes\n  Errors:\n    - '
        + "y" * 900,
        'Parser key "k":\n  Expected a typing.Literal[broken. Got value: z',
    ],
    ids=["empty", "long", "odd-indent", "long-leaf", "broken-literal"],
)
def test_reducer_never_fails_and_stays_short(text: str) -> None:
    line = reduce_parse_error(text)
    assert isinstance(line, str) and "\n" not in line and len(line) <= 200


def test_cases_are_importable_data() -> None:
    ids = _ids(CLI_CASES)
    assert len(ids) == len(set(ids))
    assert all(callable(build) and isinstance(expected, str) for _, build, expected in CLI_CASES)


def test_lightning_resolves_remote_checkpoint_paths_itself() -> None:
    from lightning_seg.cli.checks import resolved_by_lightning

    for path in ("last", "best", "registry:model", "s3://bucket/x.ckpt", "file:///tmp/x.ckpt", "hf://a/b"):
        assert resolved_by_lightning(path), path
    assert not resolved_by_lightning("runs/default/version_0/checkpoints/last.ckpt")


def test_a_checkpoint_with_python_objects_suggests_weights_only_false(tmp_path: Path) -> None:
    import numpy as np
    import torch

    from lightning_seg.checkpoints.read import read_checkpoint
    from lightning_seg.errors import ConfigError

    path = tmp_path / "np.ckpt"
    torch.save({"state_dict": {}, "extra": np.float64(1.0)}, path)
    with pytest.raises(ConfigError, match=r"np\.ckpt: holds a Python object .*pass --weights_only false"):
        read_checkpoint(str(path))
    assert read_checkpoint(str(path), weights_only=False)["state_dict"] == {}


def test_the_private_lightning_hooks_this_cli_overrides_still_exist() -> None:
    """SegCLI overrides private LightningCLI methods (the first hook after parsing, the subcommand parser,
    the run): a Lightning release that renames one must fail here, not silently skip our checks."""
    from lightning.pytorch.cli import LightningCLI

    for name in ("_parse_ckpt_path", "_prepare_subcommand_parser", "_run_subcommand"):
        assert callable(getattr(LightningCLI, name, None)), name


def test_full_disk_while_writing_prediction_pngs_names_the_file(tmp_path: Path, monkeypatch, capsys) -> None:
    """Prediction PNGs are written by Python, not torchvision's ``write_png`` (which ignores write errors:
    a full disk left empty files without a word)."""
    checkpoint = make_checkpoint(tmp_path / "trained")

    def full_for_pngs(path, mode="r", *args, **kwargs):
        if ".png" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", full_for_pngs, raising=False)
    args = ["predict", *tiny_args(tmp_path / "runs"), "--ckpt_path", str(checkpoint)]
    capsys.readouterr()
    assert main(args) == 2
    line = assert_one_error_line(capsys, ".png: no space left on device")
    assert "predictions" in line
    assert not list((tmp_path / "trained").rglob("*.tmp"))  # no half-written leftovers


def test_save_png_writes_what_torchvision_decodes(tmp_path: Path) -> None:
    import torch
    from torchvision.io import decode_png, read_file

    from lightning_seg.data.workers import save_png

    image = torch.randint(0, 255, (3, 8, 10), dtype=torch.uint8)
    save_png(image, tmp_path / "x.png")
    assert torch.equal(decode_png(read_file(str(tmp_path / "x.png"))), image)
