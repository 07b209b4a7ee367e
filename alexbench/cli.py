"""Command-line entry point. It only parses flags and calls library functions.

Exit codes: 0 success, 2 bad input or usage (one line on stderr, no traceback unless
``--debug``), 1 internal error.

Everything alexbench writes to stderr goes through the ``alexbench`` logger
(:mod:`alexbench.log`), configured here once: ``--quiet`` keeps warnings and errors,
``--verbose`` adds debug lines. Both are accepted before or after the command, and so
is ``--debug``, which adds the traceback to an error without changing the exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import traceback
from typing import Callable, Sequence

from alexbench import __version__
from alexbench.errors import UserError
from alexbench.log import NORMAL, QUIET, VERBOSE, configure, get_logger

# command name -> "module:function"; imported lazily so `alexbench --help` stays fast.
COMMANDS: dict[str, str] = {
    "data": "alexbench.data.commands:data_command",
    "models": "alexbench.models.commands:models_command",
    "parity": "alexbench.models.commands:parity_command",
    "train": "alexbench.train_cli:train_command",
    "eval": "alexbench.evaluate:eval_command",
    "run": "alexbench.runner:run_command",
    "compare": "alexbench.report.commands:compare_command",
    "report": "alexbench.report.commands:report_command",
    "export": "alexbench.export:export_command",
    "predict": "alexbench.predict:predict_command",
}
FORCE_HELP = "replace existing output files that alexbench did not write (refused by default)"
DEBUG_HELP = "add the full traceback to an error (the exit code stays the same) and show TensorFlow's native logs"


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [lo, hi] (a bad value is a one-line usage error, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number (got {text[:40]!r})") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be in [{lo}, {hi}] (got {value})")
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep its message to one line."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_verbosity(p: argparse.ArgumentParser, default: object) -> None:
    """``--quiet`` / ``--verbose``: on the main parser (default NORMAL) and on every command
    (default SUPPRESS, so a flag given before the command is not reset by the command's parser)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=QUIET, default=default,
                   help="print only warnings and errors on stderr (no progress lines or bars)")
    g.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=VERBOSE, default=default,
                   help="also print debug lines on stderr")


def _preset_names() -> list[str]:
    """The presets shipped in ``alexbench/presets`` (read from the package, so the list cannot drift)."""
    from importlib import resources

    return sorted(p.name[:-5] for p in (resources.files("alexbench") / "presets").iterdir() if p.name.endswith(".yaml"))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="alexbench", description="The AlexNet challenge, PyTorch vs Keras on CIFAR-10, in one command.")
    p.add_argument("--version", action="version", version=f"alexbench {__version__}")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    _add_verbosity(p, NORMAL)
    common = _Parser(add_help=False)
    _add_verbosity(common, argparse.SUPPRESS)
    # SUPPRESS: a --debug given before the command is not reset by the command's parser
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("data", parents=[common], help="locate or fetch, verify and cache a dataset; print counts")
    d.add_argument("source", nargs="?", default=None,
                   help="official archive/dir, image folder or tarball; default: auto-detect, then the embedded sample")
    d.add_argument("--verify", action="store_true", help="re-hash the source and check every image decodes")
    d.add_argument("--download", action="store_true", help="download official CIFAR-10 if no source is found")

    sub.add_parser("models", parents=[common], help="list registered models with params and FLOPs")

    pa = sub.add_parser("parity", parents=[common],
                        help="port weights torch<->keras and print the max abs logit difference")
    pa.add_argument("--model", required=True, help="a registered model (see `alexbench models`)")
    pa.add_argument("--num-classes", type=_int_in(2, 100_000), default=10,
                    help="classes of the head that is built (default: 10)")
    pa.add_argument("--batch", type=_int_in(1, 1024), default=4, help="random images compared (default: 4)")
    pa.add_argument("--seed", type=_int_in(0, 2**32 - 1), default=0,
                    help="seed of the weights and the images (default: 0)")
    pa.add_argument("--keras-backends", default=None, metavar="B,B,...",
                    help="compare Keras on these backends (tensorflow,jax,torch), each in its own process, "
                         "with each other and with native PyTorch")

    def add_data_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data", default=None, help="dataset source (see `alexbench data`)")
        sp.add_argument("--config", default=None, help="YAML config file")
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key (repeatable), e.g. --set optimizer.lr=0.05")

    t = sub.add_parser("train", parents=[common], help="train one model in one framework into a run folder")
    t.add_argument("--model", required=True)
    t.add_argument("--framework", required=True, choices=["torch", "keras"])
    t.add_argument("--pretrained", default=None, help="'imagenet' or a weights path")
    t.add_argument("--weights", default=None, help="offline weights file for --pretrained imagenet")
    add_data_opts(t)
    t.add_argument("--out", required=True)
    t.add_argument("--resume", action="store_true")
    t.add_argument("--force", action="store_true", help=FORCE_HELP)
    t.add_argument("--nproc", type=_positive_int, default=None, metavar="N",
                   help="data-parallel training in N local processes (PyTorch DDP through torchrun; "
                        "batch_size stays the global batch)")

    e = sub.add_parser("eval", parents=[common], help="evaluate a run folder or checkpoint")
    e.add_argument("target", metavar="RUN_OR_CHECKPOINT")
    e.add_argument("--data", default=None)
    e.add_argument("--out", default=None, help="write metrics JSON here (default: print only)")
    e.add_argument("--force", action="store_true", help=FORCE_HELP)

    r = sub.add_parser("run", parents=[common], help="the whole comparison: a matrix of train runs, then the report")
    r.add_argument("--preset", default="quick", metavar="NAME|FILE.yaml",
                   help=f"a shipped preset ({', '.join(_preset_names())}; default: quick) or a preset file")
    add_data_opts(r)
    r.add_argument("--weights-dir", default=None, help="folder with offline pretrained weight files")
    r.add_argument("--seeds", default=None, metavar="N|a,b,...",
                   help="run every entry with seeds 0..N-1 (or the listed ones) instead of the preset's")
    r.add_argument("--out", required=True)
    r.add_argument("--resume", action="store_true")
    r.add_argument("--force", action="store_true", help=FORCE_HELP)
    r.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: entries one after another in this process; ray: each entry a Ray task "
                        "(pip install 'alexbench[ray]')")
    r.add_argument("--address", default=None, metavar="ADDR",
                   help="with --executor ray: the Ray cluster to join (default: start a local one)")

    c = sub.add_parser("compare", parents=[common], help="comparison table and pairwise statistics")
    c.add_argument("runs", nargs="+", metavar="RUN")

    rp = sub.add_parser("report", parents=[common], help="self-contained HTML report plus a Markdown twin")
    rp.add_argument("runs", nargs="+", metavar="RUN")
    rp.add_argument("-o", "--output", required=True, metavar="FILE.html")
    rp.add_argument("--force", action="store_true", help=FORCE_HELP)

    x = sub.add_parser("export", parents=[common], help="export a trained model (ONNX, checked with onnxruntime)")
    x.add_argument("target", metavar="RUN_OR_CHECKPOINT")
    x.add_argument("--format", default="onnx", choices=["onnx", "torchscript", "keras", "savedmodel"])
    x.add_argument("--out", default=None, help="output file (default: RUN/export/<checkpoint>.<format>)")
    x.add_argument("--force", action="store_true", help=FORCE_HELP)

    pr = sub.add_parser("predict", parents=[common], help="top-k classes for your own images")
    pr.add_argument("target", metavar="RUN_OR_CHECKPOINT_OR_ONNX")
    pr.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    pr.add_argument("--top", type=int, default=5, metavar="K", help="classes shown per image (default 5)")
    pr.add_argument("--json", action="store_true",
                    help='print a JSON list: {"image": PATH, "top": [{"class": NAME, "probability": P}, ...]}')
    return p


def _resolve(spec: str) -> Callable[[argparse.Namespace], int | None]:
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure(args.verbosity)
    log = get_logger()
    if not args.command:
        parser.print_help()
        return 2
    if args.debug or args.verbosity == VERBOSE:
        from alexbench.frameworks import NATIVE_LOGS_ENV

        os.environ[NATIVE_LOGS_ENV] = "1"  # TensorFlow's native start-up lines too (child processes inherit it)
    try:
        rc = _resolve(COMMANDS[args.command])(args)
        return int(rc or 0)
    except UserError as exc:
        if args.debug:
            traceback.print_exc()
        log.error(f"alexbench {args.command}: error: {exc}")
        return 2
    except KeyboardInterrupt:
        log.error("alexbench: interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - internal error: one line, plus the traceback with --debug
        if args.debug:
            traceback.print_exc()
            log.error(f"alexbench {args.command}: internal error: {type(exc).__name__}: {exc}")
        else:
            log.error(f"alexbench {args.command}: internal error: {type(exc).__name__}: {exc} (re-run with --debug)")
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
