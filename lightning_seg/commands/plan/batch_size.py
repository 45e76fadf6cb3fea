"""The plan's batch size, measured on the machine that plans: images per second on a CPU, memory on a GPU.

A CPU step's time grows about in proportion to the batch, so images per second change little with it while
a smaller batch takes more optimizer steps in the same time; a GPU runs a larger batch in about the time of a
small one until its memory is full. So the probe times :data:`STEPS` training steps (forward, loss,
backward, AdamW; after :data:`WARMUP` untimed ones) of the planned net at the training size, with random
weights and random images, at each candidate batch size: :data:`CPU_BATCHES` on a CPU, :data:`GPU_BATCHES`
on a GPU, stopping at the first that runs out of memory or peaks above :data:`HEADROOM` of it. It keeps the
fastest in images per second and, within :data:`TIE` of it, the smaller batch. Decoding and augmenting the
batch are not in the probe: they cost the same per image at any batch size.

Lightning's ``BatchSizeFinder`` finds the largest batch that fits in a run's memory; it neither times the
steps nor runs before a config exists, which is what the plan needs, so this is written here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lightning_seg.commands.plan.recipe import Choice
from lightning_seg.models.outputs import as_net_output

CPU_BATCHES = (4, 8, 16)
GPU_BATCHES = (8, 16, 32, 64)
WARMUP, STEPS = 1, 2
TIE = 0.05
"""Throughput share within which the smaller batch is kept (more optimizer steps for the same time)."""
HEADROOM = 0.8
"""The share of a GPU's memory the probe's peak may reach (the real run adds data, metrics, fragmentation)."""


@dataclass(frozen=True)
class BatchTiming:
    """One candidate batch size's measurement: images per second, and peak GPU memory (GiB, None on a CPU);
    ``images_per_s`` is None when the batch did not fit."""

    batch_size: int
    images_per_s: float | None
    peak_gib: float | None = None

    def text(self) -> str:
        if self.images_per_s is None:
            return f"{self.batch_size}: out of memory"
        peak = f", {self.peak_gib:.1f} GiB" if self.peak_gib is not None else ""
        return f"{self.batch_size}: {self.images_per_s:.1f} img/s{peak}"


def _step(
    net: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, masks: torch.Tensor
) -> None:
    optimizer.zero_grad(set_to_none=True)
    logits = as_net_output(net(images)).mask
    nn.functional.cross_entropy(logits, masks).backward()
    optimizer.step()


def time_batch_sizes(
    net: nn.Module, size: Sequence[int], num_classes: int, device: torch.device, batches: Sequence[int]
) -> list[BatchTiming]:
    """Time training steps of ``net`` (B×K×H×W logits, or a dict of them under "mask") on random float32
    B×3×H×W images and int64 B×H×W masks of ``size`` (H, W) at each batch size of ``batches`` (ascending)
    on ``device``. The net's weights change (it is a throwaway copy)."""
    net = net.to(device).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    cuda = device.type == "cuda"
    total = torch.cuda.get_device_properties(device).total_memory if cuda else 0
    timings = []
    generator = torch.Generator().manual_seed(0)
    for batch in batches:
        images = torch.randn(batch, 3, *size, generator=generator).to(device)
        masks = torch.randint(0, num_classes, (batch, *size), generator=generator).to(device)
        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats(device)
            for _ in range(WARMUP):
                _step(net, optimizer, images, masks)
            if cuda:
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(STEPS):
                _step(net, optimizer, images, masks)
            if cuda:
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
        except torch.cuda.OutOfMemoryError:
            timings.append(BatchTiming(batch, None))
            break
        peak = torch.cuda.max_memory_allocated(device) if cuda else None
        timings.append(
            BatchTiming(batch, batch * STEPS / seconds, peak / 2**30 if peak is not None else None)
        )
        if peak is not None and peak > HEADROOM * total:
            break
    del optimizer
    if cuda:
        torch.cuda.empty_cache()
    return timings


def fastest(timings: Sequence[BatchTiming], memory: float | None = None) -> BatchTiming | None:
    """The candidate with the most images per second, the smaller within :data:`TIE` of it; with ``memory``
    (a GPU's bytes), only those that peaked within :data:`HEADROOM` of it. None when none ran."""
    limit = HEADROOM * memory / 2**30 if memory else None
    ran = [
        t
        for t in timings
        if t.images_per_s is not None and (limit is None or t.peak_gib is None or t.peak_gib <= limit)
    ]
    if not ran:
        return None
    best = max(t.images_per_s for t in ran)  # type: ignore[type-var]
    return min((t for t in ran if t.images_per_s >= (1 - TIE) * best), key=lambda t: t.batch_size)  # type: ignore[operator]


def choose_batch_size(net: nn.Module, size: Sequence[int], num_classes: int, train: int) -> Choice:
    """The plan's batch size for ``net`` at ``size`` (H, W) with ``train`` training images: measured on this
    machine's GPU if it has one, else its CPU, among the candidates no larger than ``train`` (the loader
    drops an incomplete last batch). Its reason names the measurements."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    candidates = [b for b in (GPU_BATCHES if device.type == "cuda" else CPU_BATCHES) if b <= train]
    if not candidates:
        return Choice(train, f"{train} training images: one batch of all")
    timings = time_batch_sizes(net, size, num_classes, device, candidates)
    memory = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    chosen = fastest(timings, memory)
    if chosen is None:
        return Choice(
            min(candidates), f"even {min(candidates)} images did not fit in the {device.type}'s memory"
        )
    measured = "; ".join(t.text() for t in timings)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "this CPU"
    return Choice(chosen.batch_size, f"fastest training steps on {name} ({measured})")
