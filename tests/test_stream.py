"""The shared batch stream: deterministic per seed, in bounds, labels attached, same for both engines."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synthetic_dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from alexbench.data.stream import BatchStream, eval_batches, normalization, prefetch, split_train_val
from alexbench.errors import UserError


def _labelled_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose every pixel encodes the label, so a label can be checked after augmentation."""
    y = np.arange(n) % 10
    x = np.broadcast_to((y * 20 + 10).astype(np.uint8)[:, None, None, None], (n, 8, 8, 3)).copy()
    return x, y.astype(np.int64)


def test_same_seed_same_batches_and_different_seed_differs():
    ds = synthetic_dataset(10, 1)
    a = [xb.tobytes() + yb.tobytes() for xb, yb in BatchStream(ds.x_train, ds.y_train, 16, seed=3).batches(0)]
    b = [xb.tobytes() + yb.tobytes() for xb, yb in BatchStream(ds.x_train, ds.y_train, 16, seed=3).batches(0)]
    c = [xb.tobytes() + yb.tobytes() for xb, yb in BatchStream(ds.x_train, ds.y_train, 16, seed=4).batches(0)]
    e1 = [xb.tobytes() for xb, _ in BatchStream(ds.x_train, ds.y_train, 16, seed=3).batches(1)]
    assert a == b
    assert a != c
    assert [x[: len(e1[0])] for x in a] != e1


def test_resume_mid_epoch_continues_the_same_sequence():
    ds = synthetic_dataset(10, 1)
    s = BatchStream(ds.x_train, ds.y_train, 8, seed=1)
    full = [xb.tobytes() for xb, _ in s.batches(2)]
    tail = [xb.tobytes() for xb, _ in s.batches(2, start_step=5)]
    assert tail == full[5:]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), epoch=st.integers(0, 50), pad=st.integers(0, 6), batch=st.integers(1, 17),
       n=st.integers(1, 60))
def test_crops_in_bounds_labels_attached(seed, epoch, pad, batch, n):
    x, y = _labelled_images(n)
    s = BatchStream(x, y, batch, seed, pad=pad, flip=True, drop_last=False)
    seen = 0
    plan = s.plan(epoch)
    assert plan.dy.min(initial=0) >= 0 and plan.dy.max(initial=0) <= 2 * pad
    assert plan.dx.min(initial=0) >= 0 and plan.dx.max(initial=0) <= 2 * pad
    for xb, yb in s.batches(epoch):
        assert xb.shape[1:] == (8, 8, 3) and xb.dtype == np.uint8
        # each image is its label's colour or zero padding; never another label's colour
        for img, label in zip(xb, yb):
            vals = set(np.unique(img).tolist()) - {0}
            assert vals <= {int(label) * 20 + 10}
            if pad < 4:  # with little padding some of the image always remains
                assert vals
        seen += len(yb)
    assert seen == n
    assert sorted(plan.order.tolist()) == list(range(n))


def test_crop_and_flip_match_a_plain_reference():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (5, 6, 6, 3), dtype=np.uint8)
    y = np.arange(5)
    s = BatchStream(x, y, 5, seed=9, pad=2)
    plan = s.plan(0)
    xb, yb = s.batch(plan, 0)
    for i, j in enumerate(plan.order):
        padded = np.pad(x[j], ((2, 2), (2, 2), (0, 0)))
        ref = padded[plan.dy[i]:plan.dy[i] + 6, plan.dx[i]:plan.dx[i] + 6]
        if plan.flip[i]:
            ref = ref[:, ::-1]
        np.testing.assert_array_equal(xb[i], ref)
        assert yb[i] == y[j]


def test_split_is_stratified_seeded_and_disjoint():
    ds = synthetic_dataset(20, 2)
    a = split_train_val(ds, 0.1, seed=0)
    b = split_train_val(ds, 0.1, seed=0)
    c = split_train_val(ds, 0.1, seed=1)
    np.testing.assert_array_equal(a.val_index, b.val_index)
    assert not np.array_equal(a.val_index, c.val_index)
    assert np.bincount(a.y_val).tolist() == [2] * 10
    assert len(a.y_train) + len(a.y_val) == len(ds.y_train)
    np.testing.assert_array_equal(a.x_test, ds.x_test)  # test untouched


def test_normalization_presets():
    x = np.random.default_rng(0).integers(0, 255, (50, 4, 4, 3), dtype=np.uint8)
    d = normalization("dataset", x)
    z = d.apply_numpy(x)
    np.testing.assert_allclose(z.reshape(-1, 3).mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z.reshape(-1, 3).std(0), 1, atol=1e-3)
    caffe = normalization("caffe")
    pix = np.array([[[[10, 20, 30]]]], np.uint8)
    np.testing.assert_allclose(caffe.apply_numpy(pix)[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)
    imnet = normalization("imagenet")
    np.testing.assert_allclose(imnet.apply_numpy(np.full((1, 1, 1, 3), 255, np.uint8))[0, 0, 0],
                               [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225], rtol=1e-5)
    with pytest.raises(UserError, match="unknown preset"):
        normalization("nope")


def test_eval_batches_cover_everything_once_and_prefetch_preserves_order():
    x = np.arange(23)[:, None]
    y = np.arange(23)
    got = list(prefetch(eval_batches(x, y, 5)))
    assert np.concatenate([b[1] for b in got]).tolist() == list(range(23))


def test_prefetch_surfaces_errors():
    def bad():
        yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(prefetch(bad()))
