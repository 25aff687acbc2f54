"""Requantize any readable file to other tensor types, keeping all its metadata.

    >>> requantize("smollm2.Q4_1.gguf", "smollm2.q8_0.gguf", type="q8_0")

Each tensor gets a type from the same ``Recipe`` as the converter (1-D tensors stay as they
are; ``--tensor-type``/``--output-type``/``--embedding-type``; fallbacks for row lengths the
type cannot hold). A tensor whose type does not change is copied byte for byte from the memory
map; the others are decoded in row chunks (any type gguflite decodes: Q4_1, Q5_0, Q2_K ...)
and encoded again, one tensor in memory at a time. Metadata keys are copied with their types,
except ``general.file_type`` (set from the recipe), ``general.alignment`` (kept by the
writer) and a split source's ``split.*`` keys (written anew for split output). The output is
written atomically; with ``split``, as shards, all or nothing (gguflite.split).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import gguflite
from gguflite import quants
from gguflite.constants import KEY_ALIGNMENT, GGMLType
from gguflite.constants import GGUFValueType as T
from gguflite.errors import ConversionError, QuantizationError, UnsupportedTypeError
from gguflite.finite import check_finite
from gguflite.split import SplitLimits, write_split

from .convert import CHUNK_BYTES, add_km_tensor, is_km, make_recipe, stored_nbytes

_BLK_RE = re.compile(r"^blk\.(\d+)\.")


@dataclass
class RequantEntry:
    """One logical tensor; a KM tensor (``src_type`` "KM4" ...) stands for its companions."""

    name: str
    shape: tuple[int, ...]
    src_type: str  # "Q4_1", "F32", ... or "KM2"/"KM3"/"KM4"
    type: str  # codec name of the output
    reason: str
    bytes_in: int
    bytes_out: int

    @property
    def copied(self) -> bool:
        return self.type == self.src_type.lower()

    @property
    def src_is_km(self) -> bool:
        return is_km(self.src_type.lower())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "src_type": self.src_type,
                "type": self.type, "reason": self.reason, "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out, "copied": self.copied}


def _n_layers(f: gguflite.GGUFFile) -> int:
    arch = f.metadata.get("general.architecture")
    n = f.metadata.get(f"{arch}.block_count")
    if isinstance(n, int):
        return n
    ids = [int(m.group(1)) for t in f.tensors if (m := _BLK_RE.match(t))]
    return max(ids) + 1 if ids else 0


def _n_gqa(f: gguflite.GGUFFile) -> int:
    """Attention heads per KV head, as llama.cpp's hparams.n_gqa() (1 when unknown)."""
    arch = f.metadata.get("general.architecture")
    n_head = f.metadata.get(f"{arch}.attention.head_count")
    n_kv = f.metadata.get(f"{arch}.attention.head_count_kv", n_head)
    if isinstance(n_head, int) and isinstance(n_kv, int) and n_kv > 0:
        return n_head // n_kv
    return 1


def plan_requantize(f: gguflite.GGUFFile, *, type: str,  # noqa: A002
                    tensor_types: Sequence[str] = (), output_type: str | None = None,
                    embedding_type: str | None = None,
                    fallback_type: str | None = None,
                    has_imatrix: bool = False) -> tuple[list[RequantEntry], Any]:
    """One entry per tensor of ``f`` in file order, plus the recipe."""
    recipe = make_recipe(type, tensor_types=tensor_types, output_type=output_type,
                         embedding_type=embedding_type, fallback_type=fallback_type)
    from gguflite.quants import km

    kms = {n: km.from_gguf(f, n) for n in km.km_tensor_names(f)}
    companions = {n + km.COMPANION_SUFFIX: n for n in kms}
    n_layers = _n_layers(f)
    n_gqa = _n_gqa(f)
    tied = "output.weight" not in f.tensors and "output.weight" not in kms
    entries = []
    for tname, ti in f.tensors.items():
        if tname in companions:
            name = companions[tname]
            kmt = kms[name]
            shape, src, nbytes = kmt.shape, f"KM{kmt.bits}", kmt.nbytes
        else:
            name, shape, src, nbytes = tname, ti.shape or (1,), ti.type.name, ti.nbytes
        if len(shape) < 2:  # 1-D tensors keep their type (F32 norms, rope_freqs)
            ttype, why = src.lower(), "1-D tensors keep their type"
        else:
            ttype, why = recipe.choose(name, shape, n_layers=n_layers, tied=tied, n_gqa=n_gqa,
                                       has_imatrix=has_imatrix)
        if ttype == src.lower():
            out_bytes = nbytes
        else:
            if quants.get_codec(ttype).ggml_type is None and not is_km(ttype):
                raise ConversionError(f"{name}: type {ttype} has no ggml tensor type; "
                                      "requantize cannot store it")
            out_bytes = stored_nbytes(ttype, shape)
            try:
                quants.get_codec(src)
            except UnsupportedTypeError:
                raise ConversionError(f"{name}: gguflite cannot decode {src}, so it "
                                      f"cannot requantize it to {ttype}; convert from the "
                                      "original checkpoint instead") from None
        entries.append(RequantEntry(name, shape, src, ttype, why, nbytes, out_bytes))
    return entries, recipe


def _row_reader(f: gguflite.GGUFFile, e: RequantEntry) -> Callable[[int, int], np.ndarray]:
    """read(r0, r1) -> (r1 - r0, cols) float32: rows of ``e`` decoded from the source."""
    cols = e.shape[-1]
    if e.src_is_km:
        from gguflite.quants import km

        kmt = km.from_gguf(f, e.name)  # KM rows decode alone
        return lambda r0, r1: km.dequantize_rows_fast(kmt.data[r0:r1], kmt.bits, cols)
    src_codec = quants.get_codec(e.src_type.lower())
    raw = f.raw(e.name).reshape(math.prod(e.shape[:-1]), -1)  # (rows, src row bytes)
    return lambda r0, r1: src_codec.dequantize(raw[r0:r1], (r1 - r0, cols), name=e.name)


def _producer(f: gguflite.GGUFFile, e: RequantEntry,
              importance: np.ndarray | None) -> Callable[[], np.ndarray]:
    def produce() -> np.ndarray:
        if e.copied:
            return f.raw(e.name)  # read-only view of the mapped bytes, never decoded
        read = _row_reader(f, e)
        codec = quants.get_codec(e.type)
        cols = e.shape[-1]
        rows = math.prod(e.shape[:-1])
        out = np.empty((rows, codec.row_nbytes(cols)), dtype=np.uint8)  # (rows, out row bytes)
        imp = importance if codec.uses_importance else None
        step = max(1, CHUNK_BYTES // (4 * cols))
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            try:
                out[r0:r1] = quants.quantize(read(r0, r1), e.type, importance=imp, name=e.name)
            except QuantizationError as exc:
                raise ConversionError(str(exc)) from None
        return out

    return produce


def requantize(src: str | Path, out: str | Path, *, type: str,  # noqa: A002
               tensor_types: Sequence[str] = (), output_type: str | None = None,
               embedding_type: str | None = None, fallback_type: str | None = None,
               imatrix: str | Path | None = None, dry_run: bool = False,
               progress: bool = False, split: SplitLimits | None = None,
               outputs: list[Path] | None = None) -> list[RequantEntry]:
    """Write ``out``: ``src`` with its tensors requantized per the recipe ``type``.

    ``src`` may be the first shard of a split set. ``split``: write shards
    ``out-00001-of-0000N.gguf`` instead; ``outputs``, if given, receives the paths written.
    """
    importance: dict[str, np.ndarray] = {}
    if imatrix is not None:
        from .imatrix import load_imatrix

        importance = load_imatrix(imatrix)
    with gguflite.open(src) as f:
        entries, recipe = plan_requantize(f, type=type, tensor_types=tensor_types,
                                          output_type=output_type,
                                          embedding_type=embedding_type,
                                          fallback_type=fallback_type,
                                          has_imatrix=bool(importance))
        for name, imp in importance.items():
            if name in f.tensors and imp.shape != (f.tensors[name].shape[-1],):
                raise ConversionError(f"--imatrix: importance of {name!r} has {imp.shape[0]} "
                                      f"values; the tensor has {f.tensors[name].shape[-1]} "
                                      "columns")
        if dry_run:
            return entries
        # Copied tensors are not decoded by a codec (which refuses NaN/Inf): check them here.
        check_finite(f, [e.name for e in entries if e.copied and not e.src_is_km],
                     action="quantize")
        if Path(out).resolve() == Path(src).resolve():
            raise ConversionError(f"{out}: the output must differ from the input")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=sum(e.bytes_out for e in entries), unit="B", unit_scale=True,
                       desc="quantize", dynamic_ncols=True)

        def written(name: str, nbytes: int) -> None:
            if bar is not None:
                bar.set_postfix_str(name, refresh=False)
                bar.update(nbytes)

        try:
            w = gguflite.GGUFWriter(out, alignment=f.alignment, on_tensor=written)
            from gguflite.quants import km

            # KM keys of tensors that are re-encoded are dropped (add_km_tensor writes new ones)
            stale = tuple(f"{km.KEY_PREFIX}{e.name}." for e in entries
                          if e.src_is_km and not e.copied)
            for key in f.metadata:
                if key == KEY_ALIGNMENT or (stale and key.startswith(stale)):
                    continue
                if key == "general.file_type":
                    w.add(key, int(recipe.file_type), T.UINT32)
                else:
                    w.add_from(f, key)
            if "general.file_type" not in f.metadata:
                w.add("general.file_type", int(recipe.file_type), T.UINT32)
            for e in entries:
                if e.copied and e.src_is_km:  # companion copied byte for byte, keys kept
                    ti = f.tensors[e.name + km.COMPANION_SUFFIX]
                    w.add_tensor(ti.name, shape=ti.shape, type=ti.type,
                                 data=lambda n=ti.name: f.raw(n))
                elif is_km(e.type):
                    add_km_tensor(w, e.name, e.type, math.prod(e.shape[:-1]), e.shape[-1],
                                  _row_reader(f, e), importance.get(e.name))
                else:
                    gtype = (GGMLType[e.src_type] if e.copied
                             else quants.get_codec(e.type).ggml_type)
                    w.add_tensor(e.name, shape=e.shape, type=gtype,
                                 data=_producer(f, e, importance.get(e.name)))
            # drops the source's split.* keys; never overwrites a shard being read
            written = write_split(w, split, keep=[s.path for s in f.shards])
            if outputs is not None:
                outputs.extend(written)
        finally:
            if bar is not None:
                bar.close()
    return entries
