"""Validation during training: greedy transcripts and WER/CER through the local evaluate modules."""

from pathlib import Path

import evaluate
import torch

from modeling_lact_audio.processors import normalize_text

from .data import durations, eval_batches, rows_to_batch, seconds_to_frames

METRICS_DIR = Path(__file__).resolve().parents[2] / "eval" / "metrics"


def load_metrics() -> tuple:
    """The local WER and CER modules (``evaluate.load("wer")`` would need the Hub)."""
    return evaluate.load(str(METRICS_DIR / "wer")), evaluate.load(str(METRICS_DIR / "cer"))


@torch.no_grad()
def greedy_seq2seq(model, input_features, start_id: int, eos_id: int, max_new_tokens: int) -> list[list[int]]:
    """Greedy decoding of a Whisper model trained on characters: ids ``[B, <= max_new_tokens]`` without start/end."""
    encoder_outputs = model.get_encoder()(input_features)
    B = input_features.shape[0]
    tokens = torch.full((B, 1), start_id, dtype=torch.long, device=input_features.device)
    done = torch.zeros(B, dtype=torch.bool, device=input_features.device)
    past, out = None, [[] for _ in range(B)]
    for _ in range(max_new_tokens):
        step = model(
            encoder_outputs=encoder_outputs, decoder_input_ids=tokens[:, -1:], past_key_values=past, use_cache=True
        )
        past = step.past_key_values
        next_ids = step.logits[:, -1].argmax(-1)
        for b in range(B):
            if not done[b] and next_ids[b] != eos_id:
                out[b].append(int(next_ids[b]))
        done |= next_ids == eos_id
        if bool(done.all()):
            break
        tokens = torch.cat([tokens, next_ids[:, None]], dim=1)
    return out


@torch.no_grad()
def transcribe_batch(kind: str, model, batch: dict, tokenizer, extras: dict) -> list[str]:
    """Transcripts of one collated batch. ``kind``: ``ctc``, ``whisper`` (characters) or ``whisper_pretrained``."""
    if kind == "ctc":
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        ids = model(**inputs).logits.argmax(-1)
        return tokenizer.batch_decode(ids)
    if kind == "whisper":
        ids = greedy_seq2seq(
            model, batch["input_features"], extras["start_id"], extras["eos_id"], extras["max_new_tokens"]
        )
        return [tokenizer.decode(x, group_tokens=False) for x in ids]
    ids = model.generate(batch["input_features"], max_new_tokens=extras["max_new_tokens"])
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


@torch.no_grad()
def evaluate_asr(kind, model, rows, collator, tokenizer, extras, batch_size, device, autocast, metrics) -> dict:
    """WER, CER (normalised text, corpus level), validation loss and a few examples on ``rows``."""
    wer, cer = metrics
    was_training = model.training
    model.eval()
    predictions, references, losses = [], [], []
    for indices in eval_batches(seconds_to_frames(durations(rows)), batch_size):
        batch, texts = rows_to_batch(rows, indices, collator)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            losses.append(float(model(**batch).loss) * len(indices))
            hyps = transcribe_batch(kind, model, batch, tokenizer, extras)
        predictions += [normalize_text(h) for h in hyps]
        references += [normalize_text(t) for t in texts]
    model.train(was_training)
    return {
        "wer": wer.compute(predictions=predictions, references=references),
        "cer": cer.compute(predictions=predictions, references=references),
        "loss": sum(losses) / len(rows),
        "examples": list(zip(references[:3], predictions[:3])),
    }


@torch.no_grad()
def evaluate_lm(model, rows, collator, batch_size, device, autocast) -> dict:
    """Mean next-code cross-entropy (per code, all codebooks) on ``rows``; ``perplexity = exp(loss)``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for indices in eval_batches(seconds_to_frames(durations(rows)), batch_size):
        batch, _ = rows_to_batch(rows, indices, collator)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast():
            loss = float(model(**batch).loss)
        n = int((batch["labels"][:, 1:] >= 0).sum())
        total, count = total + loss * n, count + n
    model.train(was_training)
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": float(torch.tensor(loss).exp())}
