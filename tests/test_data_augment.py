"""Augmentation functions: shapes, identities, statistics, jit/vmap."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nnkit.data import (
    augment_batch,
    gaussian_noise,
    mixup,
    random_crop,
    random_flip_lr,
    random_rotate,
    random_translate,
    rotate,
)

IMG = jnp.asarray(np.random.default_rng(0).uniform(size=(8, 10, 3)), jnp.float32)
BATCH = jnp.asarray(np.random.default_rng(1).uniform(size=(6, 8, 10, 3)), jnp.float32)


def shift_np(img, dy, dx):
    out = np.zeros_like(img)
    h, w = img.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = img[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def test_flip_twice_is_identity_and_flips_half():
    keys = jax.random.split(jax.random.key(0), 64)
    once = jax.vmap(random_flip_lr, (0, None))(keys, IMG)
    twice = jax.vmap(random_flip_lr)(keys, once)
    np.testing.assert_array_equal(np.asarray(twice), np.broadcast_to(IMG, twice.shape))
    flipped = np.array([np.array_equal(o, np.asarray(IMG)[:, ::-1]) for o in np.asarray(once)])
    assert 16 < flipped.sum() < 48


def test_translate_zero_is_identity_and_shift_is_exact():
    np.testing.assert_array_equal(random_translate(jax.random.key(0), IMG, 0), IMG)
    img = np.asarray(IMG)
    for k in range(5):
        out = np.asarray(jax.jit(random_translate, static_argnums=2)(jax.random.key(k), IMG, 2))
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(out, shift_np(img, dy, dx))
        ]
        assert len(matches) == 1


def test_crop_is_a_window_of_the_padded_image():
    out = np.asarray(random_crop(jax.random.key(3), IMG, 2))
    assert out.shape == IMG.shape
    padded = np.pad(np.asarray(IMG), ((2, 2), (2, 2), (0, 0)))
    windows = [padded[i : i + 8, j : j + 10] for i in range(5) for j in range(5)]
    assert any(np.array_equal(out, w) for w in windows)
    np.testing.assert_array_equal(random_crop(jax.random.key(3), IMG, 0), IMG)
    edge = random_crop(jax.random.key(4), IMG, 3, pad_mode="edge")
    assert edge.shape == IMG.shape


def test_rotate():
    np.testing.assert_allclose(random_rotate(jax.random.key(0), IMG, 0.0), IMG, atol=1e-6)
    out = jax.jit(random_rotate)(jax.random.key(1), IMG, 30.0)
    assert out.shape == IMG.shape and out.dtype == IMG.dtype
    sq = jnp.zeros((9, 9, 1)).at[4, 4, 0].set(1.0)  # centre pixel stays put
    assert float(random_rotate(jax.random.key(2), sq, 45.0)[4, 4, 0]) == pytest.approx(1.0)
    sqimg = IMG[:8, :8]
    np.testing.assert_allclose(rotate(sqimg, 90.0), jnp.rot90(sqimg), atol=1e-4)
    np.testing.assert_allclose(rotate(sqimg, 180.0), sqimg[::-1, ::-1], atol=1e-4)
    np.testing.assert_allclose(rotate(sqimg, -90.0), jnp.rot90(sqimg, -1), atol=1e-4)
    # random_rotate draws theta from the key and applies rotate
    theta = jax.random.uniform(jax.random.key(5), (), minval=-30.0, maxval=30.0)
    np.testing.assert_allclose(
        random_rotate(jax.random.key(5), IMG, 30.0), rotate(IMG, theta), atol=1e-6
    )
    with pytest.raises(ValueError, match="one"):
        random_rotate(jax.random.key(0), BATCH, 10.0)


def test_noise_statistics():
    x = jnp.zeros((200, 100))
    out = np.asarray(gaussian_noise(jax.random.key(0), x, 0.5))
    assert abs(out.mean()) < 0.01 and abs(out.std() - 0.5) < 0.01
    assert gaussian_noise(jax.random.key(0), IMG, 0.0).dtype == jnp.float32
    np.testing.assert_array_equal(gaussian_noise(jax.random.key(0), IMG, 0.0), IMG)


def test_mixup_is_convex_combination():
    n = 8
    y = jnp.eye(n)  # one class per example, so ym reveals lambda and the partner
    x = jax.random.normal(jax.random.key(9), (n, 5))
    for seed in range(3):
        xm, ym = jax.jit(mixup)(jax.random.key(seed), x, y, 0.4)
        xm, ym = np.asarray(xm), np.asarray(ym)
        assert xm.shape == x.shape and ym.shape == y.shape
        np.testing.assert_allclose(ym.sum(1), 1.0, atol=1e-6)
        assert ym.min() >= 0
        lams = set()
        for i in range(n):
            others = np.delete(np.arange(n), i)
            j = others[np.argmax(ym[i, others])]
            lam = ym[i, i] if ym[i, j] > 1e-7 else 1.0  # partner == itself: row unchanged
            if ym[i, j] > 1e-7:
                lams.add(round(float(lam), 5))
            np.testing.assert_allclose(xm[i], lam * x[i] + (1 - lam) * x[j], atol=1e-5)
        assert len(lams) <= 1  # one lambda per batch
    same = mixup(jax.random.key(0), x, y, 0.0)
    assert same[0] is x and same[1] is y


def test_augment_batch_per_example_keys_jit_and_shapes():
    fns = [
        partial(random_translate, max_shift=2),
        random_flip_lr,
        partial(random_rotate, max_degrees=10.0),
    ]
    run = jax.jit(lambda k, x: augment_batch(k, x, fns))
    out = run(jax.random.key(0), BATCH)
    assert out.shape == BATCH.shape and out.dtype == BATCH.dtype
    np.testing.assert_array_equal(np.asarray(out), np.asarray(run(jax.random.key(0), BATCH)))
    same = jnp.broadcast_to(IMG, (16, *IMG.shape))
    aug = np.asarray(augment_batch(jax.random.key(1), same, partial(random_translate, max_shift=3)))
    assert len({a.tobytes() for a in aug}) > 4  # examples got different keys
    assert augment_batch(jax.random.key(0), BATCH, []) is BATCH
    crop = augment_batch(jax.random.key(0), BATCH, partial(random_crop, padding=1))
    assert crop.shape == BATCH.shape


def test_gaussian_noise_keeps_the_dtype_with_an_array_std():
    import jax
    import jax.numpy as jnp

    from nnkit.data.augment import gaussian_noise

    x = jnp.ones((2, 3), jnp.bfloat16)
    for std in (0.1, jnp.float32(0.1)):
        assert gaussian_noise(jax.random.key(0), x, std).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="std must be >= 0"):
        gaussian_noise(jax.random.key(0), x, -1.0)
