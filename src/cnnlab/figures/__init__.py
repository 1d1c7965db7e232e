"""The chapter's figures (section 14.2) regenerated from cnnlab's own ops.

Each figure is a :class:`FigureData` computed by a builder (registered by name in
:data:`FIGURES`) that only calls :mod:`cnnlab.ops`; :mod:`cnnlab.figures.render` draws it
(PNG, and a GIF for the sliding ones) and :func:`write_figures` writes them all with a
``figures.json`` manifest holding every grid's numbers. ``cnnlab figures`` is the command.
"""

from __future__ import annotations

from cnnlab.figures.model import FigureData, Frame, Link, Panel
from cnnlab.figures.writer import FIGURES, build_figure, write_figures

__all__ = ["FIGURES", "FigureData", "Frame", "Link", "Panel", "build_figure", "write_figures"]
