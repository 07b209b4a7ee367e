"""The challenge documents' rows (presets ``seeds``, ``seeds-1``, ``seeds-4``, ``seeds-5``) at a scale a CPU allows.

    python -m benchmarks.seed_rows --out runs/seed-rows
    python -m benchmarks.seed_rows --out runs/seed-rows --presets seeds-5

Every entry keeps its preset's protocol (model, input size, options, optimizer,
schedule, batch, augmentation, precision) and gets less work, set per entry by its
input size in :data:`SCALES`: fewer training images, at most a few epochs, fewer
test images, and a smaller validation split where the protocol has one. The
scaled plans are written to ``OUT/plans/<preset>.yaml`` and run by the ordinary
:func:`alexbench.runner.run` into ``OUT/<preset>/`` on the CIFAR-10 JPEG copy; a
finished entry is kept when the command runs again (``--resume``).

Output: ``OUT/seed_rows.json`` and ``seed_rows.md``, one row per entry: the protocol's
and the run's epochs and images, test accuracy with its 95% Wilson interval, measured
training img/s, and the full-scale training time estimated from it (protocol epochs x
protocol training images / measured img/s), with the machine (CPU, flags, precision),
the load average and the date. Pretrained entries need the ImageNet files
(``--weights-dir``); without them they are listed as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

from benchmarks.harness import REPO

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
PRESETS = ("seeds", "seeds-1", "seeds-4", "seeds-5")
TRAIN_IMAGES = 50_000  # CIFAR-10's training split, before a protocol's validation share
# per entry, by (framework, input size >= 200): train images, max epochs, test images, validation images
# (the last only where the protocol has a validation split)
SCALES = {
    ("torch", True): (1000, 1, 500, 500),
    ("keras", True): (500, 1, 500, 500),
    ("torch", False): (2000, 10, 1000, 1000),
    ("keras", False): (2000, 10, 1000, 1000),
}


def _scaled(entry: dict, defaults: dict) -> tuple[dict, dict]:
    """(the entry with its work scaled, {"epochs", "train", "val_fraction"} of its protocol)."""
    merged = {**defaults, **entry}
    big = int(merged.get("input_size") or 0) >= 200
    n_train, max_epochs, n_test, n_val = SCALES[(merged["framework"], big)]
    protocol = {"epochs": int(merged.get("epochs", 1)), "val_fraction": float(merged.get("val_fraction", 0.1))}
    protocol["train"] = int(TRAIN_IMAGES * (1 - protocol["val_fraction"]))
    out = dict(entry, epochs=min(protocol["epochs"], max_epochs), max_train_images=n_train, max_test_images=n_test)
    if protocol["val_fraction"] > 0:
        out["val_fraction"] = n_val / TRAIN_IMAGES
    if merged.get("finetune", {}).get("freeze_epochs"):
        out["finetune"] = {**merged["finetune"], "freeze_epochs": min(merged["finetune"]["freeze_epochs"],
                                                                      out["epochs"])}
    return out, protocol


def write_plans(out: Path, presets: tuple[str, ...]) -> dict[str, tuple[Path, dict]]:
    from alexbench.config import load_yaml
    from alexbench.runner import preset_path

    plans = {}
    (out / "plans").mkdir(parents=True, exist_ok=True)
    for name in presets:
        plan = load_yaml(preset_path(name))
        protocols = {}
        entries = []
        for raw in plan["entries"]:
            scaled, protocol = _scaled(raw, plan.get("defaults") or {})
            entries.append(scaled)
            protocols[(raw["model"], raw["framework"], bool(raw.get("pretrained")))] = protocol
        plan["entries"] = entries
        plan["description"] = f"{plan.get('description', name)} [scaled by benchmarks.seed_rows]"
        path = out / "plans" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(plan, sort_keys=False))
        plans[name] = (path, protocols)
    return plans


def _row(preset: str, slug: str, st: dict, run_dir: Path, protocol: dict) -> dict:
    row = {"preset": preset, "entry": slug, "status": st.get("status"), "reason": st.get("reason"),
           "protocol_epochs": protocol["epochs"], "protocol_train_images": protocol["train"]}
    metrics_path = run_dir / "metrics.json"
    if st.get("status") != "finished" or not metrics_path.exists():
        return row
    m = json.loads(metrics_path.read_text())
    ips = m.get("images_per_second")
    row.update({
        "input_size": m["dataset"].get("input_size"), "precision": m["system"].get("precision"),
        "epochs": len(m["epochs"]), "train_images": m["dataset"]["train"], "val_images": m["dataset"]["val"],
        "test_images": m["dataset"]["test"], "accuracy": m["test"]["accuracy"],
        "accuracy_ci95": m["test"]["accuracy_ci95"], "train_seconds": m["train_seconds"],
        "images_per_second": ips, "eval_seconds": m.get("eval_seconds"),
        "full_scale_train_hours": (protocol["epochs"] * protocol["train"] / ips / 3600) if ips else None,
    })
    return row


def _markdown(rows: list[dict], machine: dict) -> str:
    lines = [f"Machine: {machine['cpu']}, {machine['cores']} cores, flags {machine['flags']}; load average "
             f"{machine['load_start']} at the start, {machine['load_end']} at the end; {machine['date']}.", "",
             "| preset | entry | input | epochs (protocol) | train images (protocol) | test images | test accuracy "
             "(95% CI) | img/s | full-scale train time (est.) |",
             "|---|---|--:|---|---|--:|---|--:|--:|"]
    for r in rows:
        if r.get("accuracy") is None:
            lines.append(f"| {r['preset']} | {r['entry']} | | {r['protocol_epochs']} | {r['protocol_train_images']:,} "
                         f"| | {r['status']}: {(r.get('reason') or '')[:80]} | | |")
            continue
        lo, hi = r["accuracy_ci95"]
        lines.append(
            f"| {r['preset']} | {r['entry']} | {r['input_size']} | {r['epochs']} ({r['protocol_epochs']}) | "
            f"{r['train_images']:,} ({r['protocol_train_images']:,}) | {r['test_images']:,} | "
            f"{r['accuracy']:.1%} ({lo:.1%}-{hi:.1%}) | {r['images_per_second']:.1f} | "
            f"{r['full_scale_train_hours']:.1f} h |")
    return "\n".join(lines) + "\n"


def _machine() -> dict:
    from benchmarks.run import machine_info

    info = machine_info()  # the CPU and its flags, as the speed suite records them
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if info["cpu_flags"].get(f)]
    return {"cpu": info["cpu"], "cores": os.cpu_count(), "flags": " ".join(shown) or "none of avx2/avx512/bf16",
            "date": time.strftime("%Y-%m-%d"), "load_start": round(os.getloadavg()[0], 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.seed_rows", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    p.add_argument("--weights-dir", default=None)
    args = p.parse_args(argv)
    from alexbench.runner import run

    out = Path(args.out)
    machine = _machine()
    rows = []
    for name, (plan, protocols) in write_plans(out, tuple(args.presets)).items():
        run_out = out / name
        status = run(str(plan), str(run_out), data=args.data, weights_dir=args.weights_dir,
                     resume=(run_out / "run.json").exists())
        for slug, st in status["entries"].items():
            model, framework, kind = slug.split("-")[:3]
            rows.append(_row(name, slug, st, run_out / slug, protocols[(model, framework, kind == "pretrained")]))
    machine["load_end"] = round(os.getloadavg()[0], 1)
    (out / "seed_rows.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    md = _markdown(rows, machine)
    (out / "seed_rows.md").write_text(md)
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
