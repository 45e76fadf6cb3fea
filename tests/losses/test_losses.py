"""CompoundLoss against direct computations; ignore_index honoured by every term; float32 under fp16."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lightning_seg.errors import ConfigError
from lightning_seg.losses import PIXEL_TERMS, CompoundLoss
from lightning_seg.models.outputs import NetOutput

IGNORE = 255


def _data(num_classes: int = 4, channels: int | None = None, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, channels or num_classes, 8, 8, generator=generator, requires_grad=True)
    mask = torch.randint(0, num_classes, (2, 8, 8), generator=generator)
    mask[:, :2] = IGNORE
    return logits, mask


def _loss(weights, num_classes=4, **kwargs) -> CompoundLoss:
    return CompoundLoss(weights=weights, **kwargs).for_task(num_classes, IGNORE)


def test_ce_term_equals_torch_cross_entropy_with_ignore() -> None:
    logits, mask = _data()
    parts = _loss({"ce": 1.0}, label_smoothing=0.1)(NetOutput(logits), mask)
    expected = F.cross_entropy(logits, mask, ignore_index=IGNORE, label_smoothing=0.1)
    assert parts["ce"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_dice_term_equals_a_direct_soft_dice() -> None:
    logits, mask = _data()
    parts = _loss({"dice": 1.0})(NetOutput(logits), mask)
    prob = logits.softmax(1)
    valid = (mask != IGNORE).unsqueeze(1)
    onehot = F.one_hot(torch.where(valid[:, 0], mask, 0), 4).permute(0, 3, 1, 2) * valid
    prob = prob * valid
    inter = (prob * onehot).sum((0, 2, 3))
    card = (prob + onehot).sum((0, 2, 3))
    dice = 2 * inter / card.clamp_min(1e-7)
    present = onehot.sum((0, 2, 3)) > 0
    expected = ((1 - dice) * present).mean()
    assert parts["dice"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_weighted_sum_and_class_weights() -> None:
    logits, mask = _data()
    weights = [0.5, 1.0, 2.0, 1.5]
    parts = _loss({"ce": 2.0, "dice": 0.5}, class_weights=weights)(NetOutput(logits), mask)
    assert parts["loss"].item() == pytest.approx(
        2.0 * parts["ce"].item() + 0.5 * parts["dice"].item(), rel=1e-6
    )
    expected = F.cross_entropy(logits, mask, weight=torch.tensor(weights), ignore_index=IGNORE)
    assert parts["ce"].item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("term", [t for t in PIXEL_TERMS if t != "bce"])
def test_every_multiclass_term_ignores_ignored_pixels(term: str) -> None:
    logits, mask = _data()
    loss = _loss({term: 1.0})
    before = loss(NetOutput(logits), mask)["loss"]
    changed = logits.detach().clone()
    changed[:, :, :2] = torch.randn_like(changed[:, :, :2]) * 10  # only ignored rows change
    after = loss(NetOutput(changed), mask)["loss"]
    assert torch.isfinite(before)
    assert after.item() == pytest.approx(before.item(), rel=1e-5, abs=1e-6)
    before.backward()
    assert logits.grad[:, :, :2].abs().max() == 0


@pytest.mark.parametrize("term", PIXEL_TERMS)
def test_every_term_works_on_a_binary_head_and_ignores(term: str) -> None:
    logits, mask = _data(num_classes=2, channels=1)
    loss = _loss({term: 1.0}, num_classes=2)
    before = loss(NetOutput(logits), mask)["loss"]
    changed = logits.detach().clone()
    changed[:, :, :2] = 25.0
    after = loss(NetOutput(changed), mask)["loss"]
    assert after.item() == pytest.approx(before.item(), rel=1e-5, abs=1e-6)
    if term in ("ce", "bce"):
        valid = mask != IGNORE
        expected = F.binary_cross_entropy_with_logits(logits[:, 0][valid], mask[valid].float())
        assert before.item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_is_float32_for_half_logits() -> None:
    logits, mask = _data()
    parts = _loss({"ce": 1.0, "dice": 1.0})(NetOutput(logits.detach().half()), mask)
    assert all(v.dtype == torch.float32 for v in parts.values())


def test_loss_is_float32_inside_autocast() -> None:
    _, mask = _data()
    conv = torch.nn.Conv2d(3, 4, 1)
    loss = _loss({"ce": 1.0, "dice": 1.0, "focal": 1.0})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(torch.randn(2, 3, 8, 8))
        assert logits.dtype == torch.bfloat16
        parts = loss(NetOutput(logits), mask)
    assert all(v.dtype == torch.float32 for v in parts.values())
    reference = loss(NetOutput(logits.float()), mask)
    assert parts["loss"].item() == pytest.approx(reference["loss"].item(), rel=1e-6)


def test_aux_and_label_terms() -> None:
    logits, mask = _data()
    aux = logits.detach() * 0.5
    label_logits = torch.randn(2, 4)
    label = torch.tensor([1, 3])
    loss = _loss({"ce": 1.0}, aux_weight=0.4, label_weight=0.5)
    parts = loss(NetOutput(logits, aux=aux, label=label_logits), mask, label)
    expected_aux = F.cross_entropy(aux, mask, ignore_index=IGNORE)
    expected_label = F.cross_entropy(label_logits, label)
    assert parts["aux"].item() == pytest.approx(expected_aux.item(), rel=1e-6)
    assert parts["label"].item() == pytest.approx(expected_label.item(), rel=1e-6)
    total = parts["ce"] + 0.4 * parts["aux"] + 0.5 * parts["label"]
    assert parts["loss"].item() == pytest.approx(total.item(), rel=1e-6)


def test_configuration_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="unknown term"):
        CompoundLoss(weights={"dcie": 1.0})
    with pytest.raises(ConfigError, match="3 values"):
        CompoundLoss(class_weights=[1.0, 2.0, 3.0]).for_task(4, IGNORE)
    logits, mask = _data()
    # no data module: resolved when first used, and then an error
    unresolved = CompoundLoss(class_weights="median_frequency").for_task(4, IGNORE)
    with pytest.raises(ConfigError, match="class statistics"):
        unresolved(NetOutput(logits), mask)
    with pytest.raises(ConfigError, match="one-channel"):
        _loss({"bce": 1.0})(NetOutput(logits), mask)


def test_class_weight_rule_comes_from_the_data_source() -> None:
    calls = []

    def source(rule: str, beta: float) -> list[float]:
        calls.append(rule)
        return [1.0, 2.0, 3.0, 4.0]

    loss = CompoundLoss(class_weights="median_frequency").for_task(4, IGNORE, class_weight_source=source)
    assert calls == []  # resolved lazily: evaluating a checkpoint never needs the statistics
    logits, mask = _data()
    loss(NetOutput(logits), mask)
    loss(NetOutput(logits), mask)
    assert calls == ["median_frequency"]
    assert loss.weight_tensor.tolist() == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("term", PIXEL_TERMS)
def test_a_batch_without_labelled_pixels_is_zero_not_nan(term: str, channels: int) -> None:
    if term == "bce" and channels > 1:
        pytest.skip("bce needs a one-channel head")
    loss = CompoundLoss(weights={term: 1.0}).for_task(max(channels, 2), 255)
    logits = torch.randn(2, channels, 8, 8, requires_grad=True)
    out = loss(NetOutput(mask=logits), torch.full((2, 8, 8), 255))
    out["loss"].backward()
    assert out["loss"].shape == () and float(out["loss"]) == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))  # nothing to learn, and no NaN gradient


def test_an_ignored_only_batch_leaves_the_epoch_loss_a_true_mean(tmp_path) -> None:
    """A batch of wholly ignored masks weighs 0 in the epoch mean of train/loss (and never makes it NaN)."""
    import lightning as L

    from lightning_seg.models import UNet
    from lightning_seg.task.module import SegmentationModule

    class Batches(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int) -> dict:
            mask = torch.full((16, 16), 255) if index == 1 else (torch.arange(256).reshape(16, 16) % 2)
            return {"image": torch.randn(3, 16, 16), "mask": mask}

    module = SegmentationModule(
        lambda num_classes: UNet(num_classes=num_classes, base_width=4, depth=2), num_classes=2
    )
    module.configure_optimizers = lambda: torch.optim.SGD(module.parameters(), lr=0.0)

    class StepLosses(L.Callback):
        losses: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.losses.append(float(outputs["loss"]))

    loader = torch.utils.data.DataLoader(Batches(), batch_size=1)
    trainer = L.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu", callbacks=[StepLosses()],
    )  # fmt: skip
    trainer.fit(module, loader)
    labelled, ignored = StepLosses.losses
    assert ignored == 0.0 and labelled > 0
    epoch_loss = float(trainer.callback_metrics["train/loss"])
    assert epoch_loss == pytest.approx(labelled, rel=1e-6)  # not (labelled + 0) / 2, and not NaN


def test_a_derived_image_label_of_a_wholly_ignored_mask_counts_nowhere() -> None:
    """A class head trained on labels derived from masks: an image without a labelled pixel has no label,
    not "background"."""
    from lightning_seg.labels import NO_LABEL, dominant_class

    masks = torch.tensor([[[0, 2], [2, 1]], [[IGNORE, IGNORE], [IGNORE, IGNORE]], [[0, 0], [IGNORE, 0]]])
    assert dominant_class(masks, 3, IGNORE).tolist() == [2, NO_LABEL, 0]
    loss = _loss({"ce": 1.0}, num_classes=3)
    label_logits = torch.randn(2, 3, requires_grad=True)
    out = loss(NetOutput(mask=torch.randn(2, 3, 2, 2), label=label_logits), masks[1:2].expand(2, -1, -1),
               torch.tensor([NO_LABEL, NO_LABEL]))  # fmt: skip
    out["loss"].backward()
    assert float(out["label"]) == 0.0 and torch.equal(label_logits.grad, torch.zeros_like(label_logits))
