"""export (ONNX checked with onnxruntime, TorchScript, .keras, SavedModel) and predict on your own images."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_dataset, tiny_config
from PIL import Image

from alexbench.cli import main

CLASSES = synthetic_dataset().classes


@pytest.fixture(scope="module")
def runs(finished_runs, tmp_path_factory) -> dict[str, Path]:
    """Copies of the shared tiny runs (exports write into them)."""
    import shutil

    root = tmp_path_factory.mktemp("runs")
    return {fw: Path(shutil.copytree(p, root / fw)) for fw, p in finished_runs.items()}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of JPEGs and PNGs of other sizes than the training images, plus a text file to skip."""
    d = tmp_path_factory.mktemp("photos")
    ds = synthetic_dataset(n_train_per_class=1, n_test_per_class=1, seed=3)
    for i, img in enumerate(ds.x_test[:6]):
        im = Image.fromarray(img).resize((45, 37), Image.Resampling.BICUBIC)
        im.save(d / f"img{i}.{'jpg' if i % 2 else 'png'}")
    (d / "notes.txt").write_text("not an image")
    return d


def cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def predict_json(capsys, target: Path, *images: str, top: int = 3) -> list[dict]:
    rc, out, err = cli(capsys, "predict", str(target), *images, "--top", str(top), "--json")
    assert rc == 0, err
    return json.loads(out)


def test_torch_run_exports_to_onnx_and_predicts_the_same(runs, photos, capsys):
    import onnx

    rc, out, err = cli(capsys, "export", str(runs["torch"]), "--format", "onnx")
    assert rc == 0, err
    onnx_path = runs["torch"] / "export" / "best.onnx"
    assert f"-> {onnx_path}" in out and "max |logit difference|" in out and "tolerance 1e-04" in out
    model = onnx.load(str(onnx_path))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == CLASSES
    pre = json.loads(props["preprocess"])
    run_norm = json.loads((runs["torch"] / "metrics.json").read_text())["dataset"]["normalization"]
    assert pre["mean"] == pytest.approx(run_norm["mean"]) and pre["std"] == pytest.approx(run_norm["std"])
    assert pre["image_size"] == [32, 32] and pre["input_size"] == 32 and pre["channel_order"] == "RGB"
    assert props["layout"] == "NCHW" and props["framework"] == "torch"
    assert float(props["check_max_abs_logit_diff"]) <= 1e-4
    inp = model.graph.input[0]
    assert inp.name == "image" and inp.type.tensor_type.shape.dim[0].dim_param == "batch"

    via_ckpt = predict_json(capsys, runs["torch"], str(photos))
    via_onnx = predict_json(capsys, onnx_path, str(photos))
    assert [r["image"] for r in via_ckpt] == sorted(str(p) for p in photos.iterdir() if p.suffix != ".txt")
    for a, b in zip(via_ckpt, via_onnx):
        assert set(a) == {"image", "top"} and len(a["top"]) == 3
        assert all(set(t) == {"class", "probability"} for t in a["top"])
        probs = [t["probability"] for t in a["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        assert a["top"][0]["class"] == b["top"][0]["class"]
        assert a["top"][0]["probability"] == pytest.approx(b["top"][0]["probability"], abs=1e-4)

    rc, out, _ = cli(capsys, "predict", str(onnx_path), str(photos / "img0.png"), "--top", "2")
    assert rc == 0 and out.count("\n") == 1 and out.startswith(str(photos / "img0.png"))


def test_keras_run_exports_to_onnx_with_keras_own_exporter(runs, photos, capsys):
    import onnx

    out_file = runs["keras"] / "k.onnx"
    rc, out, err = cli(capsys, "export", str(runs["keras"]), "--out", str(out_file))
    assert rc == 0, err
    props = {p.key: p.value for p in onnx.load(str(out_file)).metadata_props}
    assert props["layout"] == "NHWC" and props["exporter"].startswith("keras") and "note:" not in out
    via_ckpt = predict_json(capsys, runs["keras"], str(photos), top=1)
    via_onnx = predict_json(capsys, out_file, str(photos), top=1)
    assert [r["top"][0]["class"] for r in via_ckpt] == [r["top"][0]["class"] for r in via_onnx]


def test_a_failing_exporter_falls_back_to_the_ported_weights(runs, capsys, monkeypatch):
    import onnx

    from alexbench import export

    def broken(*_a, **_k):
        raise RuntimeError("converter exploded")

    monkeypatch.setattr(export, "_onnx_from_keras", broken)
    out_file = runs["keras"] / "ported.onnx"
    rc, out, err = cli(capsys, "export", str(runs["keras"]), "--out", str(out_file))
    assert rc == 0, err
    assert "converter exploded" in out and "ported by the parity porter" in out
    props = {p.key: p.value for p in onnx.load(str(out_file)).metadata_props}
    assert props["framework"] == "keras" and props["layout"] == "NCHW" and props["exporter"].startswith("torch")


def test_a_failed_check_writes_nothing(runs, capsys, monkeypatch):
    from alexbench import export

    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no difference passes
    out_file = runs["torch"] / "strict.onnx"
    rc, _, err = cli(capsys, "export", str(runs["torch"]), "--out", str(out_file))
    assert rc == 1 and "check failed" in err and not out_file.exists()
    assert not list(out_file.parent.glob(".strict.onnx*"))


@pytest.mark.parametrize("fmt,fw", [("torchscript", "torch"), ("keras", "keras"), ("savedmodel", "torch")])
def test_other_formats_are_checked_and_carry_metadata(runs, capsys, fmt, fw):
    rc, out, err = cli(capsys, "export", str(runs[fw]), "--format", fmt)
    assert rc == 0, err
    path = Path(out.split(" -> ")[1].split(" [")[0])
    assert path.exists() and "max |logit difference|" in out
    if fmt == "savedmodel":
        meta = json.loads((path / "assets.extra" / "alexbench.json").read_text())
        assert "ported by the parity porter" in out  # a torch run goes through the porter to Keras
    else:
        import zipfile

        with zipfile.ZipFile(path) as zf:
            name = next(n for n in zf.namelist() if n.endswith("alexbench.json"))
            meta = json.loads(zf.read(name))
    assert json.loads(meta["classes"]) == CLASSES


def test_export_refuses_a_file_it_did_not_write(runs, capsys, tmp_path):
    mine = tmp_path / "mine.onnx"
    mine.write_text("my notes")
    rc, _, err = cli(capsys, "export", str(runs["torch"]), "--out", str(mine))
    assert rc == 2 and "was not written by alexbench" in err and mine.read_text() == "my notes"
    rc, _, err = cli(capsys, "export", str(mine))
    assert rc == 2 and "Traceback" not in err


def test_unreadable_images_are_reported_per_file(runs, photos, capsys, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    rc, out, err = cli(capsys, "predict", str(runs["torch"]), str(bad), str(photos / "img1.jpg"), "--json")
    assert rc == 0 and [r["image"] for r in json.loads(out)] == [str(photos / "img1.jpg")]
    assert f"{bad}: cannot decode image" in err and "Traceback" not in err
    rc, out, err = cli(capsys, "predict", str(runs["torch"]), str(bad), str(tmp_path / "missing.png"))
    assert rc == 2 and "broken.jpg" in err and "missing.png" in err and "none of the 2" in err
    assert "Traceback" not in err


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def test_image_modes_decode_to_correct_8bit_rgb(tmp_path):
    from alexbench.preprocess import load_image

    rgb = np.random.default_rng(1).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    cases = {
        "gray.png": (Image.fromarray(gray, "L"), np.repeat(gray[..., None], 3, 2)),
        "rgba.png": (Image.fromarray(np.dstack([rgb, np.full(gray.shape, 7, np.uint8)]), "RGBA"), rgb),
        "gray16.png": (Image.fromarray(gray.astype(np.uint16) * 257), np.repeat(gray[..., None], 3, 2)),
        "palette.png": (Image.fromarray(rgb).quantize(16), None),
    }
    for name, (im, want) in cases.items():
        im.save(tmp_path / name)
        got = load_image(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (6, 5, 3), name
        if want is not None:
            np.testing.assert_array_equal(got, want, err_msg=name)
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", quality=100)
    got = load_image(tmp_path / "cmyk.jpg").astype(int)
    assert np.abs(got - rgb.astype(int)).mean() < 8  # JPEG is lossy; colours must not be inverted or clipped
    # EXIF orientation 6 (rotate 90 clockwise to display): a 6x5 stored image shows as 5x6
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif, quality=100)
    assert load_image(tmp_path / "rot.jpg").shape == (5, 6, 3)


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_numpy_preprocessing_equals_the_engines(framework):
    """predict and the export check prepare images in NumPy; the engines do it in-graph."""
    from alexbench import rundir
    from alexbench.data.stream import normalization
    from alexbench.engines import make_engine
    from alexbench.preprocess import Preprocess

    x = synthetic_dataset(2, 1).x_train
    for norm_name, size in (("imagenet", 36), ("caffe", 39)):  # alexnet_cifar takes 32-39 px
        norm = normalization(norm_name)
        engine = make_engine(tiny_config(framework), 10, norm, size)
        engine.build()
        if framework == "torch":
            theirs = np.asarray(engine._prep(x))
        else:  # the Keras engine prepares inside its step, with keras_steps.prepare on every backend
            from alexbench.engines.keras_steps import prepare

            theirs = np.asarray(prepare(engine, x))
        record = rundir.preprocessing(norm, size, x.shape[1:3], CLASSES, False)
        pre = Preprocess.from_dict(record["preprocess"], "test")
        ours = pre.model_input(x, "NCHW" if framework == "torch" else "NHWC")
        # float32 rounding, relative to the values' scale (caffe leaves them in the hundreds)
        tol = 1e-5 * max(1.0, float(np.abs(theirs).max()))
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=tol, err_msg=f"{framework} {norm_name} {size}")


def test_numpy_resize_equals_torch_interpolate_when_shrinking():
    import torch

    from alexbench.preprocess import resize_matrix

    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    for out in (20, 7, 32, 45):
        theirs = torch.nn.functional.interpolate(torch.from_numpy(x), size=(out, out), mode="bilinear",
                                                 align_corners=False, antialias=False).numpy()
        r = resize_matrix(32, out)
        ours = np.einsum("oh,nchw,pw->ncop", r, x, r)
        np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=str(out))
