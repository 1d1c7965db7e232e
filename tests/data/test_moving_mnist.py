"""Moving digits: the clips are what they claim (a digit translated frame by frame), seeded,
drawn from the right MNIST split, and built so that the set of frames says nothing about
the label. Nothing is trained."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from cnnlab.data.mnist import MNIST
from cnnlab.data.moving_mnist import (
    CLASSES,
    DIGIT,
    clip_params,
    load_moving_mnist,
    make_clips,
    positions,
    render_clips,
)
from cnnlab.errors import CnnlabError


def fake_mnist(n_train: int = 120, n_test: int = 40, seed: int = 0) -> MNIST:
    """Distinct random 'digits' (uint8 (N, 28, 28), never all zero) so every clip's source
    can be told from its pixels; train and test images differ by construction."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 256, size=(n_train + n_test, DIGIT, DIGIT), dtype=np.uint8)
    x[:, :4] = 0  # a blank band, like MNIST's margins
    y = (np.arange(n_train + n_test) % 10).astype(np.uint8)
    return MNIST(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return fake_mnist().x_train


def frame_multiset(clip: np.ndarray) -> Counter[bytes]:
    """A clip's frames as a multiset: what any order-free pooling of per-frame outputs sees."""
    return Counter(frame.tobytes() for frame in clip)


def test_shapes_dtypes_and_balanced_labels(digits: np.ndarray) -> None:
    clips, labels = make_clips(digits, 400, seed=1, frames=8, canvas=48)
    assert clips.shape == (400, 8, 48, 48, 1) and clips.dtype == np.uint8
    assert labels.shape == (400,) and labels.dtype == np.int64
    assert set(labels.tolist()) == {0, 1} and CLASSES == ["left", "right"]
    assert 160 < labels.sum() < 240  # a fair coin
    clips, _ = make_clips(digits, 3, seed=1, frames=10, canvas=40)
    assert clips.shape == (3, 10, 40, 40, 1)


def test_each_frame_is_the_digit_translated_and_the_label_is_its_horizontal_direction(
    digits: np.ndarray,
) -> None:
    params = clip_params(len(digits), 200, seed=2, canvas=48)  # room for speeds 1 and 2
    clips, labels = render_clips(digits, params)
    where = positions(params)  # (n, T, 2)
    for i in range(len(clips)):
        digit = digits[params.digit[i]]
        for t, (r, c) in enumerate(where[i]):
            frame = clips[i, t, :, :, 0].copy()
            np.testing.assert_array_equal(frame[r : r + DIGIT, c : c + DIGIT], digit)
            frame[r : r + DIGIT, c : c + DIGIT] = 0
            assert not frame.any()  # nothing else on the canvas
    # Independent of positions(): the column of the centre of mass moves the same way
    # by the same whole number of pixels every frame, rightwards exactly for label 1.
    mass = clips[..., 0].astype(np.float64)  # (n, T, H, W)
    col = (mass.sum(axis=2) * np.arange(48)).sum(axis=2) / mass.sum(axis=(2, 3))  # (n, T)
    steps = np.diff(col, axis=1)  # (n, T-1)
    np.testing.assert_allclose(steps, steps[:, :1].repeat(steps.shape[1], axis=1), atol=1e-9)
    assert ((steps[:, 0] > 0) == (labels == 1)).all()
    assert set(np.abs(np.round(steps[:, 0])).tolist()) == {1.0, 2.0}
    # And some clips do bounce off the top or bottom wall.
    drow = np.sign(np.diff(where[:, :, 0], axis=1))  # (n, T-1)
    assert ((drow[:, 1:] * drow[:, :-1]) < 0).any()


def test_playing_backwards_reverses_the_frames_and_flips_the_label(digits: np.ndarray) -> None:
    params = clip_params(len(digits), 300, seed=3)
    flipped = replace(params, reverse=~params.reverse)  # same digit, start, velocity
    clips, labels = render_clips(digits, params)
    clips2, labels2 = render_clips(digits, flipped)
    np.testing.assert_array_equal(clips2, clips[:, ::-1])
    np.testing.assert_array_equal(labels2, 1 - labels)
    for a, b in zip(clips, clips2, strict=True):
        assert frame_multiset(a) == frame_multiset(b)  # the same set of frames


def test_the_set_of_frames_is_independent_of_the_label(digits: np.ndarray) -> None:
    """The multiset of frames is a function of the forward draw alone (digit, start,
    velocity; the coin does not enter it), and the label a function of the coin alone."""
    params = clip_params(len(digits), 300, seed=4)
    clips, labels = render_clips(digits, params)
    forward, _ = render_clips(digits, replace(params, reverse=np.zeros_like(params.reverse)))
    backward, _ = render_clips(digits, replace(params, reverse=np.ones_like(params.reverse)))
    np.testing.assert_array_equal(labels, (~params.reverse).astype(np.int64))
    for clip, f, b in zip(clips, forward, backward, strict=True):
        assert frame_multiset(clip) == frame_multiset(f) == frame_multiset(b)
    # The coin is drawn on its own: balanced within every stratum of the forward draw.
    many = clip_params(len(digits), 4000, seed=4, canvas=48)
    for stratum in (many.vcol == 1, many.vcol == 2, many.vrow < 0, many.col0 < 5):
        assert abs(many.reverse[stratum].mean() - 0.5) < 0.05


def test_same_seed_same_bytes_other_seed_other_bytes(digits: np.ndarray) -> None:
    def digest(seed: int) -> str:
        clips, labels = make_clips(digits, 50, seed)
        return hashlib.sha256(clips.tobytes() + labels.tobytes()).hexdigest()

    assert digest(7) == digest(7)
    assert digest(7) != digest(8)


def test_load_uses_train_digits_for_train_and_val_and_test_digits_for_test() -> None:
    mnist = fake_mnist()
    data = load_moving_mnist(mnist, seed=5, n_train=60, n_val=20, n_test=30)
    assert data.classes == CLASSES
    assert data.x_train.shape == (60, 8, 40, 40, 1) and data.x_val.shape[0] == 20
    assert data.x_test.shape == (30, 8, 40, 40, 1) and data.y_test.shape == (30,)
    assert not set(data.source_train.tolist()) & set(data.source_val.tolist())  # disjoint
    for clips, source, images in (
        (data.x_train, data.source_train, mnist.x_train),
        (data.x_val, data.source_val, mnist.x_train),
        (data.x_test, data.source_test, mnist.x_test),
    ):
        for clip, k in zip(clips, source, strict=True):
            frame = clip[0, :, :, 0]
            rows, cols = np.nonzero(frame.any(axis=1))[0], np.nonzero(frame.any(axis=0))[0]
            crop = frame[rows[0] - 4 : rows[0] - 4 + DIGIT, cols[0] : cols[0] + DIGIT]
            np.testing.assert_array_equal(crop, images[k])  # the named source digit
    again = load_moving_mnist(mnist, seed=5, n_train=60, n_val=20, n_test=30)
    np.testing.assert_array_equal(again.x_val, data.x_val)
    other = load_moving_mnist(mnist, seed=6, n_train=60, n_val=20, n_test=30)
    assert not np.array_equal(other.x_train, data.x_train)
    empty = load_moving_mnist(mnist, seed=5, n_train=10, n_val=0, n_test=0)
    assert empty.x_val.shape == (0, 8, 40, 40, 1) and empty.y_test.shape == (0,)


def test_bad_arguments_are_clear_errors(digits: np.ndarray) -> None:
    with pytest.raises(CnnlabError, match="too small"):
        make_clips(digits, 1, 0, frames=10, canvas=30)
    with pytest.raises(CnnlabError, match="at least 2 frames"):
        make_clips(digits, 1, 0, frames=1)
    with pytest.raises(CnnlabError, match="uint8"):
        make_clips(digits.astype(np.float32), 1, 0)
    with pytest.raises(CnnlabError, match="non-negative"):
        load_moving_mnist(fake_mnist(), seed=-1, n_train=1, n_val=1, n_test=1)
