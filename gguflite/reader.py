"""A memory-mapped GGUF reader that never trusts the file.

Every read is bounds-checked before it happens, every size is computed with Python integers
(no overflow), and nothing is allocated in proportion to a declared count before the bytes
behind it are known to exist. Any malformed input raises a ``FormatError`` subclass that names
the rule (spec/gguflite-v1.md), the key or tensor, and the byte offset.

    >>> with gguflite.open("model.gguf") as f:
    ...     f.metadata["general.architecture"]
    ...     w = f.array("blk.0.attn_q.weight")      # zero-copy, read-only
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .constants import (
    GGML_TYPE_TRAITS,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_READABLE_VERSIONS,
    KEY_ALIGNMENT,
    MAX_ALIGNMENT,
    MAX_DIMS,
    MAX_KEY_LENGTH,
    MAX_STRING_LENGTH,
    SCALAR_DTYPES,
    SCALAR_FORMATS,
    GGMLType,
    GGUFValueType,
)
from .errors import (
    BadMagicError,
    ClosedFileError,
    EndiannessError,
    LimitError,
    MetadataError,
    NotRegularFileError,
    TensorInfoError,
    TruncatedError,
    UnsupportedVersionError,
)
from .metadata import Metadata, MetadataEntry, StringArray

INT64_MAX = (1 << 63) - 1
MAX_EXTENT = 1 << 60  # V11: product of the non-zero dims, so that even a view of 8-byte elements
#   of an empty tensor stays addressable
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SCALAR_STRUCTS = {t: struct.Struct(f) for t, f in SCALAR_FORMATS.items()}
# Smallest on-disk size of one array element of each type (strings: the 8-byte length).
_MIN_ELEMENT_SIZE = {t: s.size for t, s in _SCALAR_STRUCTS.items()} | {GGUFValueType.STRING: 8}
_MIN_KV_SIZE = 8 + 1 + 4  # key length, a one-byte key, value type
_MIN_TENSOR_INFO_SIZE = 8 + 1 + 4 + 4 + 8  # name length, name, n_dims, type, offset
# Numpy dtypes of the element types a tensor can be viewed as directly.
_TENSOR_DTYPES: dict[GGMLType, str] = {
    GGMLType.F32: "<f4",
    GGMLType.F16: "<f2",
    GGMLType.BF16: "<u2",
    GGMLType.F64: "<f8",
    GGMLType.I8: "<i1",
    GGMLType.I16: "<i2",
    GGMLType.I32: "<i4",
    GGMLType.I64: "<i8",
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry, with sizes computed and checked."""

    name: str
    dims: tuple[int, ...]  # GGUF order: ne0 (the row length) first
    type: GGMLType
    offset: int  # relative to the start of the data section
    file_offset: int  # absolute
    nbytes: int
    info_offset: int  # absolute offset of this tensor's header entry

    @property
    def shape(self) -> tuple[int, ...]:
        """NumPy row-major shape: the GGUF dims reversed."""
        return tuple(reversed(self.dims))

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n


class _Cursor:
    """Bounds-checked little-endian reads from a buffer; ``pos`` is an absolute offset."""

    __slots__ = ("buf", "size", "pos")

    def __init__(self, buf: memoryview, size: int):
        self.buf = buf
        self.size = size
        self.pos = 0

    def need(self, n: int, what: str) -> int:
        start = self.pos
        if n > self.size - start:
            raise TruncatedError(
                f"file ends while reading {what}: needs {n} bytes, {self.size - start} left",
                rule="V3",
                offset=start,
            )
        self.pos = start + n
        return start

    def u32(self, what: str) -> int:
        return _U32.unpack_from(self.buf, self.need(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack_from(self.buf, self.need(8, what))[0]

    def string_span(self, what: str, limit: int = MAX_STRING_LENGTH,
                    rule: str = "V6") -> tuple[int, int]:
        """Read a length-prefixed string; return (absolute start, length) of its bytes."""
        at = self.pos
        n = self.u64(f"the length of {what}")
        if n > limit:
            raise LimitError(f"{what} is {n} bytes long, over the limit of {limit}",
                             rule=rule, offset=at)
        return self.need(n, what), n

    def text(self, what: str, rule: str, limit: int = MAX_STRING_LENGTH) -> str:
        start, n = self.string_span(what, limit, rule)
        try:
            return str(self.buf[start : start + n], "utf-8")
        except UnicodeDecodeError as exc:
            raise MetadataError(f"{what} is not valid UTF-8 ({exc.reason})",
                                rule=rule, offset=start + exc.start) from None


def _value_type(cur: _Cursor, what: str) -> GGUFValueType:
    at = cur.pos
    raw = cur.u32(f"the value type of {what}")
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise MetadataError(f"{what} has unknown value type {raw}", rule="V5", offset=at) from None


def _read_value(cur: _Cursor, key: str, vtype: GGUFValueType) -> tuple[Any, GGUFValueType | None]:
    """Read one value of type ``vtype``; return (value, element type for arrays)."""
    what = f"the value of key {key!r}"
    if vtype == GGUFValueType.STRING:
        return cur.text(what, rule="V6"), None
    if vtype != GGUFValueType.ARRAY:
        st = _SCALAR_STRUCTS[vtype]
        at = cur.need(st.size, what)
        value = st.unpack_from(cur.buf, at)[0]
        if vtype == GGUFValueType.BOOL and cur.buf[at] > 1:
            raise MetadataError(f"key {key!r}: bool byte is {cur.buf[at]}, not 0 or 1",
                                rule="V7", offset=at)
        return value, None

    etype = _value_type(cur, f"the elements of key {key!r}")
    if etype == GGUFValueType.ARRAY:
        raise MetadataError(f"key {key!r}: arrays of arrays are not allowed (llama.cpp refuses "
                            "them)", rule="V5", offset=cur.pos - 4)
    at = cur.pos
    count = cur.u64(f"the length of array {key!r}")
    min_size = _MIN_ELEMENT_SIZE[etype]
    if count > (cur.size - cur.pos) // min_size:
        raise TruncatedError(f"key {key!r}: array of {count} {etype.name} elements cannot fit in "
                             f"the {cur.size - cur.pos} bytes left", rule="V3", offset=at)
    if etype == GGUFValueType.STRING:
        return _read_string_array(cur, key, count), etype
    start = cur.need(count * min_size, f"array {key!r}")
    values = np.frombuffer(cur.buf, dtype=SCALAR_DTYPES[etype], count=count, offset=start)
    if etype == GGUFValueType.BOOL:
        bad = np.flatnonzero(values > 1)
        if bad.size:
            raise MetadataError(f"key {key!r}: bool element {int(bad[0])} is {int(values[bad[0]])}"
                                ", not 0 or 1", rule="V7", offset=start + int(bad[0]))
        values = values.view(np.bool_)
    return values, etype


# Arrays up to this many strings are walked in Python (~0.3 us a string, no compile); longer
# ones by the compiled scan in _scan.py (~2 ns a string once Numba's cache is loaded, but
# importing Numba and loading the cache costs ~1 s in a fresh process).
COMPILED_SCAN_MIN_COUNT = 1 << 17


def _read_string_array(cur: _Cursor, key: str, count: int) -> StringArray:
    if count >= COMPILED_SCAN_MIN_COUNT:
        from ._scan import scan_string_array

        u8 = np.frombuffer(cur.buf, dtype=np.uint8)
        offsets, failed_at, failed_pos = scan_string_array(u8, cur.pos, count)
    else:
        offsets, failed_at, failed_pos = _scan_string_array_py(cur.buf, cur.size, cur.pos, count)
    if failed_at >= 0:
        raise TruncatedError(f"key {key!r}: string element {failed_at} runs past the end of "
                             "the file", rule="V3", offset=int(failed_pos))
    starts = offsets[:count]  # (count,) absolute offsets of each element's bytes
    lengths = np.diff(offsets) - 8  # (count,)
    cur.pos = int(offsets[count]) - 8
    return StringArray(cur.buf, key, starts, lengths)


def _scan_string_array_py(buf: memoryview, size: int, pos: int,
                          count: int) -> tuple[np.ndarray, int, int]:
    """The Python twin of ``_scan.scan_string_array`` (same contract, same results)."""
    starts = array("q")
    append = starts.append
    unpack = _U64.unpack_from
    first = pos
    try:
        for _ in range(count):  # the hot loop, unchecked: an overrun shows up below
            pos += 8
            append(pos)
            pos += unpack(buf, pos - 8)[0]
    except (struct.error, OverflowError):  # a prefix past the end, or a huge length
        pos = size + 1
    if pos > size:  # something ran past the end: find which element, checking every step
        return _first_overrun(buf, size, first, count)
    append(pos + 8)
    return np.frombuffer(starts, dtype=np.int64), -1, pos


def _first_overrun(buf: memoryview, size: int, pos: int,
                   count: int) -> tuple[np.ndarray, int, int]:
    """The index and offset of the first element of a string array that runs past the end."""
    i = 0
    while i < count:
        if size - pos < 8:
            break
        n = _U64.unpack_from(buf, pos)[0]
        if n > size - pos - 8:
            break
        pos += 8 + n
        i += 1
    if i == count:  # internal invariant: only called after the fast loop saw an overrun
        raise AssertionError("string array scan: overrun not found")
    return np.zeros(count + 1, np.int64), i, pos


class GGUFFile:
    """An open GGUF file. Use ``gguflite.open(path)``; close it (or use ``with``) when done.

    Attributes
    ----------
    version, alignment, file_size, data_offset:
        Header facts; ``data_offset`` is the absolute start of the tensor data section.
    metadata:
        ``Metadata``: key -> value, plus ``value_type(key)`` / ``element_type(key)``.
    tensors:
        ``dict[str, TensorInfo]`` in file order.
    header_end:
        Absolute offset just past the last tensor info (before the alignment padding).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._file = open_regular(self.path)  # closed in close()
        self._mmap: mmap.mmap | None = None
        try:
            self.file_size = os.fstat(self._file.fileno()).st_size
            if self.file_size:
                self._mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
                self._buf = memoryview(self._mmap)
            else:
                self._buf = memoryview(b"")
            self._parse()
        except BaseException:
            self.close()
            raise

    # -- parsing -----------------------------------------------------------------------------
    def _parse(self) -> None:
        cur = _Cursor(self._buf, self.file_size)
        at = cur.need(4, "the magic")
        magic = bytes(self._buf[at : at + 4])
        if magic != GGUF_MAGIC:
            raise BadMagicError(f"not a GGUF file: magic is {magic!r}, expected {GGUF_MAGIC!r}",
                                rule="V1", offset=0)
        self.version = cur.u32("the version")
        if self.version not in GGUF_READABLE_VERSIONS:
            if self.version & 0xFFFF == 0 and (self.version >> 24) in GGUF_READABLE_VERSIONS:
                raise EndiannessError("this is a big-endian GGUF file; gguflite reads "
                                      "little-endian files only", rule="V2", offset=4)
            raise UnsupportedVersionError(f"GGUF version {self.version} is not supported "
                                          f"(readable: {GGUF_READABLE_VERSIONS})",
                                          rule="V2", offset=4)
        n_tensors = cur.u64("the tensor count")
        n_kv = cur.u64("the metadata key count")
        if n_kv > (self.file_size - cur.pos) // _MIN_KV_SIZE:
            raise TruncatedError(f"the header declares {n_kv} metadata keys, more than the "
                                 f"{self.file_size} byte file can hold", rule="V3", offset=16)
        if n_tensors > (self.file_size - cur.pos) // _MIN_TENSOR_INFO_SIZE:
            raise TruncatedError(f"the header declares {n_tensors} tensors, more than the "
                                 f"{self.file_size} byte file can hold", rule="V3", offset=8)
        self.metadata = Metadata(self._parse_metadata(cur, n_kv))
        self.alignment = self._parse_alignment()
        self.tensors = self._parse_tensor_infos(cur, n_tensors)
        self.header_end = cur.pos
        pad = -cur.pos % self.alignment
        self.data_offset = cur.pos + pad
        if self.tensors and self.data_offset > self.file_size:
            raise TruncatedError("file ends inside the padding before the data section",
                                 rule="V3", offset=cur.pos)
        self._check_tensor_bounds()

    def _parse_metadata(self, cur: _Cursor, n_kv: int) -> dict[str, MetadataEntry]:
        entries: dict[str, MetadataEntry] = {}
        for i in range(n_kv):
            at = cur.pos
            key = cur.text(f"key {i}", rule="V4", limit=MAX_KEY_LENGTH)
            if not key:
                raise MetadataError(f"key {i} is empty", rule="V4", offset=at)
            if key in entries:
                raise MetadataError(f"duplicate key {key!r} (first at byte "
                                    f"{entries[key].offset})", rule="V4", offset=at)
            vtype = _value_type(cur, f"key {key!r}")
            value, etype = _read_value(cur, key, vtype)
            entries[key] = MetadataEntry(value, vtype, etype, at)
        return entries

    def _parse_alignment(self) -> int:
        if KEY_ALIGNMENT not in self.metadata:
            return GGUF_DEFAULT_ALIGNMENT
        entry = self.metadata.entry(KEY_ALIGNMENT)
        if entry.value_type != GGUFValueType.UINT32:
            raise MetadataError(f"{KEY_ALIGNMENT} must be UINT32, not {entry.value_type.name}",
                                rule="V8", offset=entry.offset)
        a = entry.value
        if a == 0 or a & (a - 1) or a > MAX_ALIGNMENT:
            raise MetadataError(f"{KEY_ALIGNMENT} is {a}: must be a power of two <= "
                                f"{MAX_ALIGNMENT}", rule="V8", offset=entry.offset)
        return a

    def _parse_tensor_infos(self, cur: _Cursor, n_tensors: int) -> dict[str, TensorInfo]:
        tensors: dict[str, TensorInfo] = {}
        self._offset_fields: dict[str, int] = {}  # absolute offset of each tensor's offset field
        for i in range(n_tensors):
            at = cur.pos
            start, n = cur.string_span(f"the name of tensor {i}", limit=MAX_KEY_LENGTH,
                                       rule="V9")
            try:
                name = str(self._buf[start : start + n], "utf-8")
            except UnicodeDecodeError:
                raise TensorInfoError(f"tensor {i}: name is not valid UTF-8",
                                      rule="V9", offset=start) from None
            if not name:
                raise TensorInfoError(f"tensor {i} has an empty name", rule="V9", offset=at)
            if name in tensors:
                raise TensorInfoError(f"duplicate tensor name {name!r}", rule="V9", offset=at)
            n_dims_at = cur.pos
            n_dims = cur.u32(f"n_dims of tensor {name!r}")
            if n_dims > MAX_DIMS:
                raise TensorInfoError(f"tensor {name!r} has {n_dims} dimensions; at most "
                                      f"{MAX_DIMS} are allowed", rule="V10", offset=n_dims_at)
            dims = tuple(cur.u64(f"dimension {j} of tensor {name!r}") for j in range(n_dims))
            n_el = 1
            extent = 1  # product of the non-zero dims: bounds every view, even of an empty tensor
            for j, d in enumerate(dims):
                if d > INT64_MAX:
                    raise TensorInfoError(f"tensor {name!r}: dimension {j} is {d}, over "
                                          "INT64_MAX", rule="V11", offset=n_dims_at + 4 + 8 * j)
                n_el *= d
                extent *= d or 1
            if n_el > INT64_MAX:
                raise TensorInfoError(f"tensor {name!r}: shape {dims} has {n_el} elements, "
                                      "over INT64_MAX", rule="V11", offset=n_dims_at)
            if extent > MAX_EXTENT:
                raise TensorInfoError(f"tensor {name!r}: shape {dims}: the product of its "
                                      f"non-zero dimensions is {extent}, over 2^60",
                                      rule="V11", offset=n_dims_at)
            type_at = cur.pos
            raw_type = cur.u32(f"the type of tensor {name!r}")
            try:
                ttype = GGMLType(raw_type)
            except ValueError:
                raise TensorInfoError(f"tensor {name!r} has unknown type id {raw_type}",
                                      rule="V12", offset=type_at) from None
            block_size, type_size = GGML_TYPE_TRAITS[ttype]
            ne0 = dims[0] if dims else 1
            if ne0 % block_size:
                raise TensorInfoError(f"tensor {name!r}: row length {ne0} is not a multiple of "
                                      f"the {ttype.name} block size {block_size}",
                                      rule="V13", offset=n_dims_at)
            offset_at = cur.pos
            offset = cur.u64(f"the data offset of tensor {name!r}")
            tensors[name] = TensorInfo(
                name=name, dims=dims, type=ttype, offset=offset, file_offset=-1,
                nbytes=n_el // block_size * type_size, info_offset=at,
            )
            self._offset_fields[name] = offset_at
        return tensors

    def _check_tensor_bounds(self) -> None:
        data_size = self.file_size - self.data_offset
        fixed: dict[str, TensorInfo] = {}
        for name, ti in self.tensors.items():
            if ti.offset % self.alignment:
                raise TensorInfoError(f"tensor {name!r}: data offset {ti.offset} is not a "
                                      f"multiple of the alignment {self.alignment}",
                                      rule="V14", offset=self._offset_fields[name])
            if ti.offset > data_size or ti.nbytes > data_size - ti.offset:
                raise TensorInfoError(
                    f"tensor {name!r}: data [{ti.offset}, {ti.offset + ti.nbytes}) runs past the "
                    f"end of the data section ({data_size} bytes); the file may be truncated",
                    rule="V15", offset=self._offset_fields[name])
            fixed[name] = TensorInfo(ti.name, ti.dims, ti.type, ti.offset,
                                     self.data_offset + ti.offset, ti.nbytes, ti.info_offset)
        self.tensors = fixed

    # -- access ------------------------------------------------------------------------------
    @property
    def shards(self) -> tuple[GGUFFile, ...]:
        """The physical files: ``(self,)``; a split set (``gguflite.split``) has one per shard."""
        return (self,)

    def shard_of(self, name: str) -> int:
        """Index in ``shards`` of the file that holds tensor ``name``."""
        self._tensor(name)
        return 0

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran; reading tensor data then raises ClosedFileError."""
        return self._file is None

    def _tensor(self, name: str) -> TensorInfo:
        if self.closed:
            raise ClosedFileError(f"{self.path} is closed; tensor {name!r} cannot be read "
                                  "(open it again, or read inside the 'with' block)")
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {self.path}") from None

    def raw(self, name: str) -> np.ndarray:
        """Read-only 1-D uint8 view of a tensor's bytes (zero copy)."""
        ti = self._tensor(name)
        return np.frombuffer(self._buf, dtype=np.uint8, count=ti.nbytes, offset=ti.file_offset)

    def array(self, name: str) -> np.ndarray:
        """Read-only typed view of a tensor.

        F32/F16/F64/I8..I64 -> that dtype with ``shape``; BF16 -> uint16 with ``shape``;
        block types -> uint8 of shape (*shape[:-1], row_bytes).
        """
        ti = self._tensor(name)
        raw = self.raw(name)
        shape = ti.shape or (1,)
        dtype = _TENSOR_DTYPES.get(ti.type)
        if dtype is not None:
            return raw.view(dtype).reshape(shape)
        block_size, type_size = GGML_TYPE_TRAITS[ti.type]
        return raw.reshape(*shape[:-1], shape[-1] // block_size * type_size)

    def dequantize(self, name: str) -> np.ndarray:
        """The tensor decoded to float32, of shape ``shape``.

        ``name`` may also be a KM tensor stored as its ``<name>.km`` companion
        (spec/extensions-km.md): it decodes to its (rows, cols) float32 weight.
        """
        from . import quants
        from .quants import km

        if self.closed:
            self._tensor(name)  # raises ClosedFileError
        if km.is_km_tensor(self, name):
            return km.from_gguf(self, name).dequantize()
        ti = self._tensor(name)
        return quants.dequantize(self.raw(name), ti.type, ti.shape or (1,), name=name)

    def close(self) -> None:
        # Views handed out keep the mapping alive; closing it under them would crash, so
        # release our reference and let the last view free it.
        self._buf = memoryview(b"")
        self._mmap = None
        if self._file is not None:
            self._file.close()
            self._file = None  # type: ignore[assignment]

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GGUFFile({str(self.path)!r}, v{self.version}, {len(self.metadata)} keys, "
                f"{len(self.tensors)} tensors)")


def open_regular(path: str | os.PathLike[str]) -> Any:
    """``path`` opened for binary reading, refusing anything but a regular file at once.

    Opening a FIFO for reading blocks until a writer appears and a device like /dev/zero never
    ends, so the file is opened non-blocking, checked with ``fstat`` (no race with the path
    changing), then switched back to blocking reads.

    Raises
    ------
    NotRegularFileError
        A FIFO, character or block device, or socket.
    OSError
        The file does not exist, is a directory or cannot be read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
        if not stat.S_ISREG(mode):
            kind = ("a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode)
                    or stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode)
                    else "a special file")
            raise NotRegularFileError(f"{path}: is {kind}, not a regular file; give a GGUF "
                                      "file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open(path: str | os.PathLike[str]) -> GGUFFile:  # noqa: A001  (gguflite.open)
    """Open a GGUF file memory-mapped and read-only; raises ``FormatError`` on bad input.

    The first shard of a split set (``name-00001-of-0000N.gguf``) opens the whole set as one
    file (``gguflite.split.SplitFile``); a broken set raises ``SplitError``.
    """
    from .split import open_set  # the one door to split sets

    return open_set(GGUFFile(path))
