"""One tiny-model helper for every architecture test: a small random Llama, as GGUF and as HF.

``make_tiny_llama`` draws random weights (in Hugging Face layout), writes them as a llama-arch
GGUF with ``GGUFWriter`` (Q/K rows permuted exactly as llama.cpp's converter does, any tensor
type), and returns the weights and config so ``hf_model`` can build the same model as a
``transformers.LlamaForCausalLM``. It does not use gguflite's converter on purpose: the runtime
tests must not depend on it.

The vocabulary is a SentencePiece-style one (``tokenizer.ggml.model = "llama"``): ``<unk>``,
``<s>``, ``</s>``, the 256 byte tokens ``<0x00>`` .. ``<0xFF>``, then a few words, so any text
tokenizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gguflite import GGUFWriter, quants
from gguflite.constants import GGMLType
from gguflite.constants import GGUFValueType as T

WORDS = ["▁the", "▁sea", "▁a", "▁is", "▁and", "▁of", "▁blue", "▁wave", "e", "s", "▁to",
         "▁in", "▁it", "▁on", "▁sky", "▁light", "▁night", "▁day", "▁wind", "▁sun", "▁moon",
         "▁star", "▁rain", "▁tree", "▁leaf", "▁stone", "▁fire", "▁gold", "▁red", "▁green",
         "▁cold", "▁warm", "▁deep", "▁far", "▁near", "▁old", "▁new", "▁long", "▁short",
         "▁high", "▁low", "▁soft"]  # 3 + 256 + 42 = 301 tokens; padded below
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>"
                 "{% endfor %}{% if add_generation_prompt %}<s>assistant:{% endif %}")


@dataclass
class TinyConfig:
    """Shapes of a tiny Llama (HF names in comments)."""

    dim: int = 64  # hidden_size
    hidden_dim: int = 128  # intermediate_size
    n_layer: int = 2  # num_hidden_layers
    n_head: int = 4  # num_attention_heads
    n_kv_head: int = 2  # num_key_value_heads
    vocab_size: int = 320
    context_length: int = 256  # max_position_embeddings
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tied: bool = False  # tie_word_embeddings
    rope_freq_factors: list[float] | None = field(default=None)  # llama3-style, head_dim/2
    rope_linear_factor: float | None = None  # rope.scaling.type "linear": positions / factor

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head


def vocab(cfg: TinyConfig) -> tuple[list[str], list[float], list[int]]:
    """Tokens, SPM scores and token types (1 normal, 2 unknown, 3 control, 6 byte)."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + WORDS
    tokens += [f"▁w{i}" for i in range(cfg.vocab_size - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (len(tokens) - 259)
    scores = [0.0] * 259 + [-float(i) for i in range(len(tokens) - 259)]
    return tokens[: cfg.vocab_size], scores[: cfg.vocab_size], types[: cfg.vocab_size]


def random_weights(cfg: TinyConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """HF-named float32 weights (``model.layers.0.self_attn.q_proj.weight`` ...)."""
    rng = np.random.default_rng(seed)

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def norm(n: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    hd = cfg.head_dim
    sd = {"model.embed_tokens.weight": rng.standard_normal((cfg.vocab_size, cfg.dim))
          .astype(np.float32),
          "model.norm.weight": norm(cfg.dim)}
    if not cfg.tied:
        sd["lm_head.weight"] = mat(cfg.vocab_size, cfg.dim)
    for i in range(cfg.n_layer):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = norm(cfg.dim)
        sd[p + "self_attn.q_proj.weight"] = mat(cfg.n_head * hd, cfg.dim)
        sd[p + "self_attn.k_proj.weight"] = mat(cfg.n_kv_head * hd, cfg.dim)
        sd[p + "self_attn.v_proj.weight"] = mat(cfg.n_kv_head * hd, cfg.dim)
        sd[p + "self_attn.o_proj.weight"] = mat(cfg.dim, cfg.n_head * hd)
        sd[p + "post_attention_layernorm.weight"] = norm(cfg.dim)
        sd[p + "mlp.gate_proj.weight"] = mat(cfg.hidden_dim, cfg.dim)
        sd[p + "mlp.up_proj.weight"] = mat(cfg.hidden_dim, cfg.dim)
        sd[p + "mlp.down_proj.weight"] = mat(cfg.dim, cfg.hidden_dim)
    return sd


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate_half row order -> llama.cpp adjacent-pair order (convert_hf_to_gguf's permute).

    Within each head, rows [0 .. d/2) and [d/2 .. d) (the two halves rotate_half pairs) are
    interleaved, so that HF's pair (i, i + d/2) lands on rows (2i, 2i + 1).
    """
    rows = w.shape[0]
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of :func:`permute_qk`: llama.cpp adjacent-pair order -> HF rotate_half order.

    Rows (2i, 2i + 1) of each head go back to (i, i + d/2). Written here, apart from the
    converter, so a test that rebuilds a checkpoint from a GGUF does not borrow the permutation
    it checks.
    """
    rows = w.shape[0]
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


# HF name -> GGUF name, per block and global.
_BLOCK_MAP = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_tensors(cfg: TinyConfig, sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GGUF-named float32 tensors in file order, with Q/K permuted."""
    out = {"token_embd.weight": sd["model.embed_tokens.weight"]}
    for i in range(cfg.n_layer):
        for hf, gg in _BLOCK_MAP.items():
            w = sd[f"model.layers.{i}.{hf}"]
            if gg == "attn_q.weight":
                w = permute_qk(w, cfg.n_head)
            elif gg == "attn_k.weight":
                w = permute_qk(w, cfg.n_kv_head)
            out[f"blk.{i}.{gg}"] = w
    out["output_norm.weight"] = sd["model.norm.weight"]
    if not cfg.tied:
        out["output.weight"] = sd["lm_head.weight"]
    if cfg.rope_freq_factors is not None:
        out["rope_freqs.weight"] = np.asarray(cfg.rope_freq_factors, dtype=np.float32)
    return out


def write_gguf(path: str | Path, cfg: TinyConfig, sd: dict[str, np.ndarray], *,
               wtype: GGMLType = GGMLType.F32, embd_type: GGMLType | None = None,
               omit: tuple[str, ...] = (), arch: str = "llama",
               type_overrides: dict[str, GGMLType] | None = None) -> Path:
    """Write the model; matrices as ``wtype`` (``embd_type`` for token_embd), vectors as F32.

    ``type_overrides`` maps a name suffix (``"attn_v.weight"``) to another type, for mixes like
    llama.cpp's Q4_K_M; ``omit`` drops tensors (for malformed-file tests).
    """
    path = Path(path)
    tokens, scores, types = vocab(cfg)
    with GGUFWriter(path) as w:
        w.add("general.architecture", arch, T.STRING)
        w.add("general.name", "tiny-llama", T.STRING)
        a = arch + "."
        w.add(a + "block_count", cfg.n_layer, T.UINT32)
        w.add(a + "context_length", cfg.context_length, T.UINT32)
        w.add(a + "embedding_length", cfg.dim, T.UINT32)
        w.add(a + "feed_forward_length", cfg.hidden_dim, T.UINT32)
        w.add(a + "attention.head_count", cfg.n_head, T.UINT32)
        w.add(a + "attention.head_count_kv", cfg.n_kv_head, T.UINT32)
        w.add(a + "rope.freq_base", cfg.rope_theta, T.FLOAT32)
        w.add(a + "attention.layer_norm_rms_epsilon", cfg.norm_eps, T.FLOAT32)
        w.add(a + "rope.dimension_count", cfg.head_dim, T.UINT32)
        if cfg.rope_linear_factor is not None:
            w.add(a + "rope.scaling.type", "linear", T.STRING)
            w.add(a + "rope.scaling.factor", cfg.rope_linear_factor, T.FLOAT32)
        w.add(a + "vocab_size", cfg.vocab_size, T.UINT32)
        w.add("general.file_type", 0, T.UINT32)
        w.add("tokenizer.ggml.model", "llama", T.STRING)
        w.add("tokenizer.ggml.tokens", tokens, T.ARRAY, element_type=T.STRING)
        w.add("tokenizer.ggml.scores", scores, T.ARRAY, element_type=T.FLOAT32)
        w.add("tokenizer.ggml.token_type", types, T.ARRAY, element_type=T.INT32)
        w.add("tokenizer.ggml.bos_token_id", 1, T.UINT32)
        w.add("tokenizer.ggml.eos_token_id", 2, T.UINT32)
        w.add("tokenizer.ggml.unknown_token_id", 0, T.UINT32)
        w.add("tokenizer.ggml.add_bos_token", True, T.BOOL)
        w.add("tokenizer.ggml.add_eos_token", False, T.BOOL)
        w.add("tokenizer.chat_template", CHAT_TEMPLATE, T.STRING)
        for name, arr in gguf_tensors(cfg, sd).items():
            if name in omit:
                continue
            ttype = GGMLType.F32 if arr.ndim == 1 else wtype
            if name == "token_embd.weight" and embd_type is not None:
                ttype = embd_type
            for suffix, t in (type_overrides or {}).items():
                if name.endswith(suffix):
                    ttype = t
            w.add_tensor(name, shape=arr.shape, type=ttype, data=_encode(arr, ttype, name))
    return path


def _encode(arr: np.ndarray, ttype: GGMLType, name: str) -> np.ndarray:
    """The tensor's bytes as the writer takes them (f32 / f16 / uint16 for BF16 / uint8)."""
    if ttype == GGMLType.F32:
        return arr.astype(np.float32)
    if ttype == GGMLType.F16:
        return arr.astype(np.float16)
    if ttype == GGMLType.BF16:
        return np.ascontiguousarray(quants.quantize(arr, ttype, name=name)).view(np.uint16)
    if quants.get_codec(ttype).can_quantize:
        return quants.quantize(arr, ttype, name=name)
    # Types gguflite only decodes: llama.cpp's own quantizer via ctypes.
    from ggml_ref import ggml_quantize

    return ggml_quantize(int(ttype), arr.reshape(-1, arr.shape[-1]))


def make_tiny_llama(path: str | Path, cfg: TinyConfig | None = None, *, seed: int = 0,
                    wtype: GGMLType = GGMLType.F32, embd_type: GGMLType | None = None,
                    ) -> tuple[Path, TinyConfig, dict[str, np.ndarray]]:
    """Draw a tiny model and write it; returns (path, config, HF-named float32 weights)."""
    cfg = cfg or TinyConfig()
    sd = random_weights(cfg, seed)
    return write_gguf(path, cfg, sd, wtype=wtype, embd_type=embd_type), cfg, sd


def hf_model(cfg: TinyConfig, sd: dict[str, np.ndarray]):  # -> transformers.LlamaForCausalLM
    """The same model as a float32 ``transformers.LlamaForCausalLM`` in eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    rope_scaling = None
    if cfg.rope_freq_factors is not None or cfg.rope_linear_factor is not None:
        raise ValueError("hf_model: rope frequency factors / linear scaling are compared with "
                         "llama.cpp, not transformers")
    hf_cfg = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_kv_head, max_position_embeddings=cfg.context_length,
        rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tied,
        rope_scaling=rope_scaling, attention_bias=False, mlp_bias=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    model = LlamaForCausalLM(hf_cfg).to(torch.float32)
    state = {k: torch.from_numpy(v.copy()) for k, v in sd.items()}
    if cfg.tied:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if "rotary_emb" not in m]
    if missing or unexpected:
        raise ValueError(f"hf_model: missing {missing}, unexpected {unexpected}")
    return model.eval()


def hf_weights_from_gguf(path: str | Path, cfg: TinyConfig) -> dict[str, np.ndarray]:
    """HF-named float32 weights read back from a tiny-model file by the ``gguf`` package.

    The reference side of runtime tests on quantized files: every tensor is decoded by
    ``gguf.quants.dequantize`` (gguf-py, llama.cpp's own Python package; not gguflite's codecs)
    and Q/K rows go back to HF order with :func:`unpermute_qk`. Feed the result to
    :func:`hf_model` for logits computed on exactly the weights the file holds.
    """
    import gguf

    gguf_to_hf = {gg: hf for hf, gg in _BLOCK_MAP.items()}
    sd: dict[str, np.ndarray] = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
        w = w.reshape(tuple(int(n) for n in reversed(t.shape)))  # GGUF dims are innermost-first
        if t.name == "token_embd.weight":
            sd["model.embed_tokens.weight"] = w
        elif t.name == "output_norm.weight":
            sd["model.norm.weight"] = w
        elif t.name == "output.weight":
            sd["lm_head.weight"] = w
        elif t.name.startswith("blk."):
            _, i, gg = t.name.split(".", 2)
            if gg == "attn_q.weight":
                w = unpermute_qk(w, cfg.n_head)
            elif gg == "attn_k.weight":
                w = unpermute_qk(w, cfg.n_kv_head)
            sd[f"model.layers.{i}.{gguf_to_hf[gg]}"] = w
        else:
            raise ValueError(f"hf_weights_from_gguf: unexpected tensor {t.name!r}")
    return sd
