"""``--data-dir`` given a folder of images, or one without the set: one line saying what it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.cli.main import main
from cnnlab.data import mnist, store
from cnnlab.errors import CnnlabError


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(store.DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def _images(root: Path, *classes: str) -> Path:
    for name in classes:
        (root / name).mkdir(parents=True)
        (root / name / "0.png").write_bytes(b"\x89PNG not decoded: only the suffix is looked at")
    return root


@pytest.mark.parametrize("layout", [("cat", "dog"), ("train/cat", "train/dog", "test/cat")])
def test_a_folder_of_class_folders_points_to_data_folder(isolated: Path, layout: tuple) -> None:
    root = _images(isolated / "myimages", *layout)
    with pytest.raises(CnnlabError) as err:
        store.locate("mnist", ["train-images-idx3-ubyte"], root)
    line = str(err.value)
    assert "\n" not in line
    assert f"--data folder:{root}" in line and "the folder holding mnist/" in line


def test_the_python_api_takes_a_str(isolated: Path) -> None:
    """``load_mnist(data_dir="...")``, as the notebook calls it: the same line, no TypeError."""
    root = _images(isolated / "myimages", "cat", "dog")
    with pytest.raises(CnnlabError, match="--data folder:"):
        store.locate("mnist", ["train-images-idx3-ubyte"], str(root))
    hint = store.missing_hint("mnist", "the MNIST files", str(isolated))
    assert hint.endswith(f"put the MNIST files in {isolated / 'mnist'}")


def test_the_cli_says_it_in_one_line_with_exit_2(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _images(isolated / "myimages", "cat", "dog")
    argv = ["data", "verify", "--data-dir", str(root)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--data folder:{root}" in err


def test_a_data_folder_is_left_alone(isolated: Path) -> None:
    root = _images(isolated / "data", "cat")  # has images, but also the set asked for
    (root / "mnist").mkdir()
    (root / "mnist" / "f").write_bytes(b"1")
    assert store.locate("mnist", ["f"], root) == root / "mnist" / "f"
    # a folder with no images, photos deeper than folder:'s layouts, or no folder at all:
    # searched, then the cache, as before
    (isolated / "plain" / "notes").mkdir(parents=True)
    (isolated / "plain" / "notes" / "a.txt").write_text("x")
    _images(isolated / "plain" / "photos", "cat", "dog")  # plain/photos/cat/0.png
    assert store.locate("mnist", ["f"], isolated / "plain") is None
    assert store.locate("mnist", ["f"], isolated / "missing") is None


def test_a_failed_download_names_what_data_dir_is(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, dest: Path) -> None:
        raise OSError("offline")

    monkeypatch.setattr(mnist, "_fetch", offline)
    given = isolated / "empty"
    given.mkdir()
    with pytest.raises(CnnlabError) as err:
        mnist.resolve("train-labels-idx1-ubyte", given)
    line = str(err.value)
    assert f"--data-dir {given} has no mnist/" in line and str(given / "mnist") in line
    assert "~/.cache" not in line and str(isolated / "xdg") not in line.split("; ")[-1]
    with pytest.raises(CnnlabError) as err:
        mnist.resolve("train-labels-idx1-ubyte")  # no --data-dir: the cache and the variable
    assert "CNNLAB_DATA" in str(err.value) and "--data-dir" not in str(err.value)
