"""The one dataset interface: the registry, specs, options, records and the old call forms."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import base
from cnnlab.data.base import DataOptions, Dataset, Source, Splits, parse_spec, register_source
from cnnlab.data.datasets import SPEC_HELP, check_spec, load_dataset
from cnnlab.errors import CnnlabError


def test_every_source_is_registered_in_the_listed_order() -> None:
    names = list(base.registered_sources())
    assert names == [
        "mnist", "fashion-mnist", "kmnist", "cifar10", "ucr", "moving-mnist", "folder", "npz",
        "arrays",  # what a run on arrays given to fit records: not offered in --data's help
    ]  # fmt: skip
    assert "arrays given" not in SPEC_HELP
    assert SPEC_HELP.startswith("mnist (the chapter's digits), fashion-mnist")
    assert "ucr:NAME (a UCR/UEA time-series dataset)" in SPEC_HELP
    assert SPEC_HELP.endswith(
        " or npz:PATH (your arrays: x_train, y_train[, x_test, y_test, class_names])"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("myimages", r"unknown dataset 'myimages'; choose mnist .* folder:PATH .* npz:PATH"),
        ("jpeg:photos", "unknown dataset 'jpeg:photos'"),
        ("", "no dataset given"),
        ("mnist:extra", "dataset 'mnist' takes no argument, not 'mnist:extra'"),
        ("folder", r"dataset 'folder' needs its PATH: folder:PATH"),
        ("folder:", r"needs its PATH"),
        ("ucr:../etc", "invalid UCR dataset name '../etc'"),
    ],
)
def test_bad_specs_are_one_line(spec: str, message: str) -> None:
    with pytest.raises(CnnlabError, match=message) as info:
        parse_spec(spec)
    assert "\n" not in str(info.value)


def test_specs_parse_by_registry() -> None:
    assert type(parse_spec("folder:a:b")).__name__ == "FolderSource"  # the rest is the path
    assert parse_spec("folder:a:b").arg == "a:b"
    assert check_spec("ucr:GunPoint") == "ucr:GunPoint"
    assert type(parse_spec("cifar10")).__name__ == "Cifar10Source"


class _Toy(Source):
    summary = "a toy"

    def load(self, options: DataOptions) -> Dataset:
        rng = np.random.default_rng(options.seed)
        x = rng.random((10, 4, 1)).astype(np.float32)
        y = np.arange(10) % 2
        splits = Splits(x[:6], y[:6], x[6:8], y[6:8], x[8:], y[8:])
        return Dataset(self.spec, splits, ["even", "odd"], "toy", "series")


@pytest.fixture
def toy() -> Iterator[None]:
    register_source("toy")(_Toy)
    yield
    del base._REGISTRY["toy"]


def test_a_new_source_is_one_class(toy: None) -> None:
    ds = load_dataset("toy", DataOptions(seed=3))
    assert ds.classes == ["even", "odd"] and ds.kind == "series" and ds.pixels is False
    assert "toy (a toy)" in base.spec_help()
    with pytest.raises(ValueError, match="registered twice"):
        register_source("toy")(type("Other", (_Toy,), {}))


def test_record_is_json_and_replays(tmp_path: Path) -> None:
    x = np.zeros((6, 5, 5, 3), np.uint8)
    y = np.arange(6) % 2
    pre = {
        "image": {"shape": [5, 5, 3], "interpolation": "area", "fit": "crop"},
        "test_split": {"drawn": True, "seed": 9, "fraction": 0.3, "stratified": True},
    }
    ds = Dataset("folder:x", Splits(x, y, x, y, x, y), ["a", "b"], "d", "images", None, pre)
    assert ds.pixels is True  # read off the dtype
    record = json.loads(json.dumps(ds.record()))
    assert record == {
        "spec": "folder:x", "kind": "images", "classes": ["a", "b"], "pixels": True,
        "input_shape": [5, 5, 3], "description": "d", "preprocessing": pre,
    }  # fmt: skip
    again = DataOptions(data_dir=tmp_path).replay(record)
    assert again.image_shape == (5, 5, 3) and again.interpolation == "area"
    assert again.fit == "crop" and again.test_fraction == 0.3 and again.seed == 9
    assert again.data_dir == tmp_path
    with pytest.raises(CnnlabError, match="kind must be one of"):
        Dataset("x", Splits(x, y, x, y, x, y), ["a", "b"], "d", "pictures")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"val_fraction": 1.0}, "val_fraction must be between 0 and 1"),
        ({"test_fraction": 0}, "test_fraction must be between 0 and 1"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"image_shape": (28, 28)}, r"image_shape must be \(height, width, channels\)"),
        ({"image_shape": (28, 28, 2)}, "1, 3 or 4 channels"),
        ({"image_shape": (100_000, 100_000, 3)}, "over 64M values"),
        ({"interpolation": "cubic"}, "unknown interpolation 'cubic'; choose bilinear"),
        ({"fit": "fill"}, "unknown fit 'fill'; choose stretch, crop, pad"),
        ({"workers": 0}, "workers must be a positive integer"),
    ],
)
def test_options_are_checked(changes: dict[str, object], message: str) -> None:
    with pytest.raises(CnnlabError, match=message):
        DataOptions(**changes)  # type: ignore[arg-type]


def test_options_normalise() -> None:
    o = DataOptions(image_shape=[32, 32, 3], interpolation="box", data_dir="d")  # type: ignore[arg-type]
    assert o.image_shape == (32, 32, 3) and o.interpolation == "area" and o.data_dir == Path("d")


def test_old_and_new_call_forms_agree(tiny_mnist: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import cnnlab.data as data

    monkeypatch.setattr(data, "load_mnist", lambda *a, **k: tiny_mnist)
    old = load_dataset("mnist", None, 5, 0.3, allow_download=False)
    new = load_dataset("mnist", DataOptions(seed=5, val_fraction=0.3, allow_download=False))
    np.testing.assert_array_equal(old.splits.x_val, new.splits.x_val)
    assert new.pixels and new.kind == "images" and new.classes == [str(d) for d in range(10)]
    assert new.preprocessing["val_split"] == {"seed": 5, "fraction": 0.3, "stratified": True}
    with pytest.raises(TypeError):
        load_dataset("mnist", DataOptions(), 5)
