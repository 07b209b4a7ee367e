"""``alexbench train --nproc N``: start N data-parallel processes through torchrun.

This is torchrun itself (``torch.distributed.run``, standalone rendezvous on this host),
started on the same ``alexbench train`` command without ``--nproc``; each process then
finds its rank in the environment (:mod:`alexbench.distributed`). What can be checked
before any process starts is checked here (config, data, folder), so a bad input gives
one line and exit code 2 instead of N tracebacks.
"""

from __future__ import annotations

import logging
import os

from alexbench import distributed
from alexbench.config import TrainConfig
from alexbench.errors import UserError
from alexbench.log import QUIET, VERBOSE, get_logger

__all__ = ["launch_train", "worker_argv"]

log = get_logger(__name__)


def worker_argv(args) -> list[str]:  # noqa: ANN001 - the train command's argparse namespace
    """The ``alexbench train`` command line each process runs: the same flags, without ``--nproc``."""
    argv = ["--debug"] if getattr(args, "debug", False) else []
    argv += ["train", "--model", args.model, "--framework", args.framework, "--out", str(args.out)]
    for flag, value in (("--pretrained", args.pretrained), ("--weights", args.weights), ("--data", args.data),
                        ("--config", args.config)):
        if value is not None:
            argv += [flag, str(value)]
    for item in args.overrides:
        argv += ["--set", item]
    argv += [flag for flag, on in (("--resume", args.resume), ("--force", getattr(args, "force", False))) if on]
    verbosity = getattr(args, "verbosity", None)
    argv += ["--quiet"] if verbosity == QUIET else ["--verbose"] if verbosity == VERBOSE else []
    return argv


def launch_train(args, cfg: TrainConfig) -> int:  # noqa: ANN001
    """Run ``alexbench train`` in ``args.nproc`` processes under torchrun; returns the exit code.

    ``cfg`` is the config the processes will run (on ``--resume``, the run's stored one)."""
    n = args.nproc
    if distributed.from_env().active:
        raise UserError(f"--nproc {n}: this process already runs under torchrun (WORLD_SIZE="
                        f"{os.environ.get('WORLD_SIZE')}); drop --nproc")
    distributed.check_config(cfg, n, distributed.wants_cuda(cfg.device))
    # decode (and cache) the data once here, so the N processes read the cache instead of racing
    # to decode it, and a bad source is reported once
    from alexbench.data import load_dataset

    load_dataset(args.data)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["OMP_NUM_THREADS"] = str(cfg.threads or max(1, cores // n))  # torchrun would set 1
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if not getattr(args, "debug", False):  # torchrun's own failure report repeats what the ranks said
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    targs = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={n}", "--module", "alexbench",
                                          *worker_argv(args)])
    log.debug("torchrun %s", " ".join(["--standalone", f"--nproc-per-node={n}", "-m", "alexbench",
                                       *worker_argv(args)]))
    try:
        run(targs)
    except ChildFailedError as exc:
        codes = sorted({f.exitcode for f in exc.failures.values()})
        if 2 in codes:  # a rank refused its input and said why in one line
            return 2
        if 130 in codes:
            raise KeyboardInterrupt from None
        first = exc.get_first_failure()[1]
        raise RuntimeError(f"rank {first.global_rank} of {n} failed with exit code {first.exitcode}") from None
    return 0
