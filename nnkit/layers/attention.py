"""Scaled dot-product attention, multi-head self/cross attention and a Transformer encoder block.

Data is batch-first: ``x`` of shape ``(B, T, D)``.

Masks are boolean, ``True`` = "may attend / valid". A **padding mask** marks the valid
positions of each sequence, shape ``(B, T)``; it is passed *with the data*: a layer that
should use one is initialised with ``input_shape = ((T, D), (T,))`` and applied to the pair
``(x, mask)``. A padded position is then never attended to, so its content cannot influence
the output at any other position (its own output row is computed but meaningless). A
**causal** mask (``causal=True``) lets position ``t`` attend to positions ``<= t`` only.

* :func:`attention` -- the functional core, any leading dims.
* :func:`MultiHeadAttention` -- self-attention layer: ``x`` or ``(x, mask)`` -> ``y``.
* :func:`MultiHeadCrossAttention` -- ``(x, context)`` or ``(x, context, context_mask)`` -> ``y``.
* :func:`TransformerEncoderBlock` -- pre-LayerNorm block; ``x -> x`` or
  ``(x, mask) -> (x, mask)`` (the mask is passed through).
* :func:`TransformerEncoder` -- positional encoding, a stack of blocks and a final LayerNorm;
  takes ``x`` or ``(x, mask)``. (``nnkit.serial`` stacks blocks too, masked ones included:
  ``serial(pos, block, block).init(key, ((T, D), (T,)))``.)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from nnkit import initializers as inits
from nnkit._checks import check_int
from nnkit.core import Layer, ShapeError, child_key, residual, serial
from nnkit.layers._masked import (
    multi_input_layer,
    split_mask_input,
    split_mask_shape,
)
from nnkit.layers.activation import Activation
from nnkit.layers.dense import Dense
from nnkit.layers.dropout import Dropout
from nnkit.layers.normalization import LayerNorm

__all__ = [
    "attention",
    "causal_mask",
    "MultiHeadAttention",
    "MultiHeadCrossAttention",
    "TransformerEncoderBlock",
    "TransformerEncoder",
]

Array = jax.Array


def causal_mask(q_len: int, k_len: int | None = None) -> Array:
    """Boolean ``(q_len, k_len)`` lower-triangular mask: ``m[i, j] = j <= i``."""
    k_len = q_len if k_len is None else k_len
    return jnp.tril(jnp.ones((q_len, k_len), dtype=bool))


def attention(q: Array, k: Array, v: Array, mask: Array | None = None) -> Array:
    """Scaled dot-product attention: ``softmax(q k^T / sqrt(d) masked) v``.

    Shapes: ``q (..., Tq, d)``, ``k (..., Tk, d)``, ``v (..., Tk, dv)`` -> ``(..., Tq, dv)``;
    ``mask`` boolean, broadcastable to ``(..., Tq, Tk)``, ``True`` where query ``i`` may
    attend to key ``j``. Masked logits are set to the dtype's minimum before the softmax and
    the weights are multiplied by the mask afterwards, so a query with no valid key gets a
    zero output (not NaN). The softmax is computed in at least float32.
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ShapeError(
            f"attention: need q (..., Tq, d), k (..., Tk, d), v (..., Tk, dv); got "
            f"{q.shape}, {k.shape}, {v.shape}"
        )
    work = jnp.promote_types(jnp.result_type(q, k), jnp.float32)
    logits = jnp.einsum("...qd,...kd->...qk", q, k).astype(work) / math.sqrt(q.shape[-1])
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(work).min)
    weights = jax.nn.softmax(logits, axis=-1)
    if mask is not None:
        weights = weights * mask
    return jnp.einsum("...qk,...kv->...qv", weights.astype(v.dtype), v)


def _check_positive(who: str, **values) -> None:
    for what, v in values.items():
        if v is None:
            continue
        check_int(v, f"{who}: {what}", error=ShapeError)


def _proj_params(key, n_in: int, n_out: int, use_bias: bool) -> dict:
    p = {"w": inits.glorot_uniform()(key, (n_in, n_out))}
    if use_bias:
        p["b"] = jnp.zeros((n_out,), jnp.float32)
    return p


def _proj(p: dict, x: Array) -> Array:
    y = x @ p["w"]
    return y + p["b"] if "b" in p else y


def _mha_params(key, d_q: int, d_kv: int, heads: int, key_size: int, value_size: int,
                d_out: int, use_bias: bool) -> dict:
    kq, kk, kv, ko = jax.random.split(key, 4)
    return {
        "query": _proj_params(kq, d_q, heads * key_size, use_bias),
        "key": _proj_params(kk, d_kv, heads * key_size, use_bias),
        "value": _proj_params(kv, d_kv, heads * value_size, use_bias),
        "out": _proj_params(ko, heads * value_size, d_out, use_bias),
    }


def _check_features(who: str, params: dict, xq: Array, xkv: Array) -> None:
    """The queries' and keys' feature sizes against the projections they were built for."""
    for what, x, proj in (("x", xq, "query"), ("keys/values", xkv, "key")):
        w = params[proj]["w"]
        if x.shape[-1] != w.shape[0]:
            raise ShapeError(f"{who}: {what} of shape {tuple(x.shape)} has {x.shape[-1]} "
                             f"features, the {proj} projection w {tuple(w.shape)} expects "
                             f"{w.shape[0]}")


def _mha(params: dict, xq: Array, xkv: Array, mask: Array | None, heads: int) -> Array:
    """Multi-head attention of ``xq (B, Tq, Dq)`` over ``xkv (B, Tk, Dkv)``; mask
    broadcastable to ``(B, heads, Tq, Tk)``."""

    def split_heads(y):  # (B, T, h*k) -> (B, h, T, k)
        b, t, hk = y.shape
        return y.reshape(b, t, heads, hk // heads).transpose(0, 2, 1, 3)

    q = split_heads(_proj(params["query"], xq))
    k = split_heads(_proj(params["key"], xkv))
    v = split_heads(_proj(params["value"], xkv))
    o = attention(q, k, v, mask)  # (B, h, Tq, v)
    b, h, t, dv = o.shape
    return _proj(params["out"], o.transpose(0, 2, 1, 3).reshape(b, t, h * dv))


def MultiHeadAttention(
    num_heads: int,
    key_size: int,
    *,
    value_size: int | None = None,
    out_features: int | None = None,
    causal: bool = False,
    use_bias: bool = True,
    name: str | None = None,
) -> Layer:
    """Multi-head self-attention (Vaswani et al. 2017) over ``x`` of shape ``(B, T, D)``.

    ``head_i = attention(x Wq_i, x Wk_i, x Wv_i, mask)``, ``y = concat_i(head_i) Wo + bo``.
    Input ``x`` (``input_shape (T, D)``) or ``(x, padding_mask)`` with a boolean ``(B, T)``
    mask of valid positions (``input_shape ((T, D), (T,))``); output ``(B, T, out_features)``
    (default ``D``). ``causal=True`` adds the mask ``j <= i``.

    Params (``h = num_heads``, ``k = key_size``, ``v = value_size`` default ``k``)::

        {"query": {"w": (D, h*k), "b": (h*k,)}, "key": {"w": (D, h*k), "b": (h*k,)},
         "value": {"w": (D, h*v), "b": (h*v,)}, "out": {"w": (h*v, D_out), "b": (D_out,)}}

    (head ``i`` uses columns ``[i*k, (i+1)*k)``); weights Glorot uniform, biases zero.
    """
    who = name or "multi_head_attention"
    _check_positive(who, num_heads=num_heads, key_size=key_size, value_size=value_size,
                    out_features=out_features)
    value_size = value_size or key_size

    def init(key, input_shape):
        x_shape, _ = split_mask_shape(input_shape)
        if len(x_shape) != 2:
            raise ShapeError(f"expected input shape (T, D) (data (B, T, D)), got {x_shape}")
        t, d = x_shape
        d_out = out_features or d
        params = _mha_params(key, d, d, num_heads, key_size, value_size, d_out, use_bias)
        return (t, d_out), params, {}

    def apply(params, state, inputs, *, key=None, train=False):
        x, pad = split_mask_input(inputs)
        if x.ndim != 3:
            raise ShapeError(f"{who}: expected x of shape (B, T, D), got {x.shape}")
        t = x.shape[1]
        mask = None
        if pad is not None:
            if pad.shape != x.shape[:2]:
                raise ShapeError(f"{who}: padding mask shape {pad.shape} != (B, T) "
                                 f"{x.shape[:2]}")
            mask = pad[:, None, None, :]  # (B, 1, 1, Tk): keys only
        if causal:
            cm = causal_mask(t)
            mask = cm if mask is None else mask & cm
        _check_features(who, params, x, x)
        return _mha(params, x, x, mask, num_heads), {}

    meta = {"num_heads": num_heads, "key_size": key_size, "value_size": value_size,
            "causal": causal}
    return multi_input_layer("multi_head_attention", init, apply, name=name, meta=meta)


def MultiHeadCrossAttention(
    num_heads: int,
    key_size: int,
    *,
    value_size: int | None = None,
    out_features: int | None = None,
    use_bias: bool = True,
    name: str | None = None,
) -> Layer:
    """Multi-head cross-attention: queries from ``x``, keys and values from ``context``.

    Input ``(x, context)`` with ``x (B, Tq, D)``, ``context (B, Tk, C)``
    (``input_shape ((Tq, D), (Tk, C))``), or ``(x, context, context_mask)`` with a boolean
    ``(B, Tk)`` mask of valid context positions (``input_shape ((Tq, D), (Tk, C), (Tk,))``).
    Output ``(B, Tq, out_features)`` (default ``D``). Params as :func:`MultiHeadAttention`
    with ``key``/``value`` weights of shape ``(C, h*k)``/``(C, h*v)``.
    """
    who = name or "multi_head_cross_attention"
    _check_positive(who, num_heads=num_heads, key_size=key_size, value_size=value_size,
                    out_features=out_features)
    value_size = value_size or key_size

    def init(key, input_shape):
        shapes = tuple(input_shape) if isinstance(input_shape, tuple) else ()
        if len(shapes) not in (2, 3) or not all(isinstance(s, tuple) for s in shapes):
            raise ShapeError(
                f"expected input shape ((Tq, D), (Tk, C)) or ((Tq, D), (Tk, C), (Tk,)), got "
                f"{input_shape}"
            )
        x_shape, c_shape = shapes[:2]
        if len(x_shape) != 2 or len(c_shape) != 2:
            raise ShapeError(f"expected x (Tq, D) and context (Tk, C), got {x_shape} and "
                             f"{c_shape}")
        if len(shapes) == 3 and shapes[2] != c_shape[:1]:
            raise ShapeError(f"context mask shape {shapes[2]} != (Tk,) {c_shape[:1]}")
        d_out = out_features or x_shape[1]
        params = _mha_params(key, x_shape[1], c_shape[1], num_heads, key_size, value_size,
                             d_out, use_bias)
        return (x_shape[0], d_out), params, {}

    def apply(params, state, inputs, *, key=None, train=False):
        if not isinstance(inputs, tuple | list) or len(inputs) not in (2, 3):
            raise ValueError(f"{who}: expected (x, context) or (x, context, context_mask)")
        x, ctx = inputs[0], inputs[1]
        if x.ndim != 3 or ctx.ndim != 3 or x.shape[0] != ctx.shape[0]:
            raise ShapeError(f"{who}: expected x (B, Tq, D) and context (B, Tk, C), got "
                             f"{x.shape} and {ctx.shape}")
        mask = None
        if len(inputs) == 3:
            cm = jnp.asarray(inputs[2]).astype(bool)
            if cm.shape != ctx.shape[:2]:
                raise ShapeError(f"{who}: context mask shape {cm.shape} != (B, Tk) "
                                 f"{ctx.shape[:2]}")
            mask = cm[:, None, None, :]
        _check_features(who, params, x, ctx)
        return _mha(params, x, ctx, mask, num_heads), {}

    meta = {"num_heads": num_heads, "key_size": key_size, "value_size": value_size}
    return multi_input_layer("multi_head_cross_attention", init, apply, name=name, meta=meta)


def TransformerEncoderBlock(
    num_heads: int,
    key_size: int,
    mlp_dim: int,
    dropout: float = 0.0,
    *,
    causal: bool = False,
    activation: str = "gelu",
    name: str | None = None,
) -> Layer:
    """Pre-LayerNorm Transformer encoder block on ``(B, T, D)``::

        x = x + Dropout(MultiHeadAttention(LayerNorm(x), mask))
        x = x + Dropout(Dense_D(act(Dense_mlp_dim(LayerNorm(x)))))

    Input ``x`` -> output ``x`` (same shape), or ``(x, padding_mask)`` -> ``(x, padding_mask)``
    (the mask is passed through so blocks stack; see :func:`TransformerEncoder`). Dropout needs
    ``key=`` when ``train=True`` and ``dropout > 0``.

    Params: ``{"ln_1": LayerNorm, "attention": MultiHeadAttention,
    "mlp": {"block": {"layer_norm_0", "dense_0": (D, mlp_dim), "dense_1": (mlp_dim, D)}}}``
    (the MLP half is an :func:`nnkit.residual` of a :func:`nnkit.serial`).
    """
    who = name or "transformer_encoder_block"
    _check_positive(who, num_heads=num_heads, key_size=key_size, mlp_dim=mlp_dim)
    ln_1 = LayerNorm(name="ln_1")
    attn = MultiHeadAttention(num_heads, key_size, causal=causal, name="attention")
    drop_1 = Dropout(dropout, name="drop_1")

    def mlp(d: int) -> Layer:  # needs D, known from the input shape
        return residual(serial(LayerNorm(), Dense(mlp_dim), Activation(activation), Dense(d),
                               Dropout(dropout)), name="mlp")

    def init(key, input_shape):
        x_shape, m_shape = split_mask_shape(input_shape)
        if len(x_shape) != 2:
            raise ShapeError(f"expected input shape (T, D) (data (B, T, D)), got {x_shape}")
        _, p_ln, _ = ln_1.init(child_key(key, "ln_1"), x_shape)
        _, p_attn, _ = attn.init(child_key(key, "attention"), input_shape)
        _, p_mlp, _ = mlp(x_shape[1]).init(child_key(key, "mlp"), x_shape)
        params = {"ln_1": p_ln, "attention": p_attn, "mlp": p_mlp}
        return input_shape, params, {}

    def apply(params, state, inputs, *, key=None, train=False):
        x, pad = split_mask_input(inputs)
        h, _ = ln_1.apply(params["ln_1"], {}, x)
        a, _ = attn.apply(params["attention"], {}, h if pad is None else (h, pad))
        a, _ = drop_1.apply({}, {}, a, key=child_key(key, "drop_1"), train=train)
        x = x + a
        x, _ = mlp(x.shape[-1]).apply(params["mlp"], {}, x, key=child_key(key, "mlp"),
                                      train=train)
        return (x if pad is None else (x, pad)), {}

    meta = {"num_heads": num_heads, "key_size": key_size, "mlp_dim": mlp_dim,
            "dropout": dropout, "causal": causal}
    return multi_input_layer("transformer_encoder_block", init, apply, name=name, meta=meta)


def TransformerEncoder(
    num_layers: int,
    num_heads: int,
    key_size: int,
    mlp_dim: int,
    dropout: float = 0.0,
    *,
    causal: bool = False,
    positional: Layer | None = None,
    activation: str = "gelu",
    name: str | None = None,
) -> Layer:
    """``LayerNorm(block_{L-1}(... block_0(positional(x))))`` on ``(B, T, D)``.

    ``positional`` is a positional layer (e.g.
    :func:`~nnkit.layers.SinusoidalPositionalEncoding`) or ``None`` for none. Input ``x`` or
    ``(x, padding_mask)`` (``input_shape ((T, D), (T,))``); output ``(B, T, D)`` (the mask is
    not returned). Params: ``{"positional"?, "block_0", ..., "block_{L-1}", "ln_f"}``, each
    block a :func:`TransformerEncoderBlock`.
    """
    who = name or "transformer_encoder"
    _check_positive(who, num_layers=num_layers)
    blocks = tuple(
        (f"block_{i}", TransformerEncoderBlock(num_heads, key_size, mlp_dim, dropout,
                                               causal=causal, activation=activation))
        for i in range(num_layers)
    )
    ln_f = LayerNorm(name="ln_f")
    stages = ((("positional", positional),) if positional is not None else ()) + blocks

    def init(key, input_shape):
        x_shape, _ = split_mask_shape(input_shape)
        if len(x_shape) != 2:
            raise ShapeError(f"expected input shape (T, D) (data (B, T, D)), got {x_shape}")
        params, shape = {}, input_shape
        for n, lyr in stages:
            try:
                shape, p, _ = lyr.init(child_key(key, n), shape)
            except ShapeError as e:
                raise ShapeError(f"{n}/{e}") from None
            if p:
                params[n] = p
        _, params["ln_f"], _ = ln_f.init(child_key(key, "ln_f"), x_shape)
        return x_shape, params, {}

    def apply(params, state, inputs, *, key=None, train=False):
        h = inputs
        for n, lyr in stages:
            h, _ = lyr.apply(params.get(n, {}), {}, h, key=child_key(key, n), train=train)
        x, _ = split_mask_input(h)
        y, _ = ln_f.apply(params["ln_f"], {}, x)
        return y, {}

    meta = {"num_layers": num_layers, "num_heads": num_heads, "key_size": key_size,
            "mlp_dim": mlp_dim, "dropout": dropout, "causal": causal}
    lyr = multi_input_layer("transformer_encoder", init, apply, name=name, meta=meta)
    return lyr._replace(children=(*stages, ("ln_f", ln_f)))
