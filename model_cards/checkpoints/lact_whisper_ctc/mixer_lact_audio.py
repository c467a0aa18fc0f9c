"""Token mixers: LaCT fast weights + sliding-window attention (one shared qkv), or attention alone."""

import math
from bisect import bisect_left, bisect_right

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .cache_lact_audio import LaCTLayerCache
from .configuration_lact_audio import LaCTAudioConfig
from .lact_ops import FastWeightState, lact_swiglu
from .layers_lact_audio import LaCTRMSNorm, apply_rotary, attention_allowed, eager_attention, rotary_cos_sin


def inverse_softplus(x: float) -> float:
    """``y`` with ``softplus(y) == x`` (x > 0)."""
    return x + math.log(-math.expm1(-x))


class LaCTAudioMixer(nn.Module):
    """One block's token mixer.

    ``mixer="lact"``: ``o_proj(lact(x) + attention(x))`` where both branches read one qkv projection.
    LaCT branch: SiLU then per-head L2 norm on q and k, SiLU on v, per-token rates
    ``softplus(linear(x) + inverse_softplus(base_lr))`` in float32 (``lact_lr_mode="learned"``; ``"fixed"``:
    ``base_lr`` for every token, and no ``lr_proj``), the op's ``lact_update_rule``, optional momentum
    ``sigmoid(linear(x))``, learned initial fast weights per head, per-head RMSNorm on the output
    times a SiLU gate. Attention branch: RoPE, window and pattern from the config, through
    ``ALL_ATTENTION_FUNCTIONS`` (SDPA on CPU).
    ``mixer="attention"`` / ``"sliding_window"``: the attention branch alone (baselines).

    ``lact_output_scale`` (an attribute, 1.0; not saved): a diagnostic multiplier of the LaCT branch's output,
    with which the adaptation report measures how much a trained model relies on its fast weights at all.
    ``lact_rate_scale`` (an attribute, 1.0; not saved): a test-time multiplier of the per-token rates for the
    adaptation study (0 freezes the fast weights; under Muon any factor > 0 cancels, see
    ``adaptation.reliance.scaled_lact_rates``).

    forward: ``x [B, T, hidden]``, ``start`` (int: absolute index of the first frame; the frames are
    ``start .. start + T - 1``, a host int so that block bounds need no device sync), ``frame_mask [B, T]``
    bool or None, ``layer_cache`` or None, ``rotary`` (float32 ``cos, sin [T, head_dim]`` of
    ``rotary_cos_sin(positions, ...)``, shared by every layer; computed here when None), ``chunk_ends [B, T]``
    bool or None (frames that end a fast-weight chunk: the op's ``chunk_ends``; the attention's blocks stay on
    the fixed ``lact_chunk_size`` grid) -> ``(out [B, T, hidden], new layer_cache or None)``.
    """

    lact_output_scale: float = 1.0
    lact_rate_scale: float = 1.0

    def __init__(self, config: LaCTAudioConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.attention_head_dim
        self.scaling = self.head_dim**-0.5
        self.is_causal = config.attention_pattern == "causal"
        self.window = None if config.mixer == "attention" else config.window_size
        self.qkv_proj = nn.Linear(d, 3 * d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.use_lact = config.mixer == "lact"
        if self.use_lact:
            H, D, Dh = config.num_lact_heads, config.lact_head_dim, config.lact_hidden_dim
            self.lact_heads, self.lact_dim = H, D
            self.lr_proj = nn.Linear(d, 3 * H) if config.lact_lr_mode == "learned" else None
            self.lr_offset = inverse_softplus(config.base_lr)
            self.momentum_proj = nn.Linear(d, H) if config.use_momentum else None
            self.w0 = nn.Parameter(torch.randn(H, Dh, D) / math.sqrt(D))
            self.w1 = nn.Parameter(torch.randn(H, D, Dh) / math.sqrt(Dh))
            self.w2 = nn.Parameter(torch.randn(H, Dh, D) / math.sqrt(D))
            self.lact_norm = LaCTRMSNorm(D, eps=config.rms_norm_eps)
            self.gate_proj = nn.Linear(d, d, bias=False)

    def initial_state(self, batch_size: int) -> FastWeightState:
        """The learned initial fast weights, broadcast over the batch."""
        expand = lambda w: w[None].expand(batch_size, *w.shape)
        return FastWeightState.from_weights(expand(self.w0), expand(self.w1), expand(self.w2))

    def _lact(self, x, q, k, v, frame_mask, state, chunk_ends=None):
        B, T, _ = x.shape
        H, D = self.lact_heads, self.lact_dim
        # normalised in float32: F.normalize's eps (1e-12) is 0 in fp16, where an all-zero (padded) q or k
        # would give 0/0 = NaN
        lq = F.normalize(F.silu(q).float().view(B, T, H, D), dim=-1)
        lk = F.normalize(F.silu(k).float().view(B, T, H, D), dim=-1)
        lv = F.silu(v).view(B, T, H, D)
        if self.lr_proj is None:  # lact_lr_mode="fixed"
            lr = torch.full((B, T, H, 3), self.config.base_lr, dtype=torch.float32, device=x.device)
        else:
            lr = F.softplus(self.lr_proj(x).float() + self.lr_offset).view(B, T, H, 3)
        if self.lact_rate_scale != 1.0:
            lr = lr * self.lact_rate_scale
        momentum = None
        if self.momentum_proj is not None:
            # sigmoid saturates to exactly 1.0 in float32; the op requires beta < 1
            momentum = torch.sigmoid(self.momentum_proj(x).float()).clamp(max=0.999)
        if state is None:
            state = self.initial_state(B)
        o, state = lact_swiglu(
            lq,
            lk,
            lv,
            lr,
            state,
            chunk_size=self.config.lact_chunk_size,
            order=self.config.lact_order,
            muon_steps=self.config.muon_steps,
            weight_norm=self.config.weight_norm,
            momentum=momentum,
            mask=frame_mask,
            update_rule=self.config.lact_update_rule,
            chunk_ends=chunk_ends,
        )
        o = self.lact_norm(o).reshape(B, T, H * D).to(x.dtype)
        return o * F.silu(self.gate_proj(x)), state

    def _attention(self, q, k, v, start: int, frame_mask, layer_cache, rotary=None):
        B, T, _ = q.shape
        shape = (B, T, self.num_heads, self.head_dim)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))  # [B, H, T, Dh]
        positions = torch.arange(start, start + T, device=q.device)
        if rotary is None:
            rotary = rotary_cos_sin(positions, self.head_dim, self.config.rope_theta, torch.float32)
        cos, sin = (t.to(q.dtype) for t in rotary)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        key_mask = frame_mask  # [B, Tk] bool; None: every key is a real frame (no mask work at all)
        k_pos = positions
        if layer_cache is not None and layer_cache.keys is not None:
            n = layer_cache.keys.shape[2]
            k = torch.cat([layer_cache.keys.to(k.dtype), k], dim=2)
            v = torch.cat([layer_cache.values.to(v.dtype), v], dim=2)
            if key_mask is not None or layer_cache.key_mask is not None:
                ones = lambda m, n: m if m is not None else torch.ones(B, n, dtype=torch.bool, device=q.device)
                key_mask = torch.cat([ones(layer_cache.key_mask, n), ones(key_mask, T)], dim=1)
            k_pos = torch.arange(start - n, start + T, device=q.device)
        impl = self.config._attn_implementation or "sdpa"
        dropout = self.config.attention_dropout if self.training else 0.0
        if impl not in ("sdpa", "eager") and self.config.attention_pattern != "block_causal":
            # Kernels with the flash-attention contract (flash_attention_2/3, ...): a [B, Tk] padding
            # mask, causal alignment bottom-right, and a window of `sliding_window - 1` frames each side.
            out, _ = ALL_ATTENTION_FUNCTIONS[impl](
                self,
                q,
                k,
                v,
                None if key_mask is None else key_mask.long(),
                dropout=dropout,
                scaling=self.scaling,
                is_causal=self.is_causal,
                sliding_window=None if self.window is None else self.window + 1,
            )
        else:
            # Explicit boolean masks (windows, chunks, padding): SDPA, or eager attention.
            attn_fn = ALL_ATTENTION_FUNCTIONS["sdpa"] if impl == "sdpa" else eager_attention
            n_cached = k.shape[2] - T
            if self.window is not None:
                out = self._local_attention(attn_fn, q, k, v, start, n_cached, key_mask, dropout)
            elif n_cached == 0 and frame_mask is None and self.config.attention_pattern != "block_causal":
                # Full attention without padding: no mask at all lets SDPA pick its fused kernels.
                out, _ = attn_fn(self, q, k, v, None, dropout=dropout, scaling=self.scaling, is_causal=self.is_causal)
            else:
                mask = self._block_mask(positions, k_pos, key_mask)
                out, _ = attn_fn(self, q, k, v, mask, dropout=dropout, scaling=self.scaling, is_causal=False)
        new_cache = None
        if layer_cache is not None:
            keep = k.shape[2] if self.window is None else min(self._cached_keys(), k.shape[2])
            new_cache = LaCTLayerCache(
                keys=k[:, :, k.shape[2] - keep :],
                values=v[:, :, v.shape[2] - keep :],
                key_mask=None if key_mask is None else key_mask[:, key_mask.shape[1] - keep :],
            )
        return out.reshape(B, T, -1), new_cache

    def _cached_keys(self) -> int:
        """Keys a stream must keep: the window, plus (block_causal) the frames of an unfinished chunk."""
        extra = self.config.lact_chunk_size if self.config.attention_pattern == "block_causal" else 0
        return self.window + extra

    def _block_mask(self, q_pos, k_pos, key_mask):
        """``[B or 1, 1, Tq, Tk]`` bool: the pattern's allowed pairs among real keys (``key_mask [B, Tk]``,
        None when every key is real); a padded query sees itself.

        (A padded query may have no key at all; seeing itself keeps SDPA finite, and its output is unused.)
        """
        allowed = attention_allowed(
            q_pos, k_pos, self.config.attention_pattern, self.window, self.config.lact_chunk_size
        )
        if key_mask is None:
            return allowed[None, None]
        # Every query is also a key; the key at a query's own position is padding exactly when the query is.
        self_pair = (k_pos[None, :] == q_pos[:, None])[None, None]  # [1, 1, Tq, Tk]
        return (allowed[None, None] & key_mask[:, None, None, :]) | (self_pair & ~key_mask[:, None, None, :])

    def _key_span(self, a: int, b: int, q_end: int) -> tuple[int, int]:
        """Keys ``[lo, hi)`` (absolute positions) the query block ``[a, b)`` may see: the window back, the
        start of its chunk (``block_causal``), the window ahead up to ``q_end`` (``bidirectional``)."""
        C, W, pattern = self.config.lact_chunk_size, self.window, self.config.attention_pattern
        lo = a - W if pattern != "block_causal" else min(a - W, a // C * C)
        hi = min(q_end, b + W) if pattern == "bidirectional" else b
        return lo, hi

    def _local_attention(self, attn_fn, q, k, v, q_start: int, n_cached: int, key_mask, dropout):
        """Windowed attention in query blocks of ``lact_chunk_size`` frames: O(T·(window + chunk)), not O(T²).

        q ``[B, H, T, Dh]``; k, v ``[B, H, n_cached + T, Dh]`` (cached keys first, contiguous positions);
        key_mask ``[B, n_cached + T]`` or None (no padding). Returns ``[B, T, H, Dh]``.
        """
        C = self.config.lact_chunk_size
        T = q.shape[2]
        q_end, k_start = q_start + T, q_start - n_cached
        bounds, a = [], q_start
        while a < q_end:  # blocks end at chunk boundaries (absolute positions), as block_causal needs
            b = min(q_end, (a // C + 1) * C)
            bounds.append((a, b))
            a = b
        sizes = [b - a for a, b in bounds]
        if len(bounds) == 1:  # one query block (streaming pieces, short inputs): slice, no split/gather
            a, b = bounds[0]
            lo, hi = self._key_span(a, b, q_end)
            lo = max(lo, k_start)
            ks, vs = k[:, :, lo - k_start : hi - k_start], v[:, :, lo - k_start : hi - k_start]
            ms = None if key_mask is None else key_mask[:, lo - k_start : hi - k_start]
            mask = self._block_mask(torch.arange(a, b, device=q.device), torch.arange(lo, hi, device=q.device), ms)
            return attn_fn(self, q, ks, vs, mask, dropout=dropout, scaling=self.scaling, is_causal=False)[0]
        # Split once (a cheap backward), then gather the few key blocks each query block needs.
        k_sizes = ([n_cached] if n_cached else []) + sizes
        starts = [k_start + sum(k_sizes[:i]) for i in range(len(k_sizes))]
        k_blocks, v_blocks = k.split(k_sizes, 2), v.split(k_sizes, 2)
        m_blocks = None if key_mask is None else key_mask.split(k_sizes, 1)
        outs = []
        for q_block, (a, b) in zip(q.split(sizes, 2), bounds):
            lo, hi = self._key_span(a, b, q_end)
            first = max(0, bisect_right(starts, lo) - 1)
            last = bisect_left(starts, hi)
            ks, vs = (torch.cat(blocks[first:last], 2) for blocks in (k_blocks, v_blocks))
            cut = max(lo, starts[first]) - starts[first]
            n = min(hi, q_end) - max(lo, starts[first])
            ks, vs = ks[:, :, cut : cut + n], vs[:, :, cut : cut + n]
            ms = None if m_blocks is None else torch.cat(m_blocks[first:last], 1)[:, cut : cut + n]
            k_pos = torch.arange(max(lo, starts[first]), max(lo, starts[first]) + n, device=q.device)
            mask = self._block_mask(torch.arange(a, b, device=q.device), k_pos, ms)
            out, _ = attn_fn(self, q_block, ks, vs, mask, dropout=dropout, scaling=self.scaling, is_causal=False)
            outs.append(out)
        return torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]

    def forward(
        self,
        x,
        start: int = 0,
        frame_mask=None,
        layer_cache: LaCTLayerCache | None = None,
        rotary=None,
        chunk_ends=None,
    ):
        if not isinstance(start, int):
            raise TypeError(f"start must be an int (the first frame's absolute index), got {type(start).__name__}")
        if chunk_ends is not None and not self.use_lact:
            raise ValueError(
                f"chunk_ends marks fast-weight chunks, and mixer={self.config.mixer!r} has no fast weights: pass it "
                "only to mixer='lact' models"
            )
        q, k, v = self.qkv_proj(x).chunk(3, dim=-1)
        out, new_cache = self._attention(q, k, v, start, frame_mask, layer_cache, rotary)
        if self.use_lact:
            fast = None if layer_cache is None else layer_cache.fast
            lact_out, fast = self._lact(x, q, k, v, frame_mask, fast, chunk_ends)
            out = out + (lact_out if self.lact_output_scale == 1.0 else lact_out * self.lact_output_scale)
            if new_cache is not None:
                new_cache.fast = fast
        return self.o_proj(out), new_cache
