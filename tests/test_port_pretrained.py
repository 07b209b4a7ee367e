"""Pretrained loading and porting with weight files the tests write in the official formats.

Nothing here touches the network or the real caches: TORCH_HOME / KERAS_HOME point at
tmp folders and the download functions are patched to fail at once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import urllib.error

import numpy as np
import pytest

from alexbench.errors import UserError
from alexbench.frameworks import import_keras, import_torch
from alexbench.models import WeightsUnavailable, create_model
from alexbench.models import pretrained as pt
from alexbench.models.pretrained_keras import read_keras_file

torch = import_torch()
keras = import_keras()

VGG_NOTOP = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"


def _no_torch_download(monkeypatch):
    def refuse(url, dst, *args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def _no_keras_download(monkeypatch):
    from keras.src.utils import file_utils

    def refuse(url, filename, reporthook=None, data=None):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(file_utils, "urlretrieve", refuse)


@pytest.fixture(scope="module")
def tv_alexnet(imagenet_weights):
    """A 1000-class AlexNet saved as a torchvision-format state_dict (.pth)."""
    path, src = imagenet_weights["dir"] / "alexnet-owt-7be5be79.pth", imagenet_weights["alexnet"]
    state = torch.load(path, weights_only=True)
    assert "features.0.weight" in state and tuple(state["classifier.6.weight"].shape) == (1000, 4096)
    return path, src


def _logits_torch(model, x):
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


# ------------------------------------------------------------------ torchvision format

def test_torchvision_alexnet_state_dict_loads_with_head_replaced(tv_alexnet):
    path, src = tv_alexnet
    m = create_model("alexnet", "torch", num_classes=10, pretrained="imagenet", weights=str(path))
    ours, theirs = m.state_dict(), src.state_dict()
    for key in ours:
        if ".fc8." in key:
            assert ours[key].shape[0] == 10
        else:
            assert torch.equal(ours[key], theirs[key]), key


def test_torchvision_alexnet_ported_into_keras(tv_alexnet):
    path, src = tv_alexnet
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    km = create_model("alexnet", "keras", num_classes=1000, pretrained="imagenet", weights=str(path))
    got = np.asarray(km(x.transpose(0, 2, 3, 1), training=False))
    assert np.abs(got - _logits_torch(src, x)).max() <= 1e-4
    km10 = create_model("alexnet", "keras", num_classes=10, pretrained="imagenet", weights=str(path))
    assert km10.get_layer("fc8").units == 10
    np.testing.assert_array_equal(km10.get_layer("fc7").kernel.numpy(),
                                  src.classifier.fc7.weight.detach().numpy().T)


def test_imagenet_from_torch_hub_cache_without_network(tv_alexnet, tmp_path, monkeypatch):
    path, src = tv_alexnet
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _no_torch_download(monkeypatch)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    os.symlink(path, cache / "alexnet-owt-7be5be79.pth")
    m = create_model("alexnet", "torch", num_classes=10, pretrained="imagenet")
    assert torch.equal(m.features.conv1.weight, src.features.conv1.weight)


@pytest.mark.parametrize("name, framework", [("alexnet", "torch"), ("vgg16", "torch"), ("alexnet", "keras")])
def test_offline_torchvision_weights_name_the_file(name, framework, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _no_torch_download(monkeypatch)
    with pytest.raises(WeightsUnavailable) as info:
        create_model(name, framework, pretrained="imagenet")
    msg = str(info.value)
    expected = {"alexnet": "alexnet-owt-7be5be79.pth", "vgg16": "vgg16-397923af.pth"}[name]
    assert str(tmp_path / "hub" / "checkpoints" / expected) in msg and "--weights" in msg
    assert isinstance(info.value, UserError)


def test_offline_keras_vgg16_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    _no_keras_download(monkeypatch)
    with pytest.raises(WeightsUnavailable) as info:
        create_model("vgg16", "keras", pretrained="imagenet")
    assert str(tmp_path / "models" / VGG_NOTOP) in str(info.value) and "--weights" in str(info.value)


def test_torchvision_keys_and_urls_match_real_torchvision():
    """torchvision itself, in a fresh process: importing it after TensorFlow would crash this one."""
    code = textwrap.dedent("""
        import torch, torchvision
        from alexbench.models import MODELS
        from alexbench.models.pretrained import TORCHVISION_WEIGHTS, _from_torchvision_keys
        for name, (enum, member, url) in TORCHVISION_WEIGHTS.items():
            assert getattr(torchvision.models, enum)[member].url == url, name
            with torch.device("meta"):
                theirs = getattr(torchvision.models, name)(weights=None).state_dict()
                model = MODELS[name].builder("torch")(num_classes=1000)
            ours = model.state_dict()
            named = _from_torchvision_keys(model, theirs)
            assert set(named) == set(ours), (name, sorted(set(named) ^ set(ours))[:4])
            for key, (file_key, tensor) in named.items():
                assert tuple(tensor.shape) == tuple(ours[key].shape), (name, key)
        print("ok")
    """)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


# ------------------------------------------------------------------ keras.applications format

@pytest.fixture(scope="module")
def vgg_notop(imagenet_weights):
    """keras.applications' VGG16 without top, saved in the legacy HDF5 layout of its download."""
    return imagenet_weights["dir"] / VGG_NOTOP, imagenet_weights["vgg16_notop"]


def test_notop_file_is_what_keras_applications_loads(vgg_notop):
    path, base = vgg_notop
    official = keras.applications.VGG16(weights=str(path), include_top=False, input_shape=(224, 224, 3))
    for layer in (layer for layer in base.layers if layer.weights):
        for a, b in zip(layer.get_weights(), official.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_keras_vgg16_imagenet_from_keras_cache_with_hash_check(vgg_notop, tmp_path, monkeypatch):
    path, base = vgg_notop
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    _no_keras_download(monkeypatch)
    (tmp_path / "models").mkdir()
    os.symlink(path, tmp_path / "models" / VGG_NOTOP)
    fname, url, _ = pt.KERAS_APPLICATIONS_WEIGHTS["vgg16"]
    md5 = hashlib.md5(path.read_bytes()).hexdigest()  # our stand-in file passes the hash check
    monkeypatch.setitem(pt.KERAS_APPLICATIONS_WEIGHTS, "vgg16", (fname, url, md5))
    km = create_model("vgg16", "keras", num_classes=10, pretrained="imagenet")
    for layer in (layer for layer in base.layers if layer.weights):
        for a, b in zip(layer.get_weights(), km.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert km.get_layer("predictions").units == 10 and km.get_layer("fc1").kernel.shape == (25088, 4096)


def test_keras3_weights_h5_of_the_base_loads_by_name(vgg_notop, tmp_path):
    path, base = vgg_notop
    w3 = tmp_path / "vgg16_notop.weights.h5"
    base.save_weights(w3)
    by_name = read_keras_file(str(w3))
    assert set(by_name) == {layer.name for layer in base.layers if layer.weights}
    for name, arrays in by_name.items():
        for a, b in zip(arrays, base.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_keras_vgg16_imagenet_refuses_a_torch_file(tmp_path):
    with pytest.raises(UserError, match="caffe"):
        create_model("vgg16", "keras", pretrained="imagenet", weights=str(tmp_path / "vgg16.pth"))


# ------------------------------------------------------------------ safety and wrong files

class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling would create the marker file


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save({"features.conv1.weight": torch.zeros(1), "extra": _Payload(str(marker))}, path)
    with pytest.raises(UserError, match="refused.*weights_only=True"):
        create_model("alexnet_cifar", "torch", pretrained=str(path))
    with pytest.raises(UserError, match="refused"):
        create_model("alexnet", "keras", pretrained="imagenet", weights=str(path))
    assert not marker.exists()


def test_wrong_architecture_pth_names_the_first_mismatching_layer(tmp_path):
    path = tmp_path / "half.pth"
    torch.save(create_model("alexnet_cifar", "torch", width=0.5).state_dict(), path)
    with pytest.raises(UserError, match=r"features\.conv1.*\(32, 3, 3, 3\).*\(64, 3, 3, 3\)"):
        create_model("alexnet_cifar", "torch", pretrained=str(path))
    with pytest.raises(UserError, match=r"features\.conv1.*\(32, 3, 3, 3\).*\(64, 3, 3, 3\)"):
        create_model("alexnet_cifar", "keras", pretrained=str(path))


def test_wrong_architecture_keras_file_names_the_first_mismatching_layer(tmp_path):
    path = tmp_path / "half.weights.h5"
    create_model("alexnet_cifar", "keras", width=0.5).save_weights(path)
    with pytest.raises(UserError, match=r"'conv1'.*\(3, 3, 3, 32\).*\(3, 3, 3, 64\)"):
        create_model("alexnet_cifar", "keras", pretrained=str(path))


def test_file_for_another_model_is_named(tmp_path):
    path = tmp_path / "cifar.pth"
    torch.save(create_model("alexnet_cifar", "torch").state_dict(), path)
    with pytest.raises(UserError, match="features.conv1"):
        create_model("alexnet", "torch", pretrained=str(path))


@pytest.mark.parametrize("kwargs, match", [
    ({"pretrained": "imagenet"}, "no ImageNet weights"),
    ({"weights": "x.pth"}, "needs --pretrained imagenet"),
    ({"pretrained": "missing.pth"}, "not found"),
])
def test_bad_pretrained_requests(kwargs, match):
    with pytest.raises(UserError, match=match):
        create_model("alexnet_cifar", "torch", **kwargs)


# ------------------------------------------------------------------ round trips through files

def test_checkpoint_pth_loads_in_both_frameworks_with_head_replaced(tmp_path):
    src = create_model("alexnet_cifar", "torch", num_classes=100).eval()
    path = tmp_path / "ckpt.pth"
    torch.save({"model": src.state_dict(), "epoch": 3}, path)
    same = create_model("alexnet_cifar", "torch", num_classes=100, pretrained=str(path))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(_logits_torch(same, x), _logits_torch(src, x))
    km = create_model("alexnet_cifar", "keras", num_classes=100, pretrained=str(path))
    assert np.abs(np.asarray(km(x.transpose(0, 2, 3, 1), training=False)) - _logits_torch(src, x)).max() <= 1e-4
    ten = create_model("alexnet_cifar", "torch", num_classes=10, pretrained=str(path))
    assert torch.equal(ten.classifier.fc7.weight, src.classifier.fc7.weight)
    assert ten.classifier.fc8.out_features == 10


def test_keras_model_file_loads_in_safe_mode_in_both_frameworks(tmp_path):
    km = create_model("alexnet_cifar", "keras")
    path = tmp_path / "m.keras"
    km.save(path)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    ref = np.asarray(km(x, training=False))
    again = create_model("alexnet_cifar", "keras", pretrained=str(path))
    np.testing.assert_array_equal(np.asarray(again(x, training=False)), ref)
    tm = create_model("alexnet_cifar", "torch", pretrained=str(path))
    assert np.abs(_logits_torch(tm, x.transpose(0, 3, 1, 2)) - ref).max() <= 1e-4


def test_port_refuses_different_architectures():
    from alexbench.models import port

    with pytest.raises(UserError, match="conv1"):
        port.torch_to_keras(create_model("alexnet_cifar", "torch", width=0.5),
                            create_model("alexnet_cifar", "keras"))


def test_keras_file_with_a_lambda_layer_is_refused_by_safe_mode(tmp_path):
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Lambda(lambda t: t * 2.0, name="evil")(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(UserError, match="safe_mode=True"):
        create_model("alexnet_cifar", "keras", pretrained=str(path))
