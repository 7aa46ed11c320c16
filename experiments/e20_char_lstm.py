"""A character-level LSTM language model, and text sampled from it with a temperature.

Data: ``nnkit.data.load("chars", length=T)`` (the small public-domain text shipped with nnkit,
or any UTF-8 file given with ``--text PATH``): windows of ``T`` character ids ``x`` and the
next characters ``y`` (``y[t] = x[t+1]``). The text is split by position (first 90% for
training, the rest held out, no shared characters), so the held-out loss measures
generalisation, not recall of overlapping windows.

Model: ``Embedding(V, E) -> LSTM(H) (all steps) -> Dropout -> Dense(V)`` logits at every
step; the loss is the mean cross entropy over all ``B x T`` positions,
``-mean log p(y_t | x_<=t)`` in nats; perplexity is ``exp`` of it (``V`` for a uniform
guess). The shipped text is only ~7,000 characters, so the network soon starts to memorise
it: training stops when the held-out loss has not improved for 3 epochs, and the weights of
the best held-out epoch are kept (``nnkit.EarlyStopping``).

Sampling (:func:`sample`): the prompt is read by :func:`nnkit.layers.run_cell`, then ONE
``lax.scan`` draws ``c_{k+1} ~ softmax(logits_k / tau)`` and feeds it back; ``tau -> 0`` is
greedy decoding, ``tau = 1`` samples the model's distribution, larger ``tau`` flattens it.

    python -m experiments.e20_char_lstm [--quick] [--out DIR] [--text PATH]
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import nnkit
import nnkit.data
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from nnkit import layers as L
from nnkit import losses, optim

TITLE = "Character-level LSTM language model: perplexity and sampled text"
NAME = "e20_char_lstm"
TEMPERATURES = (0.0, 0.5, 1.0)  # 0 = greedy (argmax)


def make_parts(vocab: int, embed: int, hidden: int) -> dict[str, nnkit.Layer]:
    """The model's named layers, kept apart for sampling (dropout is the identity there)."""
    return {"embed": L.Embedding(vocab, embed, name="embed"),
            "lstm": L.LSTM(hidden, return_sequences=True, name="lstm"),
            "dropout": L.Dropout(0.3, name="dropout"),
            "out": L.Dense(vocab, name="out")}


def sample(parts: dict[str, nnkit.Layer], params: dict, prompt: jax.Array, key: jax.Array,
           temperature: jax.Array, length: int) -> jax.Array:
    """``length`` characters generated after ``prompt`` (int ids (P,)): ids (length,).

    The LSTM state after the prompt comes from ``run_cell``; each step then samples from
    ``softmax(logits / temperature)`` (argmax when ``temperature == 0``) inside ``lax.scan``.
    """
    cell = L.LSTMCell(dict(parts["lstm"].meta)["hidden"])
    embed = functools.partial(parts["embed"].apply, params["embed"], {})
    head = functools.partial(parts["out"].apply, params["out"], {})
    carry, hs = L.run_cell(cell, params["lstm"], embed(prompt[None])[0])  # (1, P, H)
    logits = head(hs[:, -1])[0][0]  # (V,)
    greedy = temperature <= 0
    stacked = cell.prepare(params["lstm"])  # the cell's weights as one matmul, built once

    def step(state, k):
        carry, logits = state
        scaled = logits / jnp.where(greedy, 1.0, temperature)
        tok = jnp.where(greedy, jnp.argmax(logits), jax.random.categorical(k, scaled))
        x = embed(tok[None, None])[0][:, 0]  # (1, E)
        carry, h = cell.step(stacked, carry, x)
        return (carry, head(h)[0][0]), tok

    _, toks = jax.lax.scan(step, (carry, logits), jax.random.split(key, length))
    return toks


def _split_by_position(ds, frac: float, every: int):
    """Windows starting in the first ``frac`` of the text (every ``every``-th) for training;
    windows starting after the last training character for held-out evaluation."""
    n, t = ds.x.shape
    n_tr = int(frac * n)
    tr = slice(0, n_tr, every)
    va = slice(n_tr + t, n, max(every, t // 4))
    return (ds.x[tr], ds.y[tr]), (ds.x[va], ds.y[va])


def _figure(hist: dict, init: dict, vocab: int, best: int, path: str) -> str:
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    ep = np.concatenate([[0], np.asarray(hist["epoch"]) + 1])
    for k, lab, st in (("train", "training text", "-o"), ("val", "held-out text", "--o")):
        ppl = np.exp(np.concatenate([[init[k]], hist[f"{k}_loss"]]))
        ax.semilogy(ep, ppl, st, ms=3, label=lab)
    ax.axhline(vocab, color="k", ls=":", lw=1, label=f"uniform guess (V = {vocab})")
    ax.axvline(best + 1, color="tab:green", lw=1, label=f"kept (best held-out): epoch {best + 1}")
    ax.set_xlabel("epoch (0 = initialisation; train curve measured with dropout)")
    ax.set_ylabel("perplexity exp(cross entropy) (log scale)")
    ax.set_title("character-level LSTM", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False,
         text: str | os.PathLike | None = None) -> dict[str, Any]:
    """Trains the char LSTM; perplexities before/after and samples at several temperatures."""
    out = out_dir(NAME, out)
    T, embed, hidden, batch = (16, 8, 32, 32) if quick else (48, 24, 128, 32)
    epochs, n_gen = (1, 40) if quick else (20, 300)
    ds = nnkit.data.load("chars", path=text, length=T)
    vocab = ds.num_classes
    train, val = _split_by_position(ds, 0.9, 8 if quick else 4)
    parts = make_parts(vocab, embed, hidden)
    model = nnkit.serial(*parts.values())
    total = epochs * (len(train[0]) // batch)
    opt = optim.make("adam", optim.schedule("cosine", learning_rate=3e-3, decay_steps=total,
                                            alpha=0.05), clip_norm=1.0)
    ts0 = nnkit.create_train_state(model, (T,), opt, 0)  # = fit's initial state

    def ce(params, x, y):
        return losses.cross_entropy(model.apply(params, {}, x)[0], y)

    ce = jax.jit(ce)
    init = {"train": float(ce(ts0.params, *train)), "val": float(ce(ts0.params, *val))}
    res = nnkit.fit(model, opt, train, val_data=val, loss="cross_entropy",
                    metrics=("accuracy",), epochs=epochs, batch_size=batch, key=0,
                    early_stopping=nnkit.EarlyStopping("val_loss", patience=3),
                    progress=False)
    params = res.train_state.params  # the best held-out epoch's
    h = res.history
    best = int(np.argmin(h["val_loss"]))
    final = {"train": float(ce(params, *train)), "val": float(ce(params, *val))}
    fig = _figure(h, init, vocab, best, str(out / "perplexity.png"))

    names = np.asarray(ds.class_names)
    prompt_ids = val[0][0][:24]
    prompt = "".join(names[prompt_ids])
    gen = jax.jit(functools.partial(sample, parts), static_argnums=(4,))
    samples = {}
    for i, tau in enumerate(TEMPERATURES):
        toks = gen(params, jnp.asarray(prompt_ids), jax.random.key(i), jnp.float32(tau), n_gen)
        samples[f"{tau:g}"] = prompt + "".join(names[np.asarray(toks)])
    text_lines = []
    for tau, s in samples.items():
        text_lines += [f"--- temperature {tau}{' (greedy)' if tau == '0' else ''} ---", s, ""]
    (out / "samples.txt").write_text("\n".join(text_lines), encoding="utf-8")

    source = "the shipped default text" if text is None else f"`{text}`"
    kept = {"train": final["train"], "val": final["val"]}
    last = {"train": float(h["train_loss"][-1]), "val": float(h["val_loss"][-1])}
    ppl = {f"{when}_{k}": float(np.exp(v[k])) for when, v in
           (("init", init), ("kept", kept), ("last_epoch", last)) for k in ("train", "val")}
    snippet = samples["0.5"][:200]
    n_run = len(h["val_loss"])
    summary = [
        f"{len(train[0])} training windows of {T} characters from the first 90% of "
        f"{source} (V = {vocab} distinct characters), {len(val[0])} held-out windows from the "
        f"last 10%; Embedding({embed}) -> LSTM({hidden}) -> Dropout(0.3) -> Dense({vocab}), "
        f"Adam 3e-3 cosine, batch {batch}; early stopping on the held-out loss ran "
        f"{n_run} of {epochs} epochs and kept epoch {best + 1}.",
        "",
        "| cross entropy, nats/char (perplexity) | training text | held-out text |",
        "|---|---|---|",
        f"| initialisation | {init['train']:.3f} ({ppl['init_train']:.1f}) | "
        f"{init['val']:.3f} ({ppl['init_val']:.1f}) |",
        f"| kept model (epoch {best + 1}) | {kept['train']:.3f} ({ppl['kept_train']:.2f}) | "
        f"{kept['val']:.3f} ({ppl['kept_val']:.2f}) |",
        f"| last epoch run ({n_run}; train loss with dropout) | {last['train']:.3f} "
        f"({ppl['last_epoch_train']:.2f}) | {last['val']:.3f} ({ppl['last_epoch_val']:.2f}) |",
        "",
        f"Held-out next-character accuracy of the kept model: {h['val_accuracy'][best]:.1%}. "
        f"Sample at temperature 0.5 (prompt = the first {len(prompt)} held-out characters; "
        "greedy and temperature 1 in `samples.txt`):",
        "",
        "```",
        *snippet.splitlines(),
        "```",
    ]
    metrics = {
        "vocab": vocab, "epochs_run": n_run, "best_epoch": best + 1,
        "cross_entropy": {"init": init, "kept": kept, "last_epoch": last},
        "perplexity": ppl, "val_accuracy": float(h["val_accuracy"][best]),
        "samples": samples, "prompt": prompt,
    }
    return save_results(out, {"summary": summary, "figures": [fig], "metrics": metrics})


def _cli_text() -> str | None:
    return sys.argv[sys.argv.index("--text") + 1] if "--text" in sys.argv else None


if __name__ == "__main__":
    run_cli(functools.partial(main, text=_cli_text()))
