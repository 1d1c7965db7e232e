"""folder:PATH on folders made here: arrays against Pillow, or one error line each."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.data import DataOptions, Dataset, images
from cnnlab.data.datasets import load_dataset
from cnnlab.data.folder_scan import natural_key, scan
from cnnlab.data.rows import RowView
from cnnlab.errors import CnnlabError

from .imagefiles import expected, png_header_bomb, save


@pytest.fixture
def opts(tmp_path: Path) -> DataOptions:
    return DataOptions(cache_dir=tmp_path / "cache", workers=1, progress=False)


def load(root: Path, options: DataOptions, **changes: object) -> Dataset:
    from dataclasses import replace

    return load_dataset(f"folder:{root}", replace(options, **changes))


def mixed_folder(root: Path) -> Path:
    """Three classes of mixed modes, formats and sizes."""
    files = {
        "cats": [("L", ".png"), ("RGB", ".jpg"), ("RGBA", ".png"), ("P", ".gif"), ("CMYK", ".tif")],
        "dogs": [
            ("RGB", ".bmp"),
            ("RGB", ".webp"),
            ("LA", ".png"),
            ("1", ".png"),
            ("RGB", ".tiff"),
        ],
        "birds": [
            ("RGBA", ".webp"),
            ("P", ".png"),
            ("RGB", ".jpeg"),
            ("L", ".jpg"),
            ("RGB", ".png"),
        ],
    }
    for name, kinds in files.items():
        for i, (mode, suffix) in enumerate(kinds):
            size = (10 + 3 * i, 14 + 5 * (i % 2))
            save(root / name / f"{name}{i}{suffix}", mode, size, seed=len(name) * 10 + i)
    return root


def rows_of(dataset: Dataset) -> list[tuple[np.ndarray, int, int]]:
    """(pixels, label, file row) for every example of every split."""
    out = []
    for x, y in ((dataset.splits.x_train, dataset.splits.y_train),
                 (dataset.splits.x_val, dataset.splits.y_val),
                 (dataset.splits.x_test, dataset.splits.y_test)):  # fmt: skip
        assert isinstance(x, RowView)
        out += [(x[i], int(y[i]), int(x.rows[i])) for i in range(len(x))]
    return out


def test_mixed_modes_formats_and_sizes_match_pillow(tmp_path: Path, opts: DataOptions) -> None:
    root = mixed_folder(tmp_path / "pets")
    ds = load(root, opts, image_shape=(16, 20, 3))
    assert ds.classes == ["birds", "cats", "dogs"] and ds.kind == "images" and ds.pixels
    assert ds.input_shape == (16, 20, 3)
    files = scan(root).files
    seen = rows_of(ds)
    assert sorted(row for _, _, row in seen) == list(range(15))  # every file, once
    for pixels, label, row in seen:
        path = root / files[row].rel
        assert ds.classes[label] == files[row].rel.split("/")[0]
        np.testing.assert_array_equal(pixels, expected(path, (16, 20, 3)), err_msg=str(path))
    grey = load(root, opts, image_shape=(9, 9, 1), interpolation="nearest")
    for pixels, _, row in rows_of(grey):
        want = expected(root / files[row].rel, (9, 9, 1), Image.Resampling.NEAREST)
        np.testing.assert_array_equal(pixels, want)
    json.dumps(ds.record())  # the record is JSON


def test_shape_decided_from_headers(tmp_path: Path, opts: DataOptions) -> None:
    root = tmp_path / "scans"
    for i in range(5):
        save(root / "a" / f"{i}.png", "L", (30, 40), seed=i)
    for i in range(2):
        save(root / "b" / f"{i}.tif", "I;16", (20, 20), seed=i)
    ds = load(root, opts)
    assert ds.input_shape == (30, 40, 1)
    decided = ds.preprocessing["decided"]
    assert decided["size"].startswith("30x40: the most common size, 30x40 (5 of 7 images)")
    assert decided["channels"] == "1: every image is greyscale (L 5, I;16 2)"
    save(root / "b" / "colour.jpg", "RGB", (300, 200), seed=9)
    for i in range(5, 9):
        save(root / "b" / f"{i}.jpg", "RGB", (300, 200), seed=i)
    ds = load(root, opts)
    assert ds.input_shape == (128, 85, 3)  # 300x200, the longer side capped at 128
    assert "capped at 128" in ds.preprocessing["decided"]["size"]
    assert ds.preprocessing["decided"]["channels"].startswith("3: not every image is greyscale")


def test_class_names_in_natural_order(tmp_path: Path, opts: DataOptions) -> None:
    names = ["10", "2", "b", "A", "img10", "img9", "1"]
    for name in names:
        for i in range(3):
            save(tmp_path / "d" / name / f"{i}.png", "L", (5, 5), seed=i)
    ds = load(tmp_path / "d", opts, image_shape=(5, 5, 1))
    assert ds.classes == ["1", "2", "10", "A", "b", "img9", "img10"]
    assert sorted(names, key=natural_key) == ds.classes
    assert ds.record()["classes"] == ds.classes


def test_hidden_text_and_corrupt_files(
    tmp_path: Path, opts: DataOptions, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "d"
    for cls in ("x", "y"):
        for i in range(4):
            save(root / cls / f"{i}.png", "RGB", (6, 6), seed=i)
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "x" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "x" / "._0.png").write_bytes(b"\0\5\26\7AppleDouble")
    (root / "x" / "notes.txt").write_text("not an image")
    (root / "y" / "Thumbs.db").write_bytes(b"\xd0\xcf")
    (root / "__MACOSX" / "x").mkdir(parents=True)
    (root / "x" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "y" / "text.jpg").write_text("hello")
    ds = load(root, opts)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cnnlab: warning: skipped 2 of 10 image files")
    assert "x/broken.png" in err and "y/text.jpg" in err
    files = ds.preprocessing["files"]
    assert files["images"] == 10 and files["skipped"]["count"] == 2
    assert files["ignored_non_images"] == 1 and files["ignored_hidden"] == 5
    assert sum(ds.splits.counts().values()) == 8
    with pytest.raises(CnnlabError, match=r"broken\.png is a damaged .*strict mode refuses it"):
        load(root, opts, strict=True)  # the cached result says so too
    capsys.readouterr()
    with pytest.raises(CnnlabError, match="strict mode refuses"):
        load(root, opts, strict=True, cache_dir=tmp_path / "fresh")


def test_train_and_test_subfolders_are_the_splits(tmp_path: Path, opts: DataOptions) -> None:
    root = tmp_path / "d"
    for part, n in (("train", 8), ("test", 3)):
        for cls in ("no", "yes"):
            for i in range(n):
                save(root / part / cls / f"{cls}{i}.png", "L", (4, 4), seed=i)
    ds = load(root, opts)
    files = scan(root).files
    test_files = sorted(files[r].rel for r in ds.splits.x_test.rows)
    assert test_files == sorted(f"test/{c}/{c}{i}.png" for c in ("no", "yes") for i in range(3))
    train_val = [files[r].rel for r in (*ds.splits.x_train.rows, *ds.splits.x_val.rows)]
    assert all(rel.startswith("train/") for rel in train_val) and len(train_val) == 16
    assert ds.preprocessing["test_split"] == {"drawn": False, "from": "test/"}
    assert ds.splits.counts() == {"train": 12, "val": 4, "test": 6}

    flat = tmp_path / "flat"  # the same classes without the split: the test split is drawn
    for cls in ("no", "yes"):
        for i in range(10):
            save(flat / cls / f"{i}.png", "L", (4, 4), seed=i)
    drawn = load(flat, opts)
    assert drawn.preprocessing["test_split"] == {
        "drawn": True, "seed": 42, "fraction": 0.2, "stratified": True
    }  # fmt: skip
    assert np.bincount(drawn.splits.y_test).tolist() == [2, 2]  # stratified
    again, other = load(flat, opts), load(flat, opts, seed=7)
    np.testing.assert_array_equal(again.splits.x_test.rows, drawn.splits.x_test.rows)
    assert not np.array_equal(other.splits.x_test.rows, drawn.splits.x_test.rows)
    every = np.concatenate([drawn.splits.x_train.rows, drawn.splits.x_val.rows,
                            drawn.splits.x_test.rows])  # fmt: skip
    assert sorted(every.tolist()) == list(range(20))  # disjoint, and nothing lost


def test_train_test_layout_mistakes(tmp_path: Path, opts: DataOptions) -> None:
    root = tmp_path / "d"
    for part in ("train", "test", "valid"):
        for cls in ("a", "b"):
            save(root / part / cls / "0.png", "L", (4, 4))
    with pytest.raises(CnnlabError, match=r"train/ and test/ and also valid/"):
        load(root, opts)
    os.rename(root / "valid", tmp_path / "elsewhere")
    save(root / "test" / "c" / "0.png", "L", (4, 4))
    with pytest.raises(CnnlabError, match=r"test/c/ is a class that train/ does not have"):
        load(root, opts)


def test_cache_is_reused_and_invalidated(
    tmp_path: Path, opts: DataOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "d"
    for cls in ("a", "b"):
        for i in range(6):
            save(root / cls / f"{i}.png", "RGB", (8, 8), seed=i)
    calls: list[str] = []
    decode = images.decode
    monkeypatch.setattr(images, "decode", lambda d, n, s: calls.append(n) or decode(d, n, s))
    first = load(root, opts)
    assert len(calls) == 12 and first.preprocessing["cache"].startswith("built in")
    second = load(root, opts)
    assert len(calls) == 12 and second.preprocessing["cache"] == "reused"  # nothing decoded
    np.testing.assert_array_equal(
        np.asarray(second.splits.x_train), np.asarray(first.splits.x_train)
    )
    save(root / "a" / "0.png", "RGB", (8, 8), seed=99)  # changed content...
    os.utime(root / "a" / "0.png", ns=(1, 1))  # ...and time
    third = load(root, opts)
    assert len(calls) == 24 and third.preprocessing["cache_key"] != first.preprocessing["cache_key"]
    folders = sorted(p.name for p in (tmp_path / "cache" / "folders").iterdir() if p.is_dir())
    assert folders == [third.preprocessing["cache_key"]]  # the stale cache was removed
    replayed = load(root, opts.replay(third.record()))  # the decided shape, given now
    assert len(calls) == 24 and replayed.preprocessing["cache"] == "reused"
    load(root, opts, image_shape=(4, 4, 3))  # other settings: a cache of their own
    assert len(list((tmp_path / "cache" / "folders").glob("[0-9a-f]*"))) == 2


def test_a_damaged_cache_is_rebuilt(
    tmp_path: Path, opts: DataOptions, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "d"
    for cls in ("a", "b"):
        for i in range(4):
            save(root / cls / f"{i}.png", "L", (5, 5), seed=i)
    ds = load(root, opts)
    cache = tmp_path / "cache" / "folders" / ds.preprocessing["cache_key"]
    with open(cache / "images.npy", "r+b") as f:
        f.truncate(100)
    again = load(root, opts)
    assert "is damaged: decoding the images again" in capsys.readouterr().err
    assert again.preprocessing["cache"].startswith("built")
    np.testing.assert_array_equal(np.asarray(again.splits.x_test), np.asarray(ds.splits.x_test))


def test_parallel_decoding_gives_the_same_arrays(tmp_path: Path, opts: DataOptions) -> None:
    root = tmp_path / "d"
    for cls in ("a", "b", "c"):
        for i in range(14):
            save(root / cls / f"{i}.jpg", "RGB", (9 + i % 3, 11), seed=i)
    serial = load(root, opts)
    parallel = load(root, opts, workers=2, cache_dir=tmp_path / "other")
    assert parallel.input_shape == serial.input_shape
    for name in ("x_train", "x_val", "x_test"):
        a, b = getattr(serial.splits, name), getattr(parallel.splits, name)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def two_classes(root: Path) -> Path:
    """Folders a/ and b/ with one image each: then the case adds its trouble to b/."""
    save(root / "a" / "0.png", "L", (4, 4))
    save(root / "b" / "0.png", "L", (4, 4))
    return root / "b"


def _empty_class(root: Path) -> None:
    save(root / "a" / "0.png", "L", (4, 4))
    (root / "b").mkdir()
    (root / "b" / "readme.txt").write_text("x")


ERRORS = {
    "missing path": (lambda root: None, "not found"),
    "a file": (lambda root: root.write_bytes(b"x"), "is a file, not a folder"),
    "no class folders": (
        lambda root: [save(root / f"{i}.png", "L", (4, 4)) for i in range(3)],
        r"holds no class folders \(3 image files lie at its top level\)",
    ),
    "zero images": (lambda root: root.mkdir(), "holds no class folders"),
    "one class": (lambda root: save(root / "only" / "0.png", "L", (4, 4)), "single class folder"),
    "empty class": (_empty_class, r"class folder b/ holds no images"),
    "folder loop": (
        lambda root: (two_classes(root) / "again").symlink_to(root / "b"),
        r"b/again is a symbolic link loop",
    ),
    "file loop": (
        lambda root: (two_classes(root) / "x.png").symlink_to(root / "b" / "x.png"),
        r"b/x.png is a symbolic link loop",
    ),
    "dangling link": (
        lambda root: (two_classes(root) / "x.png").symlink_to(root / "nowhere.png"),
        r"b/x.png is a dangling symbolic link",
    ),
    "bomb": (
        lambda root: png_header_bomb(two_classes(root) / "big.png", 12_000, 12_000),
        r"b/big.png is 12000x12000 = 144,000,000 pixels, over the limit .* decompression bomb",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
@pytest.mark.parametrize("given_shape", [None, (4, 4, 1)])
def test_one_line_errors(
    tmp_path: Path, opts: DataOptions, case: str, given_shape: tuple[int, int, int] | None
) -> None:
    make, message = ERRORS[case]
    root = tmp_path / "data"
    make(root)
    with pytest.raises(CnnlabError, match=message) as info:
        load(root, opts, image_shape=given_shape)
    assert "\n" not in str(info.value)
    assert not list((tmp_path / "cache" / "folders").glob("[0-9a-f]*"))  # no cache left


def test_an_unreadable_file_is_one_line(
    tmp_path: Path, opts: DataOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "d"
    for cls in ("a", "b"):
        for i in range(3):
            save(root / cls / f"{i}.png", "L", (4, 4), seed=i)
    real = images.open_regular

    def denied(path: Path) -> object:  # what a file without read permission gives
        if Path(path).name == "1.png" and "b" in Path(path).parts:
            raise CnnlabError(f"cannot read {path}: Permission denied")
        return real(path)

    monkeypatch.setattr(images, "open_regular", denied)
    for shape in (None, (4, 4, 1)):  # found reading headers, or decoding
        with pytest.raises(CnnlabError, match=r"b/1\.png: Permission denied"):
            load(root, opts, image_shape=shape)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_for_real(tmp_path: Path, opts: DataOptions) -> None:
    root = tmp_path / "d"
    for cls in ("a", "b"):
        save(root / cls / "0.png", "L", (4, 4))
    (root / "b" / "0.png").chmod(0)
    with pytest.raises(CnnlabError, match="Permission denied"):
        load(root, opts)


def test_loose_top_level_images_are_left_out_with_a_warning(
    tmp_path: Path, opts: DataOptions, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "d"
    for cls in ("a", "b"):
        for i in range(3):
            save(root / cls / f"{i}.png", "L", (4, 4), seed=i)
    save(root / "stray.png", "L", (4, 4))
    ds = load(root, opts)
    assert "1 image files at the top of" in capsys.readouterr().err
    assert ds.preprocessing["files"]["ignored_outside_classes"] == 1
    assert sum(ds.splits.counts().values()) == 6


def test_a_script_without_a_main_guard_decodes_in_parallel(tmp_path: Path) -> None:
    """Workers must not import the caller's script again (spawn would: it would run the
    script's top level in every worker, and hang or recurse)."""
    import subprocess
    import sys

    root = tmp_path / "d"
    for cls in ("a", "b"):
        for i in range(20):
            save(root / cls / f"{i}.png", "L", (6, 6), seed=i)
    script = tmp_path / "train.py"
    script.write_text(
        "from pathlib import Path\n"
        "from cnnlab.data import DataOptions\n"
        "from cnnlab.data.datasets import load_dataset\n"
        f"ds = load_dataset('folder:{root}', DataOptions(workers=2, progress=False,"
        f" cache_dir=Path({str(tmp_path / 'cache')!r})))\n"
        "print(sum(ds.splits.counts().values()))\n"
    )
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "40"
