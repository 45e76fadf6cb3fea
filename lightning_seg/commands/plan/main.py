"""``lightning-seg plan``: read a folder of images and masks, write the recipe to train on it.

    lightning-seg plan --data.root DIR [--data.mask_mode binary|index|rgb] [--data.class_names [...]]
        [--output plans/NAME/plan.yaml]

Writes three things beside each other: ``plan.yaml`` (a complete config, each choice commented with the fact
that decided it), ``fingerprint.json`` (those facts) and ``splits/{train,val,test}.txt`` (the split the data
module drew, which the config names, so every later command sees the same split). Then
``lightning-seg fit --config plan.yaml`` trains it.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError, ArgumentParser

from lightning_seg.commands.plan.batch_size import choose_batch_size
from lightning_seg.commands.plan.fingerprint import SPLITS, readable_headers, take_fingerprint
from lightning_seg.commands.plan.recipe import NET, SCRATCH_NET, choose, choose_crop, choose_net, choose_size
from lightning_seg.commands.plan.render import render_plan
from lightning_seg.data.folder import FolderDataModule
from lightning_seg.errors import ConfigError, truncate
from lightning_seg.models.smp import SMPNet
from lightning_seg.models.unet import UNet
from lightning_seg.utils.atomic import atomic_write
from lightning_seg.utils.options import option_groups
from lightning_seg.utils.parse_errors import reduce_parse_error

MIN_SAMPLES = {"train": 4, "val": 1, "test": 1}
"""The least a split may hold for the plan to train and score a model (test: 0 with test_fraction 0)."""
PLAN_FRACTIONS = {"val_fraction": 0.15, "test_fraction": 0.15}
"""The plan keeps a test split (the data module's own default has none), drawn once and written down."""
DECIDED = {"size", "batch_size", "balanced_labels", "train_augmentations"}
"""Data arguments the plan decides: not options of ``plan`` (a value given would be overruled)."""
NOT_COPIED = {"root", "train_list", "val_list", "test_list"}
"""Data arguments the plan writes itself rather than copies (root made absolute, the split as lists)."""


def build_parser() -> ArgumentParser:
    """``plan``'s options: the folder data module's arguments under ``--data`` but those the plan decides,
    and ``--output``."""
    parser = ArgumentParser(
        prog="lightning-seg plan", description=__doc__.split("\n\n")[0], exit_on_error=False
    )
    parser.add_class_arguments(FolderDataModule, "data", skip=DECIDED)
    parser.set_defaults({f"data.{key}": value for key, value in PLAN_FRACTIONS.items()})
    parser.add_argument(
        "--output", type=str | None, default=None, help="plan.yaml's path; default plans/<folder>/plan.yaml"
    )
    return parser


def _given_data_args(parser: ArgumentParser, config: Any, argv: list[str]) -> dict[str, Any]:
    """The data arguments the user said: named on the command line, or differing from the defaults; root
    first and absolute."""
    defaults = parser.get_defaults().data.as_dict()
    named = {arg.split("=", 1)[0].removeprefix("--data.") for arg in argv if arg.startswith("--data.")}
    given = config.data.as_dict()
    args = {"root": str(Path(given["root"]).expanduser().resolve())}
    for key, value in given.items():
        if key not in NOT_COPIED and (key in named or value != defaults.get(key)):
            args[key] = value
    return args


def _list_entry(sample: Any, image_dir: Path) -> str:
    """A split-list line that reads back to ``sample``: its image path below ``image_dir`` with its suffix
    (``x.png.jpg`` is the sample ``x.png``, not ``x``), refused when the list format cannot hold it."""
    entry = Path(sample.image).resolve().relative_to(image_dir.resolve()).as_posix()
    if any(character.isspace() for character in entry) or entry.startswith("#"):
        raise ConfigError(
            f"plan: {sample.image}: a split list cannot name a file whose name holds white space or starts "
            "with '#'; rename it"
        )
    return entry


def _check_counts(counts: dict[str, int], root: str, test_fraction: float) -> None:
    needed = {**MIN_SAMPLES, "test": MIN_SAMPLES["test"] if test_fraction > 0 else 0}
    short = {split: n for split, n in counts.items() if n < needed[split]}
    if short:
        raise ConfigError(
            f"plan: {root} holds {sum(counts.values())} samples, too few for train/val/test "
            f"({', '.join(f'{split} {n}' for split, n in short.items())}); it needs at least "
            f"{sum(needed.values())}: add images"
        )


def _refuse_other(path: Path, text: str, why: str) -> None:
    """Refuse, in one line, to replace ``path`` when it holds something other than ``text`` (another plan's
    split, which earlier configs and runs may name)."""
    if path.is_file() and path.read_text() != text:
        raise ConfigError(
            f"plan: {path} already holds {why}; choose another --output, or remove it to plan anew"
        )


def write_plan(argv: list[str]) -> Path:
    """Run ``plan`` with command-line arguments ``argv``; returns the written ``plan.yaml``.

    Raises ConfigError in one line for data the checks refuse or a folder too small to split."""
    parser = build_parser()
    try:
        config = parser.parse_args(argv)
    except ArgumentError as error:
        raise ConfigError(reduce_parse_error(str(error))) from error
    data_args = _given_data_args(parser, config, argv)
    base = {**config.data.as_dict(), "root": data_args["root"]}
    drawn = FolderDataModule(**base).splits()
    _check_counts(
        {split: len(drawn[split]) for split in SPLITS}, data_args["root"], config.data.test_fraction
    )
    # the statistics are read at the size the recipe trains at: a small object that survives there counts
    headers = readable_headers(drawn["train"])  # read once: the size choice and the fingerprint
    if not headers:
        raise ConfigError(f"plan: no training image of {data_args['root']} has a readable header")
    size = choose_size([header.size for header in headers.values()])
    datamodule = FolderDataModule(**{**base, "size": tuple(size.value)})
    fingerprint = take_fingerprint(datamodule, headers)
    crop = choose_crop(size)
    net = choose_net(size)
    classes = len(fingerprint.classes)
    # random weights: only the net's speed is measured
    probed = UNet(classes, **SCRATCH_NET) if net.value == "unet" else SMPNet(num_classes=classes, **NET)
    batch_size = choose_batch_size(probed, crop.value, classes, fingerprint.samples["train"])
    recipe = choose(fingerprint, net, size, crop, batch_size)

    root = Path(data_args["root"])
    output = Path(config.output) if config.output else Path("plans") / root.name / "plan.yaml"
    folder = output.parent.resolve()
    image_dir = datamodule.image_dir
    lists = {
        split: "".join(f"{_list_entry(sample, image_dir)}\n" for sample in datamodule.splits()[split])
        for split in SPLITS
        if fingerprint.samples[split]
    }
    split_lists = {split: folder / "splits" / f"{split}.txt" for split in lists}
    notes = {}
    if fingerprint.binary_threshold is not None and "binary_threshold" not in data_args:
        data_args["binary_threshold"] = fingerprint.binary_threshold
        notes["binary_threshold"] = "decided from every mask by the checks: later commands need not"
    header = [
        f"Written by `lightning-seg plan` on {dt.date.today().isoformat()} from {root}:",
        f"{fingerprint.samples['train']} train / {fingerprint.samples['val']} val / {fingerprint.samples['test']} "
        f"test images, {len(fingerprint.classes)} classes. The facts behind each choice: fingerprint.json.",
        "Each choice says which fact decided it; edit freely. Train, then score the test split:",
        f"  lightning-seg fit --config {folder / output.name}   # add --budget 20m to fit the schedule to 20 minutes",
        "  lightning-seg test --config <run>/config.yaml --ckpt_path <run>/checkpoints/last.ckpt",
        "",
    ]
    text = render_plan(recipe, fingerprint.data_class, data_args, split_lists, header, notes)
    for split, entries in lists.items():  # all checked before anything is written
        _refuse_other(split_lists[split], entries, f"another {split} split")
    try:
        (folder / "splits").mkdir(parents=True, exist_ok=True)
        for split, entries in lists.items():
            atomic_write(split_lists[split], entries)
        atomic_write(folder / "fingerprint.json", json.dumps(fingerprint.to_dict(), indent=2) + "\n")
        atomic_write(folder / output.name, text)
    except OSError as error:
        raise ConfigError(truncate(f"plan: cannot write {folder}: {error.strerror or error}")) from error
    return folder / output.name


def planned_fit(fit_args: list[str]) -> bool:
    """Whether ``fit``'s arguments ask for a plan first: a data root and no config."""
    names = [arg.split("=", 1)[0] for arg in fit_args]
    return "--data.root" in names and not any(name in ("-c", "--config") for name in names)


def split_plan_args(fit_args: list[str]) -> tuple[list[str], list[str]]:
    """``fit``'s arguments split into ``plan``'s (``--data.*``, ``--output``) and the rest, which ``fit`` gets
    after the plan's config (``--budget``, ``--trainer.*``). Options are ``--name value`` or ``--name=value``."""
    plan: list[str] = []
    fit: list[str] = []
    for group in option_groups(fit_args):
        name = group[0].split("=", 1)[0]
        (plan if name.startswith("--data.") or name == "--output" else fit).extend(group)
    return plan, fit


def run_plan(argv: list[str]) -> Path | None:
    """:func:`write_plan`, with bad input said in one line on stderr (None then)."""
    try:
        return write_plan(argv)
    except ConfigError as error:
        print(f"lightning-seg: error: {error}", file=sys.stderr)
        return None


def main(argv: list[str]) -> int:
    """Console entry (``lightning-seg plan ...``): 0 when the plan is written, 2 on bad input (one line)."""
    path = run_plan(argv)
    if path is None:
        return 2
    print(f"lightning-seg: plan written: {path} (train it: lightning-seg fit --config {path})")
    return 0
