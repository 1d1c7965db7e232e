"""Where dataset files are searched, and the capped, checked, atomic download."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from cnnlab.data import store
from cnnlab.errors import CnnlabError


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(store.DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def test_search_order(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = isolated / "xdg" / "cnnlab" / "kmnist"
    assert store.search_dirs("kmnist") == [cache]
    monkeypatch.setenv(store.DATA_ENV, str(isolated / "shared"))
    assert store.search_dirs("kmnist") == [isolated / "shared" / "kmnist", cache]
    assert store.search_dirs("kmnist", isolated / "given") == [isolated / "given" / "kmnist", cache]
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert store.cache_root() == Path.home() / ".cache" / "cnnlab"


def test_locate_finds_the_first_candidate(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(store.DATA_ENV, str(isolated / "shared"))
    cache = isolated / "xdg" / "cnnlab" / "x"
    cache.mkdir(parents=True)
    (cache / "f.gz").write_bytes(b"1")
    assert store.locate("x", ["f.gz", "f"]) == cache / "f.gz"
    (isolated / "shared" / "x").mkdir(parents=True)
    (isolated / "shared" / "x" / "f").symlink_to(isolated / "nowhere")  # found: then refused
    assert store.locate("x", ["f.gz", "f"]) == isolated / "shared" / "x" / "f"
    assert store.locate("y", ["f"]) is None


def test_check_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    digest = hashlib.sha256(b"abc").hexdigest()
    store.check_file(path, 3, digest)
    with pytest.raises(ValueError, match="3 bytes, expected 4"):
        store.check_file(path, 4, digest)
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        store.check_file(path, 3, "0" * 64)


def test_download_tries_mirrors_checks_and_renames(tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "f.bin"
    calls: list[str] = []

    def fetcher(url: str, tmp: Path) -> None:
        calls.append(url)
        tmp.write_bytes(b"good" if url == "b" else b"bad")

    def check(tmp: Path) -> None:
        if tmp.read_bytes() != b"good":
            raise ValueError("SHA-256 mismatch")

    got = store.download(["a", "b"], dest, max_bytes=10, check=check, what="f", hint="h",
                         fetcher=fetcher)  # fmt: skip
    assert got == dest and dest.read_bytes() == b"good" and calls == ["a", "b"]
    assert [p.name for p in dest.parent.iterdir()] == ["f.bin"]
    dest.unlink()
    with pytest.raises(
        CnnlabError, match=r"could not download f \(a: SHA-256 mismatch; c: .*\); h"
    ):
        store.download(["a", "c"], dest, max_bytes=10, check=check, what="f", hint="h",
                       fetcher=fetcher)  # fmt: skip
    assert list(dest.parent.iterdir()) == []  # no partial file, no temporary left


class Response(io.BytesIO):
    def __init__(self, body: bytes, length: int | None) -> None:
        super().__init__(body)
        self.headers = {} if length is None else {"Content-Length": str(length)}


@pytest.mark.parametrize("declared", [None, 100, 10_000_000])
def test_fetch_stops_at_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, declared: int | None
) -> None:
    body = b"x" * 5000
    monkeypatch.setattr(
        store.urllib.request, "urlopen", lambda url, timeout: Response(body, declared)
    )
    with pytest.raises(ValueError, match="over"):
        store.fetch("https://example.invalid/f", tmp_path / "f", 4000, progress=False)
    if declared != 10_000_000:
        store.fetch("https://example.invalid/f", tmp_path / "f", 6000, progress=False)
        assert (tmp_path / "f").read_bytes() == body
