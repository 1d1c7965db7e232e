"""Fixtures shared by the UCR/UEA tests (test_ucr.py, test_ucr_shipped.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnlab.data import ucr


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $CNNLAB_DATA, an empty user cache; returns a data_dir whose ucr/ is empty.

    Modules with a search of their own (test_data.py, test_store.py, ...) define their own
    ``isolated``, which takes precedence there."""
    monkeypatch.delenv(ucr.DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "data" / "ucr").mkdir(parents=True)
    return tmp_path / "data"
