"""``attack``: adversarial robustness scored through test's path; the attacks' radius, range and objectives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, tiny_args
from torch import nn
from torchvision.io import decode_png, encode_png, read_file, write_png

from lightning_seg.callbacks.base import command_pass
from lightning_seg.cli import main, run_cli
from lightning_seg.commands.attack import (
    LabelObjective,
    MaskObjective,
    adversarial_originals,
    format_epsilon,
    log_probabilities,
    parse_epsilon,
    perturb,
)
from lightning_seg.errors import ConfigError
from lightning_seg.models.outputs import NetOutput
from lightning_seg.task.results import StageResults

# a two-level U-Net of width 16 trained for 96 steps on 48 px shapes (about 10 s on two idle CPU cores): test
# mIoU about 0.46, enough for attacks to have something to take
TRAINED = (
    "--model.init_args.net.init_args.base_width=16",
    "--data.init_args.size=48",
    "--data.init_args.num_train=256",
    "--data.init_args.batch_size=16",
    "--model.init_args.optimizer.init_args.lr=0.01",
    "--model.init_args.lr_scheduler.init_args.max_lr=0.01",
)
TARGET = "disc"


# ------------------------------------------------------------------------------------ the attacks alone
class TinyNet(nn.Module):
    """Mask logits from two convolutions; with ``labels``, image-level logits from their pooled features."""

    def __init__(self, num_classes: int = 3, labels: int = 0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 3, padding=1)
        )
        self.head = nn.Linear(num_classes, labels) if labels else None

    def forward(self, x: torch.Tensor) -> NetOutput:
        mask = self.body(x)
        label = self.head(mask.mean((2, 3))) if self.head is not None else None
        return NetOutput(mask=mask, label=label)


def _images(n: int = 6, size: int = 12) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(n, 3, size, size, generator=generator)
    images[:, :, :2] = 0.0  # pixels at both ends of the range: the clamp must hold them there
    images[:, :, -2:] = 1.0
    return images


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "segpgd"])
@pytest.mark.parametrize("targeted", [False, True])
def test_every_perturbation_stays_within_its_radius_and_every_image_within_0_1(
    attack: str, targeted: bool
) -> None:
    net = TinyNet()
    images = _images()
    epsilon = torch.tensor([0.0, 1 / 255, 4 / 255, 8 / 255, 0.1, 0.5])  # one radius per image
    labels = torch.randint(0, 3, (6, 12, 12), generator=torch.Generator().manual_seed(2))
    if targeted:
        labels = torch.full_like(labels, 2)
    objective = MaskObjective(labels, torch.ones_like(labels, dtype=torch.bool), targeted, attack == "segpgd")
    # the plain cross-entropy measures every attack (SegPGD's own loss counts fewer pixels as it succeeds)
    plain = MaskObjective(labels, torch.ones_like(labels, dtype=torch.bool), targeted, False)
    before = plain(net(images), 0, 1)
    adversarial = perturb(
        net, images, epsilon, objective, attack, steps=5, generator=torch.Generator().manual_seed(3)
    )
    assert adversarial.shape == images.shape and not adversarial.requires_grad
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    distance = (adversarial - images).abs().flatten(1).amax(1)
    assert (distance <= epsilon + 1e-6).all(), distance
    assert distance[0] == 0 and (distance[1:] > 0).all()  # radius 0 leaves its image alone
    after = plain(net(adversarial), 0, 1)
    assert after > before  # the objective is ascended (the targeted one: the target's CE descended)


def test_fgsm_moves_every_free_pixel_by_exactly_epsilon() -> None:
    net, images = TinyNet(), _images(2)
    labels = torch.zeros(2, 12, 12, dtype=torch.long)
    objective = MaskObjective(labels, torch.ones_like(labels, dtype=torch.bool), False, False)
    epsilon = torch.full((2,), 4 / 255)
    delta = (perturb(net, images, epsilon, objective, "fgsm") - images).abs()
    inside = (images > epsilon.view(-1, 1, 1, 1)) & (images < 1 - epsilon.view(-1, 1, 1, 1))
    moved = delta[inside]
    assert torch.allclose(moved[moved > 0], torch.full_like(moved[moved > 0], 4 / 255), atol=1e-6)
    assert (moved > 0).float().mean() > 0.9  # a zero gradient is the only reason to stay


def test_segpgd_shifts_weight_from_pixels_to_turn_to_turned_ones() -> None:
    # two pixels: class 0 predicted at the first (correct for label 0), class 1 at the second (wrong)
    logits = torch.tensor([[2.0, -1.0], [-1.0, 2.0]]).T.reshape(1, 2, 1, 2)
    labels = torch.tensor([[[0, 0]]])
    valid = torch.ones_like(labels, dtype=torch.bool)
    ce = -logits.log_softmax(1).gather(1, labels[:, None])[0, 0, 0]  # (correct, wrong)
    out = NetOutput(mask=logits)
    segpgd = MaskObjective(labels, valid, targeted=False, reweight=True)
    assert torch.allclose(segpgd(out, 0, 4), ce[0])  # λ_0 = 0: the correct pixel alone
    lam = 3 / 8  # λ_3 = 3 / (2·4)
    # a sum over the pixels (the paper's mean times H·W: the same gradient signs)
    assert torch.allclose(segpgd(out, 3, 4), (1 - lam) * ce[0] + lam * ce[1])
    plain = MaskObjective(labels, valid, targeted=False, reweight=False)
    assert torch.allclose(plain(out, 3, 4), ce.sum())
    # targeted towards class 1: the second pixel is already the target, the first still to turn
    target = torch.ones_like(labels)
    ce_target = -logits.log_softmax(1)[0, 1, 0]
    targeted = MaskObjective(target, valid, targeted=True, reweight=True)
    assert torch.allclose(targeted(out, 3, 4), -((1 - lam) * ce_target[0] + lam * ce_target[1]))
    # ignored pixels count nowhere
    ignored = MaskObjective(labels, torch.tensor([[[True, False]]]), targeted=False, reweight=False)
    assert torch.allclose(ignored(out, 0, 1), ce[0])


def test_a_one_channel_head_is_attacked_as_two_classes() -> None:
    net = TinyNet(num_classes=1)
    images = _images()
    logits = net(images).mask
    two = log_probabilities(logits)
    assert two.shape[1] == 2
    assert torch.allclose(two, torch.cat([torch.zeros_like(logits), logits], 1).log_softmax(1), atol=1e-6)
    labels = (logits[:, 0] < 0).long()  # the opposite of what it predicts: every pixel wrong
    objective = MaskObjective(labels, torch.ones_like(labels, dtype=torch.bool), False, False)
    adversarial = perturb(net, images, torch.full((6,), 8 / 255), objective, "pgd", steps=3)
    assert objective(net(adversarial), 0, 1) > objective(net(images), 0, 1)


def test_label_attack_raises_the_label_loss() -> None:
    net = TinyNet(labels=4)
    images = _images()
    targets = torch.randint(0, 4, (6,), generator=torch.Generator().manual_seed(4))
    objective = LabelObjective(nn.functional.cross_entropy, targets)
    before = objective(net(images), 0, 1)
    adversarial = perturb(net, images, torch.full((6,), 8 / 255), objective, "pgd", steps=5)
    assert objective(net(adversarial), 0, 1) > before


def test_radii_parse_as_numbers_or_fractions() -> None:
    assert parse_epsilon("8/255") == 8 / 255 and parse_epsilon(0) == 0.0 and parse_epsilon(0.5) == 0.5
    assert format_epsilon(8 / 255) == "8/255" and format_epsilon(0.05) == "0.05" and format_epsilon(0) == "0"
    for bad in ("2", -0.1, "x/255", "1/0"):
        with pytest.raises(ConfigError, match="--epsilons"):
            parse_epsilon(bad)


def test_a_crf_reads_the_adversarial_image_at_the_original_size() -> None:
    original = torch.full((3, 20, 30), 100, dtype=torch.uint8)
    delta = torch.full((3, 10, 15), 8 / 255)
    (out,) = adversarial_originals([original], delta[None])
    assert out.shape == (3, 20, 30) and out.dtype == torch.uint8 and (out == 108).all()
    (same,) = adversarial_originals([original], torch.zeros(1, 3, 10, 15))
    assert torch.equal(same, original)


# ------------------------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(runs folder, checkpoint) of the small trained U-Net, made once for this file."""
    root = tmp_path_factory.mktemp("attack") / "runs"
    fit = run_cli(["fit", *tiny_args(root, *TRAINED, epochs=6)])
    assert fit is not None
    return root, Path(fit.trainer.checkpoint_callback.last_model_path)


@pytest.fixture(scope="module")
def report(trained: tuple[Path, Path]) -> tuple[Path, list[dict], object]:
    """One attack run of every attack, untargeted and towards a disc on the region left of the centre."""
    root, ckpt = trained
    region = torch.zeros(1, 32, 32, dtype=torch.uint8)
    region[:, :, :16] = 255
    region_path = root.parent / "region.png"
    write_png(region, str(region_path))
    cli = run_cli(
        [
            "attack",
            *tiny_args(root, *TRAINED),
            "--ckpt_path",
            str(ckpt),
            "--epsilons",
            "[0, 2/255, 8/255]",
            "--steps",
            "5",
            "--target_class",
            TARGET,
            "--target_region",
            str(region_path),
            "--panels",
            "2",
        ]
    )
    assert cli is not None
    folder = Path(cli.trainer.default_root_dir)
    return folder, json.loads((folder / "robustness.json").read_text()), cli


def _row(rows: list[dict], attack: str, epsilon: float, targeted: bool = False) -> dict:
    (row,) = [
        r
        for r in rows
        if r["attack"] == attack
        and r["epsilon"] == epsilon
        and r["targeted"] == targeted
        and r["head"] == "mask"
    ]
    return row


def test_radius_zero_reproduces_test_exactly(trained: tuple[Path, Path], report) -> None:
    root, ckpt = trained
    _, rows, _ = report
    test = run_cli(["test", *tiny_args(root, *TRAINED), "--ckpt_path", str(ckpt)])
    metrics = json.loads((Path(test.trainer.default_root_dir) / "summary.json").read_text())["metrics"]
    for row in [r for r in rows if r["epsilon"] == 0]:
        assert row["mIoU"] == metrics["test/mIoU"] and row["acc"] == metrics["test/acc"], row


def test_attacks_lower_miou_and_the_targeted_attack_turns_pixels(report) -> None:
    _, rows, _ = report
    clean = _row(rows, "pgd", 0.0)["mIoU"]
    for attack in ("fgsm", "pgd", "segpgd"):
        assert _row(rows, attack, 8 / 255)["mIoU"] < clean, attack
        assert _row(rows, attack, 0.0, True)["target_share"] == _row(rows, "fgsm", 0.0, True)["target_share"]
    for attack in ("pgd", "segpgd"):
        share = _row(rows, attack, 8 / 255, True)["target_share"]
        assert share > _row(rows, attack, 0.0, True)["target_share"], attack
    assert all(r["target_share"] is None for r in rows if not r["targeted"])
    assert all(r["label_acc"] is None for r in rows)  # a U-Net: no image-level head


def test_attack_writes_table_plot_and_panels_and_no_test_record(report) -> None:
    folder, rows, cli = report
    assert folder.parent.name == "attack" and folder.parent.parent.name.startswith("version_")
    # 3 attacks × (untargeted, targeted) × 3 radii
    assert len(rows) == 18
    assert set(rows[0]) == {
        "attack",
        "epsilon",
        "targeted",
        "head",
        "steps",
        "mIoU",
        "acc",
        "target_share",
        "label_acc",
    }
    table = (folder / "robustness.md").read_text()
    assert table.count("\n| ") == 18 and "SegPGD-5 → disc" in table and "8/255" in table
    assert (folder / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    panels = sorted(p.name for p in (folder / "panels").iterdir())
    assert panels == [
        f"{attack}{kind}_eps8-255.png" for attack in ("fgsm", "pgd", "segpgd") for kind in ("", "_targeted")
    ]
    panel = decode_png(read_file(str(folder / "panels" / "pgd_eps8-255.png")))
    assert panel.shape[0] in (3, 4) and panel.shape[2] > panel.shape[1]  # five columns, two rows
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stage"] == "attack" and summary["rows"] == rows and "metrics" not in summary
    assert summary["target_class"] == TARGET and summary["split"] == "test" and summary["images"] == 8
    # test's loop ran over the command's own module: the model kept no test results, and the trainer, the
    # data module and the model are as they were (no pass callback left, the test split served again)
    model = cli.model
    assert model.results.get("test") == StageResults()
    assert cli.trainer.test_loop.inference_mode is True and command_pass(cli.trainer) is None
    assert not cli.datamodule.keeps_original_mask("val") and "setup" not in vars(cli.datamodule)


@pytest.mark.parametrize("split", ["predict", "val"])
def test_other_splits(trained: tuple[Path, Path], split: str) -> None:
    root, ckpt = trained
    cli = run_cli(
        [
            "attack",
            *tiny_args(root, *TRAINED),
            "--ckpt_path",
            str(ckpt),
            "--split",
            split,
            "--attacks",
            "[fgsm]",
            "--epsilons",
            "[0, 8/255]",
            "--panels",
            "0",
        ]
    )
    folder = Path(cli.trainer.default_root_dir)
    clean, attacked = json.loads((folder / "robustness.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    if split == "predict":  # no masks: the reference is the model's own clean prediction
        assert clean["mIoU"] == 1.0 and clean["acc"] == 1.0 and attacked["acc"] < 1.0
        assert summary["images"] == 4 and "clean predictions" in (folder / "robustness.md").read_text()
    else:
        assert summary["images"] == 8 and 0 < clean["mIoU"] < 1
    assert not (folder / "panels").exists() or not any((folder / "panels").iterdir())
    # the data module reads its own splits again
    assert "test_dataloader" not in vars(cli.datamodule) and "setup" not in vars(cli.datamodule)


def test_label_head_of_a_micro_unet_is_attacked(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    micro = (
        "--model.init_args.net=lightning_seg.models.MicroUNet",
        "--model.init_args.net.init_args.base_width=8",
    )
    fit = run_cli(["fit", *tiny_args(root, *micro)])
    ckpt = fit.trainer.checkpoint_callback.last_model_path
    common = [*tiny_args(root, *micro), "--ckpt_path", ckpt]
    cli = run_cli(["attack", *common, "--epsilons", "[0, 8/255]", "--steps", "2", "--panels", "1"])
    folder = Path(cli.trainer.default_root_dir)
    rows = json.loads((folder / "robustness.json").read_text())
    heads = {(r["head"], r["attack"]) for r in rows}
    # SegPGD splits pixels: not run on the label head
    assert heads == {
        ("mask", "fgsm"),
        ("mask", "pgd"),
        ("mask", "segpgd"),
        ("label", "fgsm"),
        ("label", "pgd"),
    }
    assert all(r["label_acc"] is not None for r in rows)
    test = run_cli(["test", *common])
    metrics = json.loads((Path(test.trainer.default_root_dir) / "summary.json").read_text())["metrics"]
    for row in [r for r in rows if r["epsilon"] == 0]:
        assert (
            row["label_acc"] == pytest.approx(metrics["test/label_acc"])
            and row["mIoU"] == metrics["test/mIoU"]
        )
    assert (folder / "panels" / "pgd_label_eps8-255.png").is_file()
    assert "label acc" in (folder / "robustness.md").read_text()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--epsilons", "[0, 2]"], "--epsilons: 2"),
        (["--epsilons", "[-0.1]"], "--epsilons: -0.1 is outside [0, 1]"),
        (["--steps", "0"], "--steps must be an integer >= 1"),
        (["--target_class", "disk"], "--target_class 'disk' is not a class of the model; did you mean disc?"),
        (["--target_class", "9"], "--target_class 9: the model has classes 0..4"),
        (
            ["--target_class", "disc", "--target_region", "missing.png"],
            "--target_region missing.png: no such file",
        ),
        (["--target_region", "missing.png"], "give --target_class too"),
        (["--heads", "[label]"], "--heads label: the net (UNet) has no image-level head"),
    ],
)
def test_bad_options_are_refused_in_one_line(run_root: Path, extra: list[str], needle: str, capsys) -> None:
    assert main(["attack", *tiny_args(run_root), "--allow_untrained=true", *extra]) == 2
    assert_one_line_error(capsys, needle)
    assert not list(run_root.rglob("robustness.json"))  # refused before any pass


def test_an_unreadable_region_is_refused_in_one_line(run_root: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "region.png"
    bad.write_bytes(b"not a png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(encode_png(torch.zeros(1, 4, 4, dtype=torch.uint8)).numpy().tobytes())
    for path, needle in ((bad, "not a readable image"), (empty, "no non-zero pixel")):
        code = main(
            [
                "attack",
                *tiny_args(run_root),
                "--allow_untrained=true",
                "--target_class=disc",
                f"--target_region={path}",
            ]
        )
        assert code == 2
        assert_one_line_error(capsys, needle)


def test_a_bfloat16_batch_is_attacked_in_float32_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16-true casts the batch to bfloat16: the perturbation, its radius and steps stay float32 (in bf16 a
    step of 0.25/255 vanishes and the bound 1/255 rounds outward); only the net sees bfloat16."""
    import functools

    from lightning_seg import SegmentationModule
    from lightning_seg.commands import attack
    from lightning_seg.models import UNet

    torch.manual_seed(0)
    model = SegmentationModule(functools.partial(UNet, base_width=4, depth=2), num_classes=3)
    model = model.to(torch.bfloat16).eval()
    mean = torch.tensor(model.mean).view(1, -1, 1, 1)
    std = torch.tensor(model.std).view(1, -1, 1, 1)
    image = ((_images(2, 16) - mean) / std).to(torch.bfloat16)
    mask = torch.randint(0, 3, (2, 16, 16))
    seen = []

    def recording(forward, pixels, epsilon, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        adversarial = perturb(forward, pixels, epsilon, *args, **kwargs)
        seen.append((pixels.dtype, epsilon.dtype, (adversarial - pixels).abs().amax().item()))
        return adversarial

    monkeypatch.setattr("lightning_seg.commands.attack.robustness.perturb", recording)
    options = attack.check_options(
        model, ["pgd"], [0, "1/255"], 10, None, True, None, None, None, "test", 0, 0
    )
    robustness = attack.RobustnessPass(model, options)
    robustness.step({"image": image, "mask": mask})
    (pixels_dtype, epsilon_dtype, largest) = seen[0]
    assert pixels_dtype == torch.float32 and epsilon_dtype == torch.float32
    assert 0.9 / 255 < largest <= 1 / 255 + 1e-7
