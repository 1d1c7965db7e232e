"""UCR/UEA loader: shared datasets, malformed files, offline download, validation split."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import shutil
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import ts_budget, ucr
from cnnlab.errors import CnnlabError

REPO = Path(__file__).resolve().parents[2]
needs_sktime = pytest.mark.skipif(
    importlib.util.find_spec("sktime") is None, reason="sktime (the .ts reader) not installed"
)

# name: (channels, length range, classes, n_train, n_test), from shared/data/ucr/README.md
FACTS = {
    "BasicMotions": (6, (100, 100), ["Badminton", "Running", "Standing", "Walking"], 40, 40),
    "JapaneseVowels": (12, (7, 29), [str(k) for k in range(1, 10)], 270, 370),
    "GunPoint": (1, (150, 150), ["1", "2"], 50, 150),
}

VALID = """# a tiny dataset
% an ARFF-style comment, as some archive files have
@problemName Tiny
@timeStamps false
@missing false
@univariate false
@dimensions 2
@equalLength true
@seriesLength 4
@classLabel true a b
@data
1,2,3,4:5,6,7,8:a
0.5,0.25,-1,2e-3:1,1,1,1:b
9,8,7,6:5,4,3,2:a
"""


def _shared_root() -> Path | None:
    env = os.environ.get("CNNLAB_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if all((cand / "ucr" / name).is_dir() for name in FACTS):
            return cand
    return None


@pytest.fixture(scope="module")
def shared() -> dict[str, ucr.TimeSeriesData]:
    root = _shared_root()
    if root is None:
        pytest.skip("the UCR datasets are not in $CNNLAB_DATA/ucr or ../shared/data/ucr")
    if importlib.util.find_spec("sktime") is None:
        pytest.skip("sktime (the .ts reader) not installed")
    return {name: ucr.load_ucr(name, root, allow_download=False) for name in FACTS}


def write_pair(data_dir: Path, train: str | bytes, test: str = VALID, name: str = "Tiny") -> Path:
    folder = data_dir / "ucr" / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, text in (("TRAIN", train), ("TEST", test)):
        raw = text.encode() if isinstance(text, str) else text
        (folder / f"{name}_{split}.ts").write_bytes(raw)
    return folder


def hand_parse(path: Path) -> tuple[list[np.ndarray], list[str]]:
    """The test's own reading: cases (T, C) float32 and labels, as the file writes them."""
    lines = path.read_text().splitlines()
    body = [line for line in lines[lines.index("@data") + 1 :] if line.strip()]
    cases, labels = [], []
    for line in body:
        *channels, label = line.split(":")
        cases.append(np.array([[float(v) for v in c.split(",")] for c in channels]).T)
        labels.append(label.strip())
    return [c.astype(np.float32) for c in cases], labels


@pytest.mark.parametrize("name", list(FACTS))
def test_shared_dataset_matches_its_facts(shared: dict, name: str) -> None:
    data = shared[name]
    channels, (lo, hi), classes, n_train, n_test = FACTS[name]
    assert data.classes == classes and data.n_classes == len(classes)
    assert data.x_train.shape == (n_train, hi, channels) and data.n_channels == channels
    assert data.x_test.shape == (n_test, hi, channels)
    assert data.x_train.dtype == data.x_test.dtype == np.float32
    assert data.y_train.dtype == data.y_test.dtype == np.int64
    lengths = np.concatenate([data.lengths_train, data.lengths_test])
    assert (lengths.min(), lengths.max()) == (lo, hi)
    assert set(data.y_train.tolist()) == set(range(len(classes)))  # every class in TRAIN
    assert np.isfinite(data.x_train).all() and np.isfinite(data.x_test).all()
    for x, n in ((data.x_train, data.lengths_train), (data.x_test, data.lengths_test)):
        tail = np.arange(hi)[None, :] >= n[:, None]  # (N, T) padded steps
        assert not x[tail].any()  # zeros after each series' length


@pytest.mark.parametrize("name", list(FACTS))
def test_values_match_an_independent_reading(shared: dict, name: str) -> None:
    data = shared[name]
    for split, x, y, n in (
        ("TRAIN", data.x_train, data.y_train, data.lengths_train),
        ("TEST", data.x_test, data.y_test, data.lengths_test),
    ):
        path = data.source / f"{name}_{split}.ts"
        cases, labels = hand_parse(path)
        assert [data.classes[k] for k in y] == labels
        assert n.tolist() == [len(c) for c in cases]
        for i, case in enumerate(cases):
            np.testing.assert_array_equal(x[i, : len(case)], case)


def test_shared_files_are_the_checksummed_ones(shared: dict) -> None:
    root = next(iter(shared.values())).source.parent
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, rel = line.split()
        assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == digest, rel


def _replace(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new)


MALFORMED: dict[str, tuple[str | bytes, str]] = {
    "wrong dimensions": (_replace("@dimensions 2", "@dimensions 3"), "declares 3 channels"),
    "inconsistent dimensions": (_replace("9,8,7,6:5,4,3,2:a", "9,8,7,6:a"), "dimensions"),
    "missing label": (_replace("5,4,3,2:a", "5,4,3,2"), "does not parse"),
    "undeclared label": (_replace("5,4,3,2:a", "5,4,3,2:z"), "'z', not declared"),
    "truncated": (VALID[: VALID.index("9,8,7,6") + 5], "does not parse"),
    "unequal lengths": (_replace("9,8,7,6:5,4,3,2", "9,8,7:5,4,3"), "@equalLength true but has"),
    "ragged channels": (_replace("9,8,7,6:5,4,3,2", "9,8,7,6:5,4,3"), "channels of lengths [3, 4]"),
    "empty channel": (_replace("9,8,7,6:5,4,3,2", "9,8,7,6:"), "channels of lengths [0, 4]"),
    "empty case": (_replace("9,8,7,6:5,4,3,2", ":"), "case 3 is empty"),
    "truncated header": (VALID[: VALID.index("@classLabel") + 8], "no @data line"),
    "non-numeric": (_replace("0.5,0.25", "0.5,abc"), "could not convert string to float"),
    "missing value": (_replace("0.5,0.25", "0.5,?"), "missing value"),
    "infinite value": (_replace("0.5,0.25", "0.5,inf"), "infinite value"),
    "series length": (_replace("@seriesLength 4", "@seriesLength 5"), "@seriesLength 5"),
    "no class labels": (_replace("@classLabel true a b", "@classLabel false"), "no class labels"),
    "no labels listed": (_replace("@classLabel true a b", "@classLabel true"), "lists no labels"),
    "repeated label": (_replace("true a b", "true a A b"), "repeats a label"),
    "bad flag": (_replace("@equalLength true", "@equalLength maybe"), "must be true|false"),
    "timestamps": (_replace("@timeStamps false", "@timeStamps true"), "@timeStamps true"),
    "data before @data": ("1,2,3:a\n" + VALID, "data before the @data line"),
    "empty": ("", "is empty"),
    "binary": (b"\x00\x01\x02\n", "NUL bytes"),
    "not utf-8": (b"@problemName \xff\xfe\n@data\n", "not UTF-8"),
}


@needs_sktime
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_file_is_one_clear_line(isolated: Path, case: str) -> None:
    text, expected = MALFORMED[case]
    folder = write_pair(isolated, text)
    start = time.perf_counter()
    with pytest.raises(CnnlabError) as err:
        ucr.load_ucr("Tiny", isolated, allow_download=False)
    message = str(err.value)
    assert time.perf_counter() - start < 2.0
    assert "\n" not in message and len(message) < 400, message
    assert str(folder / "Tiny_TRAIN.ts") in message, message
    assert expected in message, message


def test_directory_or_missing_file_is_refused(isolated: Path) -> None:
    folder = write_pair(isolated, VALID)
    (folder / "Tiny_TRAIN.ts").unlink()
    (folder / "Tiny_TRAIN.ts").mkdir()
    with pytest.raises(CnnlabError, match="is a directory"):
        ucr.load_ucr("Tiny", isolated, allow_download=False)
    shutil.rmtree(folder / "Tiny_TRAIN.ts")
    with pytest.raises(CnnlabError, match=r"Tiny_TRAIN\.ts: not found"):
        ucr.load_ucr("Tiny", isolated, allow_download=False)


def test_huge_line_is_refused_before_parsing(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ts_budget, "MAX_LINE_BYTES", 10_000)
    monkeypatch.setattr(ts_budget, "CHUNK", 4096)  # the line spans chunks
    monkeypatch.setattr(ucr, "_parse", lambda path: pytest.fail("parsed a file with a huge line"))
    huge = _replace("9,8,7,6:5,4,3,2:a", ",".join(["1.0"] * 5000) + ":1:a")
    write_pair(isolated, huge)
    with pytest.raises(CnnlabError, match="line longer than 10000 bytes"):
        ucr.load_ucr("Tiny", isolated, allow_download=False)


def test_oversized_file_is_refused_before_reading(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ucr, "MAX_TS_BYTES", 100)
    write_pair(isolated, VALID)
    with pytest.raises(CnnlabError, match=r"a \.ts file is at most 100 bytes"):
        ucr.load_ucr("Tiny", isolated, allow_download=False)


@needs_sktime
def test_unequal_lengths_are_zero_padded_to_the_longest_of_train_and_test(
    isolated: Path,
) -> None:
    header = VALID.split("@data")[0].replace("@equalLength true", "@equalLength false")
    header = header.replace("@seriesLength 4\n", "").replace("true a b", "true 10 2 1")
    train = header + "@data\n1,2,3:4,5,6:10\n7:8:2\n1,1,1,1:2,2,2,2:1\n"
    test = header + "@data\n1,2,3,4,5,6,7:7,6,5,4,3,2,1:2\n"
    write_pair(isolated, train, test)
    data = ucr.load_ucr("Tiny", isolated, allow_download=False)
    assert data.classes == ["1", "2", "10"]  # integer labels in numeric order
    assert data.y_train.tolist() == [2, 1, 0] and data.y_test.tolist() == [1]
    assert data.x_train.shape == (3, 7, 2) and data.x_test.shape == (1, 7, 2)
    assert data.lengths_train.tolist() == [3, 1, 4] and data.lengths_test.tolist() == [7]
    np.testing.assert_array_equal(data.x_train[0, :, 1], [4, 5, 6, 0, 0, 0, 0])
    np.testing.assert_array_equal(data.x_train[1], [[7, 8]] + [[0, 0]] * 6)


@needs_sktime
def test_train_and_test_must_agree(isolated: Path) -> None:
    write_pair(isolated, VALID, _replace("true a b", "true a b c"))
    with pytest.raises(CnnlabError, match="different @classLabel"):
        ucr.load_ucr("Tiny", isolated, allow_download=False)


def test_search_order_and_not_found(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = isolated.parent / "cache" / "cnnlab" / "ucr"
    assert ucr.search_dirs(isolated) == [isolated / "ucr", cache]
    monkeypatch.setenv(ucr.DATA_ENV, str(isolated / "env"))
    assert ucr.search_dirs() == [isolated / "env" / "ucr", cache]
    assert ucr.locate("Tiny") is None
    (cache / "Tiny").mkdir(parents=True)
    (cache / "Tiny" / "Tiny_TEST.ts").write_text(VALID)
    assert ucr.locate("Tiny") == cache / "Tiny"
    with pytest.raises(CnnlabError, match=r"UCR dataset Nope not found \(looked in"):
        ucr.load_ucr("Nope", allow_download=False)
    with pytest.raises(CnnlabError, match="invalid UCR dataset name"):
        ucr.load_ucr("../Tiny")


def test_missing_sktime_is_a_clear_error(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sktime.datasets", None)  # import raises ImportError
    write_pair(isolated, VALID)
    with pytest.raises(CnnlabError, match=r"needs the 'timeseries' extra .*cnnlab\[timeseries\]"):
        ucr.load_ucr("Tiny", isolated, allow_download=False)


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, raw in members.items():
            zf.writestr(member, raw)
    return buf.getvalue()


def fake_fetch(payload: bytes, calls: list[str]) -> object:
    def fetch(url: str, dest: Path, max_bytes: int) -> None:  # ucr._fetch, offline
        calls.append(url)
        dest.write_bytes(payload)

    return fetch


@needs_sktime
def test_download_extracts_parses_and_moves_into_the_cache(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    payload = make_zip(
        {"Tiny_TRAIN.ts": VALID.encode(), "Tiny_TEST.ts": VALID.encode(), "Tiny_TRAIN.arff": b"x"}
    )
    monkeypatch.setattr(ucr, "_fetch", fake_fetch(payload, calls))
    data = ucr.load_ucr("Tiny", isolated)
    cache = isolated.parent / "cache" / "cnnlab" / "ucr"
    assert calls == ["https://timeseriesclassification.com/aeon-toolkit/Tiny.zip"]
    assert data.source == cache / "Tiny" and data.x_train.shape == (3, 4, 2)
    assert sorted(os.listdir(cache)) == ["Tiny"]  # no temporary folder left
    assert sorted(os.listdir(cache / "Tiny")) == ["Tiny_TEST.ts", "Tiny_TRAIN.ts"]
    monkeypatch.setattr(ucr, "_fetch", lambda *a: pytest.fail("downloaded again"))
    again = ucr.load_ucr("Tiny", isolated)
    np.testing.assert_array_equal(again.x_test, data.x_test)


BAD_ZIPS = {
    "path traversal": (
        {"../Tiny_TRAIN.ts": VALID.encode(), "Tiny_TEST.ts": VALID.encode()},
        "unsafe member path",
    ),
    "absolute path": ({"/etc/Tiny_TRAIN.ts": VALID.encode()}, "unsafe member path"),
    "member missing": ({"Tiny_TRAIN.ts": VALID.encode()}, "holds no Tiny_TEST.ts"),
    "does not parse": (
        {"Tiny_TRAIN.ts": b"@data\n1,2:a\n", "Tiny_TEST.ts": VALID.encode()},
        "declares no class labels",
    ),
    "zip bomb": (
        {"Tiny_TRAIN.ts": VALID.encode() + b" " * 2_000_000, "Tiny_TEST.ts": VALID.encode()},
        "over cnnlab's limit of 100000 bytes",
    ),
    "html page": (None, "not a readable zip"),
}


@pytest.mark.parametrize("case", list(BAD_ZIPS))
def test_bad_download_is_refused_and_leaves_nothing(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    members, expected = BAD_ZIPS[case]
    payload = b"<html>not found</html>" if members is None else make_zip(members)
    calls: list[str] = []
    monkeypatch.setattr(ucr, "_fetch", fake_fetch(payload, calls))
    monkeypatch.setattr(ucr, "MAX_TS_BYTES", 100_000)
    if case == "does not parse":
        monkeypatch.setattr(ucr, "_parse", lambda path: pytest.fail("should fail before"))
    with pytest.raises(CnnlabError) as err:
        ucr.load_ucr("Tiny", isolated)
    message = str(err.value)
    assert "\n" not in message and expected in message, message
    assert message.startswith("could not download UCR dataset Tiny")
    assert len(calls) == len(ucr.UCR_MIRRORS)  # every mirror tried
    cache = isolated.parent / "cache" / "cnnlab" / "ucr"
    assert os.listdir(cache) == []
    assert not (isolated.parent / "etc").exists()


class FakeResponse(io.BytesIO):
    def __init__(self, body: bytes, length: int | None) -> None:
        super().__init__(body)
        self.headers = {} if length is None else {"Content-Length": str(length)}


@pytest.mark.parametrize("declared", [None, 5_000_000, 500])
def test_fetch_is_size_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, declared: int | None
) -> None:
    body = b"x" * 3_000_000
    monkeypatch.setattr(
        ucr.urllib.request, "urlopen", lambda url, timeout: FakeResponse(body, declared)
    )
    with pytest.raises(ValueError, match="over"):
        ucr._fetch("https://example.invalid/T.zip", tmp_path / "T.zip", 1_000_000)
    if declared is None or declared < 4_000_000:
        ucr._fetch("https://example.invalid/T.zip", tmp_path / "T.zip", 4_000_000)
        assert (tmp_path / "T.zip").read_bytes() == body


def synthetic(counts: list[int]) -> ucr.TimeSeriesData:
    y = np.repeat(np.arange(len(counts)), counts).astype(np.int64)  # (N,)
    x = np.arange(len(y) * 3, dtype=np.float32).reshape(len(y), 3, 1)  # (N, 3, 1), row i holds i
    lengths = np.full(len(y), 3, dtype=np.int64)
    classes = [f"c{k}" for k in range(len(counts))]
    return ucr.TimeSeriesData("Syn", x, y, x[:2], y[:2], classes, lengths, lengths[:2], Path())


def test_split_is_stratified_seeded_and_from_train_only() -> None:
    data = synthetic([20, 12, 8])
    x_tr, y_tr, x_val, y_val, x_te, y_te = ucr.ucr_splits(data, seed=3, val_fraction=0.25)
    assert x_te is data.x_test and y_te is data.y_test
    assert np.bincount(y_val).tolist() == [5, 3, 2] and np.bincount(y_tr).tolist() == [15, 9, 6]
    rows = np.concatenate([x_tr[:, 0, 0], x_val[:, 0, 0]]) / 3  # which TRAIN rows went where
    assert sorted(rows.tolist()) == list(range(40))  # a partition of TRAIN
    again = ucr.ucr_split_indices(data.y_train, 3, 0.25)
    other = ucr.ucr_split_indices(data.y_train, 4, 0.25)
    np.testing.assert_array_equal(again[1] * 3, x_val[:, 0, 0])
    assert not np.array_equal(np.sort(again[1]), np.sort(other[1]))


def test_split_keeps_singleton_classes_in_train_and_refuses_impossible_ones() -> None:
    train, val = ucr.ucr_split_indices(synthetic([6, 1, 4]).y_train, 0, 0.3)
    assert 6 in train.tolist() and 6 not in val.tolist()  # the single example of class 1
    assert sorted(train.tolist() + val.tolist()) == list(range(11))
    with pytest.raises(CnnlabError, match="cannot split 8 TRAIN examples of 4 classes"):
        ucr.ucr_split_indices(synthetic([2, 2, 2, 2]).y_train, 0, 0.1)
    with pytest.raises(CnnlabError, match="leaves no TRAIN example of class"):
        ucr.ucr_split_indices(synthetic([2, 9]).y_train, 0, 0.8)
    with pytest.raises(CnnlabError, match="no class has two"):
        ucr.ucr_split_indices(synthetic([1, 1]).y_train, 0, 0.5)
    with pytest.raises(CnnlabError, match="between 0 and 1"):
        ucr.ucr_split_indices(synthetic([4, 4]).y_train, 0, 1.0)


def test_split_of_a_shared_dataset(shared: dict) -> None:
    data = shared["JapaneseVowels"]
    _, y_tr, _, y_val, x_te, _ = ucr.ucr_splits(data, seed=42, val_fraction=0.25)
    assert len(y_tr) + len(y_val) == 270 and x_te.shape == (370, 29, 12)
    assert set(np.bincount(y_val).tolist()) <= {7, 8}  # 30 per speaker, stratified
