"""Data sources: official formats, image folders, auto-detection, the embedded sample,
the decoded cache and the download, all on fixtures these tests write themselves.

The helpers at the top (``write_*``, ``tar_dir``, ``run_cli``) are also imported by
``test_data_bad_input.py``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alexbench.cli import main
from alexbench.data import cache, download, sources
from alexbench.data.sources import CIFAR10_CLASSES, describe_source, find_default_source, load_dataset
from alexbench.errors import UserError

# ----------------------------------------------------------------------------- helpers


def images(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def make_arrays(n_batch: int = 3, n_test: int = 4, n_classes: int = 10, seed: int = 0):
    """Train = 5 batches of ``n_batch`` images, test = ``n_test`` images, labels cycling over classes."""
    rng = np.random.default_rng(seed)
    x_train, x_test = images(5 * n_batch, seed), images(n_test, seed + 1)
    y_train = rng.integers(0, n_classes, 5 * n_batch).astype(np.int64)
    y_test = (np.arange(n_test) % n_classes).astype(np.int64)
    return x_train, y_train, x_test, y_test


def binary_records(x: np.ndarray, y: np.ndarray) -> bytes:
    """The official binary layout: 1 label byte then 3072 bytes, R then G then B planes."""
    chw = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
    return np.concatenate([y.astype(np.uint8)[:, None], chw], axis=1).tobytes()


def write_binary_dir(parent: Path, classes=CIFAR10_CLASSES, **kw) -> tuple[Path, tuple]:
    arrays = make_arrays(n_classes=len(classes), **kw)
    x_train, y_train, x_test, y_test = arrays
    d = parent / "cifar-10-batches-bin"
    d.mkdir(parents=True)
    n = len(x_train) // 5
    for i in range(5):
        part = slice(i * n, (i + 1) * n)
        (d / f"data_batch_{i + 1}.bin").write_bytes(binary_records(x_train[part], y_train[part]))
    (d / "test_batch.bin").write_bytes(binary_records(x_test, y_test))
    (d / "batches.meta.txt").write_text("\n".join(classes) + "\n\n")
    return d, arrays


def python_batch(x: np.ndarray, y: np.ndarray, label: bytes = b"training batch") -> bytes:
    """A python-version batch as the official files hold it, pickled with protocol 2."""
    data = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)
    return pickle.dumps({b"batch_label": label, b"labels": [int(v) for v in y], b"data": data,
                         b"filenames": [b"img_%05d.png" % i for i in range(len(x))]}, protocol=2)


def write_python_dir(parent: Path, classes=CIFAR10_CLASSES, **kw) -> tuple[Path, tuple]:
    arrays = make_arrays(n_classes=len(classes), **kw)
    x_train, y_train, x_test, y_test = arrays
    d = parent / "cifar-10-batches-py"
    d.mkdir(parents=True)
    n = len(x_train) // 5
    for i in range(5):
        (d / f"data_batch_{i + 1}").write_bytes(python_batch(x_train[i * n:(i + 1) * n], y_train[i * n:(i + 1) * n]))
    (d / "test_batch").write_bytes(python_batch(x_test, y_test, b"testing batch 1 of 1"))
    (d / "batches.meta").write_bytes(pickle.dumps({b"num_cases_per_batch": n, b"num_vis": 3072,
                                                   b"label_names": [c.encode() for c in classes]}, protocol=2))
    (d / "readme.html").write_text("<html>CIFAR-10</html>")
    return d, arrays


def tar_dir(src: Path, out: Path, arcname: str | None = None) -> Path:
    mode = "w:gz" if out.name.endswith("gz") else "w"
    with tarfile.open(out, mode) as tf:
        tf.add(src, arcname=arcname if arcname is not None else src.name)
    return out


def save_image(path: Path, arr: np.ndarray | None = None, *, mode: str = "RGB", size: int = 32, seed: int = 0,
               fmt: str | None = None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr is None:
        arr = images(1, seed, size)[0]
    im = Image.fromarray(arr)
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path, format=fmt)
    return arr


def write_image_folder(root: Path, classes=("cats", "dogs"), n_train: int = 3, n_test: int = 2,
                       ext: str = "png") -> dict[str, list[np.ndarray]]:
    """``root/{train,test}/<class>/<i>.<ext>`` with random RGB images; returns what was written."""
    written: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    seed = 0
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in classes:
            for i in range(n):
                seed += 1
                written[split].append(save_image(root / split / cls / f"{i}.{ext}", seed=seed))
    return written


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc: int, err: str, *needles: str) -> str:
    """Exit 2, no traceback, the last stderr line is the one error line and names what it should."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line]
    errors = [line for line in lines if not line.startswith("warning:")]
    assert len(errors) == 1, err
    assert errors[0].startswith("alexbench data: error: "), errors[0]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Data home, HOME and cwd all under tmp_path: nothing touches the real ones."""
    home = tmp_path / "alexbench-data"
    monkeypatch.setenv("ALEXBENCH_DATA", str(home))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.delenv("CI", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return home


# ----------------------------------------------------------------------------- official formats


def check_arrays(ds, arrays) -> None:
    x_train, y_train, x_test, y_test = arrays
    assert ds.x_train.dtype == np.uint8 and ds.x_train.shape == x_train.shape
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    np.testing.assert_array_equal(ds.x_train, x_train)
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.x_test, x_test)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.classes == CIFAR10_CLASSES


@pytest.mark.parametrize("packed", [False, True], ids=["dir", "tar.gz"])
def test_official_binary(tmp_path, packed):
    d, arrays = write_binary_dir(tmp_path / "src")
    src = tar_dir(d, tmp_path / "cifar-10-binary.tar.gz") if packed else d
    ds = load_dataset(str(src))
    check_arrays(ds, arrays)
    assert ds.format == "cifar-binary" and ds.name == "CIFAR-10" and not ds.embedded
    assert ds.sha256 == (hashlib.sha256(src.read_bytes()).hexdigest() if packed else ds.sha256)
    assert len(ds.sha256) == 64


@pytest.mark.parametrize("packed", [False, True], ids=["dir", "tar.gz"])
def test_official_python(tmp_path, packed):
    d, arrays = write_python_dir(tmp_path / "src")
    src = tar_dir(d, tmp_path / "cifar-10-python.tar.gz") if packed else d
    ds = load_dataset(str(src))
    check_arrays(ds, arrays)
    assert ds.format == "cifar-python"


def py2_style_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch spelled as Python 2's cPickle wrote the official files: ``numpy.core``
    globals and ``U``/``T`` (byte-string) opcodes, which Python 3 cannot produce."""
    raw = data.tobytes()
    rows, cols = data.shape

    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b
    out = b"\x80\x02}(" + s(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + s(b"b") + b"\x87R("
    out += b"K\x01M" + rows.to_bytes(2, "little") + b"M" + cols.to_bytes(2, "little") + b"\x86"
    out += b"cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R"
    out += b"(K\x03" + s(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"  # dtype state
    out += b"\x89T" + len(raw).to_bytes(4, "little") + raw + b"tb"
    out += s(b"labels") + b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"eu."
    return out


def test_python_batch_written_by_python2_is_read(tmp_path):
    d, arrays = write_python_dir(tmp_path / "src")
    x_train, y_train = arrays[0], arrays[1]
    n = len(x_train) // 5
    first = x_train[:n].transpose(0, 3, 1, 2).reshape(n, 3072)
    (d / "data_batch_1").write_bytes(py2_style_batch(first, [int(v) for v in y_train[:n]]))
    ds = load_dataset(str(d))
    check_arrays(ds, arrays)


def test_python_batch_with_protocol_5_is_read(tmp_path):
    d, arrays = write_python_dir(tmp_path / "src")
    n = len(arrays[0]) // 5
    x, y = arrays[0][n:2 * n], arrays[1][n:2 * n]
    (d / "data_batch_2").write_bytes(pickle.dumps({b"data": x.transpose(0, 3, 1, 2).reshape(n, 3072),
                                                   b"labels": [int(v) for v in y]}, protocol=5))
    check_arrays(load_dataset(str(d)), arrays)


def test_pointing_at_the_parent_folder_finds_the_official_one(tmp_path):
    d, arrays = write_python_dir(tmp_path / "data")
    check_arrays(load_dataset(str(tmp_path / "data")), arrays)


# ----------------------------------------------------------------------------- image folders


def test_image_folder_dir_sorted_classes_and_exact_pixels(tmp_path):
    written = write_image_folder(tmp_path / "pets", classes=("zebra", "ant", "mole"), n_train=2, n_test=1)
    ds = load_dataset(str(tmp_path / "pets"))
    assert ds.classes == ["ant", "mole", "zebra"]
    assert ds.format == "image-folder" and ds.name == "pets (image folder)"
    assert ds.x_train.shape == (6, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(ds.y_train, [0, 0, 1, 1, 2, 2])
    # written in class order zebra, ant, mole; loaded in sorted order ant, mole, zebra
    np.testing.assert_array_equal(ds.x_train[0], written["train"][2])  # ant/0.png
    np.testing.assert_array_equal(ds.x_test[2], written["test"][0])  # zebra/0.png


def test_cifar10_class_names_keep_cifar_order(tmp_path):
    write_image_folder(tmp_path / "f", classes=sorted(CIFAR10_CLASSES, reverse=True), n_train=1, n_test=1)
    ds = load_dataset(str(tmp_path / "f"))
    assert ds.classes == CIFAR10_CLASSES
    assert ds.name == "CIFAR-10 (image folder)"  # PNG, so not "JPEG copy"
    np.testing.assert_array_equal(ds.y_train, np.arange(10))


@pytest.mark.parametrize("arcname", ["cifar10-jpeg", ""], ids=["top-folder", "no-top-folder"])
def test_image_folder_tarball(tmp_path, arcname):
    write_image_folder(tmp_path / "src", n_train=2, n_test=1, ext="jpg")
    (tmp_path / "src" / "README.txt").write_text("not an image")
    tarball = tar_dir(tmp_path / "src", tmp_path / "folder.tar.gz", arcname=arcname)
    ds = load_dataset(str(tarball))
    assert ds.classes == ["cats", "dogs"] and len(ds.y_train) == 4 and len(ds.y_test) == 2
    assert ds.name == "folder (image folder)"
    direct = load_dataset(str(tmp_path / "src"))
    np.testing.assert_array_equal(ds.x_train, direct.x_train)


def test_natural_file_order(tmp_path):
    for i in (10, 2, 1):
        save_image(tmp_path / "f" / "train" / "a" / f"{i}.png", np.full((32, 32, 3), i, np.uint8))
    save_image(tmp_path / "f" / "test" / "a" / "0.png")
    ds = load_dataset(str(tmp_path / "f"))
    assert [int(x[0, 0, 0]) for x in ds.x_train] == [1, 2, 10]


def test_grayscale_palette_and_rgba_become_rgb(tmp_path):
    root = tmp_path / "f"
    (root / "train" / "a").mkdir(parents=True)
    Image.fromarray(np.full((32, 32), 77, np.uint8), "L").save(root / "train" / "a" / "g.png")
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, "RGBA").save(root / "train" / "a" / "r.png")
    pal = Image.fromarray(np.full((32, 32, 3), (5, 6, 7), np.uint8)).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(root / "train" / "a" / "p.gif")
    save_image(root / "test" / "a" / "t.png", mode="L")
    ds = load_dataset(str(root))
    assert ds.x_train.shape == (3, 32, 32, 3)
    by_name = dict(zip(["g", "p", "r"], ds.x_train, strict=True))
    assert tuple(by_name["g"][0, 0]) == (77, 77, 77)
    assert tuple(by_name["r"][0, 0]) == (200, 0, 0)  # alpha dropped, colour kept
    assert tuple(by_name["p"][0, 0]) == (5, 6, 7)


def test_non_image_files_are_skipped_and_counted(tmp_path, capsys):
    root = tmp_path / "f"
    write_image_folder(root, n_train=1, n_test=1)
    (root / "train" / "cats" / "notes.txt").write_text("x")
    (root / "train" / "cats" / ".DS_Store").write_bytes(b"\0")
    (root / "LICENSE").write_text("x")
    ds = load_dataset(str(root))
    assert len(ds.y_train) == 2
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "skipped 3 non-image files" in err
    assert any("skipped 3" in n for n in ds.notes)


def test_mixed_sizes_need_resize(tmp_path):
    root = tmp_path / "f"
    save_image(root / "train" / "a" / "0.png", size=32)
    save_image(root / "train" / "a" / "1.png", size=48)
    save_image(root / "test" / "a" / "0.png", size=40)
    with pytest.raises(UserError, match=r"1\.png: image is 48x48, but .*0\.png is 32x32; mixed image sizes"):
        load_dataset(str(root))
    ds = load_dataset(str(root), resize=24)
    assert ds.x_train.shape == (2, 24, 24, 3) and ds.x_test.shape == (1, 24, 24, 3)
    assert any("resized to 24x24" in n for n in ds.notes)
    assert ds.cache_path.endswith("-resize24.npz")


# ----------------------------------------------------------------------------- auto-detection, sample


def test_find_default_source_order(tmp_path, isolated):
    assert find_default_source() is None
    keras, _ = write_python_dir(tmp_path / "home" / ".keras" / "datasets")
    assert find_default_source() == str(keras)
    torchvision, _ = write_python_dir(Path.cwd() / "data")
    assert find_default_source() == str(torchvision)
    ours, arrays = write_binary_dir(isolated)
    assert find_default_source() == str(ours)
    ds = load_dataset()
    check_arrays(ds, arrays)
    assert describe_source(None)["found_by"] == "auto-detected"


def test_empty_folder_is_not_a_copy(isolated):
    (isolated / "cifar-10-batches-py").mkdir(parents=True)
    assert find_default_source() is None


def test_keras_archive_is_found(tmp_path):
    d, arrays = write_python_dir(tmp_path / "src")
    datasets = tmp_path / "home" / ".keras" / "datasets"
    datasets.mkdir(parents=True)
    tarball = tar_dir(d, datasets / "cifar-10-batches-py.tar.gz")
    assert find_default_source() == str(tarball)
    ds = load_dataset()  # not the official MD5: a warning, not an error (it is the user's file)
    check_arrays(ds, arrays)
    assert any("not the official" in n for n in ds.notes)


def test_describe_source(tmp_path):
    d, _ = write_binary_dir(tmp_path / "src")
    info = describe_source(str(d))
    assert info["format"] == "cifar-binary" and info["container"] == "directory" and info["bytes"] > 0
    t = tar_dir(d, tmp_path / "cifar-10-binary.tar.gz")
    info = describe_source(str(t))
    assert (info["format"], info["container"]) == ("cifar-binary", "tar.gz")
    assert info["official_md5"] == sources.BINARY_MD5
    assert describe_source(None)["format"] == "embedded-sample"


@pytest.fixture(scope="module")
def sample_home(tmp_path_factory):
    """One decoded cache of the embedded sample, shared by the tests that use it (decoding takes ~1 s)."""
    return tmp_path_factory.mktemp("sample-home")


def test_fallback_to_embedded_sample(capsys, sample_home, monkeypatch):
    monkeypatch.setenv("ALEXBENCH_DATA", str(sample_home))
    ds = load_dataset()
    err = capsys.readouterr().err
    assert "warning: no CIFAR-10 copy found" in err and "embedded sample" in err
    assert ds.embedded and ds.name == "CIFAR-10 sample (embedded)" and ds.format == "embedded-sample"
    assert ds.classes == CIFAR10_CLASSES
    assert ds.x_train.shape == (5000, 32, 32, 3) and ds.x_test.shape == (1000, 32, 32, 3)
    assert np.bincount(ds.y_train).tolist() == [500] * 10 and np.bincount(ds.y_test).tolist() == [100] * 10
    assert any("embedded sample" in n for n in ds.notes)
    assert ds.describe()["embedded_sample"] is True


def test_cli_fallback_says_sample(capsys, sample_home, monkeypatch):
    monkeypatch.setenv("ALEXBENCH_DATA", str(sample_home))
    rc, out, err = run_cli(capsys, "data")
    assert rc == 0, err
    assert "SMALL EMBEDDED SAMPLE" in out and "(fallback)" in out
    assert "note: embedded sample" in out and "not CIFAR-10 results" in out
    assert "total" in out and "5,000" in out and "1,000" in out


def test_embedded_keyword_and_verify(capsys, sample_home, monkeypatch):
    monkeypatch.setenv("ALEXBENCH_DATA", str(sample_home))
    rc, out, err = run_cli(capsys, "data", "embedded", "--verify")
    assert rc == 0, err
    assert "sample sha256 matches" in out and "6,000 images decoded" in out


def test_shipped_sample_is_small_and_recorded():
    assert sources.SAMPLE_PATH.stat().st_size <= 5_000_000
    recorded = (sources.SAMPLE_PATH.parent / "cifar10-sample.sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(sources.SAMPLE_PATH.read_bytes()).hexdigest()


def test_make_sample_is_stratified_and_reproducible(tmp_path):
    import importlib.util

    # a maintainer's script, outside the package
    spec = importlib.util.spec_from_file_location("make_sample", Path(__file__).parents[1] / "tools" / "make_sample.py")
    make_sample = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_sample)

    src = tmp_path / "jpeg"
    for split, n in (("train", 4), ("test", 2)):
        for k, cls in enumerate(CIFAR10_CLASSES):
            for i in range(n):
                save_image(src / split / cls / f"{i:04d}.jpg", seed=k * 10 + i)
    tarball = tar_dir(src, tmp_path / "copy.tar.gz", arcname="cifar10-jpeg")
    for out in ("a", "b"):
        assert make_sample.main([str(tarball), "--train", "2", "--test", "1", "--out-dir", str(tmp_path / out)]) == 0
    a, b = (tmp_path / x / "cifar10-sample.tar.gz" for x in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
    ds = load_dataset(str(a))
    assert np.bincount(ds.y_train).tolist() == [2] * 10 and np.bincount(ds.y_test).tolist() == [1] * 10
    # original bytes, not re-encoded
    with tarfile.open(a) as tf, tarfile.open(tarball) as orig:
        names = [m.name for m in tf.getmembers() if m.isfile()]
        first = names[0].replace("cifar10-sample/", "cifar10-jpeg/")
        assert tf.extractfile(names[0]).read() == orig.extractfile(first).read()


# ----------------------------------------------------------------------------- cache


def test_second_load_hits_cache_without_decoding_or_hashing(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "f")
    tarball = tar_dir(tmp_path / "f", tmp_path / "f.tar.gz")
    first = sources.load_dataset_info(str(tarball))
    assert not first.cache_hit and Path(first.dataset.cache_path).is_file()
    assert Path(first.dataset.cache_path).name == f"{first.dataset.sha256}.npz"

    def boom(*a, **k):
        raise AssertionError("should be served from the cache")
    monkeypatch.setattr(sources, "_decode", boom)
    monkeypatch.setattr(cache, "hash_file", boom)
    second = sources.load_dataset_info(str(tarball))
    assert second.cache_hit
    np.testing.assert_array_equal(second.dataset.x_train, first.dataset.x_train)
    assert second.dataset.classes == first.dataset.classes and second.dataset.name == first.dataset.name


def test_changed_source_is_rehashed(tmp_path):
    write_image_folder(tmp_path / "f")
    a = load_dataset(str(tmp_path / "f"))
    save_image(tmp_path / "f" / "train" / "cats" / "9.png", seed=99)
    b = load_dataset(str(tmp_path / "f"))
    assert a.sha256 != b.sha256 and len(b.y_train) == len(a.y_train) + 1


def test_directory_hash_ignores_mtime(tmp_path):
    write_image_folder(tmp_path / "f")
    a = load_dataset(str(tmp_path / "f"))
    p = tmp_path / "f" / "test" / "dogs" / "0.png"
    os.utime(p, (1, 1))
    assert load_dataset(str(tmp_path / "f")).sha256 == a.sha256


def test_corrupt_cache_is_ignored_and_rebuilt(tmp_path, capsys):
    write_image_folder(tmp_path / "f")
    ds = load_dataset(str(tmp_path / "f"))
    # a new file in its place: ds's arrays are memory-mapped from the old one, which truncating
    # in place would pull from under them (SIGBUS); alexbench itself only ever replaces files
    Path(ds.cache_path).unlink()
    Path(ds.cache_path).write_bytes(b"PK\x03\x04 not really a zip")
    capsys.readouterr()
    again = sources.load_dataset_info(str(tmp_path / "f"))
    assert not again.cache_hit
    assert "warning:" in capsys.readouterr().err
    np.testing.assert_array_equal(again.dataset.x_train, ds.x_train)
    assert sources.load_dataset_info(str(tmp_path / "f")).cache_hit


def test_full_disk_keeps_previous_cache_and_no_temp(tmp_path, capsys):
    from alexbench.atomic import file_hook

    write_image_folder(tmp_path / "f")
    ds = load_dataset(str(tmp_path / "f"))
    cpath = Path(ds.cache_path)
    # a stale cache (one pixel differs), so that --verify decodes, finds the difference and rewrites it
    stale = {"x_train": ds.x_train.copy(), "y_train": ds.y_train, "x_test": ds.x_test, "y_test": ds.y_test,
             "classes": ds.classes}
    stale["x_train"][0, 0, 0, 0] ^= 0xFF
    assert cache.save_cached(cpath, stale, {"name": ds.name, "format": ds.format, "notes": [],
                                            "source": ds.source, "sha256": ds.sha256})
    before = cpath.read_bytes()

    def full_disk(tmp: Path, target: Path, when: str) -> None:  # the disk fills as the new cache is published
        if target == cpath and when == "renaming":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    capsys.readouterr()
    with file_hook(full_disk):
        info = sources.load_dataset_info(str(tmp_path / "f"), verify=True)
    assert info.verify["cache_matched"] is False and info.verify["cache_rewritten"] is False
    assert "no space left on device" in capsys.readouterr().err
    assert cpath.read_bytes() == before
    assert sorted(p.name for p in cpath.parent.iterdir()) == sorted([cpath.name, "hashes"])
    np.testing.assert_array_equal(info.dataset.x_train, ds.x_train)  # the data itself is the decoded one


def test_unwritable_cache_still_loads(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    monkeypatch.setenv("ALEXBENCH_DATA", str(blocker))
    write_image_folder(tmp_path / "f")
    ds = load_dataset(str(tmp_path / "f"))
    assert len(ds.y_train) == 6 and ds.cache_path is None
    assert "warning: decoded cache not written" in capsys.readouterr().err


def test_verify_rehashes_and_decodes(tmp_path, monkeypatch, capsys):
    d, _ = write_binary_dir(tmp_path / "src")
    t = tar_dir(d, tmp_path / "b.tar")
    load_dataset(str(t))
    calls = []
    real = cache.hash_file
    monkeypatch.setattr(cache, "hash_file", lambda *a, **k: calls.append(a) or real(*a, **k))
    rc, out, err = run_cli(capsys, "data", str(t), "--verify")
    assert rc == 0, err
    assert calls, "verify must recompute the hash"
    assert "sha256 recomputed; 19 images decoded; cache matched the source" in out


# ----------------------------------------------------------------------------- download


@pytest.fixture
def served_archive(tmp_path, monkeypatch):
    """A small binary-format archive behind a file:// URL, set as the official one."""
    d, arrays = write_binary_dir(tmp_path / "server")
    archive = tar_dir(d, tmp_path / "server" / "cifar-10-binary.tar.gz")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(download, "BINARY_URL", archive.as_uri())
    monkeypatch.setattr(download, "BINARY_MD5", md5)
    return archive, arrays


def test_download_then_load(served_archive, isolated, capsys):
    archive, arrays = served_archive
    rc, out, err = run_cli(capsys, "data", "--download")
    assert rc == 0, err
    target = isolated / "cifar-10-binary.tar.gz"
    assert target.read_bytes() == archive.read_bytes()
    assert "(downloaded)" in out and "downloaded from" in out
    assert err == ""  # not a terminal: no progress output
    assert [p.name for p in isolated.iterdir() if p.name.startswith(".")] == []
    # next time it is found in the data home, no download
    assert find_default_source() == str(target)
    ds = load_dataset()
    check_arrays(ds, arrays)


def test_download_md5_mismatch_keeps_bad_file(served_archive, isolated, capsys, monkeypatch):
    archive, _ = served_archive
    monkeypatch.setattr(download, "BINARY_MD5", "0" * 32)
    rc, _, err = run_cli(capsys, "data", "--download")
    got = hashlib.md5(archive.read_bytes()).hexdigest()
    bad = isolated / f"cifar-10-binary.tar.gz.bad-{got}"
    assert_user_error(rc, err, "MD5 mismatch", str(bad))
    assert bad.read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in isolated.iterdir()) == [bad.name]  # no target, no temp file


def test_download_with_opener_and_network_failure(tmp_path, isolated):
    payload = b"x" * 3000

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(payload))}

    path = download.download_cifar10(url="https://example.invalid/c.tgz", md5=hashlib.md5(payload).hexdigest(),
                                     opener=lambda url, timeout: Response(payload))
    assert path.read_bytes() == payload

    def offline(url, timeout):
        import urllib.error
        raise urllib.error.URLError("no route to host")
    (isolated / "cifar-10-binary.tar.gz").unlink()
    with pytest.raises(UserError, match="download failed .*no route to host"):
        download.download_cifar10(opener=offline)
    assert list(isolated.glob("*.tar.gz*")) == []


def test_corrupt_download_in_data_home_is_set_aside(isolated, capsys):
    isolated.mkdir(parents=True)
    (isolated / "cifar-10-binary.tar.gz").write_bytes(b"half a download")
    rc, _, err = run_cli(capsys, "data")
    bad = isolated / f"cifar-10-binary.tar.gz.bad-{hashlib.md5(b'half a download').hexdigest()}"
    assert_user_error(rc, err, "MD5 mismatch", str(bad))
    assert bad.read_bytes() == b"half a download"


# ----------------------------------------------------------------------------- CLI


def test_cli_prints_everything(tmp_path, capsys):
    write_image_folder(tmp_path / "f", classes=("a", "b"), n_train=3, n_test=2)
    rc, out, err = run_cli(capsys, "data", str(tmp_path / "f"))
    assert rc == 0, err
    for needle in ("source:", str(tmp_path / "f"), "format:  image-folder", "sha256:", "32x32x3 uint8",
                   "cache:", "decoded now"):
        assert needle in out, needle
    table = [line.split() for line in out.splitlines() if line.split()[:1] in (["a"], ["b"], ["total"])]
    assert table == [["a", "3", "2"], ["b", "3", "2"], ["total", "6", "4"]]
    rc, out, _ = run_cli(capsys, "data", str(tmp_path / "f"))
    assert rc == 0 and "served from cache" in out


def test_progress_only_on_a_terminal_and_not_under_ci(monkeypatch, capsys, isolated):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert download._want_progress()
    monkeypatch.setenv("CI", "true")
    assert not download._want_progress()
    monkeypatch.delenv("CI")
    payload = b"y" * 5000

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(payload))}
    download.download_cifar10(url="https://example.invalid/c.tgz", md5=hashlib.md5(payload).hexdigest(),
                              opener=lambda url, timeout: Response(payload))
    out, err = capsys.readouterr()
    assert out == "" and "downloading https://example.invalid/c.tgz" in err and "MD5 verified" in err


def test_rich_table(tmp_path, capsys, monkeypatch):
    from alexbench.data import commands

    monkeypatch.setattr(commands, "_use_rich", lambda: True)
    write_image_folder(tmp_path / "f", classes=("a", "b"), n_train=3, n_test=2)
    rc, out, err = run_cli(capsys, "data", str(tmp_path / "f"))
    assert rc == 0, err
    assert "sha256:" in out and "image-folder" in out
    rows = [line for line in out.splitlines() if "│" in line or "|" in line]
    assert any(" a " in r and "3" in r and "2" in r for r in rows) and any("total" in r and "6" in r for r in rows)


def test_verify_reports_official_md5(tmp_path, capsys):
    d, _ = write_binary_dir(tmp_path / "src")
    t = tar_dir(d, tmp_path / "cifar-10-binary.tar.gz")
    rc, out, err = run_cli(capsys, "data", str(t), "--verify")
    assert rc == 0, err
    assert "does NOT match the official one" in out
    assert "warning:" in err and "not the official cifar-10-binary.tar.gz" in err
