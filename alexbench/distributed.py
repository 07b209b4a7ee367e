"""Data-parallel training over several processes: PyTorch DistributedDataParallel.

A run is data-parallel when it starts under ``torchrun`` (or ``alexbench train --nproc N``,
which starts torchrun itself): torchrun sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and
``LOCAL_WORLD_SIZE`` for each process, and :func:`setup` joins the process group (gloo on
CPU, nccl on CUDA). What stays true with N processes:

- One data stream. Every rank computes the same seeded epoch plan
  (:class:`~alexbench.data.stream.BatchStream`) and takes its contiguous share of each
  global batch: ``batch_size`` stays the global batch and must divide by N, and every
  rank runs the same number of steps. DDP averages the gradients of the ranks' mean
  losses, which is the gradient of the global batch's mean loss: without BatchNorm and
  dropout, one N-process step is one 1-process step up to float rounding
  (tests/test_distributed.py measures how close).
- BatchNorm normalises each rank's share with that share's own statistics (batch
  statistics over ``batch_size / N`` images, as "ghost batch" BatchNorm), and DDP copies
  rank 0's running statistics to the others before each forward pass. ``sync_batchnorm``
  (statistics over the global batch) needs CUDA and nccl; on gloo it is refused.
- One writer. Rank 0 alone writes the run folder and its checkpoints; on ``--resume`` it
  reads them and sends config, progress, weights and optimizer state to the other ranks.
- Evaluation is split over the ranks and gathered, so every rank sees the same
  validation accuracy and takes the same early-stopping and best-checkpoint decisions.
- Threads: ``threads`` if set, else the cores divided among the processes on this host.

Multi-worker Keras is not offered: Keras 3 on the TensorFlow backend does not train
with ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585).
"""

from __future__ import annotations

import atexit
import gc
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from alexbench.errors import UserError

__all__ = ["Dist", "KERAS_MULTIWORKER", "from_env", "setup", "teardown", "current", "share", "any_flag",
           "reduce_step", "broadcast_engine_state", "load_on_main", "predict"]

KERAS_MULTIWORKER = ("Keras trains in one process only: multi-worker training on Keras 3 with the TensorFlow "
                     "backend is broken upstream (keras-team/keras#20585); use framework torch for "
                     "data-parallel training")


@dataclass(frozen=True)
class Dist:
    """Where this process stands in a data-parallel run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None  # "gloo" | "nccl" once the process group is up

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def describe(self, batch_size: int, threads: int) -> str:
        """The run's log-line note on its processes ("" when not distributed)."""
        if not self.active:
            return ""
        return (f"; {self.world_size} processes ({self.backend}), {batch_size // self.world_size} images each per "
                f"step, {threads} thread{'s' if threads > 1 else ''} each")

    def threads(self) -> int | None:
        """Default threads of each process: this host's cores shared among its processes (None: not distributed)."""
        if not self.active:
            return None
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // self.local_world_size)


SINGLE = Dist()
_current: Dist = SINGLE


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}: expected an integer (got {raw!r})") from None


def from_env() -> Dist:
    """The rank and world torchrun put in the environment (rank 0 of 1 outside torchrun)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"environment: RANK={rank} does not fit WORLD_SIZE={world}")
    local_world = _env_int("LOCAL_WORLD_SIZE", world)
    return Dist(rank, world, _env_int("LOCAL_RANK", rank % max(local_world, 1)), max(local_world, 1))


def current() -> Dist:
    """The data-parallel context of this process (set by :func:`setup`)."""
    return _current


def wants_cuda(device: str) -> bool:
    """Whether a torch ``device`` setting ends on CUDA here (``auto`` picks CUDA where torch sees it)."""
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    import torch

    return torch.cuda.is_available()


def check_config(cfg: Any, world_size: int, cuda: bool) -> None:
    """Refuse what N processes cannot run, before any process group or data exists."""
    if world_size <= 1:
        return
    if cfg.framework != "torch":
        raise UserError(f"--nproc {world_size}: {KERAS_MULTIWORKER}")
    if cfg.batch_size % world_size:
        raise UserError(f"batch_size: {cfg.batch_size} is the global batch and must divide by the {world_size} "
                        f"processes (each takes an equal share)")
    if cfg.device.startswith("cuda:"):
        raise UserError(f"device: {cfg.device!r} names one GPU; with {world_size} processes each takes the GPU of "
                        "its LOCAL_RANK: use 'cuda' or 'auto'")
    if cfg.sync_batchnorm and not cuda:
        raise UserError("sync_batchnorm: SyncBatchNorm needs CUDA (nccl); on CPU (gloo) each process normalises "
                        "with the statistics of its own share of the batch. Set sync_batchnorm: false")


def setup(cfg: Any) -> Dist:
    """Join the process group torchrun describes (nothing to do outside torchrun); returns this process's place.

    CUDA ranks use nccl and the GPU of their LOCAL_RANK; CPU ranks use gloo.
    """
    global _current
    env = from_env()
    if not env.active:
        _current = SINGLE
        return SINGLE
    from alexbench.frameworks import import_torch

    # cfg None: a resumed run's stored config, checked once rank 0 has read it
    torch = import_torch(getattr(cfg, "threads", None) or env.threads())
    cuda = wants_cuda(getattr(cfg, "device", "auto"))
    if cfg is not None:
        check_config(cfg, env.world_size, cuda)
    import torch.distributed as dist

    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(env.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend)
        # DDP's reducer keeps the process group alive in reference cycles; collected at interpreter
        # finalization, gloo's worker threads abort the process ("terminate called without an active
        # exception", exit -6) after a run that finished. Collect them while the interpreter is whole.
        atexit.register(gc.collect)
    elif dist.get_backend() != backend:
        raise UserError(f"device: a {dist.get_backend()} process group is already up; this run needs {backend}")
    _current = Dist(env.rank, env.world_size, env.local_rank, env.local_world_size, backend)
    return _current


def teardown(finished: bool = False) -> None:
    """Leave the process group that :func:`setup` joined.

    ``finished``: every rank got here after its last collective, so they wait for each other first and no
    rank closes its connections while another still talks to it (not on an error: the others may be gone)."""
    global _current
    if _current.active:
        import torch.distributed as dist

        if dist.is_initialized():
            if finished:
                dist.barrier()
            gc.collect()  # drop the DDP reducers (and their hold on the process group) before it goes
            dist.destroy_process_group()
    _current = SINGLE


# -- collectives used by the loop (identities when not distributed) ------------------------------
def share(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (any picklable object)."""
    if not _current.active:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _device() -> str:
    return f"cuda:{_current.local_rank}" if _current.backend == "nccl" else "cpu"


def any_flag(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on any (Ctrl-C reaches the ranks at different steps)."""
    if not _current.active:
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def reduce_step(loss: Any, correct: Any) -> tuple[float, int]:
    """The global batch's mean loss and number correct from each rank's (equal shares: mean of means)."""
    import torch
    import torch.distributed as dist

    t = torch.stack([loss.detach().float().reshape(()), correct.detach().float().reshape(())])
    dist.all_reduce(t)
    return float(t[0]) / _current.world_size, int(round(float(t[1])))


def broadcast_engine_state(engine: Any, optimizer: bool = True) -> None:
    """Copy rank 0's weights and buffers (and optimizer state) to every rank: after rank 0 alone read a checkpoint."""
    if not _current.active:
        return
    import torch.distributed as dist

    for tensor in engine.model.state_dict().values():
        dist.broadcast(tensor, src=0)
    if optimizer:
        state = share(engine.optimizer.state_dict() if _current.is_main else None)
        if not _current.is_main:
            engine.optimizer.load_state_dict(state)


def load_on_main(load: Any, engine: Any, optimizer: bool = True) -> Any:
    """Rank 0 runs ``load()`` (which reads a checkpoint into ``engine``); every rank then holds rank 0's
    weights (and optimizer state) and gets what ``load()`` returned."""
    result = load() if _current.is_main else None
    broadcast_engine_state(engine, optimizer)
    return share(result)


def predict(engine: Any, x: np.ndarray, y: np.ndarray, batch_size: int, hooks: Any) -> tuple[np.ndarray, float]:
    """``engine.predict`` over ``x, y`` in batches (``hooks`` watch them): probabilities N×C and mean loss.

    In a data-parallel run each rank predicts a contiguous share and every rank gets all of it.
    """
    from alexbench.data.stream import eval_batches
    from alexbench.hooks import observe_eval

    if not _current.active:
        return engine.predict(observe_eval(eval_batches(x, y, batch_size), hooks))
    import torch.distributed as dist

    bounds = np.linspace(0, len(y), _current.world_size + 1).round().astype(int)
    lo, hi = bounds[_current.rank], bounds[_current.rank + 1]
    probs, loss = engine.predict(observe_eval(eval_batches(x[lo:hi], y[lo:hi], batch_size), hooks))
    parts: list = [None] * _current.world_size
    dist.all_gather_object(parts, (probs, loss * (hi - lo)))
    all_probs = np.concatenate([p for p, _ in parts]) if len(y) else probs
    return all_probs, sum(s for _, s in parts) / max(len(y), 1)
