"""Random inputs for the LaCT op tests (shared by the op test files)."""

import torch

from modeling_lact_audio.kernels import FastWeightState


def make_inputs(B=2, T=63, H=2, D=8, Dh=12, dtype=torch.float64, seed=0, requires_grad=False):
    """Random ``q, k, v, lr, momentum, state`` for the op, with weights scaled like a trained layer.

    q, k are L2-normalised per head as the LaCT layer does. Returns a dict.
    """
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype)
    q = torch.nn.functional.normalize(rnd(B, T, H, D), dim=-1)
    k = torch.nn.functional.normalize(rnd(B, T, H, D), dim=-1)
    v = rnd(B, T, H, D)
    lr = torch.rand(B, T, H, 3, generator=g, dtype=dtype) * 0.1
    momentum = torch.rand(B, T, H, generator=g, dtype=dtype) * 0.9
    w0 = rnd(1, H, Dh, D).expand(B, -1, -1, -1) / D**0.5
    w1 = rnd(1, H, D, Dh).expand(B, -1, -1, -1) / Dh**0.5
    w2 = rnd(1, H, Dh, D).expand(B, -1, -1, -1) / D**0.5
    tensors = dict(q=q, k=k, v=v, lr=lr, momentum=momentum, w0=w0, w1=w1, w2=w2)
    if requires_grad:
        tensors = {n: t.detach().clone().requires_grad_(True) for n, t in tensors.items()}
    tensors["state"] = FastWeightState.from_weights(tensors["w0"], tensors["w1"], tensors["w2"])
    return tensors


def padding_mask(B, T, lengths):
    """Bool ``[B, T]``: True for the first ``lengths[b]`` positions of example b."""
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]


def call_op(fn, x, state=None, sl=slice(None), use_mom=True, mask=None, **kw):
    """``fn`` (the op or its reference) on the tokens ``sl`` of ``make_inputs``' dict ``x`` -> ``(o, state)``.

    ``state``: None starts from ``x["state"]``; ``use_mom``: pass ``x["momentum"]``; ``mask [B, T]`` and any
    ``chunk_ends [B, T]`` in ``kw`` are cut to ``sl`` too; the other keywords go to ``fn`` as they are.
    """
    if kw.get("chunk_ends") is not None:
        kw["chunk_ends"] = kw["chunk_ends"][:, sl]
    return fn(
        x["q"][:, sl],
        x["k"][:, sl],
        x["v"][:, sl],
        x["lr"][:, sl],
        x["state"] if state is None else state,
        momentum=x["momentum"][:, sl] if use_mom else None,
        mask=None if mask is None else mask[:, sl],
        **kw,
    )
