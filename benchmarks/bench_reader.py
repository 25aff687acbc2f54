"""Speed of opening a GGUF file and reading its metadata: gguflite against gguf-py's GGUFReader.

    python benchmarks/bench_reader.py [--big-mib 1024] [--repeat 5]
        [--out benchmarks/results/reader.md]

Task timed ("open + metadata"): open the file, read ``general.architecture``,
``{arch}.block_count`` and the first 100 vocabulary tokens, close. Files:

- the default model (SmolLM2-135M-Instruct Q4_1, 49k vocabulary, written by llama.cpp);
- a synthetic 262,144-token vocabulary (tokens, scores, token types, 262k merges) with a
  small tensor, and the same metadata with a large tensor (``--big-mib``), to show that the
  cost does not grow with tensor data.

Both readers run in the same process, alternating, best of ``--repeat`` (GGUFReader: fewer
repeats, it is slow); gguflite is warmed up once (Numba loads its cached scan kernel on the
first string array). Also timed on the default model: a fresh Python process doing the same
(imports included), and reading every tensor's bytes (a sum over ``f.raw(name)`` vs
GGUFReader's ``tensor.data``), in GB/s. Ratios are what to read: absolute numbers depend on
the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import gguf
import numpy as np

import gguflite
from gguflite import GGMLType, GGUFWriter
from gguflite import GGUFValueType as T
from gguflite.default_model import default_model_path

N_TOKENS_READ = 100


def gguflite_task(path: Path) -> tuple[str, int, list[str]]:
    with gguflite.open(path) as f:
        arch = f.metadata["general.architecture"]
        blocks = int(f.metadata[f"{arch}.block_count"])
        tokens = f.metadata["tokenizer.ggml.tokens"][:N_TOKENS_READ]
    return arch, blocks, tokens


def gguf_py_task(path: Path) -> tuple[str, int, list[str]]:
    r = gguf.GGUFReader(path)
    arch = r.fields["general.architecture"].contents()
    blocks = int(r.fields[f"{arch}.block_count"].contents())
    tokens = r.fields["tokenizer.ggml.tokens"].contents(slice(0, N_TOKENS_READ))
    return arch, blocks, tokens


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


_FRESH = {
    "gguflite": ("import sys, gguflite\n"
                 "with gguflite.open(sys.argv[1]) as f:\n"
                 "    a = f.metadata['general.architecture']; f.metadata[a + '.block_count']\n"
                 "    f.metadata['tokenizer.ggml.tokens'][:100]\n"),
    "gguf-py": ("import sys, gguf\n"
                "r = gguf.GGUFReader(sys.argv[1])\n"
                "a = r.fields['general.architecture'].contents()\n"
                "r.fields[a + '.block_count'].contents()\n"
                "r.fields['tokenizer.ggml.tokens'].contents(slice(0, 100))\n"),
}


def fresh_process(tool: str, path: Path) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", _FRESH[tool], str(path)], check=True)
    return time.perf_counter() - t


def synthetic_vocab_file(path: Path, tensor_mib: int, n_vocab: int = 262144) -> Path:
    """A 262k-token BPE vocabulary (as in Gemma 3) plus one F32 tensor of ``tensor_mib``."""
    tokens = [f"tok{i:06d}" for i in range(n_vocab)]
    n = tensor_mib * (1 << 20) // 4
    rows = max(1, n // 4096)
    with GGUFWriter(path) as w:
        w.add("general.architecture", "llama", T.STRING)
        w.add("llama.block_count", 1, T.UINT32)
        w.add("tokenizer.ggml.model", "gpt2", T.STRING)
        w.add("tokenizer.ggml.tokens", tokens, T.ARRAY, T.STRING)
        w.add("tokenizer.ggml.scores", np.zeros(n_vocab, np.float32), T.ARRAY, T.FLOAT32)
        w.add("tokenizer.ggml.token_type", np.ones(n_vocab, np.int32), T.ARRAY, T.INT32)
        w.add("tokenizer.ggml.merges", [f"t{i} o{i}" for i in range(n_vocab)], T.ARRAY, T.STRING)
        w.add_tensor("blk.0.big.weight", shape=(rows, 4096), type=GGMLType.F32,
                     data=lambda: np.ones((rows, 4096), np.float32))
    return path


def read_throughput(path: Path, repeat: int) -> dict[str, float]:
    """GB/s of summing every tensor's bytes (pages already cached)."""
    def lite() -> int:
        total = 0
        with gguflite.open(path) as f:
            for name in f.tensors:
                total += int(f.raw(name).sum(dtype=np.uint64))
        return total

    r = gguf.GGUFReader(path)

    def ref() -> int:
        return sum(int(np.ascontiguousarray(t.data).reshape(-1).view(np.uint8)
                       .sum(dtype=np.uint64)) for t in r.tensors)

    assert lite() == ref()
    nbytes = sum(int(t.n_bytes) for t in r.tensors)
    return {"gguflite": nbytes / best(lite, repeat) / 1e9,
            "gguf-py": nbytes / best(ref, repeat) / 1e9, "bytes": nbytes}


def measure(path: Path, repeat: int, ref_repeat: int) -> dict[str, float]:
    t = time.perf_counter()
    expected = gguf_py_task(path)  # timed run doubles as the reference answer
    ref = time.perf_counter() - t
    if ref_repeat > 1:
        ref = min(ref, best(lambda: gguf_py_task(path), ref_repeat - 1))
    got = gguflite_task(path)  # warm-up
    assert got[:2] == expected[:2] and got[2] == list(expected[2])
    lite = best(lambda: gguflite_task(path), repeat * 10)
    return {"gguflite": lite, "gguf-py": ref, "ratio": ref / lite,
            "size": path.stat().st_size}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-mib", type=int, default=512, help="large tensor data, MiB")
    ap.add_argument("--repeat", type=int, default=3, help="runs of gguflite (x10 in process)")
    ap.add_argument("--ref-repeat", type=int, default=1,
                    help="runs of GGUFReader (about 2-8 s each unloaded, minutes under load)")
    ap.add_argument("--out", type=Path, default=None, help="write a markdown report here")
    args = ap.parse_args()

    lines: list[str] = []

    def out(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    out("# Reader benchmark: gguflite vs gguf-py GGUFReader")
    out()
    out(f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    out(f"- machine: {platform.machine()}, {os.cpu_count()} CPUs (shared, under load from other "
        f"work: read the ratios), Python {platform.python_version()}, gguf {version('gguf')}")
    out(f"- command: `python benchmarks/bench_reader.py --big-mib {args.big_mib} "
        f"--repeat {args.repeat} --ref-repeat {args.ref_repeat}`")
    out(f"- task: open, read `general.architecture`, `{{arch}}.block_count`, the first "
        f"{N_TOKENS_READ} tokens; best of runs; gguflite warmed up once")
    out()
    with tempfile.TemporaryDirectory() as d:
        files = {
            "SmolLM2-135M Q4_1 (49k vocab)": default_model_path(),
            "synthetic 262k vocab, 1 MiB tensor": synthetic_vocab_file(Path(d) / "small.gguf", 1),
            f"synthetic 262k vocab, {args.big_mib} MiB tensor":
                synthetic_vocab_file(Path(d) / "big.gguf", args.big_mib),
        }
        out("## Open + metadata, in process")
        out()
        out("| file | size | gguflite | GGUFReader | speed-up |")
        out("|---|---:|---:|---:|---:|")
        for label, path in files.items():
            m = measure(path, args.repeat, args.ref_repeat)
            out(f"| {label} | {m['size'] / 2**20:.0f} MiB | {m['gguflite'] * 1e3:.2f} ms | "
                f"{m['gguf-py'] * 1e3:.0f} ms | {m['ratio']:.0f}x |")
        out()
        smol = next(iter(files.values()))
        out("## Open + metadata, fresh Python process (imports included), SmolLM2")
        out()
        fresh_process("gguflite", smol)  # page cache, bytecode cache
        lite = min(fresh_process("gguflite", smol) for _ in range(args.repeat))
        ref = min(fresh_process("gguf-py", smol) for _ in range(args.ref_repeat))
        out("| gguflite | GGUFReader | speed-up |")
        out("|---:|---:|---:|")
        out(f"| {lite * 1e3:.0f} ms | {ref * 1e3:.0f} ms | {ref / lite:.1f}x |")
        out()
        out("## Tensor bytes: sum of every tensor's bytes (page cache warm), SmolLM2")
        out()
        tp = read_throughput(smol, args.repeat)
        out("| tensor bytes | gguflite `f.raw` | GGUFReader `tensor.data` | ratio |")
        out("|---:|---:|---:|---:|")
        out(f"| {tp['bytes'] / 2**20:.0f} MiB | {tp['gguflite']:.2f} GB/s | "
            f"{tp['gguf-py']:.2f} GB/s | {tp['gguflite'] / tp['gguf-py']:.2f} |")
    out()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
