"""nnkit.plots: each helper writes a PNG showing what it should."""

import matplotlib.image as mpimg
import numpy as np
import pytest

from nnkit import plots
from nnkit.train.lr_find import LRFindResult

HISTORY = {
    "epoch": [0, 1, 2, 3],
    "train_loss": [1.0, 0.6, 0.4, 0.3],
    "val_loss": [1.1, 0.7, 0.6, 0.65],
    "train_accuracy": [0.5, 0.7, 0.8, 0.9],
    "val_accuracy": [0.45, 0.65, 0.7, 0.7],
    "lr": [0.1, 0.1, 0.05, 0.025],
    "grad_norm": [1.0, 0.5, 0.4, 0.3],
    "seconds": [1.0, 0.1, 0.1, 0.1],
}


def read_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(path)


def test_plot_history_and_lr(tmp_path):
    p = plots.plot_history(HISTORY, tmp_path / "sub" / "hist.png", title="run")
    img = read_png(p)
    assert img.shape[1] > 1.5 * img.shape[0]  # two panels side by side: loss, accuracy
    q = read_png(plots.plot_lr(HISTORY, tmp_path / "lr.png"))
    assert q.ndim == 3
    with pytest.raises(ValueError, match="no 'lr'"):
        plots.plot_lr({"train_loss": [1.0]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.plot_history({"seconds": [1.0]}, tmp_path / "x.png")


def test_plot_lr_find(tmp_path):
    lrs = np.logspace(-4, 0, 30)
    losses = 1.0 + (np.log10(lrs) + 1.5) ** 2 / 10
    r = LRFindResult(lrs, losses, 1e-2, 3e-2, None, losses)
    assert read_png(plots.plot_lr_find(r, tmp_path / "lrf.png")).ndim == 3
    assert read_png(r.plot(str(tmp_path / "lrf2.png"))).ndim == 3


def test_plot_decision_boundary_colours_the_predicted_regions(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(50, 2))
    y = (x[:, 0] > 0).astype(int)

    def predict(pts):  # class 1 right of x=0, as (m, 2) scores
        return np.stack([-pts[:, 0], pts[:, 0]], axis=1)

    path = plots.plot_decision_boundary(predict, x, y, tmp_path / "db.png", resolution=50,
                                        padding=0.0)
    img = read_png(path)[..., :3]
    h, w, _ = img.shape
    left = img[h // 2, int(w * 0.25)]
    right = img[h // 2, int(w * 0.75)]
    assert np.abs(left - right).sum() > 0.1  # the two halves have different colours
    with pytest.raises(ValueError, match="2-D points"):
        plots.plot_decision_boundary(predict, np.zeros((5, 3)), y[:5], tmp_path / "x.png")


def test_import_and_figures_leave_the_users_matplotlib_alone(tmp_path):
    """``import nnkit`` imports no matplotlib; figures use no pyplot and keep the backend a
    user chose (a notebook's inline plots). Fresh interpreter: this one imported both."""
    import json
    import subprocess
    import sys

    code = """
import json, sys
import nnkit
res = {"mpl_after_import": "matplotlib" in sys.modules}
import matplotlib
matplotlib.use("svg")
from nnkit import plots
from nnkit.diagnose.plots import histogram_grid, save_figure
plots.plot_history({"train_loss": [1.0, 0.5]}, sys.argv[1] + "/h.png")
fig = histogram_grid({"d": {"hist_counts": [1, 2], "hist_edges": [0.0, 1.0, 2.0],
                            "std": 0.5}}, "t")
save_figure(fig, sys.argv[1] + "/g.png")
res["backend"] = matplotlib.get_backend()
res["pyplot"] = "matplotlib.pyplot" in sys.modules
print("RESULT " + json.dumps(res))
"""
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.split("RESULT ")[-1])
    assert res == {"mpl_after_import": False, "backend": "svg", "pyplot": False}
    read_png(tmp_path / "h.png")
    read_png(tmp_path / "g.png")
