"""Old module paths that configs, saved checkpoint records and user code name, kept loading.

Each old path imports the module that now holds its contents and warns once with the
new path (a ``FutureWarning``: shown by default). Modelled on Lightning's ``_graveyard``: one place, no copies of code, removed after a release that
announced it. A class path in YAML (``class_path: lightning_seg.module.SegmentationModule``) or in a
checkpoint's record resolves through here, so runs written before the package was laid out in rooms keep
rebuilding.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED: dict[str, tuple[str, ...]] = {
    "lightning_seg.atomic": ("lightning_seg.utils.atomic",),
    "lightning_seg.network": ("lightning_seg.utils.network",),
    "lightning_seg.random_state": ("lightning_seg.utils.random_state",),
    "lightning_seg.class_argmax": ("lightning_seg.utils.class_argmax",),
    "lightning_seg.parse_errors": ("lightning_seg.utils.parse_errors",),
    "lightning_seg.module": (
        "lightning_seg.task.module",
        "lightning_seg.task.net_builder",
        "lightning_seg.labels",
    ),
    "lightning_seg.schedulers": ("lightning_seg.task.schedulers",),
    "lightning_seg.loss_terms": ("lightning_seg.losses.terms",),
    "lightning_seg.split_loss": ("lightning_seg.losses.split_sums",),
    "lightning_seg.checkpoint_io": ("lightning_seg.checkpoints.atomic_io",),
    "lightning_seg.standalone": (
        "lightning_seg.checkpoints.record",
        "lightning_seg.checkpoints.load",
        "lightning_seg.cli.records",
    ),
    "lightning_seg.checks": (
        "lightning_seg.cli.checks",
        "lightning_seg.checkpoints.read",
        "lightning_seg.utils.config_files",
    ),
    "lightning_seg.trainer": ("lightning_seg.cli.trainer",),
    "lightning_seg.pretrained": ("lightning_seg.cli.pretrained",),
    "lightning_seg.config_record": ("lightning_seg.cli.config_record",),
    "lightning_seg.demo": ("lightning_seg.cli.demo",),
    "lightning_seg.wandb_runs": ("lightning_seg.runs.wandb",),
    "lightning_seg.callbacks.drawing": ("lightning_seg.reports.drawing",),
    "lightning_seg.callbacks.plot_figures": ("lightning_seg.reports.figures",),
    "lightning_seg.callbacks.image_ranking": ("lightning_seg.reports.image_ranking",),
    "lightning_seg.callbacks.publish": ("lightning_seg.reports.publish",),
    "lightning_seg.commands.sweep": ("lightning_seg.sweep.runner",),
    "lightning_seg.commands.sweep_file": ("lightning_seg.sweep.spec",),
    "lightning_seg.commands.sweep_table": ("lightning_seg.sweep.table",),
    "lightning_seg.commands.sweep_check": ("lightning_seg.cli.sweep_check",),
}
"""Old module path → the modules that hold its public names now (several where a module was split: a name
is looked up in them in order)."""

RENAMED: dict[str, str] = {
    # the optimizer a config left unset, as jsonargparse recorded it in a run's config.yaml
    "lightning_seg.module._default_optimizer": "lightning_seg.task.optimizers.default_optimizer",
}
"""Old ``module.name`` → new ``module.name`` of a name that moved under another name."""


class _SplitModule(ModuleType):
    """An old module whose names now live in several modules: each name from the first that has it."""

    def __init__(self, name: str, parts: list[ModuleType]) -> None:
        super().__init__(name, f"moved to {', '.join(part.__name__ for part in parts)}")
        self._parts = parts

    def __getattr__(self, name: str) -> object:
        renamed = RENAMED.get(f"{self.__name__}.{name}")
        if renamed is not None:
            module, _, attribute = renamed.rpartition(".")
            return getattr(importlib.import_module(module), attribute)
        for part in self._parts:
            if hasattr(part, name):
                return getattr(part, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path of :data:`MOVED` and loads it as the new module itself (the same object, so a class
    has one identity whichever path named it)."""

    def __init__(self) -> None:
        self._origins: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        # the new module's file as origin: ``python -m <old path>`` puts it in sys.argv[0]
        target = importlib.util.find_spec(MOVED[fullname][0])
        return importlib.machinery.ModuleSpec(fullname, self, origin=target.origin if target else None)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        targets = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {' and '.join(targets)}; the old path will be removed in a later release",
            FutureWarning,  # shown by default: a class_path in YAML imports it where DeprecationWarning is hidden
            stacklevel=2,
        )
        if len(targets) == 1:
            module = importlib.import_module(targets[0])
            # importlib sets __spec__ on what create_module returns (to this finder's): keep the module's own
            # for get_code (``python -m <old path>`` after the old path was imported)
            self._origins.setdefault(spec.name, module.__spec__)
            return module
        return _SplitModule(spec.name, [importlib.import_module(target) for target in targets])

    def exec_module(self, module: ModuleType) -> None:
        # the new module is already executed; importlib binds it under the old name in sys.modules
        return None

    def get_code(self, fullname: str) -> object:
        """The new module's code, for ``python -m <old path>`` (runpy runs it as ``__main__``)."""
        spec = self._origins.get(fullname) or importlib.util.find_spec(MOVED[fullname][0])
        assert spec is not None and spec.loader is not None
        return spec.loader.get_code(spec.name)  # type: ignore[attr-defined]


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (``lightning_seg/__init__`` calls it)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
