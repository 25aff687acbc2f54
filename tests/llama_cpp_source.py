"""llama.cpp's own converter (``convert_hf_to_gguf.py``), for tests that compare with it.

The converter ships in the llama-cpp-python sdist (vendor/llama.cpp), not in its wheel. The tree
is found at ``$LLAMA_CPP_DIR`` (the variable benchmarks/bench_convert.py reads), else fetched
once with pip from the package registry, as the sdist of the installed llama-cpp-python version,
and the three parts the converter needs (``convert_hf_to_gguf.py``, ``conversion/``,
``gguf-py/``) are unpacked under ``~/.cache/gguflite-tests/``. A failed fetch fails the test
that needed it; nothing is skipped.

The converter runs in a subprocess with the tree's own gguf-py (newer than the ``gguf``
package). Its BPE pre-tokenizer check hashes the tokenizer's output on a fixed text and refuses
hashes it does not know, which a tiny trained tokenizer never has: ``tokenizer_pre`` names the
pre-tokenizer instead (the checkpoint builders know which one they trained).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PARTS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")

# Runs convert_hf_to_gguf.py as __main__ once per job in one process (torch and transformers are
# imported once), after replacing the pre-tokenizer hash check.
# argv: tree, tokenizer_pre ("" keeps the check), the converter command lines as a JSON list.
_DRIVER = """
import json, runpy, sys
tree, pre, jobs = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path[:0] = [tree, tree + "/gguf-py"]
if pre:
    import conversion.base
    conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
for job in jobs:
    sys.argv = [tree + "/convert_hf_to_gguf.py", *job]
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def llama_cpp_tree() -> Path:
    """A llama.cpp source tree holding ``convert_hf_to_gguf.py`` (see the module docstring)."""
    if os.environ.get("LLAMA_CPP_DIR"):
        tree = Path(os.environ["LLAMA_CPP_DIR"])
        if not (tree / "convert_hf_to_gguf.py").is_file():
            raise FileNotFoundError(f"LLAMA_CPP_DIR={tree} has no convert_hf_to_gguf.py")
        return tree
    import llama_cpp

    version = llama_cpp.__version__
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gguflite-tests"
    tree = cache / f"llama.cpp-{version}"
    if (tree / "convert_hf_to_gguf.py").is_file():
        return tree
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        res = subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={version}", "-d", tmp], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError("could not fetch the llama-cpp-python sdist for "
                               f"convert_hf_to_gguf.py (set LLAMA_CPP_DIR):\n{res.stderr}")
        (sdist,) = Path(tmp).glob("llama_cpp_python-*.tar.gz")
        prefix = f"{sdist.name[: -len('.tar.gz')]}/vendor/llama.cpp/"
        staged = Path(tmp) / "tree"
        with tarfile.open(sdist) as tar:
            for m in tar.getmembers():
                rel = m.name[len(prefix):] if m.name.startswith(prefix) else None
                if rel and rel.startswith(PARTS) and (m.isfile() or m.isdir()):
                    m.name = rel
                    tar.extract(m, staged, filter="data")
        if not (staged / "convert_hf_to_gguf.py").is_file():
            raise RuntimeError(f"{sdist.name} has no vendor/llama.cpp/convert_hf_to_gguf.py")
        try:
            staged.rename(tree)  # atomic: a concurrent run may have won; its tree is the same
        except OSError:
            if not (tree / "convert_hf_to_gguf.py").is_file():
                raise
    return tree


def convert_hf_to_gguf(jobs: list[tuple[Path, Path, str]], *, tokenizer_pre: str = "",
                       model_name: str = "tiny") -> None:
    """Run llama.cpp's converter on each ``(checkpoint, out, outtype)``, in one subprocess.

    ``model_name`` is written as ``general.name`` (llama.cpp otherwise takes the directory name,
    and some names change how llama.cpp loads the vocabulary).
    """
    tree = llama_cpp_tree()
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    argv = [[str(ckpt), "--outfile", str(out), "--outtype", outtype, "--model-name", model_name]
            for ckpt, out, outtype in jobs]
    res = subprocess.run([sys.executable, "-c", _DRIVER, str(tree), tokenizer_pre,
                          json.dumps(argv)],
                         capture_output=True, text=True, env=env)
    missing = [str(out) for _, out, _ in jobs if not out.is_file()]
    if res.returncode != 0 or missing:
        raise RuntimeError(f"convert_hf_to_gguf.py failed (rc={res.returncode}; not written: "
                           f"{missing}):\n{res.stderr[-4000:]}")


if __name__ == "__main__":  # print the tree (fetching it if needed)
    print(llama_cpp_tree())
