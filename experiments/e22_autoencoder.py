"""A bottleneck MLP autoencoder on the 8x8 digits: reconstructions, error vs PCA, 2-D codes.

``x`` (8, 8, 1) in [0, 1] -> encoder ``64 -> 128 -> ReLU -> k`` -> code ``z`` (k,) -> decoder
``k -> 128 -> ReLU -> 64 -> sigmoid`` -> ``x_hat`` (8, 8, 1), trained on
``mean ||x - x_hat||^2 / 64`` (:func:`nnkit.autoencoder.Autoencoder`, no labels used).

Reference: PCA with the same number ``k`` of components, the best *linear* code of size
``k`` for the squared error (Eckart-Young); computed in closed form with an SVD of the
centred training images. A nonlinear autoencoder should reach a lower error than PCA at the
same ``k`` -- most clearly for a tiny code such as ``k = 2``, which is also plotted coloured by
the digit class the network never saw.

    python -m experiments.e22_autoencoder [--quick] [--out DIR]
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import nnkit
import nnkit.data
from experiments.common import out_dir, plt, run_cli, save_results, savefig
from nnkit import layers as L
from nnkit import optim
from nnkit.autoencoder import Autoencoder

TITLE = "Autoencoder on 8x8 digits: reconstructions, error vs PCA, a 2-D code"
NAME = "e22_autoencoder"
CODES = (2, 8)


def make_autoencoder(code: int, width: int = 128) -> nnkit.Layer:
    """(8, 8, 1) -> code (code,) -> (8, 8, 1) with sigmoid outputs in (0, 1)."""
    enc = nnkit.serial(L.Flatten(), L.Dense(width), L.Relu(), L.Dense(code, name="code"))
    dec = nnkit.serial(L.Dense(width), L.Relu(), L.Dense(64), L.Sigmoid(), L.Reshape((8, 8, 1)))
    return Autoencoder(enc, dec)


def pca_mse(train: np.ndarray, test: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Test MSE of the rank-``k`` PCA reconstruction fitted on ``train``; and test codes."""
    a, b = train.reshape(len(train), -1), test.reshape(len(test), -1)
    mu = a.mean(0)
    _, _, vt = np.linalg.svd(a - mu, full_matrices=False)
    codes = (b - mu) @ vt[:k].T
    rec = codes @ vt[:k] + mu
    return float(np.mean((rec - b) ** 2)), codes


def _figure_recon(x: np.ndarray, recs: dict, mses: dict, path: str) -> str:
    rows = 1 + len(recs)
    fig, axes = plt.subplots(rows, len(x), figsize=(0.85 * len(x) + 1.6, 0.95 * rows + 0.5))
    labels = ["original"] + [f"code size k = {k}\n(test MSE {mses[k]:.4f})" for k in recs]
    for r, imgs in enumerate([x, *recs.values()]):
        for c in range(len(x)):
            ax = axes[r, c]
            ax.imshow(imgs[c, :, :, 0], cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(labels[r], rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("test digits (top) and their reconstructions", fontsize=9)
    return savefig(fig, path)


def _figure_codes(z: np.ndarray, z_pca: np.ndarray, y: np.ndarray, mses: tuple,
                  path: str) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.2))
    cmap = plt.get_cmap("tab10")
    for ax, codes, title in ((axes[0], z, f"autoencoder code (k = 2), MSE {mses[0]:.4f}"),
                             (axes[1], z_pca, f"PCA, 2 components, MSE {mses[1]:.4f}")):
        for c in range(10):
            sel = y == c
            ax.scatter(codes[sel, 0], codes[sel, 1], s=7, color=cmap(c), label=str(c))
            ax.annotate(str(c), np.median(codes[sel], 0), fontsize=11, weight="bold",
                        ha="center", va="center", color="k")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
        ax.grid(alpha=0.3)
    axes[1].legend(title="digit", fontsize=7, markerscale=2, loc="center left",
                   bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("test digits in 2-D, coloured by class (labels not used in training; "
                 "bold = class median)", fontsize=9)
    return savefig(fig, path)


def main(out: str | os.PathLike | None = None, quick: bool = False) -> dict[str, Any]:
    """Trains autoencoders with codes of size 2 and 8; test MSE vs PCA; figures."""
    out = out_dir(NAME, out)
    ds = nnkit.data.load("digits")
    (xtr, ytr), (xte, yte) = nnkit.data.split(ds.x, ds.y, (0.8, 0.2), seed=0, stratify=True)
    epochs, batch = (2, 64) if quick else (150, 64)
    total = epochs * (len(xtr) // batch)
    sizes = (2,) if quick else CODES
    recs, codes, mse, pca = {}, {}, {}, {}
    for k in sizes:
        model = make_autoencoder(k)
        opt = optim.make("adam", optim.schedule("cosine", learning_rate=3e-3,
                                                decay_steps=total, alpha=0.05))
        res = nnkit.fit(model, opt, (xtr, xtr), test_data=(xte, xte), loss="mse", metrics=(),
                        epochs=epochs, batch_size=batch, key=k, progress=False)
        ts = res.train_state
        rec, _ = model.apply(ts.params, ts.state, xte)
        enc = dict(model.children)["encoder"]
        z, _ = enc.apply(ts.params["encoder"], ts.state.get("encoder", {}), xte)
        recs[k], codes[k] = np.asarray(rec), np.asarray(z)
        mse[k] = float(np.mean((recs[k] - xte) ** 2))
        pca[k], pca_codes = pca_mse(xtr, xte, k)
        if k == 2:
            z_pca = pca_codes
    first = np.array([np.flatnonzero(yte == c)[0] for c in range(10)])  # one test digit/class
    fig1 = _figure_recon(xte[first], {k: recs[k][first] for k in sorted(sizes, reverse=True)},
                         mse, str(out / "reconstructions.png"))
    fig2 = _figure_codes(codes[2], z_pca, yte, (mse[2], pca[2]), str(out / "latent_2d.png"))
    mean_img = float(np.mean((xtr.mean(0) - xte) ** 2))
    summary = [
        f"8x8 digits, {len(xtr)} training / {len(xte)} test images (stratified split); MLP "
        f"autoencoder 64-128-k-128-64 (ReLU, sigmoid output), MSE loss, Adam 3e-3 cosine, "
        f"{epochs} epochs. Test reconstruction MSE per pixel (pixels in [0, 1]):",
        "",
        "| code size k | autoencoder | PCA, k components | AE / PCA |",
        "|---|---|---|---|",
        *[f"| {k} | {mse[k]:.4f} | {pca[k]:.4f} | {mse[k] / pca[k]:.2f} |" for k in sizes],
        f"| (mean training image) | | {mean_img:.4f} | |",
    ]
    metrics = {"test_mse": {str(k): mse[k] for k in sizes},
               "pca_test_mse": {str(k): pca[k] for k in sizes},
               "mean_image_mse": mean_img, "epochs": epochs}
    return save_results(out, {"summary": summary, "figures": [fig1, fig2], "metrics": metrics})


if __name__ == "__main__":
    run_cli(main)
