"""The training data order: a pure function of (seed, epoch), resumable at any batch.

A resumed run must see the batches the uninterrupted run would have seen. torch's ``RandomSampler``
draws its permutation (and the DataLoader its worker seeds) from the global generator when the epoch's
iterator is created, so the order depends on everything else that drew from it before, and a run resumed
in the middle of an epoch restarts that epoch's order from its first batch. :class:`EpochSampler` instead
shuffles with its own generator seeded by ``seed + epoch`` (as ``DistributedSampler`` does, which it is, so
Lightning leaves it in place under DDP), and can start its epoch after the batches a checkpoint had done.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler

SEED_STRIDE = 1_000_003
"""Seeds of consecutive epochs' worker generators are this far apart (any odd prime would do)."""


class EpochSampler(DistributedSampler):
    """Shuffled (or ordered) indices of this process's shard, the same for the same ``(seed, epoch)``.

    Args:
        dataset: the split's dataset.
        num_replicas: processes sharing the split (1 without DDP).
        rank: this process's rank.
        shuffle: shuffle each epoch; False keeps the dataset's order.
        seed: the shuffle seed (the run's, stored in its checkpoints).
        batch_size: the loader's batch size, to turn a number of batches into a number of indices.
        weights: float (N,) per-sample weights: each epoch then draws its indices with replacement, with
            probability ∝ weight (a class-balanced order), from the same ``(seed, epoch)`` generator, as many
            as a shuffled epoch has; None: a permutation.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_replicas: int,
        rank: int,
        shuffle: bool,
        seed: int,
        batch_size: int,
        weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.batch_size = batch_size
        self.weights = weights.double() if weights is not None else None
        # the DataLoader draws its workers' base seed from this generator when an epoch's iterator is
        # created: re-seeded with the epoch, so workers are seeded the same after a resume
        self.worker_generator = torch.Generator()
        self._resume: tuple[int, int] | None = None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.worker_generator.manual_seed(self.seed * SEED_STRIDE + epoch)

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Start ``epoch`` after its first ``batches_done`` batches (once; later epochs start at 0).

        ``len()`` stays the whole shard's: Lightning counts the epoch's batches from it and carries on
        counting from the restored batch index.
        """
        self._resume = (epoch, batches_done)
        self.set_epoch(epoch)

    def _skipped(self) -> int:
        if self._resume is None or self._resume[0] != self.epoch:
            return 0
        return self._resume[1] * self.batch_size

    def _weighted(self) -> list[int]:
        """This rank's share of ``total_size`` draws with replacement ∝ ``weights`` (every rank draws the
        same sequence from the ``(seed, epoch)`` generator and keeps every ``num_replicas``-th)."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.total_size, replacement=True, generator=generator)
        return drawn[self.rank : self.total_size : self.num_replicas].tolist()

    def __iter__(self) -> Iterator[int]:
        weighted = self.weights is not None and self.shuffle
        indices = self._weighted() if weighted else list(super().__iter__())
        skipped = self._skipped()
        self._resume = None  # a second pass over the same epoch (a reloaded loader) starts at 0
        return iter(indices[skipped:])
