"""Importance matrices: per-column mean squared activations of each weight's input.

For a weight ``W`` of numpy shape (rows, cols) computing ``y = W @ x``, the importance of
column ``j`` is ``mean(x_j ** 2)`` over the calibration tokens; quantizers that take an
importance (Q4_K, Q6_K, the km types) weight each element's squared error by it.

File formats accepted by ``load_imatrix`` (chosen by content, not by extension):

1. llama.cpp's imatrix GGUF (what ``llama-imatrix -o x.gguf`` writes, and what
   ``save_imatrix`` writes), so files from either tool work::

       general.type            STRING  "imatrix"
       imatrix.datasets        ARRAY[STRING]  calibration data names
       imatrix.chunk_count     UINT32  chunks of text evaluated
       imatrix.chunk_size      UINT32  tokens per chunk
       for each weight NAME (llama.cpp tensor name, e.g. blk.0.attn_q.weight):
         NAME.in_sum2          F32 numpy shape (n_mat, cols)  sum over tokens of x_j ** 2
         NAME.counts           F32 numpy shape (n_mat, 1)     number of tokens summed

   importance = in_sum2 / counts (``n_mat`` is 1 for dense models; experts would be rows).

2. A NumPy ``.npz`` archive: key = llama.cpp tensor name, value = float (cols,) array of
   mean squared activations. Handy for tests and scripts.

Values must be finite and non-negative; a weight with a zero count is an error.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from gguflite.constants import GGMLType
from gguflite.constants import GGUFValueType as T
from gguflite.errors import ConversionError, FormatError
from gguflite.reader import open_regular

SUM_SUFFIX = ".in_sum2"
COUNT_SUFFIX = ".counts"


def _check(name: str, imp: np.ndarray, source: Path) -> np.ndarray:
    imp = np.asarray(imp, dtype=np.float32)
    if imp.ndim != 1:
        raise ConversionError(f"{source}: importance of {name!r} must be 1-D (one value per "
                              f"column), got shape {imp.shape}")
    if not np.all(np.isfinite(imp)) or np.any(imp < 0):
        raise ConversionError(f"{source}: importance of {name!r} has negative or non-finite "
                              "values")
    return imp


def _load_gguf(path: Path) -> dict[str, np.ndarray]:
    import gguflite

    out: dict[str, np.ndarray] = {}
    with gguflite.open(path) as f:
        if f.metadata.get("general.type") != "imatrix":
            raise ConversionError(f"{path}: a GGUF file but not an imatrix (general.type is "
                                  f"{f.metadata.get('general.type')!r})")
        for tname, ti in f.tensors.items():
            if not tname.endswith(SUM_SUFFIX):
                continue
            name = tname[: -len(SUM_SUFFIX)]
            cname = name + COUNT_SUFFIX
            if cname not in f.tensors:
                raise ConversionError(f"{path}: {tname!r} has no matching {cname!r}")
            sums = np.array(f.dequantize(tname), dtype=np.float64).reshape(-1, ti.dims[0])
            counts = np.array(f.dequantize(cname), dtype=np.float64).reshape(-1)
            if counts.shape[0] != sums.shape[0] or np.any(counts <= 0):
                raise ConversionError(f"{path}: {cname!r} must hold one positive count per "
                                      f"matrix ({sums.shape[0]}), got {counts.tolist()}")
            if sums.shape[0] != 1:
                raise ConversionError(f"{path}: {name!r} has {sums.shape[0]} expert matrices; "
                                      "only dense models are supported")
            out[name] = _check(name, (sums / counts[:, None])[0], path)
    return out


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: _check(k, z[k], path) for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ConversionError(f"{path}: not a readable .npz importance file ({exc})") from None


def load_imatrix(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Tensor name -> (cols,) float32 importance, from either format above."""
    path = Path(path)
    try:
        with open_regular(path) as fh:  # a FIFO would block here
            magic = fh.read(4)
    except FileNotFoundError:
        raise ConversionError(f"--imatrix {path}: no such file") from None
    if magic == b"GGUF":
        try:
            return _load_gguf(path)
        except FormatError as exc:
            raise ConversionError(f"{path}: bad imatrix GGUF: {exc}") from None
    if magic[:2] == b"PK":
        return _load_npz(path)
    raise ConversionError(f"{path}: not an imatrix file (expected a GGUF imatrix or a .npz)")


def save_imatrix(path: str | os.PathLike[str], stats: Mapping[str, tuple[np.ndarray, int]], *,
                 datasets: Sequence[str] = (), chunk_count: int = 0,
                 chunk_size: int = 0) -> Path:
    """Write llama.cpp's imatrix GGUF from ``name -> (sum of x**2 per column (cols,), count)``."""
    from gguflite import GGUFWriter

    with GGUFWriter(path) as w:
        w.add("general.type", "imatrix", T.STRING)
        w.add("imatrix.datasets", list(datasets), T.ARRAY, element_type=T.STRING)
        w.add("imatrix.chunk_count", int(chunk_count), T.UINT32)
        w.add("imatrix.chunk_size", int(chunk_size), T.UINT32)
        for name, (sum2, count) in stats.items():
            s = np.asarray(sum2, dtype=np.float32).reshape(1, -1)  # (1, cols)
            w.add_tensor(name + SUM_SUFFIX, shape=s.shape, type=GGMLType.F32, data=s)
            c = np.full((1, 1), float(count), dtype=np.float32)  # (1, 1)
            w.add_tensor(name + COUNT_SUFFIX, shape=c.shape, type=GGMLType.F32, data=c)
    return Path(path)
