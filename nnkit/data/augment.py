"""Data augmentation as pure JAX functions: jittable, vmappable, randomness only from ``key``.

Image functions act on ONE image ``img`` of shape (H, W, C) (an NHWC batch element) and return
the same shape and dtype; map them over a batch with :func:`augment_batch`, which gives every
example its own key. Size-like arguments (``max_shift``, ``padding``) are Python ints (static
under ``jit``); fill regions are zeros.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.ndimage import map_coordinates

__all__ = [
    "random_translate",
    "random_rotate",
    "rotate",
    "random_flip_lr",
    "random_crop",
    "gaussian_noise",
    "mixup",
    "augment_batch",
]

Array = jax.Array
ImageFn = Callable[[Array, Array], Array]


def _check_hwc(img: Array, fn: str) -> None:
    if img.ndim != 3:
        raise ValueError(
            f"{fn} takes one (H, W, C) image, got shape {img.shape}; "
            "use augment_batch (or jax.vmap) for a batch"
        )


def _shift_window(img: Array, pad: int, oy: Array, ox: Array, mode: str) -> Array:
    """The (H, W) window at offset (oy, ox) of ``img`` padded by ``pad`` on both spatial sides."""
    h, w, c = img.shape
    padded = jnp.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode=mode)
    return lax.dynamic_slice(padded, (oy, ox, jnp.zeros_like(oy)), (h, w, c))


def random_translate(key: Array, img: Array, max_shift: int) -> Array:
    """Shift (H, W, C) ``img`` by integers ``dy, dx ~ U{-max_shift..max_shift}``, zero fill."""
    _check_hwc(img, "random_translate")
    if max_shift == 0:
        return img
    d = jax.random.randint(key, (2,), -max_shift, max_shift + 1)
    return _shift_window(img, max_shift, max_shift - d[0], max_shift - d[1], "constant")


def random_crop(key: Array, img: Array, padding: int, pad_mode: str = "constant") -> Array:
    """Pad (H, W, C) ``img`` by ``padding`` (``jnp.pad`` mode) and crop a random (H, W) window."""
    _check_hwc(img, "random_crop")
    if padding == 0:
        return img
    o = jax.random.randint(key, (2,), 0, 2 * padding + 1)
    return _shift_window(img, padding, o[0], o[1], pad_mode)


def rotate(img: Array, degrees: float | Array) -> Array:
    """Rotate (H, W, C) ``img`` about its centre, counter-clockwise as displayed (row 0 on top).

    ``rotate(img, 90)`` equals ``jnp.rot90(img)`` for a square image. Bilinear resampling
    (``jax.scipy.ndimage.map_coordinates``, order 1); pixels from outside are zero.
    """
    _check_hwc(img, "rotate")
    h, w, _ = img.shape
    theta = jnp.asarray(degrees, jnp.float32) * (math.pi / 180)
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    yy, xx = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2,
        jnp.arange(w, dtype=jnp.float32) - (w - 1) / 2,
        indexing="ij",
    )
    # output pixel (y, x) samples the input at the inverse rotation of (y, x)
    src_y = cos * yy + sin * xx + (h - 1) / 2
    src_x = -sin * yy + cos * xx + (w - 1) / 2

    def channel(ch: Array) -> Array:
        return map_coordinates(ch, [src_y, src_x], order=1, mode="constant", cval=0.0)

    out = jax.vmap(channel, in_axes=2, out_axes=2)(img.astype(jnp.float32))
    return out.astype(img.dtype)


def random_rotate(key: Array, img: Array, max_degrees: float) -> Array:
    """:func:`rotate` (H, W, C) ``img`` by ``θ ~ U(-max_degrees, max_degrees)`` degrees."""
    _check_hwc(img, "random_rotate")
    return rotate(img, jax.random.uniform(key, (), minval=-max_degrees, maxval=max_degrees))


def random_flip_lr(key: Array, img: Array) -> Array:
    """Mirror (H, W, C) ``img`` left-right with probability 1/2."""
    _check_hwc(img, "random_flip_lr")
    return jnp.where(jax.random.bernoulli(key), img[:, ::-1, :], img)


def gaussian_noise(key: Array, x: Array, std: float | Array) -> Array:
    """``x + std·ε`` with ``ε ~ N(0, 1)`` i.i.d., any shape, dtype kept (float). ``std``: a
    number ``>= 0`` (or an array)."""
    if isinstance(std, int | float) and not std >= 0:
        raise ValueError(f"gaussian_noise: std must be >= 0, got {std!r}")
    noise = std * jax.random.normal(key, jnp.shape(x), jnp.result_type(x))
    return (x + noise).astype(jnp.result_type(x))


def mixup(key: Array, x: Array, y_onehot: Array, alpha: float) -> tuple[Array, Array]:
    """Mixup (Zhang et al. 2018) for a batch: x (n, ...), y_onehot (n, k) -> same shapes.

    Draws one ``λ ~ Beta(alpha, alpha)`` and a permutation ``π`` and returns
    ``(λx + (1-λ)x[π], λy + (1-λ)y[π])``. ``alpha <= 0`` (a Python number) returns the inputs.
    """
    if isinstance(alpha, int | float) and alpha <= 0:
        return x, y_onehot
    k_lam, k_perm = jax.random.split(key)
    lam = jax.random.beta(k_lam, alpha, alpha)
    perm = jax.random.permutation(k_perm, x.shape[0])
    xm = lam * x + (1 - lam) * x[perm]
    ym = lam * y_onehot + (1 - lam) * y_onehot[perm]
    return xm.astype(jnp.result_type(x)), ym.astype(jnp.result_type(y_onehot))


def augment_batch(key: Array, x: Array, fns: ImageFn | Sequence[ImageFn]) -> Array:
    """Apply ``fns`` (each ``f(key, img) -> img``) in order to every example of x (n, ...).

    Every example, and every function on it, gets its own key split from ``key``; the work is
    ``jax.vmap``-ed over the batch. Bind options with ``functools.partial``, e.g.
    ``augment_batch(key, x, [partial(random_crop, padding=4), random_flip_lr])``.
    """
    fs = (fns,) if callable(fns) else tuple(fns)
    if not fs:
        return x

    def one(k: Array, img: Array) -> Array:
        for f, kf in zip(fs, jax.random.split(k, len(fs)), strict=True):
            img = f(kf, img)
        return img

    return jax.vmap(one)(jax.random.split(key, x.shape[0]), x)
