"""The schedule figure (the paper's Figure 4, legible with 15 ops): `hba-fast plot`, schedule.png, TensorBoard.

    (a) sum over the 24 magnitude slots of the magnitude normalised to its op's range (paper Fig. 4a), with the
        expected number of ops an image gets (PBA's draw, `pba_draw.pba_law`) on a second axis
    (b) each op's probability, summed over its two copies (paper Fig. 4b), epochs x ops as a heat map
    (c) each op's magnitude, normalised to its range (0 weakest, 1 strongest; the enhance ops by distance from
        their identity 1.0), averaged over its copies weighted by their probabilities; blank for the three ops
        without a magnitude
Heat maps instead of 15 overlapping lines: every op has its own row with its name, and the final value is
written at the row's end.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .. import atomic
from ..augment.ops import OPS
from ..augment.pba_draw import pba_law
from ..augment.space import NUM_OPS
from .file import Schedule


def op_tables(probs: np.ndarray, mags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """probs, mags (E, 30) -> sum of normalised magnitudes (E,), op probability (E, 15), op strength (E, 15)."""
    probs, mags = np.asarray(probs, np.float64), np.asarray(mags, np.float64)
    e = len(probs)
    norm = np.zeros_like(mags)  # (E, 30) magnitude normalised to the op's range (0 = lo)
    strength = np.full((e, NUM_OPS), np.nan)  # (E, 15)
    for k, op in enumerate(OPS):
        if not op.has_magnitude:
            continue
        for j in (k, k + NUM_OPS):
            norm[:, j] = (mags[:, j] - op.lo) / (op.hi - op.lo)
        cols = mags[:, [k, k + NUM_OPS]]
        if op.identity is not None and op.lo < op.identity < op.hi:  # enhance ops: distance from the identity
            s = np.abs(cols - op.identity) / max(op.hi - op.identity, op.identity - op.lo)
        else:
            s = (cols - op.lo) / (op.hi - op.lo)
        w = probs[:, [k, k + NUM_OPS]]
        strength[:, k] = np.where(w.sum(1) > 0, (s * w).sum(1) / np.maximum(w.sum(1), 1e-12), s.mean(1))
    op_prob = probs[:, :NUM_OPS] + probs[:, NUM_OPS:]
    return norm.sum(1), op_prob, strength


def schedule_figure(probs: np.ndarray, mags: np.ndarray, title: str | None = None):
    """The matplotlib Figure of a schedule probs, mags (E, 30)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs, mags = np.asarray(probs), np.asarray(mags)
    total, op_prob, strength = op_tables(probs, mags)
    n = len(probs)
    epochs = np.arange(1, n + 1)
    names = [op.name for op in OPS]
    fig = plt.figure(figsize=(15, 6.2), constrained_layout=True)
    grid = fig.add_gridspec(1, 3, width_ratios=[1.0, 1.15, 1.15])
    ax_a = fig.add_subplot(grid[0])
    ax_a.plot(epochs, total, color="tab:red", marker="o" if n < 30 else None, label="sum of magnitudes")
    ax_a.set(title="(a) sum of normalised magnitudes", xlabel="epoch", ylabel="sum")
    ax_a.grid(alpha=0.3)
    laws = [pba_law(p) for p in probs]
    ops_per_image = [law.single.sum() + 2 * law.pair.sum() for law in laws]
    ax_n = ax_a.twinx()
    ax_n.plot(epochs, ops_per_image, color="tab:blue", linestyle="--", label="ops per image (expected)")
    ax_n.set_ylabel("expected ops per image", color="tab:blue")
    ax_n.set_ylim(0, 2)
    lines = ax_a.get_lines() + ax_n.get_lines()
    ax_a.legend(lines, [ln.get_label() for ln in lines], loc="upper left", fontsize=8)
    extent = (0.5, n + 0.5, NUM_OPS - 0.5, -0.5)
    for col, table, label, vmax, cmap in ((1, op_prob, "(b) probability of each op (both copies)", 2.0, "viridis"),
                                          (2, strength, "(c) magnitude of each op (0 weakest, 1 strongest)", 1.0,
                                           "magma")):
        ax = fig.add_subplot(grid[col])
        image = ax.imshow(np.ma.masked_invalid(table.T), aspect="auto", cmap=cmap, vmin=0.0,
                          vmax=vmax if col == 2 else max(float(np.nanmax(table)), 1e-3), extent=extent,
                          interpolation="nearest")
        ax.set_yticks(range(NUM_OPS), names, fontsize=9)
        ax.set(title=label, xlabel="epoch")
        for k in range(NUM_OPS):  # the final value at the row's end
            v = table[-1, k]
            if np.isfinite(v):
                ax.text(n + 0.5, k, f" {v:.2f}", va="center", ha="left", fontsize=8, clip_on=False)
        fig.colorbar(image, ax=ax, fraction=0.05, pad=0.12)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_schedule(path: str | Path, schedule: Schedule, title: str | None = None) -> None:
    """Write the figure of a schedule as a PNG (atomically, `atomic.write_bytes`)."""
    import matplotlib.pyplot as plt

    fig = schedule_figure(schedule.probs, schedule.mags, title)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=110, format="png")
    finally:
        plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())
