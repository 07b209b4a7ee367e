"""Malformed checkpoints and weight files: every part is checked and refused in one line (UserError),
never an internal error. Real checkpoints come from a tiny engine; each case changes one part."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from alexbench.errors import UserError


def _engine(framework: str):
    from alexbench.data.stream import Normalization
    from alexbench.engines import make_engine

    cfg = tiny_config(framework)
    eng = make_engine(cfg, 10, Normalization("dataset", (127.0, 127.0, 127.0), (64.0, 64.0, 64.0)), 32)
    eng.build()
    return eng


@pytest.fixture(scope="module")
def torch_ckpt(tmp_path_factory):
    eng = _engine("torch")
    eng.train_step(np.zeros((4, 32, 32, 3), np.uint8), np.arange(4), 0.01)  # momentum buffers exist
    path = tmp_path_factory.mktemp("t") / "last.pt"
    eng.save(str(path), {"progress": {"epoch": 0}})
    return eng, path


def _torch_case(base: Path, tmp: Path, change) -> str:
    import torch

    blob = torch.load(base, weights_only=True)
    change(blob)
    out = tmp / "bad.pt"
    torch.save(blob, out)
    return str(out)


def _first(blob):
    return next(iter(blob["model"]))


TORCH_CASES = {
    "missing model": (lambda b: b.pop("model"), "model: missing or not a mapping"),
    "missing metadata": (lambda b: b.pop("meta_json"), "meta_json: missing"),
    "metadata not JSON": (lambda b: b.update(meta_json="{oops"), "meta_json: not valid JSON"),
    "metadata a list": (lambda b: b.update(meta_json="[1]"), "meta_json: expected a JSON object"),
    "weight not a tensor": (lambda b: b["model"].update({_first(b): 3}), "expected a tensor (got int)"),
    "NaN weights": (lambda b: b["model"][_first(b)].fill_(float("nan")), "holds NaN or infinite values"),
    "infinite weights": (lambda b: b["model"][_first(b)].fill_(float("inf")), "holds NaN or infinite values"),
    "integer weights": (lambda b: b["model"].update({_first(b): b["model"][_first(b)].int()}),
                        "is integer in the file, the model expects floating point"),
    "bool weights": (lambda b: b["model"].update({_first(b): b["model"][_first(b)] > 0}),
                     "dtype torch.bool is neither floating point nor integer"),
    "extra layer": (lambda b: b["model"].update({"features.extra.weight": b["model"][_first(b)]}),
                    "'features.extra.weight' is not in the model"),
    "optimizer garbage": (lambda b: b.update(optimizer={"state": {}, "param_groups": "x"}),
                          "optimizer: missing, or not torch's state"),
    "optimizer other groups": (lambda b: b.update(optimizer={"state": {}, "param_groups": []}),
                               "optimizer or random state does not fit this run"),
    "optimizer NaN momentum": (lambda b: next(iter(b["optimizer"]["state"].values()))["momentum_buffer"].fill_(
        float("nan")), "momentum_buffer: holds NaN"),
    "rng of floats": (lambda b: b.update(torch_rng=b["torch_rng"].float()), "torch_rng: missing or not a 1-D uint8"),
    "rng too short": (lambda b: b.update(torch_rng=b["torch_rng"][:10]), "optimizer or random state does not fit"),
    "progress missing": (lambda b: b.update(meta_json=json.dumps({"config": {}})), "progress missing"),
}


@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_torch_checkpoint_parts_are_checked(case, torch_ckpt, tmp_path):
    eng, base = torch_ckpt
    change, needle = TORCH_CASES[case]
    bad = _torch_case(base, tmp_path, change)
    with pytest.raises(UserError, match=None) as info:
        eng.load(bad)
    assert needle in str(info.value) and str(info.value).startswith(bad), str(info.value)
    eng.load(str(base))  # the engine is still usable with the good file


def test_torch_checkpoint_that_expands_is_refused(tmp_path):
    from alexbench.engines.torch_engine import read_checkpoint

    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data/0", b"\0" * (64 << 20))
    with pytest.raises(UserError, match=r"bomb.pt: refused: its members expand to 64 MiB"):
        read_checkpoint(str(bomb))


@pytest.fixture(scope="module")
def keras_ckpt(tmp_path_factory):
    eng = _engine("keras")
    eng.train_step(np.zeros((4, 32, 32, 3), np.uint8), np.arange(4), 0.01)
    path = tmp_path_factory.mktemp("k") / "last.npz"
    eng.save(str(path), {"progress": {"epoch": 0}})
    return eng, path


def _set(key: str, value) -> callable:
    return lambda d: d.__setitem__(key, value)


def _opt_key(d: dict) -> str:
    return next(k for k in d if k.startswith("opt/"))


KERAS_CASES = {
    "missing variable list": (lambda d: d.pop("variable_paths"), "variable_paths: missing"),
    "missing variable": (lambda d: d.pop("model/0000"), "model/0000: missing"),
    "missing metadata": (lambda d: d.pop("meta_json"), "meta_json: missing"),
    "step count text": (_set("opt_t", np.array("x")), "opt_t: missing or not a step count"),
    "step count vector": (_set("opt_t", np.arange(3)), "opt_t: missing or not a step count"),
    "metadata not JSON": (_set("meta_json", np.array("{x")), "meta_json: not valid JSON"),
    "NaN weights": (lambda d: d["model/0000"].fill(np.nan), "model/0000: holds NaN"),
    "integer weights": (lambda d: d.update({"model/0000": d["model/0000"].astype(np.int32)}),
                        "is integer in the file"),
    "text weights": (lambda d: d.update({"model/0000": np.full(d["model/0000"].shape, "a")}),
                     "dtype <U1 is neither floating point nor integer"),
    "infinite optimizer slot": (lambda d: d[_opt_key(d)].fill(np.inf), "holds NaN or infinite values"),
    "optimizer slot of another shape": (lambda d: d.update({_opt_key(d): np.zeros(3, np.float32)}),
                                        "expected float values of shape"),
    "format not text": (_set("format", np.arange(3)), "not an alexbench keras checkpoint"),
}


@pytest.mark.parametrize("case", list(KERAS_CASES))
def test_keras_checkpoint_parts_are_checked(case, keras_ckpt, tmp_path):
    eng, base = keras_ckpt
    change, needle = KERAS_CASES[case]
    with np.load(base) as z:
        data = {k: z[k].copy() for k in z.files}
    change(data)
    bad = tmp_path / "bad.npz"
    with open(bad, "wb") as fh:
        np.savez(fh, **data)
    with pytest.raises(UserError) as info:
        eng.load(str(bad))
    assert needle in str(info.value), str(info.value)


def _h5(path: Path, build) -> str:
    import h5py

    with h5py.File(path, "w") as f:
        build(f)
    return str(path)


def _legacy(f, weight=None, group=True):
    f.attrs["layer_names"] = [b"conv1"]
    if group:
        g = f.create_group("conv1")
        g.attrs["weight_names"] = [b"kernel"]
        if weight is not None:
            g.create_dataset("kernel", data=weight)
    else:
        f.create_dataset("conv1", data=np.zeros(3))


def _keras3(f, kind="dataset"):
    if kind == "layers-dataset":
        f.create_dataset("layers", data=np.zeros(3))
        return
    g = f.create_group("layers/conv1/vars")
    g.attrs["name"] = "conv1" if kind != "name-array" else np.arange(3)
    if kind == "group":
        g.create_group("0")
    else:
        g.create_dataset("0" if kind != "gap" else "1", data=np.zeros(3, np.float32))


H5_CASES = {
    "layer is a dataset": (lambda f: _legacy(f, group=False), "/conv1: expected an HDF5 group, found a Dataset"),
    "weight is a group": (lambda f: (_legacy(f), f["conv1"].create_group("kernel")),
                          "/conv1/kernel: expected an HDF5 dataset, found a Group"),
    "weight missing": (lambda f: _legacy(f), "/conv1/kernel: expected an HDF5 dataset, found nothing"),
    "text weights": (lambda f: _legacy(f, np.array([b"a", b"b"])), "dtype |S1 is neither floating point nor integer"),
    "NaN weights": (lambda f: _legacy(f, np.full((3, 3), np.nan, np.float32)), "holds NaN or infinite values"),
    "layer names not text": (lambda f: f.attrs.__setitem__("layer_names", np.arange(3)),
                             "/0: expected an HDF5 group, found nothing"),
    "keras 3 layers is a dataset": (lambda f: _keras3(f, "layers-dataset"), "/layers: expected an HDF5 group"),
    "keras 3 variable is a group": (lambda f: _keras3(f, "group"), "/layers/conv1/vars/0: expected an HDF5 dataset"),
    "keras 3 name not text": (lambda f: _keras3(f, "name-array"), "attribute 'name' is not a layer name"),
    "keras 3 variables with a gap": (lambda f: _keras3(f, "gap"), "/layers/conv1/vars/0: expected an HDF5 dataset"),
}


@pytest.mark.parametrize("case", list(H5_CASES))
def test_hdf5_weights_of_the_wrong_kind_are_refused(case, tmp_path):
    from alexbench.models.pretrained_keras import read_keras_file

    build, needle = H5_CASES[case]
    path = _h5(tmp_path / "w.h5", build)
    with pytest.raises(UserError) as info:
        read_keras_file(path)
    assert needle in str(info.value) and str(info.value).startswith(path), str(info.value)


@pytest.mark.parametrize("change, needle", [
    (lambda t: t.fill_(float("nan")), "holds NaN or infinite values"),
    (lambda t: t.to(__import__("torch").int32), "is integer in the file, the model expects floating point"),
])
def test_torch_weight_files_with_bad_values_are_refused(change, needle, tmp_path):
    import torch

    from alexbench.models import create_model
    from alexbench.models.pretrained import apply_torch_state, read_torch_file

    model = create_model("alexnet_cifar", "torch", width=0.125)
    state = model.state_dict()
    key = next(iter(state))
    state[key] = change(state[key].clone())
    buf = io.BytesIO()
    torch.save(state, buf)
    (tmp_path / "w.pth").write_bytes(buf.getvalue())
    with pytest.raises(UserError) as info:
        apply_torch_state(model, read_torch_file(str(tmp_path / "w.pth")), str(tmp_path / "w.pth"), "classifier")
    assert needle in str(info.value), str(info.value)
