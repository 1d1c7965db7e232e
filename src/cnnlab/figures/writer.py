"""The registry of the chapter's figures and :func:`write_figures`, which writes them to disk.

Every file is written atomically: to a temporary file in the same folder, then
``os.replace``-d over the target, so a crash never leaves a half-written PNG, GIF or manifest.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from cnnlab.errors import CnnlabError
from cnnlab.figures import basics, geometry, layers
from cnnlab.figures.model import FigureData

Builder = Callable[[], FigureData]

# Name -> builder, in the chapter's order (section 14.2.1, then 14.2.2).
FIGURES: dict[str, Builder] = {
    "correlation_vs_convolution_1d": basics.correlation_vs_convolution_1d,
    "correlation_vs_convolution_2d": basics.correlation_vs_convolution_2d,
    "correlation_vs_convolution_3d": basics.correlation_vs_convolution_3d,
    "sparse_connectivity": basics.sparse_connectivity,
    "padding_valid": geometry.padding_valid,
    "padding_same": geometry.padding_same,
    "padding_full": geometry.padding_full,
    "padding_same_even_kernel": geometry.padding_same_even_kernel,
    "padding_same_stride": geometry.padding_same_stride,
    "neurons_feature_maps": basics.neurons_feature_maps,
    "parameter_sharing": basics.parameter_sharing,
    "strides": geometry.strides,
    "stride_vs_pooling": geometry.stride_vs_pooling,
    "dilation": geometry.dilation,
    "pooling": layers.pooling,
    "pooling_invariance": layers.pooling_invariance,
    "multichannel_filters": layers.multichannel_filters,
    "multichannel_depth_sum": layers.multichannel_depth_sum,
    "receptive_field_growth": layers.receptive_field_growth,
}

MANIFEST = "figures.json"
PNG_DPI, GIF_DPI = 110, 80


def build_figure(name: str) -> FigureData:
    """The data of figure ``name``; ``CnnlabError`` naming the known ones if it is unknown."""
    if name not in FIGURES:
        raise CnnlabError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    data = FIGURES[name]()
    if data.name != name:
        raise AssertionError(f"builder for {name!r} returned figure {data.name!r}")
    return data


def _prepare_out(out_dir: Path) -> Path:
    """``out_dir`` created if needed; ``CnnlabError`` (one line) if it cannot hold the files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CnnlabError(f"cannot write figures to {out_dir}: it exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnlabError(
            f"cannot create the figures folder {out_dir}: {exc.strerror or exc}"
        ) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise CnnlabError(f"cannot write figures to {out_dir}: the folder is not writable")
    return out_dir


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it onto ``path``."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CnnlabError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CnnlabError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _write_one(data: FigureData, out_dir: Path) -> list[Path]:
    """The PNG of ``data`` and, for an animation, its GIF."""
    from cnnlab.figures.render import render  # imports matplotlib: only when drawing

    still, frames = render(data, PNG_DPI, GIF_DPI)
    png = out_dir / f"{data.name}.png"
    paths = [atomic_write(png, lambda fh: still.save(fh, "PNG", optimize=True))]
    if frames:
        durations = [data.frame_ms] * (len(frames) - 1) + [data.frame_ms * 3]

        def save_gif(fh: IO[bytes]) -> None:
            frames[0].save(
                fh, "GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0
            )

        paths.append(atomic_write(out_dir / f"{data.name}.gif", save_gif))
    return paths


def write_figures(
    out_dir: str | os.PathLike[str],
    only: Sequence[str] | None = None,
    done: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write every figure (or those named in ``only``) and a ``figures.json`` manifest.

    Each figure gives ``NAME.png`` and, if it slides, ``NAME.gif``. The manifest lists, per
    figure, its name, title, caption, parameters, files and every grid drawn as nested lists.
    Returns the paths written, the manifest last. Raises ``CnnlabError`` for an unusable
    ``out_dir`` or an unknown name. ``done(name)`` is called as each figure is written.
    """
    names = list(FIGURES) if not only else list(dict.fromkeys(only))
    figures = [build_figure(name) for name in names]  # unknown names fail before any write
    out = _prepare_out(Path(out_dir))
    written: list[Path] = []
    entries = []
    for data in figures:
        paths = _write_one(data, out)
        written.extend(paths)
        entries.append({**data.manifest(), "files": [p.name for p in paths]})
        if done is not None:
            done(data.name)
    text = json.dumps({"figures": entries}, indent=1) + "\n"
    written.append(atomic_write(out / MANIFEST, lambda fh: fh.write(text.encode())))
    return written
