"""Statistics for comparing classifiers evaluated on the same test set.

Three questions, three tools:

- *How precise is one accuracy?* The Wilson score interval (:func:`wilson_interval`).
  It behaves well near 0 and 1 and for small test sets, unlike the Wald interval.
- *Do two models really differ on these test images?* The exact McNemar test
  (:func:`mcnemar_exact`). Only the discordant images count: ``b`` = A right and
  B wrong, ``c`` = A wrong and B right. Under "no difference" ``b ~ Binomial(b + c, 1/2)``,
  so the two-sided binomial test on ``b`` gives an exact p-value.
- *How large is the difference?* The paired accuracy difference ``(b - c) / n`` with
  Newcombe's hybrid score interval for paired proportions (:func:`paired_difference`;
  Newcombe 1998, Statistics in Medicine 17:2635-2650, method 10). It combines the
  Wilson intervals of the two accuracies with the correlation of the paired outcomes,
  stays inside [-1, 1] and, unlike the Wald interval, does not collapse to a point
  when ``b = c = 0``.

No function here knows about frameworks or files: they take counts or arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.stats import binomtest

__all__ = [
    "ALPHA",
    "McNemarResult",
    "PairedDifference",
    "wilson_interval",
    "mcnemar_exact",
    "paired_difference",
    "per_class_from_confusion",
    "mean_std",
]

ALPHA = 0.05  # significance level of every verdict this package prints


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes out of ``n`` trials.

    Returns ``(lo, hi)`` with ``0 <= lo <= k/n <= hi <= 1``. For ``n == 0`` there is
    no information and the interval is ``(0.0, 1.0)``.
    """
    k, n = int(k), int(n)
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_interval: need 0 <= k <= n (got k={k}, n={n})")
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    p = k / n
    # Guard against rounding at the edges: the interval must contain the estimate.
    lo = 0.0 if k == 0 else min(max(float(ci.low), 0.0), p)
    hi = 1.0 if k == n else max(min(float(ci.high), 1.0), p)
    return lo, hi


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test of two classifiers on the same ``n`` test images."""

    n: int  # paired test images
    b: int  # A right, B wrong
    c: int  # A wrong, B right
    p_value: float
    alpha: float = ALPHA

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    @property
    def verdict(self) -> str:
        return "significant" if self.significant else "not significant"


def _as_bool(x: Sequence[bool] | np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=bool).ravel()


def mcnemar_exact(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray,
                  alpha: float = ALPHA) -> McNemarResult:
    """Exact (binomial) two-sided McNemar test on paired right/wrong outcomes.

    ``correct_a[i]`` says whether model A classified test image ``i`` correctly. With
    no discordant images (``b + c == 0``) the models agree everywhere: ``p = 1``.
    """
    a, b_ = _as_bool(correct_a), _as_bool(correct_b)
    if a.shape != b_.shape:
        raise ValueError(f"mcnemar_exact: paired outcomes differ in length ({a.size} vs {b_.size})")
    b = int(np.count_nonzero(a & ~b_))
    c = int(np.count_nonzero(~a & b_))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return McNemarResult(n=int(a.size), b=b, c=c, p_value=min(p, 1.0), alpha=alpha)


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of A minus accuracy of B on the same images, with a 95% interval."""

    diff: float
    lo: float
    hi: float
    method: str = "Newcombe hybrid score (paired, method 10)"


def paired_difference(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray,
                      confidence: float = 0.95) -> PairedDifference:
    """Paired accuracy difference ``acc(A) - acc(B)`` with Newcombe's hybrid score interval.

    With the 2x2 table ``a`` (both right), ``b`` (only A right), ``c`` (only B right),
    ``d`` (both wrong), the accuracies are ``p1 = (a+b)/n`` and ``p2 = (a+c)/n``, with
    Wilson intervals ``(l1, u1)`` and ``(l2, u2)``. With ``phi`` the correlation of the
    table (0 when a margin is empty)::

        delta   = sqrt((p1-l1)^2 - 2 phi (p1-l1)(u2-p2) + (u2-p2)^2)
        epsilon = sqrt((u1-p1)^2 - 2 phi (u1-p1)(p2-l2) + (p2-l2)^2)
        interval = (p1 - p2 - delta, p1 - p2 + epsilon)
    """
    ca, cb = _as_bool(correct_a), _as_bool(correct_b)
    if ca.shape != cb.shape:
        raise ValueError(f"paired_difference: paired outcomes differ in length ({ca.size} vs {cb.size})")
    n = int(ca.size)
    if n == 0:
        return PairedDifference(0.0, -1.0, 1.0)
    a = int(np.count_nonzero(ca & cb))
    b = int(np.count_nonzero(ca & ~cb))
    c = int(np.count_nonzero(~ca & cb))
    d = n - a - b - c
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, confidence)
    l2, u2 = wilson_interval(a + c, n, confidence)
    denom = math.sqrt(float(a + b) * (c + d) * (a + c) * (b + d))
    phi = 0.0 if denom == 0 else (a * d - b * c) / denom
    delta = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    eps = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    diff = (b - c) / n
    return PairedDifference(diff=diff, lo=max(diff - delta, -1.0), hi=min(diff + eps, 1.0))


def per_class_from_confusion(cm: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """Per-class accuracy (recall) from a confusion matrix whose rows are the true class.

    Entry ``i`` is ``cm[i, i] / cm[i, :].sum()``; NaN for a class with no test images.
    This is the per-class number done right: each class over its own images, not over
    the last batch (the bug the hand-made notebooks share).
    """
    m = np.asarray(cm, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"per_class_from_confusion: need a square matrix (got shape {m.shape})")
    rows = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, np.diag(m) / np.where(rows > 0, rows, 1), np.nan)


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of the values not None; NaN if none."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0
