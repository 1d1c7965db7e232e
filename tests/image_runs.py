"""Small runs trained on folders of images made here with Pillow, and independent references.

Shared by the predict and serve tests: an RGB folder and a grey one of three classes
(named with spaces and in natural order), images of mixed sizes and aspect ratios, and a
tiny network trained for one epoch on each with :func:`cnnlab.train.loop.fit`. The
references decode with :func:`cnnlab.data.load_image` and call the loaded PyTorch module on
the pixels scaled by hand, channels moved first by hand.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from cnnlab.data import DataOptions, load_dataset
from cnnlab.models import parse_compact
from cnnlab.train import checkpoint
from cnnlab.train.config import TrainConfig
from cnnlab.train.loop import fit

CLASSES = ["bar 2", "bar 10", "ring"]  # natural order: "bar 2" before "bar 10"
COLOURS = {"bar 2": (220, 40, 40), "bar 10": (40, 190, 60), "ring": (40, 60, 220)}
# Non-square inputs (a transposed axis shows), two plain conv layers for the detail view.
NETS = {
    "rgb": "Input(20,24,3) Conv2D(4,3,relu,name=c1) MaxPooling2D(2,name=pool) "
    "Conv2D(6,3,same,tanh,name=c2) GlobalAveragePooling2D(name=gap) Dense(3,softmax,name=out)",
    "grey": "Input(28,28,1) Conv2D(4,3,relu,name=c1) MaxPooling2D(2,name=pool) "
    "Conv2D(6,3,2,same,relu,name=c2) Flatten(name=flat) Dense(3,softmax,name=out)",
    "raw": "Input(20,24,3) Rescaling(0.00392156862745098,name=rescale) "
    "Conv2D(4,3,relu,name=c1) GlobalMaxPooling2D(name=gmp) Dense(3,softmax,name=out)",
}
# How each run decodes its folder: the grey one records a non-default fit and filter.
DECODING = {"rgb": ("bilinear", "stretch"), "grey": ("nearest", "crop"), "raw": ("bilinear", "pad")}


def picture(name: str, size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    """One image of class ``name``: a coloured bar or ring on a light, noisy background."""
    rng = np.random.default_rng(seed)
    w, h = size
    back = rng.integers(170, 250, size=(h, w, 3)).astype(np.uint8)
    img = Image.fromarray(back)
    draw = ImageDraw.Draw(img)
    colour = COLOURS[name]
    if name == "ring":
        draw.ellipse([w * 0.2, h * 0.2, w * 0.8, h * 0.8], outline=colour, width=max(2, w // 10))
    elif name == "bar 2":
        draw.rectangle([0, h * 0.4, w, h * 0.6], fill=colour)
    else:
        draw.rectangle([w * 0.4, 0, w * 0.6, h], fill=colour)
    return img.convert(mode)


def make_folder(root: Path, mode: str, per_class: int = 10) -> Path:
    """``root/<class>/<i>.png|jpg``: sizes from 30 to 90 pixels a side, PNG and JPEG."""
    for k, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            seed = 100 * k + i
            size = (30 + (seed * 7) % 60, 30 + (seed * 13) % 60)
            fmt = "JPEG" if i % 3 == 0 else "PNG"
            suffix = "jpg" if fmt == "JPEG" else "png"
            picture(name, size, seed, mode).save(folder / f"{i}.{suffix}", format=fmt)
    return root


def train_run(kind: str, folder: Path, out: Path, cache: Path) -> Path:
    """One epoch of NETS[kind] on ``folder``, decoded as DECODING[kind] says."""
    desc = parse_compact(NETS[kind], f"{kind}net")
    interpolation, fitting = DECODING[kind]
    options = DataOptions(
        image_shape=desc.input_shape, interpolation=interpolation, fit=fitting,
        workers=1, progress=False, cache_dir=cache,
    )  # fmt: skip
    dataset = load_dataset(f"folder:{folder}", options)
    torch.manual_seed(0)
    out.mkdir(parents=True)
    config = TrainConfig(model=NETS[kind], epochs=1, seed=42, batch_size=8)
    fit(config, dataset, out, description=desc, progress=False, log=lambda _m: None)
    return out


def encoded(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def reference(run_dir: Path, pixels: np.ndarray, divide_by: float) -> np.ndarray:
    """softmax(module(x)) for uint8 (N, H, W, C) pixels / ``divide_by``, in float64."""
    model, _ = checkpoint.load_model(run_dir)
    x = pixels.astype(np.float64) / divide_by
    xt = torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))
    with torch.no_grad():
        return torch.softmax(model.double()(xt), dim=1).numpy()


def decoding(kind: str) -> dict[str, Any]:
    """load_image's keyword arguments for the run of ``kind``."""
    interpolation, fitting = DECODING[kind]
    desc = parse_compact(NETS[kind])
    return {"image_shape": desc.input_shape, "interpolation": interpolation, "fit": fitting}
