"""The graph of a network description: which layer reads which, checked before any shape.

Layers are named; each reads the outputs of the layers it names in ``inputs`` (``"input"``:
the network's input), by default the layer listed before it. One layer's output is the
network's (by default the last one listed). :func:`check` refuses, in one line naming the
layer: an input that is no layer, a layer given the wrong number of inputs, a cycle, and a
layer whose output nothing uses. It returns an order in which every layer comes after its
inputs: the order listed where that already holds (the usual case), else the nearest one.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cnnlab.models.layers import INPUT, DescriptionError

MAX_INPUTS = 64  # of one merge


@dataclass(frozen=True)
class Item:
    """One layer entry of the JSON/YAML form, before its arguments are checked."""

    class_name: Any
    args: dict[str, Any]
    name: Any  # None: Keras' default name
    inputs: tuple[str, ...] | None  # None: the layer listed before


def chain_inputs(names: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Each layer reading the one before it; the first reads the input."""
    return tuple((prev,) for prev in [INPUT, *names[:-1]])


def _inputs(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise DescriptionError(f"{where}: inputs must name one or more layers, got {value!r:.70}")
    if len(items) > MAX_INPUTS:
        raise DescriptionError(f"{where}: too many inputs ({len(items)}; at most {MAX_INPUTS})")
    if not all(isinstance(v, str) and 0 < len(v) <= 64 for v in items):
        raise DescriptionError(f"{where}: inputs must be layer names, got {value!r:.70}")
    return tuple(items)


def split_item(item: Any, i: int) -> Item:
    """(class name, arguments, given name, given inputs) from either layer form."""
    where = f"layer {i}" if i else "first layer"
    if not isinstance(item, Mapping):
        raise DescriptionError(f"{where}: a layer is a mapping, got {type(item).__name__}")
    if "class_name" in item:
        if not isinstance(item["class_name"], str):
            raise DescriptionError(
                f"{where}: a layer needs a class name, got {item['class_name']!r:.70}"
            )
        cls_name, args = item["class_name"], dict(item)
        del args["class_name"]
    elif len(item) == 1:
        ((cls_name, raw),) = item.items()
        raw = {} if raw is None else raw
        if not isinstance(raw, Mapping):
            raise DescriptionError(f"{where} ({str(cls_name)[:64]}): arguments must be a mapping")
        args = dict(raw)
    else:
        raise DescriptionError(f"{where}: give class_name, or one key naming the layer class")
    name = args.pop("name", None)
    given = args.pop("inputs", None)
    inputs = _inputs(given, f"{where} ({str(cls_name)[:64]})") if given is not None else None
    return Item(cls_name, args, name, inputs)


def resolve_inputs(
    items: Sequence[Item], names: Sequence[str], alias: Any
) -> tuple[tuple[str, ...], ...]:
    """Each layer's inputs: as given (the Input layer's own name meaning ``"input"``), or
    the layer listed before it."""
    out = []
    for previous, item in zip([INPUT, *names[:-1]], items, strict=True):
        given = item.inputs if item.inputs is not None else (previous,)
        out.append(tuple(INPUT if alias is not None and n == alias else n for n in given))
    return tuple(out)


def resolve_output(value: Any, names: Sequence[str]) -> str:
    """The output layer: ``outputs: [name]`` (or a name), else the last layer listed."""
    if value is None:
        return names[-1]
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise DescriptionError(f"outputs must name the output layer, got {value!r:.70}")
    if len(items) > 1:
        raise DescriptionError(
            f"the network has {len(items)} outputs; only networks with one output are supported"
        )
    if not isinstance(items[0], str) or items[0] not in names:
        raise DescriptionError(f"outputs: {items[0]!r:.70} is not a layer of this network")
    return items[0]


def _where(names: Sequence[str], classes: Sequence[str] | None, i: int) -> str:
    kind = f"{classes[i]} " if classes else ""
    return f"layer {i + 1} ({kind}{names[i]!r})"


def check(
    names: Sequence[str],
    inputs: Sequence[Sequence[str]],
    output: str,
    arity: Sequence[int | None],
    classes: Sequence[str] | None = None,
) -> list[int]:
    """Validate the graph; return the layers' indices in an order that runs every layer after
    its inputs (the listed order wherever it allows). ``arity``: inputs each layer takes (1,
    or None for two or more)."""
    index = {n: i for i, n in enumerate(names)}
    if len(index) != len(names):
        dup = next(n for i, n in enumerate(names) if names.index(n) != i)
        raise DescriptionError(
            f"{_where(names, classes, names.index(dup))}: the name is used twice"
        )
    for i, (given, n_in) in enumerate(zip(inputs, arity, strict=True)):
        for source in given:
            if source != INPUT and source not in index:
                raise DescriptionError(
                    f"{_where(names, classes, i)}: input {source!r:.70} is not a layer of this "
                    "network (nor 'input')"
                )
            if source == names[i]:
                raise DescriptionError(f"{_where(names, classes, i)}: reads its own output")
        if n_in == 1 and len(given) != 1:
            raise DescriptionError(
                f"{_where(names, classes, i)}: takes one input, given {len(given)} "
                f"({', '.join(given)})"
            )
        if n_in is None and len(given) < 2:
            raise DescriptionError(
                f"{_where(names, classes, i)}: merges two or more inputs, given {len(given)}"
            )
    order = _topological(names, inputs, index)
    if len(order) < len(names):
        cycle = _cycle(names, inputs, index, set(order))
        raise DescriptionError(f"layers form a cycle: {' -> '.join(cycle)}")
    used = _ancestors(output, inputs, index)
    for i, name in enumerate(names):
        if name not in used:
            raise DescriptionError(
                f"{_where(names, classes, i)}: its output is never used (no layer reads it "
                f"and it is not the output, {output!r})"
            )
    return order


def _topological(
    names: Sequence[str], inputs: Sequence[Sequence[str]], index: Mapping[str, int]
) -> list[int]:
    """Kahn's algorithm, always taking the earliest listed layer that is ready."""
    waiting = [len({s for s in given if s != INPUT}) for given in inputs]
    readers: list[list[int]] = [[] for _ in names]
    for i, given in enumerate(inputs):
        for source in {s for s in given if s != INPUT}:
            readers[index[source]].append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in readers[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    return order


def _cycle(
    names: Sequence[str], inputs: Sequence[Sequence[str]], index: Mapping[str, int], done: set[int]
) -> list[str]:
    """One cycle among the layers Kahn's algorithm could not order, as names."""
    start = next(i for i in range(len(names)) if i not in done)
    path, seen = [start], {start: 0}
    while True:
        i = path[-1]
        j = next(index[s] for s in inputs[i] if s != INPUT and index[s] not in done)
        if j in seen:
            loop = path[seen[j] :] + [j]
            return [names[k] for k in reversed(loop)]  # in the direction data flows
        seen[j] = len(path)
        path.append(j)


def _ancestors(output: str, inputs: Sequence[Sequence[str]], index: Mapping[str, int]) -> set[str]:
    """The output layer and every layer it reads from, directly or not."""
    seen, stack = {output}, [output]
    while stack:
        for source in inputs[index[stack.pop()]]:
            if source != INPUT and source not in seen:
                seen.add(source)
                stack.append(source)
    return seen
