"""Typed options of each registered model (``model_options`` in a config).

One pydantic class per model: its fields are the options a user may set, with their
defaults and bounds. An unknown option or a bad value fails validation naming the
field (``model_options.width: Input should be greater than 0``). The config
(:class:`alexbench.config.TrainConfig`) picks the class from ``model``, so a config is
checked before any data is loaded or any model is built.

An options object unpacks like a dict of its values (``create_model(..., **options)``),
and :meth:`ModelOptions.builder_kwargs` turns it into the builder's keyword arguments.
Importing this module imports neither framework.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ALEXNET_CIFAR_CHANNELS", "ALEXNET_CIFAR_HIDDEN", "ModelOptions", "AlexNetOptions",
           "AlexNet2012Options", "AlexNetBNOptions", "AlexNetCifarOptions", "VGG16Options"]

# alexnet_cifar's layer sizes at width 1 (both builders take them from here)
ALEXNET_CIFAR_CHANNELS = (64, 192, 384, 256, 256)
ALEXNET_CIFAR_HIDDEN = 1024

class ModelOptions(BaseModel):
    """Options shared by no model: the base of every model's options class."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    # a read-only mapping of option -> value, so ``**options`` works
    def keys(self) -> list[str]:
        return list(type(self).model_fields)

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def builder_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the model's builder functions (both frameworks)."""
        return self.model_dump()


class AlexNetOptions(ModelOptions):
    dropout: float = Field(0.5, ge=0, lt=1)


class AlexNet2012Options(ModelOptions):
    dropout: float = Field(0.5, ge=0, lt=1)
    norm: Literal["lrn", "batch", "none"] = "lrn"


class AlexNetBNOptions(ModelOptions):
    dropout: float = Field(0.5, ge=0, lt=1)
    pool_padding: Literal["valid", "same"] = "valid"  # "same": Keras's padded pools, ceil(n / 2) outputs


class AlexNetCifarOptions(ModelOptions):
    dropout: float = Field(0.25, ge=0, lt=1)
    width: float = Field(1.0, gt=0, le=16)  # scales every convolution's channels (16: 1,024 to 6,144)
    # "none": convolutions with biases and no BatchNorm (a network whose step does not depend on how
    # the batch is split, which data-parallel equality checks need)
    norm: Literal["batch", "none"] = "batch"

    def builder_kwargs(self) -> dict[str, Any]:
        """``width`` becomes ``channels``: each of 64-192-384-256-256 times width, rounded to a multiple of 8."""
        channels = tuple(max(8, int(round(c * self.width / 8)) * 8) for c in ALEXNET_CIFAR_CHANNELS)
        return {"dropout": self.dropout, "channels": channels, "norm": self.norm}


class VGG16Options(ModelOptions):
    dropout: float = Field(0.5, ge=0, lt=1)
