"""Test set-up: a quiet, deterministic environment; the toy data and tiny config of tests/support/toydata.py."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("ALEXBENCH_QUIET", "1")

from support.toydata import CLASSES, synthetic_dataset, tiny_config, write_image_folder  # noqa: F401 - re-exported


@pytest.fixture(autouse=True)
def _alexbench_logging():
    """Send the alexbench logger to stderr as the CLI does, so capsys sees warnings in library calls."""
    from alexbench.log import configure

    configure()


@pytest.fixture
def tiny_ds():
    return synthetic_dataset()


@pytest.fixture(scope="session")
def imagenet_weights(tmp_path_factory):
    """A ``--weights-dir`` holding stand-ins for the official files under their official names
    (random weights in the official formats): torchvision's AlexNet and keras.applications'
    VGG16 notop. ``{"dir": folder, "alexnet": torch model, "vgg16_notop": keras model}``."""
    from support.weights import write_keras_vgg16_notop, write_torchvision_weights

    from alexbench.runner import expected_weights_name

    folder = tmp_path_factory.mktemp("imagenet-weights")
    alexnet = write_torchvision_weights("alexnet", folder / expected_weights_name("alexnet", "torch"))
    notop = write_keras_vgg16_notop(folder / expected_weights_name("vgg16", "keras"))
    return {"dir": folder, "alexnet": alexnet, "vgg16_notop": notop}


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory):
    """One tiny finished run per framework (2 epochs on the toy data), shared by the tests that only read them."""
    from alexbench.train import train

    root = tmp_path_factory.mktemp("finished-runs")
    for fw in ("torch", "keras"):
        train(tiny_config(fw), root / fw, data=synthetic_dataset())
    return {fw: root / fw for fw in ("torch", "keras")}
