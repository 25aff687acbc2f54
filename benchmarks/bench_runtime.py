"""gguflite's runtime vs llama.cpp (llama-cpp-python), side by side on the same files.

    python benchmarks/bench_runtime.py [--threads 2] [--reps 3] [--only Q8_0]

Files: SmolLM2-135M-Instruct Q4_1 as shipped, and llama.cpp re-quantizations of it to Q8_0
(ftype 7) and Q4_K_M (ftype 15), made once with ``llama_cpp.llama_model_quantize`` into
``--cache`` (requantized from Q4_1: fine for speed, not for quality).

Each engine runs in its own long-lived worker process (``--worker``), so neither one's idle
OpenMP/Numba threads or BLAS settings can touch the other (a stand-alone llama-cpp-python
script gives the same llama.cpp figures as its worker here). For each file the two workers
alternate (gguflite, llama.cpp, gguflite, ...) ``--reps`` times so that load on a shared machine
hits both alike; medians and their ratio are reported:

- pp128: 128 random tokens prefilled from an empty cache.
- tg64: 64 tokens decoded one at a time from an empty cache (llama-bench's tg test).
  llama.cpp is driven through ``Llama.eval`` (one call per token, as its Python users do).
- first / warm load: a fresh process loads the file and runs one prefill (16 tokens) and one
  decode step, with an empty Numba cache directory (first) and then with it filled (warm).
- a per-op breakdown of gguflite's decode step (wall time per op kind over tg64).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FTYPES = {"Q8_0": 7, "Q4_K_M": 15}


def make_files(cache: Path, ftypes: dict[str, int] | None = None) -> dict[str, Path]:
    """The shipped SmolLM2 file and llama.cpp's requantizations of it (label -> llama_ftype,
    default FTYPES) into ``cache``; with ``ftypes`` given, only those requantizations."""
    import llama_cpp

    from gguflite.default_model import default_model_path

    src = default_model_path()
    files = {"Q4_1 (as shipped)": src} if ftypes is None else {}
    cache.mkdir(parents=True, exist_ok=True)
    llama_cpp.llama_backend_init()
    for label, ftype in (FTYPES if ftypes is None else ftypes).items():
        dst = cache / f"smollm2-135m-{label.lower()}.gguf"
        if not dst.exists():
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = ftype
            params.allow_requantize = True
            params.nthread = 2
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(),
                                                ctypes.byref(params))
            if rc != 0:
                raise SystemExit(f"llama_model_quantize({label}) failed: rc={rc}")
        files[label] = dst
    return files


def time_llama_cpp(llm, n_prompt: int, n_gen: int, seed: int) -> tuple[float, float]:
    """(pp seconds, tg seconds) with llama-cpp-python's Llama.eval."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, llm.n_vocab(), size=max(n_prompt, n_gen)).tolist()
    pp = tg = 0.0
    if n_prompt:
        llm.reset()
        llm._ctx.kv_cache_clear()
        t0 = time.perf_counter()
        llm.eval(ids[:n_prompt])
        pp = time.perf_counter() - t0
    if n_gen:
        llm.reset()
        llm._ctx.kv_cache_clear()
        t0 = time.perf_counter()
        for t in ids[:n_gen]:
            llm.eval([t])
        tg = time.perf_counter() - t0
    return pp, tg


LOAD_SNIPPET = """
import sys, time, json
t0 = time.perf_counter()
import numpy as np
import gguflite.runtime as rt
m = rt.load(sys.argv[1], threads=int(sys.argv[2]), n_ctx=256)
t1 = time.perf_counter()
m.backend.forward(np.arange(16), 0)
m.backend.forward(np.arange(1), 16)
t2 = time.perf_counter()
print(json.dumps({"load": t1 - t0, "first_tokens": t2 - t1, "total": t2 - t0}))
"""


def load_times(path: Path, threads: int) -> dict[str, dict[str, float]]:
    """Fresh-process start-up with an empty, then a filled, Numba cache directory."""
    out = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
        for label in ("first", "warm"):
            r = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, str(path), str(threads)],
                               env=env, capture_output=True, text=True, check=True)
            out[label] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


class Worker:
    """One engine with one file loaded, in its own process; ``run`` sends it a command line."""

    def __init__(self, engine: str, path: Path, threads: int, *, script: str = __file__):
        """``script``: the benchmark whose ``--worker ENGINE FILE`` mode serves the commands."""
        self.proc = subprocess.Popen(
            [sys.executable, script, "--worker", engine, str(path), "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"benchmark worker {self.proc.args[3]} died "
                             f"(exit code {self.proc.wait()})")
        return json.loads(line)

    def run(self, *cmd: object) -> dict:
        self.proc.stdin.write(" ".join(map(str, cmd)) + "\n")
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def worker_main(engine: str, path: Path, threads: int) -> None:
    """Serve ``pp N SEED`` / ``tg N SEED`` / ``ops N`` commands from stdin, one JSON line each."""
    if engine == "gguflite":
        from gguflite.runtime import load
        from gguflite.runtime.bench import time_decode, time_prefill

        model = load(path, threads=threads, n_ctx=512)
        pp_fn = lambda n, seed: time_prefill(model, n, seed=seed)  # noqa: E731
        tg_fn = lambda n, seed: time_decode(model, n, seed=seed)  # noqa: E731
        info = {"types": sorted({ti.type.name for ti in model.file.tensors.values()})}
    else:
        import llama_cpp

        llm = llama_cpp.Llama(str(path), n_threads=threads, n_threads_batch=threads, n_ctx=512,
                              n_batch=512, verbose=False)
        pp_fn = lambda n, seed: time_llama_cpp(llm, n, 0, seed)[0]  # noqa: E731
        tg_fn = lambda n, seed: time_llama_cpp(llm, 0, n, seed)[1]  # noqa: E731
        info = {}
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        cmd, *rest = line.split()
        if cmd == "pp":
            out = {"seconds": pp_fn(int(rest[0]), int(rest[1]))}
        elif cmd == "tg":
            out = {"seconds": tg_fn(int(rest[0]), int(rest[1]))}
        else:  # "ops N": gguflite's per-op decode timers
            n = int(rest[0])
            timers = model.backend.enable_timers()
            time_decode(model, n)
            model.backend.enable_timers(False)
            out = {"ms_per_op": {k: 1e3 * v / n for k, v in
                                 sorted(timers.items(), key=lambda kv: -kv[1])},
                   "ms_total": 1e3 * sum(timers.values()) / n}
        print(json.dumps(out), flush=True)


def bench_file(label: str, path: Path, *, threads: int, reps: int, n_prompt: int,
               n_gen: int, with_load: bool = True) -> dict:
    ours = Worker("gguflite", path, threads)
    ref = Worker("llama.cpp", path, threads)
    for w in (ours, ref):  # warm-up (first-call costs, page faults)
        w.run("pp", n_prompt, 0)
        w.run("tg", 8, 0)
    ours_pp, ours_tg, ref_pp, ref_tg = [], [], [], []
    for r in range(reps):
        ours_pp.append(n_prompt / ours.run("pp", n_prompt, r)["seconds"])
        ours_tg.append(n_gen / ours.run("tg", n_gen, r)["seconds"])
        ref_pp.append(n_prompt / ref.run("pp", n_prompt, r)["seconds"])
        ref_tg.append(n_gen / ref.run("tg", n_gen, r)["seconds"])
    ops = ours.run("ops", n_gen)
    ours.close()
    ref.close()
    med = statistics.median
    return {
        "label": label, "path": str(path), "types": ours.ready["types"],
        "size_mb": path.stat().st_size / 1e6,
        "pp": {"gguflite": med(ours_pp), "llama_cpp": med(ref_pp),
               "all_gguflite": ours_pp, "all_llama_cpp": ref_pp},
        "tg": {"gguflite": med(ours_tg), "llama_cpp": med(ref_tg),
               "all_gguflite": ours_tg, "all_llama_cpp": ref_tg},
        "decode_ms_per_op": ops["ms_per_op"],
        "decode_ms_total": ops["ms_total"],
        "load": load_times(path, threads) if with_load else None,
    }


def render(results: list[dict], args: argparse.Namespace, cmd: str) -> str:
    lines = [
        "# Runtime benchmark: gguflite vs llama.cpp",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}",
        f"- command: `{cmd}`",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"threads={args.threads}, load average at start {args.loadavg}",
        "- each engine in its own worker process; they alternate per repetition; figures are "
        f"medians of {args.reps} repetitions; ratio = gguflite / llama.cpp (> 1: gguflite faster)",
        "",
        f"| file | types | pp{args.n_prompt} gguflite | pp llama.cpp | ratio | "
        f"tg{args.n_gen} gguflite | tg llama.cpp | ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        pp, tg = r["pp"], r["tg"]
        lines.append(
            f"| {r['label']} | {', '.join(r['types'])} | {pp['gguflite']:.1f} | "
            f"{pp['llama_cpp']:.1f} | {pp['gguflite'] / pp['llama_cpp']:.2f} | "
            f"{tg['gguflite']:.1f} | {tg['llama_cpp']:.1f} | "
            f"{tg['gguflite'] / tg['llama_cpp']:.2f} |")
    lines += ["", "tokens/s. Start-up of a fresh process (load + a 16-token prefill + one "
              "decode step), seconds:", "",
              "| file | first (empty Numba cache) | warm (cache filled) | of which load |",
              "|---|---:|---:|---:|"]
    for r in results:
        ld = r["load"]
        if ld is None:
            lines.append(f"| {r['label']} | not measured (--skip-load) | | |")
            continue
        lines.append(f"| {r['label']} | {ld['first']['total']:.2f} | "
                     f"{ld['warm']['total']:.2f} | {ld['warm']['load']:.2f} |")
    lines += ["", "gguflite decode step, ms per token by op (tg, timers on):", ""]
    ops = sorted({k for r in results for k in r["decode_ms_per_op"]})
    lines += ["| file | total | " + " | ".join(ops) + " |",
              "|---|---:|" + "---:|" * len(ops)]
    for r in results:
        d = r["decode_ms_per_op"]
        lines.append(f"| {r['label']} | {r['decode_ms_total']:.2f} | "
                     + " | ".join(f"{d.get(k, 0.0):.2f}" for k in ops) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("-p", "--n-prompt", type=int, default=128)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "gguflite-bench")
    ap.add_argument("--skip-load", action="store_true", help="Skip the start-up timings.")
    ap.add_argument("--only", default=None, help="Run only files whose label contains this.")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/runtime.md")
    ap.add_argument("--worker", nargs=2, metavar=("ENGINE", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(args.worker[0], Path(args.worker[1]), args.threads)
        return
    args.loadavg = " ".join(f"{x:.1f}" for x in os.getloadavg())
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])
    files = make_files(args.cache)
    results = []
    for label, path in files.items():
        if args.only and args.only not in label:
            continue
        print(f"== {label}", file=sys.stderr)
        results.append(bench_file(label, path, threads=args.threads, reps=args.reps,
                                  n_prompt=args.n_prompt, n_gen=args.n_gen,
                                  with_load=not args.skip_load))
        print(json.dumps(results[-1], indent=1), file=sys.stderr)
    text = render(results, args, cmd)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
