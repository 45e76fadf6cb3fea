"""The command line: ``python -m lightning_seg {fit,validate,test,predict} --config configs/X.yaml``.

LightningCLI in subclass mode for both the data and the model, so any ``SegDataModule`` subclass, net or
loss is named by ``class_path`` in YAML. The data module is the one source of ``num_classes``,
``ignore_index`` and class names; they are linked into the model after the data module is built.

Bad input ends with one line ``lightning-seg: error: ...`` (exit code 2). The checks that need only the
config (config files, values, output folders, the checkpoint file) run right after parsing, before
anything is built; those that need the model (does the checkpoint fit it, does the optimizer accept its
arguments) run once it is built, before the trainer is.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import lightning as L
import yaml
from jsonargparse import ArgumentError, Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.fabric.utilities.rank_zero import rank_zero_info, rank_zero_only, rank_zero_warn
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO

from lightning_seg.callbacks.divergence import DivergenceGuard
from lightning_seg.callbacks.model_record import ModelRecord
from lightning_seg.callbacks.progress import default_progress_bar
from lightning_seg.callbacks.schedule_time import ScheduleTimeCheck
from lightning_seg.callbacks.uncertainty import UncertaintyWriter
from lightning_seg.checkpoints import record as checkpoint_record
from lightning_seg.checkpoints.atomic_io import AtomicCheckpointIO
from lightning_seg.checkpoints.read import check_checkpoint_fits, forget_checkpoint, read_checkpoint
from lightning_seg.checkpoints.splits import (
    ALLOW_OPTION,
    SPLIT_CHECKED,
    SPLITS_KEY,
    check_held_out,
    evaluated_split,
    merge_trained,
    split_record,
)
from lightning_seg.cli.checks import (
    EVAL_SUBCOMMANDS,
    UNTRAINED_OPTION,
    check_config_values,
    check_optimizer,
    check_output_folders,
    check_untrained,
    check_untrained_head,
    output_folder,
    resolved_by_lightning,
    trainer_error_line,
)
from lightning_seg.cli.config_record import ConfigRecord
from lightning_seg.cli.no_validation import TRAINER_OPTIONS as NO_VALIDATION_TRAINER
from lightning_seg.cli.no_validation import without_validation
from lightning_seg.cli.pretrained import (
    link_normalization,
    link_recorded_normalization,
    use_recorded_architecture,
    warn_unread_checkpoint,
)
from lightning_seg.cli.trainer import SegTrainer
from lightning_seg.commands.budget import BUDGET_OPTION, parse_budget, plan_epochs
from lightning_seg.data.base import SegDataModule
from lightning_seg.errors import (
    DEBUG_ENV,
    ConfigError,
    NothingToDo,
    TrainingDiverged,
    closest,
    short_path,
    truncate,
)
from lightning_seg.models.weights import checkpoint_follows
from lightning_seg.runs import folders as runs
from lightning_seg.runs import wandb as wandb_runs
from lightning_seg.task.classifier import ImageClassifierModule
from lightning_seg.task.module import SegmentationModule
from lightning_seg.utils.atomic import atomic_write
from lightning_seg.utils.config_files import check_config_files
from lightning_seg.utils.error_lines import config_error_in_chain, one_line
from lightning_seg.utils.parse_errors import reduce_parse_error

LIGHTNING_MODEL_CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"
OUR_MODEL_CHECKPOINT = "lightning_seg.callbacks.ModelCheckpoint"

UNCERTAINTY_OPTION = "uncertainty"
"""predict's option that adds the UncertaintyWriter."""

ALWAYS_ON_CALLBACKS = (DivergenceGuard, ScheduleTimeCheck)
"""Added with their defaults when a config lists none (list one to set its options)."""


class SegCLI(LightningCLI):
    """LightningCLI with the data → model links of this project, its extra subcommands (``tune``, ``submit``) and
    one-line errors for bad input."""

    def __init__(self, *args: Any, started: float | None = None, **kwargs: Any) -> None:
        self.started = time.perf_counter() if started is None else started
        """When the command started (``time.perf_counter()``; after Python's imports, before a plan that
        ``fit --data.root`` writes first): ``--budget`` counts from here."""
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # each extra subcommand is a SegTrainer method; the set lists the arguments the CLI fills itself
        return {
            **LightningCLI.subcommands(),
            "tune": {"model", "datamodule"},
            "submit": {"model", "datamodule"},
            "export": {"model", "datamodule"},
            "attack": {"model", "datamodule"},
        }

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in checkpoint_record.LINKED_FROM_DATA:
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")

    # Private LightningCLI hooks kept on purpose (no public alternative; checked with Lightning 2.5 and 2.6):
    # _prepare_subcommand_parser is the one place that knows which subcommand a parser is for (the public
    # add_arguments_to_parser does not); _parse_ckpt_path is the first step after parsing, before Lightning
    # reads --ckpt_path's hyper-parameters; _run_subcommand is the only way to run code after a subcommand
    # whether it failed or not (the public after_<subcommand> hooks run on success only).
    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs: Any
    ) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand in EVAL_SUBCOMMANDS:
            # not a Trainer argument: LightningCLI passes only those to trainer.<subcommand>
            parser.add_argument(
                f"--{UNTRAINED_OPTION}",
                type=bool,
                default=False,
                help="Run without --ckpt_path on purpose, with untrained (randomly initialised) weights.",
            )
        if subcommand in SPLIT_CHECKED:
            parser.add_argument(
                f"--{ALLOW_OPTION}",
                type=bool,
                default=False,
                help="Score samples whose names the checkpoint's training split holds, on purpose (other data "
                "whose file names coincide); never to evaluate on the training data itself.",
            )
        if subcommand == "fit":
            parser.add_argument(
                f"--{BUDGET_OPTION}",
                type=str | None,
                default=None,
                help="Wall-clock budget (20m, 1h30m): a probe times real batches and sets max_epochs so the "
                "schedule ends inside it; the run's config.yaml records the epochs chosen.",
            )
        if subcommand == "predict":
            # MaskWriter writes each batch: Lightning need not keep every prediction in host memory too
            # (its default, None, keeps them); --return_predictions true still asks for them
            parser.set_defaults(return_predictions=False)
            parser.add_argument(
                f"--{UNCERTAINTY_OPTION}",
                type=Literal["entropy"] | None,
                default=None,
                help="Also write each image's uncertainty map (<name>_uncertainty.png, normalised entropy of "
                "its probabilities) and uncertainty.csv (per image) beside the masks.",
            )
        return parser

    # ------------------------------------------------------------------------------- config alone
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        argv = sys.argv[1:] if args is None else args
        if isinstance(argv, list | tuple):
            check_config_files([str(a) for a in argv])
            rewritten = nested_nulls_as_dicts([str(a) for a in argv])
            if args is None:  # given on the command line: LightningCLI warns when both are set
                sys.argv[1:] = argv = rewritten
            else:
                args = argv = rewritten
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as error:
            if config_error_in_chain(error) is not None:
                raise
            raise ConfigError(self._parse_error_line(str(error), argv)) from error

    def _parse_error_line(self, text: str, argv: Any) -> str:
        """One line for a parse error; an unknown option gets the closest known one as a suggestion."""
        unknown = re.match(r"unrecognized arguments: (.*)", text.strip())
        if not unknown:
            return reduce_parse_error(text)
        words = unknown.group(1).split()
        parsers = getattr(self, "_subcommand_parsers", {})
        given = [str(a) for a in argv] if isinstance(argv, list | tuple) else words
        subcommand = next((w for w in given if w in parsers), None)
        options = [w.split("=", 1)[0] for w in words if w.startswith("-")]
        message = f"unknown option {' '.join(options) or unknown.group(1)}"
        if subcommand and options:
            known = [o for o in parsers[subcommand]._option_string_actions if o.startswith("--")]
            # compare the last part among the options of the same group (--trainer.*), not whole names
            group = options[0].rpartition(".")[0]
            tails = [o.rpartition(".")[2] for o in known if o.rpartition(".")[0] == group]
            tail = closest(options[0].rpartition(".")[2], tails)
            best = f"{group}.{tail}" if tail and group else tail
            message += f" for {subcommand}" + (f"; did you mean {best}?" if best else " (see --help)")
        return truncate(message)

    def _parse_ckpt_path(self) -> None:
        # the first hook after parsing (before seeding and instantiation): the checks of the config alone
        subcommand = self.config.get("subcommand")
        if subcommand:
            config = self.config[subcommand]
            check_untrained(subcommand, config)
            check_config_values(config)
            check_output_folders(config)
            if config.get(BUDGET_OPTION) is not None:
                parse_budget(config[BUDGET_OPTION])
                if config.get("ckpt_path") is not None:
                    raise ConfigError(
                        f"--{BUDGET_OPTION} starts a run: not with --ckpt_path (a resume keeps its schedule)"
                    )
            runs.resolve_checkpoint(config, training=subcommand == "fit")
            checkpoint = self._read_checkpoint(config)
            if checkpoint is not None and not checkpoint.get("hyper_parameters"):
                return  # nothing for LightningCLI to merge into the config: spare it a second read
        super()._parse_ckpt_path()

    def _read_checkpoint(self, config: Namespace) -> dict[str, Any] | None:
        """The run's ``--ckpt_path`` loaded (memory-mapped), or None where there is none to check here. Read
        once: the config checks, the normalisation link and the fit check before the trainer all use it."""
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path or resolved_by_lightning(str(ckpt_path)):
            return None
        # the one read of the command: kept until it ends (Lightning's restore and the command reuse it)
        return read_checkpoint(str(ckpt_path), config.get("weights_only"), cache=True)

    def before_instantiate_classes(self) -> None:
        self.run_folder = None
        self.model_record: dict[str, Any] | None = None
        if not self.subcommand:
            return  # built without running (run=False): nothing is written
        config = self.config[self.subcommand]
        announce = rank_zero_only.rank == 0
        checkpoint = self._read_checkpoint(config)
        if checkpoint is not None:  # its run recorded the normalisation it trained with
            record = checkpoint.get(checkpoint_record.RECORD_KEY)
            link_recorded_normalization(config, record, announce, resuming=self.subcommand == "fit")
            use_recorded_architecture(config, record)
        elif config.get("ckpt_path"):
            warn_unread_checkpoint(config, announce)
        else:
            link_normalization(config, announce)
        # the config record keeps the folder arguments as given, not the folder chosen here
        self.save_config_kwargs["as_given"] = runs.folder_arguments(config)
        if self.subcommand == "predict" and config.get(UNCERTAINTY_OPTION):
            # the map is computed from what the decision read: the model returns its probabilities for it
            config.model.init_args.predict_probabilities = True
        if self.subcommand == "fit":
            _use_our_model_checkpoint(config)
            self.run_folder = runs.claim_training_folder(config)
        else:
            self.run_folder = runs.claim_record_folder(config, self.subcommand)

    def instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        # with a checkpoint, its weights replace any pretrained ones: the nets skip those downloads
        with checkpoint_follows() if config.get("ckpt_path") else contextlib.nullcontext():
            super().instantiate_classes()

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        # the model is built, the trainer not yet: the checks that need the model
        config = self.config[self.subcommand] if self.subcommand else Namespace()
        if not isinstance(self.model, SegmentationModule | ImageClassifierModule):
            raise ConfigError(
                f"model: {type(self.model).__name__} is not a model of lightning_seg; use "
                "lightning_seg.SegmentationModule (masks) or lightning_seg.ImageClassifierModule (image labels)"
            )
        if self.subcommand:
            check_untrained_head(self.subcommand, config, self.model.net)
        checkpoint = self._read_checkpoint(config)
        if checkpoint is not None:
            check_checkpoint_fits(str(config.ckpt_path), checkpoint["state_dict"], self.model)
            self._check_held_out(config, checkpoint)
            if self.subcommand == "fit":
                runs.check_resume(config, checkpoint)  # before the trainer reads any data
        if self.subcommand == "fit":
            check_optimizer(self.model)
        self.model_record = self._model_record()
        if isinstance(self.model, SegmentationModule) and isinstance(self.datamodule, SegDataModule):
            # said to the data before any setup: a step that reads each image (a CRF) reads it as stored, in
            # the commands that run the whole path (fit's validation never does)
            runs_chain = self.subcommand in ("test", "predict", "submit", "tune", "attack")
            self.datamodule.keep_original_images = runs_chain and self.model.postprocess.needs_image
        trainer_config = self._get(self.config_init, "trainer", default={})
        callbacks = list(trainer_config.get("callbacks") or [])
        if (
            self.subcommand == "fit"
            and isinstance(self.datamodule, SegDataModule)
            and not self.datamodule.validates
        ):
            callbacks, line = without_validation(callbacks, self.model)
            kwargs = {**kwargs, **NO_VALIDATION_TRAINER}
            rank_zero_info(f"lightning-seg: {line}")
        callbacks += [
            kind() for kind in ALWAYS_ON_CALLBACKS if not any(isinstance(c, kind) for c in callbacks)
        ]
        if self.model_record is not None:
            callbacks.append(ModelRecord(self.model_record))
        if self.subcommand == "predict" and config.get(UNCERTAINTY_OPTION):  # predict's own writer for it
            callbacks.append(UncertaintyWriter(config.get(UNCERTAINTY_OPTION)))
        # a bar on a terminal, plain epoch lines in a log or pipe (Lightning refuses one with the bar disabled);
        # first, so that its end-of-test line comes before RunSummary's table
        wants_bar = {**trainer_config, **kwargs}.get("enable_progress_bar") is not False
        if wants_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.insert(0, default_progress_bar())
        plugins = trainer_config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        kwargs = {"callbacks": callbacks, "plugins": plugins, **kwargs}
        try:
            return super().instantiate_trainer(**kwargs)
        except ConfigError:
            raise
        except (MisconfigurationException, ValueError, TypeError) as error:
            # the Trainer's own checks of its arguments, which name them in backticks (`max_epochs` must
            # be ..., `accelerator='tpuu'`); anything else is a bug to show whole
            names = list(inspect.signature(self.trainer_class.__init__).parameters)
            if not isinstance(error, MisconfigurationException) and not _names_an_argument(str(error), names):
                raise
            raise ConfigError(trainer_error_line(str(error), names)) from error

    def _check_held_out(self, config: Namespace, checkpoint: dict[str, Any]) -> None:
        """The split this command scores holds no sample the checkpoint was trained on (before any data is
        read; :mod:`lightning_seg.checkpoints.splits`)."""
        split = evaluated_split(self.subcommand, config)
        if split is None or config.get(ALLOW_OPTION):
            return
        warning = check_held_out(
            checkpoint.get(checkpoint_record.RECORD_KEY), self.datamodule, split, self.subcommand
        )
        if warning is not None:
            rank_zero_warn(warning)

    def _trained_splits(self) -> dict[str, Any] | None:
        if self.subcommand != "fit":
            return None
        checkpoint = self._read_checkpoint(self.config["fit"])
        previous = (checkpoint or {}).get(checkpoint_record.RECORD_KEY) or {}
        return merge_trained(split_record(self.datamodule), previous.get(SPLITS_KEY))

    def _model_record(self) -> dict[str, Any] | None:
        """What rebuilds the model from a checkpoint alone (:mod:`lightning_seg.checkpoints.record`): its
        resolved config as plain data, how the data makes an image batchable, and (fit) the split it trains
        on; the :class:`ModelRecord` callback writes it into every checkpoint."""
        if not isinstance(self.model, SegmentationModule | ImageClassifierModule):
            return None
        if self.subcommand:
            parser, config = self._subcommand_parsers[self.subcommand], self.config[self.subcommand]
        else:
            parser, config = self.parser, self.config
        resolved = yaml.safe_load(parser.dump(config, skip_none=False, skip_check=True))
        data = self.datamodule
        data_args = (resolved.get("data") or {}).get("init_args") or {}
        return checkpoint_record.model_record(
            resolved["model"],
            self.model,
            size=getattr(data, "size", None),
            image_value_range=getattr(data, "image_value_range", None),
            eval_augmentations=data_args.get("eval_augmentations"),
            # what the weights are trained on: only fit's checkpoints say it (a resume adds what the
            # checkpoint it resumes was trained on)
            splits=self._trained_splits(),
        )

    def before_fit(self) -> None:
        """``--budget``: size the schedule to the budget (:mod:`lightning_seg.commands.budget`) before fit."""
        config = self.config["fit"]
        if config.get(BUDGET_OPTION) is None:
            return
        budget_s = parse_budget(config[BUDGET_OPTION])
        if self.trainer.world_size > 1:
            raise ConfigError(f"--{BUDGET_OPTION}: single-process runs only for now (devices: 1)")
        startup_s = time.perf_counter() - self.started
        plan = plan_epochs(self.trainer, self.model, self.datamodule, budget_s, startup_s)
        self.trainer.fit_loop.max_epochs = plan.epochs
        # the record gives the epochs chosen, not the budget: `fit --config <run>/config.yaml` repeats this run
        config.trainer.max_epochs = plan.epochs
        if plan.epoch_steps < plan.steps_per_epoch:
            batches = plan.epoch_steps * self.trainer.accumulate_grad_batches
            self.trainer.limit_train_batches = batches
            config.trainer.limit_train_batches = batches
        rank_zero_info(f"lightning-seg: {plan.line()}")
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(
            folder / "budget.json", json.dumps({**asdict(plan), "epoch_s": plan.epoch_s}, indent=2) + "\n"
        )

    def _run_subcommand(self, subcommand: str) -> None:
        failed = True
        try:
            super()._run_subcommand(subcommand)
            failed = False
        except OSError as error:
            message = self._write_error_line(error)
            if message is None:
                raise
            raise ConfigError(message) from error
        finally:
            forget_checkpoint()
            wandb_runs.finish_runs(getattr(self, "trainer", None), failed)
            runs.finish(getattr(self, "run_folder", None))

    def _output_folder(self) -> str:
        try:
            return str(self.trainer.log_dir or self.trainer.default_root_dir)
        except Exception:  # only for the message
            return str(self.trainer.default_root_dir)

    def _write_error_line(self, error: OSError) -> str | None:
        """A full disk or a folder without write permission, met while the run writes its outputs."""
        path = error.filename or self._output_folder()
        key, folder = output_folder(self.config[self.subcommand])
        output = Path(folder or self.trainer.default_root_dir).resolve()
        under_output = error.filename is None or output in Path(error.filename).resolve().parents
        hint = f"; pass --{key} <{{}}>" if under_output else ""
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return truncate(
                f"{short_path(path)}: no space left on device{hint.format('a folder on another disk')}"
            )
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            reason = "read-only file system" if error.errno == errno.EROFS else "permission denied"
            return truncate(f"{short_path(path)}: {reason}{hint.format('a writable folder')}")
        return None


def _names_an_argument(text: str, names: Sequence[str]) -> bool:
    """Whether an error message names one of the Trainer's arguments in backticks, as Lightning does."""
    return any(f"`{name}`" in text or f"`{name}=" in text for name in names)


def _use_our_model_checkpoint(config: Namespace) -> None:
    """Lightning's ModelCheckpoint with a monitor rewrites last.ckpt only when the score improves; use ours
    (the same arguments, see :mod:`lightning_seg.callbacks.checkpoint`). The config record names it."""
    for callback in config.trainer.get("callbacks") or []:
        if isinstance(callback, Namespace) and callback.get("class_path") == LIGHTNING_MODEL_CHECKPOINT:
            callback.class_path = OUR_MODEL_CHECKPOINT


def build_cli(
    args: list[str] | dict[str, Any] | None = None,
    run: bool = True,
    cli_class: type[SegCLI] = SegCLI,
    started: float | None = None,
) -> SegCLI:
    """Build (and by default run) the CLI; ``args`` replaces ``sys.argv[1:]`` (tests call it in-process; a
    dict: a config's values, without subcommand); ``cli_class``: a subclass that stops early (``sweep``
    checks its trials with the very parser ``fit`` uses); ``started``: when the command started
    (``time.perf_counter()``, default now)."""
    return cli_class(
        # any LightningModule of this project: SegmentationModule, or ImageClassifierModule (labels only)
        L.LightningModule,
        SegDataModule,
        trainer_class=SegTrainer,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_callback=ConfigRecord,
        save_config_kwargs={},
        parser_kwargs={"exit_on_error": False},
        args=args,
        run=run,
        started=started,
    )


def run_cli(args: list[str] | None = None, started: float | None = None) -> SegCLI | None:
    """Run the CLI; on bad input print ``lightning-seg: error: <what and where>`` and return None.

    A diverged run raises :class:`TrainingDiverged` and a command with nothing to do :class:`NothingToDo`
    (``main`` prints them). Set ``LIGHTNING_SEG_DEBUG=1`` to get the full traceback instead.
    """
    try:
        return build_cli(args, started=started)
    except (TrainingDiverged, NothingToDo):
        raise
    except (ValueError, ArgumentError, FileNotFoundError) as error:
        # jsonargparse wraps errors raised while instantiating a class_path (e.g. our ConfigError) in a
        # ValueError listing every Union member; the cause is the useful line
        cause = config_error_in_chain(error)
        if os.environ.get(DEBUG_ENV) or (
            cause is None and not isinstance(error, ArgumentError | FileNotFoundError)
        ):
            raise
        print(f"lightning-seg: error: {one_line(cause or error)}", file=sys.stderr)
        return None


def nested_nulls_as_dicts(argv: list[str]) -> list[str]:
    """``--a.init_args.b.init_args.key=null`` (or ``... key null``) as ``--a.init_args.b={"init_args":
    {"key": null}}``: jsonargparse (4.53) turns a null given to an argument of a class nested in another
    into the string 'None' (a ``str | None`` then holds 'None', a Literal refuses it); the dict form is
    read right."""
    out: list[str] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        key, value = word.split("=", 1) if "=" in word else (word, None)
        if value is None and index + 1 < len(argv) and argv[index + 1] == "null":
            value, index = "null", index + 1
        owner, _, leaf = key.rpartition(".init_args.")
        nested = key.startswith("--") and ".init_args." in owner and leaf and "." not in leaf
        if value == "null" and nested:
            out.append(f"{owner}={json.dumps({'init_args': {leaf: None}})}")
        elif value is not None and "=" not in word:  # a "null" that was not ours to rewrite
            out.extend([word, value])
        else:
            out.append(word)
        index += 1
    return out
