"""The report's sections as Markdown and HTML: a run's tables and figures, the baselines."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab import fileio
from cnnlab.analysis import baselines
from cnnlab.analysis.shift import ShiftGrid, markdown_grid, markdown_layers
from cnnlab.errors import CnnlabError
from cnnlab.report.page import figure, md_to_html
from cnnlab.train.schemas import read_run

if TYPE_CHECKING:
    from cnnlab.report.report import RunPart

SUMMARY_COLUMNS: tuple[str, ...] = ("run", "model", "source", "params", "epochs")
SUMMARY_COLUMNS += ("best epoch", "train s", "test accuracy", "test loss")
SHOWN_CLASSES = 12  # class names listed in a run's data line


def summary_table(rows: list[dict[str, Any]], columns: tuple[str, ...] = SUMMARY_COLUMNS) -> str:
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

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(k, r.get(k)) for k in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def data_line(p: RunPart) -> str:
    """What the run is scored on: the data, its classes, how values became inputs."""
    t = p.test
    names = ", ".join(t.classes[:SHOWN_CLASSES])
    if len(t.classes) > SHOWN_CLASSES:
        names += ", ..."
    what = f"{t.description} ({t.spec})" if t.description else t.spec
    return (
        f"Data: {what}; {len(t):,} test {t.plural}; {len(t.classes)} classes: {names}; "
        f"{t.scale.reason}."
    )


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


def _runs(parts: list[RunPart]) -> str:
    return ", ".join(f"{p.run_dir.name} ({p.test.spec})" for p in parts)


def baseline_md(path: Path | None, parts: list[RunPart]) -> str:
    """The baselines table with the runs scored on the baselines' own data (MNIST's test
    set); the other runs named, and why they are not in it."""
    if path is None:
        if all(p.on_mnist for p in parts):
            return "No baselines file given (run `cnnlab baselines` and pass --baselines).\n"
        others = [p for p in parts if not p.on_mnist]
        return (
            "No baselines here: `cnnlab baselines` trains them on MNIST only, and "
            f"{_runs(others)} {'is' if len(others) == 1 else 'are'} on other data.\n"
        )
    try:
        results = baselines.load(path)
    except CnnlabError as exc:  # damaged since it was made: the page says so, not a traceback
        return f"No baselines: {exc}; `cnnlab baselines --force` makes them again.\n"
    on = baselines.data_of(results)
    same = [p for p in parts if p.test.spec == on and len(p.test) == results["n_test"]]
    others = [p for p in parts if p not in same]
    left_out = (
        f"Not compared: {_runs(others)}: the baselines were made on {on}'s "
        f"{results['n_test']:,} test images, not on this data.\n"
        if others
        else ""
    )
    if not same:
        return left_out
    cnn = [
        {
            "name": f"CNN {p.summary['model']} ({p.summary['run']})",
            "params": p.summary["params"],
            "train_seconds": p.summary["train s"],
            "predict_seconds": p.numpy_check["torch_seconds"] if p.numpy_check else None,
            "test_accuracy": p.summary["test accuracy"],
        }
        for p in same
    ]
    note = ""
    seeds = {_split_seed(p.run_dir) for p in same}
    if seeds != {results["config"]["seed"]}:
        note = "Note: the baselines used another split seed than these runs.\n"
    n = results["n_train"]
    return (
        f"Trained on the same {n:,} training images (split seed {results['config']['seed']}), "
        f"scored on the same {results['n_test']:,} test images.\n\n"
        + baselines.markdown_table(results, cnn)
        + note
        + left_out
    )


def _invariance_count(shift: dict[str, Any]) -> int:
    """Images the per-layer fractions were measured on (caches before it was recorded:
    the config's count, which MNIST's 10,000 test images always covered)."""
    return int(shift.get("invariance_images", shift["config"]["invariance_images"]))


def _sections(p: RunPart, columns: tuple[str, ...]) -> dict[str, str]:
    """The run's tables as Markdown, keyed by section title."""
    out = {"Summary": summary_table([p.summary], columns)}
    if p.shift is not None:
        out["Accuracy (%) under input shifts (rows dy, columns dx)"] = markdown_grid(
            ShiftGrid.from_dict(p.shift["grid"])
        )
        out["Equivariance and local invariance per layer"] = (
            markdown_layers(p.shift["layers"])
            + f"\nFractions over {_invariance_count(p.shift)} test images; "
            f"unchanged/equal means within {p.shift['rtol']:g} of the layer's largest value.\n"
        )
    out["Receptive fields and parameters (vs a fully connected layer)"] = p.receptive_md
    out["NumPy engine vs PyTorch (test set)"] = _check_md(p.numpy_check)
    return out


def run_md(p: RunPart, with_data: bool = False, columns: tuple[str, ...] = SUMMARY_COLUMNS) -> str:
    lines = [f"## {p.summary['model']} ({p.summary['run']})", ""]
    if with_data:
        lines += [data_line(p), ""]
    lines += [f"{note}\n" for note in p.notes]
    for title, md in _sections(p, columns).items():
        lines += [f"### {title}", "", md]
    return "\n".join(lines)


def run_html(p: RunPart, with_data: bool, columns: tuple[str, ...]) -> list[str]:
    figs = dict(p.images)
    sections = _sections(p, columns)
    body = [f"<p>{html.escape(data_line(p))}</p>"] if with_data else []
    body.append(md_to_html(sections.pop("Summary")))
    first = ("Learning curves", "Confusion matrix (test set)", "Feature maps: overview")
    for key in (*first, "Class activation map"):
        if key in figs:
            body.append(figure(key, figs.pop(key)))
    body += [f"<p>{html.escape(note)}</p>" for note in p.notes]
    shift_png = figs.pop("Shift robustness", None)
    if figs:
        body.append("<details><summary>All feature maps and kernels</summary>")
        body += [figure(k, v) for k, v in figs.items()]
        body.append("</details>")
    if shift_png is not None:
        body.append(figure("Shift robustness", shift_png))
    for title, md in sections.items():
        body += [f"<h3>{html.escape(title)}</h3>", md_to_html(md)]
    return body


def export_figures(parts: list[RunPart], extra: dict[str, Path], dest: Path) -> None:
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
            "cam": p.images.get("Class activation map"),
            "shift": p.images.get("Shift robustness"),
        }
        kernels = [t for t in p.images if t.startswith("Kernels of ")]
        if kernels:  # the first convolution's, e.g. "kernels_conv1"
            wanted[f"kernels_{kernels[0][len('Kernels of ') :]}"] = p.images[kernels[0]]
        for name, src in wanted.items():
            if src is not None:
                fileio.write_bytes(
                    dest / f"{prefix}_{name}.png", fileio.read_bounded(src, fileio.FIGURE)
                )
    for name, src in extra.items():
        fileio.write_bytes(dest / name, fileio.read_bounded(src, fileio.FIGURE))
