"""Split sets: one logical GGUF file stored as shards ``name-00001-of-0000N.gguf``.

llama.cpp's ``llama-gguf-split`` and gguf-py's ``GGUFWriter(split_max_size=...)`` (behind
``convert_hf_to_gguf.py --split-max-size``) store a large model as N ordinary GGUF files, each
with its own header, tensor infos and aligned data section::

    NAME-00001-of-0000N.gguf   all metadata, then split.no = 0, split.count = N,
                               split.tensors.count = T (the total); its share of the tensors
    NAME-0000K-of-0000N.gguf   only split.no = K - 1, split.count = N, split.tensors.count = T;
                               its share of the tensors (declaration order continues)

Reading: ``gguflite.open(first_shard)`` opens every shard (each memory-mapped and checked
against V1-V15 like any file) and returns a ``SplitFile``: metadata from the first shard,
``tensors`` from all of them in shard order, ``raw``/``array``/``dequantize`` served from the
shard that holds the tensor. A broken set raises ``SplitError`` naming the shard and the rule
(S1-S8, spec/gguflite-v1.md section 14). A set of one (``split.count`` <= 1) is a plain file,
as for llama.cpp.

Writing: ``write_split(writer, SplitLimits(max_size=..., max_tensors=...))`` writes a declared
``GGUFWriter`` as shards, all or nothing: every shard goes to a temporary sibling first (itself
written atomically), and only when all are complete are they renamed into place; a failure
removes every temporary.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import KEY_ALIGNMENT, GGUFValueType
from .errors import FormatError, SplitError, WriterError
from .keys import KEY_SPLIT_COUNT, KEY_SPLIT_NO, KEY_SPLIT_TENSORS_COUNT, SPLIT_PREFIX
from .reader import GGUFFile, TensorInfo
from .writer import GGUFWriter, _fsync_dir

log = logging.getLogger(__name__)

T = GGUFValueType
SHARD_NAME = "{prefix}-{no:05d}-of-{count:05d}.gguf"  # llama.cpp's llama_split_path
_SHARD_NAME_RE = re.compile(r"(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf")
MAX_SHARDS = (1 << 16) - 1  # split.count is a UINT16

RULES: dict[str, str] = {
    "S1": "split.count and split.no are UINT16, split.tensors.count is INT32 and >= 0, "
          "split.no < split.count",
    "S2": "a split set is opened at its first shard (split.no = 0)",
    "S3": "the first shard is named PREFIX-00001-of-NNNNN.gguf, NNNNN = split.count",
    "S4": "every shard PREFIX-KKKKK-of-NNNNN.gguf, K = 2..N, exists and is a valid GGUF file",
    "S5": "shard K has split.no = K - 1 and the first shard's split.count and "
          "split.tensors.count",
    "S6": "no file PREFIX-KKKKK-of-NNNNN.gguf with K outside 1..N sits beside the set",
    "S7": "tensor names are unique across the shards",
    "S8": "the shards hold split.tensors.count tensors in all",
    "S9": "shards after the first hold only split.* keys and general.alignment (warning: "
          "llama.cpp ignores the others)",
}


def shard_path(path: str | os.PathLike[str], no: int, count: int) -> Path:
    """``dir/STEM-0000no-of-0000count.gguf`` for the output ``path`` (``no`` from 1).

    As gguf-py's ``GGUFWriter``: the stem of ``path`` (``model.gguf`` -> ``model``) is the prefix.
    """
    p = Path(path)
    return p.with_name(SHARD_NAME.format(prefix=p.stem, no=no, count=count))


# -- reading ---------------------------------------------------------------------------------
class SplitFile(GGUFFile):
    """The shards of a split set presented as one ``GGUFFile``.

    ``metadata``, ``version``, ``alignment``, ``data_offset`` and ``header_end`` are the first
    shard's; ``file_size`` is the total of all shards; ``tensors`` holds every shard's tensors
    in shard order (a ``TensorInfo``'s ``file_offset`` is absolute within its own shard, see
    ``shard_of``). ``shards`` are the open physical files.
    """

    def __init__(self, shards: Sequence[GGUFFile]):  # no super().__init__: shards are open
        first = shards[0]
        self.path = first.path
        self._shards = tuple(shards)
        self._file = None
        self._mmap = None
        self._buf = first._buf  # noqa: SLF001  (same package; the first shard's mapping)
        self.version = first.version
        self.alignment = first.alignment
        self.metadata = first.metadata
        self.header_end = first.header_end
        self.data_offset = first.data_offset
        self.file_size = sum(s.file_size for s in shards)
        self.tensors: dict[str, TensorInfo] = {}
        self._where: dict[str, int] = {}
        for k, shard in enumerate(shards):
            for name, ti in shard.tensors.items():
                if name in self._where:
                    raise SplitError(
                        f"{shard.path.name}: tensor {name!r} is also in "
                        f"{shards[self._where[name]].path.name}", rule="S7",
                        offset=ti.info_offset)
                self.tensors[name] = ti
                self._where[name] = k

    @property
    def shards(self) -> tuple[GGUFFile, ...]:
        return self._shards

    @property
    def closed(self) -> bool:
        return self._shards[0].closed

    def shard_of(self, name: str) -> int:
        self._tensor(name)
        return self._where[name]

    def raw(self, name: str) -> np.ndarray:
        """Read-only 1-D uint8 view of a tensor's bytes in the shard that holds it."""
        self._tensor(name)
        return self._shards[self._where[name]].raw(name)

    def close(self) -> None:
        self._buf = memoryview(b"")
        for shard in self._shards:
            shard.close()

    def __repr__(self) -> str:
        return (f"SplitFile({str(self.path)!r}, {len(self._shards)} shards, "
                f"{len(self.metadata)} keys, {len(self.tensors)} tensors)")


def _split_key(f: GGUFFile, key: str, vtype: GGUFValueType) -> int:
    """The value of split key ``key`` in shard ``f``, which must be present with type ``vtype``."""
    if key not in f.metadata:
        raise SplitError(f"{f.path.name}: {key} is missing from a split shard", rule="S1")
    entry = f.metadata.entry(key)
    if entry.value_type != vtype:
        raise SplitError(f"{f.path.name}: {key} is {entry.value_type.name}, must be "
                         f"{vtype.name} (llama.cpp refuses another type)", rule="S1",
                         offset=entry.offset)
    return int(entry.value)


def _split_header(f: GGUFFile) -> tuple[int, int, int]:
    """(split.no, split.count, split.tensors.count) of shard ``f`` (rule S1)."""
    count = _split_key(f, KEY_SPLIT_COUNT, T.UINT16)
    no = _split_key(f, KEY_SPLIT_NO, T.UINT16)
    n_tensors = _split_key(f, KEY_SPLIT_TENSORS_COUNT, T.INT32)
    if no >= count:
        raise SplitError(f"{f.path.name}: split.no is {no}, but split.count is {count}",
                         rule="S1", offset=f.metadata.entry(KEY_SPLIT_NO).offset)
    if n_tensors < 0:
        raise SplitError(f"{f.path.name}: split.tensors.count is {n_tensors}", rule="S1",
                         offset=f.metadata.entry(KEY_SPLIT_TENSORS_COUNT).offset)
    return no, count, n_tensors


def open_set(first: GGUFFile) -> GGUFFile:
    """``first`` itself if it is a plain file, else its whole split set as a ``SplitFile``.

    Closes ``first`` and every shard opened if the set is broken (``SplitError``, or the
    ``FormatError`` of a shard, its message naming the shard).
    """
    if KEY_SPLIT_COUNT not in first.metadata:
        return first
    shards = [first]
    try:
        count = _split_key(first, KEY_SPLIT_COUNT, T.UINT16)
        if count <= 1:  # llama.cpp loads a set of one as a plain file
            return first
        no, count, n_tensors = _split_header(first)
        name = first.path.name
        if no != 0:
            raise SplitError(f"{name} is shard {no + 1} of {count} of a split set; open the "
                             f"first shard, {_sibling(first.path, 1, count)}", rule="S2")
        m = _SHARD_NAME_RE.fullmatch(name)
        if m is None or int(m["no"]) != 1 or int(m["count"]) != count:
            raise SplitError(f"{name} is the first of {count} shards but is not named "
                             f"PREFIX-00001-of-{count:05d}.gguf, so its other shards cannot be "
                             "found (llama.cpp derives their names from it)", rule="S3")
        prefix = m["prefix"]
        _check_no_extra(first.path, prefix, count)
        for k in range(2, count + 1):
            shards.append(_open_shard(first.path.with_name(
                SHARD_NAME.format(prefix=prefix, no=k, count=count)), k, count, n_tensors))
        total = sum(len(s.tensors) for s in shards)
        merged = SplitFile(shards)  # S7
        if total != n_tensors:
            raise SplitError(f"{name}: split.tensors.count is {n_tensors}, but the {count} "
                             f"shards hold {total} tensors", rule="S8",
                             offset=first.metadata.entry(KEY_SPLIT_TENSORS_COUNT).offset)
        return merged
    except BaseException:
        for shard in shards:
            shard.close()
        raise


def _sibling(path: Path, no: int, count: int) -> str:
    m = _SHARD_NAME_RE.fullmatch(path.name)
    prefix = m["prefix"] if m else path.stem
    return SHARD_NAME.format(prefix=prefix, no=no, count=count)


def _check_no_extra(first: Path, prefix: str, count: int) -> None:
    """S6: a file of the same set pattern numbered outside 1..count is a leftover or a mix-up.

    Best effort: a directory that cannot be listed is not checked (llama.cpp never looks).
    """
    try:
        entries = list(os.scandir(first.parent))
    except OSError:
        return
    for entry in entries:
        m = _SHARD_NAME_RE.fullmatch(entry.name)
        if m and m["prefix"] == prefix and int(m["count"]) == count \
                and not 1 <= int(m["no"]) <= count:
            raise SplitError(f"{entry.name} sits beside a set of {count} shards but is numbered "
                             f"outside 1..{count}: remove it or fix the set", rule="S6")


def _open_shard(path: Path, k: int, count: int, n_tensors: int) -> GGUFFile:
    """Open shard ``k`` of ``count`` and check its split keys (S4, S5)."""
    if not path.exists():
        raise SplitError(f"shard {k} of {count} is missing: expected {path.name} beside the "
                         "first shard", rule="S4")
    if not path.is_file():
        raise SplitError(f"shard {k} of {count}, {path.name}, is not a regular file",
                         rule="S4")
    try:
        shard = GGUFFile(path)
    except FormatError as exc:  # the same error, naming the shard
        raise type(exc)(f"shard {k} of {count} ({path.name}): {exc.detail}", rule=exc.rule,
                        offset=exc.offset) from None
    try:
        if KEY_SPLIT_COUNT not in shard.metadata:
            raise SplitError(f"{path.name} has no split keys: it is not shard {k} of this set",
                             rule="S5")
        no, its_count, its_tensors = _split_header(shard)
        if its_count != count or its_tensors != n_tensors:
            raise SplitError(f"{path.name} says split.count {its_count}, split.tensors.count "
                             f"{its_tensors}; the first shard says {count}, {n_tensors}: it "
                             "belongs to another split", rule="S5")
        if no != k - 1:
            raise SplitError(f"{path.name} has split.no {no}, expected {k - 1}: the shards are "
                             "renamed or reordered", rule="S5",
                             offset=shard.metadata.entry(KEY_SPLIT_NO).offset)
    except BaseException:
        shard.close()
        raise
    return shard


def is_later_shard(f: GGUFFile) -> bool:
    """Whether ``f`` says it is a shard after the first (split.no > 0) of a split set."""
    md = f.metadata
    return (KEY_SPLIT_NO in md and md.value_type(KEY_SPLIT_NO) == T.UINT16
            and md[KEY_SPLIT_NO] > 0)


def extra_keys(shard: GGUFFile) -> list[str]:
    """Keys of a shard after the first that llama.cpp ignores (S9): all but split.* and
    general.alignment."""
    return [k for k in shard.metadata if not k.startswith(SPLIT_PREFIX) and k != KEY_ALIGNMENT]


# -- writing ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SplitLimits:
    """Where a writer starts a new shard (as gguf-py's ``GGUFWriter``).

    max_size:
        Bytes of tensor data (unpadded) per shard; a tensor larger than this gets a shard of
        its own. ``None``: no limit.
    max_tensors:
        Tensors per shard. ``None``: no limit.
    """

    max_size: int | None = None
    max_tensors: int | None = None

    def __post_init__(self) -> None:
        for what, v in (("split max size", self.max_size),
                        ("split max tensors", self.max_tensors)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise WriterError(f"{what} must be a positive integer, got {v!r}")


def parse_size(text: str) -> int:
    """``"2G"`` -> 2_000_000_000: a positive integer, optionally with K, M or G (powers of
    1000, as ``llama-gguf-split --split-max-size`` and ``convert_hf_to_gguf.py``)."""
    t = text.strip()
    scale = {"K": 1000, "M": 1000**2, "G": 1000**3}.get(t[-1:].upper(), 1)
    digits = t[:-1] if scale > 1 else t
    if not digits.isdigit() or int(digits) == 0:
        raise ValueError(f"split size {text!r}: expected a positive integer with an optional "
                         "K, M or G suffix (2G, 500M)")
    return int(digits) * scale


def plan_shards(nbytes: Sequence[int], limits: SplitLimits) -> list[range]:
    """Group tensors (their byte sizes, in declaration order) into shards of indices.

    gguf-py's rule: a tensor opens a new shard when the current one is not empty and already
    holds ``max_tensors`` tensors, or when adding it would take the current shard's tensor
    bytes over ``max_size``.
    """
    starts = [0]
    size = 0
    for i, n in enumerate(nbytes):
        held = i - starts[-1]
        if held and ((limits.max_tensors is not None and held >= limits.max_tensors)
                     or (limits.max_size is not None and size + n > limits.max_size)):
            starts.append(i)
            size = 0
        size += n
    bounds = [*starts, len(nbytes)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def write_split(writer: GGUFWriter, limits: SplitLimits | None = None, *,
                keep: Sequence[str | os.PathLike[str]] = ()) -> list[Path]:
    """Write ``writer``'s declarations as shards of ``writer.path`` (see ``shard_path``).

    With no limits, or when everything fits in one shard, this is ``writer.write()``: one plain
    file at ``writer.path`` without split keys (as gguf-py). Otherwise the first shard gets all
    metadata, every shard gets ``split.no``, ``split.count`` and ``split.tensors.count``, and
    every shard keeps ``general.alignment`` when it is not the default. Any ``split.*`` key
    declared on ``writer`` (copied from a source set) is replaced. ``keep``: files that must
    not be overwritten (the shards being read); a clash is a ``WriterError`` before anything
    is written. Returns the paths written.
    """
    # The writer's declarations are read directly (same package): _kv is key -> encoded entry,
    # _tensors is name -> _PendingTensor, both in declaration order.
    if writer._written:  # noqa: SLF001
        raise WriterError(f"{writer.path} was already written by this writer")
    kv = writer._kv  # noqa: SLF001
    for key in [k for k in kv if k.startswith(SPLIT_PREFIX)]:
        del kv[key]
    pending = list(writer._tensors.values())  # noqa: SLF001
    groups = plan_shards([t.nbytes for t in pending], limits or SplitLimits())
    count = len(groups)
    if count > MAX_SHARDS:
        raise WriterError(f"{count} shards: split.count is a UINT16, at most {MAX_SHARDS}")
    finals = [shard_path(writer.path, k + 1, count) for k in range(count)] if count > 1 \
        else [writer.path]
    kept = {Path(p).resolve() for p in keep}
    for p in finals:
        if p.resolve() in kept:
            raise WriterError(f"{p} would overwrite an input file; choose another output name")
    if count == 1:
        return [writer.write()]
    for p in finals:
        if p.is_dir():
            raise WriterError(f"{p} is a directory")
    writer.path.parent.mkdir(parents=True, exist_ok=True)
    temps: list[Path] = []
    try:
        for k, group in enumerate(groups):
            fd, tmp_name = tempfile.mkstemp(dir=finals[k].parent, prefix=f".{finals[k].name}.",
                                            suffix=".shard")
            os.close(fd)
            temps.append(Path(tmp_name))
            shard = GGUFWriter(tmp_name, alignment=writer.alignment, on_tensor=writer.on_tensor)
            if k == 0:
                shard._kv.update((key, raw) for key, raw in kv.items()  # noqa: SLF001
                                 if key != KEY_ALIGNMENT)
            shard.add(KEY_SPLIT_NO, k, T.UINT16)
            shard.add(KEY_SPLIT_COUNT, count, T.UINT16)
            shard.add(KEY_SPLIT_TENSORS_COUNT, len(pending), T.INT32)
            for t in pending[group.start : group.stop]:
                shard._tensors[t.name] = t  # noqa: SLF001
            shard.write()
        _rename_all(temps, finals)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    writer._written = True  # noqa: SLF001
    log.info("wrote %d shards: %s .. %s", count, finals[0].name, finals[-1].name)
    return finals


def _rename_all(temps: list[Path], finals: list[Path]) -> None:
    """Move every complete shard into place; if one move fails, remove those already moved."""
    done: list[Path] = []
    try:
        for tmp, final in zip(temps, finals, strict=True):
            os.replace(tmp, final)
            done.append(final)
    except BaseException:
        for final in done:
            final.unlink(missing_ok=True)
        raise
    for directory in {p.parent for p in finals}:
        _fsync_dir(directory)
