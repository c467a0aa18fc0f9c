"""Validation during training: the shared :class:`~modeling_lact_audio.asr.Transcriber`, scored as
``eval/asr_eval.py`` scores (``normalize_for_scoring`` and the local WER/CER modules)."""

import contextlib

import datasets
import torch

from ..asr import Transcriber, normalize_for_scoring
from ..data import durations
from .data import eval_batches, make_loader, seconds_to_frames


def _eval_loader(rows: datasets.Dataset, collator, batch_size: int, num_workers: int):
    """Batches of similar lengths in a fixed order, and the row indices of each."""
    batches = eval_batches(seconds_to_frames(durations(rows)), batch_size)
    return batches, make_loader(rows, batches, collator, num_workers)


@torch.no_grad()
def evaluate_asr(
    model,
    processor,
    rows: datasets.Dataset,
    collator,
    metrics: tuple,
    batch_size: int,
    device,
    num_workers: int = 0,
    autocast=contextlib.nullcontext,
    max_new_tokens: int | None = None,
) -> dict:
    """WER, CER (normalised text, corpus level), validation loss and a few examples on ``rows``.

    ``model`` (the unwrapped model being trained; its train/eval mode is restored afterwards) decodes
    through a :class:`~modeling_lact_audio.asr.Transcriber` with ``processor``; ``collator`` is the
    training collator, so the loss is the training loss; ``metrics`` are ``(wer, cer)`` of
    :func:`modeling_lact_audio.asr.load_metrics`.
    """
    was_training = model.training
    transcriber = Transcriber(model, processor, device, max_new_tokens)
    wer, cer = metrics
    predictions, references, loss = [], [], 0.0
    batches, loader = _eval_loader(rows, collator, batch_size, num_workers)
    for indices, batch in zip(batches, loader):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            loss += float(model(**batch).loss) * len(indices)
            predictions += [normalize_for_scoring(h) for h in transcriber.transcribe_batch(batch)]
        references += [normalize_for_scoring(t) for t in rows.select(indices)["text"]]
    model.train(was_training)
    return {
        "wer": wer.compute(predictions=predictions, references=references),
        "cer": cer.compute(predictions=predictions, references=references),
        "loss": loss / len(rows),
        "examples": list(zip(references[:3], predictions[:3])),
    }


@torch.no_grad()
def evaluate_lm(
    model,
    rows: datasets.Dataset,
    collator,
    batch_size: int,
    device,
    num_workers: int = 0,
    autocast=contextlib.nullcontext,
) -> dict:
    """Mean next-code cross-entropy (per code, all codebooks) on ``rows``; ``perplexity = exp(loss)``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in _eval_loader(rows, collator, batch_size, num_workers)[1]:
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            loss = float(model(**batch).loss)
        n = int((batch["labels"][:, 1:] >= 0).sum())
        total, count = total + loss * n, count + n
    model.train(was_training)
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": float(torch.tensor(loss).exp())}
