"""Calibration: the reliability bins and ECE against a direct computation, a fitted temperature lowers the
NLL on held-out pixels of an over-confident net, and tune → test carry the temperature through the one path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TinyRun, tiny_args

from lightning_seg.cli import run_cli
from lightning_seg.errors import ConfigError
from lightning_seg.metrics.calibration import CalibrationBins, fit_temperature
from lightning_seg.postprocess import ClassThresholds, DenseCRF, PostProcess, Prediction, TemperatureScaling


def _overconfident(
    generator: torch.Generator, pixels: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(z) (calibrated), and logits scale·z (over-confident): N×3, (N,)."""
    z = torch.randn(pixels, 3, generator=generator) * 1.5
    target = torch.multinomial(z.softmax(1), 1, generator=generator)[:, 0]
    return (scale * z).log_softmax(1), target


def test_a_fitted_temperature_lowers_the_nll_of_held_out_pixels() -> None:
    generator = torch.Generator().manual_seed(0)
    fit_logp, fit_target = _overconfident(generator, 20_000, 4.0)
    held_logp, held_target = _overconfident(generator, 20_000, 4.0)
    temperature = fit_temperature(fit_logp, fit_target)
    assert temperature.item() == pytest.approx(4.0, rel=0.1)  # undoes the over-confidence
    before = torch.nn.functional.cross_entropy(held_logp, held_target)
    after = torch.nn.functional.cross_entropy(held_logp / temperature, held_target)
    assert after < before - 0.1
    # the step applies the same map to probabilities, and keeps every argmax
    step = TemperatureScaling(temperature=float(temperature))
    prediction = Prediction(probabilities=held_logp[:100].exp().T.reshape(3, 10, 10).clone())
    argmax = prediction.probabilities.argmax(0)
    step.apply([prediction])
    expected = (held_logp[:100] / temperature).softmax(1).T.reshape(3, 10, 10)
    # equal but where a probability under 1e-12 was clamped before its logarithm
    torch.testing.assert_close(prediction.probabilities, expected, atol=1e-3, rtol=0)
    assert torch.equal(prediction.probabilities.argmax(0), argmax)


def test_reliability_bins_and_ece_match_a_direct_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(1)
    probabilities = torch.rand(3, 8, 8, generator=generator).softmax(0)
    target = torch.randint(0, 3, (8, 8), generator=generator)
    valid = torch.rand(8, 8, generator=generator) > 0.2
    bins = CalibrationBins(3)
    bins.update(probabilities, target, valid)
    scores = bins.compute()
    p = probabilities.flatten(1).T.numpy()[valid.flatten().numpy()]
    y = target.flatten().numpy()[valid.flatten().numpy()]
    confidence, predicted = p.max(1), p.argmax(1)
    index = np.minimum((confidence * 15).astype(int), 14)
    ece = sum(
        abs((confidence[index == b]).sum() - (predicted == y)[index == b].sum()) for b in range(15)
    ) / len(y)
    assert float(scores["ECE"]) == pytest.approx(ece, abs=1e-6)
    nll = -np.log(p[np.arange(len(y)), y]).mean()
    assert float(scores["NLL"]) == pytest.approx(nll, rel=1e-5)
    # binned a class at a time (a large image's memory bound): the same sums
    monkeypatch.setattr("lightning_seg.metrics.calibration.CHUNK", 64)
    chunked = CalibrationBins(3)
    chunked.update(probabilities, target, valid)
    torch.testing.assert_close(chunked.classwise, bins.classwise)
    torch.testing.assert_close(chunked.top, bins.top)


def test_temperature_comes_first() -> None:
    with pytest.raises(ConfigError, match="TemperatureScaling comes first"):
        PostProcess([DenseCRF(), TemperatureScaling(), ClassThresholds()])
    with pytest.raises(ConfigError, match="finite and > 0"):
        TemperatureScaling(temperature=0.0)


def test_tune_fits_the_temperature_and_test_reads_it(run_root: Path, tiny_run: TinyRun) -> None:
    chain = (
        "[{class_path: lightning_seg.postprocess.TemperatureScaling}, "
        "{class_path: lightning_seg.postprocess.ClassThresholds}]"
    )
    args = [*tiny_args(run_root), "--ckpt_path", str(tiny_run.last), "--model.init_args.postprocess", chain]
    assert run_cli(["tune", *args]) is not None
    record = json.loads(tiny_run.last.with_name("last.thresholds.json").read_text())
    entry = record["temperature"]
    assert entry["values"][0] > 0 and entry["nll_after"] <= entry["nll_before"] and entry["pixels"] > 0
    assert record["tuned_after"] == ["temperature"]
    tested = run_cli(["test", *args])
    step = tested.model.postprocess.find(TemperatureScaling)
    assert step.values.tolist() == pytest.approx(entry["values"])
    metrics = tested.trainer.callback_metrics
    assert {"test/ECE", "test/ECE_classwise", "test/NLL"} <= set(metrics)
    assert tested.model.results.get("test").reliability.shape == (15, 3)


def test_a_one_channel_threshold_is_not_silently_moved_by_a_temperature() -> None:
    import functools

    from lightning_seg.models import UNet
    from lightning_seg.task.module import SegmentationModule

    net = functools.partial(UNet, base_width=4, depth=2)
    with pytest.raises(ConfigError, match="binary_threshold 0.3: the threshold was chosen on uncalibrated"):
        SegmentationModule(net, 2, binary_head=True, binary_threshold=0.3, postprocess=[TemperatureScaling()])
    # with thresholds tuned after it, or at 0.5 (p > 0.5 ⇔ z > 0 whatever T), it is accepted
    SegmentationModule(
        net, 2, binary_head=True, binary_threshold=0.3, postprocess=[TemperatureScaling(), ClassThresholds()]
    )
    SegmentationModule(net, 2, binary_head=True, postprocess=[TemperatureScaling()])
