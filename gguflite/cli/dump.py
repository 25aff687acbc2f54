"""``gguflite dump FILE``: every header field, metadata key and tensor info, as text or JSON.

The JSON form (``dump_dict``) is also the expected output stored beside each test vector in
spec/vectors/.
"""

from __future__ import annotations

import hashlib
from typing import Any

import click

from .. import reader
from ..constants import GGUFValueType
from ..errors import SplitError
from ..metadata import StringArray
from ..reader import GGUFFile
from ._common import default_option, echo_json, jsonable, resolve_paths

ABBREVIATE_ARRAYS = 8  # elements shown of a long array without --full
ABBREVIATE_TEXT = 120  # characters shown of a long string in text output without --full


def metadata_dict(f: GGUFFile, *, full: bool) -> dict[str, Any]:
    """key -> {type, [element_type, length], value}; arrays cut to a few elements unless full."""
    out: dict[str, Any] = {}
    md = f.metadata
    for key in md:
        vtype = md.value_type(key)
        value = md[key]
        item: dict[str, Any] = {"type": vtype.name}
        if vtype == GGUFValueType.ARRAY:
            etype = md.element_type(key)
            item["element_type"] = etype.name if etype is not None else None
            item["length"] = len(value)
            shown = len(value) if full else min(len(value), ABBREVIATE_ARRAYS)
            head = value[:shown]
            item["value"] = jsonable(list(head) if isinstance(value, StringArray) else head)
            if shown < len(value):
                item["truncated"] = True
        else:
            item["value"] = jsonable(value)
        out[key] = item
    return out


def tensors_list(f: GGUFFile, *, hashes: bool) -> list[dict[str, Any]]:
    out = []
    for ti in f.tensors.values():
        item: dict[str, Any] = {
            "name": ti.name, "type": ti.type.name, "dims": list(ti.dims),
            "shape": list(ti.shape), "offset": ti.offset, "nbytes": ti.nbytes,
        }
        if len(f.shards) > 1:
            item["shard"] = f.shard_of(ti.name)  # offset is within that shard's data section
        if hashes:
            item["sha256"] = hashlib.sha256(f.raw(ti.name)).hexdigest()
        out.append(item)
    return out


def dump_dict(f: GGUFFile, *, full: bool = False, metadata: bool = True, tensors: bool = True,
              hashes: bool = False) -> dict[str, Any]:
    """The whole header as a JSON-able dict."""
    out: dict[str, Any] = {
        "version": f.version, "alignment": f.alignment, "file_size": f.file_size,
        "data_offset": f.data_offset, "n_metadata": len(f.metadata),
        "n_tensors": len(f.tensors),
    }
    if len(f.shards) > 1:  # a split set: file_size is the total, the rest the first shard's
        out["shards"] = [{"file": p.path.name, "file_size": p.file_size,
                          "data_offset": p.data_offset, "n_tensors": len(p.tensors)}
                         for p in f.shards]
    if metadata:
        out["metadata"] = metadata_dict(f, full=full)
    if tensors:
        out["tensors"] = tensors_list(f, hashes=hashes)
    return out


def _text_value(item: dict[str, Any], full: bool) -> str:
    value = item["value"]
    if item["type"] == "ARRAY":
        inner = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in value)
        more = f", ... ({item['length'] - len(value)} more)" if item.get("truncated") else ""
        return f"[{item['element_type']} x {item['length']}] [{inner}{more}]"
    text = repr(value) if isinstance(value, str) else str(value)
    if not full and len(text) > ABBREVIATE_TEXT:
        text = text[:ABBREVIATE_TEXT] + f"... ({len(text)} chars)"
    return text


def _print(d: dict[str, Any], full: bool) -> None:
    click.echo(f"GGUF v{d['version']}, alignment {d['alignment']}, {d['file_size']} bytes, "
               f"data at {d['data_offset']}, {d['n_metadata']} keys, {d['n_tensors']} tensors")
    for i, p in enumerate(d.get("shards", ())):
        click.echo(f"  shard {i}: {p['file']}, {p['file_size']} bytes, data at "
                   f"{p['data_offset']}, {p['n_tensors']} tensors")
    if "metadata" in d:
        click.echo("metadata")
        width = max((len(k) for k in d["metadata"]), default=0)
        for key, item in d["metadata"].items():
            click.echo(f"  {key:<{width}}  {item['type']:<7}  {_text_value(item, full)}")
    if "tensors" in d:
        click.echo("tensors")
        width = max((len(t["name"]) for t in d["tensors"]), default=0)
        for t in d["tensors"]:
            digest = f"  {t['sha256'][:16]}" if "sha256" in t else ""
            shard = f"  shard {t['shard']}" if "shard" in t else ""
            click.echo(f"  {t['name']:<{width}}  {t['type']:<7}  {str(t['dims']):<20} "
                       f"offset {t['offset']:>12}  {t['nbytes']:>12} bytes{shard}{digest}")


@click.command("dump")
@click.argument("file", required=False, type=click.Path(dir_okay=True))
@default_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--metadata", "only_metadata", is_flag=True, help="Only the metadata.")
@click.option("--tensors", "only_tensors", is_flag=True, help="Only the tensor infos.")
@click.option("--full", is_flag=True, help="Do not abbreviate long arrays and strings.")
@click.option("--hash", "hashes", is_flag=True,
              help="Add the SHA-256 of every tensor's bytes (reads all tensor data).")
def dump(file: str | None, use_default: bool, as_json: bool, only_metadata: bool,
         only_tensors: bool, full: bool, hashes: bool) -> None:
    """Print every header field, metadata key (with its type) and tensor info of FILE."""
    if only_metadata and only_tensors:
        raise click.UsageError("--metadata and --tensors exclude each other")
    (path,) = resolve_paths((file,) if file else (), use_default, many=False)
    try:
        f = reader.open(path)
    except SplitError as exc:
        if exc.rule != "S2":
            raise
        # a later shard of a split set: dump it as the file it is
        click.echo(f"note: {exc.detail}; dumping this shard alone", err=True)
        f = GGUFFile(path)
    with f:
        d = dump_dict(f, full=full, metadata=not only_tensors, tensors=not only_metadata,
                      hashes=hashes)
    if as_json:
        echo_json(d)
    else:
        _print(d, full)
