"""Rotary position embeddings: the cos/sin tables every backend reads, the Q/K row permutation
of the ``llama`` layout, and llama3's frequency divisors.

Angle of rotary pair i (0 <= i < n_rot/2) at position p, as ggml's ``ggml_rope_ext``::

    theta_extrap = p * base ** (-2 i / n_rot) / freq_factor[i]
    theta        = theta_extrap * freq_scale                               (linear, none)
    theta        = lerp(theta_extrap * freq_scale, theta_extrap, ramp(i))  (YaRN)
    cos, sin     = cos(theta) * mscale, sin(theta) * mscale

with ``freq_scale = 1 / factor`` and, for YaRN, ``ramp`` ggml's linear ramp between the
correction dims of ``beta_fast`` and ``beta_slow`` and ``mscale = attn_factor * (1 + 0.1 ln
factor)`` (what llama.cpp's context set-up and ggml's kernel multiply to). Pairs are
``(2i, 2i+1)`` ("normal") or ``(i, i + n_rot/2)`` (NEOX) within each head; dims past n_rot are
not rotated.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from gguflite.errors import ConversionError

from .base import HParams


def _corr_dim(n_rot: int, n_ctx_orig: int, n_rotations: float, base: float) -> float:
    return n_rot * math.log(n_ctx_orig / (n_rotations * 2 * math.pi)) / (2 * math.log(base))


def _angles(hp: HParams, n_ctx: int, base: float, freq_factors: np.ndarray | None
            ) -> tuple[np.ndarray, float]:
    """(n_ctx, n_rot // 2) float64 angles and the cos/sin multiplier for one rope base."""
    half = hp.n_rot // 2
    inv_freq = base ** (-np.arange(half, dtype=np.float64) * 2.0 / hp.n_rot)  # (half,)
    if freq_factors is not None:
        inv_freq = inv_freq / np.asarray(freq_factors, dtype=np.float64)
    pos = np.arange(n_ctx, dtype=np.float64)[:, None]  # (n_ctx, 1)
    extrap = pos * inv_freq[None, :]  # (n_ctx, half)
    mscale = hp.rope_attn_factor
    if hp.rope_scaling == "none" or hp.rope_scaling == "longrope":
        return extrap, mscale
    scale = 1.0 / hp.rope_factor
    if hp.rope_scaling == "linear":
        return extrap * scale, mscale
    # yarn
    lo = max(0.0, math.floor(_corr_dim(hp.n_rot, hp.rope_orig_ctx, hp.yarn_beta_fast, base)))
    hi = min(hp.n_rot - 1.0,
             math.ceil(_corr_dim(hp.n_rot, hp.rope_orig_ctx, hp.yarn_beta_slow, base)))
    y = (np.arange(half, dtype=np.float64) - lo) / max(0.001, hi - lo)  # (half,)
    mix = 1.0 - np.clip(y, 0.0, 1.0)  # 1: extrapolate (high frequencies), 0: interpolate
    angle = extrap * scale * (1.0 - mix) + extrap * mix
    return angle, mscale * (1.0 + 0.1 * math.log(hp.rope_factor))


def rope_tables(hp: HParams, n_ctx: int, freq_factors: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin, (2, n_ctx, n_rot // 2) float32 each: table 0 for the global base, table 1
    for the sliding-window layers' base (``rope_theta_local``; a copy of 0 when it has none).
    Layer l uses table ``hp.layer_rope[l]`` (-1: no rope)."""
    cos = np.empty((2, n_ctx, hp.n_rot // 2), np.float32)
    sin = np.empty_like(cos)
    angle, mscale = _angles(hp, n_ctx, hp.rope_theta, freq_factors)
    cos[0], sin[0] = np.cos(angle) * mscale, np.sin(angle) * mscale
    if hp.rope_theta_local:  # the sliding-window layers: their own base, never scaled
        local = replace(hp, rope_scaling="none", rope_attn_factor=1.0)
        angle, mscale = _angles(local, n_ctx, hp.rope_theta_local, None)
        cos[1], sin[1] = np.cos(angle) * mscale, np.sin(angle) * mscale
    else:
        cos[1], sin[1] = cos[0], sin[0]
    return cos, sin


def permute_rows(n_rows: int, n_heads: int) -> np.ndarray:
    """Row order turning HF's rotate-half Q/K layout into llama.cpp's adjacent pairs.

    Within each head of ``hd = n_rows // n_heads`` rows, HF pairs RoPE dimension ``i`` with
    ``i + hd/2``; llama.cpp pairs ``2i`` with ``2i + 1``. Output row ``h*hd + 2i + j`` is input
    row ``h*hd + j*hd/2 + i`` (``j`` in {0, 1}), i.e. llama.cpp's
    ``w.reshape(n_head, 2, hd // 2, -1).swapaxes(1, 2).reshape(w.shape)``.
    For K pass ``n_kv_heads``.
    """
    idx = np.arange(n_rows).reshape(n_heads, 2, n_rows // n_heads // 2)  # (h, j, i)
    return idx.swapaxes(1, 2).reshape(n_rows)  # (n_rows,)


def llama3_factors(hp: HParams) -> np.ndarray:
    """(n_rot // 2,) float32 divisors of the RoPE frequencies for ``rope_type: llama3``.

    Wavelengths shorter than ``original_max_position_embeddings / high_freq_factor`` keep their
    frequency (factor 1), longer than ``... / low_freq_factor`` are divided by ``factor``, and
    the band between is interpolated smoothly; llama.cpp divides each frequency by this value.
    """
    p = hp.extra.get("rope", {})
    dim = hp.n_rot
    factor = float(p.get("factor", 8.0))
    low = float(p.get("low_freq_factor", 1.0))
    high = float(p.get("high_freq_factor", 4.0))
    old_ctx = float(p.get("original_max_position_embeddings", 8192))
    if high == low:
        raise ConversionError("config.json: llama3 rope scaling needs high_freq_factor != "
                              "low_freq_factor")
    # computed in float32 as llama.cpp does (torch.arange(0, dim, 2, dtype=float32) / dim)
    exps = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    freqs = (1.0 / (np.float32(hp.rope_theta) ** exps)).astype(np.float32)  # (dim // 2,)
    out = np.empty(dim // 2, dtype=np.float64)
    for i, f in enumerate(freqs):
        wavelen = 2 * math.pi / float(f)
        if wavelen < old_ctx / high:
            out[i] = 1.0
        elif wavelen > old_ctx / low:
            out[i] = factor
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out[i] = 1.0 / ((1 - smooth) / factor + smooth)
    return out.astype(np.float32)
