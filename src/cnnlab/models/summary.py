"""A Keras-like summary of a network description: layer, output shape, parameters, totals."""

from __future__ import annotations

from cnnlab.models.description import ModelDescription
from cnnlab.models.layers import INPUT


def summary(description: ModelDescription) -> str:
    """The table ``model.summary()`` prints in Keras, computed from the description alone.

    Output shapes are channels-last with ``None`` for the batch axis, as Keras shows them.
    A graph gets Keras' "Connected to" column (the input is ``input``), and its input
    layer's row, as a functional model's summary has.
    """
    graph = not description.is_chain
    rows = [
        (
            f"{i.layer.name} ({i.layer.class_name})",
            str((None, *i.out_shape)),
            i.trainable + i.non_trainable,
            ", ".join(i.inputs),
        )
        for i in description.info
    ]
    if graph:
        rows.insert(0, (f"{INPUT} (InputLayer)", str((None, *description.input_shape)), 0, "-"))
    w0 = max([len("Layer (type)")] + [len(r[0]) for r in rows]) + 2
    w1 = max([len("Output Shape")] + [len(r[1]) for r in rows]) + 2
    width = w0 + w1 + 10
    head = f"{'Layer (type)':<{w0}}{'Output Shape':<{w1}}{'Param #':>10}"
    if graph:
        w3 = max([len("Connected to")] + [len(r[3]) for r in rows])
        head += f"  {'Connected to':<{w3}}"
        width += 2 + w3
    line = "-" * width
    out = [f'Model: "{description.name}"', line, head.rstrip(), line]
    for a, b, c, d in rows:
        out.append(f"{a:<{w0}}{b:<{w1}}{c:>10,}" + (f"  {d}" if graph else ""))
    total, trainable = description.params, description.trainable_params
    out += [
        line,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        line,
    ]
    return "\n".join(out)
