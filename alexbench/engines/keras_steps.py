"""The Keras engine's train and eval steps, one builder per Keras backend.

The arithmetic is written once, in ``keras.ops``, and is the same on every backend:
input preparation (:func:`prepare`), the loss, and the optimizer update
(:func:`update`, PyTorch's SGD/Adam/AdamW semantics). Only taking the gradient and
compiling differ, so each backend gets a small builder:

- TensorFlow: ``tf.GradientTape`` inside a ``tf.function`` (``compile``: XLA ``jit_compile``).
- JAX: ``model.stateless_call`` under ``jax.value_and_grad``, a pure function of the
  variable values (``compile``: ``jax.jit``, i.e. XLA; without it JAX runs op by op).
- torch: autograd on the variables' torch tensors, eagerly (``compile``: ``torch.compile``
  of the forward pass and loss).

Every builder returns ``train(x_u8, y, lr, t) -> (loss, correct, applied)`` and
``evaluate(x_u8, y) -> (probs, loss_sum)``; both read and write the engine's Keras
variables, so checkpoints and evaluation never see backend-specific state. Under fp16
loss scaling, a step whose gradients are not finite changes nothing, as torch's
GradScaler skips it; ``applied`` then says whether it counted (None: always).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

StepFns = tuple[Callable[..., Any], Callable[..., Any]]


def prepare(eng: Any, x_u8: Any) -> Any:
    """uint8 NHWC -> normalised float32 NHWC at the model's input size (same as the torch engine)."""
    ops = eng.keras.ops
    x = ops.cast(x_u8, "float32")
    if eng.norm.bgr:
        x = ops.flip(x, axis=-1)
    x = (x - eng.mean) / eng.std
    if x.shape[1] != eng.input_size or x.shape[2] != eng.input_size:
        # whole-batch bilinear resize, half-pixel centres, no antialias (== torch interpolate bilinear)
        x = ops.image.resize(x, (eng.input_size, eng.input_size), interpolation="bilinear", antialias=False)
    return x


def update(eng: Any, v: Any, g: Any, slots: list, lr: Any, t: Any) -> tuple[Any, list]:
    """One parameter's new value and optimizer slots, as ``torch.optim`` computes them.

    Written out rather than taken from ``keras.optimizers``: Keras's SGD folds the
    learning rate into its velocity, which differs from torch's whenever the rate
    changes, i.e. under every schedule. ``t`` is the 1-based step count (Adam's bias correction).
    """
    ops, o = eng.keras.ops, eng.cfg.optimizer
    g = ops.cast(g, v.dtype)
    if o.name == "sgd":
        if o.weight_decay:
            g = g + o.weight_decay * v  # coupled L2, as torch.optim.SGD
        if o.momentum > 0:
            # torch starts the buffer at g on the first step: m*0 + g is the same
            b = o.momentum * slots[0] + g
            d = g + o.momentum * b if o.nesterov else b
            return v - lr * d, [b]
        return v - lr * g, []
    m, s = slots
    if o.name == "adamw" and o.weight_decay:
        v = v * (1.0 - lr * o.weight_decay)  # decoupled, as torch.optim.AdamW
    elif o.weight_decay:
        g = g + o.weight_decay * v  # coupled L2, as torch.optim.Adam
    b1, b2 = o.betas
    m = b1 * m + (1 - b1) * g
    s = b2 * s + (1 - b2) * ops.square(g)
    bc1 = 1 - ops.power(b1, t)
    bc2 = 1 - ops.power(b2, t)
    denom = ops.sqrt(s) / ops.sqrt(bc2) + o.eps
    return v - (lr / bc1) * m / denom, [m, s]


def _skip_if(ops: Any, finite: Any, new: Any, old: Any) -> Any:
    """Keep the old value when the gradients were not finite (fp16 loss-scale overflow): the step changes nothing."""
    return new if finite is None else ops.where(finite, new, old)


def _loss_and_correct(eng: Any, logits: Any, y: Any) -> tuple[Any, Any]:
    ops = eng.keras.ops
    logits = ops.cast(logits, "float32")
    loss = eng.loss(ops.one_hot(y, eng.num_classes), logits)
    correct = ops.sum(ops.cast(ops.equal(ops.argmax(logits, axis=1), ops.cast(y, "int32")), "int32"))
    return loss, correct


def _eval_outputs(eng: Any, forward: Callable[[Any], Any], x_u8: Any, y: Any) -> tuple[Any, Any]:
    ops = eng.keras.ops
    x = prepare(eng, x_u8)
    logits = ops.cast(forward(x), "float32")
    if eng.cfg.tta_flip:
        logits = 0.5 * (logits + ops.cast(forward(ops.flip(x, axis=2)), "float32"))
    loss_sum = ops.sum(ops.sparse_categorical_crossentropy(y, logits, from_logits=True))
    return ops.softmax(logits, axis=1), loss_sum


def _finite(ops: Any, grads: list) -> Any:
    return ops.all(ops.stack([ops.all(ops.isfinite(g)) for g in grads]))


def _unscaled(eng: Any, grads: list) -> tuple[list, Any]:
    """The gradients without the fp16 loss scale, and whether they are all finite (None: no scaling)."""
    if eng.loss_scale == 1.0:
        return list(grads), None
    grads = [g / eng.loss_scale for g in grads]
    return grads, _finite(eng.keras.ops, grads)


def _apply(eng: Any, tvars: list, grads: list, finite: Any, lr: Any, t: Any) -> None:
    """Assign one update to each Keras variable and its slots (nothing changes where ``finite`` is false)."""
    ops = eng.keras.ops
    for v, g in zip(tvars, grads):
        slots = eng.slots[v.path]
        new_v, new_s = update(eng, v.value, g, [s.value for s in slots], lr, t)
        v.assign(_skip_if(ops, finite, new_v, v.value))
        for s, n in zip(slots, new_s):
            s.assign(_skip_if(ops, finite, n, s.value))


# -- TensorFlow ------------------------------------------------------------------------------
def tensorflow_steps(eng: Any) -> StepFns:
    import tensorflow as tf

    model = eng.model

    def train(x_u8, y, lr, t):  # noqa: ANN001, ANN202
        tvars = model.trainable_variables
        x = prepare(eng, x_u8)
        with tf.GradientTape() as tape:
            loss, correct = _loss_and_correct(eng, model(x, training=True), y)
            scaled = loss * eng.loss_scale
        grads, finite = _unscaled(eng, tape.gradient(scaled, [v.value for v in tvars]))
        _apply(eng, tvars, grads, finite, lr, t)
        return loss, correct, finite

    def evaluate(x_u8, y):  # noqa: ANN001, ANN202
        return _eval_outputs(eng, lambda x: model(x, training=False), x_u8, y)

    jit = bool(eng.compiled)
    return (tf.function(train, jit_compile=jit, reduce_retracing=True),
            tf.function(evaluate, jit_compile=jit, reduce_retracing=True))


def mirrored_steps(eng: Any) -> StepFns:
    """TensorFlow over several local devices (``eng.strategy``, a ``tf.distribute.MirroredStrategy``).

    The global batch is split into equal contiguous shares, one per replica (replica 0 takes the
    first). Each replica computes the gradient of its share's mean loss (``strategy.run``); their
    mean (below: a sum of scaled gradients) is the gradient of the global batch's mean loss, and
    the update is applied once, in
    cross-replica context, to every copy of each variable, so the copies stay identical.
    BatchNorm normalises each share with its own statistics and each replica keeps its own running
    statistics (evaluation and checkpoints read the first replica's). The step is not XLA-compiled
    (the engine turns ``compile`` off). Evaluation runs on the first device.
    """
    import tensorflow as tf

    model, strategy = eng.model, eng.strategy
    n = strategy.num_replicas_in_sync
    total = tf.distribute.ReduceOp.SUM

    def replica(x_u8: Any, y: Any) -> tuple[Any, Any, list]:
        tvars = model.trainable_variables
        x = prepare(eng, x_u8)
        with tf.GradientTape() as tape:
            loss, correct = _loss_and_correct(eng, model(x, training=True), y)
            scaled = loss * eng.loss_scale
        return loss, correct, tape.gradient(scaled, [v.value for v in tvars])

    def step(x_u8: Any, y: Any, lr: Any, t: Any) -> tuple[Any, Any, Any]:
        # under a strategy, a Keras loss divides each replica's mean loss by the number of replicas
        # (keras.src.losses.loss.scale_loss_for_distribution): the sums over the replicas of that loss
        # and of its gradients are the means of the replicas' own
        loss, correct, grads = strategy.run(replica, args=(x_u8, y))
        grads, finite = _unscaled(eng, [strategy.reduce(total, g, axis=None) for g in grads])
        _apply(eng, model.trainable_variables, grads, finite, lr, t)  # cross-replica context: every copy takes it
        return strategy.reduce(total, loss, axis=None), strategy.reduce(total, correct, axis=None), finite

    step = tf.function(step, reduce_retracing=True)

    def shards(a: Any) -> Any:
        parts = np.split(np.asarray(a), n)
        return strategy.experimental_distribute_values_from_function(lambda ctx: parts[ctx.replica_id_in_sync_group])

    def train(x_u8: np.ndarray, y: np.ndarray, lr: Any, t: Any) -> tuple[Any, Any, Any]:
        if len(y) % n:
            raise ValueError(f"a batch of {len(y)} does not split into {n} equal shares")
        return step(shards(x_u8), shards(y), lr, t)

    _, evaluate = tensorflow_steps(eng)
    return train, evaluate


# -- JAX -------------------------------------------------------------------------------------
def jax_steps(eng: Any) -> StepFns:
    import jax

    ops, model = eng.keras.ops, eng.model

    def pure_train(tvals, ntvals, svals, x_u8, y, lr, t):  # noqa: ANN001, ANN202
        x = prepare(eng, x_u8)

        def loss_fn(tv):  # noqa: ANN001, ANN202
            logits, new_nt = model.stateless_call(tv, ntvals, x, training=True)
            loss, correct = _loss_and_correct(eng, logits, y)
            return loss * eng.loss_scale, (loss, correct, new_nt)

        grads, (loss, correct, new_nt) = jax.grad(loss_fn, has_aux=True)(tvals)
        grads, finite = _unscaled(eng, grads)
        new_t, new_s = [], []
        for v, g, slots in zip(tvals, grads, svals):
            nv, ns = update(eng, v, g, slots, lr, t)
            new_t.append(_skip_if(ops, finite, nv, v))
            new_s.append([_skip_if(ops, finite, n, s) for n, s in zip(ns, slots)])
        # BatchNorm statistics and dropout seeds move on even in a skipped step, as in torch and TF
        return new_t, new_nt, new_s, loss, correct, finite

    def pure_eval(tvals, ntvals, x_u8, y):  # noqa: ANN001, ANN202
        return _eval_outputs(eng, lambda x: model.stateless_call(tvals, ntvals, x, training=False)[0], x_u8, y)

    if eng.compiled:
        # the old values are not needed after a step: let XLA reuse their buffers
        pure_train = jax.jit(pure_train, donate_argnums=(0, 1, 2))
        pure_eval = jax.jit(pure_eval)

    dist = eng.distribution  # keras.distribution.DataParallel: the batch is sharded over its devices

    def train(x_u8, y, lr, t):  # noqa: ANN001, ANN202
        if dist is not None:
            x_u8, y = _shard(dist, x_u8), _shard(dist, y)
        tvars, ntvars = model.trainable_variables, model.non_trainable_variables
        slot_vars = [eng.slots[v.path] for v in tvars]
        new_t, new_nt, new_s, loss, correct, finite = pure_train(
            [v.value for v in tvars], [v.value for v in ntvars], [[s.value for s in ss] for ss in slot_vars],
            x_u8, y, lr, t)
        for v, val in zip(tvars, new_t):
            v.assign(val)
        for v, val in zip(ntvars, new_nt):
            v.assign(val)
        for ss, vals in zip(slot_vars, new_s):
            for s, val in zip(ss, vals):
                s.assign(val)
        return loss, correct, finite

    def evaluate(x_u8, y):  # noqa: ANN001, ANN202
        return pure_eval([v.value for v in model.trainable_variables],
                         [v.value for v in model.non_trainable_variables], x_u8, y)

    return train, evaluate


def _shard(dist: Any, a: Any) -> Any:
    """A global batch split over a DataParallel's devices (equal contiguous shares, the first device's first).

    The parameters are replicated, so XLA runs the step SPMD: each device takes the gradient
    of its share, and the mean loss over the global batch sums them across the devices."""
    import jax

    if len(a) % dist.device_mesh.shape[0]:
        raise ValueError(f"a batch of {len(a)} does not split into {dist.device_mesh.shape[0]} equal shares")
    return jax.device_put(a, dist.get_data_layout(a.shape).backend_layout)


# -- torch -----------------------------------------------------------------------------------
def torch_steps(eng: Any) -> StepFns:
    import torch

    ops, model = eng.keras.ops, eng.model

    def forward_loss(x_u8, y):  # noqa: ANN001, ANN202
        return _loss_and_correct(eng, model(prepare(eng, x_u8), training=True), y)

    fwd = torch.compile(forward_loss) if eng.compiled else forward_loss

    def train(x_u8, y, lr, t):  # noqa: ANN001, ANN202
        tvars = model.trainable_variables
        x_u8, y = ops.convert_to_tensor(x_u8), ops.convert_to_tensor(y)
        loss, correct = fwd(x_u8, y)
        grads = torch.autograd.grad(loss * eng.loss_scale, [v.value for v in tvars])
        with torch.no_grad():
            grads, finite = _unscaled(eng, grads)
            _apply(eng, tvars, grads, finite, lr, t)
        return loss.detach(), correct, finite

    def evaluate(x_u8, y):  # noqa: ANN001, ANN202
        with torch.no_grad():
            return _eval_outputs(eng, lambda x: model(x, training=False), ops.convert_to_tensor(x_u8),
                                 ops.convert_to_tensor(y))

    return train, evaluate


BUILDERS: dict[str, Callable[[Any], StepFns]] = {
    "tensorflow": tensorflow_steps, "jax": jax_steps, "torch": torch_steps,
}
