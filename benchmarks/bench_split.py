"""Split sets: what splitting costs, in gguflite and in the reference tools, same run.

    python benchmarks/bench_split.py [--max-size 10M] [--repeat 7]
        [--out benchmarks/results/split.md]

On the default model (SmolLM2-135M-Instruct Q4_1, 272 tensors, ~90 MB), split into shards of
at most ``--max-size`` bytes of tensor data (~8 shards at 10M):

- write: the same declarations (metadata + tensors copied from the memory map) written as a
  split set by gguflite (``write_split``) and by gguf-py's ``GGUFWriter(split_max_size=...)``
  (the writer behind ``convert_hf_to_gguf.py --split-max-size``);
- open: ``gguflite.open`` + read ``general.architecture`` and the tensor count, for the single
  file and for the set;
- load: ``llama_cpp.Llama(path, vocab_only=True)`` (llama.cpp opens every shard's header),
  single file and set.

Best of ``--repeat`` runs each, alternating; ratios are what to read (the machine is shared).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
from pathlib import Path

import gguf
import llama_cpp

from bench_reader import best  # noqa: E402  (benchmarks/ is on sys.path when run)

import gguflite
from gguflite import GGUFWriter
from gguflite.default_model import default_model_path
from gguflite.metadata import StringArray
from gguflite.split import SplitLimits, parse_size, write_split




def write_gguflite(src: Path, out: Path, max_size: int) -> None:
    with gguflite.open(src) as f:
        w = GGUFWriter(out)
        for key in f.metadata:
            w.add_from(f, key)
        for name, ti in f.tensors.items():
            w.add_tensor(name, shape=ti.shape, type=ti.type, data=f.raw(name))
        write_split(w, SplitLimits(max_size=max_size))


def write_gguf_py(src: Path, out: Path, max_size: int) -> None:
    with gguflite.open(src) as f:
        w = gguf.GGUFWriter(out, f.metadata["general.architecture"], split_max_size=max_size)
        for key in f.metadata:
            if key == "general.architecture":
                continue
            value = f.metadata[key]
            if isinstance(value, StringArray):
                value = list(value)
            elif hasattr(value, "tolist"):
                value = value.tolist()
            etype = f.metadata.element_type(key)
            w.add_key_value(key, value, gguf.GGUFValueType(f.metadata.value_type(key)),
                            None if etype is None else gguf.GGUFValueType(etype))
        for name, ti in f.tensors.items():
            w.add_tensor(name, f.array(name), raw_dtype=gguf.GGMLQuantizationType(int(ti.type)))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


def open_gguflite(path: Path) -> None:
    with gguflite.open(path) as f:
        f.metadata["general.architecture"]
        len(f.tensors)


def load_llama_cpp(path: Path) -> None:
    llama_cpp.Llama(str(path), vocab_only=True, verbose=False).close()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-size", default="10M")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    src = default_model_path()
    max_size = parse_size(args.max_size)
    tmp = Path(tempfile.mkdtemp(prefix="bench-split-"))
    try:
        def fresh(name: str) -> Path:
            d = tmp / name
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            return d / "m.gguf"

        w_ours = best(lambda: write_gguflite(src, fresh("ours"), max_size), args.repeat)
        w_theirs = best(lambda: write_gguf_py(src, fresh("theirs"), max_size), args.repeat)
        first = next((tmp / "ours").glob("m-00001-of-*.gguf"))
        n = len(list((tmp / "ours").iterdir()))
        o_one = best(lambda: open_gguflite(src), args.repeat)
        o_set = best(lambda: open_gguflite(first), args.repeat)
        l_one = best(lambda: load_llama_cpp(src), args.repeat)
        l_set = best(lambda: load_llama_cpp(first), args.repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        ("write the set (copy, gguflite vs gguf-py GGUFWriter)", w_ours, w_theirs,
         f"{w_theirs / w_ours:.2f}x faster"),
        ("open + metadata: set vs single file (gguflite)", o_set, o_one, f"{o_set / o_one:.2f}x"),
        ("llama.cpp vocab-only load: set vs single file", l_set, l_one, f"{l_set / l_one:.2f}x"),
        ("open the set: gguflite vs llama.cpp vocab-only load", o_set, l_set,
         f"{l_set / o_set:.2f}x faster"),
    ]
    lines = [
        "# Split sets",
        "",
        f"`python benchmarks/bench_split.py --max-size {args.max_size} --repeat {args.repeat}`"
        f" on {cpu_name()}, {n} shards of SmolLM2-135M Q4_1; "
        "best of the runs, same process, shared machine: read the ratios.",
        "",
        "| what | a (s) | b (s) | ratio |",
        "|---|---:|---:|---|",
        *[f"| {what} | {a:.4f} | {b:.4f} | {ratio} |" for what, a, b, ratio in rows],
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
