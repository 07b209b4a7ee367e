"""The fine-tuning part of the model API: replace the head, freeze the base, train mode.

The recipe follows Keras's transfer-learning guide. Phase 1 freezes the base and
trains the classifier, with BatchNorm kept in inference mode. Phase 2 unfreezes
everything and trains at a low learning rate. The head is the layers the model's
``ModelSpec.head`` names (``head_layer_names``): in every registered model, the dense
layers after the flatten (``model.classifier`` in torch). So phase 1 also trains fc6
and fc7, which a notop Keras VGG16 file leaves freshly initialised.

Nothing here imports a framework at module level.
"""

from __future__ import annotations

from typing import Any, Sequence

from alexbench.errors import UserError


def _check_framework(framework: str) -> None:
    if framework not in ("torch", "keras"):
        raise UserError(f"unknown framework {framework!r}; valid: torch, keras")


def reset_classifier(model: Any, framework: str, num_classes: int) -> Any:
    """Replace the final layer with a freshly initialised one for ``num_classes``; returns the model.

    Torch: the module is changed in place and returned. Keras: a Functional model
    cannot swap a layer, so a new ``keras.Model`` is returned. It shares every other
    layer (and its weights and trainable flag) with the old one. Use the returned
    model, and recompile it. The new layer has the old one's configuration: its
    initialisers, and float32 compute under mixed precision.
    """
    _check_framework(framework)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"reset_classifier: num_classes must be a positive integer (got {num_classes!r})")
    if framework == "torch":
        if not hasattr(model, "reset_classifier"):
            raise UserError(f"reset_classifier: {type(model).__name__} is not an alexbench model")
        model.reset_classifier(num_classes)
        return model
    from alexbench.frameworks import import_keras

    keras = import_keras()
    old = model.layers[-1]
    if not isinstance(old, keras.layers.Dense):
        raise UserError(f"reset_classifier: the last layer of {model.name!r} is {type(old).__name__}, not Dense")
    new = type(old).from_config({**old.get_config(), "units": num_classes})
    return keras.Model(model.inputs, new(old.input), name=model.name)


def set_base_trainable(model: Any, framework: str, trainable: bool, head: Sequence[str]) -> None:
    """Freeze (``trainable=False``) or unfreeze every layer except the ``head`` layers
    (``head_layer_names(model_name)``), which stay trainable.

    Torch: sets ``requires_grad`` on the base's parameters. Call ``torch_train_mode``
    instead of ``model.train()`` so frozen BatchNorm stays in eval mode. Keras: sets
    ``layer.trainable``. In Keras 3 a non-trainable BatchNormalization runs in
    inference mode, which gives the transfer-learning guide's ``training=False``
    behaviour for the base. Recompile the Keras model afterwards.
    """
    _check_framework(framework)
    head_set = set(head)
    if framework == "torch":
        layers = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if name}
    else:
        layers = {layer.name for layer in model.layers}
    if not head_set or not head_set <= layers:
        raise UserError(f"set_base_trainable: head layer(s) {', '.join(sorted(head_set - layers)) or '(none)'} "
                        "not in the model")
    if framework == "torch":
        for name, param in model.named_parameters():  # e.g. classifier.fc6.weight: layer fc6
            if name.rsplit(".", 2)[-2] not in head:
                param.requires_grad_(bool(trainable))
        return
    for layer in model.layers:
        if layer.name not in head:
            layer.trainable = bool(trainable)


def torch_train_mode(model: Any) -> Any:
    """``model.train()``, then put BatchNorm layers whose parameters are all frozen back in eval mode.

    A frozen BatchNorm in train mode would still normalise with batch statistics and
    update its running statistics. That undoes the point of freezing, and it is what
    Keras 3 avoids by running non-trainable BatchNormalization in inference mode.
    """
    from alexbench.frameworks import import_torch

    torch = import_torch()
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()
    return model
