"""Small image files made by the tests: every mode and format the folder source reads."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

FORMAT_OF = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


def pixels(mode: str, h: int, w: int, seed: int) -> Image.Image:
    """A random image of ``mode`` (h x w), smooth enough to survive JPEG."""
    rng = np.random.default_rng(seed)
    if mode == "1":
        return Image.fromarray(rng.random((h, w)) > 0.5)
    if mode in ("I;16", "I"):
        levels = rng.integers(0, 65536, (h, w), dtype=np.uint16)
        img = Image.fromarray(levels)  # I;16
        return img if mode == "I;16" else img.convert("I")
    if mode == "F":
        return Image.fromarray(rng.uniform(-20, 300, (h, w)).astype(np.float32))
    if mode == "P":
        rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        return rgb.quantize(16)
    bands = Image.getmodebands(mode)
    data = rng.integers(0, 256, (h, w, bands), dtype=np.uint8)
    return Image.frombytes(mode, (w, h), data.tobytes())


def save(
    path: Path, mode: str = "RGB", size: tuple[int, int] = (12, 16), seed: int = 0, **kw: object
) -> Path:
    """Write a ``mode`` image of (h, w) = ``size`` in the format of ``path``'s suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = pixels(mode, size[0], size[1], seed)
    fmt = FORMAT_OF[path.suffix.lower()]
    if mode == "P" and "transparency" not in kw and fmt in ("PNG", "GIF"):
        kw["transparency"] = 3
    img.save(path, format=fmt, **kw)
    return path


def png_header_bomb(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height 8-bit grey pixels, with a tiny IDAT:
    a decoder that trusted the header would allocate width * height bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
    return path


def expected(
    path: Path, shape: tuple[int, int, int], resample: int = Image.Resampling.BILINEAR
) -> np.ndarray:
    """What the folder source must give for ``path``: Pillow directly, for 8-bit modes."""
    h, w, c = shape
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[c]
    img = Image.open(path)
    img.seek(0)
    out = img.convert(mode).resize((w, h), resample)
    return np.asarray(out).reshape(h, w, c)
