"""The sweep file: what a sweep varies, checked in one pass, and the trials it makes.

```yaml
base: configs/default.yaml            # a config file, or a list applied in order (from the working dir)
overrides:                            # the same for every trial: dotted keys as on the command line
  trainer.max_epochs: 3
parameters:                           # swept: dotted key → list of values (scalars, lists or mappings)
  model.init_args.net.init_args.base_width: [8, 16]
  model.init_args.loss.init_args.weights: [{ce: 1.0}, {ce: 1.0, dice: 1.0}]
method: grid                          # every combination; random: num_trials of them, drawn with seed
output: runs/sweeps/default_losses    # the default: runs/sweeps/<sweep file stem>
rank_by: val/mIoU                     # any logged validation metric (val/competition_dice, val/score, ...)
mode: max                             # or min (a loss)
columns: [val/dice]                   # more metrics in the table, each the last validation's
```

A trial is one value per parameter. It is named by a stable hash of everything that decides its run (the
base files' contents, the fixed overrides, its values), so editing a list adds or drops trials without
renaming the others, and a changed base config or override makes new trials instead of reusing stale runs.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_seg.errors import ConfigError, closest, short_path, truncate
from lightning_seg.utils.config_files import check_config_file

KEYS = (
    "base",
    "overrides",
    "parameters",
    "method",
    "num_trials",
    "seed",
    "output",
    "rank_by",
    "mode",
    "columns",
)
METHODS = ("grid", "random")

RESERVED = (
    "config",
    "ckpt_path",
    "trainer.default_root_dir",
    "trainer.logger.init_args.save_dir",
    "trainer.logger.init_args.name",
    "trainer.logger.init_args.version",
)
"""Options the sweep sets itself for every trial (its folder, its resume): not for a sweep file."""


@dataclass(frozen=True)
class Ranking:
    """What a sweep ranks its trials by, and the metric columns it shows (a sweep file's ``rank_by``,
    ``mode`` and ``columns``).

    Attributes:
        metric: a logged validation metric (``val/mIoU``, ``val/competition_dice``, ``val/score``, ...).
        mode: "max" (higher is better) or "min".
        columns: more metrics to show, each the last validation's.
    """

    metric: str = "val/mIoU"
    mode: str = "max"
    columns: tuple[str, ...] = ("val/dice",)

    @property
    def shown(self) -> tuple[str, ...]:
        """Every metric with a column of last values: the ranked one first."""
        return (self.metric, *(c for c in self.columns if c != self.metric))


DEFAULT_RANKING = Ranking()


@dataclass(frozen=True)
class Trial:
    """One combination: ``values`` maps each swept dotted key to its value; ``key`` is its stable hash."""

    values: dict[str, Any]
    key: str


@dataclass(frozen=True)
class SweepFile:
    """A checked sweep file (see the module docstring)."""

    path: Path
    base: tuple[str, ...]
    parameters: dict[str, list[Any]]
    overrides: dict[str, Any] = field(default_factory=dict)
    method: str = "grid"
    num_trials: int | None = None
    seed: int = 0
    output: Path = Path("runs/sweeps")
    ranking: Ranking = DEFAULT_RANKING

    @property
    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.parameters.values())

    def trials(self) -> list[Trial]:
        """The trials in sweep order: the grid with the last parameter varying fastest (as
        ``itertools.product``), or ``num_trials`` distinct draws from it in the order drawn."""
        total = self.grid_size
        if self.method == "grid":
            indices: list[int] | range = range(total)
        else:
            indices = random.Random(self.seed).sample(range(total), min(self.num_trials or total, total))
        fingerprint = self._fingerprint()
        trials = []
        for index in indices:
            values = self._combination(index)
            text = json.dumps({**fingerprint, "values": values}, sort_keys=True, default=str)
            trials.append(Trial(values, hashlib.sha256(text.encode()).hexdigest()[:12]))
        return trials

    def _combination(self, index: int) -> dict[str, Any]:
        """The ``index``-th combination of the grid, decoded in mixed radix (no list of all of them)."""
        chosen: dict[str, Any] = {}
        for key, values in reversed(self.parameters.items()):
            index, position = divmod(index, len(values))
            chosen[key] = values[position]
        return {key: chosen[key] for key in self.parameters}

    def _fingerprint(self) -> dict[str, Any]:
        contents = [hashlib.sha256(Path(base).read_bytes()).hexdigest() for base in self.base]
        return {"base": list(zip(self.base, contents, strict=True)), "overrides": self.overrides}


# ---------------------------------------------------------------------------------------- the command line
def option_value(value: Any) -> str:
    """``value`` as the text after ``--key=``: a string as written, anything else as JSON (which the CLI
    reads as YAML), so ``{ce: 1.0}``, ``[48, 64]``, ``null`` and ``true`` arrive with their types."""
    return value if isinstance(value, str) else json.dumps(value)


def override_args(values: dict[str, Any]) -> list[str]:
    """``--key=value`` arguments for ``fit``, in order."""
    return [f"--{key}={option_value(value)}" for key, value in values.items()]


# ------------------------------------------------------------------------------------------- for tables
def short_value(value: Any, limit: int = 40) -> str:
    """A value for a table cell: a class path by its class name, a mapping as ``k=v,k=v``."""
    if isinstance(value, dict) and "class_path" in value:
        args = value.get("init_args") or {}
        text = short_value(value["class_path"]) + (f"({short_value(args, limit)})" if args else "")
    elif isinstance(value, dict):
        text = ",".join(f"{k}={short_value(v)}" for k, v in value.items())
    elif isinstance(value, list | tuple):
        text = "[" + ",".join(short_value(v) for v in value) + "]"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif value is None:
        text = "null"
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, str) and "." in value and value.replace(".", "").replace("_", "").isalnum():
        text = value.rpartition(".")[2] if value.rpartition(".")[2][:1].isupper() else value
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def column_names(keys: list[str]) -> dict[str, str]:
    """A short column name per dotted key: its last part, with the parts before it (``init_args`` skipped)
    added where two names would clash (``net.arch`` and ``loss.arch`` when both are swept, ``size`` alone)."""
    parts = {key: [p for p in key.split(".") if p != "init_args"] or [key] for key in keys}
    depth = dict.fromkeys(keys, 1)
    while True:
        names = {key: ".".join(parts[key][-depth[key] :]) for key in keys}
        clashing = [k for k in keys if list(names.values()).count(names[k]) > 1 and depth[k] < len(parts[k])]
        if not clashing:
            return names
        for key in clashing:
            depth[key] += 1


# ------------------------------------------------------------------------------------------------ loading
def load_sweep_file(path: str | Path, output: str | None = None) -> SweepFile:
    """Read and check a sweep file; every problem is one line naming the file and the key."""
    path = Path(path)
    shown = short_path(path)
    if not path.is_file():
        raise ConfigError(
            f"--config {shown}: no such sweep file" if not path.exists() else f"{shown}: not a file"
        )
    try:
        content = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        check_config_file(str(path))  # the file, line and column of a syntax error
        raise ConfigError(truncate(f"--config {shown}: not valid YAML ({error})")) from error
    if not isinstance(content, dict):
        raise ConfigError(
            f"--config {shown}: a sweep file is a mapping with base:, parameters:, ... (see --help)"
        )

    def fail(key: str, what: str) -> ConfigError:
        return ConfigError(truncate(f"{shown}: {key}: {what}", 240))

    for key in content:
        if key not in KEYS:
            near = closest(str(key), KEYS)
            raise fail(
                str(key),
                "unknown key" + (f"; did you mean {near}?" if near else f"; known: {', '.join(KEYS)}"),
            )
    base = content.get("base")
    base_files = [base] if isinstance(base, str) else base
    if not base_files or not isinstance(base_files, list) or not all(isinstance(b, str) for b in base_files):
        raise fail("base", "name the base config file, or a list of them (e.g. base: configs/default.yaml)")
    for file in base_files:
        if not Path(file).is_file():
            raise fail("base", f"{file}: no such file (paths are read from the working directory)")
    overrides = _dotted_mapping(content.get("overrides") or {}, "overrides", fail)
    parameters = _dotted_mapping(content.get("parameters"), "parameters", fail)
    if not parameters:
        raise fail("parameters", "nothing to sweep; give dotted keys with lists of values")
    for key, values in parameters.items():
        if not isinstance(values, list):
            raise fail(f"parameters: {key}", f"a list of values, not {_kind(values)} (e.g. [{values!r}])")
        if not values:
            raise fail(f"parameters: {key}", "an empty list; give at least one value")
        if key in overrides:
            raise fail(f"parameters: {key}", "also under overrides; keep it in one of the two")
    method = content.get("method", "grid")
    if method not in METHODS:
        raise fail("method", f"{method!r} is not one of {', '.join(METHODS)}")
    num_trials, seed = content.get("num_trials"), content.get("seed", 0)
    if method == "random" and not (isinstance(num_trials, int) and not isinstance(num_trials, bool)):
        raise fail("num_trials", "method random needs the number of trials to draw (an integer ≥ 1)")
    if method == "grid" and num_trials is not None:
        raise fail("num_trials", "only for method random (a grid runs every combination; see --max_trials)")
    if num_trials is not None and num_trials < 1:
        raise fail("num_trials", f"{num_trials}; give an integer ≥ 1")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise fail("seed", f"{seed!r}; give an integer")
    folder = output or content.get("output") or Path("runs/sweeps") / path.stem
    if not isinstance(folder, str | Path):
        raise fail("output", f"{folder!r}; give a folder path")
    rank_by, mode = content.get("rank_by", DEFAULT_RANKING.metric), content.get("mode", DEFAULT_RANKING.mode)
    columns = content.get("columns", list(DEFAULT_RANKING.columns))
    if not isinstance(rank_by, str) or "/" not in rank_by:
        raise fail("rank_by", f"{rank_by!r}; name a logged metric with its stage, e.g. val/competition_dice")
    if mode not in ("max", "min"):
        raise fail("mode", f"{mode!r}; max (higher is better) or min")
    if not isinstance(columns, list) or not all(isinstance(c, str) and "/" in c for c in columns):
        raise fail("columns", f"{columns!r}; a list of logged metrics, e.g. [val/dice, val/label_f1]")
    return SweepFile(
        path=path,
        base=tuple(base_files),
        overrides=overrides,
        parameters=parameters,
        method=method,
        num_trials=num_trials,
        seed=seed,
        output=Path(folder),
        ranking=Ranking(rank_by, mode, tuple(columns)),
    )


def _dotted_mapping(value: Any, name: str, fail: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(
            name,
            f"a mapping of dotted keys (model.init_args.net.init_args.base_width: ...), not {_kind(value)}",
        )
    for key in value:
        if not isinstance(key, str) or not key or key.startswith("-"):
            raise fail(
                f"{name}: {key}", "write each key as a dotted option name without -- (trainer.max_epochs)"
            )
        if key in RESERVED:
            raise fail(
                f"{name}: {key}", "set by the sweep for each trial (its folder and resume); leave it out"
            )
    return dict(value)


def _kind(value: Any) -> str:
    kinds = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return kinds.get(type(value), f"a {type(value).__name__}")
