"""Optional features and the extra each needs (``pip install 'cnnlab[NAME]'``).

The core (training, evaluation, prediction, summaries, figures, explanations on MNIST)
needs only the ``[project] dependencies``; the web pages, ONNX export, Keras import, UCR
time series and the classical baselines live in extras. Every place that imports one of
their packages goes through :func:`require` (or :func:`extra` around a module-level
import), so a missing extra ends the command in one line naming it, not a traceback.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager

from cnnlab.errors import CnnlabError

# extra -> the modules it provides (import names); pyproject.toml's extras install them.
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "starlette", "pydantic", "anyio", "uvicorn", "h11", "python_multipart"),
    "onnx": ("onnx", "onnxruntime", "onnxscript"),
    "keras": ("h5py",),
    "timeseries": ("sktime", "pandas", "numba"),
    "baselines": ("sklearn", "skimage"),
}
# Where the import name is not the name pip knows the package by.
DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "python_multipart": "python-multipart",
}


class MissingExtra(CnnlabError):
    """An optional feature was used without its extra installed."""

    def __init__(self, name: str, feature: str, missing: str) -> None:
        self.extra = name
        self.module = missing
        super().__init__(
            f"{feature} needs the '{name}' extra ({DISTRIBUTIONS.get(missing, missing)} is not "
            f"installed): pip install 'cnnlab[{name}]'"
        )


def _owner(name: str, error: ImportError) -> bool:
    """Whether ``error`` is a module of extra ``name`` missing (not some other import bug)."""
    missing = (error.name or "").split(".")[0]
    return isinstance(error, ModuleNotFoundError) and missing in EXTRAS[name]


def require(name: str, feature: str) -> None:
    """Import every module of extra ``name`` now; one missing is a :class:`MissingExtra`.

    ``feature`` names what needs it in the message, e.g. ``"cnnlab serve"``. Called where
    a command starts, so that it fails before any work (and before a lazily imported
    module, like python-multipart at the first upload, would be needed).
    """
    if name not in EXTRAS:
        raise ValueError(f"unknown extra {name!r}; known: {', '.join(EXTRAS)}")
    for module in EXTRAS[name]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            if not _owner(name, exc):
                raise
            raise MissingExtra(name, feature, str(exc.name).split(".")[0]) from None


@contextmanager
def extra(name: str, feature: str) -> Iterator[None]:
    """Around an import of extra ``name``'s packages: their absence is a :class:`MissingExtra`.

    Only a module of that extra counts: any other ImportError is a bug and propagates.
    """
    if name not in EXTRAS:
        raise ValueError(f"unknown extra {name!r}; known: {', '.join(EXTRAS)}")
    try:
        yield
    except ImportError as exc:
        if not _owner(name, exc):
            raise
        raise MissingExtra(name, feature, str(exc.name).split(".")[0]) from None
