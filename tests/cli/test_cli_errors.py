"""Bad command-line input ends with exit code 2 and one readable line ``lightning-seg: error: ...`` that
names the key or file; ``LIGHTNING_SEG_DEBUG=1`` raises with the full original error instead.

The bad command lines themselves (``CLI_CASES``) are data in cli_cases.py, run by test_bad_input_corpus.py.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from cli_cases import CLI_CASES, MAX_LINE, Build, fit_case, with_file
from helpers import ERROR_PREFIX, TinyRun, assert_one_line_error, tiny_args

from lightning_seg.checkpoints import atomic_io as checkpoint_io
from lightning_seg.cli import checks as checks_module
from lightning_seg.cli import main
from lightning_seg.errors import DEBUG_ENV
from lightning_seg.utils import atomic
from lightning_seg.utils.parse_errors import reduce_parse_error


def _ids(cases: list[tuple[str, Build, str]]) -> list[str]:
    return [case[0] for case in cases]


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
    line = assert_one_line_error(capsys, f"{key}: cannot write to", max_len=MAX_LINE - len(ERROR_PREFIX))
    assert "locked" in line


def test_full_disk_names_the_run_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    def no_space(path, data, durable=False) -> None:  # an error that names no file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_io, "atomic_write", no_space)
    root = tmp_path / "runs"
    assert main(["fit", *tiny_args(root)]) == 2
    # the logger's save_dir decides where a run writes (tiny_args sets it): that is the key to change
    line = assert_one_line_error(
        capsys,
        "no space left on device; pass --trainer.logger.init_args.save_dir",
        max_len=MAX_LINE - len(ERROR_PREFIX),
    )
    assert str(root) in line or "version_0" in line


def test_full_disk_with_a_file_name(tmp_path: Path, monkeypatch, capsys) -> None:
    def no_space(obj, handle) -> None:  # the disk fills up while the checkpoint is written
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_io.torch, "save", no_space)
    assert main(["fit", *tiny_args(tmp_path / "runs")]) == 2
    assert_one_line_error(capsys, ".ckpt: no space left on device", max_len=MAX_LINE - len(ERROR_PREFIX))


@pytest.mark.parametrize(
    ("build", "original"),
    [
        (
            fit_case("--model.init_args.net", "lightning_seg.models.UNett"),
            "Does not validate against any of the Union",
        ),
        (fit_case("--model.init_args.optimizer.init_args.lr", "-0.1"), "Invalid learning rate"),
        (with_file("list.yaml", "- a\n"), "top level must be a mapping"),
    ],
    ids=["parse", "torch", "config-file"],
)
def test_debug_env_raises_with_the_original_error(
    build: Build, original: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv(DEBUG_ENV, "1")
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


def test_full_disk_while_writing_prediction_pngs_names_the_file(
    tmp_path: Path, tiny_run: TinyRun, monkeypatch, capsys
) -> None:
    """Prediction PNGs are written by Python, not torchvision's ``write_png`` (which ignores write errors:
    a full disk left empty files without a word)."""
    checkpoint = tiny_run.last

    def full_for_pngs(path, mode="r", *args, **kwargs):
        if ".png" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(atomic, "open", full_for_pngs, raising=False)
    args = ["predict", *tiny_args(tmp_path / "runs"), "--ckpt_path", str(checkpoint)]
    capsys.readouterr()
    assert main(args) == 2
    line = assert_one_line_error(
        capsys, ".png: no space left on device", max_len=MAX_LINE - len(ERROR_PREFIX)
    )
    assert "predictions" in line
    assert not list(tiny_run.run.rglob("*.tmp"))  # no half-written leftovers


def test_save_png_writes_what_torchvision_decodes(tmp_path: Path) -> None:
    import torch
    from torchvision.io import decode_png, read_file

    from lightning_seg.data.workers import save_png

    image = torch.randint(0, 255, (3, 8, 10), dtype=torch.uint8)
    save_png(image, tmp_path / "x.png")
    assert torch.equal(decode_png(read_file(str(tmp_path / "x.png"))), image)


def test_a_model_of_another_project_is_refused_in_one_line(
    run_root: Path, capsys: pytest.CaptureFixture
) -> None:
    """The CLI takes any LightningModule class path; only this project's two are run, the others refused
    before a trainer exists (not an AttributeError later)."""
    model = "lightning.pytorch.demos.boring_classes.BoringModel"
    assert main(["fit", *tiny_args(run_root), "--model", model]) == 2
    assert_one_line_error(capsys, "model: BoringModel is not a model of lightning_seg")
