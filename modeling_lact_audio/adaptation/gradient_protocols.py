"""The gradient baselines on the utterances the carried state is measured on, timed on one CPU thread.

Per stream, the first ``labelled`` utterances are what a supervised fine-tune may read with their labels
(and what a carried LaCT state reads without them); the rest are transcribed by every method:

- ``"reset"``: each utterance from a reset state (the baseline);
- ``"SUTA"``: per utterance, :func:`~modeling_lact_audio.adaptation.gradient_tta.suta_log_probs` (entropy
  minimisation steps, then a reset);
- ``"fine-tune <scope> (k labelled)"``: a copy of the head fine-tuned with CTC on the stream's first k
  labelled utterances (:func:`~modeling_lact_audio.adaptation.gradient_tta.finetune_on_labelled`); its
  seconds are spread over the stream's transcribed utterances as ``context_seconds``;
- ``"carry all"`` (LaCT heads): the state carried from the stream's start, the first k utterances read
  unlabelled (their forwards are transcriptions a deployed stream runs anyway: ``info``, not per utterance).
"""

import datasets
from tqdm.auto import tqdm

from .protocols import CARRY_ALL, ProtocolResult, Transcribed, row_table
from .streams import Stream, UtteranceReader, carries_state, new_cache, run_utterance, utterance_inputs

SUTA = "SUTA"


def finetune_condition(scope: str, labelled: int) -> str:
    """The condition name of a supervised fine-tune (``"fine-tune head (5 labelled)"``)."""
    return f"fine-tune {scope} ({labelled} labelled)"


def gradient_baselines(
    head,
    tokenizer,
    dataset: datasets.Dataset,
    streams: list[Stream],
    labelled: int = 5,
    suta_steps: int = 10,
    suta_lr: float = 2e-4,
    finetune_steps: int = 50,
    finetune_lr: float = 1e-4,
    scopes: tuple[str, ...] = ("head", "full"),
    desc: str = "gradient baselines",
) -> ProtocolResult:
    """Reset, SUTA, supervised fine-tuning and (LaCT heads) the carried state on each stream's later utterances.

    Every forward, SUTA adaptation and fine-tune runs under
    :func:`~modeling_lact_audio.adaptation.gradient_tta.time_on_one_thread`, so the seconds of the methods
    are comparable.

    Args:
        head: a recogniser head in eval mode (LaCT, attention or BiLSTM).
        tokenizer: the head's CTC tokenizer (labels of the fine-tuning utterances only).
        dataset: the cached split; streams: its streams (:func:`~modeling_lact_audio.adaptation.streams.build_streams`).
        labelled: utterances at a stream's start given with labels to the fine-tune; streams of ``labelled``
            utterances or fewer are skipped (``info["skipped"]``).
        suta_steps, suta_lr: SUTA's adaptation steps per utterance and AdamW learning rate (tune it on a
            validation split: ``run_adaptation.py gradient --splits validation --suta-lr ...``).
        finetune_steps, finetune_lr: the fine-tune's optimiser steps and learning rate.
        scopes: fine-tune scopes (``"head"``: the CTC output layer; ``"full"``: the whole head); () for none.
        desc: the progress bar's label.

    Returns:
        a :class:`ProtocolResult` with baseline ``"reset"``; ``rows[uid]["position"]`` is the utterance's
        place in its stream (>= ``labelled``); ``info["finetune_seconds"][scope][stream]`` and
        ``info["carry_prefix_seconds"][stream]`` are per stream.
    """
    from .gradient_tta import finetune_on_labelled, suta_log_probs, time_on_one_thread

    if labelled < 1:
        raise ValueError(f"labelled must be >= 1, got {labelled}")
    carry = carries_state(head)
    reader, table = UtteranceReader(dataset), row_table(dataset)
    device = next(head.parameters()).device
    names = ["reset", SUTA, *(finetune_condition(s, labelled) for s in scopes), *([CARRY_ALL] if carry else [])]
    result = ProtocolResult(
        conditions={n: {} for n in names},
        baseline="reset",
        comparisons=[(SUTA, CARRY_ALL)] if carry else [],
        info={
            "labelled": labelled,
            "suta_steps": suta_steps,
            "suta_lr": suta_lr,
            "finetune_steps": finetune_steps,
            "finetune_lr": finetune_lr,
            "finetune_seconds": {s: {} for s in scopes},
            "carry_prefix_seconds": {},
            "skipped": [],
        },
    )
    for stream in tqdm(streams, desc=desc):
        if len(stream.rows) <= labelled:
            result.info["skipped"].append(stream.name)
            continue
        later = stream.rows[labelled:]
        for n, row in enumerate(later, start=labelled):
            result.rows[table[row]["uid"]] = {**table[row], "stream": stream.name, "position": n}
        for row in later:
            uid, states = table[row]["uid"], reader[row]
            (log_probs, _, s), _ = time_on_one_thread(run_utterance, head, states, None)
            result.conditions["reset"][uid] = Transcribed(log_probs, s)
            x, mask = utterance_inputs(states, device)
            (log_probs, s), _ = time_on_one_thread(suta_log_probs, head, x, mask, steps=suta_steps, lr=suta_lr)
            result.conditions[SUTA][uid] = Transcribed(log_probs.cpu(), s)
        for scope in scopes:
            rows = [
                {"states": reader[r], "labels": tokenizer(table[r]["text"])["input_ids"]}
                for r in stream.rows[:labelled]
            ]
            (adapted, spent), _ = time_on_one_thread(
                finetune_on_labelled, head, rows, scope=scope, steps=finetune_steps, lr=finetune_lr
            )
            result.info["finetune_seconds"][scope][stream.name] = spent
            for row in later:
                (log_probs, _, s), _ = time_on_one_thread(run_utterance, adapted, reader[row], None)
                result.conditions[finetune_condition(scope, labelled)][table[row]["uid"]] = Transcribed(
                    log_probs, s, spent / len(later)
                )
        if carry:
            cache, prefix = new_cache(head), 0.0
            for n, row in enumerate(stream.rows):
                (log_probs, cache, s), _ = time_on_one_thread(run_utterance, head, reader[row], cache)
                if n < labelled:
                    prefix += s
                else:
                    result.conditions[CARRY_ALL][table[row]["uid"]] = Transcribed(log_probs, s)
            result.info["carry_prefix_seconds"][stream.name] = prefix
    return result
