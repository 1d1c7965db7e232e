"""Training: the chapter's recipe, run folders, distributed training, the speedrun.

``cnnlab.train.fit`` is the Keras-like call (:mod:`cnnlab.train.keras_like`), imported on
first use so that ``import cnnlab.train.runs`` stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["History", "fit"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cnnlab.train import keras_like

        return getattr(keras_like, name)
    raise AttributeError(f"module 'cnnlab.train' has no attribute {name!r}")
