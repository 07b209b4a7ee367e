"""``alexbench export``: a trained model in a file other tools load, checked before it is written.

Formats:
- ``onnx``: from a torch run with ``torch.onnx.export`` (the torch.export-based
  exporter), from a Keras run with Keras 3's ``model.export(format="onnx")``. If a
  run's own exporter fails, its weights are ported to the other framework by the
  parity porter and exported from there, and the output says so. The batch
  dimension is dynamic; the input is ``image`` (float32, normalised, in the layout
  recorded in the metadata), the output ``logits``. ``metadata_props`` holds the class
  names, the preprocessing (:class:`~alexbench.preprocess.Preprocess`), the layout and
  where the model came from.
- ``torchscript`` (torch, traced), ``keras`` (a ``.keras`` file) and ``savedmodel``
  (a TensorFlow SavedModel folder); a run of the other framework is ported first.
  The metadata travels as ``alexbench.json`` inside the file (TorchScript extra file,
  a member of the ``.keras`` zip, ``assets.extra/`` of the SavedModel).

Every export is loaded back (ONNX: with onnxruntime) and run on real test images;
its logits must match the framework's own to within :data:`TOLERANCE` (fp32), and a
batch of one must work, before the file is published atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from alexbench import rundir
from alexbench.errors import UserError
from alexbench.inference import Predictor, check_images, load_predictor, ported

__all__ = ["FORMATS", "TOLERANCE", "export_model", "export_command"]

TOLERANCE = 1e-4
FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "keras": ".keras", "savedmodel": ".savedmodel"}
_NEEDS = {"torchscript": "torch", "keras": "keras", "savedmodel": "keras"}  # onnx: either
OPSET = 18


class ExportCheckFailed(Exception):
    """The exported file's logits differ from the framework's: nothing was written."""


def _metadata(pred: Predictor, src: Predictor, exporter: str, diff: float | None) -> dict[str, str]:
    from alexbench import __version__

    meta = {"classes": json.dumps(pred.classes), "preprocess": json.dumps(pred.pre.to_dict()),
            "layout": src.layout, "model": pred.cfg.model, "framework": pred.kind, "exporter": exporter,
            "source_checkpoint": str(pred.source), "alexbench_version": __version__}
    if diff is not None:
        meta["check_max_abs_logit_diff"] = f"{diff:.3e}"
    return meta


# -- ONNX ------------------------------------------------------------------------------------
def _onnx_from_torch(src: Predictor, example: np.ndarray) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(src.net, (torch.from_numpy(example),), input_names=["image"],
                                    output_names=["logits"], opset_version=OPSET, dynamo=True, verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
    return program.model_proto


def _onnx_from_keras(src: Predictor, example: np.ndarray) -> Any:
    import onnx

    src.forward(example[:1])  # Keras exports only a model that has been called
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            src.net.export(path, format="onnx", verbose=False, opset_version=OPSET)
        proto = onnx.load(path)
    return proto


def _normalise_io(proto: Any) -> None:
    """Input ``image``, output ``logits``, batch dimension named ``batch`` (whatever the exporter chose)."""
    g = proto.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    for value, new in ((inputs[0], "image"), (g.output[0], "logits")):
        old = value.name
        if old != new:
            for node in g.node:
                node.input[:] = [new if n == old else n for n in node.input]
                node.output[:] = [new if n == old else n for n in node.output]
            value.name = new
        dim0 = value.type.tensor_type.shape.dim[0]
        dim0.ClearField("dim_value")
        dim0.dim_param = "batch"


def _check_onnx(data: bytes, x: np.ndarray, ref: np.ndarray) -> tuple[float, int]:
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"image": x[i:i + 64]})[0] for i in range(0, len(x), 64)])
    one = sess.run(None, {"image": x[:1]})[0]  # the batch dimension really is dynamic
    diff = float(max(np.abs(got - ref).max(), np.abs(one - ref[:1]).max()))
    return diff, int((got.argmax(1) == ref.argmax(1)).sum())


def _export_onnx(pred: Predictor, x_by_layout: Callable[[str], np.ndarray], ref: np.ndarray,
                 notes: list[str]) -> tuple[bytes, float, int, str]:
    import onnx

    exporters = {"torch": ("torch.onnx.export (dynamo)", _onnx_from_torch),
                 "keras": ("keras Model.export(format='onnx')", _onnx_from_keras)}
    order = [pred.kind] + [fw for fw in exporters if fw != pred.kind]
    failures = []
    for fw in order:
        src = pred if fw == pred.kind else _ported(pred, fw, x_by_layout, ref, notes)
        name, fn = exporters[fw]
        x = x_by_layout(src.layout)
        try:
            proto = fn(src, x)
        except Exception as exc:  # noqa: BLE001 - any exporter failure: try the other framework
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            failures.append(f"{name} failed ({type(exc).__name__}: {first})")
            notes.append(failures[-1])
            continue
        _normalise_io(proto)
        diff, agree = _check_onnx(proto.SerializeToString(), x, ref)
        onnx.helper.set_model_props(proto, _metadata(pred, src, name, diff))
        proto.doc_string = f"alexbench export of {pred.cfg.model} ({pred.kind}), {len(pred.classes)} classes"
        return proto.SerializeToString(), diff, agree, name
    raise UserError(f"{pred.source}: no ONNX exporter worked: " + "; ".join(failures))


def _ported(pred: Predictor, fw: str, x_by_layout: Callable[[str], np.ndarray], ref: np.ndarray,
            notes: list[str]) -> Predictor:
    other = ported(pred, fw)
    d = float(np.abs(other.forward(x_by_layout(other.layout)) - ref).max())
    notes.append(f"exported from {fw}: the {pred.kind} weights were ported by the parity porter "
                 f"(max |logit difference| {d:.2e})")
    return other


# -- the other formats -------------------------------------------------------------------------
def _torchscript(pred: Predictor, src: Predictor, x: np.ndarray, ref: np.ndarray, tmp: Path) -> tuple[float, int]:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(src.net, torch.from_numpy(x[:2]))
        extra = {"alexbench.json": json.dumps(_metadata(pred, src, "torch.jit.trace", None))}
        torch.jit.save(traced, str(tmp), _extra_files=extra)
        loaded = torch.jit.load(str(tmp))
    with torch.inference_mode():
        got = loaded(torch.from_numpy(x)).numpy()
        one = loaded(torch.from_numpy(x[:1])).numpy()
    return float(max(np.abs(got - ref).max(), np.abs(one - ref[:1]).max())), int((got.argmax(1) == ref.argmax(1)).sum())


def _keras_file(pred: Predictor, src: Predictor, x: np.ndarray, ref: np.ndarray, tmp: Path) -> tuple[float, int]:
    from alexbench.frameworks import import_keras

    keras = import_keras()
    src.net.save(str(tmp))
    with zipfile.ZipFile(tmp, "a") as zf:  # Keras reads only its own members
        zf.writestr("alexbench.json", json.dumps(_metadata(pred, src, "keras Model.save", None)))
    loaded = keras.saving.load_model(str(tmp), compile=False)
    got = np.asarray(loaded(x, training=False))
    one = np.asarray(loaded(x[:1], training=False))
    return float(max(np.abs(got - ref).max(), np.abs(one - ref[:1]).max())), int((got.argmax(1) == ref.argmax(1)).sum())


def _savedmodel(pred: Predictor, src: Predictor, x: np.ndarray, ref: np.ndarray, tmp: Path) -> tuple[float, int]:
    import tensorflow as tf

    src.forward(x[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src.net.export(str(tmp), format="tf_saved_model", verbose=False)
    (tmp / "assets.extra").mkdir(exist_ok=True)
    (tmp / "assets.extra" / "alexbench.json").write_text(
        json.dumps(_metadata(pred, src, "keras Model.export(format='tf_saved_model')", None)))
    loaded = tf.saved_model.load(str(tmp))
    got = np.asarray(loaded.serve(tf.constant(x)))
    one = np.asarray(loaded.serve(tf.constant(x[:1])))
    return float(max(np.abs(got - ref).max(), np.abs(one - ref[:1]).max())), int((got.argmax(1) == ref.argmax(1)).sum())


_WRITERS = {"torchscript": _torchscript, "keras": _keras_file, "savedmodel": _savedmodel}


def _publish_dir(tmp: Path, out: Path) -> None:
    """Put a finished folder at ``out``: rename it in, moving an old one aside first and removing it after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _out_path(pred: Predictor, fmt: str, out: str | None, force: bool) -> Path:
    from alexbench.outputs import check_file_target, refuse_foreign

    if out is None:
        base = pred.source.parent.parent if pred.source.parent.name == "checkpoints" else pred.source.parent
        stem = pred.source.name.split(".")[0]
        path = base / rundir.EXPORT / f"{stem}{FORMATS[fmt]}"
    else:
        path = Path(out)
    if fmt == "savedmodel":
        if path.exists() and not (path / "assets.extra" / "alexbench.json").is_file() and not force:
            raise refuse_foreign(path, "--out", "not a SavedModel alexbench exported")
        return path
    check_file_target(path, "--out")
    if os.path.lexists(path) and not force and not _is_ours(path, fmt):
        raise refuse_foreign(path, "--out")
    return path


def _is_ours(path: Path, fmt: str) -> bool:
    try:
        if fmt == "onnx":
            import onnx

            props = onnx.load(str(path), load_external_data=False).metadata_props
            return any(p.key == "alexbench_version" for p in props)
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("alexbench.json") for n in zf.namelist())
    except Exception:  # noqa: BLE001 - unreadable: not provably ours
        return False


def export_model(target: str, fmt: str = "onnx", out: str | None = None, *, force: bool = False) -> dict:
    """Export a run folder's (or a checkpoint's) model; returns what was done and the check's figures."""
    from alexbench.atomic import atomic_write

    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    pred = load_predictor(target)
    if pred.kind == "onnx":
        raise UserError(f"{target}: already an ONNX file; export takes a run folder or a checkpoint")
    path = _out_path(pred, fmt, out, force)
    run_dir = pred.source.parent.parent
    images, images_from = check_images(pred, run_dir)
    cache: dict[str, np.ndarray] = {}

    def x_by_layout(layout: str) -> np.ndarray:
        if layout not in cache:
            cache[layout] = pred.pre.model_input(images, layout)
        return cache[layout]

    ref = pred.forward(x_by_layout(pred.layout))  # the framework's own logits, fp32, no test-time flip
    notes: list[str] = []
    if fmt == "onnx":
        data, diff, agree, exporter = _export_onnx(pred, x_by_layout, ref, notes)
        if not diff <= TOLERANCE:
            raise ExportCheckFailed(f"onnxruntime logits differ from {pred.kind}'s by {diff:.2e} "
                                    f"(> {TOLERANCE:.0e}); {path} not written")
        atomic_write(path, data)
        size = len(data)
    else:
        need = _NEEDS[fmt]
        src = pred if pred.kind == need else _ported(pred, need, x_by_layout, ref, notes)
        exporter = {"torchscript": "torch.jit.trace", "keras": "keras Model.save",
                    "savedmodel": "keras Model.export(format='tf_saved_model')"}[fmt]
        if fmt == "savedmodel":
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
            try:
                diff, agree = _savedmodel(pred, src, x_by_layout(src.layout), ref, tmp)
                if not diff <= TOLERANCE:
                    raise ExportCheckFailed(f"SavedModel logits differ from {pred.kind}'s by {diff:.2e}")
                _publish_dir(tmp, path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        else:
            with tempfile.TemporaryDirectory() as d:  # the writers want their own file name (.keras)
                tmp = Path(d) / f"model{FORMATS[fmt]}"
                diff, agree = _WRITERS[fmt](pred, src, x_by_layout(src.layout), ref, tmp)
                if not diff <= TOLERANCE:
                    raise ExportCheckFailed(f"{fmt} logits differ from {pred.kind}'s by {diff:.2e}; "
                                            f"{path} not written")
                data = tmp.read_bytes()
            atomic_write(path, data)
            size = len(data)
    return {"source": str(pred.source), "model": pred.cfg.model, "framework": pred.kind, "format": fmt,
            "out": str(path), "bytes": size, "exporter": exporter, "check_images": len(images),
            "check_images_from": images_from, "max_abs_logit_diff": diff, "top1_agree": agree,
            "tolerance": TOLERANCE, "notes": notes}


def export_command(args) -> int:  # noqa: ANN001 - argparse namespace
    try:
        res = export_model(args.target, args.format, args.out, force=getattr(args, "force", False))
    except ExportCheckFailed as exc:
        from alexbench.log import get_logger

        get_logger(__name__).error(f"alexbench export: check failed: {exc}")
        return 1
    for note in res["notes"]:
        print(f"note: {note}")
    checker = "onnxruntime" if res["format"] == "onnx" else f"the reloaded {res['format']} file"
    print(f"exported {res['source']} ({res['model']}, {res['framework']}) -> {res['out']} "
          f"[{res['format']}, {res['exporter']}, dynamic batch, {res['bytes'] / 1e6:.1f} MB]")
    print(f"check: {checker} vs {res['framework']} logits on {res['check_images']} test images "
          f"({res['check_images_from']}): max |logit difference| {res['max_abs_logit_diff']:.2e} "
          f"(tolerance {res['tolerance']:.0e}), top-1 agrees on {res['top1_agree']}/{res['check_images']}, "
          "batch of 1 ok")
    return 0
