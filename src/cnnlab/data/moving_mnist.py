"""Moving digits: seeded clips of an MNIST digit moving on a larger canvas, in the manner of
Srivastava et al. (2015)'s Moving MNIST, labelled by the direction of horizontal motion.

A task that needs the time axis. Each clip is drawn as a *forward* clip: a digit moving to
the right at 1 or 2 pixels a frame, never reaching the side walls, while it moves up or down
at -3..3 pixels a frame and bounces off the top and bottom. Then, by an independent fair
coin, it is played forwards (label ``right``) or backwards (label ``left``); a clip played
backwards is a valid clip too, the same digit moving left and bouncing in mirror order.

Why a per-frame model cannot beat chance: a 2-D classifier applied to each frame, with its
outputs averaged (or max-pooled, or pooled any order-free way) over the frames, computes a
function of the *multiset* of frames. Playing a clip backwards permutes its frames and leaves
that multiset unchanged, so the multiset is a function of the forward draw (digit, start,
velocity) alone, and the label a function of the coin alone. The two are independent: for
every multiset both labels are equally likely, and any such model, however trained, scores
1/2 in expectation. Bounces change nothing: a bounce reverses a vertical motion, but the set
of frames it leaves is the same whichever way the clip is played. Only the frames' order
tells left from right, which a Conv3D (or a recurrent or temporal model) can read.

Train and validation clips take digits from MNIST's training images (disjoint pools); test
clips only from its test images. Positions are whole pixels: no interpolation, exact frames.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cnnlab.data.base import DataOptions, Dataset, Source, Splits, register_source
from cnnlab.data.mnist import MNIST
from cnnlab.errors import CnnlabError

CLASSES: list[str] = ["left", "right"]  # label 0: played backwards; 1: played forwards
DIGIT = 28  # MNIST images are 28x28
FRAMES = 8
CANVAS = 40
MAX_VERTICAL_SPEED = 3


@dataclass(frozen=True)
class ClipParams:
    """Everything drawn for ``n`` clips; :func:`render_clips` turns it into pixels."""

    digit: np.ndarray  # (n,) int64 index into the images
    row0: np.ndarray  # (n,) int64 unfolded start row, in [0, 2 * room)
    col0: np.ndarray  # (n,) int64 start column of the forward clip, in [0, room]
    vrow: np.ndarray  # (n,) int64 rows per frame, -3..3 (bounces top and bottom)
    vcol: np.ndarray  # (n,) int64 columns per frame, 1 or 2 (rightwards, no side bounce)
    reverse: np.ndarray  # (n,) bool: the coin; True plays the clip backwards (label "left")
    frames: int
    canvas: int

    @property
    def labels(self) -> np.ndarray:
        """(n,) int64: 1 ("right") for a clip played forwards, 0 ("left") backwards."""
        return (~self.reverse).astype(np.int64)


def _check(frames: int, canvas: int) -> tuple[int, list[int]]:
    """The room a digit's top-left corner has, and the horizontal speeds that fit in it."""
    if frames < 2:
        raise CnnlabError(f"a clip needs at least 2 frames, not {frames}")
    room = canvas - DIGIT
    speeds = [v for v in (1, 2) if v * (frames - 1) <= room]
    if not speeds:
        raise CnnlabError(
            f"a {canvas}x{canvas} canvas is too small for a digit to cross it over {frames} "
            f"frames; use a canvas of at least {DIGIT + frames - 1}"
        )
    return room, speeds


def clip_params(
    n_images: int, n_clips: int, seed: int, frames: int = FRAMES, canvas: int = CANVAS
) -> ClipParams:
    """Draw ``n_clips`` clips' digits, starts, velocities and coins from ``seed``."""
    room, speeds = _check(frames, canvas)
    if n_clips < 0 or (n_clips and n_images < 1):
        raise CnnlabError(f"cannot draw {n_clips} clips from {n_images} digits")
    rng = np.random.default_rng(seed)
    digit = rng.integers(0, max(n_images, 1), size=n_clips)
    vcol = rng.choice(np.array(speeds, dtype=np.int64), size=n_clips)
    col0 = rng.integers(0, room - vcol * (frames - 1) + 1)  # (n,) the whole path fits
    row0 = rng.integers(0, 2 * room, size=n_clips)
    vrow = rng.integers(-MAX_VERTICAL_SPEED, MAX_VERTICAL_SPEED + 1, size=n_clips)
    reverse = rng.random(n_clips) < 0.5
    return ClipParams(digit, row0, col0, vrow, vcol, reverse, frames, canvas)


def positions(params: ClipParams) -> np.ndarray:
    """(n, T, 2) int64 top-left (row, col) of the digit in each frame, as played."""
    room = params.canvas - DIGIT
    t = np.arange(params.frames)  # (T,)
    unfolded = params.row0[:, None] + params.vrow[:, None] * t  # (n, T)
    # Reflection off the top (0) and bottom (room) walls: a triangle wave of period 2*room.
    rows = room - np.abs(np.mod(unfolded, 2 * room) - room)
    cols = params.col0[:, None] + params.vcol[:, None] * t  # (n, T), never at a side wall
    forward = np.stack([rows, cols], axis=-1)  # (n, T, 2)
    return np.where(params.reverse[:, None, None], forward[:, ::-1], forward)


def render_clips(images: np.ndarray, params: ClipParams) -> tuple[np.ndarray, np.ndarray]:
    """Clips uint8 (n, T, H, W, 1), channels-last, and labels int64 (n,)."""
    images = _check_images(images)
    n, frames, size = len(params.digit), params.frames, params.canvas
    clips = np.zeros((n, frames, size, size), dtype=np.uint8)  # (n, T, H, W)
    where = positions(params)  # (n, T, 2)
    t = np.arange(frames)[:, None, None]  # (T, 1, 1)
    offsets = np.arange(DIGIT)
    for i in range(n):
        rows = where[i, :, 0, None, None] + offsets[None, :, None]  # (T, 28, 1)
        cols = where[i, :, 1, None, None] + offsets[None, None, :]  # (T, 1, 28)
        clips[i, t, rows, cols] = images[params.digit[i]]  # (28, 28) broadcast over T
    return clips[..., np.newaxis], params.labels


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (DIGIT, DIGIT) or images.dtype != np.uint8:
        raise CnnlabError(
            f"digits must be uint8 (N, {DIGIT}, {DIGIT}), not {images.dtype} {images.shape}"
        )
    return images


def make_clips(
    images: np.ndarray, n_clips: int, seed: int, frames: int = FRAMES, canvas: int = CANVAS
) -> tuple[np.ndarray, np.ndarray]:
    """``n_clips`` clips of the digits ``images`` (N, 28, 28) uint8, drawn from ``seed``.

    Returns clips uint8 (n_clips, frames, canvas, canvas, 1) and labels int64 (n_clips,),
    indices into :data:`CLASSES`. The same arguments give the same bytes.
    """
    params = clip_params(len(_check_images(images)), n_clips, seed, frames, canvas)
    return render_clips(images, params)


@dataclass(frozen=True)
class MovingDigits:
    """Train, validation and test clips; ``source_*`` name the MNIST image of each clip."""

    x_train: np.ndarray  # (n_train, T, H, W, 1) uint8
    y_train: np.ndarray  # (n_train,) int64 index into classes
    x_val: np.ndarray  # (n_val, T, H, W, 1) uint8
    y_val: np.ndarray  # (n_val,) int64
    x_test: np.ndarray  # (n_test, T, H, W, 1) uint8
    y_test: np.ndarray  # (n_test,) int64
    classes: list[str]
    source_train: np.ndarray  # (n_train,) int64 index into mnist.x_train
    source_val: np.ndarray  # (n_val,) int64 index into mnist.x_train, disjoint from train's
    source_test: np.ndarray  # (n_test,) int64 index into mnist.x_test


def _seed(seed: int, stream: int) -> int:
    """An independent seed for each use of ``seed`` (pool split, train, val, test)."""
    if seed < 0:
        raise CnnlabError(f"seed must be a non-negative integer, not {seed}")
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _clips_of(
    images: np.ndarray, pool: np.ndarray, n: int, seed: int, frames: int, canvas: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    drawn = clip_params(len(pool), n, seed, frames, canvas)
    params = replace(drawn, digit=pool[drawn.digit].astype(np.int64))  # index into images
    clips, labels = render_clips(images, params)
    return clips, labels, params.digit


def load_moving_mnist(
    mnist: MNIST,
    seed: int = 42,
    n_train: int = 6000,
    n_val: int = 2000,
    n_test: int = 2000,
    *,
    frames: int = FRAMES,
    canvas: int = CANVAS,
) -> MovingDigits:
    """Moving-digit clips from MNIST: train and val from its training digits, split into
    disjoint pools in proportion to ``n_train : n_val``; test from its test digits only."""
    x_pool, x_test = _check_images(mnist.x_train), _check_images(mnist.x_test)
    if min(n_train, n_val, n_test) < 0:
        raise CnnlabError("clip counts must be non-negative")
    pool = np.random.default_rng(_seed(seed, 0)).permutation(len(x_pool))
    cut = round(len(pool) * n_val / max(n_train + n_val, 1))
    cut = min(max(cut, 1 if n_val else 0), len(pool) - (1 if n_train else 0))
    val_pool, train_pool = pool[:cut], pool[cut:]
    train = _clips_of(x_pool, train_pool, n_train, _seed(seed, 1), frames, canvas)
    val = _clips_of(x_pool, val_pool, n_val, _seed(seed, 2), frames, canvas)
    test = _clips_of(x_test, np.arange(len(x_test)), n_test, _seed(seed, 3), frames, canvas)
    return MovingDigits(*train[:2], *val[:2], *test[:2], list(CLASSES), train[2], val[2], test[2])


@register_source("moving-mnist")
class MovingMnistSource(Source):
    """Seeded clips of a digit moving left or right, (N, T, H, W, 1) uint8."""

    summary = "clips of a moving digit"
    order = 50

    def load(self, options: DataOptions) -> Dataset:
        import cnnlab.data as data  # the package: tests stand in for its load_mnist
        from cnnlab.data import moving_mnist  # this module: tests stand in for the loader

        mnist = data.load_mnist(options.data_dir, allow_download=options.allow_download)
        clips = moving_mnist.load_moving_mnist(mnist, options.seed)
        splits = Splits(
            clips.x_train, clips.y_train, clips.x_val, clips.y_val, clips.x_test, clips.y_test
        )
        shape = "x".join(str(s) for s in clips.x_train.shape[1:])
        record = {
            "source": "moving-mnist",
            "seed": options.seed,
            "val_split": {"drawn": True, "from": "MNIST training digits, a disjoint pool"},
            "test_split": {"drawn": True, "from": "MNIST t10k digits", "seed": options.seed},
            "counts": splits.counts(),
        }
        what = f"moving digits, clips of {shape}"
        return Dataset(self.spec, splits, list(clips.classes), what, "clips", True, record)
