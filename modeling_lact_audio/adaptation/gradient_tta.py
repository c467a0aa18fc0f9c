"""Gradient test-time adaptation: the baselines the carried LaCT fast-weight state is compared with.

- **SUTA** (Lin et al. 2022, "Listen, Adapt, Better WER: Source-free Single-utterance Test-time Adaptation
  for ASR"): per utterance, a few AdamW steps on the normalisation layers minimising
  ``em_coef * entropy + (1 - em_coef) * minimum-class-confusion`` of the temperature-scaled frame
  posteriors, a prediction with the adapted parameters, then a reset before the next utterance.
- **Supervised fine-tuning** on k labelled utterances of the new speaker or domain (the wav2vec 2.0
  route): CTC loss on a copy of the head, either its output layer only or all of it.

What follows the released SUTA code (``main.py`` of the SUTA repository, as forked in ``drumpt/SGEM``)
and its published runs (``--em_coef 0.3 --temp 2.5 --steps 10 --non_blank --reweight --episodic``):
AdamW with no weight decay; the model in ``eval()`` mode throughout (dropout off while adapting);
the entropy averaged over the frames whose arg-max is not blank; the class-confusion term over all frames,
reweighted by ``1 + exp(-entropy)`` per frame; both terms on ``logits / temperature``; after the last step
the prediction is made with the adapted parameters. Their runs also adapt the wav2vec 2.0 CNN feature
extractor at lr 2e-5; our heads read frozen cached Whisper states and have no feature extractor, so only
the normalisation layers adapt, at lr 2e-4 (the LayerNorm-only learning rate we use by default; tune it
on a validation split before comparing).

Our adaptation to the BiLSTM head, which has no normalisation layer: the ``"output"`` scope adapts its
final CTC linear layer instead (:func:`default_scope`).
"""

import copy
import time

import numpy as np
import torch
from torch import nn

from ..layers_lact_audio import LaCTRMSNorm
from ..recogniser.sessions import SessionCollator

NORM_TYPES = (LaCTRMSNorm, nn.LayerNorm, nn.RMSNorm)
SUTA_SCOPES = ("norm", "output")
FINETUNE_SCOPES = ("head", "full")
# The recogniser recipe's values (RecogniserTrainingArguments), so fine-tuning continues training as it was.
FINETUNE_WEIGHT_DECAY = 0.01
FINETUNE_MAX_GRAD_NORM = 1.0


def entropy_loss(
    logits: torch.Tensor, temperature: float = 1.0, frame_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean entropy (nats) of the frame posteriors ``softmax(logits / temperature)``.

    Args:
        logits: ``[T, V]`` frame logits (any float dtype; computed in float32).
        temperature: divides the logits before the softmax.
        frame_mask: optional ``[T]`` bool; the mean runs over its True frames only, and is 0 when none is True.

    Returns:
        A float32 scalar: ``log V`` for uniform posteriors, 0 for one-hot ones.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [T, V], got shape {tuple(logits.shape)}")
    log_p = torch.log_softmax(logits.float() / temperature, dim=-1)
    frame_entropy = -(log_p.exp() * log_p).sum(-1)  # [T]
    if frame_mask is None:
        return frame_entropy.mean()
    if frame_mask.shape != frame_entropy.shape:
        raise ValueError(f"frame_mask must be [T] = {tuple(frame_entropy.shape)}, got {tuple(frame_mask.shape)}")
    mask = frame_mask.to(frame_entropy.dtype)
    return (frame_entropy * mask).sum() / mask.sum().clamp(min=1)


def mcc_loss(logits: torch.Tensor, temperature: float = 1.0, reweight: bool = True) -> torch.Tensor:
    """Minimum class confusion (Jin et al. 2020) of the frame posteriors, as SUTA computes it.

    With ``p = softmax(logits / temperature)`` ``[T, V]`` and frame weights ``w`` ``[T]``, the class
    correlation is ``C = p^T diag(w) p`` ``[V, V]``; each column is divided by its sum and the loss is the
    off-diagonal mass ``(sum(C~) - trace(C~)) / V``. ``reweight`` (SUTA's setting) gives confident frames
    more weight: ``w_t = 1 + exp(-H(p_t))`` (entropy not differentiated), scaled so that ``sum(w) = T``;
    otherwise ``w = 1``.

    Args:
        logits: ``[T, V]`` frame logits (computed in float32).
        temperature: divides the logits before the softmax.
        reweight: weight frames by their confidence as above.

    Returns:
        A float32 scalar in ``[0, (V - 1) / V]``.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be [T, V], got shape {tuple(logits.shape)}")
    T, V = logits.shape
    log_p = torch.log_softmax(logits.float() / temperature, dim=-1)
    p = log_p.exp()  # [T, V]
    if reweight:
        frame_entropy = -(p * log_p).sum(-1).detach()
        weight = 1 + torch.exp(-frame_entropy)
        weight = T * weight / weight.sum()  # [T]
        correlation = (p * weight[:, None]).T @ p
    else:
        correlation = p.T @ p  # [V, V]
    correlation = correlation / correlation.sum(dim=0, keepdim=True)
    return (correlation.sum() - correlation.trace()) / V


def suta_loss(logits: torch.Tensor, blank: int = 0, em_coef: float = 0.3, temperature: float = 2.5) -> torch.Tensor:
    """SUTA's objective on one utterance: ``em_coef * entropy + (1 - em_coef) * MCC``.

    The entropy runs over the frames whose arg-max is not ``blank`` (SUTA's ``--non_blank``); the
    class-confusion term over every frame, reweighted (``--reweight``). A term whose coefficient is 0 is
    skipped, as in SUTA.

    Args:
        logits: ``[T, V]`` frame logits (log-probabilities give the same value: the softmax ignores a shift).
        blank: the CTC blank id.
        em_coef: weight of the entropy term, in ``[0, 1]``.
        temperature: divides the logits in both terms.

    Returns:
        A float32 scalar.
    """
    if not 0.0 <= em_coef <= 1.0:
        raise ValueError(f"em_coef must be in [0, 1], got {em_coef}")
    loss = logits.new_zeros((), dtype=torch.float32)
    if em_coef > 0:
        non_blank = logits.argmax(-1) != blank
        loss = loss + em_coef * entropy_loss(logits, temperature, frame_mask=non_blank)
    if em_coef < 1:
        loss = loss + (1 - em_coef) * mcc_loss(logits, temperature, reweight=True)
    return loss


def _output_layer(model: nn.Module) -> nn.Linear:
    """The final CTC linear layer (``lm_head``) of a recogniser head, wherever it is nested."""
    found = [m for name, m in model.named_modules() if name.split(".")[-1] == "lm_head"]
    if len(found) != 1 or not isinstance(found[0], nn.Linear):
        raise ValueError(f"expected one nn.Linear named lm_head in {type(model).__name__}, found {len(found)}")
    return found[0]


def _norm_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Trainable weights and biases of the normalisation layers (frozen ones, e.g. an unused front end, left out)."""
    return [
        p for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False) if p.requires_grad
    ]


def default_scope(model: nn.Module) -> str:
    """``"norm"`` when the model has trainable normalisation layers (SUTA's choice), else ``"output"``.

    ``"output"`` (the final CTC linear layer) is our adaptation of SUTA to the BiLSTM head, which has no
    normalisation layer; SUTA itself never adapts the output layer.
    """
    return "norm" if _norm_parameters(model) else "output"


def adaptable_parameters(model: nn.Module, scope: str = "norm") -> list[nn.Parameter]:
    """The parameters SUTA adapts.

    Args:
        model: a recogniser head (``CachedStatesCTC`` or ``BiLSTMCTCHead``).
        scope: ``"norm"``: weights and biases of every trainable ``LaCTRMSNorm`` / ``nn.LayerNorm`` /
            ``nn.RMSNorm``; ``"output"``: weight and bias of the final CTC linear layer ``lm_head``.

    Returns:
        The parameters, in module order.

    Raises:
        ValueError: an unknown scope, or ``"norm"`` on a model without trainable normalisation layers.
    """
    if scope not in SUTA_SCOPES:
        raise ValueError(f"scope must be one of {SUTA_SCOPES}, got {scope!r}")
    if scope == "output":
        return list(_output_layer(model).parameters())
    params = _norm_parameters(model)
    if not params:
        raise ValueError(
            f"{type(model).__name__} has no trainable normalisation layer to adapt; use scope='output' "
            "(see default_scope)"
        )
    return params


def _blank_id(model: nn.Module) -> int:
    """The CTC blank id of a recogniser head (``BiLSTMCTCHead.blank`` or ``config.pad_token_id``)."""
    if hasattr(model, "blank"):
        return int(model.blank)
    return int(model.config.pad_token_id)


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def suta_log_probs(
    model: nn.Module,
    frontend_states: torch.Tensor,
    attention_mask: torch.Tensor,
    steps: int = 10,
    lr: float = 2e-4,
    em_coef: float = 0.3,
    temperature: float = 2.5,
    scope: str | None = None,
) -> tuple[torch.Tensor, float]:
    """Log-probabilities of one utterance after SUTA adapts the model to it; the model is then reset.

    ``steps`` AdamW steps (no weight decay) on :func:`adaptable_parameters` minimise :func:`suta_loss`
    with the model in ``eval()`` mode (dropout off), then one no-grad forward predicts. The adapted
    parameters' values and gradients, every ``requires_grad`` flag and every module's train/eval mode are
    restored afterwards, so the model is bit-identical to what it was. ``steps=0`` is the plain model.

    Args:
        model: a recogniser head (``CachedStatesCTC`` or ``BiLSTMCTCHead``).
        frontend_states: ``[1, T, d_model]`` cached encoder states (cast to the model's dtype and device).
        attention_mask: ``[1, T]`` 1 on real frames.
        steps: adaptation steps (SUTA: 10).
        lr: AdamW learning rate.
        em_coef: entropy weight of the objective (SUTA: 0.3).
        temperature: logit temperature of the objective (SUTA: 2.5).
        scope: ``"norm"`` or ``"output"``; None takes :func:`default_scope`.

    Returns:
        ``(log_probs, seconds)``: float32 ``[T', V]`` log-probabilities of the ``T'`` real frames, on the
        model's device, and the wall seconds of adaptation plus prediction (excluding the reset).
    """
    if frontend_states.dim() != 3 or frontend_states.shape[0] != 1:
        raise ValueError(f"frontend_states must be one utterance [1, T, d], got shape {tuple(frontend_states.shape)}")
    if attention_mask.shape != frontend_states.shape[:2]:
        raise ValueError(
            f"attention_mask must be [1, T] = {tuple(frontend_states.shape[:2])}, got {tuple(attention_mask.shape)}"
        )
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    params = adaptable_parameters(model, default_scope(model) if scope is None else scope)
    reference = next(model.parameters())
    device = reference.device
    states = frontend_states.to(device=device, dtype=reference.dtype)
    mask = attention_mask.to(device)
    blank = _blank_id(model)

    modes = {m: m.training for m in model.modules()}
    flags = {p: p.requires_grad for p in model.parameters()}
    saved = [(p, p.detach().clone(), p.grad) for p in params]
    model.eval()
    model.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
        p.grad = None
    try:
        _synchronize(device)
        start = time.perf_counter()
        if steps:
            optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
            with torch.enable_grad():
                for _ in range(steps):
                    out = model(states, mask)
                    length = int(out.output_lengths[0])
                    loss = suta_loss(out.logits[0, :length], blank, em_coef, temperature)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        with torch.no_grad():
            out = model(states, mask)
            length = int(out.output_lengths[0])
            log_probs = torch.log_softmax(out.logits[0, :length].float(), dim=-1)
        _synchronize(device)
        seconds = time.perf_counter() - start
    finally:
        with torch.no_grad():
            for p, value, grad in saved:
                p.copy_(value)
                p.grad = grad
        for p, flag in flags.items():
            p.requires_grad_(flag)
        for m, training in modes.items():
            m.train(training)
    return log_probs, seconds


def _check_rows(rows: list[dict]) -> None:
    """Clear errors for labelled rows that fine-tuning cannot read."""
    if not rows:
        raise ValueError("rows is empty: fine-tuning needs at least one labelled utterance")
    for i, row in enumerate(rows):
        missing = {"states", "labels"} - set(row)
        if missing:
            raise ValueError(f"rows[{i}] lacks {sorted(missing)}; each row needs 'states' [T, d] and 'labels'")
        if np.ndim(row["states"]) != 2:
            raise ValueError(f"rows[{i}]['states'] must be [T, d], got {np.ndim(row['states'])} dimensions")


def finetune_on_labelled(
    model: nn.Module,
    rows: list[dict],
    scope: str = "head",
    steps: int = 50,
    lr: float = 1e-4,
    batch_size: int = 8,
    seed: int = 0,
) -> tuple[nn.Module, float]:
    """A copy of ``model`` fine-tuned with the CTC loss on k labelled utterances; ``model`` is untouched.

    AdamW (weight decay 0.01, gradient norm clipped to 1.0, as the recogniser recipe trains) over
    ``steps`` minibatches of ``batch_size`` rows, read in order from a seeded reshuffle of ``rows`` each
    pass (a batch that crosses two passes may hold a row twice). The copy trains in ``train()`` mode
    (dropout on) under a seeded, forked RNG, so two calls give the same copy and the global RNG state is
    left as it was. The defaults are a starting point, not tuned: choose ``steps`` and ``lr`` on held-out
    utterances of the same speakers before comparing.

    Args:
        model: a recogniser head (``CachedStatesCTC`` or ``BiLSTMCTCHead``).
        rows: ``[{"states": array [T_i, d_model], "labels": list[int]}, ...]`` (CTC ids, as
            :func:`modeling_lact_audio.recogniser.training.add_labels` makes them).
        scope: ``"head"``: only the final CTC linear layer ``lm_head``; ``"full"``: every parameter of
            the head that requires grad (a frozen, unused front end stays frozen).
        steps: optimiser steps.
        lr: AdamW learning rate.
        batch_size: utterances per step (at most ``len(rows)`` are used).
        seed: fixes the row order and the dropout masks.

    Returns:
        ``(adapted, seconds)``: the fine-tuned copy in ``eval()`` mode with the input's ``requires_grad``
        flags, and the wall seconds of the fine-tuning loop (the copy excluded).
    """
    if scope not in FINETUNE_SCOPES:
        raise ValueError(f"scope must be one of {FINETUNE_SCOPES}, got {scope!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _check_rows(rows)
    adapted = copy.deepcopy(model)
    flags = {name: p.requires_grad for name, p in adapted.named_parameters()}
    if scope == "head":
        adapted.requires_grad_(False)
        _output_layer(adapted).requires_grad_(True)
    params = [p for p in adapted.parameters() if p.requires_grad]
    device = params[0].device
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=FINETUNE_WEIGHT_DECAY)
    collate = SessionCollator()
    rng = np.random.default_rng(seed)
    queue: list[int] = []
    adapted.train()
    _synchronize(device)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for _ in range(steps):
            if len(queue) < min(batch_size, len(rows)):
                queue += [int(i) for i in rng.permutation(len(rows))]
            picked, queue = queue[:batch_size], queue[batch_size:]
            batch = collate([[rows[i]] for i in picked])[0]
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = adapted(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, FINETUNE_MAX_GRAD_NORM)
            optimizer.step()
    _synchronize(device)
    seconds = time.perf_counter() - start
    adapted.zero_grad(set_to_none=True)
    for name, p in adapted.named_parameters():
        p.requires_grad_(flags[name])
    return adapted.eval(), seconds


def time_on_one_thread(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), seconds)`` with ``torch.set_num_threads(1)``; the thread count is restored after.

    One intra-op thread makes per-utterance CPU timings of different methods comparable on a shared machine.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(previous)
    return result, seconds
