"""The training step's hot path: no host reads of device values between logging steps.

On a GPU, reading a device value on the host (``.item()``, ``.tolist()``, ``.cpu()``, ``.numpy()``, a tensor
in a Python ``if``) makes the host wait for every queued kernel, and so does an op whose output size depends
on the data (``nonzero``, boolean-mask indexing, ``unique``, ``bincount``...): the host must learn the size
before it can allocate. On the CPU nothing waits, so this test counts both kinds of call: the methods are
patched, and the ops are seen by a ``TorchDispatchMode`` (below the Python API, so also inside libraries).
It keeps the next change honest without a GPU.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from data_trees import folder_args, folder_tree
from helpers import assert_one_line_error, tiny_args
from torch.utils._python_dispatch import TorchDispatchMode

from lightning_seg.cli import main, run_cli

HOST_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__")
"""Tensor methods that copy a value to the host."""

aten = torch.ops.aten
DATA_DEPENDENT = {
    aten._local_scalar_dense.default,  # .item(), bool(), int(), float() below the Python API
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
    aten.bincount.default,  # CUDA reads the maximum to size its output
    aten.repeat_interleave.Tensor,
}
"""Ops that make the host wait on a GPU whatever their arguments."""
INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
"""Ops that wait when an index is a boolean mask (turned into positions by a nonzero)."""

# Host work by design, not reads of device values: the loader (CPU tensors in the dataset and collate,
# anywhere below a DataLoader) and torch's optimizers (their step counters live on the host unless
# ``capturable``; only the optimizer's own calls: the training step itself runs inside optimizer.step).
LOADER = "torch/utils/data/"
OPTIMIZERS = "torch/optim/"
# Kornia draws augmentation parameters on the host (its samplers stay on the CPU: our pipelines are never
# moved to the device), and its container reads the size a crop makes from them (batch_prob, output_size):
# host values, not device values
KORNIA_HOST_PARAMETERS = "_get_new_batch_shape"
INTERNALS = ("/torch/", "tests/task/test_hot_path.py")


class HostReads:
    """Host reads per training batch, from the batch's arrival on the device (augmentation included) to the
    next batch's: the step, the backward, the callbacks, the progress bar and Lightning's logger."""

    def __init__(self) -> None:
        self.batch = -1
        self.where: dict[int, list[str]] = {}
        self.exempt = 0  # inside a call whose host read happens on the CPU only

    def record(self, name: str) -> None:
        if self.exempt:
            return
        stack = list(_frames(sys._getframe(1)))
        files = [frame.f_code.co_filename.replace("\\", "/") for frame in stack]
        inner = [file for file in files if any(part in file for part in INTERNALS)]
        first_outside = next((i for i, file in enumerate(files) if file not in inner), len(files))
        if any(OPTIMIZERS in file for file in files[:first_outside]) or any(LOADER in f for f in files):
            return
        if any(frame.f_code.co_name == KORNIA_HOST_PARAMETERS for frame in stack[: first_outside + 1]):
            return
        caller = stack[first_outside] if first_outside < len(stack) else stack[-1]
        self.where.setdefault(self.batch, []).append(
            f"{name} at {caller.f_code.co_filename}:{caller.f_lineno} ({caller.f_code.co_name})"
        )


def _frames(frame: Any) -> Iterator[Any]:
    while frame is not None:
        yield frame
        frame = frame.f_back


class DataDependentOps(TorchDispatchMode):
    """Records the ops that wait for the device on a GPU (see :data:`DATA_DEPENDENT`)."""

    def __init__(self, reads: HostReads) -> None:
        super().__init__()
        self.reads = reads

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func in DATA_DEPENDENT:
            self.reads.record(str(func))
        elif func in INDEXING:
            indices = args[1] if len(args) > 1 else ()
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ()):
                self.reads.record(f"{func} with a boolean mask")
        return func(*args, **kwargs)


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostReads]:
    reads = HostReads()
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def patched(self: torch.Tensor, *args: Any, _original=original, _name=name, **kwargs: Any) -> Any:
            reads.record(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, patched)
    # F.one_hot checks its input's range with .item() on the CPU only; on CUDA it relies on device asserts
    one_hot = torch.nn.functional.one_hot

    def exempt_one_hot(*args: Any, **kwargs: Any) -> torch.Tensor:
        reads.exempt += 1
        try:
            return one_hot(*args, **kwargs)
        finally:
            reads.exempt -= 1

    monkeypatch.setattr(torch.nn.functional, "one_hot", exempt_one_hot)
    from lightning_seg.data.base import SegDataModule

    transfer = SegDataModule.on_after_batch_transfer

    def counted_transfer(self: SegDataModule, batch: dict[str, Any], dataloader_idx: int) -> Any:
        if self.trainer is not None and self.trainer.training:
            reads.batch += 1  # a training batch has reached the device
        return transfer(self, batch, dataloader_idx)

    monkeypatch.setattr(SegDataModule, "on_after_batch_transfer", counted_transfer)
    with DataDependentOps(reads):
        yield reads


SETUPS = {
    "default": [],
    # an image-level head with its label loss and label metrics, class weights from the statistics, and
    # every pixel term that takes ignore_index and class weights
    "label head, multi-label, class weights": [
        "--model.init_args.net=lightning_seg.models.MicroUNet",
        "--model.init_args.net.base_width=8",
        "--model.init_args.label_mode=multi",
        "--model.init_args.loss.init_args.class_weights=median_frequency",
        "--model.init_args.loss.init_args.label_class_weights=inverse_frequency",
        "--model.init_args.loss.init_args.weights={ce: 1.0, dice: 1.0, jaccard: 1.0, tversky: 1.0}",
    ],
    # the natural-image pipeline of photographs (CamVid, VOC, folders): crop, flips, rotation, jitter
    "folder data, default crop pipeline": ["FOLDER"],
    "label head, single-label": [
        "--model.init_args.net=lightning_seg.models.MicroUNet",
        "--model.init_args.net.base_width=8",
        "--model.init_args.label_mode=single",
        "--model.init_args.loss.init_args.weights={ce: 1.0, focal: 1.0, lovasz: 1.0}",
    ],
}


@pytest.mark.parametrize("setup", SETUPS)
def test_training_steps_read_nothing_back_between_logging_steps(
    run_root: Path, tmp_path: Path, host_reads: HostReads, setup: str
) -> None:
    batches = 8
    if SETUPS[setup] == ["FOLDER"]:
        data = folder_tree(tmp_path / "data", count=40, sizes=((24, 32), (30, 30)))
        extra = [
            *folder_args(data),
            "--data.batch_size=4",
            "--data.val_fraction=0.1",
            "--data.test_fraction=0.1",
        ]
    else:
        extra = [f"--data.init_args.num_train={4 * batches}", "--data.init_args.num_val=4", *SETUPS[setup]]
    run_cli(
        [
            "fit",
            *tiny_args(run_root, *extra),
            "--trainer.log_every_n_steps=50",
            "--trainer.enable_progress_bar=true",
            f"--trainer.limit_train_batches={batches}",
        ]
    )
    assert host_reads.batch == batches - 1
    # batch 0 builds things once (loss terms, counters); the last batch's window holds the epoch's end,
    # and that window is not empty: the detector sees the epoch's metrics read back
    assert host_reads.where.get(batches - 1)
    steady = range(1, batches - 1)
    reads = {b: host_reads.where[b] for b in steady if b in host_reads.where}
    assert not reads, "host reads inside training steps:\n" + "\n".join(
        f"batch {b}: {line}" for b, lines in reads.items() for line in sorted(set(lines))
    )


def test_masks_travel_in_the_narrowest_dtype_and_arrive_as_int64() -> None:
    from lightning_seg.data.base import collate_samples, mask_wire_dtype
    from lightning_seg.data.synthetic import SyntheticDataModule

    assert mask_wire_dtype(5, 255) == torch.uint8  # 1 byte a pixel instead of int64's 8
    assert mask_wire_dtype(21, -100) == torch.int16
    assert mask_wire_dtype(300, 1000) == torch.int16
    assert mask_wire_dtype(300, 70000) == torch.int32
    data = SyntheticDataModule(num_train=8, num_val=4, size=32, batch_size=4, train_augmentations=[])
    data.setup("fit")
    batch = next(iter(data.val_dataloader()))
    assert batch["mask"].dtype == torch.uint8
    wide = [data.datasets["val"][i]["mask"] for i in range(4)]
    prepared = data.prepare_batch({**batch, "mask": batch["mask"].clone()}, train=False)
    assert prepared["mask"].dtype == torch.int64
    assert torch.equal(prepared["mask"], torch.stack(wide))
    # a value the wire dtype cannot hold is refused, never wrapped
    sample = {"image": torch.zeros(3, 2, 2, dtype=torch.uint8), "mask": torch.full((2, 2), 300), "name": "x7"}
    with pytest.raises(ValueError, match="x7: mask value 300 is outside torch.uint8"):
        collate_samples([sample], mask_dtype=torch.uint8)


class WeightsAtFitStart(L.Callback):
    """Records the loss's weights as training starts."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = pl_module.loss
        self.pending = (loss.weights_pending, loss.label_weights_pending)
        self.weights = (loss.weight_tensor, loss.label_weight_tensor)


@pytest.mark.parametrize("rank", [0, 1])
def test_weight_rules_are_resolved_on_rank_zero_and_broadcast_before_training(
    monkeypatch: pytest.MonkeyPatch, rank: int
) -> None:
    from lightning.pytorch.strategies import SingleDeviceStrategy

    import lightning_seg.labels.weights as labels  # where label_weight_source looks label_counts up
    from lightning_seg import SegmentationModule
    from lightning_seg.data.synthetic import SyntheticDataModule
    from lightning_seg.losses import CompoundLoss
    from lightning_seg.models import MicroUNet

    passes: list[str] = []  # the loss's reads of the pixel and label statistics
    for owner, name in ((SyntheticDataModule, "class_weights"), (labels, "label_counts")):
        original = getattr(owner, name)

        def counted(*args: Any, _original=original, _name=name, **kwargs: Any) -> Any:
            passes.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
    # rank 1 receives rank 0's weights; rank 0 sends its own
    from_rank_zero = [torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])]
    sent: list[Any] = []

    def broadcast(self: Any, obj: Any, src: int = 0) -> Any:
        if obj is not None and not isinstance(obj, tuple):
            return obj  # Lightning's and the data's own broadcasts (a folder, a seed)
        sent.append(obj)  # (weights, error message) from rank 0, None from the others
        return obj if rank == 0 else (from_rank_zero[len(sent) - 1], None)

    monkeypatch.setattr(SingleDeviceStrategy, "broadcast", broadcast)
    monkeypatch.setattr(L.Trainer, "is_global_zero", property(lambda self: rank == 0))
    data = SyntheticDataModule(num_train=8, num_val=4, size=32, batch_size=4)
    model = SegmentationModule(
        net=functools.partial(MicroUNet, base_width=8),
        num_classes=data.num_classes,
        class_names=data.class_names,
        label_mode="multi",
        loss=CompoundLoss(class_weights="median_frequency", label_class_weights="inverse_frequency"),
    )
    seen = WeightsAtFitStart()
    trainer = L.Trainer(
        max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False, callbacks=[seen],
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, data)
    assert seen.pending == (False, False)  # resolved in setup, not inside the first step
    assert len(sent) == 2
    if rank == 0:
        assert passes == [
            "class_weights",
            "label_counts",
        ]  # rank 0 read the statistics and sent the weights it found
        assert torch.equal(sent[0][0], seen.weights[0]) and torch.equal(sent[1][0], seen.weights[1])
    else:
        assert not passes and sent == [None, None]  # no pass over the data; rank 0's weights used
        assert torch.equal(seen.weights[0], from_rank_zero[0]) and torch.equal(
            seen.weights[1], from_rank_zero[1]
        )


@pytest.mark.parametrize("rank", [0, 1])
def test_a_weight_rule_that_fails_on_rank_zero_stops_every_rank(
    run_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, rank: int
) -> None:
    """Rank 0 sends its error with the weights, so the other ranks raise it too instead of waiting in the
    broadcast (under NCCL until the process group's timeout)."""
    from lightning.pytorch.strategies import SingleDeviceStrategy

    message = (
        "loss.label_class_weights='inverse_frequency' needs data labels or model.label_mode multi "
        "(dominant-class labels are not counted)"
    )

    def broadcast(self: Any, obj: Any, src: int = 0) -> Any:
        if obj is not None and not isinstance(obj, tuple):
            return obj
        return obj if rank == 0 else (None, message)

    monkeypatch.setattr(SingleDeviceStrategy, "broadcast", broadcast)
    monkeypatch.setattr(L.Trainer, "is_global_zero", property(lambda self: rank == 0))
    args = [
        *tiny_args(run_root),
        "--model.init_args.net=lightning_seg.models.MicroUNet",
        "--model.init_args.net.base_width=8",
        "--model.init_args.label_mode=single",  # dominant-class labels are not counted: the rule fails
        "--model.init_args.loss.init_args.label_class_weights=inverse_frequency",
    ]
    assert main(["fit", *args]) == 2
    assert assert_one_line_error(capsys) == f"lightning-seg: error: {message}"


def test_class_argmax_is_argmax_with_its_ties() -> None:
    from lightning_seg.utils.class_argmax import class_argmax

    scores = torch.randint(0, 3, (4, 6, 9, 11)).float()  # many ties: the first maximum wins in both
    assert torch.equal(class_argmax(scores, 1), scores.argmax(1))
    assert torch.equal(class_argmax(scores[0], 0), scores[0].argmax(0))
    assert torch.equal(class_argmax(scores, -3, keepdim=True), scores.argmax(-3, keepdim=True))
