"""A streaming GGUF v3 writer that never leaves a half-written file.

Metadata types are explicit: a value that does not fit its declared type is a ``WriterError``,
never a silent truncation or a guess. Tensors are declared first (name, shape, type, data or a
zero-argument producer); on ``write()`` the header is laid out from the declarations, then the
data is written one tensor at a time, so peak memory is one tensor. The file goes to a
temporary sibling, is fsynced and renamed into place; a failure at any point (an exception,
KeyboardInterrupt, SystemExit: the CLI turns SIGTERM into one) leaves neither a partial file
under the target name nor a clobbered existing file, and removes the temporary file.

Replacing an existing file keeps its permission bits (and owner and group, where the OS lets
us), and a symlink is written through: its target is replaced, the link stays. Temporary files
are named ``.<name>.gguflite-<host>-<pid>-<random>.tmp``; one left behind by a writer that was
killed outright (SIGKILL, power loss) is removed by the next write into the same folder on the
same host once its process is gone (``stale_temp_files`` lists them).

    >>> with GGUFWriter("out.gguf") as w:
    ...     w.add("general.architecture", "llama", GGUFValueType.STRING)
    ...     w.add_tensor("output_norm.weight", shape=(576,), type=GGMLType.F32, data=norm)
"""

from __future__ import annotations

import math
import os
import re
import secrets
import socket
import stat
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .constants import (
    GGML_TYPE_TRAITS,
    GGUF_DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    GGUF_VERSION,
    INTEGER_RANGES,
    KEY_ALIGNMENT,
    MAX_ALIGNMENT,
    MAX_DIMS,
    MAX_KEY_LENGTH,
    MAX_TENSOR_NAME_LENGTH,
    SCALAR_DTYPES,
    SCALAR_FORMATS,
    GGMLType,
    GGUFValueType,
)
from .errors import WriterError

TensorData = np.ndarray | Callable[[], np.ndarray]
MetadataItem = tuple[str, Any, GGUFValueType, "GGUFValueType | None"]
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# dtype a tensor of each type may be given in, besides raw uint8 bytes
_NATIVE_DTYPES = {
    GGMLType.F32: np.dtype("<f4"),
    GGMLType.F16: np.dtype("<f2"),
    GGMLType.BF16: np.dtype("<u2"),
    GGMLType.F64: np.dtype("<f8"),
    GGMLType.I8: np.dtype("<i1"),
    GGMLType.I16: np.dtype("<i2"),
    GGMLType.I32: np.dtype("<i4"),
    GGMLType.I64: np.dtype("<i8"),
}


@dataclass
class _PendingTensor:
    name: str
    shape: tuple[int, ...]  # numpy row-major
    type: GGMLType
    nbytes: int
    data: TensorData


def _encode_key(key: str, what: str = "key") -> bytes:
    if not isinstance(key, str) or not key:
        raise WriterError(f"{what} must be a non-empty str, got {key!r}")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise WriterError(f"{what} {key!r} is not encodable as UTF-8: {exc.reason}") from None
    if len(raw) > MAX_KEY_LENGTH:
        raise WriterError(f"{what} is {len(raw)} bytes; the limit is {MAX_KEY_LENGTH}")
    return raw


def _encode_string(value: Any, key: str) -> bytes:
    if not isinstance(value, str):
        raise WriterError(f"key {key!r}: STRING value must be str, got {type(value).__name__}")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise WriterError(f"key {key!r}: string is not encodable as UTF-8: {exc.reason}") from None
    return struct.pack("<Q", len(raw)) + raw


def _check_scalar(value: Any, vtype: GGUFValueType, key: str) -> Any:
    """Return ``value`` as the Python scalar to pack, or raise if it does not fit ``vtype``."""
    if vtype == GGUFValueType.BOOL:
        if not isinstance(value, bool | np.bool_):
            raise WriterError(f"key {key!r}: BOOL value must be bool, got {value!r}")
        return bool(value)
    if vtype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
            raise WriterError(f"key {key!r}: {vtype.name} value must be a number, got {value!r}")
        f = float(value)
        if vtype == GGUFValueType.FLOAT32 and math.isfinite(f) and abs(f) > _FLOAT32_MAX:
            raise WriterError(f"key {key!r}: {f!r} overflows FLOAT32")
        return f
    lo, hi = INTEGER_RANGES[vtype]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise WriterError(f"key {key!r}: {vtype.name} value must be an int, got {value!r}")
    if not lo <= int(value) <= hi:
        raise WriterError(f"key {key!r}: {int(value)} does not fit {vtype.name} [{lo}, {hi}]")
    return int(value)


def encode_value(key: str, value: Any, vtype: GGUFValueType,
                 element_type: GGUFValueType | None = None) -> bytes:
    """The on-disk bytes of one value (type tag included), checked against its declared type."""
    vtype = GGUFValueType(vtype)
    tag = struct.pack("<I", vtype)
    if vtype == GGUFValueType.STRING:
        return tag + _encode_string(value, key)
    if vtype != GGUFValueType.ARRAY:
        if element_type is not None:
            raise WriterError(f"key {key!r}: element_type is only for ARRAY values")
        return tag + struct.pack(SCALAR_FORMATS[vtype], _check_scalar(value, vtype, key))
    if element_type is None:
        raise WriterError(f"key {key!r}: an ARRAY value needs an explicit element_type")
    etype = GGUFValueType(element_type)
    if etype == GGUFValueType.ARRAY:
        raise WriterError(f"key {key!r}: arrays of arrays are not allowed (llama.cpp refuses "
                          "them; spec rule V5)")
    if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
        raise WriterError(f"key {key!r}: ARRAY value must be a sequence, got "
                          f"{type(value).__name__}")
    head = tag + struct.pack("<IQ", etype, len(value))
    if etype == GGUFValueType.STRING:
        return head + b"".join(_encode_string(v, f"{key}[{i}]") for i, v in enumerate(value))
    return head + _encode_numeric_array(key, value, etype)


def _encode_numeric_array(key: str, value: Any, etype: GGUFValueType) -> bytes:
    if etype in INTEGER_RANGES and not isinstance(value, np.ndarray):
        # NumPy would turn [0, 2**64 - 1] into float64; keep Python ints exact.
        if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in value):
            raise WriterError(f"key {key!r}: {etype.name} array needs ints")
        value = np.array([int(v) for v in value], dtype=object)
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise WriterError(f"key {key!r}: array must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        return b""
    kind = arr.dtype.kind
    if etype == GGUFValueType.BOOL:
        if kind != "b":
            raise WriterError(f"key {key!r}: BOOL array elements must be bool, got {arr.dtype}")
    elif etype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        if kind not in "iuf":
            raise WriterError(f"key {key!r}: {etype.name} array needs numbers, got {arr.dtype}")
        f = arr.astype(np.float64)
        if etype == GGUFValueType.FLOAT32 and bool(np.any(np.isfinite(f) &
                                                            (np.abs(f) > _FLOAT32_MAX))):
            raise WriterError(f"key {key!r}: an element overflows FLOAT32")
    else:
        if kind not in "iu":
            if arr.dtype == object and all(isinstance(v, int) and not isinstance(v, bool)
                                           for v in arr):
                pass
            else:
                raise WriterError(f"key {key!r}: {etype.name} array needs ints, got {arr.dtype}")
        lo, hi = INTEGER_RANGES[etype]
        as_int = [int(v) for v in (arr.min(), arr.max())]
        if as_int[0] < lo or as_int[1] > hi:
            raise WriterError(f"key {key!r}: values [{as_int[0]}, {as_int[1]}] do not fit "
                              f"{etype.name} [{lo}, {hi}]")
    return np.ascontiguousarray(arr.astype(SCALAR_DTYPES[etype])).tobytes()


class GGUFWriter:
    """Declare metadata and tensors, then ``write()`` (or leave the ``with`` block)."""

    def __init__(self, path: str | os.PathLike[str], *, alignment: int = GGUF_DEFAULT_ALIGNMENT,
                 on_tensor: Callable[[str, int], None] | None = None):
        if alignment <= 0 or alignment & (alignment - 1) or alignment > MAX_ALIGNMENT:
            raise WriterError(f"alignment {alignment} must be a power of two <= {MAX_ALIGNMENT}")
        self.path = Path(path)
        self.alignment = alignment
        self.on_tensor = on_tensor  # progress callback: (tensor name, bytes written)
        self._kv: dict[str, bytes] = {}
        self._tensors: dict[str, _PendingTensor] = {}
        self._written = False
        if alignment != GGUF_DEFAULT_ALIGNMENT:
            self.add(KEY_ALIGNMENT, alignment, GGUFValueType.UINT32)

    # -- declaring ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._written:
            raise WriterError(f"{self.path} was already written by this writer; declare "
                              "everything before write()")

    def add(self, key: str, value: Any, vtype: GGUFValueType,
            element_type: GGUFValueType | None = None) -> None:
        """Add one metadata key with an explicit type; ``element_type`` for arrays."""
        self._check_open()
        raw_key = _encode_key(key)
        for t in (vtype, element_type):
            if t is not None and not _is_value_type(t):
                raise WriterError(f"key {key!r}: unknown value type {t!r} (one of "
                                  f"{', '.join(v.name for v in GGUFValueType)})")
        if key in self._kv:
            raise WriterError(f"duplicate key {key!r}")
        if key == KEY_ALIGNMENT and (vtype != GGUFValueType.UINT32 or value != self.alignment):
            raise WriterError(f"{KEY_ALIGNMENT} is set by GGUFWriter(alignment=...); got "
                              f"{value!r} as {GGUFValueType(vtype).name}")
        self._kv[key] = struct.pack("<Q", len(raw_key)) + raw_key + encode_value(
            key, value, vtype, element_type)

    def add_items(self, items: Iterable[MetadataItem]) -> None:
        """Add (key, value, type, element type) tuples, e.g. a tokenizer export."""
        for key, value, vtype, etype in items:
            self.add(key, value, vtype, etype)

    def add_from(self, source: Any, key: str) -> None:
        """Copy ``key`` with its declared type from an open ``GGUFFile``."""
        md = source.metadata
        value = md[key]
        etype = md.element_type(key)
        if etype == GGUFValueType.STRING:
            value = value.tolist()
        self.add(key, value, md.value_type(key), etype)

    def remove(self, key: str) -> None:
        self._check_open()
        self._kv.pop(key, None)

    @property
    def keys(self) -> list[str]:
        return list(self._kv)

    def add_tensor(self, name: str, *, shape: Sequence[int], type: GGMLType,  # noqa: A002
                   data: TensorData) -> None:
        """Declare a tensor of numpy row-major ``shape``; ``data`` is an array or a producer."""
        self._check_open()
        raw = _encode_key(name, "tensor name")
        if len(raw) > MAX_TENSOR_NAME_LENGTH:
            raise WriterError(f"tensor name {name!r} is {len(raw)} bytes; llama.cpp allows at "
                              f"most {MAX_TENSOR_NAME_LENGTH}")
        if name in self._tensors:
            raise WriterError(f"duplicate tensor name {name!r}")
        try:
            ttype = GGMLType(type)
        except ValueError:
            raise WriterError(f"tensor {name!r}: unknown tensor type {type!r}") from None
        shape = tuple(shape)
        if not 1 <= len(shape) <= MAX_DIMS or not all(
                isinstance(d, int | np.integer) and d >= 0 for d in shape):
            raise WriterError(f"tensor {name!r}: shape {shape} must have 1 to {MAX_DIMS} "
                              "non-negative integer dimensions")
        shape = tuple(int(d) for d in shape)
        block_size, type_size = GGML_TYPE_TRAITS[ttype]
        if shape[-1] % block_size:
            raise WriterError(f"tensor {name!r}: row length {shape[-1]} is not a multiple of the "
                              f"{ttype.name} block size {block_size}")
        nbytes = math.prod(shape) // block_size * type_size
        if not callable(data):
            self._check_data(name, data, shape, ttype, nbytes)
        self._tensors[name] = _PendingTensor(name, shape, ttype, nbytes, data)

    @staticmethod
    def _check_data(name: str, data: Any, shape: tuple[int, ...], ttype: GGMLType,
                    nbytes: int) -> np.ndarray:
        if not isinstance(data, np.ndarray):
            raise WriterError(f"tensor {name!r}: data must be a numpy array, got "
                              f"{type(data).__name__}")
        native = _NATIVE_DTYPES.get(ttype)
        if data.dtype == np.uint8:  # raw bytes, valid for any type
            if data.nbytes != nbytes:
                raise WriterError(f"tensor {name!r}: {ttype.name} {shape} needs {nbytes} bytes, "
                                  f"got {data.nbytes}")
            return data
        if native is None:
            raise WriterError(f"tensor {name!r}: {ttype.name} data must be uint8 bytes, got "
                              f"{data.dtype}")
        if data.dtype.newbyteorder("<") != native or data.dtype.byteorder == ">":
            raise WriterError(f"tensor {name!r}: {ttype.name} data must be {native}, got "
                              f"{data.dtype}; convert explicitly")
        if data.size != math.prod(shape):
            raise WriterError(f"tensor {name!r}: data has {data.size} elements, shape {shape} "
                              f"needs {math.prod(shape)}")
        return data

    # -- writing -----------------------------------------------------------------------------
    def _header(self) -> bytes:
        parts = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(self._tensors), len(self._kv))]
        parts.extend(self._kv.values())
        offset = 0
        for t in self._tensors.values():
            raw = t.name.encode("utf-8")
            dims = tuple(reversed(t.shape))  # GGUF order: ne0 first
            parts.append(struct.pack("<Q", len(raw)) + raw)
            parts.append(struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, t.type, offset))
            offset += t.nbytes + (-t.nbytes % self.alignment)
        header = b"".join(parts)
        return header + b"\0" * (-len(header) % self.alignment)

    def write(self) -> Path:
        """Write the file atomically; returns its path."""
        if self._written:
            raise WriterError(f"{self.path} was already written by this writer")
        target = _write_target(self.path)  # through a symlink to the file it names
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(target.parent)
        try:
            existing: os.stat_result | None = os.stat(target)
        except FileNotFoundError:
            existing = None
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            what = "a directory" if stat.S_ISDIR(existing.st_mode) else "not a regular file"
            raise WriterError(f"{self.path} is {what}; give a file name to write")
        # The name is chosen before the file exists and the file is created inside the `try`:
        # a signal at any instant finds the cleanup in place. <host>-<pid> makes the name
        # unique among live writers; the random part, among this process's writes.
        tmp = target.parent / f"{_temp_prefix(target)}{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                         0o600)
            _set_mode(fd, existing)
            with os.fdopen(fd, "wb") as out:
                out.write(self._header())
                for t in self._tensors.values():
                    data = t.data() if callable(t.data) else t.data
                    arr = self._check_data(t.name, data, t.shape, t.type, t.nbytes)
                    out.write(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))  # (nbytes,)
                    out.write(b"\0" * (-t.nbytes % self.alignment))
                    if self.on_tensor is not None:
                        self.on_tensor(t.name, t.nbytes)
                    del data, arr
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.filename is None:
                exc.filename = str(self.path)  # a full disk: say which output
            raise
        _fsync_dir(target.parent)
        self._written = True
        return self.path

    def __enter__(self) -> GGUFWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None and not self._written:
            self.write()


def _is_value_type(t: Any) -> bool:
    try:
        GGUFValueType(t)
    except ValueError:
        return False
    return True


def _write_target(path: Path) -> Path:
    """The file to replace: ``path``, or the file its symlink(s) point to."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _set_mode(fd: int, existing: os.stat_result | None) -> None:
    """Give the temporary file the mode (and owner) of the file it replaces, else the usual
    0666 & ~umask (mkstemp makes 0600)."""
    if not hasattr(os, "fchmod"):  # pragma: no cover - not POSIX
        return
    if existing is None:
        os.fchmod(fd, 0o666 & ~_umask())
        return
    if hasattr(os, "fchown") and (existing.st_uid, existing.st_gid) != (os.getuid(),
                                                                         os.getgid()):
        for uid, gid in ((existing.st_uid, existing.st_gid), (-1, existing.st_gid)):
            try:  # another owner needs privileges; the group, membership
                os.fchown(fd, uid, gid)
                break
            except OSError:
                continue
    os.fchmod(fd, stat.S_IMODE(existing.st_mode))


_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
_TEMP_RE = re.compile(r"^\..*\.gguflite-(?P<host>[A-Za-z0-9]*)-(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")


def _temp_prefix(target: Path) -> str:
    """``.<name>.gguflite-<host>-<pid>-`` (the name cut so the whole stays under 255 bytes)."""
    name = target.name.encode("utf-8", "surrogateescape")[:120].decode("utf-8", "ignore")
    return f".{name}.gguflite-{_HOST}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's live process (or not a pid we can ask about): keep
    return True


def stale_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Temporary files a gguflite writer on this host left in ``directory`` before it was
    killed outright (its process is gone)."""
    found = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if (m and m["host"] == _HOST and int(m["pid"]) != os.getpid()
                and entry.is_file(follow_symlinks=False) and not _alive(int(m["pid"]))):
            found.append(Path(entry.path))
    return found


def remove_stale_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove :func:`stale_temp_files` of ``directory``; returns the ones removed."""
    removed = []
    for p in stale_temp_files(directory):
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform/filesystem
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
