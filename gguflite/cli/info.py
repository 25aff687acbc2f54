"""``gguflite info FILE``: what a model file is, in a dozen lines (no torch import)."""

from __future__ import annotations

import importlib
from collections import Counter
from typing import Any

import click

from .. import reader
from ..constants import GGMLType, GGUFValueType
from ..keys import KM_PREFIX
from ..reader import GGUFFile
from ..models import FAMILIES, SUPPORTED_ARCHS
from ._common import default_option, echo_json, human_bytes, human_count, resolve_paths


def _runtime_native_types() -> list[str] | None:
    """Tensor types the Numba runtime runs natively, if the runtime is importable."""
    try:
        kernels = importlib.import_module("gguflite.runtime.kernels")
    except ImportError:
        return None
    native = getattr(kernels, "NATIVE_TYPES", None)
    if native is None:
        return None
    return sorted(GGMLType(t).name for t in native) + list(getattr(kernels, "KM_TYPE_NAMES", ()))


def _km_types(f: GGUFFile) -> dict[str, tuple[str, int]]:
    """KM companion tensors (``<name>.km`` with a ``gguflite.km.<name>.bits`` key, as
    gguflite.quants.km.km_tensor_names finds them; not imported here: it loads Numba):
    companion name -> (type name "KM<bits>", number of weights rows * cols)."""
    out = {}
    for t in f.tensors:
        name = t[:-3]
        bits_key, shape_key = f"{KM_PREFIX}{name}.bits", f"{KM_PREFIX}{name}.shape"
        if t.endswith(".km") and bits_key in f.metadata and shape_key in f.metadata:
            rows, cols = (int(v) for v in f.metadata[shape_key])
            out[t] = (f"KM{int(f.metadata[bits_key])}", rows * cols)
    return out


def _scalar(md: Any, key: str) -> Any:
    if key in md and md.value_type(key) != GGUFValueType.ARRAY:
        return md[key]
    return None


def summarize(f: GGUFFile) -> dict[str, Any]:
    """The facts ``info`` prints, as a JSON-able dict."""
    md = f.metadata
    arch = _scalar(md, "general.architecture")
    kms = _km_types(f)  # a KM tensor counts as its type KM<bits> and its rows * cols weights
    type_of = {n: kms[n][0] if n in kms else ti.type.name for n, ti in f.tensors.items()}
    size_of = {n: kms[n][1] if n in kms else ti.n_elements for n, ti in f.tensors.items()}
    n_params = sum(size_of.values())
    n_bytes = sum(ti.nbytes for ti in f.tensors.values())
    per_type: dict[str, dict[str, Any]] = {}
    counts = Counter(type_of.values())
    for ttype, count in counts.most_common():
        elements = sum(size_of[n] for n in f.tensors if type_of[n] == ttype)
        nbytes = sum(ti.nbytes for n, ti in f.tensors.items() if type_of[n] == ttype)
        per_type[ttype] = {
            "tensors": count, "parameters": elements, "bytes": nbytes,
            "bits_per_weight": 8.0 * nbytes / elements if elements else None,
        }
    tokens = md.get("tokenizer.ggml.tokens")
    vocab = len(tokens) if tokens is not None and not isinstance(tokens, str | int) else None
    return {
        "path": str(f.path),
        "file_size": f.file_size,  # all shards of a split set
        "shards": len(f.shards),
        "version": f.version,
        "alignment": f.alignment,
        "architecture": arch,
        "name": _scalar(md, "general.name"),
        "file_type": _scalar(md, "general.file_type"),
        "parameters": n_params,
        "tensor_bytes": n_bytes,
        "bits_per_weight": 8.0 * n_bytes / n_params if n_params else None,
        "context_length": _scalar(md, f"{arch}.context_length") if arch else None,
        "block_count": _scalar(md, f"{arch}.block_count") if arch else None,
        "embedding_length": _scalar(md, f"{arch}.embedding_length") if arch else None,
        "vocab_size": vocab,
        "tokenizer_model": _scalar(md, "tokenizer.ggml.model"),
        "tokenizer_pre": _scalar(md, "tokenizer.ggml.pre"),
        "chat_template": "tokenizer.chat_template" in md,
        "n_tensors": len(f.tensors),
        "n_metadata": len(md),
        "tensor_types": per_type,
        "runtime_native_types": _runtime_native_types(),
        "runs": arch in FAMILIES,
    }


def _print(s: dict[str, Any]) -> None:
    def line(label: str, value: Any) -> None:
        if value is not None:
            click.echo(f"{label:<14}{value}")

    line("file", f"{s['path']}")
    line("size", f"{human_bytes(s['file_size'])} ({s['file_size']} bytes), GGUF v{s['version']}, "
         f"alignment {s['alignment']}, {s['n_metadata']} keys, {s['n_tensors']} tensors"
         + (f", {s['shards']} shards" if s["shards"] > 1 else ""))
    runs = "runs in gguflite" if s["runs"] else \
        f"not run by gguflite (it runs {', '.join(SUPPORTED_ARCHS)})"
    line("architecture", f"{s['architecture']} ({runs})" if s["architecture"] else None)
    line("name", s["name"])
    line("parameters", f"{human_count(s['parameters'])} ({s['parameters']})")
    if s["bits_per_weight"] is not None:
        line("bits/weight", f"{s['bits_per_weight']:.2f} overall")
    line("layers", s["block_count"])
    line("embedding", s["embedding_length"])
    line("context", s["context_length"])
    if s["vocab_size"] is not None:
        tok = ", ".join(x for x in (s["tokenizer_model"], s["tokenizer_pre"] and
                                    f"pre {s['tokenizer_pre']}") if x)
        line("vocabulary", f"{s['vocab_size']} tokens" + (f" ({tok})" if tok else ""))
    line("chat template", "yes" if s["chat_template"] else "no")
    if s["tensor_types"]:
        click.echo("tensor types")
        for name, t in s["tensor_types"].items():
            bpw = f"{t['bits_per_weight']:6.2f} bpw" if t["bits_per_weight"] is not None else ""
            click.echo(f"  {name:<8}{t['tensors']:>5} tensors {human_count(t['parameters']):>8} "
                       f"params {human_bytes(t['bytes']):>10}  {bpw}")
    native = s["runtime_native_types"]
    if native is not None:
        used = list(s["tensor_types"])
        conv = [t for t in used if t not in native]
        click.echo(f"runtime       native: {', '.join(t for t in used if t in native) or '-'}; "
                   f"converted at load: {', '.join(conv) or '-'}")


@click.command("info")
@click.argument("file", required=False, type=click.Path(dir_okay=True))
@default_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(file: str | None, use_default: bool, as_json: bool) -> None:
    """Summarize a GGUF model file: architecture, size, parameters, bits per weight, types."""
    (path,) = resolve_paths((file,) if file else (), use_default, many=False)
    with reader.open(path) as f:
        s = summarize(f)
    if as_json:
        echo_json(s)
    else:
        _print(s)
