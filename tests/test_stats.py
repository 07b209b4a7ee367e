"""Statistics used by compare and report: intervals, McNemar, per-class accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix

from alexbench.stats import mcnemar_exact, mean_std, paired_difference, per_class_from_confusion, wilson_interval

FAST = settings(max_examples=150, deadline=None)


@st.composite
def k_and_n(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(1, 20_000))
    return draw(st.integers(0, n)), n


@st.composite
def paired_outcomes(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 400))
    a = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    b = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return np.array(a), np.array(b)


# --- Wilson -------------------------------------------------------------------------

@FAST
@given(k_and_n())
def test_wilson_contains_estimate_and_stays_in_unit_interval(kn: tuple[int, int]) -> None:
    k, n = kn
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_matches_closed_form() -> None:
    k, n, z = 8000, 10_000, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(centre - half, abs=1e-9)
    assert hi == pytest.approx(centre + half, abs=1e-9)


def test_wilson_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0
    with pytest.raises(ValueError, match="k=11, n=10"):
        wilson_interval(11, 10)


# --- McNemar ------------------------------------------------------------------------

@FAST
@given(paired_outcomes())
def test_mcnemar_is_symmetric(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    ab, ba = mcnemar_exact(a, b), mcnemar_exact(b, a)
    assert (ab.b, ab.c) == (ba.c, ba.b)
    assert ab.p_value == pytest.approx(ba.p_value, abs=1e-12)
    assert 0.0 <= ab.p_value <= 1.0
    assert ab.verdict == ba.verdict


def test_mcnemar_known_value() -> None:
    # b = 10, c = 2: p = 2 * P(X <= 2 | n = 12, 1/2) = 2 * (1 + 12 + 66) / 4096
    a = np.array([True] * 10 + [False] * 2 + [True] * 50 + [False] * 5)
    b = np.array([False] * 10 + [True] * 2 + [True] * 50 + [False] * 5)
    r = mcnemar_exact(a, b)
    assert (r.n, r.b, r.c) == (67, 10, 2)
    assert r.p_value == pytest.approx(158 / 4096, rel=1e-9)
    assert r.verdict == "significant"


def test_mcnemar_without_discordant_pairs() -> None:
    a = np.array([True, False, True])
    r = mcnemar_exact(a, a)
    assert (r.b, r.c, r.p_value, r.verdict) == (0, 0, 1.0, "not significant")


def test_mcnemar_rejects_unpaired() -> None:
    with pytest.raises(ValueError, match="length"):
        mcnemar_exact([True, False], [True])


# --- Paired difference --------------------------------------------------------------

@FAST
@given(paired_outcomes())
def test_paired_difference_interval_contains_estimate_and_is_antisymmetric(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    d, r = paired_difference(a, b), paired_difference(b, a)
    assert -1.0 <= d.lo <= d.diff <= d.hi <= 1.0
    assert d.diff == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    assert r.diff == pytest.approx(-d.diff, abs=1e-12)
    assert (r.lo, r.hi) == pytest.approx((-d.hi, -d.lo), abs=1e-12)


def test_paired_difference_close_to_wald_for_large_n() -> None:
    n, b, c = 10_000, 300, 200
    a_right = np.zeros(n, bool)
    b_right = np.zeros(n, bool)
    a_right[:b] = True
    b_right[b:b + c] = True
    a_right[b + c:8000] = b_right[b + c:8000] = True
    d = paired_difference(a_right, b_right)
    wald_half = 1.959964 * math.sqrt((b + c) / n**2 - (b - c) ** 2 / n**3)
    assert d.diff == pytest.approx(0.01)
    assert (d.hi - d.lo) / 2 == pytest.approx(wald_half, rel=0.05)


def test_paired_difference_identical_models_has_a_real_interval() -> None:
    a = np.array([True] * 70 + [False] * 30)
    d = paired_difference(a, a)
    assert d.diff == 0.0 and d.lo <= 0.0 <= d.hi


# --- Confusion matrix and per-class accuracy ----------------------------------------

@FAST
@given(st.integers(2, 12).flatmap(lambda c: st.tuples(
    st.just(c), st.lists(st.tuples(st.integers(0, c - 1), st.integers(0, c - 1)), min_size=1, max_size=300))))
def test_per_class_accuracy_from_confusion(data: tuple[int, list[tuple[int, int]]]) -> None:
    c, pairs = data
    y_true = np.array([t for t, _ in pairs])
    y_pred = np.array([p for _, p in pairs])
    cm = confusion_matrix(y_true, y_pred, labels=list(range(c)))
    assert cm.sum() == len(pairs)
    got = per_class_from_confusion(cm)
    for k in range(c):
        mask = y_true == k
        if mask.any():
            assert got[k] == pytest.approx(float((y_pred[mask] == k).mean()))
            assert got[k] == pytest.approx(cm[k, k] / cm[k].sum())
        else:
            assert math.isnan(got[k])


def test_per_class_rejects_non_square() -> None:
    with pytest.raises(ValueError, match="square"):
        per_class_from_confusion([[1, 2, 3]])


def test_mean_std_uses_sample_std() -> None:
    assert mean_std([0.7, 0.8, 0.9]) == pytest.approx((0.8, 0.1))
    assert mean_std([0.5]) == (0.5, 0.0)
    assert all(math.isnan(x) for x in mean_std([]))
