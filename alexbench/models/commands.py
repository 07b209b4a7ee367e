"""``alexbench models`` and ``alexbench parity``: thin wrappers that print library results."""

from __future__ import annotations

import argparse
from typing import Any


def _table(rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def models_rows(num_classes: int = 10) -> list[dict[str, Any]]:
    """One dict per registered model: params per framework and FLOPs per framework.

    The torch model is built on PyTorch's ``meta`` device (shapes without weights: the same
    counts, without allocating or initialising them); the Keras model is built as usual."""
    from alexbench.models import MODELS, accepted_sizes, count_params
    from alexbench.models.flops import counting_model, model_flops
    from alexbench.models.geometry import describe_sizes

    rows = []
    for name, spec in MODELS.items():
        params, flops = {}, {}
        for framework in spec.frameworks:
            model = counting_model(name, framework, num_classes)
            params[framework] = count_params(model, framework)
            flops[framework] = model_flops(model, framework, spec.input_size)
            del model
        rows.append({"name": name, "frameworks": spec.frameworks, "input_size": spec.input_size,
                     "accepts": describe_sizes(accepted_sizes(name)),
                     "params": params, "flops": flops, "description": spec.description})
    return rows


def models_command(args: argparse.Namespace) -> int:
    """Print every registered model: frameworks, input size, params and FLOPs, from each framework's built model."""
    rows = models_rows(10)
    header = ["model", "frameworks", "input", "accepts", "torch trainable", "torch total", "keras trainable",
              "keras total", "FLOPs/image", "GFLOPs"]
    table = [header]
    mismatches = []
    for r in rows:
        p, f = r["params"], r["flops"]
        if len(set(p.values())) > 1 or len(set(f.values())) > 1:
            mismatches.append(r["name"])
        flops = " / ".join(f"{v:,}" for v in dict.fromkeys(f.values()))
        table.append([r["name"], ",".join(r["frameworks"]), f"{r['input_size']}px", r["accepts"],
                      f"{p['torch'][0]:,}", f"{p['torch'][1]:,}", f"{p['keras'][0]:,}", f"{p['keras'][1]:,}",
                      flops, f"{f['torch'] / 1e9:.3f}"])
    print("Registered models (10 classes; params counted in each framework's built model; total includes "
          "BatchNorm running statistics;")
    print("FLOPs per forward image = 2 x conv and dense multiply-adds, equal in both frameworks):")
    print(_table(table, right={4, 5, 6, 7, 8, 9}))
    print()
    for r in rows:
        print(f"  {r['name']:<14} {r['description']}")
    if mismatches:
        print(f"MISMATCH between frameworks for: {', '.join(mismatches)}")
        return 1
    return 0


def _print_result(r: dict[str, Any]) -> None:
    opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
    print(f"parity {r['model']}{f' ({opts})' if opts else ''}: {r['num_classes']} classes, batch {r['batch']}, "
          f"seed {r['seed']}, fp32, eval mode")
    print(f"  torch -> keras  max |logit diff| = {r['torch_to_keras']:.3e}")
    print(f"  keras -> torch  max |logit diff| = {r['keras_to_torch']:.3e}   (max |logit| = {r['max_abs_logit']:.3e}, "
          f"relative {r['relative']:.1e})")
    pt, pk = r["params"]["torch"], r["params"]["keras"]
    print(f"  params trainable/total  torch {pt[0]:,}/{pt[1]:,}  keras {pk[0]:,}/{pk[1]:,}  "
          f"{'equal' if pt == pk else 'DIFFERENT'}")
    ft, fk = r["flops"]["torch"], r["flops"]["keras"]
    print(f"  FLOPs/image  torch {ft:,}  keras {fk:,}  {'equal' if ft == fk else 'DIFFERENT'}")
    print(f"  {'PASS' if r['passed'] else 'FAIL'} (tolerance {r['tol']:g})")


_BACKEND_NAMES = {"tensorflow": "Keras (TensorFlow)", "jax": "Keras (JAX)", "torch": "Keras (torch)"}


def _print_backends_result(r: dict[str, Any]) -> None:
    opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
    print(f"parity {r['model']}{f' ({opts})' if opts else ''} across Keras backends: {r['num_classes']} classes, "
          f"batch {r['batch']}, seed {r['seed']}, fp32, eval mode (max |logit| = {r['max_abs_logit']:.3e})")
    for b in r["backends"]:
        own = r["own"][b]
        print(f"  {_BACKEND_NAMES[b]:<19} vs PyTorch  max |logit diff| = {r['vs_torch'][b]:.3e}   "
              f"({own['source']}; in this backend torch->keras {own['check']['torch_to_keras']:.1e}, "
              f"keras->torch {own['check']['keras_to_torch']:.1e})")
    for pair, d in r["between"].items():
        a, b = pair.split("/")
        print(f"  {_BACKEND_NAMES[a]} vs {_BACKEND_NAMES[b]}  max |logit diff| = {d:.3e}")
    print(f"  {'PASS' if r['passed'] else 'FAIL'} (tolerance {r['tol']:g})")


def parity_command(args: argparse.Namespace) -> int:
    """Run the parity check for ``args.model`` (every structural variant, e.g. each norm); 0 on pass, 1 on fail.

    With ``--keras-backends``, across those Keras backends (each in a child process) and native PyTorch.
    """
    from alexbench.models import get_spec
    from alexbench.models.parity import check, check_backends

    spec = get_spec(args.model)
    if args.keras_backends:
        results = check_backends(args.model, [b.strip() for b in args.keras_backends.split(",") if b.strip()],
                                 num_classes=args.num_classes, batch=args.batch, seed=args.seed)
        for r in results:
            _print_backends_result(r)
        return 0 if all(r["passed"] for r in results) else 1
    ok = True
    for variant in spec.parity_variants:
        result = check(args.model, num_classes=args.num_classes, batch=args.batch, seed=args.seed, **variant)
        _print_result(result)
        ok = ok and result["passed"]
    return 0 if ok else 1
