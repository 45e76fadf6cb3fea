"""``attack``'s report: ``robustness.json``, ``.md``, ``.png``, the example panels and ``summary.json``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lightning_seg.utils.atomic import atomic_write

if TYPE_CHECKING:
    from lightning_seg.commands.attack.robustness import RobustnessPass
    from lightning_seg.task.module import SegmentationModule

from lightning_seg.commands.attack.options import Group, format_epsilon


# ------------------------------------------------------------------------------------------- the report
def markdown_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The rows as a Markdown table, with a line saying what was attacked and scored against what."""
    target = meta.get("target_class")
    show_share = any(r["targeted"] for r in rows)
    show_labels = any(r["label_acc"] is not None for r in rows)
    header = ["attack", "head", "ε", "mIoU", "acc"]
    header += ["target share"] if show_share else []
    header += ["label acc"] if show_labels else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    for row in rows:
        group = Group(row["head"], row["attack"], row["targeted"])
        cells = [group.title(row["steps"], target).removesuffix(" (label head)"), row["head"]]
        cells += [format_epsilon(row["epsilon"]), cell(row["mIoU"]), cell(row["acc"])]
        cells += [cell(row["target_share"]) if row["targeted"] else "–"] if show_share else []
        cells += [cell(row["label_acc"])] if show_labels else []
        lines.append("| " + " | ".join(cells) + " |")
    reference = (
        "the model's own clean predictions (the predict split has no masks)"
        if meta["split"] == "predict"
        else f"the {meta['split']} masks, at each mask's original size, as test scores"
    )
    note = (
        f"{meta['images']} {meta['split']} images; L∞ radius ε in [0, 1] pixel units; scored against {reference}"
        f"; inference {meta['inference']}; post-processing: {' → '.join(meta['postprocess']) or 'none'}"
    )
    if meta.get("random_start") is not None and any(r["attack"] != "fgsm" for r in rows):
        size = "2.5·ε/steps" if meta["step_size"] is None else f"{meta['step_size']:g}"
        note += f"; PGD/SegPGD step {size}, random start {'on' if meta['random_start'] else 'off'}"
    if show_share:
        where = f"the region of {meta['target_region']}" if meta.get("target_region") else "the whole image"
        note += f"; target share: pixels of {where} predicted as {target}"
    if show_labels:
        note += f"; label acc against {meta.get('label_reference') or 'labels'}"
    return "\n".join([*lines, "", note + "."]) + "\n"


def write_report(
    folder: Path,
    rows: list[dict[str, Any]],
    meta: dict[str, Any],
    table: str,
    report: RobustnessPass,
    model: SegmentationModule,
) -> None:
    """robustness.json, .md, .png, the panels and summary.json in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "robustness.json", json.dumps(rows, indent=2))
    atomic_write(folder / "robustness.md", table)
    plot_curves(folder / "robustness.png", rows, meta)
    panel_files = []
    largest = max(report.options.epsilons)
    if largest > 0:
        (folder / "panels").mkdir(exist_ok=True)
        for group, items in report.panels.items():
            if not items:
                continue
            path = folder / "panels" / f"{group.file_stem}_eps{format_epsilon(largest).replace('/', '-')}.png"
            title = group.title(report.options.steps, meta.get("target_class"))
            plot_panels(path, items, largest, title, model.class_names)
            panel_files.append(str(path))
    summary = {
        "stage": "attack",
        "status": "completed",
        **meta,
        "rows": rows,
        "files": {
            "json": str(folder / "robustness.json"),
            "markdown": str(folder / "robustness.md"),
            "plot": str(folder / "robustness.png"),
            "panels": panel_files,
        },
    }
    atomic_write(folder / "summary.json", json.dumps(summary, indent=2))


def plot_curves(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """mIoU against ε, one line per attack (and the target share of targeted attacks beside it)."""
    from matplotlib.figure import Figure

    targeted = any(r["targeted"] for r in rows)
    figure = Figure(figsize=(10.5 if targeted else 6, 4), layout="constrained")
    axes = figure.subplots(1, 2 if targeted else 1, squeeze=False)[0]
    curves: dict[tuple[str, str, bool], list[dict[str, Any]]] = {}
    for row in rows:
        curves.setdefault((row["head"], row["attack"], row["targeted"]), []).append(row)
    for (head, attack, is_targeted), points in curves.items():
        title = Group(head, attack, is_targeted).title(points[0]["steps"], meta.get("target_class"))
        x = [p["epsilon"] * 255 for p in points]
        style = "--" if is_targeted else "-"
        axes[0].plot(x, [p["mIoU"] for p in points], style, marker="o", label=title)
        if is_targeted:
            axes[1].plot(x, [p["target_share"] for p in points], style, marker="o", label=title)
    axes[0].set_ylabel("mIoU")
    axes[0].set_title(f"{meta['split']} mIoU under attack")
    if targeted:
        axes[1].set_ylabel("target share")
        axes[1].set_title(f"pixels turned to {meta.get('target_class')}")
    for ax in axes:
        ax.set_xlabel("L∞ radius ε (×1/255)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=110))


def plot_panels(
    path: Path, items: list[dict[str, torch.Tensor]], epsilon: float, title: str, class_names: Sequence[str]
) -> None:
    """clean image | perturbation (scaled from [−ε, ε] to [0, 1]) | adversarial image | clean prediction |
    adversarial prediction, one row per image, class colours as ``predict`` writes them."""
    from matplotlib.figure import Figure

    from lightning_seg.reports.drawing import class_legend, show_picture
    from lightning_seg.reports.palette import colourize, default_palette

    palette = default_palette(len(class_names))
    columns = [
        "clean",
        f"perturbation (±{format_epsilon(epsilon)} → 0..1)",
        f"adversarial (ε {format_epsilon(epsilon)})",
        "clean prediction",
        "adversarial prediction",
    ]
    figure = Figure(figsize=(2.2 * len(columns), 2.2 * len(items) + 0.9), layout="constrained")
    axes = figure.subplots(len(items), len(columns), squeeze=False)
    for r, item in enumerate(items):
        clean, adversarial = item["clean"].float().cpu(), item["adversarial"].float().cpu()
        delta = ((adversarial - clean) / (2 * epsilon) + 0.5).clamp(0, 1)
        pictures = [
            clean,
            delta,
            adversarial,
            colourize(item["clean_prediction"].cpu(), palette).float() / 255,
            colourize(item["adversarial_prediction"].cpu(), palette).float() / 255,
        ]
        for c, picture in enumerate(pictures):
            show_picture(axes[r, c], picture, columns[c] if r == 0 else None)
    handles = class_legend(class_names)
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 8), fontsize="small")
    figure.suptitle(title)
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
