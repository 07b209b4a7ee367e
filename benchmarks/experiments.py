"""Candidate speed-ups that are *not* in the engines, measured against the engines as they are.

    python -m benchmarks.experiments keras-fused-bn   # Keras: fused BatchNorm kernel instead of Keras 3's

(The fused torch optimizer step tried here before is now the engine's default,
``optimizer.fused``; ``python -m benchmarks.fast_paths`` measures it against the loop.)

Each experiment builds two engines in one process, the stock one and one with a single
change patched in from the outside (the engines' files are untouched), trains both on
the same batches, alternating blocks of steps (ABAB...), and prints the median img/s of
each and the median of the per-block ratios. These are evidence for changes to propose,
not product code: a patch here is not checked for numerical equivalence (the printed
first-step losses differ also because the two engines draw different dropout masks).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _engines(framework: str, model: str, batch: int, patch, n_images: int = 4096):  # noqa: ANN001, ANN202
    from alexbench.config import validate
    from alexbench.data.stream import BatchStream, normalization
    from alexbench.engines import make_engine
    from alexbench.models import MODELS

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n_images, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, n_images).astype(np.int64)
    norm = normalization("dataset", x)
    out = {}
    for name in ("stock", "patched"):
        cfg = validate({"model": model, "framework": framework, "batch_size": batch, "seed": 0})
        e = make_engine(cfg, 10, norm, MODELS[model].input_size)
        e.build()
        if name == "patched":
            patch(e)
        out[name] = e
    return out, list(BatchStream(x, y, batch, 0).batches(0))


def _alternate(engines: dict, batches: list, blocks: int, steps: int) -> None:
    bs = len(batches[0][1])
    for name, e in engines.items():
        e.train_mode()
        loss = e.train_step(*batches[0], 1e-3)[0]
        e.train_step(*batches[1], 1e-3)
        print(f"{name}: first-step loss {loss:.5f}")
    ips: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(blocks):
        for name, e in engines.items():
            t0 = time.perf_counter()
            for xb, yb in batches[2:2 + steps]:
                e.train_step(xb, yb, 1e-3)
            ips[name].append(steps * bs / (time.perf_counter() - t0))
    for name, v in ips.items():
        print(f"{name}: median {np.median(v):.1f} img/s, blocks {[round(a, 1) for a in v]}")
    ratio = np.median(np.array(ips["patched"]) / np.array(ips["stock"]))
    print(f"patched / stock, median of paired blocks: {ratio:.2f}x")


def keras_fused_bn(engine) -> None:  # noqa: ANN001
    """Training-mode BatchNorm through TF's fused kernel (FusedBatchNormV3, bf16 in, fp32 statistics).

    Keras 3's BatchNormalization casts bf16 activations to float32 and computes the moments
    and the normalisation as separate ops (Mean, SquaredDifference, Mul, Sum, Cast ...).
    Not checked here: which variance (biased or Bessel-corrected) the fused op hands back
    for the moving average; a real change must match the torch side's running_var.
    """
    import keras
    import tensorflow as tf

    def make(layer):  # noqa: ANN001, ANN202
        stock = layer.call

        def call(inputs, training=None, mask=None):  # noqa: ANN001, ANN202
            if not (training and layer.trainable):
                return stock(inputs, training=training, mask=mask)
            y, mean, var = tf.compat.v1.nn.fused_batch_norm(
                inputs, tf.cast(layer.gamma, tf.float32), tf.cast(layer.beta, tf.float32),
                epsilon=layer.epsilon, data_format="NHWC", is_training=True)
            layer.moving_mean.assign(layer.moving_mean * layer.momentum + mean * (1 - layer.momentum))
            layer.moving_variance.assign(layer.moving_variance * layer.momentum + var * (1 - layer.momentum))
            return tf.cast(y, layer.compute_dtype)

        return call

    for layer in engine.model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.call = make(layer)
    engine._make_fns()  # retrace the step with the patched layers


EXPERIMENTS = {"keras-fused-bn": ("keras", keras_fused_bn)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.experiments", description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", choices=sorted(EXPERIMENTS))
    p.add_argument("--model", default="alexnet_cifar")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args(argv)
    framework, patch = EXPERIMENTS[args.experiment]
    from alexbench.frameworks import import_keras, import_torch

    import_torch()
    if framework == "keras":
        import_keras()  # torch first, then TensorFlow (the other order can crash, see alexbench.frameworks)
    engines, batches = _engines(framework, args.model, args.batch, patch)
    print(f"{args.experiment}: {args.model}, batch {args.batch}, {args.blocks} blocks of {args.steps} steps each")
    _alternate(engines, batches, args.blocks, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
