"""The validator: every rule of spec/gguflite-v1.md, reported by number.

``validate(path)`` opens the file with the strict reader (rules V1-V15: a structural problem
ends the check, because nothing after it can be located), then runs every semantic check and
collects all their findings (V16-V26) instead of stopping at the first. A split set is opened
at its first shard: a broken set is one finding (S1-S8, ``gguflite.split``), the layout rules
run in every shard, and S9 warns of keys that shards after the first should not hold. Each
finding is an error (llama.cpp would refuse the file, or the file is wrong for gguflite) or a
warning (legal but sloppy: llama.cpp loads it, gguflite would not have written it).

    >>> report = validate("model.gguf", deep=True)
    >>> report.ok, [str(f) for f in report.findings]
"""

from __future__ import annotations

import itertools
import re
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from . import keys as keyreg
from .constants import (
    GGUF_VERSION,
    MAX_TENSOR_NAME_LENGTH,
    GGUFValueType,
)
from .errors import FormatError
from .finite import count_nonfinite
from .metadata import StringArray
from .reader import GGUFFile
from .reader import open as open_gguf
from .split import extra_keys, is_later_shard

# llama.cpp's GGUF_MAX_ARRAY_ELEMENTS: longer arrays do not load.
MAX_ARRAY_ELEMENTS_LLAMA_CPP = 1 << 30
# Findings reported per rule before the rest are summarized in one line.
MAX_FINDINGS_PER_RULE = 20

RULES: dict[str, str] = {
    "V1": "the file starts with the magic 'GGUF'",
    "V2": "version 3 (2 is read); little-endian",
    "V3": "every count and length fits in the file",
    "V4": "keys are non-empty, UTF-8, at most 65535 bytes, unique",
    "V5": "value type ids are known; no arrays of arrays",
    "V6": "strings are UTF-8 and within the length limits; arrays within the element limit",
    "V7": "bools are 0 or 1",
    "V8": "general.alignment is a UINT32 power of two",
    "V9": "tensor names are non-empty, UTF-8, unique, at most 63 bytes",
    "V10": "a tensor has at most 4 dimensions",
    "V11": "dimensions and element counts are below 2**63; non-zero dims multiply to <= 2**60",
    "V12": "tensor type ids are known",
    "V13": "the row length is a multiple of the type's block size",
    "V14": "tensor data offsets are multiples of the alignment",
    "V15": "tensor data lies within the file",
    "V16": "tensors are packed in declaration order: offset = sum of the previous padded sizes",
    "V17": "padding bytes are zero",
    "V18": "no bytes after the data section",
    "V19": "keys are lowercase dotted identifiers",
    "V20": "registered keys have their registered types",
    "V21": "per-token tokenizer arrays have one element per token",
    "V22": "special token ids are below the vocabulary size",
    "V23": "architecture hyper-parameters agree with tensor shapes",
    "V24": "tensor data is finite (no NaN/Inf; --deep)",
    "V25": "general.architecture is present",
    "V26": "gguflite.km.* extension tensors are complete and consistent (spec/extensions-km.md)",
}


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One problem: the rule, how bad, what, and where (byte offset, key or tensor)."""

    rule: str
    severity: Severity
    message: str
    offset: int | None = None
    key: str | None = None
    tensor: str | None = None

    def __str__(self) -> str:
        where = f" (at byte {self.offset})" if self.offset is not None else ""
        return f"{self.severity.value:<7} {self.rule:<4} {self.message}{where}"

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "severity": self.severity.value, "message": self.message,
                "offset": self.offset, "key": self.key, "tensor": self.tensor}


@dataclass
class Report:
    """Everything found in one file. ``ok`` is True when there is no error."""

    path: str
    findings: list[Finding] = field(default_factory=list)
    deep: bool = False
    _per_rule: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == Severity.WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def rules(self) -> set[str]:
        """The rule numbers with at least one finding."""
        return {f.rule for f in self.findings}

    def add(self, rule: str, severity: Severity, message: str, *, offset: int | None = None,
            key: str | None = None, tensor: str | None = None) -> None:
        n = self._per_rule.get(rule, 0) + 1
        self._per_rule[rule] = n
        if n <= MAX_FINDINGS_PER_RULE:
            self.findings.append(Finding(rule, severity, message, offset, key, tensor))

    def error(self, rule: str, message: str, **where: Any) -> None:
        self.add(rule, Severity.ERROR, message, **where)

    def warn(self, rule: str, message: str, **where: Any) -> None:
        self.add(rule, Severity.WARNING, message, **where)

    def finish(self) -> None:
        """Summarize the findings dropped past the per-rule cap."""
        for rule, n in self._per_rule.items():
            if n > MAX_FINDINGS_PER_RULE:
                sev = next(f.severity for f in self.findings if f.rule == rule)
                self.findings.append(Finding(rule, sev, f"... and {n - MAX_FINDINGS_PER_RULE} "
                                             f"more {rule} findings"))

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "ok": self.ok, "deep": self.deep,
                "errors": len(self.errors), "warnings": len(self.warnings),
                "findings": [f.to_dict() for f in self.findings]}

    def summary(self) -> str:
        state = "OK" if self.ok else "INVALID"
        ne, nw = len(self.errors), len(self.warnings)
        return (f"{self.path}: {state} ({ne} error{'s' * (ne != 1)}, "
                f"{nw} warning{'s' * (nw != 1)})")


def validate(path: str | Path, *, deep: bool = False) -> Report:
    """Check one file against every rule; ``deep`` also scans tensor data for NaN/Inf (V24).

    Raises ``OSError`` (missing file, directory, permission) — that is not a property of the
    file's bytes; every problem with the bytes is a finding in the report.
    """
    report = Report(str(path), deep=deep)
    try:
        f = open_gguf(path)
    except FormatError as exc:
        if exc.rule != "S2":
            report.error(exc.rule or "V3", exc.detail, offset=exc.offset)
            return report
        # A later shard of a split set given alone (``validate model-*.gguf``): checked as the
        # file it is; the set as a whole is checked through its first shard.
        report.warn("S2", f"{exc.detail}; this shard was checked on its own")
        try:
            f = GGUFFile(path)
        except FormatError as exc2:
            report.error(exc2.rule or "V3", exc2.detail, offset=exc2.offset)
            return report
    with f:
        for check in _CHECKS:
            try:
                check(f, report)
            except FormatError as exc:  # a lazily decoded value failed (e.g. V6 UTF-8)
                report.error(exc.rule or "V3", exc.detail, offset=exc.offset)
        if deep:
            _check_finite(f, report)
    report.finish()
    return report


# -- header and metadata ---------------------------------------------------------------------
def _check_version(f: GGUFFile, r: Report) -> None:
    if f.version != GGUF_VERSION:
        r.warn("V2", f"GGUF version {f.version}; gguflite writes version {GGUF_VERSION}",
               offset=4)


def _check_keys(f: GGUFFile, r: Report) -> None:
    arch = f.metadata.get("general.architecture")
    arch = arch if isinstance(arch, str) else None
    for key, entry in f.metadata.entries().items():
        if not keyreg.KEY_SYNTAX.fullmatch(key):
            r.warn("V19", f"key {key!r} is not a lowercase dotted identifier ([a-z0-9_] "
                   "segments joined by '.')", offset=entry.offset, key=key)
        spec = keyreg.lookup(key, arch)
        sig = keyreg.signature(entry.value_type, entry.element_type)
        if spec is not None and sig not in spec.types:
            r.error("V20", f"key {key!r} is {sig}, expected {' or '.join(spec.types)} "
                    "(llama.cpp refuses a key of the wrong type)", offset=entry.offset, key=key)
        value = entry.value
        if entry.value_type == GGUFValueType.ARRAY and len(value) > MAX_ARRAY_ELEMENTS_LLAMA_CPP:
            r.error("V6", f"array {key!r} has {len(value)} elements; llama.cpp reads at most "
                    f"{MAX_ARRAY_ELEMENTS_LLAMA_CPP}", offset=entry.offset, key=key)
        if isinstance(value, StringArray):
            for i in range(len(value)):  # the reader decodes string arrays lazily
                value.decode(i)
    if "general.architecture" not in f.metadata and not is_later_shard(f):
        r.warn("V25", "general.architecture is missing; llama.cpp cannot load this file as a "
               "model", key="general.architecture")


def _check_tensor_names(f: GGUFFile, r: Report) -> None:
    for name, ti in f.tensors.items():
        n = len(name.encode("utf-8"))
        if n > MAX_TENSOR_NAME_LENGTH:
            r.error("V9", f"tensor name {name!r} is {n} bytes; llama.cpp allows at most "
                    f"{MAX_TENSOR_NAME_LENGTH}", offset=ti.info_offset, tensor=name)


# -- data layout -----------------------------------------------------------------------------
def _padded(n: int, alignment: int) -> int:
    return n + (-n % alignment)


def _nonzero_at(buf: memoryview, start: int, stop: int) -> int | None:
    """Absolute offset of the first nonzero byte in [start, stop), or None."""
    if stop <= start:
        return None
    region = np.frombuffer(buf, dtype=np.uint8, count=stop - start, offset=start)
    nz = np.flatnonzero(region)
    return start + int(nz[0]) if nz.size else None


def _check_layout(f: GGUFFile, r: Report) -> None:
    """V16-V18 in each physical file (each shard of a split set has its own data section)."""
    for part in f.shards:
        _check_file_layout(part, r, f"{part.path.name}: " if len(f.shards) > 1 else "")


def _check_file_layout(f: GGUFFile, r: Report, where: str) -> None:
    buf = f._buf  # the whole mapped file  # noqa: SLF001  (same package)
    expected = 0
    for name, ti in f.tensors.items():
        if ti.offset != expected:
            r.error("V16", f"{where}tensor {name!r} has offset {ti.offset}, expected "
                    f"{expected}: tensors must be packed in declaration order (llama.cpp "
                    "refuses holes, overlaps and reordering)", offset=ti.info_offset, tensor=name)
        expected = ti.offset + _padded(ti.nbytes, f.alignment)

    bad = _nonzero_at(buf, f.header_end, min(f.data_offset, f.file_size))
    if bad is not None:
        r.warn("V17", f"{where}nonzero padding between the tensor infos and the data section",
               offset=bad)
    # The padding after each tensor runs to the next tensor's start (or its aligned end).
    spans = sorted((ti.file_offset, ti.file_offset + ti.nbytes, name)
                   for name, ti in f.tensors.items())
    for i, (_, end, name) in enumerate(spans):
        stop = _padded(end, f.alignment)
        if i + 1 < len(spans):
            stop = min(stop, spans[i + 1][0])
        bad = _nonzero_at(buf, end, min(stop, f.file_size))
        if bad is not None:
            r.warn("V17", f"{where}nonzero padding after tensor {name!r}", offset=bad,
                   tensor=name)

    data_end = max((end for _, end, _ in spans), default=f.header_end)
    allowed_end = _padded(data_end, f.alignment)
    if f.file_size > allowed_end:
        r.warn("V18", f"{where}{f.file_size - allowed_end} bytes after the end of the data "
               "section; a truncated rewrite or appended data?", offset=allowed_end)


def _check_split(f: GGUFFile, r: Report) -> None:
    """S9: keys in shards after the first are ignored by llama.cpp (S1-S8 are the reader's)."""
    later = f.shards[1:] if len(f.shards) > 1 else [f] if is_later_shard(f) else []
    for part in later:
        extra = extra_keys(part)
        if extra:
            r.warn("S9", f"{part.path.name}: {len(extra)} keys besides split.* ({extra[:3]}); "
                   "llama.cpp reads metadata from the first shard only", key=extra[0])


# -- tokenizer -------------------------------------------------------------------------------
def _check_tokenizer(f: GGUFFile, r: Report) -> None:
    md = f.metadata
    tokens_key = "tokenizer.ggml.tokens"
    if tokens_key not in md or md.value_type(tokens_key) != GGUFValueType.ARRAY:
        return
    n_vocab = len(md[tokens_key])
    for key in keyreg.PER_TOKEN_KEYS[1:]:
        if key not in md or md.value_type(key) != GGUFValueType.ARRAY:
            continue
        n = len(md[key])
        if n < n_vocab:
            r.error("V21", f"{key} has {n} elements for {n_vocab} tokens (llama.cpp refuses "
                    "fewer)", offset=md.entry(key).offset, key=key)
        elif n > n_vocab:
            r.warn("V21", f"{key} has {n} elements for {n_vocab} tokens; the extra ones are "
                   "ignored", offset=md.entry(key).offset, key=key)
    for key in keyreg.SPECIAL_TOKEN_KEYS:
        if key not in md or md.value_type(key) != GGUFValueType.UINT32:
            continue
        if md[key] >= n_vocab:
            r.warn("V22", f"{key} = {md[key]} is outside the vocabulary of {n_vocab} tokens; "
                   "llama.cpp ignores it", offset=md.entry(key).offset, key=key)


# -- hyper-parameters vs shapes ----------------------------------------------------------------
_BLOCK = re.compile(r"blk\.(\d+)\.")


def _scalar_uint(md: Any, key: str) -> int | None:
    if key in md and md.value_type(key) in (GGUFValueType.UINT32, GGUFValueType.INT32,
                                            GGUFValueType.UINT64, GGUFValueType.INT64):
        return int(md[key])
    return None


def _expected_shapes(f: GGUFFile, arch: str,
                     layers: Iterable[int]) -> Iterator[tuple[str, tuple, str]]:
    """(tensor name, expected GGUF dims, what says so) from the family description
    (``gguflite.models``), for the families gguflite knows.

    ``layers``: the block indices the file has tensors for (never ``range(n_layer)``: the
    declared block count is untrusted and may be huge).
    """
    from .errors import ModelError
    from .models import FAMILIES

    fam = FAMILIES.get(arch)
    if fam is None:
        return
    # keys that shape no tensor get stand-ins, so a file without them is still checked
    stand_ins = {f"{arch}.attention.layer_norm_rms_epsilon": 1e-5, f"{arch}.context_length": 1}
    try:
        hp = fam.from_metadata(ChainMap(f.metadata, stand_ins))  # type: ignore[arg-type]
    except ModelError:
        return  # inconsistent hyper-parameters: the runtime names the key
    src = f"the {arch} family's tensor table and metadata"
    globals_ = [t for t in fam.tensors(replace(hp, n_layer=0))]
    for t in globals_ + [t for layer in layers for t in fam.block_tensors(hp, layer)]:
        yield t.name, tuple(reversed(t.shape)), src


def _check_hparams(f: GGUFFile, r: Report) -> None:
    md = f.metadata
    arch = md.get("general.architecture")
    if not isinstance(arch, str):
        return
    layers = {int(m.group(1)) for name in f.tensors if (m := _BLOCK.match(name))}
    n_layer = _scalar_uint(md, f"{arch}.block_count")
    # layers == {0 .. n_layer-1}, without materializing an untrusted (possibly huge) range
    complete = n_layer is not None and len(layers) == n_layer and (
        not layers or (min(layers) == 0 and max(layers) == n_layer - 1))
    if n_layer is not None and layers and not complete:
        missing = list(itertools.islice((i for i in range(n_layer) if i not in layers), 5))
        extra = sorted(x for x in layers if x >= n_layer)[:5]
        r.error("V23", f"{arch}.block_count is {n_layer} but the tensors have blocks "
                f"{min(layers)}..{max(layers)} ({len(layers)} distinct; missing {missing}, "
                f"extra {extra})", key=f"{arch}.block_count")
    if n_layer is None:
        return
    for name, dims, source in _expected_shapes(f, arch, sorted(x for x in layers
                                                                if x < n_layer)):
        ti = f.tensors.get(name)
        if ti is not None and ti.dims != dims:
            r.error("V23", f"tensor {name!r} has dims {list(ti.dims)} (GGUF order), but "
                    f"{source} give {list(dims)}", offset=ti.info_offset, tensor=name)


# -- tensor data (--deep) --------------------------------------------------------------------
def _check_finite(f: GGUFFile, r: Report) -> None:
    for name, ti in f.tensors.items():
        bad = count_nonfinite(f, name)
        if bad is None:
            r.warn("V24", f"tensor {name!r}: gguflite cannot decode {ti.type.name}; its data "
                   "was not checked", tensor=name)
        elif bad:
            r.error("V24", f"tensor {name!r} ({ti.type.name}) holds {bad} NaN/Inf values of "
                    f"{ti.n_elements}", offset=ti.file_offset, tensor=name)


# -- the KM codebook extension ---------------------------------------------------------------
def _check_km(f: GGUFFile, r: Report) -> None:
    """Every KM tensor declared by gguflite.km.<name>.* keys has consistent companions."""
    names = sorted({key[len(keyreg.KM_PREFIX):].rsplit(".", 1)[0] for key in f.metadata
                    if key.startswith(keyreg.KM_PREFIX)})
    if not names:
        return
    from .quants import km  # only files that use the extension pay for importing it

    for name in names:
        try:
            km.from_gguf(f, name)
        except FormatError as exc:
            r.error("V26", f"KM tensor {name!r}: {exc.detail} [{exc.rule}]", offset=exc.offset,
                    tensor=name)


_CHECKS: tuple[Callable[[GGUFFile, Report], None], ...] = (
    _check_version, _check_keys, _check_tensor_names, _check_layout, _check_tokenizer,
    _check_hparams, _check_km, _check_split,
)
