"""Building blocks of the lact-audio backbone: norms, RoPE, attention masks, MLP."""

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_lact_audio import LaCTAudioConfig


class LaCTRMSNorm(nn.Module):
    """RMSNorm over the last dim (computed in float32): ``x [..., dim] -> [..., dim]``."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's fused kernel: x * rsqrt(mean(x^2) + eps) * weight, one op instead of six
        return F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps).to(x.dtype)


class LaCTSwiGLUMLP(nn.Module):
    """``down(silu(gate(x)) * up(x))``: ``[B, T, hidden] -> [B, T, hidden]``."""

    def __init__(self, config: LaCTAudioConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


def rotary_cos_sin(positions: torch.Tensor, dim: int, theta: float, dtype: torch.dtype):
    """RoPE tables for integer ``positions [T]``: returns ``cos, sin`` of shape ``[T, dim]``."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [B, H, T, D]`` by the tables ``cos, sin [T, D]`` (rotate-half convention)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def attention_allowed(
    q_pos: torch.Tensor, k_pos: torch.Tensor, pattern: str, window: int | None, chunk_size: int
) -> torch.Tensor:
    """Which keys each query may see, from absolute frame positions.

    Args:
        q_pos: ``[Tq]`` query positions; k_pos: ``[Tk]`` key positions.
        pattern: ``"causal"`` (``0 <= q - k <= window``), ``"block_causal"`` (the key is in the query's
            chunk of ``chunk_size`` frames, or ``0 <= q - k <= window``) or ``"bidirectional"``
            (``|q - k| <= window``). ``window=None`` means unlimited.

    Returns:
        bool ``[Tq, Tk]``.
    """
    q, k = q_pos[:, None], k_pos[None, :]
    # Boolean comparisons only: an int64 [Tq, Tk] difference matrix would cost 8 bytes a pair.
    if pattern == "bidirectional":
        return (
            torch.ones(q.shape[0], k.shape[1], dtype=torch.bool, device=q.device)
            if window is None
            else ((k >= q - window) & (k <= q + window))
        )
    allowed = k <= q
    if window is not None:
        allowed = allowed & (k >= q - window)
    if pattern == "block_causal":
        allowed = allowed | ((k // chunk_size) == (q // chunk_size))
    return allowed


def eager_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Plain softmax attention with the transformers attention-function contract.

    query ``[B, H, Tq, D]``, key/value ``[B, H, Tk, D]``, attention_mask bool ``[B, 1, Tq, Tk]``
    (True = may attend). Returns ``(out [B, Tq, H, D], weights [B, H, Tq, Tk])``.
    """
    scores = torch.matmul(query, key.transpose(-1, -2)) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights
