"""The wire format between an evaluator and its agent's process (see :mod:`sandboxes.agent`): values as frames.

Each message is one frame: ``u32 n`` (little-endian) then ``n`` bytes: ``u32 m``, a UTF-8 JSON
document of ``m`` bytes, then the arrays' raw bytes one after another. The document is
``[value, [[dtype, shape], ...]]``: the value holds None, bool, int, float (NaN and infinities
included), str, list (tuples are sent as lists) and dict with str keys; an array is
``{"\\u0000": i}``, the i-th entry of the list (each used once, in order; the key "\\x00" is
reserved). Arrays are C-ordered, little-endian, of dtype bool, int8..int64, uint8..uint64 or
float16..float64 (numpy scalars are sent as Python numbers); they arrive as fresh writable
arrays. Limits: a frame at most :data:`MAX_FRAME_BYTES` (16 MiB), nesting at most
:data:`MAX_DEPTH` (64) levels, at most :data:`MAX_NDIM` (32) dimensions. No pickle or marshal:
decoding runs ``json.loads`` and ``numpy.frombuffer`` and nothing of the sender's.

Standard library only; numpy is imported only to decode an array (an array to encode is one
already). Both sides use it: the evaluator (``sandboxes.agent``) and the agent's process
(``sandboxes.agent_server``, which registers this module from its text).
"""

from __future__ import annotations

import json
import struct
import sys
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_FRAME_BYTES", "MAX_NDIM", "U32", "WireError", "decode", "decode_payload", "encode"]

MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
MAX_NDIM = 32
MARK = "\x00"
U32 = struct.Struct("<I")
_DTYPE_CACHE: dict = {}
_SCALARS = frozenset([type(None), bool, int, float, str])
_DTYPES = frozenset(["|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"])
_JSON = json.JSONEncoder(allow_nan=True, separators=(",", ":"))
try:  # the C encoder itself: JSONEncoder.encode makes a new one for every message
    from json.encoder import c_make_encoder, encode_basestring_ascii

    _C_JSON = c_make_encoder(None, None, encode_basestring_ascii, None, ":", ",", False, False, True)
except (ImportError, TypeError):
    _C_JSON = None


def _json_text(doc) -> str:
    """``doc`` (JSON types only, no cycles: _prepare made it) as compact ASCII JSON with NaN and infinities."""
    return "".join(_C_JSON(doc, 0)) if _C_JSON is not None else _JSON.encode(doc)


class WireError(ValueError):
    """A value that cannot be encoded, or bytes that are not a valid frame."""


def _numpy():
    import numpy

    return numpy


def _prepare(obj, arrays: list, depth: int):
    """``obj`` as a JSON-ready value; arrays are replaced by markers and appended to ``arrays``."""
    if depth > MAX_DEPTH:
        raise WireError(f"nested deeper than {MAX_DEPTH} levels")
    kind = type(obj)
    if kind in _SCALARS:
        return obj
    if kind is list or kind is tuple:
        return [x if type(x) in _SCALARS else _prepare(x, arrays, depth + 1) for x in obj]
    if kind is dict:
        out = {}
        for key, value in obj.items():
            if type(key) is not str:
                raise WireError(f"dict keys must be str, got {type(key).__name__}")
            if key == MARK:
                raise WireError("the dict key '\\x00' is reserved")
            out[key] = value if type(value) in _SCALARS else _prepare(value, arrays, depth + 1)
        return out
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray):
        dtype = obj.dtype
        if dtype.str not in _DTYPES and (dtype.kind not in "biuf" or dtype.newbyteorder("<").str not in _DTYPES):
            raise WireError(f"cannot send an array of dtype {obj.dtype} (bool, int, uint or float up to 64 bits)")
        if obj.ndim > MAX_NDIM:
            raise WireError(f"cannot send an array of {obj.ndim} dimensions (at most {MAX_NDIM})")
        arrays.append(obj)
        return {MARK: len(arrays) - 1}
    if np is not None and isinstance(obj, np.generic):
        if obj.dtype.kind in "biuf":
            return obj.item()
        if isinstance(obj, str):
            return str(obj)
        raise WireError(f"cannot send a numpy {type(obj).__name__}")
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [_prepare(x, arrays, depth + 1) for x in obj]
    if isinstance(obj, dict):
        return _prepare(dict(obj.items()), arrays, depth)
    raise WireError(f"cannot send a {type(obj).__name__} (None, bool, int, float, str, list, dict "
                    f"or a numpy array of numbers)")


def encode(value) -> bytes:
    """One frame holding ``value``; WireError if it holds what cannot be sent or is too large."""
    arrays: list = []
    try:
        doc = _prepare(value, arrays, 0)
        meta = []
        blobs = []
        for a in arrays:
            if a.dtype.str not in _DTYPES:
                a = a.astype(a.dtype.newbyteorder("<"))
            meta.append([a.dtype.str, list(a.shape)])
            blobs.append(a.tobytes())
        text = _json_text([doc, meta]).encode()
    except WireError:
        raise
    except RecursionError:
        raise WireError(f"nested deeper than {MAX_DEPTH} levels") from None
    except Exception as exc:  # noqa: BLE001 - e.g. an int too large for JSON
        raise WireError(f"cannot encode: {type(exc).__name__}: {exc}"[:300]) from None
    size = 4 + len(text) + sum(len(b) for b in blobs)
    if size > MAX_FRAME_BYTES:
        raise WireError(f"the message is {size} bytes (at most {MAX_FRAME_BYTES})")
    return b"".join([U32.pack(size), U32.pack(len(text)), text, *blobs])


def _restore(value, arrays: list, used: list, depth: int):
    """Check the decoded document's depth and put the arrays in place of their markers."""
    if depth > MAX_DEPTH:
        raise WireError(f"nested deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if kind is list:
        for i, item in enumerate(value):
            if type(item) is list or type(item) is dict:
                value[i] = _restore(item, arrays, used, depth + 1)
        return value
    if kind is dict:
        if MARK in value:
            index = value[MARK]
            if len(value) != 1 or type(index) is not int or index != used[0] or index >= len(arrays):
                raise WireError("malformed array marker")
            used[0] += 1
            return arrays[index]
        for key, item in value.items():
            if type(item) is list or type(item) is dict:
                value[key] = _restore(item, arrays, used, depth + 1)
        return value
    return value


def _arrays(meta, payload, offset: int) -> list:
    if type(meta) is not list:
        raise WireError("malformed array list")
    if not meta:
        if offset != len(payload):
            raise WireError(f"{len(payload) - offset} bytes after the document")
        return []
    np = _numpy()
    arrays = []
    for entry in meta:
        if type(entry) is not list or len(entry) != 2 or entry[0] not in _DTYPES or type(entry[1]) is not list:
            raise WireError("malformed array description")
        dtype, shape = _DTYPE_CACHE.get(entry[0]) or _DTYPE_CACHE.setdefault(entry[0], np.dtype(entry[0])), entry[1]
        if len(shape) > MAX_NDIM:
            raise WireError(f"an array of {len(shape)} dimensions (at most {MAX_NDIM})")
        count = 1
        for d in shape:
            if type(d) is not int or not 0 <= d <= MAX_FRAME_BYTES:
                raise WireError(f"bad array shape {shape!r}"[:200])
            count *= d
        nbytes = count * dtype.itemsize
        if nbytes > len(payload) - offset:
            raise WireError("array data runs past the end of the frame")
        arrays.append(np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape))
        offset += nbytes
    if offset != len(payload):
        raise WireError(f"{len(payload) - offset} bytes after the arrays")
    return arrays


def decode_payload(payload: bytearray):
    """The value of a frame's payload (what follows its length); WireError on anything else."""
    try:
        if len(payload) < 4:
            raise WireError("frame too short")
        (size,) = U32.unpack_from(payload, 0)
        if size > len(payload) - 4:
            raise WireError("document runs past the end of the frame")
        doc = json.loads(str(memoryview(payload)[4:4 + size], "utf-8"))
        if type(doc) is not list or len(doc) != 2:
            raise WireError("the document is not [value, arrays]")
        value, meta = doc
        arrays = _arrays(meta, payload, 4 + size)
        used = [0]
        if type(value) is list or type(value) is dict:
            value = _restore(value, arrays, used, 0)
        if used[0] != len(arrays):
            raise WireError("an array is not placed in the value")
        return value
    except WireError:
        raise
    except RecursionError:
        raise WireError("nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - hostile bytes: any failure is a wire error
        raise WireError(f"undecodable frame: {type(exc).__name__}: {exc}"[:300]) from None


def decode(frame) -> Any:
    """The value of one whole frame (bytes); WireError if it is not a valid frame."""
    data = bytearray(frame)
    if len(data) < 4:
        raise WireError("frame too short")
    (size,) = U32.unpack_from(data, 0)
    if size > MAX_FRAME_BYTES:
        raise WireError(f"frame of {size} bytes (at most {MAX_FRAME_BYTES})")
    if size != len(data) - 4:
        raise WireError(f"frame length {size} does not match its {len(data) - 4} bytes")
    return decode_payload(data[4:])
