"""The GPU suite's CPU side (benchmarks/gpu_suite.sh, issue 15): what can be checked without a GPU.

The measurements run on the CPU path on a tiny config (the CUDA-only parts, the sync debug mode and the
CUDA-event clock, are exercised through the pieces they are made of); the table is read back from records
shaped like the suite's; the CamVid frames are linked into a full-size tree from a generated one.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from data_trees import camvid_tree
from helpers import DEFAULT_CONFIG

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import camvid_frames  # noqa: E402
import gpu_metrics  # noqa: E402
import gpu_table  # noqa: E402
import throughput  # noqa: E402

TINY = [
    "--config",
    DEFAULT_CONFIG,
    "--trainer.accelerator=cpu",
    "--model.init_args.net.init_args.base_width=4",
    "--model.init_args.net.init_args.depth=2",
    "--data.init_args.size=32",
    "--data.init_args.batch_size=4",
    "--data.init_args.num_train=16",
    "--data.init_args.num_val=4",
]


def test_pipeline_and_bare_loop_are_timed_over_the_same_steps_across_epochs():
    # 16 images of batch 4: 4 steps per epoch; steps 2..5 are timed, one epoch boundary lies between
    pipeline = throughput.measure_pipeline(TINY, steps=6, warmup=2)
    timer = pipeline.timer
    assert (timer.timed_batches, timer.images, timer.shape) == (4, 16, (4, 3, 32, 32))
    assert len(timer.between_epochs_s) == 1 and timer.seconds > 0
    device = pipeline.trainer.strategy.root_device
    bare = throughput.measure_bare(pipeline.cli, pipeline.net, timer.shape, device, "32-true", 6, 2)
    assert math.isfinite(pipeline.images_per_s) and bare > 0
    flops = gpu_metrics.utilisation(pipeline.net, timer.shape, device, pipeline.images_per_s, bare)
    assert flops["train_flops_per_image"] > 0
    assert flops["mfu"] == "n/a" and flops["matmul_bf16_flops_measured"] == "n/a"  # no GPU peak on a CPU


def test_data_share_reads_the_data_phases_of_the_timed_steps():
    result = gpu_metrics.data_share(TINY, steps=6, warmup=2)
    assert result["basis"].startswith("host time")
    assert result["augment_ms"] > 0 and result["load_ms"] > 0
    assert 0 < result["data_share"] < 1
    assert result["step_ms"] == pytest.approx(1000 * result["pipeline"].timer.seconds / 4, rel=1e-3)


def test_phases_are_lightnings_actions():
    phase = gpu_metrics.PhaseClock._phase
    assert phase("[_TrainingEpochLoop].train_dataloader_next") == "load"
    assert phase("[Strategy]SingleDeviceStrategy.batch_to_device") == "to_device"
    assert phase("[LightningDataModule]CamVidDataModule.on_after_batch_transfer") == "augment"
    assert phase("[LightningModule]SegmentationModule.transfer_batch_to_device") is None


def _sync_here(times: int) -> None:
    for _ in range(times):
        warnings.warn(gpu_metrics.SYNC_MESSAGE, UserWarning, stacklevel=1)


def test_sync_warnings_are_counted_per_step_with_where_they_come_from(recwarn):
    counter = gpu_metrics.SyncCounter(warmup=1)
    trainer = SimpleNamespace(num_training_batches=3)

    def step(batch_idx: int, syncs: int) -> None:
        counter.on_train_batch_start(trainer, None, None, batch_idx)
        _sync_here(syncs)
        counter.on_train_batch_end(trainer, None, None, None, batch_idx)

    with gpu_metrics.captured_sync_warnings(counter):
        step(0, 5)  # warm-up: not counted
        step(1, 2)
        step(2, 1)  # the epoch's last batch: its window crosses the epoch's end
        step(0, 0)
        step(1, 3)  # the window the fit ends in is never closed
        counter.on_train_batch_start(trainer, None, None, 2)
        warnings.warn("an unrelated warning", UserWarning, stacklevel=1)
    assert counter.per_step == [2, 0, 3] and counter.epoch_end == [1]
    [(site, count)] = counter.sites.items()
    assert count == 6 and "test_gpu_suite.py" in site and "(_sync_here)" in site
    shown = [str(w.message) for w in recwarn]
    assert "an unrelated warning" in shown and gpu_metrics.SYNC_MESSAGE not in shown  # others still shown


def test_peak_table_knows_the_lent_gpus():
    peak = gpu_metrics.peak_bf16_flops
    assert peak("NVIDIA H100 80GB HBM3") == 989e12
    assert peak("NVIDIA H100 PCIe") == 756e12
    assert peak("NVIDIA H200") == 989e12
    assert peak("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak("NVIDIA L4") is None


def _write(folder: Path, name: str, record: dict) -> None:
    (folder / f"{name}.json").write_text(json.dumps(record))


def test_table_has_one_row_per_measurement_with_failures_and_gaps_said(tmp_path):
    where = {"device": "cuda: NVIDIA H100 80GB HBM3", "device_type": "cuda", "date": "2026-12-01"}
    _write(
        tmp_path,
        "throughput_smp",
        {
            **where,
            "command": "python benchmarks/throughput.py --flops",
            "batch_shape": [32, 3, 512, 512],
            "precision": "bf16-mixed",
            "pipeline_images_per_s": 980.0,
            "bare_images_per_s": 1000.0,
            "efficiency": 0.98,
            "train_flops_per_image": 1.9e11,
            "peak_bf16_flops": 989e12,
            "mfu": 0.188,
            "mfu_bare": 0.192,
            "matmul_bf16_flops_measured": 7.9e14,
            "mfu_of_measured_matmul": 0.236,
        },
    )
    _write(tmp_path, "syncs", {**where, "error": "stopped after 60 s", "command": "python x"})
    _write(
        tmp_path,
        "variants",
        {
            **where,
            "variants": {"bf16-mixed": {"images_per_s": 900.0}, "32-true + TF32": {"images_per_s": 450.0}},
        },
    )
    _write(tmp_path, "torchgeo", {"date": "2026-12-01", "torchgeo": "torchgeo not installed: ..."})
    out = tmp_path / "table.md"
    text = gpu_table.write_table(tmp_path, out, tmp_path / "merged.json", "title")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "**0.980**" in rows["pipeline / bare loop, SMP U-Net/ResNet34"]
    assert "| yes |" in rows["pipeline / bare loop, SMP U-Net/ResNet34"]
    mfu = rows["MFU, SMP U-Net/ResNet34 (training FLOPs = 3 × forward)"]
    assert "**18.8%**" in mfu and "989 TFLOP/s" in mfu and "| no |" in mfu  # below the 25% target
    assert "| not run |" in rows["pipeline / bare loop, configs/camvid/unet.yaml"]
    assert "failed: stopped after 60 s" in rows["host-device syncs per training step"]
    assert "**2.00×** (900 vs 450 img/s)" in rows["bf16-mixed vs 32-true (TF32 on)"]
    assert "not measured" in rows["torch.compile on vs off (bf16-mixed)"]
    assert "torchgeo not installed" in rows["ours vs TorchGeo 0.8 SemanticSegmentationTask (CamVid)"]
    assert out.read_text() == text and set(json.loads((tmp_path / "merged.json").read_text())) == {
        "throughput_smp",
        "syncs",
        "variants",
        "torchgeo",
    }


def test_camvid_frames_are_linked_into_a_tree_of_the_asked_size(tmp_path):
    source = camvid_tree(tmp_path / "camvid", {"train": 3, "val": 1, "test": 1})
    copied = tmp_path / "carried"
    assert camvid_frames.subset(source, copied, {"train": 2, "val": 1, "test": 1}) > 0
    linked = camvid_frames.expand(copied, tmp_path / "linked", {"train": 7, "val": 2, "test": 1})
    images = sorted((tmp_path / "linked" / "train").iterdir())
    annots = sorted((tmp_path / "linked" / "trainannot").iterdir())
    assert len(images) >= 7 and [p.name for p in images] == [p.name for p in annots]
    assert all(p.is_symlink() and p.resolve().parent == copied / "train" for p in images)
    assert linked["train"] <= 3 and len(list((tmp_path / "linked" / "val").iterdir())) == 2
