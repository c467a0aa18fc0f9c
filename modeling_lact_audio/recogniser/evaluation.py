"""Evaluate recogniser heads and Whisper zero-shot on the same utterances: WER/CER, intervals, paired tests."""

import json
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from ..asr import load_whisper, normalize_for_scoring, per_utterance_errors, rate_interval
from ..configuration_lact_audio import LaCTAudioConfig
from ..modeling_lact_audio import count_parameters
from .heads import BiLSTMCTCHead, CachedStatesCTC
from .lm import CTCBeamSearchDecoder
from .training import cached_logits, greedy_texts

# Per-utterance conditions a split's WER is also broken down by (columns of the cached split).
GROUP_COLUMNS = {"test_noise": ("condition", "snr_db"), "test_domain": ("domain",)}


def kept_systems(previous: dict, names: dict[str, str], uids: dict[str, list[str]]) -> dict:
    """Systems of an earlier evaluation's ``results.json`` dict, checked to be on the utterances ``uids``
    (``{split: [uid, ...]}``) and marked ``kept_from`` with the command that scored them (a system the earlier
    evaluation had kept keeps its own ``kept_from``).

    ``names`` maps each kept system's name there to its name here (e.g. ``{"lact": "lact (360 steps)"}``).

    Raises:
        ValueError: a name the earlier evaluation lacks, or a split it did not score on the same utterances.
    """
    missing = [n for n in names if n not in previous["systems"]]
    if missing:
        raise ValueError(f"the earlier evaluation has no system {missing}; it has {sorted(previous['systems'])}")
    for split, ids in uids.items():
        if previous.get("uids", {}).get(split) != ids:
            raise ValueError(
                f"{split}: the earlier evaluation did not score the same utterances (its results.json has "
                f"{'other' if split in previous.get('uids', {}) else 'no'} uids for it); evaluate those systems again"
            )
    # A system the earlier evaluation had itself kept still names the evaluation that scored it.
    return {
        new: {
            **previous["systems"][old],
            "kept_from": previous["systems"][old].get("kept_from", previous.get("command")),
        }
        for old, new in names.items()
    }


def kept_from_arguments(keep_from: str | None, keep: list[str]) -> dict | None:
    """The ``kept`` argument of the evaluations from the command line's ``--keep-from FILE --keep SYSTEM[=NAME] ...``
    (None when neither is given).

    Raises:
        SystemExit: one of the two without the other.
    """
    if bool(keep) != bool(keep_from):
        raise SystemExit("--keep and --keep-from go together: the systems to keep and the results.json they are in")
    if not keep_from:
        return None
    names = dict((k.split("=", 1) + [k])[:2] for k in keep)
    return {"results": json.loads(Path(keep_from).read_text()), "names": names}


def wer_cer(references: list[str], predictions: list[str]) -> dict:
    """Corpus-level ``{"wer", "cer"}`` of texts normalised as the tokenizer normalises them."""
    import jiwer

    refs = [normalize_for_scoring(t) for t in references]
    hyps = [normalize_for_scoring(t) for t in predictions]
    return {"wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, hyps)}


def score_split(references: list[str], predictions: list[str]) -> dict:
    """Corpus-level WER/CER with 95% intervals and the per-utterance counts behind them."""
    counts = per_utterance_errors(references, predictions)
    wer = counts["word_errors"].sum() / max(counts["words"].sum(), 1)
    cer = counts["char_errors"].sum() / max(counts["chars"].sum(), 1)
    return {
        "wer": float(wer),
        "wer_ci": rate_interval(counts["word_errors"], counts["words"]),
        "cer": float(cer),
        "cer_ci": rate_interval(counts["char_errors"], counts["chars"]),
        "utterances": len(references),
        "counts": {k: v.tolist() for k, v in counts.items()},
    }


def paired_bootstrap_pvalue(errors_a, errors_b, totals, samples: int = 10000, seed: int = 0) -> float:
    """Two-sided paired bootstrap p-value that systems a and b have the same corpus-level error rate.

    ``errors_a, errors_b, totals``: ``[N]`` edit counts of each system and reference lengths on the
    same N utterances. The utterances are resampled with replacement; the p-value is twice the share
    of resamples on the less frequent side of zero difference (Koehn 2004), at most 1.
    """
    errors_a, errors_b, totals = (np.asarray(x, dtype=np.float64) for x in (errors_a, errors_b, totals))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(totals), size=(samples, len(totals)))
    diff = (errors_a[picks].sum(1) - errors_b[picks].sum(1)) / np.maximum(totals[picks].sum(1), 1)
    return float(min(1.0, 2 * min((diff <= 0).mean(), (diff >= 0).mean())))


def load_head(folder: str):
    """A head saved by :func:`modeling_lact_audio.recogniser.training.save_recogniser`, or the head inside a
    shipped recogniser folder (``export_recogniser``: a ``LaCTAudioForCTC`` on the Whisper encoder, read with
    ``heads.head_from_recogniser``), in eval mode.

    Raises:
        FileNotFoundError: ``folder`` holds neither a ``head_info.json`` nor a recogniser's ``config.json``.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "head_info.json").exists():
        if not (folder / "config.json").exists():
            raise FileNotFoundError(
                f"{folder}: neither a trained head (head_info.json, save_recogniser) nor a recogniser folder "
                "(config.json, export_recogniser)"
            )
        from ..modeling_lact_audio import LaCTAudioForCTC
        from .heads import head_from_recogniser

        return head_from_recogniser(LaCTAudioForCTC.from_pretrained(folder))
    info = json.loads((folder / "head_info.json").read_text())
    if info["kind"] == "bilstm":
        head = BiLSTMCTCHead(info["input_size"], info["hidden_size"], info["vocab_size"], blank=info["blank"])
    else:
        head = CachedStatesCTC(LaCTAudioConfig.from_pretrained(folder), info["d_model"])
    head.load_state_dict(load_file(folder / "head.safetensors"))
    return head.eval()


def tune_lm(
    log_probs,
    references,
    vocab,
    lm_folder,
    score_fn,
    lm_weights=(0.0, 0.25, 0.5, 1.0, 1.5, 2.0),
    word_scores=(-1.0, 0.0, 1.0, 2.0),
    beam_size: int = 50,
    max_extensions: int = 4,
) -> dict:
    """Grid search of the LM weight and word bonus on *validation* log-probabilities; returns the best by WER.

    ``score_fn(references, predictions) -> {"wer", "cer"}``. While the best point lies on an edge of the grid
    that can move (the largest LM weight, either end of the word bonuses), the grid is extended past that
    edge by its last spacing, at most ``max_extensions`` times, so the optimum is not cut off by the grid.
    Returns ``{"lm_weight", "word_score", "beam_size", "wer", "cer", "grid": [...], "edge": [...]}`` (``edge``:
    the edges the best point still lies on after the last extension; empty when it is inside the grid).
    """
    lengths = torch.tensor([lp.shape[0] for lp in log_probs])
    padded = torch.nn.utils.rnn.pad_sequence(log_probs, batch_first=True)
    weights, bonuses, scored = sorted(lm_weights), sorted(word_scores), {}

    def search():
        todo = [(w, s) for w in weights for s in bonuses if (w, s) not in scored]
        for w, s in tqdm(todo, desc="LM grid"):
            decoder = CTCBeamSearchDecoder(vocab, lm_folder, beam_size=beam_size, lm_weight=w, word_score=s)
            scored[w, s] = {"lm_weight": w, "word_score": s, **score_fn(references, decoder(padded, lengths))}
        best = min(scored.values(), key=lambda g: (g["wer"], g["cer"]))
        edge = []
        if len(weights) > 1 and best["lm_weight"] == weights[-1]:
            edge.append("largest lm_weight")
        if len(bonuses) > 1 and best["word_score"] == bonuses[0]:
            edge.append("smallest word_score")
        if len(bonuses) > 1 and best["word_score"] == bonuses[-1]:
            edge.append("largest word_score")
        return best, edge

    best, edge = search()
    for _ in range(max_extensions):
        if not edge:
            break
        if "largest lm_weight" in edge:
            weights.append(weights[-1] + (weights[-1] - weights[-2]))
        if "smallest word_score" in edge:
            bonuses.insert(0, bonuses[0] - (bonuses[1] - bonuses[0]))
        if "largest word_score" in edge:
            bonuses.append(bonuses[-1] + (bonuses[-1] - bonuses[-2]))
        best, edge = search()
    return {**best, "beam_size": beam_size, "grid": list(scored.values()), "edge": edge}


def decode_with_lm(log_probs, decoder: CTCBeamSearchDecoder) -> list[str]:
    """Beam-search transcripts of per-utterance log-probabilities ``[T_i, V]``."""
    lengths = torch.tensor([lp.shape[0] for lp in log_probs])
    return decoder(torch.nn.utils.rnn.pad_sequence(log_probs, batch_first=True), lengths)


def head_predictions(head, split: datasets.Dataset, tokenizer, decoder=None) -> dict:
    """Greedy (and, with ``decoder``, LM beam-search) transcripts of a cached split, with the head's time."""
    start = time.perf_counter()
    log_probs = cached_logits(head, split)
    seconds = time.perf_counter() - start
    out = {"greedy": greedy_texts(log_probs, tokenizer), "head_seconds": seconds}
    if decoder is not None:
        out["lm"] = decode_with_lm(log_probs, decoder)
    return out


@torch.inference_mode()
def whisper_predictions(model, processor, audio: list[np.ndarray], num_beams: int, batch_size: int = 8) -> dict:
    """Whisper zero-shot transcripts with its own decoder (greedy: ``num_beams=1``) and the seconds taken.

    ``model``, ``processor``: a ``WhisperForConditionalGeneration`` (eval mode) and its ``WhisperProcessor``.
    """
    from transformers import GenerationConfig

    config = GenerationConfig.from_model_config(model.config)
    config.update(**model.generation_config.to_dict())
    config.num_beams, config.max_new_tokens, config.max_length = num_beams, 200, None
    texts, start = [], time.perf_counter()
    for i in tqdm(range(0, len(audio), batch_size), desc=f"whisper beam={num_beams}"):
        features = processor.feature_extractor(audio[i : i + batch_size], sampling_rate=16000, return_tensors="pt")
        ids = model.generate(features.input_features, generation_config=config)
        texts += processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
    return {"texts": texts, "seconds": time.perf_counter() - start}


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))


def evaluate_recognisers(
    heads: dict[str, str],
    cache: str,
    corpus: str,
    splits: list[str],
    rows: int,
    output: str,
    lm_folder: str | None = None,
    whisper_folder: str | None = None,
    whisper_beams: tuple = (1,),
    reference: str | None = None,
    score_fn=None,
    command: str | None = None,
    encoder_folder: str | None = None,
    validation_rows: int = 300,
    kept: dict | None = None,
) -> dict:
    """Every head and Whisper zero-shot on the same ``rows`` utterances of each split; writes ``output``.

    Args:
        heads: system name -> head folder (``save_recogniser``); each is scored greedy and, with
            ``lm_folder``, with LM beam search whose weights are tuned on the cached validation split.
        cache: the encoder-state cache folder (``encoder_cache.cache_split``): ``splits`` with ``rows``
            rows each and ``validation`` with ``validation_rows`` (the rows the heads were tuned on).
            A split missing there is encoded first when ``encoder_folder`` is given; else it is an error.
        encoder_folder: the transformers Whisper folder whose encoder built (or builds) the cache.
        corpus: the corpus the cache came from (Whisper zero-shot reads its audio).
        whisper_folder, whisper_beams: Whisper zero-shot systems (``num_beams`` each); None: none.
        reference: the system the paired p-values compare every other system with.
        score_fn: normaliser-aware ``(references, predictions) -> {"wer", "cer"}`` for LM tuning.
        kept: systems of an earlier evaluation to keep in this one (``{"results": results.json's dict,
            "names": {name there: name here}}``), e.g. baselines whose heads were trained at another budget; they are
            copied with ``kept_from`` (that evaluation's command) and must have been scored on the same
            utterances (the earlier file's ``uids`` equal this one's, split by split).

    Returns the results dict also written to ``output/results.json`` (with ``REPORT.md`` and a plot).
    """
    from ..data import SAMPLING_RATE, load_split, read_audio
    from ..processors import LaCTCTCTokenizer
    from .encoder_cache import cache_split, encode_waveforms, load_whisper_encoder
    from .report import plot, render_report
    from .training import add_labels

    cached, encoders = {}, []

    def load_cached(split):
        if split not in cached:
            max_rows = validation_rows if split == "validation" else rows
            if encoder_folder is not None:
                if not encoders:  # loaded once, for the first split that goes through cache_split
                    encoders.extend(load_whisper_encoder(encoder_folder))
                cached[split] = cache_split(
                    corpus, split, cache, *encoders, max_rows, encoder_id=Path(encoder_folder).name
                )
            elif (Path(cache) / split).exists():
                cached[split] = datasets.load_from_disk(str(Path(cache) / split))
            else:
                raise FileNotFoundError(
                    f"no encoder-state cache of {split!r} in {cache}: pass the Whisper folder it is built with "
                    "(--whisper in eval/recogniser_eval.py) so it is encoded first"
                )
        return cached[split]

    output = Path(output)
    results = {
        "splits": splits,
        "rows_per_split": rows,
        "systems": {},
        "reference_system": reference,
        "command": command,
    }
    encoder_rtf = None
    if whisper_folder is not None:  # the heads' real-time factor includes the encoder they read
        encoder, feature_extractor = load_whisper_encoder(whisper_folder)
        sample = [read_audio(c) for c in load_split(corpus, splits[0], max_rows=16, shuffle_seed=0)["audio"]]
        start = time.perf_counter()
        for i in range(0, len(sample), 8):
            encode_waveforms(encoder, feature_extractor, sample[i : i + 8])
        encoder_rtf = (time.perf_counter() - start) / (sum(len(a) for a in sample) / SAMPLING_RATE)
        results["encoder_rtf"] = encoder_rtf
    references = {s: [normalize_for_scoring(t) for t in load_cached(s)["text"]] for s in splits}
    results["groups"] = {s: {c: [str(v) for v in load_cached(s)[c]] for c in GROUP_COLUMNS.get(s, ())} for s in splits}
    results["uids"] = {s: [str(u) for u in load_cached(s)["uid"]] for s in splits}
    if kept:
        results["systems"].update(kept_systems(kept["results"], kept["names"], results["uids"]))
    for name, folder in heads.items():
        tokenizer = LaCTCTCTokenizer.from_pretrained(folder)
        head = load_head(folder)
        summary_file = Path(folder).parent / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        decoder, tuned = None, None
        if lm_folder is not None:
            validation = add_labels(load_cached("validation"), tokenizer)
            tuned = tune_lm(
                cached_logits(head, validation), list(validation["text"]), tokenizer.get_vocab(), lm_folder, score_fn
            )
            decoder = CTCBeamSearchDecoder(
                tokenizer.get_vocab(),
                lm_folder,
                beam_size=tuned["beam_size"],
                lm_weight=tuned["lm_weight"],
                word_score=tuned["word_score"],
            )
        systems = {name: {"splits": {}}, **({f"{name} + LM": {"splits": {}, "lm": tuned}} if decoder else {})}
        audio_seconds = head_seconds = 0.0
        for split in splits:
            data = add_labels(load_cached(split), tokenizer)
            preds = head_predictions(head, data, tokenizer, decoder)
            head_seconds += preds["head_seconds"]
            audio_seconds += float(np.sum(data["duration"]))
            systems[name]["splits"][split] = score_split(
                references[split], [normalize_for_scoring(t) for t in preds["greedy"]]
            )
            if decoder:
                systems[f"{name} + LM"]["splits"][split] = score_split(
                    references[split], [normalize_for_scoring(t) for t in preds["lm"]]
                )
        for system in systems.values():
            head_rtf = head_seconds / audio_seconds
            system.update(
                parameters=count_parameters(head),
                train_seconds=summary.get("train_seconds"),
                head_rtf=head_rtf,
                rtf=None if encoder_rtf is None else head_rtf + encoder_rtf,
                best=summary.get("best"),
                train_steps=summary.get("args", {}).get("max_steps"),
                train_rows=summary.get("args", {}).get("extra", {}).get("train_rows"),
            )
        results["systems"].update(systems)
    if whisper_folder is not None:
        from transformers import WhisperProcessor

        whisper, whisper_processor = (
            load_whisper(whisper_folder).eval(),
            WhisperProcessor.from_pretrained(whisper_folder),
        )
        for beams in whisper_beams:
            name = f"whisper tiny.en zero-shot ({'greedy' if beams == 1 else f'beam {beams}'})"
            # Whisper's transcripts do not depend on the heads: kept beside the results and reused when the
            # same utterances are evaluated again (the slowest part of an evaluation).
            saved_file = output / f"whisper_zero_shot_beam{beams}.json"
            saved = json.loads(saved_file.read_text()) if saved_file.exists() else {}
            system, audio_seconds, seconds = {"splits": {}}, 0.0, 0.0
            for split in splits:
                data = load_split(corpus, split, max_rows=rows, shuffle_seed=0)
                uids = list(data["uid"])
                if uids != list(load_cached(split)["uid"]):
                    raise ValueError(f"{split}: the cache holds other utterances than load_split(max_rows={rows})")
                audio = [read_audio(c) for c in data["audio"]]
                if saved.get(split, {}).get("uids") != uids:
                    out = whisper_predictions(whisper, whisper_processor, audio, beams)
                    saved[split] = {"uids": uids, **out}
                    write_json(saved_file, saved)
                seconds += saved[split]["seconds"]
                audio_seconds += sum(len(a) for a in audio) / SAMPLING_RATE
                system["splits"][split] = score_split(
                    references[split], [normalize_for_scoring(t) for t in saved[split]["texts"]]
                )
            system["rtf"] = seconds / audio_seconds
            system["parameters"] = count_parameters(whisper, trainable_only=False)
            results["systems"][name] = system
    if reference is not None:
        base = results["systems"][reference]["splits"]
        for name, system in results["systems"].items():
            for split, entry in system["splits"].items():
                if name != reference:
                    entry["p_vs_reference"] = paired_bootstrap_pvalue(
                        base[split]["counts"]["word_errors"], entry["counts"]["word_errors"], entry["counts"]["words"]
                    )
    write_json(output / "results.json", results)
    (output / "REPORT.md").write_text(render_report(results))
    plot(results, output / "results.png")
    return results
