"""One self-contained HTML page per run or comparison: every figure embedded as a data URI.

For each run the page shows the learning curves, the summary table, the confusion matrix,
the feature maps and kernels of one test image, the shift-robustness heat map and per-layer
fractions, the receptive fields and parameter counts, the NumPy engine's agreement with
PyTorch, and the baselines table. All of it derives from the description in the run's
checkpoint: any network taking 28x28x1 images works. Whatever a run folder lacks is
computed once and cached in it (``confusion.json``, ``shift.json``, ``numpy_check.json``,
``explain/``); baselines are read from their cache file, never retrained here. A Markdown
twin (``.md``) holds the tables for the README.
"""

from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab import fileio
from cnnlab.analysis import baselines
from cnnlab.analysis.explain import explain_image
from cnnlab.analysis.metrics import confusion_matrix
from cnnlab.analysis.numpy_check import cached_check, takes_mnist, verify_run
from cnnlab.analysis.receptive import layer_table
from cnnlab.analysis.receptive import markdown as receptive_markdown
from cnnlab.analysis.shift import (
    ShiftConfig,
    ShiftGrid,
    markdown_grid,
    markdown_layers,
    plot_shift_grids,
    run_shift,
    torch_predictor,
)
from cnnlab.data import MNIST, scale
from cnnlab.engine.numpy_engine import from_torch
from cnnlab.errors import CnnlabError
from cnnlab.models import Network
from cnnlab.plots import plot_compare, plot_confusion
from cnnlab.train import checkpoint, runs
from cnnlab.train.schemas import read_metrics, read_run


@dataclass(frozen=True)
class ReportConfig:
    """What goes into a report and how much of the test set each experiment uses."""

    index: int = 0  # the test image whose feature maps are shown
    shift: ShiftConfig = field(default_factory=ShiftConfig)
    baselines: Path | None = None  # a baselines.json cache file
    verify: bool = True  # run (or reuse) the NumPy engine check on the whole test set
    figures_dir: Path | None = None  # also copy the main figures here (for the README)


@dataclass
class RunPart:
    """Everything the page shows about one run."""

    run_dir: Path
    summary: dict[str, Any]
    images: dict[str, Path]  # title -> PNG
    shift: dict[str, Any]
    numpy_check: dict[str, Any] | None
    receptive_md: str


SUMMARY_COLUMNS: tuple[str, ...] = ("run", "model", "source", "params", "epochs")
SUMMARY_COLUMNS += ("best epoch", "train s", "test accuracy", "test loss")


def _summary(run_dir: Path, name: str, cm: np.ndarray) -> dict[str, Any]:
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
    }


def summary_table(rows: list[dict[str, Any]]) -> str:
    """The summary rows as a Markdown table; unknown values as "-"."""

    def cell(key: str, v: Any) -> str:
        if v is None:
            return "-"
        if key == "params":
            return f"{v:,}"
        if key == "test accuracy":
            return f"{100 * v:.2f}%"
        if key == "test loss":
            return f"{v:.4f}"
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join(cell(k, r[k]) for k in SUMMARY_COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _confusion(run_dir: Path, model: Network, name: str, mnist: MNIST) -> tuple[Path, np.ndarray]:
    """Confusion matrix of the best model on the test set, and its PNG; cached in the run."""
    png, cache = run_dir / "confusion.png", run_dir / "confusion.json"
    k = max(10, model.description.output_shape[0])  # a network may have more outputs
    try:  # a cache: one that is missing, unreadable or of other data is recomputed
        cm = np.asarray(fileio.read_json(cache), dtype=np.int64) if png.is_file() else None
    except (CnnlabError, ValueError, TypeError, OverflowError):
        cm = None
    if cm is not None and cm.shape == (k, k) and cm.sum() == len(mnist.y_test):
        return png, cm
    pred = torch_predictor(model)(scale(mnist.x_test))
    cm = confusion_matrix(mnist.y_test.astype(np.int64), pred, k)
    acc = float(np.trace(cm) / cm.sum())
    fileio.write_json(run_dir / "confusion.json", cm.tolist())
    plot_confusion(cm, png, title=f"{name}: test accuracy {acc:.4f}")
    return png, cm


def _numpy_check(run_dir: Path, mnist: MNIST) -> dict[str, Any]:
    found = cached_check(run_dir, len(mnist.x_test))
    return dict(found) if found is not None else verify_run(run_dir, scale(mnist.x_test))


def _titles(paths: list[Path]) -> dict[str, Path]:
    """Figure titles of explain's files: overview, "Feature maps of X", "Kernels of X"."""
    out = {}
    for path in paths:
        if path.name == "overview.png":
            out["Feature maps: overview"] = path
        elif path.stem.startswith("maps_"):
            out[f"Feature maps of {path.stem[len('maps_') :]}"] = path
        else:
            out[f"Kernels of {path.stem[len('kernels_') :]}"] = path
    return out


def prepare_run(run_dir: Path, mnist: MNIST, config: ReportConfig) -> RunPart:
    """Compute (or reuse) every artefact of ``run_dir`` that its report section needs."""
    run_dir = Path(run_dir)
    model, ckpt = checkpoint.load_model(run_dir, "best")
    desc, name = model.description, checkpoint.run_name(ckpt)
    if not takes_mnist(desc):
        shape = "x".join(map(str, desc.input_shape))
        raise CnnlabError(f"report needs a network with 28x28x1 input; {name} takes {shape}")
    if not 0 <= config.index < len(mnist.x_test):
        raise CnnlabError(f"test index must be in 0..{len(mnist.x_test) - 1}, got {config.index}")
    x_test = scale(mnist.x_test)
    label = int(mnist.y_test[config.index])
    explained = explain_image(
        from_torch(model),
        x_test[config.index],
        run_dir / "explain" / f"test-{config.index}",
        f"test image #{config.index} (label {label})",
    )
    images: dict[str, Path] = {}
    if (run_dir / "curves.png").is_file():
        images["Learning curves"] = run_dir / "curves.png"
    images["Confusion matrix (test set)"], cm = _confusion(run_dir, model, name, mnist)
    summary = _summary(run_dir, name, cm)
    images |= _titles(explained)
    shift = run_shift(run_dir, x_test, mnist.y_test.astype(np.int64), config.shift)
    images["Shift robustness"] = run_dir / "shift.png"
    check = _numpy_check(run_dir, mnist) if config.verify else None
    table = receptive_markdown(layer_table(desc))  # geometry only
    return RunPart(run_dir, summary, images, shift, check, table)


def _data_uri(path: Path) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CnnlabError(f"cannot read figure {path}: {exc.strerror or exc}") from exc
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figure(title: str, path: Path) -> str:
    t = html.escape(title)
    return f'<figure><img alt="{t}" src="{_data_uri(path)}"><figcaption>{t}</figcaption></figure>'


def md_to_html(md: str) -> str:
    """The pipe tables this package writes, as HTML tables (other lines become paragraphs)."""
    out: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            head, body = rows[0], rows[1:]
            out.append("<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>")
            out.append("</thead><tbody>")
            out.extend("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body)
            out.append("</tbody></table>")
            rows.clear()

    for line in md.splitlines():
        s = line.strip()
        if s.startswith("|"):
            cells = [html.escape(c.strip()) for c in s.strip("|").split("|")]
            if not all(set(c) <= {"-", ":"} for c in cells):
                rows.append(cells)
        else:
            flush()
            if s:
                out.append(f"<p>{html.escape(s)}</p>")
    flush()
    return "\n".join(out)


def _check_md(check: dict[str, Any] | None) -> str:
    if check is None:
        return "NumPy engine check skipped.\n"
    verdict = "within" if check["passed"] else "ABOVE"
    return (
        "| images | dtype | max abs diff of probabilities | same predictions "
        "| NumPy images/s | PyTorch images/s |\n|---|---|---|---|---|---|\n"
        f"| {check['n_images']:,} | {check['dtype']} | {check['max_abs_diff']:.2e} "
        f"({verdict} {check['tolerance']:.0e}) | {check['same_predictions']:,} "
        f"| {check['numpy_images_per_s']:,.0f} | {check['torch_images_per_s']:,.0f} |\n"
    )


def _split_seed(run_dir: Path) -> int | None:
    config, _ = read_run(run_dir)
    return config.seed if config is not None else None


def _baseline_md(config: ReportConfig, parts: list[RunPart]) -> str:
    if config.baselines is None:
        return "No baselines file given (run `cnnlab baselines` and pass --baselines).\n"
    results = baselines.load(config.baselines)
    cnn = [
        {
            "name": f"CNN {p.summary['model']} ({p.summary['run']})",
            "params": p.summary["params"],
            "train_seconds": p.summary["train s"],
            "predict_seconds": p.numpy_check["torch_seconds"] if p.numpy_check else None,
            "test_accuracy": p.summary["test accuracy"],
        }
        for p in parts
    ]
    note = ""
    seeds = {_split_seed(p.run_dir) for p in parts}
    if seeds != {results["config"]["seed"]}:
        note = "Note: the baselines used another split seed than these runs.\n"
    n = results["n_train"]
    return (
        f"Trained on the same {n:,} training images (split seed {results['config']['seed']}), "
        f"scored on the same {results['n_test']:,} test images.\n\n"
        + baselines.markdown_table(results, cnn)
        + note
    )


def _sections(p: RunPart) -> dict[str, str]:
    """The run's tables as Markdown, keyed by section title."""
    return {
        "Summary": summary_table([p.summary]),
        "Accuracy (%) under input shifts (rows dy, columns dx)": markdown_grid(
            ShiftGrid.from_dict(p.shift["grid"])
        ),
        "Equivariance and local invariance per layer": markdown_layers(p.shift["layers"])
        + f"\nFractions over {p.shift['config']['invariance_images']} test images; "
        f"unchanged/equal means within {p.shift['rtol']:g} of the layer's largest value.\n",
        "Receptive fields and parameters (vs a fully connected layer)": p.receptive_md,
        "NumPy engine vs PyTorch (test set)": _check_md(p.numpy_check),
    }


def _run_md(p: RunPart) -> str:
    lines = [f"## {p.summary['model']} ({p.summary['run']})", ""]
    for title, md in _sections(p).items():
        lines += [f"### {title}", "", md]
    return "\n".join(lines)


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #bbb;margin-top:2em}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#eee}
figure{margin:1em 0}img{max-width:100%;height:auto}figcaption{font-size:.85em;color:#555}
details{margin:.5em 0}summary{cursor:pointer;font-weight:600}
"""


def _page(title: str, body: list[str]) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        f"<p>Generated by cnnlab on {time.strftime('%Y-%m-%d %H:%M')}. "
        "Self-contained: every figure is embedded in this file.</p>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _run_html(p: RunPart) -> list[str]:
    figs = dict(p.images)
    sections = _sections(p)
    body = [md_to_html(sections.pop("Summary"))]
    for key in ("Learning curves", "Confusion matrix (test set)", "Feature maps: overview"):
        if key in figs:
            body.append(_figure(key, figs.pop(key)))
    shift_png = figs.pop("Shift robustness")
    body.append("<details><summary>All feature maps and kernels</summary>")
    body += [_figure(k, v) for k, v in figs.items()]
    body.append("</details>")
    body.append(_figure("Shift robustness", shift_png))
    for title, md in sections.items():
        body += [f"<h3>{html.escape(title)}</h3>", md_to_html(md)]
    return body


def _export_figures(parts: list[RunPart], extra: dict[str, Path], dest: Path) -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, say
        raise CnnlabError(f"cannot create the figures folder {dest}: {exc.strerror}") from exc
    names = [p.summary["model"] for p in parts]
    for p in parts:
        prefix = p.summary["model"] if names.count(p.summary["model"]) == 1 else p.run_dir.name
        wanted = {
            "curves": p.images.get("Learning curves"),
            "confusion": p.images.get("Confusion matrix (test set)"),
            "feature_maps": p.images.get("Feature maps: overview"),
            "shift": p.images.get("Shift robustness"),
        }
        kernels = [t for t in p.images if t.startswith("Kernels of ")]
        if kernels:  # the first convolution's, e.g. "kernels_conv1"
            wanted[f"kernels_{kernels[0][len('Kernels of ') :]}"] = p.images[kernels[0]]
        for name, src in wanted.items():
            if src is not None:
                fileio.write_bytes(dest / f"{prefix}_{name}.png", src.read_bytes())
    for name, src in extra.items():
        fileio.write_bytes(dest / name, src.read_bytes())


def build_report(
    run_dirs: list[Path], mnist: MNIST, out_html: Path, config: ReportConfig
) -> list[Path]:
    """Write the HTML page (and its Markdown twin) for one or several runs; their paths."""
    if not run_dirs:
        raise CnnlabError("no run folders given")
    out_html = Path(out_html)
    try:  # before the long computations, so a bad --out fails fast
        out_html.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnlabError(f"cannot create {out_html.parent}: {exc.strerror or exc}") from exc
    parts = [prepare_run(d, mnist, config) for d in run_dirs]
    mds = [_run_md(p) for p in parts]
    base_md = _baseline_md(config, parts)
    body: list[str] = []
    extra: dict[str, Path] = {}
    if len(parts) > 1:
        title = "cnnlab report: " + ", ".join(p.summary["model"] for p in parts)
        compare_png = out_html.with_name(out_html.stem + "_curves.png")
        histories = {
            p.summary["model"]: runs.read_history(p.run_dir / "history.csv")
            for p in parts
            if (p.run_dir / "history.csv").is_file()
        }
        shift_png = out_html.with_name(out_html.stem + "_shift.png")
        plot_shift_grids(
            {p.summary["model"]: ShiftGrid.from_dict(p.shift["grid"]) for p in parts}, shift_png
        )
        extra = {"compare_shift.png": shift_png}
        body += ["<h2>Comparison</h2>", md_to_html(summary_table([p.summary for p in parts]))]
        if histories:  # runs imported from Keras have no training history
            plot_compare(histories, compare_png)
            extra["compare_curves.png"] = compare_png
            body.append(_figure("Learning curves (validation solid, training dashed)", compare_png))
        body.append(_figure("Shift robustness", shift_png))
    else:
        title = f"cnnlab report: {parts[0].summary['model']} ({parts[0].run_dir.name})"
    body += ["<h2>Baselines: hand-crafted features vs embedded feature extraction</h2>"]
    body.append(md_to_html(base_md))
    for p in parts:
        body.append(f"<h2>{html.escape(p.summary['model'])} ({html.escape(p.run_dir.name)})</h2>")
        body += _run_html(p)
    fileio.write_text(out_html, _page(title, body))
    out_md = out_html.with_suffix(".md")
    fileio.write_text(out_md, f"# {title}\n\n## Baselines\n\n{base_md}\n" + "\n".join(mds))
    if config.figures_dir is not None:
        _export_figures(parts, extra, Path(config.figures_dir))
    return [out_html, out_md]
