"""A Keras-like summary of a network description: layer, output shape, parameters, totals."""

from __future__ import annotations

from cnnlab.models.description import ModelDescription


def summary(description: ModelDescription) -> str:
    """The table ``model.summary()`` prints in Keras, computed from the description alone.

    Output shapes are channels-last with ``None`` for the batch axis, as Keras shows them.
    """
    rows = [
        (
            f"{i.layer.name} ({i.layer.class_name})",
            str((None, *i.out_shape)),
            i.trainable + i.non_trainable,
        )
        for i in description.info
    ]
    w0 = max([len("Layer (type)")] + [len(r[0]) for r in rows]) + 2
    w1 = max([len("Output Shape")] + [len(r[1]) for r in rows]) + 2
    line = "-" * (w0 + w1 + 10)
    out = [f'Model: "{description.name}"', line]
    out += [f"{'Layer (type)':<{w0}}{'Output Shape':<{w1}}{'Param #':>10}", line]
    out += [f"{a:<{w0}}{b:<{w1}}{c:>10,}" for a, b, c in rows]
    total, trainable = description.params, description.trainable_params
    out += [
        line,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        line,
    ]
    return "\n".join(out)
