"""write_figures and the `figures` command: every required file, the manifest, bad folders."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli.figures import register
from cnnlab.errors import CnnlabError
from cnnlab.figures import build_figure, write_figures
from cnnlab.figures.writer import atomic_write

from .refs import REQUIRED, SLIDING


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("figures") / "new" / "folder"  # created by write_figures
    return out, write_figures(out)


def test_every_required_figure_is_written(written: tuple[Path, list[Path]]) -> None:
    out, paths = written
    names = {p.name for p in paths}
    missing = [n for n in REQUIRED if f"{n}.png" not in names or f"{n}.gif" not in names]
    assert not missing, f"figures not written: {missing}"
    assert paths[-1] == out / "figures.json"
    assert all(p.is_file() and p.parent == out for p in paths)
    for name in REQUIRED:
        with Image.open(out / f"{name}.png") as im:
            assert im.format == "PNG" and im.width >= 500 and im.height >= 300


def test_gifs_have_several_frames(written: tuple[Path, list[Path]]) -> None:
    out, _ = written
    for name in REQUIRED:
        with Image.open(out / f"{name}.gif") as im:
            assert im.format == "GIF"
            frames = int(getattr(im, "n_frames", 1))
        assert frames == len(build_figure(name).frames) >= 2
        if name in SLIDING:
            assert frames >= 4, f"{name}: {frames} frames"


def test_manifest_lists_files_and_grids(written: tuple[Path, list[Path]]) -> None:
    out, _ = written
    manifest = json.loads((out / "figures.json").read_text())
    entries = {e["name"]: e for e in manifest["figures"]}
    assert sorted(entries) == sorted(REQUIRED)
    for name, entry in entries.items():
        assert entry["files"] == [f"{name}.png", f"{name}.gif"]
        assert entry["title"] and entry["caption"]
        data = build_figure(name)
        assert sorted(entry["grids"]) == sorted(data.grids)
        for grid, values in entry["grids"].items():
            np.testing.assert_array_equal(np.array(values, dtype=float), data.grids[grid])


def test_no_temporary_files_are_left(written: tuple[Path, list[Path]]) -> None:
    out, paths = written
    assert sorted(os.listdir(out)) == sorted(p.name for p in paths)


def test_only_writes_the_named_figures(tmp_path: Path) -> None:
    paths = write_figures(tmp_path, only=["pooling_invariance", "pooling_invariance"])
    names = ["pooling_invariance.png", "pooling_invariance.gif", "figures.json"]
    assert [p.name for p in paths] == names
    assert sorted(os.listdir(tmp_path)) == sorted(names)
    with pytest.raises(CnnlabError, match="unknown figure 'nope'"):
        write_figures(tmp_path / "other", only=["nope"])
    assert not (tmp_path / "other").exists()


def test_out_that_is_a_file_is_one_readable_error(tmp_path: Path) -> None:
    target = tmp_path / "figures.png"
    target.write_bytes(b"not a folder")
    for out in (target, target / "sub"):
        with pytest.raises(CnnlabError) as info:
            write_figures(out, only=["pooling"])
        message = str(info.value)
        assert "\n" not in message and str(target) in message
    assert target.read_bytes() == b"not a folder"


def test_out_that_is_not_writable_is_one_readable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # also when run as root
    with pytest.raises(CnnlabError, match="not writable") as info:
        write_figures(tmp_path, only=["pooling"])
    assert "\n" not in str(info.value)
    assert os.listdir(tmp_path) == []


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path: Path) -> None:
    def half_then_crash(fh: object) -> None:
        fh.write(b"half a PNG")  # type: ignore[attr-defined]
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "a.png", half_then_crash)
    assert os.listdir(tmp_path) == []


def test_command_writes_and_prints_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="cnnlab")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["figures", "--out", str(tmp_path), "--only", "strides"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / n) for n in ("strides.png", "strides.gif", "figures.json")]
    assert parser.parse_args(["figures"]).out == Path("figures")
    with pytest.raises(SystemExit):
        parser.parse_args(["figures", "--only", "no_such_figure"])
    bad = parser.parse_args(["figures", "--out", str(tmp_path / "strides.png")])
    with pytest.raises(CnnlabError, match="not a folder"):
        bad.func(bad)
