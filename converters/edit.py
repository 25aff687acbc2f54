"""Typed, validated metadata edits, written atomically (``gguflite set-metadata``).

    >>> set_metadata("m.gguf", {"tokenizer.chat_template": template})          # in place
    >>> set_metadata("m.gguf", {"general.name": "x"}, out="m2.gguf")

A value given as text is parsed as the key's type, taken from (first that exists):

1. an explicit type (``--type KEY=TYPE``; TYPE is u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool
   str, or ``[T]`` for an array of T given as a JSON list),
2. the type the key already has in the file,
3. the first type the key registry (``gguflite.keys``) lists for it.

Otherwise the edit is refused: we never guess a type from how the text looks. Values are
range-checked by the writer; a chat template must parse as Jinja; a special-token id must be a
token of the vocabulary. The file is rewritten through the writer (temporary sibling, fsync,
rename); tensor bytes are copied from the memory map, never decoded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gguflite
from gguflite import keys
from gguflite.constants import KEY_ALIGNMENT
from gguflite.constants import GGUFValueType as T
from gguflite.errors import GGUFLiteError, MetadataError, WriterError

_BY_SHORT = {v: k for k, v in keys.SHORT_NAMES.items() if k != T.ARRAY}


class EditError(GGUFLiteError, ValueError):
    """An edit that cannot be applied; nothing is written."""


def parse_type(text: str, key: str) -> tuple[T, T | None]:
    """``"u32"`` -> (UINT32, None); ``"[str]"`` -> (ARRAY, STRING)."""
    t = text.strip().lower()
    if t.startswith("[") and t.endswith("]"):
        inner = _BY_SHORT.get(t[1:-1])
        if inner is None:
            raise EditError(f"{key}: unknown array element type {t!r}")
        return T.ARRAY, inner
    vt = _BY_SHORT.get(t)
    if vt is None:
        raise EditError(f"{key}: unknown type {text!r}; use one of "
                        f"{', '.join(sorted(_BY_SHORT))} or [T]")
    return vt, None


def _scalar(text: Any, vtype: T, key: str) -> Any:
    if not isinstance(text, str):  # from a JSON array
        if vtype == T.STRING and not isinstance(text, str):
            raise EditError(f"{key}: expected a string, got {text!r}")
        return text
    if vtype == T.STRING:
        return text
    if vtype == T.BOOL:
        low = text.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise EditError(f"{key}: {text!r} is not a bool (true/false)")
    try:
        if vtype in (T.FLOAT32, T.FLOAT64):
            return float(text)
        return int(text, 0)
    except ValueError:
        raise EditError(f"{key}: {text!r} is not a valid {keys.SHORT_NAMES[vtype]}") from None


def parse_value(text: Any, vtype: T, etype: T | None, key: str) -> Any:
    """Text (or an already-typed Python value) -> the value to write as ``vtype``."""
    if vtype != T.ARRAY:
        return _scalar(text, vtype, key)
    if isinstance(text, str):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EditError(f"{key}: an array value must be a JSON list ({exc})") from None
    else:
        items = text
    if not isinstance(items, list):
        raise EditError(f"{key}: an array value must be a JSON list, got {type(items).__name__}")
    assert etype is not None
    return [_scalar(v, etype, f"{key}[{i}]") for i, v in enumerate(items)]


def resolve_type(f: gguflite.GGUFFile, key: str,
                 explicit: str | None) -> tuple[T, T | None, str]:
    """(value type, element type, where the type came from)."""
    if explicit is not None:
        vt, et = parse_type(explicit, key)
        return vt, et, "--type"
    if key in f.metadata:
        return f.metadata.value_type(key), f.metadata.element_type(key), "existing key"
    spec = keys.lookup(key, f.metadata.get("general.architecture"))
    if spec is not None:
        vt, et = parse_type(spec.types[0], key)
        return vt, et, "key registry"
    raise EditError(f"{key}: a new key of unknown type; give it with --type {key}=TYPE "
                    "(u32, f32, str, bool, [str] ...)")


def _validate(f: gguflite.GGUFFile, key: str, value: Any) -> None:
    if not keys.KEY_SYNTAX.fullmatch(key):
        raise EditError(f"{key!r}: keys are lower-case dot-separated words "
                        "([a-z0-9_]+(.[a-z0-9_]+)*)")
    if key == KEY_ALIGNMENT:
        raise EditError(f"{key}: set by the writer from the data layout; not editable")
    if key.startswith("tokenizer.chat_template") and isinstance(value, str):
        try:
            import jinja2
        except ImportError:
            raise EditError(f"{key}: validating a chat template needs jinja2 (pip install "
                            "jinja2)") from None
        try:
            jinja2.Environment().parse(value)
        except jinja2.TemplateSyntaxError as exc:
            raise EditError(f"{key}: not a valid Jinja template: {exc.message} (line "
                            f"{exc.lineno})") from None
    if key.startswith("tokenizer.ggml.") and key.endswith("_token_id"):
        tokens = f.metadata.get("tokenizer.ggml.tokens")
        if tokens is not None and not 0 <= value < len(tokens):
            raise EditError(f"{key}: token id {value} is outside the vocabulary "
                            f"(0..{len(tokens) - 1})")


def set_metadata(path: str | os.PathLike[str], values: Mapping[str, Any], *,
                 types: Mapping[str, str] | None = None, remove: Sequence[str] = (),
                 out: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Set ``values`` (text or typed values) and drop ``remove``; write to ``out`` or in place.

    Returns key -> a description of what was set (type and its origin).
    """
    types = dict(types or {})
    unused = set(types) - set(values)
    if unused:
        raise EditError(f"--type for {sorted(unused)[0]!r}, which is not being set")
    path = Path(path)
    target = Path(out) if out is not None else path
    done: dict[str, str] = {}
    with gguflite.open(path) as f:
        # A split set's metadata lives in its first shard: that file alone is rewritten, in
        # place, with its own tensors; the split keys describe the set and stay as they are.
        first = f.shards[0]
        if len(f.shards) > 1 and target.resolve() != path.resolve():
            raise EditError(f"{path} is the first of {len(f.shards)} shards: a split set's "
                            "metadata is edited in place (copy the whole set first)")
        for key in (*values, *remove):
            if len(f.shards) > 1 and key.startswith(keys.SPLIT_PREFIX):
                raise EditError(f"{key}: describes the split set, cannot be changed")
        for key in remove:
            if key not in f.metadata:
                raise EditError(f"{key}: cannot remove, no such key in {path}")
            if key == KEY_ALIGNMENT or key == "general.architecture":
                raise EditError(f"{key}: required, cannot be removed")
        staged: dict[str, tuple[Any, T, T | None]] = {}
        for key, text in values.items():
            vt, et, origin = resolve_type(f, key, types.get(key))
            value = parse_value(text, vt, et, key)
            _validate(f, key, value)
            staged[key] = (value, vt, et)
            done[key] = (f"{keys.signature(vt, et)} ({origin})")
        w = gguflite.GGUFWriter(target, alignment=f.alignment)
        try:
            for key in f.metadata:
                if key == KEY_ALIGNMENT or key in remove:
                    continue
                if key in staged:
                    w.add(key, *staged.pop(key))
                else:
                    w.add_from(f, key)
            for key, (value, vt, et) in staged.items():  # new keys go last
                w.add(key, value, vt, et)
        except (WriterError, MetadataError) as exc:
            raise EditError(str(exc)) from None
        for name, ti in first.tensors.items():
            w.add_tensor(name, shape=ti.shape or (1,), type=ti.type,
                         data=lambda name=name: first.raw(name))
        w.write()
    return done
