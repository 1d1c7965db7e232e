"""One self-contained HTML page per run or comparison: every figure embedded as a data URI.

For each run the page shows the learning curves, the summary table, the confusion matrix
(with the class names), what the network computes for one test example (the feature maps
and kernels of an image, the maps and class activation map of a series, the maps of a
clip), for networks of images the shift-robustness heat map and per-layer fractions, the
receptive fields and parameter counts, and the NumPy engine's agreement with PyTorch; then
the baselines table where cached baselines were made on the run's data (MNIST). Each run is
scored on its own test set (:class:`~cnnlab.analysis.run_data.RunTestSet`), so runs on
different data may share a page. Whatever a run folder lacks is computed once and stored in
it (``confusion.json``, ``shift.json``, ``numpy_check.json``, ``explain/``) with what it was
computed from (best.pt's SHA-256, the test data, the settings), and reused while those agree
unless ``recompute``; a damaged file is computed again after one warning line. Baselines are
read from their file, never retrained here. A Markdown twin (``.md``) holds the tables
for the README.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab import fileio
from cnnlab.analysis import baselines
from cnnlab.analysis.layer_walk import feature_map_layers
from cnnlab.analysis.metrics import confusion_matrix
from cnnlab.analysis.numpy_check import cached_check, verify_run
from cnnlab.analysis.receptive import layer_table
from cnnlab.analysis.receptive import markdown as receptive_markdown
from cnnlab.analysis.run_data import RunTestSet
from cnnlab.analysis.shift import (
    ShiftConfig,
    ShiftGrid,
    Tick,
    plot_shift_grids,
    run_shift,
    torch_predictor,
)
from cnnlab.data import MNIST, Dataset
from cnnlab.engine.numpy_engine import NumpyModel, from_torch
from cnnlab.errors import CnnlabError
from cnnlab.models import Network
from cnnlab.plots import plot_compare, plot_confusion
from cnnlab.report.page import figure, md_to_html, page
from cnnlab.report.sections import (
    SUMMARY_COLUMNS,
    baseline_md,
    export_figures,
    run_html,
    run_md,
    summary_table,
)
from cnnlab.train import checkpoint, runs
from cnnlab.train.schemas import read_metrics

Log = Callable[[str], None]
Step = Callable[[str], AbstractContextManager[object]]  # a section's timing, shown by the CLI
TickFor = Callable[[str], Tick | None]  # a loop's (done, total) hook, by what it computes


@dataclass(frozen=True)
class ReportConfig:
    """What goes into a report and how much of the test set each experiment uses."""

    index: int = 0  # the test example whose feature maps are shown
    shift: ShiftConfig = field(default_factory=ShiftConfig)
    baselines: Path | None = None  # a baselines.json cache file
    verify: bool = True  # run (or reuse) the NumPy engine check on the whole test set
    figures_dir: Path | None = None  # also copy the main figures here (for the README)
    log: Log | None = None  # one line per stage (what is computed, about how long)
    progress: bool | None = False  # bars for the long loops (None: on a terminal)
    step: Step | None = None  # wraps each section of each run (the CLI: a line when done)
    tick: TickFor | None = None  # lines for the long loops where there are no bars
    recompute: bool = False  # compute the run's stored results (shift grid, ...) again


@dataclass
class RunPart:
    """Everything the page shows about one run."""

    run_dir: Path
    summary: dict[str, Any]
    images: dict[str, Path]  # title -> PNG
    shift: dict[str, Any] | None  # None: not a network of images
    numpy_check: dict[str, Any] | None
    receptive_md: str
    test: RunTestSet
    notes: list[str] = field(default_factory=list)  # sections left out, and why

    @property
    def on_mnist(self) -> bool:
        return self.test.spec == "mnist"


def _summary(run_dir: Path, name: str, cm: np.ndarray, test: RunTestSet) -> dict[str, Any]:
    """One row of the summary table; tolerant of runs imported from Keras (no history).
    The network's name is metrics.json's "model" (else its older "case", else the
    checkpoint's). The test accuracy is the confusion matrix's, so every number agrees."""
    m: dict[str, Any] = read_metrics(run_dir) if (run_dir / "metrics.json").exists() else {}
    imported = m.get("imported_from")
    named = next((m[k] for k in ("model", "case") if isinstance(m.get(k), str)), name)
    return {
        "run": run_dir.name,
        "model": named,
        "source": f"Keras import ({imported['file']})" if imported else "cnnlab train",
        "params": m.get("params"),
        "epochs": m.get("epochs_run"),
        "best epoch": m.get("best_epoch") or None,  # 0: unknown (imported)
        "train s": m.get("train_seconds"),
        "test accuracy": float(np.trace(cm) / cm.sum()),
        "test loss": m.get("test_loss"),
        "data": test.spec,
    }


def _say(config: ReportConfig, line: str) -> None:
    if config.log is not None:
        config.log(line)


def _step(config: ReportConfig, what: str) -> AbstractContextManager[object]:
    return config.step(what) if config.step is not None else nullcontext()


def _confusion(
    run_dir: Path, model: Network, name: str, test: RunTestSet, config: ReportConfig
) -> tuple[Path, np.ndarray]:
    """Confusion matrix of the best model on the test set, and its PNG; cached in the run."""
    png, cache = run_dir / "confusion.png", run_dir / "confusion.json"
    k = len(test.classes)  # the network's outputs, named
    try:  # a cache: one that is missing, unreadable or of other data is recomputed
        stored = png.is_file() and cache.is_file() and not config.recompute
        cm = np.asarray(fileio.read_json(cache), dtype=np.int64) if stored else None
    except (CnnlabError, ValueError, TypeError, OverflowError):
        _say(config, f"warning: {cache} is damaged; computing the confusion matrix again")
        cm = None
    per_class = np.bincount(test.y, minlength=k)  # the true classes' counts: the rows' sums
    if cm is not None and cm.shape == (k, k) and np.array_equal(cm.sum(1), per_class):
        _say(config, f"confusion matrix of {run_dir}: reused from {cache.name}")
        return png, cm
    _say(config, f"confusion matrix of {run_dir}: {len(test):,} test {test.plural}")
    predict = torch_predictor(model)
    pred = np.concatenate([predict(x) for x, _ in test.batches()])
    cm = confusion_matrix(test.y, pred, k)
    acc = float(np.trace(cm) / cm.sum())
    fileio.write_json(run_dir / "confusion.json", cm.tolist())
    plot_confusion(cm, png, title=f"{name}: test accuracy {acc:.4f}", classes=test.classes)
    return png, cm


def _numpy_check(run_dir: Path, test: RunTestSet, config: ReportConfig) -> dict[str, Any]:
    try:
        found = None if config.recompute else cached_check(run_dir, test)
    except CnnlabError as exc:  # a damaged numpy_check.json: checked again
        _say(config, f"warning: {exc}; checking the NumPy engine again")
        found = None
    if found is not None:
        _say(config, f"NumPy engine check of {run_dir}: reused from numpy_check.json")
        return dict(found)
    _say(config, f"NumPy engine against PyTorch on {run_dir}: {len(test):,} test {test.plural}")
    tick = config.tick(f"NumPy check of {run_dir.name}") if config.tick is not None else None
    return verify_run(run_dir, test, progress=config.progress, tick=tick)


def _titles(paths: list[Path]) -> dict[str, Path]:
    """Figure titles of explain's files: overview, "Feature maps of X", "Kernels of X"."""
    out = {}
    for path in paths:
        if path.name == "overview.png":
            out["Feature maps: overview"] = path
        elif path.name == "cam.png":
            out["Class activation map"] = path
        elif path.stem.startswith("maps_"):
            out[f"Feature maps of {path.stem[len('maps_') :]}"] = path
        else:
            out[f"Kernels of {path.stem[len('kernels_') :]}"] = path
    return out


def _explain(
    engine: NumpyModel, run_dir: Path, test: RunTestSet, index: int, notes: list[str]
) -> list[Path]:
    """What ``cnnlab explain RUN --index N`` writes, by the network's kind of maps."""
    desc = engine.description
    if not feature_map_layers(desc):
        notes.append(f"No feature maps: {desc.name} has no convolution or pooling layer.")
        return []
    label = test.name(int(test.y[index]))
    source = f"test {test.what} #{index} (label {label})"
    out, x = run_dir / "explain" / f"test-{index}", test.inputs(index, index + 1)[0]
    if desc.rank == 1:
        from cnnlab.analysis.explain_series import explain_series

        return explain_series(engine, x, out, source, test.classes)
    if desc.rank == 3:
        from cnnlab.analysis.explain_video import explain_clip

        return explain_clip(engine, x, out, source, test.classes)
    from cnnlab.analysis.explain import explain_image

    return explain_image(engine, x, out, source, test.classes)


def _receptive(desc: Any) -> str:
    try:
        return receptive_markdown(layer_table(desc))  # geometry only
    except CnnlabError as exc:  # a layer without a receptive-field rule, say
        return f"No receptive-field table: {exc}\n"


def prepare_run(run_dir: Path, data: MNIST | Dataset, config: ReportConfig) -> RunPart:
    """Compute (or reuse) every artefact of ``run_dir`` that its report section needs."""
    run_dir = Path(run_dir)
    model, ckpt = checkpoint.load_model(run_dir, "best")
    desc, name = model.description, checkpoint.run_name(ckpt)
    test = RunTestSet.of(run_dir, desc, data)
    if not 0 <= config.index < len(test):
        raise CnnlabError(
            f"{run_dir}: test index must be in 0..{len(test) - 1}, got {config.index}"
        )
    notes: list[str] = []
    images: dict[str, Path] = {}
    if (run_dir / "curves.png").is_file():
        images["Learning curves"] = run_dir / "curves.png"
    with _step(config, f"evaluation of {run_dir.name}"):
        images["Confusion matrix (test set)"], cm = _confusion(run_dir, model, name, test, config)
    summary = _summary(run_dir, name, cm, test)
    with _step(config, f"feature maps of {run_dir.name}"):
        _say(config, f"feature maps of {run_dir}: test {test.what} #{config.index}")
        images |= _titles(_explain(from_torch(model), run_dir, test, config.index, notes))
    shift = None
    if desc.rank == 2:
        with _step(config, f"shift grid of {run_dir.name}"):
            tick = config.tick(f"shift grid of {run_dir.name}") if config.tick is not None else None
            shift = run_shift(
                run_dir,
                test,
                config.shift,
                log=config.log,
                progress=config.progress,
                tick=tick,
                recompute=config.recompute,
            )
        images["Shift robustness"] = run_dir / "shift.png"
    else:
        notes.append(f"No shift robustness: it is measured for networks of images; "
                     f"{desc.name} takes {test.plural}.")  # fmt: skip
    check = None
    if config.verify:
        with _step(config, f"NumPy engine check of {run_dir.name}"):
            check = _numpy_check(run_dir, test, config)
    return RunPart(run_dir, summary, images, shift, check, _receptive(desc), test, notes)


DataFor = MNIST | Dataset | Mapping[Path, Dataset]


def _check_baselines(config: ReportConfig) -> None:
    """Say where the baselines come from, before the long work (a damaged file: a warning;
    the page then says how to make it again)."""
    if config.baselines is None:
        return
    try:
        baselines.load(config.baselines)
    except CnnlabError as exc:
        _say(config, f"warning: {exc}; the page shows no baselines")
        return
    _say(config, f"baselines: reused from {config.baselines} (made by cnnlab baselines)")


def _data(data: DataFor, run_dir: Path) -> MNIST | Dataset:
    if isinstance(data, MNIST | Dataset):
        return data
    return data[run_dir]


def build_report(
    run_dirs: list[Path], data: DataFor, out_html: Path, config: ReportConfig
) -> list[Path]:
    """Write the HTML page (and its Markdown twin) for one or several runs; their paths.

    ``data``: every run's dataset (MNIST itself or any Dataset), or one per run folder."""
    if not run_dirs:
        raise CnnlabError("no run folders given")
    out_html = Path(out_html)
    try:  # before the long computations, so a bad --out fails fast
        out_html.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnlabError(f"cannot create {out_html.parent}: {exc.strerror or exc}") from exc
    _check_baselines(config)
    parts = [prepare_run(d, _data(data, d), config) for d in run_dirs]
    with _step(config, "page"):
        return _write(parts, out_html, config)


def _write(parts: list[RunPart], out_html: Path, config: ReportConfig) -> list[Path]:
    """The page, its Markdown twin and the copied figures, from the runs' parts."""
    with_data = not all(p.on_mnist for p in parts)  # runs on MNIST alone: as before
    mds = [run_md(p, with_data) for p in parts]
    base_md = baseline_md(config.baselines, parts)
    body: list[str] = []
    extra: dict[str, Path] = {}
    columns = (*SUMMARY_COLUMNS, "data") if with_data else SUMMARY_COLUMNS
    if len(parts) > 1:
        names = [p.summary["model"] for p in parts]
        labels = {  # two runs of one network (or two inline descriptions) told apart
            id(p): n if names.count(n) == 1 else f"{n} ({p.run_dir.name})"
            for p, n in zip(parts, names, strict=True)
        }
        title = "cnnlab report: " + ", ".join(labels[id(p)] for p in parts)
        compare_png = out_html.with_name(out_html.stem + "_curves.png")
        histories = {
            labels[id(p)]: runs.read_history(p.run_dir / "history.csv")
            for p in parts
            if (p.run_dir / "history.csv").is_file()
        }
        body += [
            "<h2>Comparison</h2>",
            md_to_html(summary_table([p.summary for p in parts], columns)),
        ]
        if histories:  # runs imported from Keras have no training history
            plot_compare(histories, compare_png)
            extra["compare_curves.png"] = compare_png
            body.append(figure("Learning curves (validation solid, training dashed)", compare_png))
        grids = {labels[id(p)]: ShiftGrid.from_dict(p.shift["grid"]) for p in parts if p.shift}
        if grids:
            shift_png = out_html.with_name(out_html.stem + "_shift.png")
            plot_shift_grids(grids, shift_png)
            extra["compare_shift.png"] = shift_png
            body.append(figure("Shift robustness", shift_png))
    else:
        title = f"cnnlab report: {parts[0].summary['model']} ({parts[0].run_dir.name})"
    body += ["<h2>Baselines: hand-crafted features vs embedded feature extraction</h2>"]
    body.append(md_to_html(base_md))
    for p in parts:
        body.append(f"<h2>{html.escape(p.summary['model'])} ({html.escape(p.run_dir.name)})</h2>")
        body += run_html(p, with_data, columns)
    fileio.write_text(out_html, page(title, body))
    out_md = out_html.with_suffix(".md")
    fileio.write_text(out_md, f"# {title}\n\n## Baselines\n\n{base_md}\n" + "\n".join(mds))
    if config.figures_dir is not None:
        export_figures(parts, extra, Path(config.figures_dir))
    return [out_html, out_md]
