"""compare: the table from finished runs, including imported ones without a training record."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from cnnlab import fileio
from cnnlab.errors import CnnlabError
from cnnlab.report.compare import compare


def test_compare_trained_and_imported_runs(tiny_run: dict[str, Path], tmp_path: Path) -> None:
    imported = tmp_path / "imported"
    imported.mkdir()
    fileio.write_json(
        imported / "metrics.json",
        {"model": "case2", "params": 3210, "test_accuracy": 0.7752, "test_loss": 0.69},
    )
    table = compare([tiny_run["case1"], imported], tmp_path)
    lines = table.splitlines()
    assert len(lines) == 4 and "| case1 | 61,002 | 2 |" in lines[2]
    assert lines[3].startswith("| imported | case2 | 3,210 | - | - | - | - | 77.52% | 0.6900 |")
    assert (tmp_path / "compare.png").stat().st_size > 0
    # Files the run writes are readable by others, as open() would make them.
    assert stat.S_IMODE((tmp_path / "compare.md").stat().st_mode) & 0o044 == 0o044


def test_compare_refuses_unfinished_runs(tiny_run: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match=r"has no metrics\.json"):
        compare([tmp_path], tmp_path)
    run = tmp_path / "run"
    shutil.copytree(tiny_run["case3"], run)
    fileio.write_json(run / "metrics.json", {"case": "case3", "params": 10090})
    with pytest.raises(CnnlabError, match="no test metrics yet"):
        compare([run], tmp_path)
