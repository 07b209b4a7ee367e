"""Parity: the PyTorch and Keras definitions of a model compute the same function.

Each direction ports a model's weights into a fresh, differently initialised model of
the other framework, then compares logits on one fixed random batch. First a seeded
torch model goes into Keras. Then that Keras model, perturbed, goes back into a fresh
torch model. Both models are in eval mode and fp32. Before porting, BatchNorm
statistics and affine parameters are set to random non-trivial values. Fresh ones
(mean 0, variance 1, gamma 1, beta 0) would let a BatchNorm porting bug go unseen.
The check passes when both maximum absolute logit differences are <= ``TOL`` and the
parameter counts and FLOPs are equal.

:func:`check_backends` does the same across Keras backends. Keras reads its backend
once per process, so each backend runs in a child process (``python -m
alexbench.models.parity``); they exchange weights and logits through ``.npz`` files in a
temporary folder. This process builds the seeded torch model and its reference
logits. The first backend ports those weights into Keras; every later backend loads
the first one's Keras weights as they are. Each backend's logits must be within
``TOL`` of the native torch model's and of every other backend's, and each backend
also passes :func:`check` (both directions) on its own.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from alexbench.frameworks import import_keras, import_torch
from alexbench.models import count_params, create_model, get_spec, port
from alexbench.models.flops import keras_flops, torch_flops

TOL = 1e-4


def _randomise_torch_bn(model: Any, rng: np.random.Generator) -> None:
    torch = import_torch()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                for t, values in ((m.weight, rng.uniform(0.5, 1.5, n)), (m.bias, rng.normal(0, 0.1, n)),
                                  (m.running_mean, rng.normal(0, 0.1, n)), (m.running_var, rng.uniform(0.5, 1.5, n))):
                    t.copy_(torch.from_numpy(values.astype(np.float32)))


def _perturb_keras(model: Any, rng: np.random.Generator) -> None:
    """New random BatchNorm values, and every kernel and bias scaled per output unit by U(0.5, 1.5).

    This makes the Keras model a different function from the torch model it was
    ported from, so the keras->torch figure is measured on other weights.
    """
    keras = import_keras()
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n),
                               rng.normal(0, 0.1, n), rng.uniform(0.5, 1.5, n)])
        elif layer.weights:
            arrays = layer.get_weights()
            scale = rng.uniform(0.5, 1.5, arrays[0].shape[-1]).astype(np.float32)
            layer.set_weights([a * scale for a in arrays])


def _torch_logits(model: Any, x: np.ndarray) -> np.ndarray:
    torch = import_torch()
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _keras_logits(model: Any, x: np.ndarray) -> np.ndarray:
    out = model(x.transpose(0, 2, 3, 1), training=False)  # NCHW -> NHWC
    return np.asarray(import_keras().ops.convert_to_numpy(out), dtype=np.float32)


def check(name: str, num_classes: int = 10, batch: int = 4, seed: int = 0, input_size: int | None = None,
          **options: Any) -> dict[str, Any]:
    """Port ``name`` torch->keras and keras->torch and compare logits on a fixed batch.

    Returns a dict with ``torch_to_keras`` and ``keras_to_torch`` (max abs logit
    difference), ``max_abs_logit`` (the scale of the logits compared),
    ``relative`` (the larger difference over that scale), ``params`` and ``flops``
    per framework, ``tol`` and ``passed``.
    """
    torch = import_torch()
    keras = import_keras()
    spec = get_spec(name)
    if batch < 1:
        from alexbench.errors import UserError

        raise UserError(f"parity: batch must be >= 1 (got {batch})")
    rng = np.random.default_rng(seed)
    size = input_size or spec.input_size
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)  # NCHW

    # torch -> keras
    torch.manual_seed(seed)
    keras.utils.set_random_seed(seed)
    tm = create_model(name, "torch", num_classes, input_size=size, **options)
    _randomise_torch_bn(tm, rng)
    km = port.torch_to_keras(tm, create_model(name, "keras", num_classes, input_size=size, **options))
    ref = _torch_logits(tm, x)
    d_tk = float(np.max(np.abs(ref - _keras_logits(km, x))))
    params = {"torch": count_params(tm, "torch"), "keras": count_params(km, "keras")}
    flops = {"torch": torch_flops(tm, size), "keras": keras_flops(km)}
    scale = float(np.max(np.abs(ref)))
    del tm

    # keras -> torch: the Keras model above, perturbed, into a fresh torch model (from another
    # seed), so every torch weight must be written by the porter for the logits to agree.
    torch.manual_seed(seed + 1)
    _perturb_keras(km, rng)
    tm = port.keras_to_torch(km, create_model(name, "torch", num_classes, input_size=size, **options))
    ref = _keras_logits(km, x)
    d_kt = float(np.max(np.abs(ref - _torch_logits(tm, x))))
    scale = max(scale, float(np.max(np.abs(ref))))
    del tm, km

    passed = (d_tk <= TOL and d_kt <= TOL and params["torch"] == params["keras"]
              and flops["torch"] == flops["keras"])
    return {
        "model": name, "options": dict(options), "num_classes": num_classes, "batch": batch, "seed": seed,
        "torch_to_keras": d_tk, "keras_to_torch": d_kt, "max_abs_logit": scale,
        "relative": max(d_tk, d_kt) / scale if scale > 0 else float("inf"),
        "params": params, "flops": flops, "tol": TOL, "passed": bool(passed),
    }


# ------------------------------------------------------------------------------ across backends
def _variant_id(name: str, options: dict[str, Any]) -> str:
    return name + "".join(f"-{k}={v}" for k, v in sorted(options.items()))


def _reference(name: str, options: dict[str, Any], num_classes: int, batch: int, seed: int,
               path: Path) -> np.ndarray:
    """Seeded torch model with random BatchNorm values and a fixed batch, saved to ``path``; returns its logits."""
    torch = import_torch()
    rng = np.random.default_rng(seed)
    size = get_spec(name).input_size
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)  # NCHW
    torch.manual_seed(seed)
    tm = create_model(name, "torch", num_classes, **options)
    _randomise_torch_bn(tm, rng)
    state = {f"torch/{k}": v.detach().cpu().numpy() for k, v in tm.state_dict().items()}
    with open(path, "wb") as fh:
        np.savez(fh, x=x, **state)
    return _torch_logits(tm, x)


def _child(spec: dict[str, Any]) -> None:
    """One backend: logits of the shared weights for every item, plus :func:`check` in this backend."""
    torch = import_torch()
    # check() counts torch FLOPs with FlopCounterMode, which imports triton; triton imported after
    # jaxlib's libraries are loaded kills the process (SIGSEGV, jax 0.10.2 + torch 2.14.1), as after
    # TensorFlow's: load it first
    importlib.import_module("torch.utils.flop_counter")

    import_keras()
    results = {}
    for item in spec["items"]:
        name, options = item["name"], item["options"]
        with np.load(item["reference"], allow_pickle=False) as ref:
            x = ref["x"]
            state = {k[len("torch/"):]: torch.from_numpy(ref[k]) for k in ref.files if k.startswith("torch/")}
        km = create_model(name, "keras", spec["num_classes"], **options)
        if Path(item["keras_weights"]).exists():  # an earlier backend's Keras weights, as they are
            with np.load(item["keras_weights"], allow_pickle=False) as w:
                km.set_weights([w[f"w{i:04d}"] for i in range(len(w.files))])
            source = "keras weights of the first backend"
        else:
            tm = create_model(name, "torch", spec["num_classes"], **options)
            tm.load_state_dict(state)
            port.torch_to_keras(tm, km)
            with open(item["keras_weights"], "wb") as fh:
                np.savez(fh, **{f"w{i:04d}": a for i, a in enumerate(km.get_weights())})
            source = "ported from the torch model"
        with open(item["logits"], "wb") as fh:
            np.savez(fh, logits=_keras_logits(km, x))
        del km
        own = check(name, spec["num_classes"], len(x), spec["seed"], **options)
        results[item["id"]] = {"source": source, "check": own}
    Path(spec["result"]).write_text(json.dumps(results))


def check_backends(names: str | list[str], backends: list[str], num_classes: int = 10, batch: int = 4,
                   seed: int = 0) -> list[dict[str, Any]]:
    """Compare Keras logits across ``backends`` and against the native torch model, for every parity variant.

    Returns one dict per (model, variant): ``vs_torch`` (backend -> max abs logit
    difference to native torch), ``between`` ("a/b" -> max abs difference), ``own``
    (backend -> that backend's :func:`check` result), ``max_abs_logit``, ``tol`` and ``passed``.
    """
    from alexbench.errors import UserError
    from alexbench.frameworks import check_keras_backend

    names = [names] if isinstance(names, str) else list(names)
    if not backends or len(set(backends)) != len(backends):
        raise UserError(f"--keras-backends: name each backend once (got {','.join(backends)!r})")
    for b in backends:
        check_keras_backend(b, "--keras-backends")
    if batch < 1:
        raise UserError(f"parity: batch must be >= 1 (got {batch})")
    root = str(Path(__file__).resolve().parent.parent.parent)
    with tempfile.TemporaryDirectory(prefix="alexbench-parity-") as tmp:
        items: list[dict[str, Any]] = []
        refs: dict[str, np.ndarray] = {}
        for name in names:
            for options in get_spec(name).parity_variants:
                vid = _variant_id(name, options)
                ref_path = Path(tmp) / f"{vid}-reference.npz"
                refs[vid] = _reference(name, options, num_classes, batch, seed, ref_path)
                items.append({"id": vid, "name": name, "options": options, "reference": str(ref_path),
                              "keras_weights": str(Path(tmp) / f"{vid}-keras-weights.npz")})
        logits: dict[str, dict[str, np.ndarray]] = {it["id"]: {} for it in items}
        own: dict[str, dict[str, Any]] = {it["id"]: {} for it in items}
        for b in backends:
            spec: dict[str, Any] = {"num_classes": num_classes, "seed": seed,
                                    "result": str(Path(tmp) / f"result-{b}.json"),
                                    "items": [{**it, "logits": str(Path(tmp) / f"{it['id']}-logits-{b}.npz")}
                                              for it in items]}
            spec_path = Path(tmp) / f"spec-{b}.json"
            spec_path.write_text(json.dumps(spec))
            env = {**os.environ, "KERAS_BACKEND": b,
                   "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
            proc = subprocess.run([sys.executable, "-m", "alexbench.models.parity", str(spec_path)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0:
                tail = proc.stdout.strip().splitlines()[-1:] or ["no output"]
                raise RuntimeError(f"parity on the Keras {b} backend failed (exit {proc.returncode}): {tail[0]}")
            result = json.loads(Path(spec["result"]).read_text())
            for it in spec["items"]:
                with np.load(it["logits"], allow_pickle=False) as f:
                    logits[it["id"]][b] = f["logits"]
                own[it["id"]][b] = result[it["id"]]
    return compare_backends(items, refs, logits, own, backends, num_classes, batch, seed)


def compare_backends(items: list[dict[str, Any]], refs: dict[str, np.ndarray],
                     logits: dict[str, dict[str, np.ndarray]], own: dict[str, dict[str, Any]], backends: list[str],
                     num_classes: int, batch: int, seed: int) -> list[dict[str, Any]]:
    """:func:`check_backends`'s verdict from what it gathered: per item (``id``, ``name``, ``options``), the
    native torch logits ``refs[id]``, each backend's ``logits[id][backend]`` and its own check ``own[id][backend]``."""
    out = []
    for it in items:
        ref, lg = refs[it["id"]], logits[it["id"]]
        vs_torch = {b: float(np.max(np.abs(lg[b] - ref))) for b in backends}
        between = {f"{a}/{b}": float(np.max(np.abs(lg[a] - lg[b]))) for a, b in combinations(backends, 2)}
        passed = (all(d <= TOL for d in vs_torch.values()) and all(d <= TOL for d in between.values())
                  and all(o["check"]["passed"] for o in own[it["id"]].values()))
        out.append({"model": it["name"], "options": it["options"], "num_classes": num_classes, "batch": batch,
                    "seed": seed, "backends": list(backends), "vs_torch": vs_torch, "between": between,
                    "own": own[it["id"]], "max_abs_logit": float(np.max(np.abs(ref))), "tol": TOL,
                    "passed": bool(passed)})
    return out


if __name__ == "__main__":  # pragma: no cover - the child side of check_backends
    _child(json.loads(Path(sys.argv[1]).read_text()))
