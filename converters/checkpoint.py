"""Lazy, bounded-memory reading of a Hugging Face checkpoint directory.

A checkpoint is ``config.json`` plus weights in one of these layouts (first match wins):

    model.safetensors                       one safetensors file
    model.safetensors.index.json            {"weight_map": {tensor name: shard file name}}
    pytorch_model.bin[.index.json]          pickle; read only with ``allow_pickle=True``

Nothing is loaded up front: ``open_checkpoint`` parses the safetensors headers (and checks every
offset against the file size), and each ``SourceTensor.read(r0, r1)`` reads rows ``[r0, r1)``
from disk and returns them as float32, so the caller bounds memory by choosing the row count.

safetensors layout (little-endian)::

    u64 N                      header length in bytes
    N bytes of JSON            {name: {"dtype": "BF16", "shape": [rows, cols],
                                       "data_offsets": [begin, end]}, "__metadata__": {...}}
    data                       each tensor row-major at [8 + N + begin, 8 + N + end)

(``safetensors.safe_open(framework="numpy")`` cannot return bf16, so we read the bytes
ourselves.)
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gguflite.errors import ConversionError

SAFETENSORS_SINGLE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit

# safetensors dtype -> (numpy dtype of the stored bytes, bytes per element)
_ST_DTYPES: dict[str, np.dtype] = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # the top 16 bits of a float32
    "F64": np.dtype("<f8"),
}


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Stored values (as read with ``_ST_DTYPES[dtype]``) -> float32, same shape."""
    if dtype == "BF16":
        # bf16 bits b -> float32 bits b << 16 (exact: bf16 is a truncated float32)
        bits = raw.astype(np.uint32)
        bits <<= 16
        return bits.view(np.float32)
    return raw.astype(np.float32, copy=False)


@dataclass
class SourceTensor:
    """One checkpoint tensor, not yet read.

    Attributes
    ----------
    name: the checkpoint's name (``model.layers.0.self_attn.q_proj.weight``).
    dtype: ``"BF16"``, ``"F16"``, ``"F32"`` or ``"F64"``.
    shape: numpy row-major shape as stored.
    path: the file holding it.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    start: int = 0  # absolute byte offset of the data (safetensors)
    loader: Callable[[], Any] | None = field(default=None, repr=False)  # pickle: -> torch tensor

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.n_elements * _ST_DTYPES[self.dtype].itemsize

    @property
    def n_rows(self) -> int:
        return self.shape[0] if self.shape else 1

    def read(self, r0: int = 0, r1: int | None = None) -> np.ndarray:
        """Rows ``[r0, r1)`` along axis 0 as float32, shape ``(r1 - r0, *shape[1:])``."""
        r1 = self.n_rows if r1 is None else r1
        inner = self.shape[1:]
        if self.loader is not None:
            import torch

            t = self.loader()
            part = t.reshape(self.shape or (1,))[r0:r1]
            return part.to(torch.float32).numpy().reshape(r1 - r0, *inner)
        dt = _ST_DTYPES[self.dtype]
        row_elems = math.prod(inner)
        count = (r1 - r0) * row_elems
        with open(self.path, "rb") as fh:
            fh.seek(self.start + r0 * row_elems * dt.itemsize)
            raw = np.fromfile(fh, dtype=dt, count=count)  # (count,)
        if raw.size != count:
            raise ConversionError(f"{self.path.name}: tensor {self.name!r} is truncated: rows "
                                  f"[{r0}, {r1}) need {count} values, the file has {raw.size}")
        return to_float32(raw, self.dtype).reshape(r1 - r0, *inner)


@dataclass
class Checkpoint:
    """A checkpoint directory: its config and its tensors (in checkpoint order)."""

    directory: Path
    config: dict[str, Any]
    tensors: dict[str, SourceTensor]
    files: list[Path]
    format: str  # "safetensors" or "pickle"

    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


def read_safetensors_header(path: Path) -> dict[str, SourceTensor]:
    """Parse and check one safetensors header; no tensor data is read."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ConversionError(f"{path}: not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                raise ConversionError(f"{path}: safetensors header length {n} does not fit the "
                                      f"{size}-byte file; the file is truncated or corrupt")
            header_bytes = fh.read(n)
    except FileNotFoundError:
        raise ConversionError(f"{path}: missing weights file; download it again") from None
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ConversionError(f"{path}: safetensors header is not a JSON object")
    data_start = 8 + n
    out: dict[str, SourceTensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ConversionError(f"{path}: header entry for {name!r} is malformed: "
                                  f"{info!r}") from None
        if dtype not in _ST_DTYPES:
            raise ConversionError(f"{path}: tensor {name!r} has dtype {dtype}; supported: "
                                  f"{', '.join(_ST_DTYPES)} (quantized checkpoints are not)")
        t = SourceTensor(name, dtype, shape, path, data_start + begin)
        if any(d < 0 for d in shape) or end - begin != t.nbytes or begin < 0:
            raise ConversionError(f"{path}: tensor {name!r} {dtype}{list(shape)} needs "
                                  f"{t.nbytes} bytes but its offsets [{begin}, {end}) span "
                                  f"{end - begin}")
        if data_start + end > size:
            raise ConversionError(f"{path}: tensor {name!r} ends at byte {data_start + end}, "
                                  f"past the end of the {size}-byte file; the file is "
                                  "truncated (download it again)")
        out[name] = t
    return out


def _load_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{path}: missing {what}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path}: {what} is not valid JSON ({exc})") from None


def _weight_map(index_path: Path) -> dict[str, str]:
    index = _load_json(index_path, "shard index")
    wmap = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(wmap, dict) or not wmap or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in wmap.items()):
        raise ConversionError(f"{index_path}: bad shard index: expected a non-empty "
                              '"weight_map" object of tensor name -> shard file name')
    for shard in set(wmap.values()):
        if Path(shard).name != shard:
            raise ConversionError(f"{index_path}: shard name {shard!r} is not a plain file name")
    return wmap


def _open_safetensors_sharded(directory: Path) -> tuple[dict[str, SourceTensor], list[Path]]:
    index_path = directory / SAFETENSORS_INDEX
    wmap = _weight_map(index_path)
    shards = sorted(set(wmap.values()))
    missing = [s for s in shards if not (directory / s).is_file()]
    if missing:
        raise ConversionError(f"{directory}: shard(s) {', '.join(missing)} named in "
                              f"{SAFETENSORS_INDEX} are missing; download them again")
    headers = {s: read_safetensors_header(directory / s) for s in shards}
    tensors: dict[str, SourceTensor] = {}
    for name, shard in wmap.items():
        t = headers[shard].get(name)
        if t is None:
            raise ConversionError(f"{index_path}: bad index: tensor {name!r} is mapped to "
                                  f"{shard}, which does not contain it")
        tensors[name] = t
    for shard, h in headers.items():
        extra = sorted(set(h) - set(wmap))
        if extra:
            raise ConversionError(f"{index_path}: bad index: {shard} holds {extra[0]!r} (and "
                                  f"{len(extra) - 1} more) not listed in the weight_map")
    return tensors, [directory / s for s in shards]


_TORCH_DTYPES = {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16",
                 "torch.float64": "F64"}


def _open_pickle(directory: Path) -> tuple[dict[str, SourceTensor], list[Path]]:
    import torch  # only on the explicit opt-in path

    if (directory / PICKLE_INDEX).is_file():
        wmap = _weight_map(directory / PICKLE_INDEX)
        files = sorted(set(wmap.values()))
    else:
        files = [PICKLE_SINGLE]
    tensors: dict[str, SourceTensor] = {}
    paths = []
    for fname in files:
        path = directory / fname
        if not path.is_file():
            raise ConversionError(f"{directory}: weights file {fname} is missing")
        try:
            # weights_only: no arbitrary code; mmap: tensors stay on disk until read
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # torch raises many types for a bad pickle
            raise ConversionError(f"{path}: cannot load with torch.load(weights_only=True): "
                                  f"{exc}") from None
        if not isinstance(state, dict):
            raise ConversionError(f"{path}: expected a state dict, got {type(state).__name__}")
        for name, t in state.items():
            dtype = _TORCH_DTYPES.get(str(getattr(t, "dtype", None)))
            if dtype is None:
                raise ConversionError(f"{path}: tensor {name!r} has unsupported dtype "
                                      f"{getattr(t, 'dtype', type(t).__name__)}")
            tensors[name] = SourceTensor(name, dtype, tuple(t.shape), path,
                                         loader=(lambda t=t: t))
        paths.append(path)
    return tensors, paths


def open_checkpoint(directory: str | Path, *, allow_pickle: bool = False) -> Checkpoint:
    """Index a checkpoint directory (config + tensor headers); reads no weights."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConversionError(f"{directory}: not a directory")
    config = _load_json(directory / "config.json", "config.json (the model's hyper-parameters)")
    if not isinstance(config, dict):
        raise ConversionError(f"{directory / 'config.json'}: expected a JSON object")
    if (directory / SAFETENSORS_INDEX).is_file():
        tensors, files = _open_safetensors_sharded(directory)
        fmt = "safetensors"
    elif (directory / SAFETENSORS_SINGLE).is_file():
        tensors = read_safetensors_header(directory / SAFETENSORS_SINGLE)
        files, fmt = [directory / SAFETENSORS_SINGLE], "safetensors"
    elif (directory / PICKLE_SINGLE).is_file() or (directory / PICKLE_INDEX).is_file():
        if not allow_pickle:
            raise ConversionError(
                f"{directory}: the weights are only in pytorch_model.bin (a Python pickle, which "
                "can run code when loaded). Convert them to safetensors, or pass --allow-pickle "
                "to load them with torch.load(weights_only=True)")
        tensors, files = _open_pickle(directory)
        fmt = "pickle"
    else:
        raise ConversionError(f"{directory}: no weights found: expected {SAFETENSORS_SINGLE}, "
                              f"{SAFETENSORS_INDEX} or (with --allow-pickle) {PICKLE_SINGLE}")
    return Checkpoint(directory, config, tensors, files, fmt)
