"""The browser tests' shared Chromium (one per test module)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .browser import CHROMEDRIVER, CHROMIUM, chromium


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("chromium/chromedriver not installed: apt-get install chromium chromium-driver")
    yield from chromium(tmp_path_factory.mktemp("chromium-profile"))
