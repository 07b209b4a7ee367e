"""Figures for the report, each returned as PNG bytes.

Uses :class:`matplotlib.figure.Figure` directly (never ``pyplot``): no global figure
state, nothing to close, and no GUI backend is ever touched. PNGs are rendered at
100 dpi; a report with five runs renders in a few seconds.

Every function takes the run colours from its caller, so one run has one colour in
every figure of a report.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, MultipleLocator, PercentFormatter

__all__ = ["PALETTE", "run_colors", "learning_curves", "resource_curves", "accuracy_overview", "per_class_bars",
           "confusion_matrix", "image_grid"]

# Okabe-Ito (colour-blind safe) without its yellow, which vanishes on white; then more.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#7F5F1F", "#4D4D4D",
           "#882255", "#117733", "#332288", "#999933"]
DPI = 100
_STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#888888",
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.8,
    "xtick.color": "#444444",
    "ytick.color": "#444444",
    "legend.frameon": False,
    "legend.fontsize": 8,
    "savefig.facecolor": "white",
}


def run_colors(n: int) -> list[str]:
    """``n`` distinct colours, stable for a given run order."""
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI,  # layouts are constrained: no second "tight" draw
                metadata={"Software": None})  # no version stamp: same inputs, same bytes
    return buf.getvalue()


def _figure(w: float, h: float) -> Figure:
    return Figure(figsize=(w, h), layout="constrained")


def _time_axis(max_seconds: float) -> tuple[float, str]:
    if max_seconds >= 2 * 3600:
        return 3600.0, "wall-clock time (hours)"
    if max_seconds >= 120:
        return 60.0, "wall-clock time (minutes)"
    return 1.0, "wall-clock time (seconds)"


def learning_curves(series: Sequence[tuple[str, str, Sequence[dict]]], x: str = "epoch") -> bytes:
    """Accuracy and loss per epoch (``x="epoch"``) or per wall-clock time (``x="time"``).

    ``series`` holds ``(label, colour, rows)`` with rows as in history.csv. Validation is
    a solid line with dots, training a dashed line in the same colour.
    """
    with matplotlib.rc_context(_STYLE):
        fig = _figure(11.6, 3.7)
        ax_acc, ax_loss = fig.subplots(1, 2)
        max_t = max((float(r.get("elapsed_seconds") or 0) for _, _, rows in series for r in rows), default=0.0)
        scale, xlabel = _time_axis(max_t) if x == "time" else (1.0, "epoch")
        for label, color, rows in series:
            if not rows:
                continue
            if x == "time":
                xs = np.array([float(r.get("elapsed_seconds") or math.nan) for r in rows]) / scale
            else:
                xs = np.array([float(r.get("epoch") or i + 1) for i, r in enumerate(rows)])
            for ax, key in ((ax_acc, "acc"), (ax_loss, "loss")):
                val = np.array([r.get(f"val_{key}", math.nan) for r in rows], dtype=float)
                tr = np.array([r.get(f"train_{key}", math.nan) for r in rows], dtype=float)
                ax.plot(xs, val, color=color, lw=2, marker="o", ms=3.5, label=label)
                ax.plot(xs, tr, color=color, lw=1.3, ls="--", alpha=0.75)
        ax_acc.set_title("Accuracy")
        ax_loss.set_title("Loss")
        ax_acc.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        for ax in (ax_acc, ax_loss):
            ax.set_xlabel(xlabel)
            if x == "epoch":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        handles, labels = ax_acc.get_legend_handles_labels()
        style = [Line2D([], [], color="#555555", lw=2, marker="o", ms=3.5),
                 Line2D([], [], color="#555555", lw=1.3, ls="--")]
        fig.legend(handles + style, labels + ["validation", "training"], loc="outside lower center",
                   ncols=min(len(labels) + 2, 4))
        return _png(fig)


def resource_curves(series: Sequence[tuple[str, str, Sequence[dict], int]]) -> bytes:
    """CPU, memory and (where sampled) GPU use against wall time, one colour per run.

    ``series`` holds ``(label, colour, rows of resources.csv, CPU cores of its machine)``.
    CPU is in % of all cores: the run's process solid, the whole machine dashed.
    """
    has_gpu = any(r.get("gpu_memory_bytes") is not None for _, _, rows, _ in series for r in rows)
    with matplotlib.rc_context(_STYLE):
        fig = _figure(11.6, 3.4)
        axes = fig.subplots(1, 4 if has_gpu else 2)
        max_t = max((float(r.get("elapsed_seconds") or 0) for _, _, rows, _ in series for r in rows), default=0.0)
        scale, xlabel = _time_axis(max_t)
        gib = float(2 ** 30)

        def col(rows: Sequence[dict], key: str, div: float = 1.0) -> np.ndarray:
            return np.array([math.nan if r.get(key) is None else float(r[key]) / div for r in rows])

        for label, color, rows, cores in series:
            if not rows:
                continue
            xs = col(rows, "elapsed_seconds", scale)
            axes[0].plot(xs, col(rows, "cpu_percent", max(cores, 1)), color=color, lw=1.6, label=label)
            axes[0].plot(xs, col(rows, "system_cpu_percent"), color=color, lw=1.0, ls="--", alpha=0.7)
            axes[1].plot(xs, col(rows, "rss_bytes", gib), color=color, lw=1.6)
            if has_gpu:
                axes[2].plot(xs, col(rows, "gpu_util_percent"), color=color, lw=1.6)
                axes[3].plot(xs, col(rows, "gpu_memory_bytes", gib), color=color, lw=1.6)
        titles = ["CPU (% of all cores)", "Memory (RSS, GiB)"] + (["GPU utilisation (%)", "GPU memory (GiB)"]
                                                                    if has_gpu else [])
        for ax, title in zip(axes, titles):
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            ax.set_ylim(bottom=0)
        axes[0].set_ylim(0, 105)
        handles, labels = axes[0].get_legend_handles_labels()
        style = [Line2D([], [], color="#555555", lw=1.6), Line2D([], [], color="#555555", lw=1.0, ls="--")]
        fig.legend(handles + style, labels + ["this run's process", "whole machine"], loc="outside lower center",
                   ncols=min(len(labels) + 2, 4))
        return _png(fig)


def accuracy_overview(labels: Sequence[str], colors: Sequence[str], acc: Sequence[float],
                      ci: Sequence[tuple[float, float]]) -> bytes:
    """Test accuracy of each finished run as a dot with its 95% interval, best on top."""
    order = list(np.argsort(acc))
    with matplotlib.rc_context(_STYLE):
        fig = _figure(11.6, 0.45 * len(labels) + 0.9)
        ax = fig.subplots()
        for y, i in enumerate(order):
            lo, hi = ci[i]
            ax.errorbar([acc[i]], [y], xerr=[[acc[i] - lo], [hi - acc[i]]], fmt="o", color=colors[i],
                        ms=7, capsize=4, lw=2)
            ax.annotate(f"{acc[i]:.1%}", (hi, y), xytext=(6, 0), textcoords="offset points", va="center",
                        fontsize=8.5, color="#333333")
        ax.set_yticks(range(len(order)), [labels[i] for i in order])
        ax.set_ylim(-0.6, len(order) - 0.4)
        lo_all = min(c[0] for c in ci)
        hi_all = max(c[1] for c in ci)
        pad = max(0.02, (hi_all - lo_all) * 0.15)
        lo_x, hi_x = max(0.0, lo_all - pad), min(1.0, hi_all + 2.5 * pad)
        ax.set_xlim(lo_x, hi_x)
        span = hi_x - lo_x
        step = next(s for s in (0.01, 0.02, 0.05, 0.1, 0.2) if span / s <= 10)  # whole-percent ticks
        ax.xaxis.set_major_locator(MultipleLocator(step))
        ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_xlabel("test accuracy (dot) with 95% Wilson interval (bar)")
        ax.grid(axis="y", visible=False)
        return _png(fig)


def per_class_bars(classes: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]]) -> bytes:
    """Per-class test accuracy: one group per class, one bar per run."""
    k = max(len(series), 1)
    with matplotlib.rc_context(_STYLE):
        fig = _figure(11.6, 3.8)
        ax = fig.subplots()
        width = 0.8 / k
        x = np.arange(len(classes))
        for j, (label, color, values) in enumerate(series):
            ax.bar(x - 0.4 + width * (j + 0.5), np.nan_to_num(np.asarray(values, dtype=float)), width * 0.92,
                   color=color, label=label)
        ax.set_xticks(x, classes, rotation=0 if len(classes) <= 10 else 45)
        ax.set_ylim(0, 1)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.set_ylabel("test accuracy of the class")
        ax.grid(axis="x", visible=False)
        fig.legend(loc="outside lower center", ncols=min(k, 4))
        return _png(fig)


def confusion_matrix(cm: Sequence[Sequence[int]], classes: Sequence[str], title: str, color: str) -> bytes:
    """Confusion matrix normalised per row (true class), with the counts in each cell."""
    m = np.asarray(cm, dtype=float)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    c = len(classes)
    with matplotlib.rc_context(_STYLE | {"axes.grid": False}):
        fig = _figure(5.9, 5.5)
        ax = fig.subplots()
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        if c <= 20:
            for i in range(c):
                for j in range(c):
                    if m[i, j] == 0:
                        continue
                    ax.text(j, i, f"{norm[i, j]:.0%}\n{int(m[i, j])}", ha="center", va="center",
                            fontsize=6.2 if c > 10 else 7.4, linespacing=0.95,
                            color="white" if norm[i, j] > 0.55 else "#222222")
        ax.set_xticks(range(c), classes, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(c), classes)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title, color=color, fontsize=9.5)
        for s in ax.spines.values():
            s.set_visible(False)
        return _png(fig)


def image_grid(images: np.ndarray, captions: Sequence[str], caption_colors: Sequence[str] | None = None,
               ncols: int = 8, title: str | None = None) -> bytes:
    """A grid of small uint8 HWC images, each with a caption under it.

    Drawn as one mosaic in one axes (not one axes per image), which keeps it fast.
    """
    imgs = np.asarray(images)
    n = len(imgs)
    if imgs.ndim == 3:  # greyscale
        imgs = np.repeat(imgs[..., None], 3, axis=-1)
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    h, w = imgs.shape[1:3] if n else (32, 32)
    gap_x, gap_y = 8, 11  # pixels of the mosaic between tiles; gap_y leaves room for captions
    tile_w, tile_h = w + gap_x, h + gap_y
    mosaic = np.full((nrows * tile_h, ncols * tile_w, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        mosaic[r * tile_h:r * tile_h + h, c * tile_w:c * tile_w + w] = imgs[i, ..., :3]
    scale = 2.6  # display pixels per image pixel
    with matplotlib.rc_context(_STYLE | {"axes.grid": False}):
        fig = Figure(figsize=(mosaic.shape[1] * scale / DPI, mosaic.shape[0] * scale / DPI))
        ax = fig.add_axes((0, 0, 1, 1))
        ax.imshow(mosaic, interpolation="nearest")
        ax.set_axis_off()
        colors = caption_colors or ["#222222"] * n
        for i, text in enumerate(captions[:n]):
            r, c = divmod(i, ncols)
            ax.text(c * tile_w + w / 2, r * tile_h + h + 2, text, ha="center", va="top", fontsize=7,
                    color=colors[i])
        if title:
            fig.suptitle(title, fontsize=10, fontweight="bold", y=1.0, va="bottom")
        return _png(fig)
