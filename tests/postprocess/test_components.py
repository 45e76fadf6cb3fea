"""SmallComponents on synthetic class maps whose components are known by construction."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from lightning_seg.errors import ConfigError
from lightning_seg.postprocess import Prediction, SmallComponents

NAMES = ["background", "road", "car", "person"]


def _scene() -> torch.Tensor:
    """int64 20×20: a big road blob (rows 2..11) and a big car blob (rows 14..17), with specks:
    a 1-pixel car and a 2-pixel person inside the road, a 3-pixel road inside the background, and a
    1-pixel background hole inside the road (background is never removed)."""
    classes = torch.zeros(20, 20, dtype=torch.long)
    classes[2:12, 2:12] = 1  # road, 100 px
    classes[14:18, 4:16] = 2  # car, 48 px
    classes[4, 4] = 2  # car speck, 1 px
    classes[8, 8:10] = 3  # person speck, 2 px
    classes[6, 10] = 0  # background hole in the road
    classes[0, 15:18] = 1  # road speck, 3 px
    return classes


def _probabilities(classes: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """float32 K×H×W: the decided class most probable, the ``base`` map's class second."""

    def one_hot(x: torch.Tensor) -> torch.Tensor:
        return F.one_hot(x, len(NAMES)).permute(2, 0, 1).float()

    probabilities = 0.05 + 0.3 * one_hot(base) + 0.5 * one_hot(classes)
    return probabilities / probabilities.sum(0, keepdim=True)


def _run(step: SmallComponents, classes: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
    base = classes if base is None else base
    prediction = Prediction(probabilities=_probabilities(classes, base), classes=classes.clone())
    step.apply([prediction])
    assert prediction.classes is not None and prediction.classes.dtype == torch.long
    return prediction.classes


def test_specks_below_the_area_go_to_background_and_big_blobs_stay() -> None:
    classes = _scene()
    out = _run(SmallComponents(min_area=5), classes)
    expected = classes.clone()
    expected[4, 4] = 0
    expected[8, 8:10] = 0
    expected[0, 15:18] = 0
    assert torch.equal(out, expected)
    assert out[6, 10] == 0 and (out[2:12, 2:12] != 0).sum() == 100 - 1 - 1 - 2  # hole and specks
    # an area at most a speck's size keeps it: 3 px is not < 3
    out = _run(SmallComponents(min_area=3), classes)
    assert torch.equal(out[0, 15:18], classes[0, 15:18]) and out[8, 8:10].tolist() == [0, 0]


def test_neighbours_fill_takes_the_most_probable_other_class() -> None:
    classes = _scene()
    base = classes.clone()  # what lies around each speck
    base[4, 4] = 1
    base[8, 8:10] = 1
    base[0, 15:18] = 0
    out = _run(SmallComponents(min_area=5, fill="neighbours"), classes, base)
    assert torch.equal(out, base)
    # the second most probable class, not the surrounding one, when they differ
    base[8, 8:10] = 2
    out = _run(SmallComponents(min_area=5, fill="neighbours"), classes, base)
    assert out[8, 8:10].tolist() == [2, 2]


def test_connectivity_4_splits_a_diagonal_pair() -> None:
    classes = torch.zeros(6, 6, dtype=torch.long)
    classes[2, 2] = 2
    classes[3, 3] = 2  # touching by a corner only
    assert torch.equal(_run(SmallComponents(min_area=2, connectivity=8), classes), classes)
    assert (_run(SmallComponents(min_area=2, connectivity=4), classes) == 0).all()


def test_per_class_areas_by_name_and_by_list() -> None:
    classes = _scene()
    by_name = SmallComponents(min_area={"person": 5, "car": 60}).for_classes(NAMES)
    out = _run(by_name, classes)
    expected = classes.clone()
    expected[8, 8:10] = 0  # person speck
    expected[4, 4] = 0  # car speck
    expected[14:18, 4:16] = 0  # the 48-px car blob is below 60 too
    assert torch.equal(out, expected)  # road is not named: its 3-px speck stays
    by_list = SmallComponents(min_area=[1000, 0, 60, 5])  # the background's entry is not used
    assert torch.equal(_run(by_list, classes), expected)
    given = SmallComponents(min_area={"person": 5, "car": 60}, class_names=NAMES)
    assert torch.equal(_run(given, classes), expected)


def test_bad_class_names_are_one_line() -> None:
    step = SmallComponents(min_area={"persn": 5})
    with pytest.raises(ConfigError) as error:
        step.for_classes(NAMES)
    message = str(error.value)
    assert "\n" not in message
    assert "'persn'" in message and "did you mean person?" in message and "road, car, person" in message
    with pytest.raises(ConfigError, match="background"):
        SmallComponents(min_area={"background": 5}, class_names=NAMES)
    with pytest.raises(ConfigError, match="no class names"):
        _run(SmallComponents(min_area={"car": 5}), _scene())
    with pytest.raises(ConfigError, match="3 areas for 4 classes"):
        SmallComponents(min_area=[0, 5, 5]).for_classes(NAMES)
    with pytest.raises(ConfigError, match=">= 0"):
        SmallComponents(min_area=-1)


def test_describe_and_build_from_config() -> None:
    from jsonargparse import ArgumentParser

    assert SmallComponents(min_area=50).describe() == "components (< 50 px)"
    text = SmallComponents(min_area={"car": 50}, connectivity=4, fill="neighbours").describe()
    assert text == "components (< car 50 px, 4-connected, filled from neighbours)"
    parser = ArgumentParser()
    parser.add_class_arguments(SmallComponents, "step")
    for value, expected in (
        ("50", 50),
        ("{car: 20, person: 5}", {"car": 20, "person": 5}),
        ("[0, 5, 9]", [0, 5, 9]),
    ):
        config = parser.parse_args(["--step.min_area", value, "--step.connectivity", "4"])
        step = parser.instantiate_classes(config).step
        assert step.min_area == expected and step.connectivity == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_result_stays_on_the_device() -> None:
    classes = _scene().cuda()
    base = classes.clone()
    base[4, 4] = 1
    prediction = Prediction(probabilities=_probabilities(classes, base), classes=classes)
    SmallComponents(min_area=5, fill="neighbours").apply([prediction])
    assert prediction.classes is not None and prediction.classes.device == classes.device
    assert prediction.classes[4, 4].item() == 1  # the car speck, filled with road
