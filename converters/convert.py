"""Hugging Face checkpoint of a supported family (``gguflite.models``) -> one gguflite file,
streaming and atomic.

    >>> plan = convert("path/to/SmolLM2-135M", "smol.gguf", type="q8_0")

Two phases. ``plan_conversion`` indexes the checkpoint (headers only), maps every tensor name
through the family's tensor table, checks every shape against config.json, picks each tensor's
type (``recipe.Recipe``) and gathers all metadata; any problem is a ``ConversionError`` before a
byte is written. Then ``convert`` hands the writer one zero-argument producer per tensor: each
reads its tensor from disk in row chunks of about ``CHUNK_BYTES`` of float32, permutes/encodes
them into the output buffer, and is dropped once written. Peak memory is one output tensor plus
one chunk (Q/K, which must be permuted, are read whole; they are never the largest tensor). The
writer writes to a temporary sibling and renames it into place, so a failure leaves no file
under the target name.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gguflite import quants
from gguflite.constants import GGML_QUANTIZATION_VERSION, GGMLType
from gguflite.constants import GGUFValueType as T
from gguflite.errors import ConversionError, QuantizationError, UnsupportedTypeError
from gguflite.models import Family, HParams, TensorSpec, family_for_hf
from gguflite.models.rope import llama3_factors, permute_rows
from gguflite.quants.base import registered
from gguflite.quants.ternary import is_ternary
from gguflite.split import SplitLimits, write_split

from .checkpoint import Checkpoint, open_checkpoint
from .recipe import Recipe, parse_tensor_type

log = logging.getLogger(__name__)

CHUNK_BYTES = 8 << 20  # float32 bytes of rows encoded at a time (bounds the temporaries)
F16_MAX = 65504.0
HUB_PATTERNS = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer.model",
                "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                "chat_template.jinja", "chat_template.json", "README.md", "*.safetensors",
                "model.safetensors.index.json"]
PICKLE_PATTERNS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class PlannedTensor:
    """One output tensor: where it comes from and how it is stored."""

    name: str  # llama.cpp name
    shape: tuple[int, ...]  # numpy row-major
    type: str  # codec name ("q8_0")
    reason: str  # why this type
    source: str | None  # checkpoint name; None for generated tensors
    src_dtype: str  # "BF16", ..., or "generated"
    bytes_in: int
    bytes_out: int
    perm_heads: int = 0  # > 0: permute Q/K rows with this many heads
    plus_one: bool = False  # store w + 1 (HF norms that compute x * (1 + w))
    data: np.ndarray | None = field(default=None, repr=False)  # generated tensors

    @property
    def ggml_type(self) -> GGMLType:
        gt = quants.get_codec(self.type).ggml_type
        assert gt is not None  # checked in plan_conversion
        return gt


@dataclass
class Plan:
    source: Path
    repo_id: str | None
    family: type[Family]
    hparams: HParams
    recipe: Recipe
    tensors: list[PlannedTensor]
    metadata: list[tuple[str, Any, T, T | None]]
    checkpoint: Checkpoint = field(repr=False)
    importance: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    notes: list[str] = field(default_factory=list)  # filled while writing, e.g. lossless ternary

    @property
    def bytes_in(self) -> int:
        return sum(t.bytes_in for t in self.tensors)

    @property
    def bytes_out(self) -> int:
        return sum(t.bytes_out for t in self.tensors)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``--dry-run --json``)."""
        return {
            "source": str(self.source),
            "repo_id": self.repo_id,
            "architecture": self.hparams.extra["hf_architecture"],
            "type": self.recipe.base,
            "file_type": int(self.recipe.file_type),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "n_metadata": len(self.metadata),
            "tensors": [
                {"name": t.name, "source": t.source, "shape": list(t.shape),
                 "src_dtype": t.src_dtype, "type": t.type, "reason": t.reason,
                 "bytes_in": t.bytes_in, "bytes_out": t.bytes_out,
                 "importance": t.name in self.importance}
                for t in self.tensors
            ],
        }

    def format_table(self) -> str:
        """Human-readable plan: tensor -> type, bytes in/out."""
        w = max(len(t.name) for t in self.tensors)
        lines = [f"{'tensor':<{w}}  {'shape':<14} {'from':<9} {'type':<6} {'bytes in':>12} "
                 f"{'bytes out':>12}  reason"]
        for t in self.tensors:
            shape = "x".join(str(d) for d in t.shape)
            lines.append(f"{t.name:<{w}}  {shape:<14} {t.src_dtype:<9} {t.type:<6} "
                         f"{t.bytes_in:>12,} {t.bytes_out:>12,}  {t.reason}")
        lines.append(f"{len(self.tensors)} tensors, {self.bytes_in:,} bytes in -> "
                     f"{self.bytes_out:,} bytes out (+ header); {len(self.metadata)} metadata "
                     "keys")
        return "\n".join(lines)


# -- source ------------------------------------------------------------------------------------
def resolve_source(src: str | Path, *, revision: str | None = None,
                   allow_pickle: bool = False) -> tuple[Path, str | None]:
    """A local directory as is, or a hub repo id fetched into the local cache.

    Hub downloads use ``huggingface_hub.snapshot_download`` with only the files a conversion
    needs; ``HF_HUB_OFFLINE=1`` and the usual cache variables (``HF_HOME``, ``HF_HUB_CACHE``)
    are honoured by huggingface_hub itself.
    """
    path = Path(src).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConversionError(f"{path}: expected a checkpoint directory, got a file")
        return path, None
    text = str(src)
    if not _REPO_ID_RE.match(text):
        raise ConversionError(f"{src}: no such directory (and not a hub repo id like "
                              "'HuggingFaceTB/SmolLM2-135M')")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ConversionError(f"{src}: not a local directory; fetching from the hub needs "
                              "huggingface_hub (pip install 'gguflite[convert]')") from None
    patterns = HUB_PATTERNS + (PICKLE_PATTERNS if allow_pickle else [])
    try:
        local = snapshot_download(text, revision=revision, allow_patterns=patterns)
    except Exception as exc:  # noqa: BLE001  huggingface_hub raises many unrelated types
        raise ConversionError(
            f"{src}: cannot fetch from the Hugging Face hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Offline (HF_HUB_OFFLINE=1) only "
            "snapshots already in the cache work; or pass a local directory") from None
    return Path(local), text


def _readme_license(directory: Path) -> str | None:
    """``license:`` from the model card's YAML front matter, if any."""
    readme = directory / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    front = text[3:].split("\n---", 1)[0]
    m = re.search(r"^license:\s*['\"]?([^'\"\n]+?)['\"]?\s*$", front, re.MULTILINE)
    return m.group(1) if m else None


# -- KM storage --------------------------------------------------------------------------------
def is_km(ttype: str) -> bool:
    """gguflite's k-means codebook types, stored as companion tensors (spec/extensions-km.md)."""
    return ttype in ("km2", "km3", "km4")


def stored_nbytes(ttype: str, shape: tuple[int, ...]) -> int:
    """Bytes a tensor of numpy ``shape`` takes when stored as ``ttype``."""
    if is_km(ttype):
        from gguflite.quants import km

        return math.prod(shape[:-1]) * km.row_bytes(shape[-1], int(ttype[2]))
    codec = quants.get_codec(ttype)
    return math.prod(shape) // codec.block_size * codec.type_size


def add_km_tensor(writer: Any, name: str, ttype: str, rows: int, cols: int,
                  read_rows: Callable[[int, int], np.ndarray],
                  importance: np.ndarray | None) -> None:
    """Declare KM tensor ``name`` as its companion tensor ``<name>.km`` (I8 rows) + keys.

    The producer quantizes the rows in chunks (KM rows are independent).
    """
    from gguflite.quants import km

    bits = int(ttype[2])
    nbytes = km.row_bytes(cols, bits)

    def rows_data() -> np.ndarray:
        out = np.empty((rows, nbytes), dtype=np.uint8)  # (rows, row_bytes)
        step = max(1, CHUNK_BYTES // (4 * max(cols, 1)))
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            try:
                out[r0:r1] = km.quantize(read_rows(r0, r1), bits, importance=importance,
                                         name=name).data
            except QuantizationError as exc:
                raise ConversionError(str(exc)) from None
        return out.view(np.int8)

    writer.add_tensor(name + km.COMPANION_SUFFIX, shape=(rows, nbytes), type=GGMLType.I8,
                      data=rows_data)
    writer.add(f"{km.KEY_PREFIX}{name}.bits", bits, T.UINT32)
    writer.add(f"{km.KEY_PREFIX}{name}.shape", [rows, cols], T.ARRAY, T.UINT64)


def size_label(n_params: int) -> str:
    """gguf-py's rounded parameter count: 134515008 -> "135M"."""
    scale, suffix = 1e-3, "K"
    for limit, sc, x in ((1e12, 1e-12, "T"), (1e9, 1e-9, "B"), (1e6, 1e-6, "M")):
        if n_params > limit:
            scale, suffix = sc, x
            break
    v = n_params * scale
    fix = max(2 - len(str(round(v)).lstrip("0")), 0)
    return f"{v:.{fix}f}{suffix}"


# -- planning ----------------------------------------------------------------------------------
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)  # a cache of RoPE frequencies, not a weight


def _map_checkpoint(ckpt: Checkpoint, fam: type[Family], hp: HParams
                    ) -> dict[str, tuple[str, TensorSpec]]:
    """GGUF name -> (checkpoint name, spec); every tensor mapped, none missing, shapes right."""
    specs = [t for t in fam.tensors(hp) if t.hf is not None]
    by_hf = {t.hf: t for t in specs}
    mapped: dict[str, tuple[str, TensorSpec]] = {}
    for hf_name, st in ckpt.tensors.items():
        if hf_name.endswith(IGNORED_SUFFIXES):
            continue
        spec = by_hf.get(hf_name)
        if spec is None:
            raise ConversionError(f"{ckpt.directory}: tensor {hf_name!r} has no mapping to the "
                                  f"{fam.arch} graph (unexpected for "
                                  f"{hp.extra['hf_architecture']} with {hp.n_layer} layers)")
        if spec.name == "output.weight" and hp.tied_embeddings:
            log.info("tie_word_embeddings: skipping %s (llama.cpp uses token_embd)", hf_name)
            continue
        if st.shape != spec.shape:
            raise ConversionError(f"{ckpt.directory}: tensor {hf_name!r} has shape "
                                  f"{list(st.shape)}; config.json implies "
                                  f"{list(spec.shape)} for {spec.name}")
        mapped[spec.name] = (hf_name, spec)
    required = [t.name for t in specs
                if not t.optional or (t.name == "output.weight" and not hp.tied_embeddings)]
    missing = [n for n in required if n not in mapped]
    if missing:
        hf = next(t.hf for t in specs if t.name == missing[0])
        raise ConversionError(f"{ckpt.directory}: {len(missing)} tensor(s) missing, first "
                              f"{missing[0]!r} ({hf}); the checkpoint is incomplete")
    return {t.name: mapped[t.name] for t in specs if t.name in mapped}  # llama.cpp's order


def _generated(fam: type[Family], hp: HParams) -> list[tuple[str, np.ndarray, str]]:
    """Tensors the converter computes from config.json: (name, data, reason)."""
    out = []
    if hp.extra.get("rope_type") == "llama3":
        out.append(("rope_freqs.weight", llama3_factors(hp), "llama3 rope scaling"))
    if hp.rope_scaling == "longrope":
        rope = hp.extra["rope"]
        for key, name in (("long_factor", "rope_factors_long.weight"),
                          ("short_factor", "rope_factors_short.weight")):
            out.append((name, np.asarray(rope[key], np.float32), "longrope factors"))
    return out


def _general_metadata(ckpt: Checkpoint, fam: type[Family], recipe: Recipe,
                      repo_id: str | None, name: str | None,
                      n_params: int) -> list[tuple[str, Any, T, T | None]]:
    model_name = name or repo_id or str(ckpt.config.get("_name_or_path") or "") or \
        ckpt.directory.name
    model_name = model_name.rstrip("/").split("/")[-1] or "model"
    items: list[tuple[str, Any, T, T | None]] = [
        ("general.architecture", fam.arch, T.STRING, None),
        ("general.type", "model", T.STRING, None),
        ("general.name", model_name, T.STRING, None),
        ("general.size_label", size_label(n_params), T.STRING, None),
    ]
    lic = _readme_license(ckpt.directory)
    if lic:
        items.append(("general.license", lic, T.STRING, None))
    if repo_id:
        url = f"https://huggingface.co/{repo_id}"
        items += [("general.source.url", url, T.STRING, None),
                  ("general.source.repo_url", url, T.STRING, None)]
    items += [("general.file_type", int(recipe.file_type), T.UINT32, None),
              ("general.quantization_version", GGML_QUANTIZATION_VERSION, T.UINT32, None)]
    return items


def make_recipe(type: str, *, tensor_types: Sequence[str] = (),  # noqa: A002
                output_type: str | None = None, embedding_type: str | None = None,
                fallback_type: str | None = None) -> Recipe:
    """Build and check a Recipe against the codecs that are registered."""
    codecs = registered()
    known = {n for n, c in codecs.items() if c.can_quantize}
    for opt, value in (("--output-type", output_type), ("--embedding-type", embedding_type),
                       ("--fallback-type", fallback_type)):
        if value is not None and value.lower() not in known:
            raise ConversionError(f"{opt} {value!r}: unknown type; known: "
                                  f"{', '.join(sorted(known))}")
    rules = tuple(parse_tensor_type(s, known) for s in tensor_types)
    return Recipe(type.lower(), rules, output_type and output_type.lower(),
                  embedding_type and embedding_type.lower(),
                  fallback_type and fallback_type.lower(),
                  {n: 1 if is_km(n) else c.block_size for n, c in codecs.items()})  # KM: any row


def plan_conversion(src: str | Path, *, type: str = "f16",  # noqa: A002
                    tensor_types: Sequence[str] = (), output_type: str | None = None,
                    embedding_type: str | None = None, fallback_type: str | None = None,
                    imatrix: str | Path | None = None, allow_pickle: bool = False,
                    revision: str | None = None, name: str | None = None) -> Plan:
    """Everything ``convert`` will do, checked; reads headers only."""
    recipe = make_recipe(type, tensor_types=tensor_types, output_type=output_type,
                         embedding_type=embedding_type, fallback_type=fallback_type)
    directory, repo_id = resolve_source(src, revision=revision, allow_pickle=allow_pickle)
    ckpt = open_checkpoint(directory, allow_pickle=allow_pickle)
    fam = family_for_hf(ckpt.config)
    hp = fam.from_config(ckpt.config)
    mapping = _map_checkpoint(ckpt, fam, hp)
    importance: dict[str, np.ndarray] = {}
    if imatrix is not None:
        from .imatrix import load_imatrix

        importance = load_imatrix(imatrix)

    planned: list[PlannedTensor] = []
    for gname, data, why in _generated(fam, hp):
        planned.append(PlannedTensor(gname, data.shape, "f32", f"{why} (generated)", None,
                                     "generated", 0, data.nbytes, data=data))
    for gname, (hf_name, spec) in mapping.items():
        st = ckpt.tensors[hf_name]
        ttype, why = recipe.choose(gname, st.shape, n_layers=hp.n_layer,
                                   tied=hp.tied_embeddings,
                                   n_gqa=hp.n_head // max(1, hp.n_kv_head),
                                   has_imatrix=bool(importance))
        codec = quants.get_codec(ttype)
        if codec.ggml_type is None and not is_km(ttype):
            raise ConversionError(f"{gname}: type {ttype} has no ggml tensor type; the "
                                  "converter cannot store it")
        perm = {"permute_q": hp.n_head, "permute_k": hp.n_kv_head}.get(spec.transform or "", 0)
        planned.append(PlannedTensor(gname, st.shape, ttype, why, hf_name, st.dtype, st.nbytes,
                                     stored_nbytes(ttype, st.shape), perm,
                                     plus_one=spec.transform == "plus_one"))
    mapping = {g: hf for g, (hf, _) in mapping.items()}
    for gname, imp in importance.items():
        if gname in mapping and imp.shape != (ckpt.tensors[mapping[gname]].shape[-1],):
            raise ConversionError(f"--imatrix: importance of {gname!r} has {imp.shape[0]} "
                                  f"values; the tensor has {ckpt.tensors[mapping[gname]].shape[-1]}"
                                  " columns")
    n_params = sum(math.prod(t.shape) for t in planned if t.source is not None)
    metadata = _general_metadata(ckpt, fam, recipe, repo_id, name, n_params)
    metadata += fam.metadata(hp)
    from .tokenizer_export import export_tokenizer

    metadata += export_tokenizer(directory, ckpt.config)
    return Plan(directory, repo_id, fam, hp, recipe, planned, metadata, ckpt, importance)


# -- writing -----------------------------------------------------------------------------------
def _encode_rows(x: np.ndarray, t: PlannedTensor, importance: np.ndarray | None) -> np.ndarray:
    """(rows, cols) float32 -> (rows, row bytes) uint8 of type ``t.type``; errors name t."""
    if t.type == "f16" and x.size and max(float(x.max()), -float(x.min())) > F16_MAX:
        big = np.abs(x) > F16_MAX
        if big.any():  # False only for NaN, which the codec reports
            r, c = np.argwhere(big)[0]
            raise ConversionError(f"{t.source}: value {x[r, c]!r} at row {r}, column {c} "
                                  "overflows f16; convert with --type bf16 or f32")
    try:
        return quants.quantize(x, t.type, importance=importance, name=t.source or t.name)
    except (QuantizationError, UnsupportedTypeError) as exc:
        raise ConversionError(f"{t.name} (from {t.source}): {exc}") from None


def _row_reader(plan: Plan, t: PlannedTensor) -> Callable[[int, int], np.ndarray]:
    """read(r0, r1) -> (r1 - r0, cols) float32 rows of ``t`` as llama.cpp lays them out."""
    st = plan.checkpoint.tensors[t.source]  # type: ignore[index]
    rows, cols = t.shape[0], math.prod(t.shape[1:])
    if not t.perm_heads:
        return lambda r0, r1: st.read(r0, r1).reshape(r1 - r0, cols)
    cache: list[np.ndarray] = []

    def read_permuted(r0: int, r1: int) -> np.ndarray:
        # Q/K: rows are reordered head by head, so read the whole (small) matrix once
        if not cache:
            cache.append(st.read().reshape(rows, cols)[permute_rows(rows, t.perm_heads)])
        part = cache[0][r0:r1]
        if r1 >= rows:
            cache.clear()
        return part

    return read_permuted


TERNARY_TYPES = ("tq1_0", "tq2_0")


def _note_ternary(plan: Plan, t: PlannedTensor, scales: set[float | None]) -> None:
    """Tell whether ternary tensor ``t`` was re-encoded losslessly (its weights were already
    trits times one fp16 scale, as BitNet-style checkpoints store them) or ternarized."""
    nonzero = scales - {0.0}
    if None not in scales and len(nonzero) <= 1:
        scale = next(iter(nonzero), 0.0)
        msg = (f"{t.name}: weights are already ternary x {scale:g}; re-encoded losslessly as "
               f"{t.type.upper()}")
    else:
        msg = (f"{t.name}: weights are not ternary x one scale; ternarized to {t.type.upper()} "
               "(lossy)")
    log.info(msg)
    plan.notes.append(msg)


def make_producer(plan: Plan, t: PlannedTensor,
                  on_start: Callable[[str], None] | None = None) -> Callable[[], np.ndarray]:
    """A zero-argument function returning the encoded bytes of ``t`` (called by the writer)."""

    def produce() -> np.ndarray:
        if on_start is not None:
            on_start(t.name)
        if t.data is not None:  # generated
            return _encode_rows(t.data.reshape(1, -1), t, None).reshape(-1)
        st = plan.checkpoint.tensors[t.source]  # type: ignore[index]
        codec = quants.get_codec(t.type)
        imp = plan.importance.get(t.name) if codec.uses_importance else None
        if len(t.shape) == 1:
            x = st.read().reshape(1, -1)  # (1, n) float32
            return _encode_rows(x + np.float32(1.0) if t.plus_one else x, t, None).reshape(-1)
        rows, cols = t.shape[0], math.prod(t.shape[1:])
        read = _row_reader(plan, t)
        out = np.empty((rows, codec.row_nbytes(cols)), dtype=np.uint8)  # (rows, row bytes)
        step = max(1, CHUNK_BYTES // (4 * cols))
        scales: set[float | None] = set()  # ternary targets: is each chunk trits * one scale?
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            x = read(r0, r1)  # (r1 - r0, cols) float32
            if t.type in TERNARY_TYPES:
                scales.add(is_ternary(x))
            out[r0:r1] = _encode_rows(x, t, imp)  # (r1 - r0, row bytes)
        if t.type in TERNARY_TYPES:
            _note_ternary(plan, t, scales)
        return out

    return produce


def convert(src: str | Path, out: str | Path, *, progress: bool = False,
            split: SplitLimits | None = None, outputs: list[Path] | None = None,
            **options: Any) -> Plan:
    """Convert ``src`` (directory or hub repo id) to the file ``out``; returns the plan.

    ``options`` are those of ``plan_conversion``. The file appears only when complete.
    ``split``: write shards ``out-00001-of-0000N.gguf`` instead (gguflite.split), all or
    nothing. ``outputs``, if given, receives the paths written.
    """
    from gguflite import GGUFWriter

    plan = plan_conversion(src, **options)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=plan.bytes_out, unit="B", unit_scale=True, desc="convert",
                   dynamic_ncols=True)

    def started(name: str) -> None:
        if bar is not None:
            bar.set_postfix_str(name, refresh=True)

    def written(name: str, nbytes: int) -> None:
        if bar is not None:
            bar.update(nbytes)

    try:
        writer = GGUFWriter(out, on_tensor=written)
        writer.add_items(plan.metadata)
        for t in plan.tensors:
            if is_km(t.type):
                read = _row_reader(plan, t)

                def read_rows(r0: int, r1: int, read=read, name=t.name) -> np.ndarray:
                    if r0 == 0:
                        started(name)
                    return read(r0, r1)

                add_km_tensor(writer, t.name, t.type, t.shape[0], math.prod(t.shape[1:]),
                              read_rows, plan.importance.get(t.name))
            else:
                writer.add_tensor(t.name, shape=t.shape, type=t.ggml_type,
                                  data=make_producer(plan, t, started))
        written = write_split(writer, split)
        if outputs is not None:
            outputs.extend(written)
    finally:
        if bar is not None:
            bar.close()
    return plan
