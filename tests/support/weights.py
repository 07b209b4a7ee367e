"""Stand-ins for the official ImageNet weight files: random weights in the official formats and names.

Pretrained loading, porting and the presets' pretrained entries are tested with these
(no network here). ``conftest.imagenet_weights`` writes them once per session.
"""

from __future__ import annotations


def torchvision_state_dict(model) -> dict:
    """Our state_dict with torchvision's positional keys: features.conv1.weight -> features.0.weight."""
    out = {}
    for top, container in model.named_children():
        index = {name: i for i, (name, _) in enumerate(container.named_children())}
        for key, value in container.state_dict().items():
            child, rest = key.split(".", 1)
            out[f"{top}.{index[child]}.{rest}" if index else f"{top}.{key}"] = value
    return out


def write_torchvision_weights(name: str, path, seed: int = 0):
    """A 1000-class ``name`` (alexnet, vgg16) saved as torchvision's ImageNet file is: a state_dict with
    positional keys. Returns the model it was taken from (eval mode)."""
    import torch

    from alexbench.models import create_model

    torch.manual_seed(seed)
    src = create_model(name, "torch", num_classes=1000).eval()
    torch.save(torchvision_state_dict(src), path)
    return src


def write_keras_vgg16_notop(path, seed: int = 0):
    """keras.applications' VGG16 without top, saved in the legacy HDF5 layout of its download.
    Returns the Keras model it was taken from."""
    import h5py

    from alexbench.frameworks import import_keras

    keras = import_keras()  # torch and torchvision before TensorFlow (see import_keras)
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(seed)
    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, base)
    return base
