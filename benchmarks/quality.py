"""Size versus quality of every tensor type on one real model, against llama.cpp.

    python benchmarks/quality.py                       # SmolLM2-135M, ~10 min on 2 cores
    python benchmarks/quality.py --chunks 8 --ctx 512  # more text, slower

What it does, in order (files are cached in --workdir and rebuilt with --rebuild):

1. Texts: CPython's own documentation prose (``pydoc_data.topics``, shipped with Python, no
   download). Topics sorted by name; topic number i % 4 == 0 is the held-out evaluation text,
   the others are the calibration text for the importance matrix (disjoint by construction).
2. Reference: the source converted to F16 by ``gguflite quantize --type f16``. SmolLM2 ships as
   Q4_1, so its dequantized F16 form *is* the model every other file is compared to.
3. Importance matrix: ``runtime/imatrix.py`` on the F16 file over the calibration text
   (``--cal-chunks`` chunks of ``--ctx`` tokens), saved as llama.cpp's imatrix GGUF.
4. Files: every gguflite recipe (with and without ``--imatrix`` where the codec uses one), plus
   llama.cpp's own ``llama_model_quantize`` of the same F16 file (Q8_0, Q4_K_M, Q6_K).
5. Evaluation on the held-out text, chunked as llama.cpp's perplexity tool does (``--ctx``
   tokens, first replaced by BOS, second half scored): perplexity, and against the F16
   reference logits (our runtime, F16 file) mean KL divergence and top-1 agreement
   (tools/perplexity/perplexity.cpp definitions, see runtime/perplexity.py). Files holding only
   ggml types also run through llama.cpp (llama-cpp-python, same token ids), so both engines
   and both quantizers meet in one table. Decode tok/s: ``--decode`` single-token steps after
   a 32-token prompt, both engines, in the same process.
6. Byte comparison of our files with llama.cpp's: every tensor both chose the same type for.

Outputs: quality.md, quality.json and quality.png (bits per weight vs KL divergence, log
scale) in --out-dir.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguflite.runtime.perplexity import chunk_tokens, log_softmax

import gguflite
from gguflite.quants import km

log = logging.getLogger("quality")


# --------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One file to build and evaluate."""

    label: str  # row label and file stem
    producer: str  # "gguflite" | "llama.cpp"
    recipe: str = ""  # gguflite --type
    imatrix: bool = False  # gguflite: pass the importance matrix
    fallback: str | None = "q8_0"  # gguflite --fallback-type (None: llama.cpp's per type)
    ftype: int = 0  # llama.cpp llama_ftype
    output_type: str | None = None  # gguflite --output-type
    tensor_types: tuple[str, ...] = ()  # gguflite --tensor-type PATTERN=TYPE


def _llama_cpp_fallbacks(n_layers: int = 30) -> dict[str, Any]:
    """Options that make gguflite's q4_k_m fall back per type as llama.cpp does
    (src/llama-quant.cpp tensor_type_fallback: Q4_K -> Q5_0, Q6_K -> Q8_0) for 576-wide rows:
    the tied output (Q6_K) and the use_more_bits layers' attn_v (Q6_K) become Q8_0."""
    from gguflite.converters.recipe import use_more_bits

    layers = "|".join(str(i) for i in range(n_layers) if use_more_bits(i, n_layers))
    return {"fallback": "q5_0", "output_type": "q8_0",
            "tensor_types": (f"re:^blk\\.({layers})\\.attn_v\\.weight$=q8_0",)}


VARIANTS: dict[str, Variant] = {v.label: v for v in [
    Variant("f16", "gguflite", "f16"),
    Variant("q8_0", "gguflite", "q8_0"),
    Variant("llama.cpp Q8_0", "llama.cpp", ftype=7),
    Variant("q4_k_m", "gguflite", "q4_k_m", fallback="q5_0"),
    Variant("llama.cpp Q4_K_M", "llama.cpp", ftype=15),
    Variant("llama.cpp Q4_1", "llama.cpp", ftype=3),  # the source's own type: the history check
    Variant("q4_k_m+imat", "gguflite", "q4_k_m", imatrix=True, fallback="q5_0"),
    Variant("q4_k_m-llfb", "gguflite", "q4_k_m", **_llama_cpp_fallbacks()),
    Variant("q4_k_m-llfb+imat", "gguflite", "q4_k_m", imatrix=True, **_llama_cpp_fallbacks()),
    Variant("km4", "gguflite", "km4"),
    Variant("km4+imat", "gguflite", "km4", imatrix=True),
    Variant("km3", "gguflite", "km3"),
    Variant("km3+imat", "gguflite", "km3", imatrix=True),
    Variant("km2", "gguflite", "km2"),
    Variant("km2+imat", "gguflite", "km2", imatrix=True),
    Variant("q6_k", "gguflite", "q6_k"),
    Variant("llama.cpp Q6_K", "llama.cpp", ftype=18),
    Variant("q4_k", "gguflite", "q4_k"),
    Variant("tq2_0", "gguflite", "tq2_0"),
    Variant("tq1_0", "gguflite", "tq1_0"),
    # the rest of llama.cpp's ladder, with its per-type fallbacks (= llama_model_quantize)
    Variant("q5_k_m", "gguflite", "q5_k_m", fallback=None),
    Variant("llama.cpp Q5_K_M", "llama.cpp", ftype=17),
    Variant("iq4_xs", "gguflite", "iq4_xs", fallback=None),
    Variant("llama.cpp IQ4_XS", "llama.cpp", ftype=30),
    Variant("iq4_xs+imat", "gguflite", "iq4_xs", imatrix=True, fallback=None),
    Variant("iq4_nl", "gguflite", "iq4_nl", fallback=None),
    Variant("q3_k_m", "gguflite", "q3_k_m", fallback=None),
    Variant("llama.cpp Q3_K_M", "llama.cpp", ftype=12),
    Variant("q3_k_m+imat", "gguflite", "q3_k_m", imatrix=True, fallback=None),
    Variant("q2_k", "gguflite", "q2_k", fallback=None),
]}
# gguflite files also run through llama.cpp (engine cross-check); llama.cpp's files always do.
CROSS_CHECK = ("f16", "q8_0", "q4_k_m", "q4_k_m-llfb")


@dataclass
class Row:
    label: str
    producer: str
    engine: str  # "gguflite" (Numba runtime) | "llama.cpp"
    file: str
    file_bytes: int
    bpw: float  # 8 * tensor bytes / weights, all tensors
    bpw_blocks: float  # the same over the blk.* 2-D weights only
    types: str  # weights per stored type, e.g. "Q4_K 62%, Q5_0 38%"
    ppl: float = math.nan
    ppl_stderr: float = math.nan
    kld: float = math.nan
    kld_stderr: float = math.nan
    kld_max: float = math.nan
    top1: float = math.nan  # fraction of positions with the reference's argmax
    decode_tps: float = math.nan
    build_seconds: float = math.nan
    eval_seconds: float = math.nan
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- texts
def split_texts() -> tuple[str, str]:
    """(calibration, evaluation) text from ``pydoc_data.topics``, disjoint topics."""
    from pydoc_data.topics import topics

    keys = sorted(topics)
    cal = "\n\n".join(topics[k] for i, k in enumerate(keys) if i % 4)
    ev = "\n\n".join(topics[k] for i, k in enumerate(keys) if i % 4 == 0)
    return cal, ev


# --------------------------------------------------------------------------- file facts
def file_facts(path: Path) -> tuple[float, float, str]:
    """(bpw over all tensors, bpw over blk.* 2-D weights, share of weights per stored type)."""
    with gguflite.open(path) as f:
        kms = set(km.km_tensor_names(f))
        total_b = total_n = blk_b = blk_n = 0
        per_type: dict[str, int] = {}
        for name, ti in f.tensors.items():
            base = name.rpartition(".")[0]
            if base in kms:
                continue
            tname, n, nb = ti.type.name, ti.n_elements, ti.nbytes
            total_b, total_n = total_b + nb, total_n + n
            if name.startswith("blk.") and len(ti.shape) == 2:
                blk_b, blk_n = blk_b + nb, blk_n + n
                per_type[tname] = per_type.get(tname, 0) + n
        for base in kms:
            kmt = km.from_gguf(f, base)
            n, nb = kmt.shape[0] * kmt.shape[1], kmt.nbytes
            total_b, total_n = total_b + nb, total_n + n
            if base.startswith("blk."):
                blk_b, blk_n = blk_b + nb, blk_n + n
                tname = f"KM{kmt.bits}"
                per_type[tname] = per_type.get(tname, 0) + n
    shares = ", ".join(f"{t} {100 * n / blk_n:.0f}%" for t, n in
                       sorted(per_type.items(), key=lambda kv: -kv[1]))
    return 8 * total_b / total_n, 8 * blk_b / max(blk_n, 1), shares


def compare_bytes(ours: Path, theirs: Path) -> dict[str, Any]:
    """Tensors stored with the same type in both files (norm vectors included): how many
    are byte-identical; and how many the two quantizers gave different types."""
    same, diff, other = [], [], 0
    with gguflite.open(ours) as a, gguflite.open(theirs) as b:
        for name, ta in a.tensors.items():
            tb = b.tensors.get(name)
            if tb is None or tb.type != ta.type:
                other += tb is not None
                continue
            (same if np.array_equal(a.raw(name), b.raw(name)) else diff).append(
                f"{name} {ta.type.name}")
    return {"identical": len(same), "different": len(diff), "type_differs": other,
            "different_names": diff[:10], "identical_examples": same[:3]}


# --------------------------------------------------------------------------- building
def build_file(v: Variant, f16: Path, out: Path, imatrix: Path | None, threads: int) -> float:
    """Write ``out`` for variant ``v``; returns seconds."""
    t0 = time.perf_counter()
    if v.producer == "gguflite":
        from gguflite.converters.requantize import requantize

        requantize(f16, out, type=v.recipe, fallback_type=v.fallback,
                   output_type=v.output_type, tensor_types=v.tensor_types,
                   imatrix=imatrix if v.imatrix else None)
    else:
        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = v.ftype
        params.nthread = threads
        rc = llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(),
                                            ctypes.byref(params))
        if rc != 0:
            raise RuntimeError(f"llama_model_quantize({v.label}) returned {rc}")
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- evaluation
@dataclass
class Reference:
    """The F16 model's log-probabilities at the scored positions of every chunk."""

    chunks: list[np.ndarray]  # each (ctx,) int64 token ids
    first: int  # first scored position
    logp: list[np.ndarray]  # each (ctx - 1 - first, vocab) float32


def score(ref: Reference, logits_per_chunk: Sequence[np.ndarray]) -> dict[str, float]:
    """Perplexity, KL divergence vs the reference and top-1 agreement (llama.cpp's defs)."""
    nll_all, kld_all, same = [], [], 0
    ctx = ref.chunks[0].size
    for chunk, logits, lb in zip(ref.chunks, logits_per_chunk, ref.logp, strict=True):
        lp = log_softmax(logits[ref.first:ctx - 1])  # (m, vocab) float64
        target = chunk[ref.first + 1:]  # (m,)
        nll_all.append(-lp[np.arange(target.size), target])
        lb64 = lb.astype(np.float64)
        kld_all.append((np.exp(lb64) * (lb64 - lp)).sum(axis=-1))  # (m,)
        same += int((lp.argmax(axis=-1) == lb.argmax(axis=-1)).sum())
    nll, kld = np.concatenate(nll_all), np.concatenate(kld_all)
    n = nll.size
    mean = float(nll.mean())
    ppl = math.exp(mean)
    var = max(float((nll ** 2).mean()) - mean * mean, 0.0)
    return {"ppl": ppl, "ppl_stderr": ppl * math.sqrt(var / (n - 1)),
            "kld": float(kld.mean()), "kld_stderr": float(kld.std(ddof=1) / math.sqrt(n)),
            "kld_max": float(kld.max()), "top1": same / n}


class OursEngine:
    """The Numba runtime."""

    name = "gguflite"

    def __init__(self, path: Path, ctx: int, threads: int):
        from gguflite.runtime import load

        self.model = load(path, n_ctx=ctx, threads=threads)

    def logits(self, chunk: np.ndarray) -> np.ndarray:
        return self.model.logits(chunk)  # (ctx, vocab)

    def decode_tps(self, ids: np.ndarray, prompt: int, n: int) -> float:
        m = self.model
        m.reset()
        m.backend.forward(ids[:prompt], 0)
        t0 = time.perf_counter()
        for i in range(n):
            m.backend.forward(ids[prompt + i:prompt + i + 1], prompt + i)
        return n / (time.perf_counter() - t0)

    def close(self) -> None:
        self.model.close()


class LlamaCppEngine:
    """llama.cpp through llama-cpp-python, all logits of a chunk."""

    name = "llama.cpp"

    def __init__(self, path: Path, ctx: int, threads: int):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(path), logits_all=True, n_ctx=ctx, n_batch=ctx,
                         n_threads=threads, n_threads_batch=threads, verbose=False)

    def logits(self, chunk: np.ndarray) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(chunk.tolist())
        return np.array(self.llm.scores[:chunk.size], dtype=np.float32)  # (ctx, vocab)

    def decode_tps(self, ids: np.ndarray, prompt: int, n: int) -> float:
        self.llm.reset()
        self.llm.eval(ids[:prompt].tolist())
        t0 = time.perf_counter()
        for i in range(n):
            self.llm.eval([int(ids[prompt + i])])
        return n / (time.perf_counter() - t0)

    def close(self) -> None:
        self.llm.close()


def evaluate(engine_cls: type, path: Path, ref: Reference, *, ctx: int, threads: int,
             decode: int) -> dict[str, float]:
    t0 = time.perf_counter()
    eng = engine_cls(path, ctx, threads)
    try:
        out = score(ref, [eng.logits(c) for c in ref.chunks])
        out["eval_seconds"] = time.perf_counter() - t0
        if decode:
            prompt = min(32, ctx // 2)  # then up to `decode` single-token steps in the context
            out["decode_tps"] = eng.decode_tps(ref.chunks[0], prompt, min(decode, ctx - prompt))
    finally:
        eng.close()
    return out


def reference(f16: Path, ev_text: str, *, ctx: int, n_chunks: int, threads: int) -> Reference:
    from gguflite.runtime import load

    with load(f16, n_ctx=ctx, threads=threads) as m:
        chunks, _ = chunk_tokens(m, ev_text, ctx)
        chunks = chunks[:n_chunks]
        first = ctx // 2
        logp = [log_softmax(m.logits(c)[first:ctx - 1]).astype(np.float32) for c in chunks]
    return Reference(chunks, first, logp)


# --------------------------------------------------------------------------- the run
def run(source: Path, workdir: Path, labels: Sequence[str], *, ctx: int, n_chunks: int,
        cal_chunks: int, threads: int, decode: int, llama_cpp: bool,
        rebuild: bool, partial: Path | None = None,
        cross_check: Sequence[str] = CROSS_CHECK) -> dict[str, Any]:
    """Build, evaluate and compare; returns the JSON-ready result (also written to
    ``partial`` after every row, so a long run can be rendered before it ends)."""
    from gguflite.converters.requantize import requantize
    from gguflite.runtime import load
    from gguflite.runtime.imatrix import collect_imatrix

    workdir.mkdir(parents=True, exist_ok=True)
    cal_text, ev_text = split_texts()
    f16 = workdir / "f16.gguf"
    if rebuild or not f16.exists():
        log.info("reference F16 from %s", source)
        requantize(source, f16, type="f16")
    imat = workdir / "imatrix.gguf"
    imat_info: dict[str, Any] = {}
    if any(VARIANTS[lb].imatrix for lb in labels) and (rebuild or not imat.exists()):
        with load(f16, n_ctx=ctx, threads=threads) as m:
            stats = collect_imatrix(m, cal_text, ctx=ctx, n_chunks=cal_chunks,
                                    dataset="pydoc_data.topics (i % 4 != 0)")
        stats.save(imat)
        imat_info = {"chunks": stats.chunk_count, "ctx": ctx, "seconds": stats.seconds}
        log.info("imatrix: %d chunks in %.1f s", stats.chunk_count, stats.seconds)
    elif imat.exists():
        with gguflite.open(imat) as f:
            imat_info = {"chunks": f.metadata["imatrix.chunk_count"],
                         "ctx": f.metadata["imatrix.chunk_size"], "seconds": None}
    log.info("reference logits")
    t0 = time.perf_counter()
    ref_cache = workdir / f"reference-ctx{ctx}-chunks{n_chunks}.npz"
    if not rebuild and ref_cache.exists():
        with np.load(ref_cache) as z:
            ref = Reference(list(z["chunks"]), int(z["first"]), list(z["logp"]))
    else:
        ref = reference(f16, ev_text, ctx=ctx, n_chunks=n_chunks, threads=threads)
        np.savez(ref_cache, chunks=np.stack(ref.chunks), first=ref.first,
                 logp=np.stack(ref.logp))
    ref_seconds = time.perf_counter() - t0
    rows: list[Row] = []
    files: dict[str, Path] = {}
    header = {
        "source": str(source), "ctx": ctx, "chunks": len(ref.chunks),
        "scored_tokens": len(ref.chunks) * (ctx - 1 - ctx // 2),
        "calibration_chunks": cal_chunks, "imatrix": imat_info, "threads": threads,
        "reference_seconds": ref_seconds,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                   f"{platform.python_version()}",
        "byte_comparisons": {},
    }
    for label in labels:
        v = VARIANTS[label]
        if v.producer == "llama.cpp" and not llama_cpp:
            continue
        path = f16 if label == "f16" else workdir / (label.replace(" ", "_") + ".gguf")
        build = 0.0
        if label != "f16" and (rebuild or not path.exists()):
            log.info("build %s", label)
            build = build_file(v, f16, path, imat, threads)
        files[label] = path
        bpw, bpw_blocks, shares = file_facts(path)
        with gguflite.open(path) as f:
            has_km = bool(km.km_tensor_names(f))
        on_llama = llama_cpp and not has_km and (v.producer == "llama.cpp"
                                                 or label in cross_check)
        engines = [OursEngine] + ([LlamaCppEngine] if on_llama else [])
        for eng in engines:
            log.info("evaluate %s on %s", label, eng.name)
            res = evaluate(eng, path, ref, ctx=ctx, threads=threads, decode=decode)
            rows.append(Row(label=label, producer=v.producer, engine=eng.name, file=path.name,
                            file_bytes=path.stat().st_size, bpw=bpw, bpw_blocks=bpw_blocks,
                            types=shares, build_seconds=build, **res))
            if partial is not None:
                partial.write_text(json.dumps(header | {"rows": [asdict(r) for r in rows]},
                                              indent=1) + "\n")
    return header | {"rows": [asdict(r) for r in rows],
                     "byte_comparisons": byte_comparisons(files)}


def byte_comparisons(files: dict[str, Path]) -> dict[str, Any]:
    comparisons = {}
    for ours, theirs in (("q8_0", "llama.cpp Q8_0"), ("q6_k", "llama.cpp Q6_K"),
                         ("q4_k", "llama.cpp Q4_K_M"), ("q4_k_m", "llama.cpp Q4_K_M"),
                         ("q4_k_m-llfb", "llama.cpp Q4_K_M"), ("q5_k_m", "llama.cpp Q5_K_M"),
                         ("q3_k_m", "llama.cpp Q3_K_M"), ("iq4_xs", "llama.cpp IQ4_XS")):
        if ours in files and theirs in files:
            comparisons[f"{ours} vs {theirs}"] = compare_bytes(files[ours], files[theirs])
    return comparisons


# --------------------------------------------------------------------------- outputs
def _f(x: float, spec: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Source: `{Path(result['source']).name}`; held-out text: {result['chunks']} chunks "
        f"of {result['ctx']} tokens ({result['scored_tokens']} scored); KLD and top-1 vs the "
        "F16 file's logits on the gguflite runtime. Machine: " + result["machine"] + ".",
        "",
        "| file | by | engine | bpw (all) | bpw (blk) | stored types (blk weights) | size MiB "
        "| PPL | KLD | top-1 % | decode tok/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['label']} | {r['producer']} | {r['engine']} | {r['bpw']:.3f} | "
            f"{r['bpw_blocks']:.3f} | {r['types']} | {r['file_bytes'] / 2**20:.1f} | "
            f"{_f(r['ppl'], '.3f')} ± {_f(r['ppl_stderr'], '.3f')} | "
            f"{_f(r['kld'], '.5f')} ± {_f(r['kld_stderr'], '.5f')} | "
            f"{_f(100 * r['top1'], '.2f')} | {_f(r['decode_tps'], '.1f')} |")
    if result["byte_comparisons"]:
        lines += ["", "Byte comparison with llama.cpp's quantization of the same F16 file "
                  "(tensors stored with the same type in both):", "",
                  "| files | identical | different | type differs |", "|---|---|---|---|"]
        for k, c in result["byte_comparisons"].items():
            lines.append(f"| {k} | {c['identical']} | {c['different']} | "
                         f"{c['type_differs']} |")
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # a llama.cpp file byte-identical to one of ours is one point, labelled "ours = theirs"
    twins = {k.split(" vs ")[1]: k.split(" vs ")[0] for k, c in
             result["byte_comparisons"].items() if c["different"] == c["type_differs"] == 0}
    points = [r for r in result["rows"] if r["engine"] == "gguflite"  # codecs, not engines
              and r["label"] != "f16" and r["kld"] and not math.isnan(r["kld"])
              and twins.get(r["label"]) not in {q["label"] for q in result["rows"]}]
    fig, ax = plt.subplots(figsize=(9, 6.5))
    ax.set_yscale("log")
    for r in points:
        llama = r["producer"] == "llama.cpp"
        twin = r["label"] in twins.values()
        color = "tab:orange" if llama or twin else (
            "tab:green" if "km" in r["label"] else "tab:blue")
        ax.scatter(r["bpw"], r["kld"], color=color, marker="s" if llama or twin else "o",
                   zorder=3)
    # labels placed greedily: the first of a few offsets that overlaps no label placed before
    renderer = fig.canvas.get_renderer()
    placed: list[Any] = []
    offsets = [(5, 2), (5, -9), (-5, 2), (-5, -9), (5, 11), (5, -18), (-5, 11), (-5, -18),
               (5, 20), (5, -27)]
    for r in sorted(points, key=lambda r: (r["bpw"], r["kld"])):
        twin = {ours: theirs for theirs, ours in twins.items()}.get(r["label"])
        label = f"{r['label']} (= {twin})" if twin else r["label"]
        for dx, dy in offsets:
            ann = ax.annotate(label, (r["bpw"], r["kld"]), textcoords="offset points",
                              xytext=(dx, dy), fontsize=7, ha="left" if dx > 0 else "right")
            box = ann.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in placed):
                break
            ann.remove()
        else:
            ann = ax.annotate(label, (r["bpw"], r["kld"]), textcoords="offset points",
                              xytext=offsets[0], fontsize=7)
        placed.append(ann.get_window_extent(renderer))
    ax.set_xlabel("bits per weight (all tensors, file)")
    ax.set_ylabel("mean KL divergence vs F16 (log)")
    ax.set_title(f"{Path(result['source']).name}: size vs quality\n(every file on the "
                 "gguflite runtime; squares: llama.cpp's quantizer, or ours byte-identical to it)",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=None,
                   help="source GGUF (default: the embedded SmolLM2-135M-Instruct Q4_1)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/gguflite-quality"))
    p.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--types", default=",".join(VARIANTS),
                   help=f"comma-separated labels; known: {', '.join(VARIANTS)}")
    p.add_argument("--ctx", type=int, default=256)
    p.add_argument("--chunks", type=int, default=3, help="evaluation chunks")
    p.add_argument("--cal-chunks", type=int, default=4, help="imatrix calibration chunks")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for both engines (1: the 2-core machine is shared)")
    p.add_argument("--decode", type=int, default=32, help="decode steps timed (0: none)")
    p.add_argument("--no-llama-cpp", action="store_true", help="gguflite only")
    p.add_argument("--cross-check", default=",".join(CROSS_CHECK),
                   help="gguflite files also evaluated on llama.cpp")
    p.add_argument("--no-png", action="store_true")
    p.add_argument("--rebuild", action="store_true", help="rebuild cached files")
    p.add_argument("--from-json", type=Path, nargs="+", default=None,
                   help="only render quality.md/.json/.png from these result JSONs (e.g. "
                        "partial.json of runs still going, or of runs split by --types); "
                        "rows are merged in the --types order, byte comparisons redone "
                        "from the --workdir files")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.from_json is not None:
        write_outputs(merge_results([json.loads(p.read_text()) for p in a.from_json],
                                    a.workdir), a.out_dir, png=not a.no_png)
        return 0
    labels = [s.strip() for s in a.types.split(",") if s.strip()]
    unknown = [lb for lb in labels if lb not in VARIANTS]
    if unknown:
        p.error(f"unknown --types {unknown}; known: {', '.join(VARIANTS)}")
    source = a.model
    if source is None:
        from gguflite.default_model import default_model_path

        source = Path(default_model_path())
    t0 = time.perf_counter()
    result = run(source, a.workdir, labels, ctx=a.ctx, n_chunks=a.chunks,
                 cal_chunks=a.cal_chunks, threads=a.threads, decode=a.decode,
                 llama_cpp=not a.no_llama_cpp, rebuild=a.rebuild,
                 partial=a.workdir / "partial.json",
                 cross_check=[s.strip() for s in a.cross_check.split(",")])
    result["total_seconds"] = time.perf_counter() - t0
    write_outputs(result, a.out_dir, png=not a.no_png)
    sys.stdout.write(markdown(result))
    return 0


def merge_results(parts: Sequence[dict[str, Any]], workdir: Path) -> dict[str, Any]:
    """One result from several (split) runs of the same settings: rows in VARIANTS order."""
    order = {label: i for i, label in enumerate(VARIANTS)}
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for part in parts:
        for r in part["rows"]:
            seen.setdefault((r["label"], r["engine"]), r)
    rows = sorted(seen.values(), key=lambda r: (order.get(r["label"], 99), r["engine"]))
    result = dict(parts[0]) | {"rows": rows}
    # the parts' comparisons, redone where both files are in the workdir
    result["byte_comparisons"] = {k: c for part in parts
                                  for k, c in part.get("byte_comparisons", {}).items()}
    result["byte_comparisons"] |= byte_comparisons(
        {r["label"]: workdir / r["file"] for r in rows if (workdir / r["file"]).exists()})
    return result


def write_outputs(result: dict[str, Any], out_dir: Path, *, png: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quality.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "quality.md").write_text("# Size versus quality\n\n" + markdown(result))
    if png:
        chart(result, out_dir / "quality.png")


if __name__ == "__main__":
    raise SystemExit(main())
