"""The fused optimizer step (``optimizer.fused: true``, the default) gives the plain loop's update, and
checkpoints of either kind resume with either."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_config

OPTIMIZERS = {
    "sgd-nesterov": {"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    "sgd-momentum": {"name": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 5e-4},
    "sgd-plain": {"name": "sgd", "momentum": 0.0, "nesterov": False, "weight_decay": 5e-4},
    "adam": {"name": "adam", "lr": 1e-3, "weight_decay": 5e-4},
    "adamw": {"name": "adamw", "lr": 1e-3, "weight_decay": 5e-2},
}
STEPS = 5
# measured on class A after 5 steps of the tiny model: SGD (every variant) 0.0, bit for bit; Adam 3.1e-6, AdamW
# 1.1e-5, where each step moves weights by about lr = 1e-3: the optimizers agree to rounding (see
# test_fused_adam_is_the_loops_update_to_rounding) and training feeds the last-bit differences back
BOUND = {"sgd": 1e-6, "adam": 1e-4, "adamw": 1e-4}


def _batches(n: int = STEPS):
    rng = np.random.default_rng(0)
    return [(rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 8)) for _ in range(n)]


def _engine(fused: bool, opt: dict, **over: object):
    from alexbench.data.stream import Normalization
    from alexbench.engines import make_engine

    eng = make_engine(tiny_config("torch", optimizer={"lr": 0.05, **opt, "fused": fused}, **over), 10,
                      Normalization("dataset", (127.0, 127.0, 127.0), (64.0, 64.0, 64.0)), 32)
    eng.build()
    return eng


def _weights(eng) -> dict:
    return {k: v.detach().clone() for k, v in eng.model.state_dict().items()}


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("opt", list(OPTIMIZERS), ids=list(OPTIMIZERS))
def test_fused_step_gives_the_loops_parameters(opt):
    runs = {}
    for fused in (True, False):
        eng = _engine(fused, OPTIMIZERS[opt])
        assert bool(eng.optimizer.param_groups[0]["fused"]) is fused  # the switch reaches torch
        start = _weights(eng)
        for xb, yb in _batches():
            eng.train_step(xb, yb, 0.05 if opt.startswith("sgd") else 1e-3)
        runs[fused] = _weights(eng)
    assert _max_diff(runs[True], start) > 1e-3  # the steps moved the weights
    assert _max_diff(runs[True], runs[False]) <= BOUND[OPTIMIZERS[opt]["name"]]


def _has_bf16() -> bool:
    from alexbench.frameworks import cpu_has_bf16

    return cpu_has_bf16()


@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "nchw"])
@pytest.mark.skipif(not _has_bf16(), reason="this CPU has no native bf16")
def test_fused_step_under_bf16_autocast(channels_last):
    """torch's fused CPU kernel reads each gradient in its weight's memory layout (a gradient set by hand in
    another layout gets a wrong update); autograd keeps the layouts equal, also through bf16 casts.
    Measured: at most 3.7e-9 from the loop after 5 steps."""
    runs = {}
    for fused in (True, False):
        eng = _engine(fused, OPTIMIZERS["sgd-nesterov"], precision="bf16", channels_last=channels_last)
        for xb, yb in _batches():
            eng.train_step(xb, yb, 0.05)
        for p in eng.model.parameters():
            assert p.grad.stride() == p.stride()
        runs[fused] = _weights(eng)
    assert _max_diff(runs[True], runs[False]) <= BOUND["sgd"]


@pytest.mark.parametrize("opt", ["sgd-nesterov", "adam"])
@pytest.mark.parametrize("writer", [True, False], ids=["fused-wrote", "loop-wrote"])
def test_checkpoint_resumes_with_either_kind(opt, writer, tmp_path):
    batches = _batches(3)
    lr = 0.05 if opt.startswith("sgd") else 1e-3
    eng = _engine(writer, OPTIMIZERS[opt])
    for xb, yb in batches[:2]:
        eng.train_step(xb, yb, lr)
    path = str(tmp_path / "last.pt")
    eng.save(path, {"progress": {"epoch": 0}})
    eng.train_step(*batches[2], lr)
    after = {}
    for reader in (writer, not writer):
        other = _engine(reader, OPTIMIZERS[opt])
        other.load(path)
        assert all(bool(g["fused"]) is reader for g in other.optimizer.param_groups)  # the reader keeps its own kind
        saved = eng.optimizer.state_dict()["state"]
        assert set(other.optimizer.state_dict()["state"]) == set(saved)
        other.train_step(*batches[2], lr)
        after[reader] = _weights(other)
    bound = BOUND[OPTIMIZERS[opt]["name"]]
    assert _max_diff(after[writer], _weights(eng)) <= bound
    assert _max_diff(after[not writer], _weights(eng)) <= bound


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_fused_adam_is_the_loops_update_to_rounding(name):
    """Same gradients into both: the fused update stays within a few float32 ulps of the loop's
    (measured: 1.5e-8 on weights of about 0.3 after 5 steps of about 1e-3)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(50_000, generator=gen) * 0.1
    grads = [torch.randn(50_000, generator=gen) * s for s in (1e-3, 1e-2, 1e-4, 1e-3, 1e-2)]
    out = {}
    for fused in (True, False):
        p = p0.clone().requires_grad_()
        opt = getattr(torch.optim, name)([p], lr=1e-3, weight_decay=5e-2, **({"fused": True} if fused else {}))
        for g in grads:
            p.grad = g.clone()
            opt.step()
        out[fused] = p.detach()
    assert float((out[True] - p0).abs().max()) > 4e-3
    assert float((out[True] - out[False]).abs().max()) <= 1e-7
