"""Ternary (TQ2_0, TQ1_0) decode speed per byte of weights, next to Q8_0, in one process.

    OMP_WAIT_POLICY=passive python benchmarks/bench_ternary.py [--before REV] [--quick] \
        [--out benchmarks/results/ternary.md]

One thread, CPU time (``time.process_time``), minimum over rounds (noise only ever adds time):

1. Row kernels (the mat-vec without its activation quantization), on 4096x4096 and 2048x5632:
   Q8_0, and TQ2_0 / TQ1_0 now and as of git revision ``--before`` (its ternary.py,
   vector_ir.py and vector_f32.py loaded from git into a scratch package), each called by the
   same serial row loop: us per call, G weights/s, GB/s of weight bytes, and the per-byte speed
   as a fraction of Q8_0's.
2. ``Linear.matvec`` (the public path, activation quantization included) for the three types.
3. The hot loop of each row kernel from its x86 assembly: instructions per 32 weights (one
   vpmaddubsw multiplies 32 weights in every kernel here, so weights per loop iteration =
   32 x the vpmaddubsw count).
4. Whole decode with llama.cpp (llama-cpp-python) next to gguflite on the same synthetic Llama
   files (Q8_0 / TQ2_0 / TQ1_0 block matrices, 1 thread): tok/s, and per-byte ratios.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
CLOCK = time.process_time
SHAPES = [(4096, 4096), (2048, 5632)]
BYTES_PER_256 = {"Q8_0": 8 * 34, "TQ2_0": 66, "TQ1_0": 54}


def _min_times(fns: list, reps: int, rounds: int = 7) -> list[float]:
    """Best seconds per call of each function, timed round-robin (so load changes during the run
    hit every function alike) after one warm-up call each."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t = CLOCK()
            for _ in range(reps):
                fn()
            best[i] = min(best[i], (CLOCK() - t) / reps)
    return best


def _driver(fn):
    """A serial row loop around one row kernel (compiled per kernel, not cached)."""

    @njit(fastmath=True)
    def rows(w, row_bytes, nrows, nb, xq, xd, xsd, y):
        for r in range(nrows):
            y[r] = fn(w, r * row_bytes, nb, xq, xd, xsd)

    return rows


def load_before(rev: str):
    """ternary.py and the two vector modules as of ``rev``, as a scratch package."""
    tmp = Path(tempfile.mkdtemp(prefix="tq_before_"))
    pkg = tmp / "tq_before"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("ternary", "vector_ir", "vector_f32"):
        src = subprocess.run(["git", "show", f"{rev}:runtime/kernels/{name}.py"], cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout
        (pkg / f"{name}.py").write_text(src.replace("cache=True", "cache=False"))
    sys.path.insert(0, str(tmp))
    return importlib.import_module("tq_before.ternary")


def kernels(before_rev: str | None):
    """(label, type, row kernel or None, activation quantizer) to compare. None: the current
    kernel through the drivers' own serial loop, dispatch.rows_dot (the real decode path; a
    Q8_0 loop compiled on its own here ran ~1.5x slower than inside rows_dot)."""
    from gguflite.runtime.kernels import ternary
    from gguflite.runtime.kernels.activations import quantize_act

    out = [("Q8_0", "Q8_0", None, quantize_act)]
    old = load_before(before_rev) if before_rev else None
    # the activation quantizer of that revision (per 256 since 89a6b4d's parent, per 32 before)
    old_quant = getattr(old, "quantize_act_k", quantize_act)
    for t in ("TQ2_0", "TQ1_0"):
        if old is not None:
            out.append((f"{t} before", t, getattr(old, f"dot_{t.lower()}"), old_quant))
        out.append((f"{t} now", t, None, ternary.quantize_act_k))
    return out


def _row_loop(fn, t: str, raw: np.ndarray, xq, xd, xsd):
    """A no-argument call of the serial row loop over all rows of ``raw``."""
    from gguflite.runtime.kernels import dispatch

    from gguflite.constants import GGMLType

    out_f, row_bytes = raw.shape
    n = xq.size
    y = np.empty(out_f, np.float32)
    if fn is None:
        args = (int(GGMLType[t]), raw.reshape(-1), row_bytes, n, 0, out_f, y,
                np.zeros(n, np.float32), xq, xd, xsd)
        return lambda: dispatch.rows_dot(*args)
    rows = _driver(fn)
    args2 = (raw.reshape(-1), row_bytes, out_f, n // 32, xq, xd, xsd, y)
    return lambda: rows(*args2)


def bench_rows(ks, quick: bool) -> list[str]:
    from test_kernels_matvec import rand_weight

    lines = ["| shape | kernel | us / call | G weights/s | GB/s of weights | per byte vs Q8_0 |",
             "|---|---|---|---|---|---|"]
    rng = np.random.default_rng(0)
    for out_f, in_f in SHAPES[:1] if quick else SHAPES:
        x = rng.standard_normal(in_f).astype(np.float32)
        raws, fns = {}, []
        for _label, t, fn, quant in ks:
            raw = raws.setdefault(t, rand_weight(rng, t, out_f, in_f))
            xq = np.empty(in_f, np.int8)
            xd = np.zeros(in_f // 32, np.float32)
            xsd = np.zeros(in_f // 16, np.float32)
            quant(x, xq, xd, xsd)
            fns.append(_row_loop(fn, t, raw, xq, xd, xsd))
        secs = _min_times(fns, 3 if quick else 5)
        ref_gbs = raws["Q8_0"].nbytes / secs[0]
        for (label, t, _fn, _q), sec in zip(ks, secs, strict=True):
            gbs = raws[t].nbytes / sec / 1e9
            gw = out_f * in_f / sec / 1e9
            line = (f"| {out_f}x{in_f} | {label} | {sec * 1e6:.0f} | {gw:.2f} | {gbs:.2f} "
                    f"| {gbs / (ref_gbs / 1e9):.2f} |")
            lines.append(line)
            print(line, flush=True)
    return lines


def bench_linear(quick: bool) -> list[str]:
    from gguflite.runtime.kernels import Linear
    from test_kernels_matvec import rand_weight

    from gguflite.constants import GGMLType

    lines = ["| shape | type | us / call | G weights/s | GB/s of weights | per byte vs Q8_0 |",
             "|---|---|---|---|---|---|"]
    rng = np.random.default_rng(1)
    for out_f, in_f in SHAPES[:1] if quick else SHAPES:
        x = rng.standard_normal(in_f).astype(np.float32)
        types = ("Q8_0", "TQ2_0", "TQ1_0")
        raws, fns = [], []
        for t in types:
            raws.append(rand_weight(rng, t, out_f, in_f))
            lin = Linear(raws[-1], GGMLType[t], (out_f, in_f), name=f"w.{t}")
            y = np.empty(out_f, np.float32)
            fns.append(lambda lin=lin, x=x, y=y: lin.matvec(x, out=y))
        secs = _min_times(fns, 3 if quick else 5)
        ref_gbs = raws[0].nbytes / secs[0] / 1e9
        for t, raw, sec in zip(types, raws, secs, strict=True):
            gbs = raw.nbytes / sec / 1e9
            line = (f"| {out_f}x{in_f} | {t} | {sec * 1e6:.0f} | {out_f * in_f / sec / 1e9:.2f} "
                    f"| {gbs:.2f} | {gbs / ref_gbs:.2f} |")
            lines.append(line)
            print(line, flush=True)
    return lines


_INSN = re.compile(r"^\s+([a-z][a-z0-9]*)\b(.*)$")
# bytes and weights of one block per type: the loop's pointer step gives weights / iteration
BLOCK = {"Q8_0": (34, 32), "TQ2_0": (66, 256), "TQ1_0": (54, 256)}


def self_loops(asm: str) -> list[list[tuple[str, str]]]:
    """(mnemonic, operands) of every block that jumps back to its own label."""
    loops = []
    label, body = None, []
    for line in asm.splitlines():
        m = re.match(r"^(\.LBB\w+):", line)
        if m:
            label, body = m.group(1), []
            continue
        mi = _INSN.match(line)
        if mi and label:
            body.append((mi.group(1), mi.group(2).strip()))
            if mi.group(1).startswith("j") and mi.group(2).strip() == label:
                loops.append(list(body))
    return loops


def _weights_per_iteration(loop, t: str) -> int:
    """From the weight pointer's step (an add of a multiple of the block size), else 0."""
    nbytes, nw = BLOCK[t]
    for op, args in loop:
        m = re.match(r"\$(\d+),", args) if op.startswith("add") else None
        if m and int(m.group(1)) % nbytes == 0:
            return int(m.group(1)) // nbytes * nw
    return 0


def bench_asm(ks) -> list[str]:
    from gguflite.runtime.kernels import dispatch

    lines = ["| kernel | instructions in the loop | weights / iteration | instructions / 32 "
             "weights | instructions / 256 weights | integer multiplies (vpmaddubsw, vpmaddwd, "
             "vpmullw) / 32 weights |",
             "|---|---|---|---|---|---|"]
    fresh = njit(fastmath=True)(dispatch.rows_dot.py_func)  # cached code cannot be inspected
    w0 = np.zeros(34 * 64, np.uint8)
    fresh(8, w0, 34 * 64, 2048, 0, 1, np.zeros(1, np.float32), np.zeros(2048, np.float32),
          np.zeros(2048, np.int8), np.zeros(64, np.float32), np.zeros(128, np.float32))
    rows_asm = "\n".join(fresh.inspect_asm().values())
    for label, t, fn, _quant in ks:
        if fn is None:  # the loop of this type inside dispatch.rows_dot
            asm = rows_asm
        else:
            rows = _driver(fn)
            w = np.zeros(BLOCK[t][0] * 64, np.uint8)
            rows(w, BLOCK[t][0] * 64, 1, 64, np.zeros(2048, np.int8),
                 np.zeros(64, np.float32), np.zeros(128, np.float32), np.zeros(1, np.float32))
            asm = next(iter(rows.inspect_asm().values()))
        found = [(len(lp), _weights_per_iteration(lp, t), lp) for lp in self_loops(asm)]
        found = [f for f in found if f[1] and any(op == "vpmaddubsw" for op, _ in f[2])]
        if fn is None:  # among all types' loops: one vpmaddubsw per 32 weights, as every kernel
            found = [f for f in found
                     if 32 * sum(op == "vpmaddubsw" for op, _ in f[2]) == f[1]]
        if not found:
            lines.append(f"| {label} | ? | ? | ? | ? | ? |")
            continue
        n, per_iter, loop = max(found, key=lambda f: f[0])
        n_mul = sum(op in ("vpmaddubsw", "vpmaddwd", "vpmullw") for op, _ in loop)
        line = (f"| {label} | {n} | {per_iter} | {32 * n / per_iter:.1f} | "
                f"{256 * n / per_iter:.1f} | {32 * n_mul / per_iter:.2f} |")
        lines.append(line)
        print(line, flush=True)
    return lines


def bench_decode(quick: bool, n_tok: int) -> list[str]:
    """Synthetic Llama (dim 2048, hidden 5632) in Q8_0 / TQ2_0 / TQ1_0: decode tok/s, 1 thread,
    gguflite (the fused decode step) next to llama.cpp."""
    from gguflite.runtime import load
    from tiny_models import TinyConfig, make_tiny_llama

    from gguflite.constants import GGMLType

    try:
        from llama_cpp import Llama
    except ImportError as e:
        return [f"llama.cpp not measured: {e}"]
    cfg = TinyConfig(dim=2048, hidden_dim=5632, n_layer=1 if quick else 2, n_head=16,
                     n_kv_head=4, vocab_size=320, context_length=256)
    tmp = Path(tempfile.mkdtemp(prefix="tq_models_"))
    lines = ["| block matrices | file MB | gguflite tok/s | llama.cpp tok/s | gguflite / "
             "llama.cpp | gguflite per byte vs its Q8_0 | llama.cpp per byte vs its Q8_0 |",
             "|---|---|---|---|---|---|---|"]
    ref = None
    prompt = [1, 5, 300, 17, 42, 99, 7, 8]
    for t in ("Q8_0", "TQ2_0", "TQ1_0"):
        path, _, _ = make_tiny_llama(tmp / f"m-{t}.gguf", cfg, wtype=GGMLType[t],
                                     embd_type=GGMLType.Q8_0)
        size = path.stat().st_size
        with load(path, threads=1, n_ctx=256) as m:
            def ours(m=m):
                ids = list(prompt)
                m.eval(ids)
                t0 = CLOCK()
                for k in range(n_tok):
                    ids.append(10 + k)
                    m.eval(ids)
                return (CLOCK() - t0) / n_tok
            g = min(ours() for _ in range(3))
        llm = Llama(model_path=str(path), n_threads=1, n_threads_batch=1, n_ctx=256,
                    verbose=False)

        def theirs(llm=llm):
            llm.reset()
            llm.eval(prompt)
            t0 = CLOCK()
            for k in range(n_tok):
                llm.eval([10 + k])
            return (CLOCK() - t0) / n_tok
        lc = min(theirs() for _ in range(3))
        del llm
        path.unlink()
        if t == "Q8_0":
            ref = (g, lc, size)
        # per byte: (bytes / time) relative to Q8_0's (bytes / time)
        pg = (size / g) / (ref[2] / ref[0])
        pl = (size / lc) / (ref[2] / ref[1])
        line = (f"| {t} | {size / 1e6:.1f} | {1 / g:.1f} | {1 / lc:.1f} | {lc / g:.2f} | "
                f"{pg:.2f} | {pl:.2f} |")
        lines.append(line)
        print(line, flush=True)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default=None,
                    help="git revision whose ternary kernels to time beside the current ones")
    ap.add_argument("--quick", action="store_true", help="one shape, a 1-layer model")
    ap.add_argument("--no-decode", action="store_true", help="skip the llama.cpp comparison")
    ap.add_argument("--tokens", type=int, default=16, help="decode tokens per timing round")
    ap.add_argument("--out", default=None, help="write the tables (markdown) here")
    args = ap.parse_args()
    ks = kernels(args.before)
    sections = [f"Machine: {platform.processor() or platform.machine()}, load average "
                f"{os.getloadavg()[0]:.1f} at start; one thread, CPU time.", "",
                "### Row kernels (serial row loop, activation pre-quantized)", ""]
    sections += bench_rows(ks, args.quick)
    sections += ["", "### Linear.matvec (activation quantization included)", ""]
    sections += bench_linear(args.quick)
    sections += ["", "### Hot loops (x86 assembly of the row kernels)", ""]
    sections += bench_asm(ks)
    if not args.no_decode:
        sections += ["", f"### Whole decode, synthetic Llama dim 2048 / hidden 5632, "
                     f"{args.tokens} tokens, 1 thread", ""]
        sections += bench_decode(args.quick, args.tokens)
    sections.append(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    text = "\n".join(sections) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
