"""The HTML report: self-contained, every section present, caches reused, CLI errors clear."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import pytest
from analysis.test_explain import SERIES, train_user_run, write_untrained_run

from cnnlab import fileio
from cnnlab.analysis import baselines
from cnnlab.analysis.baselines import BaselineConfig, run_baselines
from cnnlab.analysis.shift import ShiftConfig
from cnnlab.cli import main
from cnnlab.data import MNIST, Splits
from cnnlab.report import report
from cnnlab.report.report import ReportConfig, build_report, md_to_html

SMALL_SHIFT = ShiftConfig(max_shift=1, n_images=30, invariance_images=4)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory, tiny_splits: Splits) -> Path:
    return train_user_run(tmp_path_factory.mktemp("mine"), tiny_splits)


@pytest.fixture(scope="module")
def baselines_file(tmp_path_factory: pytest.TempPathFactory, tiny_splits: Splits) -> Path:
    path = tmp_path_factory.mktemp("baselines") / "baselines.json"
    baselines.save(run_baselines(BaselineConfig(), tiny_splits, log=lambda _m: None), path)
    return path


def _copy_runs(tiny_run: dict[str, Path], tmp_path: Path, cases: list[str]) -> list[Path]:
    out = []
    for case in cases:
        shutil.copytree(tiny_run[case], tmp_path / case)
        out.append(tmp_path / case)
    return out


def _images(page: str) -> list[str]:
    return re.findall(r'<img alt="[^"]*" src="([^"]+)"', page)


def test_single_run_report_is_self_contained(
    tiny_run: dict[str, Path], tiny_mnist: MNIST, tmp_path: Path, baselines_file: Path
) -> None:
    (run,) = _copy_runs(tiny_run, tmp_path, ["case1"])
    config = ReportConfig(index=2, shift=SMALL_SHIFT, baselines=baselines_file)
    html_path, md_path = build_report([run], tiny_mnist, run / "report.html", config)
    page = html_path.read_text()
    srcs = _images(page)
    # curves, confusion, overview, 4 map grids, 2 kernel grids, shift
    assert len(srcs) == 10
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    # No external assets of any kind.
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "http://" not in page and "https://" not in page
    for heading in (
        "Baselines",
        "Accuracy (%) under input shifts",
        "Equivariance and local invariance per layer",
        "Receptive fields and parameters",
        "NumPy engine vs PyTorch",
        "HOG + logistic regression",
        "CNN case1",
    ):
        assert heading in page, heading
    assert (run / "shift.json").is_file() and (run / "numpy_check.json").is_file()
    assert (run / "confusion.json").is_file()
    assert (run / "explain" / "test-2" / "overview.png").is_file()
    md = md_path.read_text()
    assert md.startswith("# cnnlab report: case1") and "| conv1 | Conv2D | 26x26x16 |" in md
    assert "| pool1 (MaxPooling2D 2x2) | 2 |" in md


def test_report_of_a_users_own_run(
    user_run: Path, tiny_mnist: MNIST, tmp_path: Path, baselines_file: Path
) -> None:
    run = tmp_path / "mine"
    shutil.copytree(user_run, run)
    figures = tmp_path / "figures"
    config = ReportConfig(shift=SMALL_SHIFT, baselines=baselines_file, figures_dir=figures)
    html_path, md_path = build_report([run], tiny_mnist, run / "report.html", config)
    page, md = html_path.read_text(), md_path.read_text()
    assert len(_images(page)) == 10  # curves, confusion, overview, 4 map grids, 2 kernels, shift
    assert "<h2>mine (mine)</h2>" in page and "CNN mine (mine)" in page
    assert "Feature maps of p1" in page and "Kernels of c2" in page
    assert md.startswith("# cnnlab report: mine")
    # Receptive fields from the run's own description: 5x5 stride 2 same, 3x3 pool stride 1
    # (5 + 2*2 = 9), dilation 2 (9 + 4*2 = 17), a 2x2 average pool (17 + 2 = 19).
    for row in (
        "| c1 | Conv2D | 14x14x6 | 5x5 | 2 | 156 |",
        "| bn | BatchNormalization | 14x14x6 | 5x5 | 2 | 24 |",
        "| p1 | MaxPooling2D | 14x14x6 | 9x9 | 2 | 0 |",
        "| c2 | Conv2D | 10x10x8 | 17x17 | 2 | 440 |",
        "| p2 | AveragePooling2D | 9x9x8 | 19x19 | 2 | 0 |",
        "| c1 (Conv2D 5x5 stride 2, same, tanh, BatchNormalization) | 2 |",
        "| c2 (Conv2D 3x3 dilation 2, relu) | 2 |",
    ):
        assert row in md, row
    check = fileio.read_json(run / "numpy_check.json")
    assert check["passed"] and check["model"] == "mine" and check["inputs"] == "test images"
    assert {"mine_kernels_c1.png", "mine_feature_maps.png", "mine_shift.png"} <= {
        p.name for p in figures.iterdir()
    }


def test_metrics_model_name_comes_first(
    tiny_run: dict[str, Path], tiny_mnist: MNIST, tmp_path: Path
) -> None:
    (run,) = _copy_runs(tiny_run, tmp_path, ["case2"])
    metrics = fileio.read_json(run / "metrics.json")
    fileio.write_json(run / "metrics.json", metrics | {"model": "renamed", "case": "old"})
    config = ReportConfig(shift=SMALL_SHIFT, verify=False)
    build_report([run], tiny_mnist, run / "r.html", config)
    assert "<h2>renamed (case2)</h2>" in (run / "r.html").read_text()
    fileio.write_json(run / "metrics.json", {"case": "older"})  # before model descriptions
    build_report([run], tiny_mnist, run / "r.html", config)
    assert "<h2>older (case2)</h2>" in (run / "r.html").read_text()


def test_comparison_report_and_figures(
    tiny_run: dict[str, Path], tiny_mnist: MNIST, tmp_path: Path
) -> None:
    run_dirs = _copy_runs(tiny_run, tmp_path, ["case1", "case2", "case3"])
    figures = tmp_path / "figures"
    config = ReportConfig(shift=SMALL_SHIFT, verify=False, figures_dir=figures)
    out = tmp_path / "cmp" / "report.html"
    out.parent.mkdir()
    build_report(run_dirs, tiny_mnist, out, config)
    page = out.read_text()
    assert page.count("<h2>case") == 3 and "<h2>Comparison</h2>" in page
    assert "No baselines file given" in page and "NumPy engine check skipped" in page
    names = {p.name for p in figures.iterdir()}
    for case in ("case1", "case2", "case3"):
        for what in ("curves", "confusion", "feature_maps", "kernels_conv1", "shift"):
            assert f"{case}_{what}.png" in names
    assert {"compare_curves.png", "compare_shift.png"} <= names
    assert all(p.stat().st_size < 300_000 for p in figures.iterdir())


def test_cached_results_are_reused(
    tiny_run: dict[str, Path],
    tiny_mnist: MNIST,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (run,) = _copy_runs(tiny_run, tmp_path, ["case2"])
    config = ReportConfig(shift=SMALL_SHIFT)
    build_report([run], tiny_mnist, run / "report.html", config)

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("recomputed despite a valid cache")

    monkeypatch.setattr(report, "verify_run", boom)
    monkeypatch.setattr(report, "plot_confusion", boom)
    build_report([run], tiny_mnist, run / "again.html", config)
    assert (run / "again.html").is_file()


def test_md_to_html_tables() -> None:
    html = md_to_html("intro <b>\n\n| a | b |\n|---|---|\n| 1 | x<y |\n")
    assert "<p>intro &lt;b&gt;</p>" in html
    assert "<th>a</th><th>b</th>" in html and "<td>x&lt;y</td>" in html


def test_cli_report_errors(
    tiny_run: dict[str, Path],
    synthetic_data: MNIST,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no best.pt" in capsys.readouterr().err
    series = write_untrained_run(tmp_path / "series", SERIES, "series")
    assert main(["report", str(series)]) == 2
    err = capsys.readouterr().err
    assert "series: the network takes 20x3 inputs, the data (mnist) has 28x28x1" in err
    assert err.count("\n") == 1
    (run,) = _copy_runs(tiny_run, tmp_path, ["case3"])
    missing = tmp_path / "none.json"
    assert main(["report", str(run), "--baselines", str(missing)]) == 2
    assert "not found" in capsys.readouterr().err
    args = ["report", str(run), "--max-shift", "1", "--shift-images", "20", "--no-verify"]
    assert main([*args, "--index", "99999"]) == 2
    assert "test index must be in" in capsys.readouterr().err
    assert main(args) == 0
    assert (run / "report.html").is_file() and (run / "report.md").is_file()


def test_runs_without_history_like_keras_imports(
    tiny_run: dict[str, Path], tiny_mnist: MNIST, tmp_path: Path
) -> None:

    run_dirs = _copy_runs(tiny_run, tmp_path, ["case1", "case3"])
    for run in run_dirs:
        for name in ("history.csv", "curves.png", "last.pt"):
            (run / name).unlink()
        fileio.write_json(
            run / "metrics.json",
            {"best_epoch": 0, "params": 1, "imported_from": {"file": "m.keras"}},
        )
    out = tmp_path / "report.html"
    build_report(run_dirs, tiny_mnist, out, ReportConfig(shift=SMALL_SHIFT, verify=False))
    page = out.read_text()
    assert "Keras import (m.keras)" in page and "Learning curves" not in page
    assert not (tmp_path / "report_curves.png").exists()
