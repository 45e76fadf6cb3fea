"""``attack``: an adversarial-robustness report of a checkpoint, scored exactly as ``test`` scores.

``python -m lightning_seg attack --config X.yaml --ckpt_path <checkpoint>`` attacks every image of the test
split (``--split val``, or ``--split predict``: a folder of images without masks) with FGSM, PGD and SegPGD at
the L∞ radii 0, 1/255, 2/255, 4/255 and 8/255, and scores the adversarial images through the model's whole
path (inference, post-processing, decision at each mask's original size: :meth:`SegmentationModule.predict_path`),
against the masks ``test`` scores. The radius-0 row is ``test``'s own metrics, bit for bit.

Pixel space. The perturbation δ lives in [0, 1] pixel space of the image the net reads (the batch's size,
before normalisation): x = image·std + mean, ‖δ‖∞ ≤ ε, x + δ clamped to [0, 1] after every step; the net
sees (x + δ − mean)/std. A post-processing step that reads the image (a dense CRF) gets the adversarial
image at the original size (the stored image + δ resized bilinearly, clamped, rounded to uint8).

Attacks (untargeted: ascend the cross-entropy of the true classes; ignored pixels left out; a one-channel
sigmoid head as two classes):

* ``fgsm``: one signed-gradient step of size ε (Goodfellow et al., 2015).
* ``pgd``: ``steps`` signed-gradient steps of ``step_size`` (default 2.5·ε/steps), each projected back into
  the ε-ball and [0, 1], from a uniform random start in [−ε, ε] (Madry et al., 2018).
* ``segpgd``: PGD whose loss splits the pixels: (1 − λ_t)·CE on the pixels still classified correctly +
  λ_t·CE on those already wrong, both divided by all pixels, λ_t = t/(2T) for t = 0..T−1, so it starts by
  turning correct pixels and shifts weight to keeping the turned ones (Gu et al., ECCV 2022).

Targeted (``--target_class``, by name or index; ``--target_region`` a PNG whose non-zero pixels mark the
region, resized nearest to each image): descend the cross-entropy of the target class on the region's
pixels; the rows report ``target_share``, the share of the region's pixels (at the original size) predicted
as the target. Targeted SegPGD reweights the same way, the pixels "still to turn" being those not yet
predicted as the target. Untargeted rows run too.

The image-level head of a net that has one (MicroUNet with ``label_weight`` > 0): rows with ``head:
"label"`` ascend the head's loss (``model.loss``'s label term against the labels ``test`` scores) with FGSM
and PGD (SegPGD's pixel split has no meaning for one label per image) and report the label accuracy as well
as the mask metrics (the mask follows the head through LabelConsistency). ``label_acc`` is reported on
every row of such a net.

On ``--split predict`` the reference is the model's own clean prediction (standard for unlabelled images:
the radius-0 row then scores 1.0 and the others measure how much of the prediction an attack changes).

How it runs: ``test``'s loop, without ``torch.inference_mode`` (no gradient could be taken under it), over a
module of the command's own (:class:`RobustnessTask`, the segmentation module its child) whose ``test_step``
hands each batch to :class:`RobustnessPass`; the data module serves the split through
:meth:`~lightning_seg.data.base.SegDataModule.evaluate`. All radii of an
attack run together: the batch is repeated once per radius > 0 (B·E images, ε per image), so every step is
one forward and backward pass for all of them. Metrics stay on the device until the pass ends.

Outputs, in the command's record folder ``<run>/attack/<date-time>/``: ``robustness.json`` (a list of rows
``{attack, epsilon, targeted, head, steps, mIoU, acc, target_share, label_acc}``), ``robustness.md`` (the
same, as a Markdown table, printed at the end), ``robustness.png`` (mIoU against ε, one line per attack),
``panels/<attack>[_targeted|_label]_eps<k>-255.png`` at the largest radius (clean image | perturbation,
scaled from [−ε, ε] to [0, 1] | adversarial image | clean prediction | adversarial prediction) and
``summary.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L

from lightning_seg.callbacks.base import CommandPass, attached
from lightning_seg.checkpoints.load import load_weights
from lightning_seg.checkpoints.read import read_checkpoint
from lightning_seg.errors import ConfigError

if TYPE_CHECKING:
    from lightning_seg.task.module import SegmentationModule


from lightning_seg.commands.attack.options import (
    AttackOptions,
    Group,
    check_options,
    format_epsilon,
    parse_epsilon,
    read_region,
)
from lightning_seg.commands.attack.perturbation import (
    ATTACKS,
    DEFAULT_EPSILONS,
    HEADS,
    SPLITS,
    TITLES,
    AttackName,
    HeadName,
    LabelObjective,
    MaskObjective,
    SplitName,
    log_probabilities,
    perturb,
)
from lightning_seg.commands.attack.report import markdown_table, plot_curves, plot_panels, write_report
from lightning_seg.commands.attack.robustness import (
    CLEAN,
    Counts,
    RobustnessPass,
    RobustnessTask,
    RowScores,
    adversarial_originals,
)

__all__ = [
    "ATTACKS",
    "CLEAN",
    "DEFAULT_EPSILONS",
    "HEADS",
    "SPLITS",
    "TITLES",
    "AttackName",
    "AttackOptions",
    "Counts",
    "Group",
    "HeadName",
    "LabelObjective",
    "MaskObjective",
    "RobustnessPass",
    "RobustnessTask",
    "RowScores",
    "SplitName",
    "adversarial_originals",
    "check_options",
    "format_epsilon",
    "log_probabilities",
    "markdown_table",
    "parse_epsilon",
    "perturb",
    "plot_curves",
    "plot_panels",
    "read_region",
    "run_attack",
    "write_report",
]


def run_attack(
    trainer: L.Trainer,
    model: SegmentationModule,
    datamodule: Any,
    ckpt_path: str | None,
    options: AttackOptions,
    weights_only: bool | None = None,
) -> list[dict[str, Any]]:
    """Run the attack pass through ``test``'s loop, write the report; returns its rows. ``options``: from
    :func:`check_options`, checked before any pass."""
    split = options.split
    if datamodule is None:
        raise ConfigError(f"attack needs a data module (data: in the config) with a {split} split")
    model.check_label_consistency()  # before the pass, not at its first batch
    if ckpt_path is not None:
        load_weights(model, read_checkpoint(ckpt_path, weights_only, cache=True), ckpt_path)
    report = RobustnessPass(model, options)
    inference_mode = trainer.test_loop.inference_mode
    trainer.test_loop.inference_mode = False  # gradients with respect to the images
    task = RobustnessTask(model, report, ckpt_path)
    try:
        with attached(trainer, CommandPass("attack")), datamodule.evaluate(split):
            trainer.test(task, datamodule=datamodule, verbose=False)
        rows = report.rows()
        images = task.images
    finally:
        trainer.test_loop.inference_mode = inference_mode
    if trainer.is_global_zero:
        folder = Path(trainer.default_root_dir)
        meta = {
            "checkpoint": str(ckpt_path) if ckpt_path else None,
            "split": split,
            "images": images,
            "reference": report.reference,
            "label_reference": report.label_reference,
            "target_class": model.class_names[options.target] if options.target is not None else None,
            "target_region": options.region_path,
            "steps": options.steps,
            "step_size": options.step_size,
            "random_start": options.random_start,
            "seed": options.seed,
            "inference": model.inference.describe(),
            "postprocess": model.postprocess.describe(),
        }
        text = markdown_table(rows, meta)
        write_report(folder, rows, meta, text, report, model)
        print(text)
        print(
            f"report: {folder / 'robustness.json'}, {folder / 'robustness.md'}, {folder / 'robustness.png'}"
        )
    trainer.strategy.barrier()
    return rows
