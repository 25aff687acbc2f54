"""Build GGUF files byte by byte, valid or deliberately broken, for the reader/validator tests.

The writer refuses to produce invalid files, so malformed inputs are assembled here from the
layout in spec/gguflite-v1.md, one field at a time::

    data = build([kv("a.b", T.UINT32, u32(7))], [tensor_info("t", [4], GGMLType.F32, 0)],
                 data=f32s(1, 2, 3, 4))
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from gguflite.constants import GGMLType
from gguflite.constants import GGUFValueType as T

_FMT = {T.UINT8: "<B", T.INT8: "<b", T.UINT16: "<H", T.INT16: "<h", T.UINT32: "<I",
        T.INT32: "<i", T.FLOAT32: "<f", T.BOOL: "<B", T.UINT64: "<Q", T.INT64: "<q",
        T.FLOAT64: "<d"}


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def gstr(text: str | bytes, length: int | None = None) -> bytes:
    """A length-prefixed string; ``length`` overrides the declared length."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return u64(len(raw) if length is None else length) + raw


def scalar(vtype: T, value: object) -> bytes:
    """Payload of a scalar value (no type tag)."""
    if vtype == T.STRING:
        return gstr(value)  # type: ignore[arg-type]
    return struct.pack(_FMT[vtype], value)


def array(etype: int, values: Sequence[object], count: int | None = None) -> bytes:
    """Payload of an ARRAY value: element type, count, elements."""
    body = b"".join(scalar(T(etype), v) for v in values) if etype in T._value2member_map_ \
        else b""
    return u32(etype) + u64(len(values) if count is None else count) + body


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    """One metadata entry: key, value type id, payload."""
    return gstr(key) + u32(vtype) + payload


def tensor_info(name: str | bytes, dims: Sequence[int], ttype: int, offset: int) -> bytes:
    """One tensor info: name, n_dims, dims (GGUF order, ne0 first), type id, offset."""
    return gstr(name) + u32(len(dims)) + b"".join(u64(d) for d in dims) + u32(ttype) + u64(offset)


def f32s(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def build(kvs: Sequence[bytes] = (), infos: Sequence[bytes] = (), data: bytes = b"", *,
          magic: bytes = b"GGUF", version: int = 3, n_kv: int | None = None,
          n_tensors: int | None = None, alignment: int = 32, pad_byte: bytes = b"\0") -> bytes:
    """Header + metadata + tensor infos, padded to ``alignment``, then ``data``."""
    head = magic + u32(version) + u64(len(infos) if n_tensors is None else n_tensors) \
        + u64(len(kvs) if n_kv is None else n_kv) + b"".join(kvs) + b"".join(infos)
    return head + pad_byte * (-len(head) % alignment) + data


def one_f32_tensor(name: str = "t", n: int = 4, *, kvs: Sequence[bytes] = ()) -> bytes:
    """A valid file with one F32 tensor of ``n`` elements 0, 1, 2 ..."""
    data = f32s(*range(n))
    return build(kvs, [tensor_info(name, [n], GGMLType.F32, 0)], data + b"\0" * (-len(data) % 32))


__all__ = ["array", "build", "f32s", "gstr", "kv", "one_f32_tensor", "scalar", "tensor_info",
           "u32", "u64"]
