"""A table of hostile and malformed inputs, each through the command a user would run.

Every row asserts: exit code 2, exactly one error line on stderr that names the file or field
and the problem (no traceback), and nothing written outside the row's target. The bomb rows
also run in a subprocess and assert its peak memory (ru_maxrss) under a stated bound.
``test_hostile.py`` holds the payload rows (pickles, tar escapes, YAML tags); this table holds
the rest: tampered run folders, malformed checkpoints, resumes of another run, bounded
parsing of configs and data.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from conftest import synthetic_dataset, tiny_config
from PIL import Image

from alexbench.cli import main
from alexbench.train import train

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    """One hostile input: ``make(t, runs)`` builds it under ``t`` and returns the argv."""

    kind: str
    make: Callable[[Path, dict], list[str]]
    needles: tuple[str, ...]
    target: str = "out"  # the folder under t the command may write into
    max_rss_mib: int | None = None  # bomb rows: peak memory of the command in a subprocess


ROWS: list[Row] = []


def row(kind: str, *needles: str, target: str = "out", max_rss_mib: int | None = None):
    def deco(make: Callable[[Path, dict], list[str]]) -> Callable[[Path, dict], list[str]]:
        ROWS.append(Row(kind, make, needles, target, max_rss_mib))
        return make
    return deco


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished tiny torch run, read-only: rows copy it before they tamper."""
    base = tmp_path_factory.mktemp("runs")
    train(tiny_config("torch", epochs=1), base / "torch", data=synthetic_dataset(n_train_per_class=6,
                                                                                  n_test_per_class=2))
    return {"torch": base / "torch"}


def tampered(t: Path, runs: dict, change: Callable[[Path], None]) -> Path:
    run = t / "out" / "run"
    shutil.copytree(runs["torch"], run)
    change(run)
    return run


def edit_metrics(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        m = json.loads((run / "metrics.json").read_text())
        edit(m)
        (run / "metrics.json").write_text(json.dumps(m))
    return change


def edit_predictions(**arrays: np.ndarray) -> Callable[[Path], None]:
    def change(run: Path) -> None:
        with np.load(run / "predictions.npz") as z:
            data = {k: z[k] for k in z.files}
        data.update({k: (v(data) if callable(v) else v) for k, v in arrays.items()})
        np.savez(run / "predictions.npz", **data)
    return change


def report_argv(run: Path, t: Path) -> list[str]:
    return ["report", str(run), "-o", str(t / "out" / "r.html")]


# ----------------------------------------------------------------------------- tampered run folders

def _metrics_row(kind: str, edit: Callable[[dict], None], *needles: str, command: str = "compare") -> None:
    def make(t: Path, runs: dict) -> list[str]:
        run = tampered(t, runs, edit_metrics(edit))
        return ["compare", str(run)] if command == "compare" else report_argv(run, t)
    ROWS.append(Row(kind, make, ("metrics.json", *needles)))


_metrics_row("metrics: accuracy is text", lambda m: m["test"].update(accuracy="high"),
             "test.accuracy: expected a number (got 'high')")
_metrics_row("metrics: accuracy above 1", lambda m: m["test"].update(accuracy=5), "test.accuracy",
             "in [0, 1] (got 5)", command="report")
_metrics_row("metrics: confidence interval of one value", lambda m: m["test"].update(accuracy_ci95=[0.1]),
             "test.accuracy_ci95: expected [lo, hi]")
_metrics_row("metrics: train time is text", lambda m: m.update(train_seconds="fast"),
             "train_seconds: expected a number (got 'fast')", command="report")
_metrics_row("metrics: negative train time", lambda m: m.update(train_seconds=-5), "train_seconds",
             "a number >= 0 (got -5)")
_metrics_row("metrics: confusion matrix of the wrong shape",
             lambda m: m["test"].update(confusion_matrix=[[1, 2], [3, 4], [5, 6]]), "test.confusion_matrix",
             "10x10 counts", command="report")
_metrics_row("metrics: confusion matrix of text", lambda m: m["test"].update(confusion_matrix=[["a"] * 10] * 10),
             "test.confusion_matrix")
_metrics_row("metrics: per-class accuracy is a list", lambda m: m["test"].update(per_class_accuracy=[1, 2]),
             "test.per_class_accuracy: expected a mapping", command="report")
_metrics_row("metrics: epochs is text", lambda m: m.update(epochs="x"), "epochs: expected a list")
_metrics_row("metrics: parameter count is text", lambda m: m.update(params_total="many"),
             "params_total: expected a whole number", command="report")
_metrics_row("metrics: class list is a number", lambda m: m["dataset"].update(classes=5),
             "dataset.classes: expected a list of class names")
_metrics_row("metrics: system is a list", lambda m: m.update(system=[1]), "system: expected a mapping",
             command="report")
_metrics_row("metrics: model name is a number", lambda m: m.update(model=5), "model: expected text")
_metrics_row("metrics: seed is text", lambda m: m.update(seed="x"), "seed: expected a whole number",
             command="report")


@row("metrics: an integer of 5000 digits", "metrics.json: refused", "digits")
def _(t: Path, runs: dict) -> list[str]:
    run = tampered(t, runs, lambda r: (r / "metrics.json").write_text('{"model": ' + "9" * 5000 + "}"))
    return ["compare", str(run)]


@row("metrics: nested 100,000 deep", "metrics.json: refused")
def _(t: Path, runs: dict) -> list[str]:
    run = tampered(t, runs, lambda r: (r / "metrics.json").write_text("[" * 100_000 + "]" * 100_000))
    return ["compare", str(run)]


@row("history: infinite epoch time", "history.csv: line 2: seconds: expected a finite number (got inf)")
def _(t: Path, runs: dict) -> list[str]:
    def change(run: Path) -> None:
        lines = (run / "history.csv").read_text().splitlines()
        header = lines[0].split(",")
        cells = lines[1].split(",")
        cells[header.index("seconds")] = "inf"
        (run / "history.csv").write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    return report_argv(tampered(t, runs, change), t)


@row("state: epoch is text", "state.json: epoch: expected a whole number >= 0 (got 'x')")
def _(t: Path, runs: dict) -> list[str]:
    def change(run: Path) -> None:
        st = json.loads((run / "state.json").read_text())
        st["epoch"] = "x"
        (run / "state.json").write_text(json.dumps(st))
    return ["compare", str(tampered(t, runs, change))]


@row("predictions: labels of two dimensions", "predictions.npz: y_true: expected a 1-D integer array")
def _(t: Path, runs: dict) -> list[str]:
    change = edit_predictions(y_true=lambda d: d["y_true"].reshape(-1, 1), y_pred=lambda d: d["y_pred"].reshape(-1, 1))
    return ["compare", str(tampered(t, runs, change))]


@row("predictions: class index out of range", "predictions.npz: y_pred: class index out of range 0..9")
def _(t: Path, runs: dict) -> list[str]:
    return report_argv(tampered(t, runs, edit_predictions(y_pred=lambda d: np.full_like(d["y_pred"], 99))), t)


@row("predictions: float images", "predictions.npz: mis_images: expected up to 256 uint8 images")
def _(t: Path, runs: dict) -> list[str]:
    change = edit_predictions(mis_images=lambda d: d["mis_images"].astype(np.float64))
    return report_argv(tampered(t, runs, change), t)


@row("predictions: probabilities of the wrong shape", "predictions.npz: probs: expected finite floats of shape")
def _(t: Path, runs: dict) -> list[str]:
    return ["compare", str(tampered(t, runs, edit_predictions(probs=lambda d: d["probs"][:, :3])))]


@row("predictions: a zip bomb", "predictions.npz: refused: its arrays expand to 1056 MiB", max_rss_mib=400)
def _(t: Path, runs: dict) -> list[str]:
    def change(run: Path) -> None:
        import zipfile

        with zipfile.ZipFile(run / "predictions.npz", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            with zf.open("y_true.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array_header_1_0(fh, {"descr": "<i8", "fortran_order": False,
                                                          "shape": (137_500_000,)})
                block = b"\0" * (1 << 24)
                for _ in range(66):  # 1.1 GB of zeros, a few MB compressed
                    fh.write(block)
    return ["compare", str(tampered(t, runs, change))]


# ----------------------------------------------------------------------------- checkpoints (eval reads them first)


def _torch_ckpt_row(kind: str, change: Callable[[dict], None], *needles: str) -> None:
    def make(t: Path, runs: dict) -> list[str]:
        import torch

        def tamper(run: Path) -> None:
            blob = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
            change(blob)
            torch.save(blob, run / "checkpoints" / "best.pt")
        return ["eval", str(tampered(t, runs, tamper))]
    ROWS.append(Row(kind, make, ("best.pt", *needles)))


def _first(blob: dict) -> str:
    return next(iter(blob["model"]))


_torch_ckpt_row("checkpoint: NaN weights", lambda b: b["model"][_first(b)].fill_(float("nan")),
                "holds NaN or infinite values")
_torch_ckpt_row("checkpoint: bool weights", lambda b: b["model"].update({_first(b): b["model"][_first(b)] > 0}),
                "dtype torch.bool is neither floating point nor integer")
_torch_ckpt_row("checkpoint: weight that is not a tensor", lambda b: b["model"].update({_first(b): 3}),
                "expected a tensor (got int)")
_torch_ckpt_row("checkpoint: no model", lambda b: b.pop("model"), "model: missing or not a mapping")
_torch_ckpt_row("checkpoint: metadata is not JSON", lambda b: b.update(meta_json="{nope"),
                "meta_json: not valid JSON")
_torch_ckpt_row("checkpoint: metadata is a number", lambda b: b.update(meta_json=5), "meta_json: missing or not")


@row("checkpoint: a zip bomb", "best.pt: refused: its members expand to", max_rss_mib=400)
def _(t: Path, runs: dict) -> list[str]:
    def tamper(run: Path) -> None:
        import zipfile

        with zipfile.ZipFile(run / "checkpoints" / "best.pt", "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
            with zf.open("archive/data/0", "w", force_zip64=True) as fh:
                block = b"\0" * (1 << 24)
                for _ in range(16):  # 256 MB of zeros from a file of a few hundred KB
                    fh.write(block)
    return ["eval", str(tampered(t, runs, tamper))]


# ----------------------------------------------------------------------------- configs, presets, counts

TRAIN = ["train", "--model", "alexnet_cifar", "--framework", "torch"]


def laughs() -> str:
    lines = ["  l0: &l0 [ha, ha, ha, ha, ha, ha, ha, ha, ha, ha]"]
    lines += [f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 9)]
    return "model_options:\n" + "\n".join(lines) + "\n"


def _config_row(kind: str, body: str, *needles: str, max_rss_mib: int | None = None) -> None:
    def make(t: Path, runs: dict) -> list[str]:
        (t / "bad.yaml").write_text(body)
        return [*TRAIN, "--config", str(t / "bad.yaml"), "--out", str(t / "out" / "run")]
    ROWS.append(Row(kind, make, ("bad.yaml", *needles), max_rss_mib=max_rss_mib))


_config_row("config: billion laughs", laughs(), "refused: expands to more than 100,000 values", max_rss_mib=400)
_config_row("config: nested 10,000 deep", "model_options: " + "[" * 10_000 + "]" * 10_000 + "\n",
            "refused: nested deeper than 32 levels")
_config_row("config: recursive alias", "model_options: &a {x: *a}\n", "refused: a recursive alias")
_config_row("config: an integer of 5000 digits", "seed: " + "9" * 5000 + "\n", "refused", "digits")
_config_row("config: over the size cap", "# " + "x" * (1 << 20) + "\nepochs: 1\n", "refused: larger than 64 KiB")
_config_row("config: infinite learning rate", "optimizer: {lr: .inf}\n",
            "optimizer.lr: Input should be a finite number")
_config_row("config: NaN beta", "optimizer: {betas: [.nan, 0.9]}\n", "optimizer.betas.0: Input should be a finite")
_config_row("config: infinite warm-up", "schedule: {warmup_epochs: .inf}\n", "schedule.warmup_epochs")
_config_row("config: seed too large for NumPy", "seed: 18446744073709551616\n",
            "seed: Input should be less than or equal to 4294967295")


@row("config: /dev/zero", "/dev/zero: refused: larger than 64 KiB")
def _(t: Path, runs: dict) -> list[str]:
    return [*TRAIN, "--config", "/dev/zero", "--out", str(t / "out" / "run")]


@row("set: billion laughs in a value", "--set model_options=", "refused: expands to more than")
def _(t: Path, runs: dict) -> list[str]:
    flow = "{" + ", ".join(line.strip() for line in laughs().splitlines()[1:]) + "}"
    return [*TRAIN, "--set", f"model_options={flow}", "--out", str(t / "out" / "run")]


@row("seeds: a trillion", "--seeds: at most 100 seeds")
def _(t: Path, runs: dict) -> list[str]:
    return ["run", "--seeds", "1000000000000", "--out", str(t / "out" / "run")]


@row("preset: 200 entries x 10 seeds", "big.yaml: 200 entries × 10 seeds is too many")
def _(t: Path, runs: dict) -> list[str]:
    (t / "big.yaml").write_text("name: big\nentries:\n" + "".join(
        f"  - {{model: alexnet_cifar, framework: torch, batch_size: {i + 1}}}\n" for i in range(200)))
    return ["run", "--preset", str(t / "big.yaml"), "--seeds", "10", "--out", str(t / "out" / "run")]


@row("resume: another learning rate", "--resume continues the same run", "optimizer.lr: run has 0.02, asked 0.5")
def _(t: Path, runs: dict) -> list[str]:
    run = tampered(t, runs, lambda r: None)
    return [*TRAIN, "--out", str(run), "--resume", "--set", "optimizer.lr=0.5"]


for _flag, _value, _needle in [("--seed", "99999999999999999999", "must be in [0, 4294967295]"),
                               ("--batch", "0", "must be in [1, 1024]"),
                               ("--num-classes", "1", "must be in [2, 100000]")]:
    ROWS.append(Row(f"parity: {_flag} {_value}",
                    lambda t, runs, f=_flag, v=_value: ["parity", "--model", "alexnet_cifar", f, v],
                    (f"argument {_flag}: {_needle}",)))


# ----------------------------------------------------------------------------- data


def _tar(path: Path, members: list[tuple[str, bytes | int]]) -> Path:
    """A .tar.gz; a member given as an int is that many zero bytes, streamed (never in memory)."""
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, int):
                info.size = data
                tf.addfile(info, _Zeros(data))
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


class _Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def _png(mode: str = "RGB", size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (size, size)).save(buf, format="PNG")
    return buf.getvalue()


def _folder_members(extra: list[tuple[str, bytes | int]] = ()) -> list[tuple[str, bytes | int]]:
    honest = [(f"d/{split}/{cls}/{i}.png", _png()) for split in ("train", "test") for cls in ("cats", "dogs")
              for i in range(2)]
    return honest + list(extra)


@row("archive: a gzip bomb posing as an image", "train/cats/bomb.png", "over the 67,108,864-byte limit",
     max_rss_mib=400)
def _(t: Path, runs: dict) -> list[str]:
    src = _tar(t / "bomb.tar.gz", _folder_members([("d/train/cats/bomb.png", 200 << 20)]))
    assert src.stat().st_size < 2 << 20  # 200 MB of "image" from under 2 MB
    return ["data", str(src)]


@row("archive: a gzip bomb posing as a CIFAR-10 batch", "data_batch_1.bin", "over the 536,870,912-byte limit",
     max_rss_mib=400)
def _(t: Path, runs: dict) -> list[str]:
    names = [f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)] + \
        ["cifar-10-batches-bin/test_batch.bin", "cifar-10-batches-bin/batches.meta.txt"]
    src = _tar(t / "bomb-bin.tar.gz", [(n, b"") for n in names[1:]] + [(names[0], 600 << 20)])
    assert src.stat().st_size < 4 << 20
    return ["data", str(src)]


@row("archive: the same member twice", "member 'd/train/cats/0.png' appears twice")
def _(t: Path, runs: dict) -> list[str]:
    return ["data", str(_tar(t / "dup.tar.gz", _folder_members([("d/train/cats/0.png", _png("L"))])))]


@row("image folder: one file over the size cap", "big.png", "over the 67,108,864-byte limit")
def _(t: Path, runs: dict) -> list[str]:
    d = t / "folder"
    for name, data in _folder_members():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    with open(d / "d/train/cats/big.png", "wb") as fh:  # sparse: no disk used
        fh.truncate((64 << 20) + 1)
    return ["data", str(d / "d")]


# ----------------------------------------------------------------------------- the runner


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def _peak_rss_mib(argv: list[str], env: dict) -> tuple[int, int, str]:
    """(exit code, peak RSS of the command in MiB, stderr) from a fresh subprocess."""
    probe = ("import resource, subprocess, sys; "
             "p = subprocess.run(sys.argv[1:], stderr=subprocess.PIPE, text=True); "
             "sys.stderr.write(p.stderr); "
             "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "alexbench", *argv], env=env,
                         capture_output=True, text=True, timeout=600)
    rc, kib = out.stdout.split()[-2:]
    return int(rc), int(kib) // 1024, out.stderr


@pytest.mark.parametrize("r", ROWS, ids=[r.kind for r in ROWS])
def test_hostile_row(r: Row, runs, tmp_path, monkeypatch, capsys):
    t = tmp_path / "t"
    (t / "out").mkdir(parents=True)
    home = tmp_path / "home"
    monkeypatch.setenv("ALEXBENCH_DATA", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    argv = r.make(t, runs)
    before = _files(tmp_path)

    if r.max_rss_mib is None:
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            rc = exc.code
        err = capsys.readouterr().err
    else:
        rc, peak, err = _peak_rss_mib(argv, {**os.environ, "PYTHONPATH": str(ROOT)})
        assert peak < r.max_rss_mib, f"peak RSS {peak} MiB over the {r.max_rss_mib} MiB bound"
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("warning:", "note:"))]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"alexbench {argv[0]}: error: "), lines[0]
    for needle in r.needles:
        assert needle in lines[0], (needle, lines[0])
    target = str((t / r.target).relative_to(tmp_path)) + "/"
    new = {f for f in _files(tmp_path) - before
           if not f.startswith((target, "home/", "userhome/.keras/", "userhome/.cache/matplotlib/"))}
    assert new == set(), new


def test_the_table_is_large_enough():
    assert len(ROWS) >= 40, len(ROWS)
