"""gguflite serve under concurrent clients, and llama.cpp's llama-server under the same load.

    python benchmarks/bench_server.py [--parallel 4] [--threads 2] [--clients 1 4 8]
        [--requests 2] [--max-tokens 64] [--llama-server PATH] [--out results/server.md]

Each server runs as its own process on 127.0.0.1 (a free port), serving the embedded
SmolLM2-135M-Instruct Q4_1 with ``--parallel`` slots and ``--threads`` threads. For each
client count C, C client threads each send ``--requests`` streamed chat requests, one after
another (``max_tokens`` tokens each, ``ignore_eos`` so every reply is that long, greedy,
``cache_prompt`` off so every request prefills its prompt). Reported per C:

- aggregate decode tok/s: all completion tokens / wall time of the round (prefills included),
- time to first token (TTFT): request sent -> first content chunk, p50 and p99 (nearest rank),
- the ratio of aggregate tok/s to the one-client round,
- tokens per CPU-second of the server process (all its threads; /proc): on a machine shared
  with other jobs, wall-clock rates follow the neighbours' load, CPU time much less so.

``--step`` instead measures the engines in process: CPU seconds (process time, all threads) of
one ``SlotEngine.decode`` step for 1, 2 and 4 slots, and of ``prefill_many`` for 1 and 4
prompts of ~30 tokens, for the batched and the sequential engine.

Client count and request count are fixed, and every round is bounded by ``--timeout``; only
loopback is used. llama-server (built from the llama-cpp-python sdist's vendored llama.cpp
with cmake, target ``llama-server``) gets ``-np P -t T -c P*ctx``, its own per-slot context.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CTX = 512  # per slot
TOPICS = ["the sea", "a cat", "mountains", "bread", "the moon", "trains", "rain", "music"]


class Proc:
    """A server process; ``url`` once it answers /health."""

    def __init__(self, cmd: list[str], port: int | None, ready: re.Pattern | None):
        self.log = tempfile.NamedTemporaryFile("w+b", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.url = ""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and self.proc.poll() is None:
            text = Path(self.log.name).read_text(errors="replace")
            m = ready.search(text) if ready else None
            if m or port:
                url = m.group(1) if m else f"http://127.0.0.1:{port}"
                try:
                    if _get(url, "/health")[0] == 200:
                        self.url = url
                        return
                except OSError:
                    pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start: {' '.join(cmd)}\n"
                           + Path(self.log.name).read_text(errors="replace")[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        Path(self.log.name).unlink(missing_ok=True)


def _conn(url: str, timeout: float) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=timeout)


def _get(url: str, path: str) -> tuple[int, bytes]:
    c = _conn(url, 5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def one_request(url: str, topic: str, max_tokens: int, timeout: float) -> tuple[float, int]:
    """A streamed chat request; returns (seconds to the first content chunk, tokens)."""
    body = {"model": "m", "messages": [{"role": "user", "content": f"Tell me about {topic}."}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "cache_prompt": False, "stream_options": {"include_usage": True}}
    c = _conn(url, timeout)
    t0 = time.perf_counter()
    ttft = math.nan
    tokens = 0
    try:
        c.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {r.read()[:300]!r}")
        while True:
            line = r.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("choices") and ev["choices"][0]["delta"].get("content") \
                    and math.isnan(ttft):
                ttft = time.perf_counter() - t0
            if ev.get("usage"):
                tokens = ev["usage"]["completion_tokens"]
    finally:
        c.close()
    return ttft, tokens


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def round_(url: str, clients: int, requests: int, max_tokens: int, timeout: float,
           pid: int) -> dict:
    ttfts: list[float] = []
    tokens = [0]
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for k in range(requests):
            try:
                t, n = one_request(url, TOPICS[(i + k) % len(TOPICS)], max_tokens, timeout)
            except Exception as exc:  # reported, not hidden
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                ttfts.append(t)
                tokens[0] += n

    t0, cpu0 = time.perf_counter(), cpu_seconds(pid)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    wall, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    ttfts.sort()
    return {"clients": clients, "requests": clients * requests, "errors": errors,
            "tokens": tokens[0], "wall_s": wall, "tok_s": tokens[0] / wall, "cpu_s": cpu,
            "tok_per_cpu_s": tokens[0] / cpu if cpu else math.nan,
            "ttft_p50": _rank(ttfts, 0.50), "ttft_p99": _rank(ttfts, 0.99)}


def _rank(xs: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted xs."""
    if not xs:
        return math.nan
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def bench(name: str, url: str, pid: int, args: argparse.Namespace) -> list[dict]:
    one_request(url, "warm-up", 8, args.timeout)  # compile / page in before timing
    rows = []
    for c in args.clients:
        r = round_(url, c, args.requests, args.max_tokens, args.timeout, pid)
        r["server"] = name
        rows.append(r)
        print(f"{name:20s} clients={c}: {r['tok_s']:7.1f} tok/s, TTFT p50 "
              f"{r['ttft_p50'] * 1e3:6.0f} ms p99 {r['ttft_p99'] * 1e3:6.0f} ms, "
              f"{r['tok_per_cpu_s']:6.1f} tok/CPU-s, "
              f"{len(r['errors'])} errors", flush=True)
    return rows


def step_bench(threads: int, reps: int = 20) -> None:
    """CPU time of the engines' decode step and prefill, in process."""
    import numpy as np

    from gguflite.runtime import load
    from gguflite.serve.batched import BatchedSlots
    from gguflite.serve.slots import SequentialSlots

    model = load(None, n_ctx=256, threads=threads)
    tok = model.tokenizer
    prompts = [np.array(tok.encode(f"You are a helpful assistant. Tell me about {t}, in detail, "
                                   "in three short paragraphs please.")) for t in TOPICS[:4]]
    for cls in (BatchedSlots, SequentialSlots):
        engine = cls(model, 4)
        for n in (1, 4):
            work = [(i, prompts[i], 0) for i in range(n)]
            engine.prefill_many(work)  # compile / warm
            t = time.process_time()
            for _ in range(3):
                engine.prefill_many(work)
            ms = (time.process_time() - t) / 3 * 1e3
            print(f"{cls.__name__:16s} prefill {n} x {len(prompts[0])} tokens: {ms:6.0f} ms CPU")
        for n in (1, 2, 4):
            ids, pos = np.full(n, 5, np.int64), np.full(n, 40, np.int64)
            engine.decode(list(range(n)), ids, pos)
            t = time.process_time()
            for _ in range(reps):
                engine.decode(list(range(n)), ids, pos)
            ms = (time.process_time() - t) / reps * 1e3
            print(f"{cls.__name__:16s} decode step, {n} slot(s): {ms:6.1f} ms CPU "
                  f"({n / ms * 1e3:6.1f} tok per CPU-s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--requests", type=int, default=2, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--engines", nargs="*", default=["batched", "sequential"],
                    choices=["batched", "sequential"], help="gguflite serve --engine values")
    ap.add_argument("--llama-server", type=Path, default=None,
                    help="path of llama.cpp's llama-server binary (optional)")
    ap.add_argument("--llama-threads", type=int, default=None,
                    help="llama-server -t (default: --threads)")
    ap.add_argument("--out", type=Path, default=None, help="write a markdown table here")
    ap.add_argument("--step", action="store_true",
                    help="measure the engines' decode step and prefill in process instead")
    args = ap.parse_args()
    if args.step:
        step_bench(args.threads)
        return
    from gguflite.default_model import default_model_path

    model = default_model_path()
    rows: list[dict] = []
    for engine in args.engines:
        ours = Proc([sys.executable, "-m", "gguflite.cli.main", "serve", str(model), "--port",
                     "0", "--parallel", str(args.parallel), "-t", str(args.threads), "--ctx",
                     str(CTX), "--queue", "64", "--engine", engine], None,
                    re.compile(r"listening on (http://\S+)"))
        try:
            rows += bench(f"gguflite {engine}", ours.url, ours.proc.pid, args)
        finally:
            ours.stop()
    if args.llama_server:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ref = Proc([str(args.llama_server), "-m", str(model), "--host", "127.0.0.1",
                    "--port", str(port), "-np", str(args.parallel),
                    "-t", str(args.llama_threads or args.threads),
                    "-c", str(CTX * args.parallel), "--no-webui"], port, None)
        try:
            rows += bench(f"llama-server -t {args.llama_threads or args.threads}", ref.url,
                          ref.proc.pid, args)
        finally:
            ref.stop()
    if args.out:
        write_md(args.out, rows, args)


def write_md(path: Path, rows: list[dict], args: argparse.Namespace) -> None:
    from report import cpu_line, write_results

    lines = [
        "# gguflite serve under concurrent clients",
        "",
        f"{datetime.date.today()}, {cpu_line()} (shared with other jobs), "
        f"SmolLM2-135M-Instruct Q4_1, {args.parallel} slots, {args.threads} threads, "
        f"{args.requests} streamed requests per client, {args.max_tokens} tokens each "
        "(greedy, ignore_eos, no prompt cache).",
        "",
        "    " + " ".join(["python benchmarks/bench_server.py", *sys.argv[1:]]),
        "",
        "| server | clients | aggregate tok/s | vs 1 client | TTFT p50 ms | TTFT p99 ms "
        "| tok per server CPU-s | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base: dict[str, float] = {}
    for r in rows:
        base.setdefault(r["server"], r["tok_s"])
        lines.append(f"| {r['server']} | {r['clients']} | {r['tok_s']:.1f} | "
                     f"{r['tok_s'] / base[r['server']]:.2f}x | {r['ttft_p50'] * 1e3:.0f} | "
                     f"{r['ttft_p99'] * 1e3:.0f} | {r['tok_per_cpu_s']:.1f} | "
                     f"{len(r['errors'])} |")
    write_results(path, "\n".join(lines) + "\n", rows)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
