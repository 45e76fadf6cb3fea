"""The inference path of test and predict: resize, sliding window, flip and scale TTA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, tiny_args

from lightning_seg.cli import main, run_cli
from lightning_seg.inference import Inference


def _pointwise_net(classes: int = 4) -> torch.nn.Module:
    """A 1×1 convolution: the same output for a pixel whatever window or flip it is seen in."""
    torch.manual_seed(0)
    return torch.nn.Conv2d(3, classes, 1)


def _image(height: int = 37, width: int = 53) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, height, width)  # not symmetric: a flip that is not undone shows


@torch.no_grad()
def test_flip_tta_maps_each_prediction_back_before_averaging() -> None:
    net, image = _pointwise_net(), _image()
    plain = Inference().probabilities(net, image)
    both = Inference(hflip=True, vflip=True).probabilities(net, image)
    assert torch.allclose(plain, both, atol=1e-6)
    assert torch.allclose(plain.sum(1), torch.ones(2, 37, 53), atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_sliding_windows_reassemble_the_whole_image(blend: str) -> None:
    net, image = _pointwise_net(), _image()
    plain = Inference().probabilities(net, image)
    one_window = Inference(mode="slide", crop=(37, 53)).probabilities(net, image)
    assert torch.allclose(plain, one_window, atol=1e-6)
    # overlapping windows, the last ones past the border (padded): the same probabilities everywhere
    windows = Inference(mode="slide", crop=(16, 16), stride=(10, 12), blend=blend, window_batch_size=3)
    assert torch.allclose(plain, windows.probabilities(net, image), atol=1e-5)


@torch.no_grad()
def test_sliding_windows_see_only_their_window() -> None:
    """A net that looks at its whole input (here: its mean) gives other results window by window."""

    def global_context(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True).expand(-1, -1, *x.shape[-2:])[:, :2] * 10

    image = _image(64, 64)
    plain = Inference().probabilities(global_context, image)
    slid = Inference(mode="slide", crop=(16, 16)).probabilities(global_context, image)
    assert not torch.allclose(plain, slid, atol=1e-3)


@torch.no_grad()
def test_scales_and_one_channel_heads() -> None:
    image = _image()
    multi = Inference(scales=(0.5, 1.0, 1.5)).probabilities(_pointwise_net(), image)
    assert multi.shape == (2, 4, 37, 53) and torch.allclose(multi.sum(1), torch.ones(2, 37, 53), atol=1e-5)
    binary = Inference(hflip=True).probabilities(_pointwise_net(1), image)
    assert binary.shape == (2, 1, 37, 53) and 0 <= float(binary.min()) and float(binary.max()) <= 1
    sized = [Inference().at_size(p, size) for p, size in zip(multi, [(40, 50), (37, 53)], strict=True)]
    assert [tuple(p.shape) for p in sized] == [(4, 40, 50), (4, 37, 53)]
    # a smooth image: the average over scales stays close to the plain prediction (scales mapped back in place)
    smooth = torch.nn.functional.interpolate(
        _image(5, 7), size=(37, 53), mode="bilinear", align_corners=False
    )
    plain = Inference().probabilities(_pointwise_net(), smooth)
    scaled = Inference(scales=(0.5, 1.0, 1.5)).probabilities(_pointwise_net(), smooth)
    assert float((plain - scaled).abs().max()) < 0.05


@torch.no_grad()
def test_sliding_windows_step_by_the_configured_stride() -> None:
    """96-pixel windows every 32 pixels over 160×160: 3 × 3 windows (a stride one pixel short makes 16)."""
    corners = []

    def recording(x: torch.Tensor) -> torch.Tensor:
        corners.append(x.shape[0])
        return torch.zeros(x.shape[0], 2, *x.shape[-2:])

    Inference(mode="slide", crop=(96, 96), stride=(32, 32), window_batch_size=1).probabilities(
        recording, torch.zeros(1, 3, 160, 160)
    )
    assert len(corners) == 9


def test_describe_says_what_ran() -> None:
    assert Inference().describe() == "resize"
    text = Inference(mode="slide", crop=(64, 64), hflip=True, scales=(0.75, 1.0)).describe()
    assert text == "slide 64×64/32×32 gaussian + hflip + scales 0.75,1"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model.init_args.inference.init_args.mode=slide"], "mode slide needs a window size"),
        (
            [
                "--model.init_args.inference.init_args.crop=[8,8]",
                "--model.init_args.inference.init_args.stride=[9,4]",
            ],
            "stride must be in (0, crop]",
        ),
        (["--model.init_args.inference.init_args.scales=[0]"], "scales must be positive"),
        (["--model.init_args.inference.init_args.stride=[4,4]"], "stride needs a crop"),
    ],
)
def test_bad_inference_settings_are_one_line(run_root: Path, args: list[str], needle: str, capsys) -> None:
    chosen = ["--model.init_args.inference=lightning_seg.inference.Inference", *args]
    assert main(["test", *tiny_args(run_root, *chosen), "--allow_untrained=true"]) == 2
    assert_one_line_error(capsys, needle)


def test_test_scores_what_predict_writes_with_sliding_window_and_tta(tmp_path: Path) -> None:
    """Sliding windows + flip TTA on folder data (predict reads the test split): test's mIoU equals predict's
    index PNGs scored against the masks as stored, and differs from the plain inference's."""
    from data_trees import folder_args, folder_tree, miou_of_index_pngs

    data = folder_tree(tmp_path / "data", count=12, sizes=((32, 48), (40, 40), (27, 33)))
    runs = tmp_path / "runs"
    common = folder_args(data)
    fit = run_cli(["fit", *tiny_args(runs, *common, epochs=2)])
    best = fit.trainer.checkpoint_callback.best_model_path
    inference = [
        "--model.init_args.inference=lightning_seg.inference.Inference",
        "--model.init_args.inference.init_args.mode=slide",
        "--model.init_args.inference.init_args.crop=[16,16]",
        "--model.init_args.inference.init_args.stride=[8,8]",
        "--model.init_args.inference.init_args.hflip=true",
    ]
    tested = run_cli(["test", *tiny_args(runs, *common, *inference), "--ckpt_path", best])
    assert tested is not None
    mIoU = float(tested.trainer.callback_metrics["test/mIoU"])
    plain = run_cli(["test", *tiny_args(runs, *common), "--ckpt_path", best])
    assert float(plain.trainer.callback_metrics["test/mIoU"]) != mIoU  # the inference setting did change it
    predicted = run_cli(["predict", *tiny_args(runs, *common, *inference), "--ckpt_path", best])
    assert predicted.model.inference.describe() == tested.model.inference.describe()
    expected, count = miou_of_index_pngs(Path(predicted.trainer.log_dir) / "predictions", data / "masks")
    assert count == len(tested.datamodule.datasets["test"]) == 4
    assert expected == pytest.approx(mIoU, abs=1e-6)


def test_test_scores_at_the_original_size_what_predict_writes(tmp_path: Path) -> None:
    """Non-square images of three sizes, trained and batched at 24×24: test's mIoU is computed against the
    masks as stored, and equals the mIoU of predict's index PNGs against those masks."""
    from data_trees import folder_args, folder_tree, miou_of_index_pngs

    data = folder_tree(tmp_path / "data", count=12, sizes=((32, 48), (40, 40), (27, 33)))
    runs = tmp_path / "runs"
    common = folder_args(data)
    fit = run_cli(["fit", *tiny_args(runs, *common)])
    best = fit.trainer.checkpoint_callback.best_model_path
    tested = run_cli(["test", *tiny_args(runs, *common), "--ckpt_path", best])
    summary = json.loads((Path(tested.trainer.log_dir) / "summary.json").read_text())
    assert summary["scored_at"] == "original size"
    predicted = run_cli(["predict", *tiny_args(runs, *common), "--ckpt_path", best])
    expected, count = miou_of_index_pngs(Path(predicted.trainer.log_dir) / "predictions", data / "masks")
    assert count == 4
    assert summary["metrics"]["test/mIoU"] == pytest.approx(expected, abs=1e-6)
    # test cannot be scored at the batch size any more: predict writes at the original size
    assert (
        main(["test", *tiny_args(runs, *common, "--data.score_at_original_size=[]"), "--ckpt_path", best])
        == 2
    )


def test_skipped_bad_samples_keep_scoring_at_the_original_size(tmp_path: Path) -> None:
    from data_trees import folder_tree, miou_of_index_pngs

    data = folder_tree(tmp_path / "data", count=12, sizes=((32, 48), (40, 40)))
    (data / "masks" / "s3.png").write_bytes(b"not a png")  # one bad sample, skipped by on_bad_sample
    args = [
        "--data", "lightning_seg.data.FolderDataModule",
        "--data.root", str(data),
        "--data.class_names", "[a,b,c]",
        "--data.size", "[24,24]",
        "--data.test_fraction", "0.34",
        "--data.max_ignored_fraction", "1.0",
        "--data.on_bad_sample", "skip",
    ]  # fmt: skip
    tested = run_cli(["test", *tiny_args(tmp_path / "runs", *args), "--allow_untrained=true"])
    assert tested is not None and tested.model.results.get("test").scored_at == "original size"
    scored = [sample.name for sample in tested.datamodule.datasets["test"].samples]
    assert "s3" not in scored and len(scored) >= 2
    # predict (the same untrained weights: seed 42) writes what test scored, the bad sample left out
    predicted = run_cli(["predict", *tiny_args(tmp_path / "runs", *args), "--allow_untrained=true"])
    out = Path(predicted.trainer.log_dir) / "predictions"
    expected, count = miou_of_index_pngs(out, data / "masks", names=scored)
    assert count == len(scored)
    assert float(tested.trainer.callback_metrics["test/mIoU"]) == pytest.approx(expected, abs=1e-6)


def test_a_window_larger_than_the_image_without_padding_is_one_line() -> None:
    from lightning_seg.errors import ConfigError

    inference = Inference(mode="slide", crop=(64, 64), pad=False)
    with pytest.raises(
        ConfigError, match=r"crop \[64, 64\] is larger than the image \(37×53\) and pad is false"
    ):
        inference.probabilities(_pointwise_net(), _image())
    # padded (the default), the same window works
    assert Inference(mode="slide", crop=(64, 64)).probabilities(_pointwise_net(), _image()).shape == (
        2,
        4,
        37,
        53,
    )


@torch.no_grad()
def test_flip_tta_reuses_the_plain_pass_when_given() -> None:
    net, image = _pointwise_net(), _image()
    seen = []

    def counting(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return net(x)

    inference = Inference(hflip=True, vflip=True)
    expected = inference.probabilities(net, image)
    reused = inference.probabilities(counting, image, plain_logits=net(image))
    assert seen == [4]  # the two flipped copies of both images, not the un-flipped ones again
    assert torch.allclose(expected, reused, atol=1e-6)
