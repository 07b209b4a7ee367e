"""A restricted unpickler for the official CIFAR-10 python-version batches.

Those files are Python 2 ``cPickle`` dumps (protocol 2) of plain dicts::

    {b"batch_label": b"...", b"labels": [6, 9, ...], b"data": <uint8 (10000, 3072)>,
     b"filenames": [b"leptodactylus_pentadactylus_s_000004.png", ...]}

plus ``batches.meta`` with ``b"label_names"``. Pickle opcodes build dicts, lists, tuples,
bytes, str, int, float, bool and None by themselves. The only *globals* such a file
names are numpy's array reconstruction (``numpy.core.multiarray._reconstruct``,
``numpy.ndarray``, ``numpy.dtype``, sometimes ``numpy.core.multiarray.scalar``; ``numpy._core.numeric._frombuffer`` for
protocol 5) and,
when the file was re-pickled under Python 3 with protocol 2, ``_codecs.encode`` (how
protocol 2 spells a ``bytes`` literal).

:func:`safe_loads` never hands a real numpy (or any other) callable to the unpickler.
Each allowed global resolves to a small stand-in defined here: the stand-ins record
what the stream asks for, and :func:`safe_loads` then builds the arrays itself with
``np.frombuffer`` from a plain numeric dtype. Every other global is refused *before*
anything is called, so a hostile ``__reduce__`` (``os.system``, ``builtins.eval``,
``subprocess.Popen``...) never runs. Object arrays are refused too. Before unpickling,
the opcodes are walked once (:func:`_prescan`) to refuse unneeded opcodes and absurd
memo indices.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, NoReturn

import numpy as np

__all__ = ["UnsafePickleError", "safe_load", "safe_loads"]

# Plain numeric dtypes only: no object ("O"), no structured/void, no strings.
_ALLOWED_DTYPES = frozenset({"b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8"})
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray")


class UnsafePickleError(pickle.UnpicklingError):
    """The stream asked for something a CIFAR-10 batch never contains."""


class _NdarrayMarker:
    """Stands in for ``numpy.ndarray``; only ever passed to ``_reconstruct``."""

    def __reduce__(self) -> NoReturn:  # pragma: no cover - never pickled
        raise TypeError("not picklable")


_NDARRAY = _NdarrayMarker()


class _DtypeStub:
    """Stands in for ``numpy.dtype(name, align, copy)`` plus its BUILD state."""

    def __init__(self, name: Any, align: Any = False, copy: Any = True) -> None:
        if isinstance(name, bytes):
            name = name.decode("ascii", "replace")
        if not isinstance(name, str) or name not in _ALLOWED_DTYPES:
            raise UnsafePickleError(f"dtype {name!r} is not allowed (only plain numeric dtypes)")
        self.name = name
        self.byteorder = "|" if name in ("b1", "u1", "i1") else "<"

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byteorder, subdescr, names, fields, elsize, alignment, flags)
        if not isinstance(state, tuple) or len(state) < 2:
            raise UnsafePickleError("malformed dtype state")
        order = state[1]
        if isinstance(order, bytes):
            order = order.decode("ascii", "replace")
        if order not in ("<", ">", "|", "="):
            raise UnsafePickleError(f"dtype byte order {order!r} is not allowed")
        if any(part is not None for part in state[2:5]):
            raise UnsafePickleError("structured or sub-array dtypes are not allowed")
        self.byteorder = order

    def to_numpy(self) -> np.dtype:
        order = "|" if self.name in ("b1", "u1", "i1") else self.byteorder
        return np.dtype(order + self.name)


class _ArrayStub:
    """Stands in for the empty array ``_reconstruct`` returns; BUILD fills it in."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # ndarray state: (version, shape, dtype, is_fortran, rawdata); old pickles omit version.
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise UnsafePickleError("malformed ndarray state")
        shape, dtype, is_fortran, raw = state
        if not isinstance(dtype, _DtypeStub):
            raise UnsafePickleError("ndarray state without an allowed dtype")
        if not (isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise UnsafePickleError(f"malformed ndarray shape {shape!r}")
        if isinstance(raw, str):  # Python 2 str unpickled as text; latin-1 maps it back 1:1
            raw = raw.encode("latin1")
        if not isinstance(raw, (bytes, bytearray)):
            raise UnsafePickleError("ndarray data must be raw bytes (object arrays are refused)")
        np_dtype = dtype.to_numpy()
        expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize
        if len(raw) != expected:
            raise UnsafePickleError(f"ndarray data has {len(raw)} bytes, shape {shape} needs {expected}")
        arr = np.frombuffer(bytes(raw), dtype=np_dtype).reshape(shape, order="F" if is_fortran else "C")
        self.array = np.ascontiguousarray(arr)


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _ArrayStub:
    if subtype is not _NDARRAY:
        raise UnsafePickleError("only plain numpy.ndarray may be reconstructed")
    return _ArrayStub()


def _scalar(dtype: Any, raw: Any = None) -> Any:
    if not isinstance(dtype, _DtypeStub):
        raise UnsafePickleError("numpy scalar without an allowed dtype")
    if isinstance(raw, str):
        raw = raw.encode("latin1")
    np_dtype = dtype.to_numpy()
    if not isinstance(raw, bytes) or len(raw) != np_dtype.itemsize:
        raise UnsafePickleError("malformed numpy scalar")
    return np.frombuffer(raw, dtype=np_dtype)[0].item()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    # Protocol 5 spells an array as numpy._core.numeric._frombuffer(bytes, dtype, shape, order).
    if not isinstance(dtype, _DtypeStub):
        raise UnsafePickleError("numpy buffer without an allowed dtype")
    if isinstance(buf, pickle.PickleBuffer):
        buf = buf.raw().tobytes()
    stub = _ArrayStub()
    stub.__setstate__((tuple(shape) if isinstance(shape, (list, tuple)) else shape, dtype, order == "F", buf))
    return stub.array  # type: ignore[return-value]


def _codecs_encode(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    # Protocol 2 under Python 3 writes b"..." as _codecs.encode("...", "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafePickleError("_codecs.encode is only allowed as latin1 bytes literal")
    return text.encode("latin1")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {("_codecs", "encode"): _codecs_encode}
for _mod in _NUMPY_MODULES:
    _ALLOWED_GLOBALS[(_mod, "_reconstruct")] = _reconstruct
    _ALLOWED_GLOBALS[(_mod, "scalar")] = _scalar
for _mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED_GLOBALS[(_mod, "_frombuffer")] = _frombuffer
_ALLOWED_GLOBALS[("numpy", "ndarray")] = _NDARRAY
_ALLOWED_GLOBALS[("numpy", "dtype")] = _DtypeStub


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refused global {module}.{name} (not part of a CIFAR-10 batch)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent ids are not allowed")


def _finish(obj: Any, depth: int = 0) -> Any:
    """Replace array stand-ins by real arrays; refuse anything that is not plain data."""
    if depth > 16:
        raise UnsafePickleError("nesting too deep")
    if isinstance(obj, _ArrayStub):
        if obj.array is None:
            raise UnsafePickleError("ndarray without state")
        return obj.array
    if isinstance(obj, dict):
        return {_finish(k, depth + 1): _finish(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finish(v, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_finish(v, depth + 1) for v in obj)
    if isinstance(obj, np.ndarray):  # from _frombuffer, already validated
        return obj
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return obj
    raise UnsafePickleError(f"unexpected object of type {type(obj).__name__}")


# Opcodes a CIFAR-10 batch never needs: persistent ids, the copyreg extension registry,
# and the old-style class-instance builders.
_REFUSED_OPCODES = frozenset({"PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"})
_MAX_MEMO_INDEX = 1_000_000  # an official batch uses ~20,000 memo slots


def _prescan(data: bytes) -> None:
    """Walk the opcodes (without executing any) and refuse what a CIFAR batch never has.

    Besides refusing opcodes, this bounds memo indices: CPython's unpickler grows its
    memo to the largest index it is given, so ``LONG_BINPUT 0xFFFFFFFF`` alone would ask
    for tens of gigabytes.
    """
    import pickletools

    for opcode, arg, _pos in pickletools.genops(data):
        if opcode.name in _REFUSED_OPCODES:
            raise UnsafePickleError(f"opcode {opcode.name} is not allowed")
        if opcode.name.endswith(("PUT", "GET")) and isinstance(arg, int) and arg > _MAX_MEMO_INDEX:
            raise UnsafePickleError(f"memo index {arg} is out of range")
        if opcode.name == "FRAME" and isinstance(arg, int) and arg > len(data):
            raise UnsafePickleError("frame longer than the file")
        if opcode.name == "STOP":
            return


def safe_loads(data: bytes) -> Any:
    """Unpickle a CIFAR-10 python-version batch from bytes, safely.

    Returns dicts/lists/tuples/bytes/str/int/float and ``np.ndarray`` (plain numeric
    dtypes) only. Raises :class:`UnsafePickleError` for anything else, and
    ``pickle.UnpicklingError``, ``EOFError``, ``ValueError`` etc. for truncated or corrupt
    streams; the caller turns those into a :class:`~alexbench.errors.UserError` naming
    the file.
    """
    _prescan(data)
    # encoding="bytes" keeps Python 2 str values (the official files) as bytes.
    return _finish(_RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load())


def safe_load(fh: io.BufferedIOBase) -> Any:
    """:func:`safe_loads` on the whole content of a binary file object."""
    return safe_loads(fh.read())
