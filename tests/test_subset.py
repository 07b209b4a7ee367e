"""The class-balanced subset behind max_train_images / max_test_images."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synthetic_dataset, tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st

from alexbench.data.stream import balanced_subset, take_balanced
from alexbench.errors import UserError


@st.composite
def labels_and_n(draw):
    sizes = draw(st.lists(st.integers(1, 30), min_size=1, max_size=12))
    y = np.repeat(np.arange(len(sizes)) * 3 + 1, sizes)  # class ids need not be 0..k-1
    y = y[np.random.default_rng(draw(st.integers(0, 2**16))).permutation(len(y))]
    n = draw(st.integers(1, len(y) + 3))
    return y, n, draw(st.integers(0, 2**31 - 1))


@settings(max_examples=300, deadline=None)
@given(labels_and_n())
def test_every_class_present_and_counts_within_one(case):
    y, n, seed = case
    classes, available = np.unique(y, return_counts=True)
    k = len(classes)
    if n < k:
        with pytest.raises(UserError, match="max_train_images: .* fewer than the .* classes"):
            balanced_subset(y, n, seed)
        return
    idx = balanced_subset(y, n, seed)
    assert len(idx) == min(n, len(y))
    assert np.all(np.diff(idx) > 0)  # sorted, no repeats
    taken = np.array([(y[idx] == c).sum() for c in classes])
    assert np.all(taken >= 1)  # every class present
    left = taken[taken < available]  # classes that still had images to give
    if len(left):  # no class got more than one image over a class that could have given more
        assert taken.max() <= left.min() + 1
    if available.min() >= -(-n // k):  # every class can give its full share: all counts within 1
        assert taken.max() - taken.min() <= 1
    np.testing.assert_array_equal(idx, balanced_subset(y, n, seed))  # seeded


def test_fewer_than_classes_used_to_keep_the_first_classes_only():
    y = np.repeat(np.arange(10), 50)
    with pytest.raises(UserError, match="max_test_images: 5 is fewer than the 10 classes"):
        balanced_subset(y, 5, 0, "max_test_images")
    idx = balanced_subset(y, 25, 0)
    counts = np.bincount(y[idx], minlength=10)
    assert counts.sum() == 25 and counts.min() == 2 and counts.max() == 3  # was 2 per class, 20 in all


def test_same_images_as_the_old_rule_when_n_is_a_multiple_of_the_classes():
    """The quick preset's subsets (10,000 of 45,000) must not change under past results."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, 900)
    n, seed = 200, 7
    order = np.random.Generator(np.random.PCG64([seed, 0x5B5E7])).permutation(len(y))
    old = np.sort(np.concatenate([order[y[order] == c][: n // 10] for c in range(10)]))
    np.testing.assert_array_equal(balanced_subset(y, n, seed), old)


def test_take_balanced_returns_the_arrays_when_nothing_is_cut():
    x, y = np.zeros((6, 2)), np.array([0, 1, 0, 1, 0, 1])
    assert take_balanced(x, y, None, 0)[0] is x
    assert take_balanced(x, y, 6, 0)[1] is y
    xs, ys = take_balanced(x, y, 4, 0)
    assert len(xs) == 4 and np.bincount(ys).tolist() == [2, 2]


def test_prepare_data_names_the_field():
    from alexbench.prepare import prepare_data

    with pytest.raises(UserError, match="max_train_images: 3 is fewer than the 10 classes"):
        prepare_data(tiny_config(max_train_images=3), synthetic_dataset())
    _, splits = prepare_data(tiny_config(max_train_images=25, max_test_images=12), synthetic_dataset())
    assert np.bincount(splits.y_train, minlength=10).min() == 2 and len(splits.y_train) == 25
    assert set(np.bincount(splits.y_test, minlength=10).tolist()) == {1, 2}
