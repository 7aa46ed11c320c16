"""A GAN on a 2-D mixture of 8 Gaussians on a ring: samples through training, modes covered.

Real data: ``x = R (cos 2 pi k / 8, sin 2 pi k / 8) + sigma * eps`` with ``k`` uniform in
``0..7`` (``R = 2``, ``sigma = 0.05``), drawn fresh for every step. Generator
``G: z ~ N(0, I_2) -> R^2`` and discriminator ``D: R^2 -> logit`` are ReLU MLPs; each step is
:func:`nnkit.gan.make_gan_step` (one D update on the standard BCE, then one G update on the
non-saturating loss ``-mean log D(G(z))``), and ``K`` steps run inside one ``lax.scan``
(one compiled call between snapshots; the real batches are sampled on the device).
Three initialisation seeds are trained: whether a GAN collapses onto a subset of the modes
depends on the seed, so one run alone says little.

Mode coverage (as in Metz et al. 2017, "Unrolled GANs"): each of 2,000 generated points is
assigned to its nearest mode; it is *high quality* if it lies within ``3 sigma`` of it; a
mode is *covered* if it receives at least 1% of the samples as high-quality points (a
perfect generator gives each mode 12.5%).

    python -m experiments.e21_gan [--quick] [--out DIR]
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import nnkit
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from nnkit import gan, optim
from nnkit.layers import Dense, Relu

TITLE = "GAN on a ring of 8 Gaussians: generated samples through training, modes covered"
NAME = "e21_gan"
MODES, RADIUS, SIGMA, LATENT = 8, 2.0, 0.05, 2
CENTERS = np.stack([RADIUS * np.cos(2 * np.pi * np.arange(MODES) / MODES),
                    RADIUS * np.sin(2 * np.pi * np.arange(MODES) / MODES)], 1)


def sample_ring(key: jax.Array, n: int) -> jax.Array:
    """``n`` points of the 8-Gaussian ring mixture: (n, 2) float32."""
    k1, k2 = jax.random.split(key)
    comp = jax.random.randint(k1, (n,), 0, MODES)
    return (jnp.asarray(CENTERS, jnp.float32)[comp]
            + SIGMA * jax.random.normal(k2, (n, 2), jnp.float32))


def networks(width: int = 128) -> tuple[nnkit.Layer, nnkit.Layer]:
    """Generator ``R^2 -> R^2`` and discriminator ``R^2 -> R`` (one logit), ReLU MLPs."""
    g = nnkit.serial(Dense(width), Relu(), Dense(width), Relu(), Dense(2))
    d = nnkit.serial(Dense(width), Relu(), Dense(width), Relu(), Dense(1))
    return g, d


def mode_coverage(x: np.ndarray, min_frac: float = 0.01) -> dict[str, Any]:
    """Nearest-mode assignment of samples ``x`` (n, 2): modes covered and quality fraction."""
    dist = np.linalg.norm(x[:, None, :] - CENTERS[None], axis=-1)  # (n, MODES)
    near, d = dist.argmin(1), dist.min(1)
    good = d < 3 * SIGMA
    counts = np.bincount(near[good], minlength=MODES)
    return {"modes_covered": int(np.sum(counts >= min_frac * len(x))),
            "high_quality_fraction": float(good.mean()),
            "per_mode_fraction": (counts / len(x)).tolist()}


def make_chunk(step_fn, batch: int, length: int):
    """``length`` GAN steps in one ``lax.scan``: ``(gan_state, key) -> (gan_state, metrics)``.

    Step ``t``'s real batch is ``sample_ring(fold_in(key, t), batch)``; metrics are stacked
    over the steps (device arrays, read once per chunk).
    """

    def chunk(gs: gan.GANState, key: jax.Array):
        def body(gs, _):
            real = sample_ring(jax.random.fold_in(key, gs.step), batch)
            return step_fn(gs, real)

        return jax.lax.scan(body, gs, None, length=length)

    return jax.jit(chunk)


def _figure_samples(runs: dict, shown: list, real: np.ndarray, path: str) -> str:
    rows, cols = len(runs), len(shown)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.25 * rows + 0.3), sharex=True,
                             sharey=True, squeeze=False)
    for r, (seed, run) in enumerate(runs.items()):
        for c, step in enumerate(shown):
            ax, snap = axes[r, c], run["snaps"][step]
            ax.scatter(real[:, 0], real[:, 1], s=2, c="0.7", label="real")
            ax.scatter(snap["x"][:, 0], snap["x"][:, 1], s=2, c="tab:blue", alpha=0.5,
                       label="generated")
            ax.set_title(f"seed {seed}, step {step}: {snap['cov']['modes_covered']}/{MODES} "
                         "modes", fontsize=7)
            ax.set_aspect("equal")
            ax.set_xlim(-3, 3)
            ax.set_ylim(-3, 3)
            ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6, loc="lower left", markerscale=3)
    return savefig(fig, path)


def _figure_losses(steps: np.ndarray, m: dict, seed: int, path: str) -> str:
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.2))
    w = max(len(steps) // 100, 1)
    smooth = (lambda v: np.convolve(v, np.ones(w) / w, mode="valid")) if w > 1 else np.asarray
    s = steps[w - 1:] if w > 1 else steps
    ax0.plot(s, smooth(m["d_loss"]), label="D loss")
    ax0.plot(s, smooth(m["g_loss"]), label="G loss (non-saturating)")
    ax0.axhline(2 * np.log(2), color="k", ls=":", lw=0.8, label="D loss at D = 1/2: 2 log 2")
    ax0.axhline(np.log(2), color="k", ls="--", lw=0.8, label="G loss at D = 1/2: log 2")
    ax0.set_xlabel("step")
    ax0.set_title(f"losses (moving average over {w} steps)", fontsize=9)
    ax0.legend(fontsize=7)
    ax0.grid(alpha=0.3)
    ax1.plot(s, smooth(m["d_real"]), label="D(real)")
    ax1.plot(s, smooth(m["d_fake"]), label="D(G(z))")
    ax1.axhline(0.5, color="k", ls=":", lw=0.8)
    ax1.set_xlabel("step")
    ax1.set_ylabel("mean P(real)")
    ax1.set_title("discriminator outputs", fontsize=9)
    ax1.legend(fontsize=7)
    ax1.grid(alpha=0.3)
    fig.suptitle(f"seed {seed}", fontsize=9)
    return savefig(fig, path)


def train_gan(seed: int, chunk_len: int, n_chunks: int, batch: int = 256,
              n_eval: int = 2000) -> dict[str, Any]:
    """Trains one GAN (init seed ``seed``); samples and coverage after every chunk."""
    g, d = networks()
    g_opt = optim.make("adam", 1e-3, b1=0.5)
    d_opt = optim.make("adam", 1e-3, b1=0.5)
    gs = gan.init_gan(seed, g, d, g_opt, d_opt, latent_dim=LATENT, data_shape=(2,))
    step_fn = gan.make_gan_step(g, d, g_opt, d_opt, latent_dim=LATENT, jit=False)
    chunk = make_chunk(step_fn, batch, chunk_len)
    data_key, eval_key = jax.random.split(jax.random.fold_in(jax.random.key(1), seed))

    def snapshot(gs):
        x = np.asarray(gan.generate(g, gs, eval_key, n_eval, latent_dim=LATENT))
        return {"x": x, "cov": mode_coverage(x)}

    snaps = {0: snapshot(gs)}
    history: dict[str, list] = {}
    for c in range(1, n_chunks + 1):
        gs, m = chunk(gs, data_key)
        for k, v in m.items():
            history.setdefault(k, []).append(np.asarray(v))
        snaps[c * chunk_len] = snapshot(gs)
    return {"snaps": snaps, "history": {k: np.concatenate(v) for k, v in history.items()}}


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Trains the GAN for several seeds; samples, losses and mode coverage."""
    out = out_dir(NAME, out)
    batch, n_eval = 256, 2000
    chunk_len, n_chunks = (20, 2) if quick else (500, 10)
    seeds = (0,) if quick else (0, 1, 2)
    runs = {s: train_gan(s, chunk_len, n_chunks, batch, n_eval) for s in seeds}
    first = runs[seeds[0]]
    steps_all = list(first["snaps"])
    shown = steps_all if quick else [steps_all[i] for i in (0, 1, 2, 4, n_chunks)]
    hist = first["history"]
    real = np.asarray(sample_ring(jax.random.key(2), n_eval))
    fig1 = _figure_samples(runs, shown, real, str(out / "samples.png"))
    fig2 = _figure_losses(np.arange(1, len(hist["d_loss"]) + 1), hist, seeds[0],
                          str(out / "losses.png"))

    last = steps_all[-1]
    coverage = {s: [r["snaps"][k]["cov"]["modes_covered"] for k in steps_all]
                for s, r in runs.items()}
    final = {s: r["snaps"][last]["cov"] for s, r in runs.items()}
    real_cov = mode_coverage(real)
    tail = slice(-chunk_len, None)
    f0 = final[seeds[0]]
    summary = [
        f"8 Gaussians on a ring (radius {RADIUS}, sigma {SIGMA}); G and D: MLPs 128-128 ReLU, "
        f"latent dim {LATENT}; Adam 1e-3 (b1 = 0.5) for both, batch {batch}, {last} steps "
        f"({chunk_len} per compiled scan); {len(seeds)} seed(s). A mode is covered if at "
        "least 1% of 2,000 samples fall within 3 sigma of it.",
        "",
        "| seed / step | " + " | ".join(str(k) for k in steps_all) + " |",
        "|---|" + "---|" * len(steps_all),
        *[f"| {s} | " + " | ".join(str(v) for v in cov) + " |" for s, cov in coverage.items()],
        "",
        "Modes covered at the end: **"
        + ", ".join(f"{final[s]['modes_covered']}/{MODES}" for s in seeds)
        + f"** (seeds {', '.join(map(str, seeds))}); generated points within 3 sigma of a "
        "mode: " + ", ".join(f"{final[s]['high_quality_fraction']:.1%}" for s in seeds)
        + f". Seed {seeds[0]} (loss figure): "
        f"{f0['high_quality_fraction']:.1%} of generated points within 3 sigma of a mode "
        f"(real samples: {real_cov['modes_covered']}/{MODES}, "
        f"{real_cov['high_quality_fraction']:.1%}); least-populated mode gets "
        f"{min(f0['per_mode_fraction']):.1%} of the samples (ideal 12.5%); mean D(real) / "
        f"D(G(z)) over the last {chunk_len} steps: {hist['d_real'][tail].mean():.2f} / "
        f"{hist['d_fake'][tail].mean():.2f}.",
    ]
    metrics = {"modes_covered": {str(s): final[s]["modes_covered"] for s in seeds},
               "high_quality_fraction": {str(s): final[s]["high_quality_fraction"]
                                         for s in seeds},
               "per_mode_fraction": {str(s): final[s]["per_mode_fraction"] for s in seeds},
               "coverage_by_step": {str(s): dict(zip(map(str, steps_all), cov, strict=True))
                                    for s, cov in coverage.items()},
               "real_data_check": real_cov, "steps": int(last),
               "final_d_real": float(hist["d_real"][tail].mean()),
               "final_d_fake": float(hist["d_fake"][tail].mean())}
    return save_results(out, {"summary": summary, "figures": [fig1, fig2], "metrics": metrics})


if __name__ == "__main__":
    run_cli(main)
