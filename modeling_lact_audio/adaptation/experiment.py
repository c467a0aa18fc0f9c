"""Run the adaptation protocols on cached splits for a set of heads, score them, keep every number.

``eval/adaptation/run_adaptation.py`` is the command line; :func:`run_adaptation` does the work: for each
protocol, each head it applies to and each split, build the streams, run the protocol, decode (greedy, or
LM beam search), score, and merge the scores into ``results.json`` (a protocol run again replaces only its
own entry), then write ``REPORT.md`` and the plots.
"""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets

from ..recogniser.evaluation import GROUP_COLUMNS, decode_with_lm, load_head, write_json
from ..recogniser.training import greedy_texts
from .gradient_protocols import gradient_baselines
from .protocols import conversation, evolution, k_context, presets, speaker_change
from .reliance import branch_reliance, scaled_lact_rates
from .statistics import score_protocol
from .streams import build_conversations, build_streams, carries_state, speaker_change_pairs

PROTOCOLS = (
    "speaker",
    "noise",
    "domain",
    "conversation",
    "failure",
    "presets",
    "gradient",
    "evolution",
    "reliance",
)
DEFAULT_SPLITS = {
    "speaker": ["test_unseen_speakers", "test_real"],
    "noise": ["test_noise"],
    "domain": ["test_domain"],
    "conversation": ["test_unseen_speakers"],
    "failure": ["test_unseen_speakers"],
    "presets": ["test_domain", "test_noise"],
    "gradient": ["test_unseen_speakers"],
    "evolution": ["test_unseen_speakers", "test_noise", "test_domain"],
    "reliance": ["test_unseen_speakers", "test_real"],
}
# Protocols only a head with fast weights to carry can run; the others give every head its reset baseline.
CARRY_ONLY = ("conversation", "failure", "presets", "evolution", "reliance")


@dataclass
class AdaptationSettings:
    """Options of the protocols (each is a flag of ``eval/adaptation/run_adaptation.py``).

    ``ks``: context lengths of the k-context curve; ``session_length``: utterances per session of a noise
    or domain group; ``max_streams`` / ``max_utterances``: streams per split and utterances per stream (None:
    all); ``evolution_streams``: streams per split traced by ``evolution``; ``turns``: turns per speaker in a
    conversation; ``before`` / ``after``: utterances of speaker A carried, of speaker B transcribed after the
    change; ``adapt``: utterances a preset adapts on; ``labelled``: labelled utterances of a fine-tune;
    ``suta_steps``, ``suta_lr``, ``finetune_steps``, ``finetune_lr``, ``finetune_scopes``: the gradient
    baselines (``finetune_scopes=()`` runs SUTA alone, e.g. to tune ``suta_lr`` on a validation split);
    ``seed``: every random choice; ``rate_scale``: every LaCT mixer's per-token rates multiplied by it during the
    protocol (1.0: the trained rates; ``reliance.scaled_lact_rates``: under Muon any factor > 0 cancels).
    """

    ks: tuple = (0, 1, 2, 5, 10)
    session_length: int = 11
    max_streams: int | None = None
    max_utterances: int | None = None
    evolution_streams: int = 6
    turns: int = 5
    before: int = 5
    after: int = 5
    adapt: int = 10
    labelled: int = 5
    suta_steps: int = 10
    suta_lr: float = 2e-4
    finetune_steps: int = 50
    finetune_lr: float = 1e-4
    finetune_scopes: tuple = ("head", "full")
    seed: int = 0
    rate_scale: float = 1.0


def load_systems(heads: dict[str, str], lm_folder: str | None = None) -> dict[str, dict]:
    """Each head folder (``save_recogniser``) as ``{"name", "head", "tokenizer", "decode", "decoding"}``.

    ``decode(log_probs: list[Tensor [T'_i, V]]) -> list[str]`` is CTC greedy, or with ``lm_folder`` (a
    ``build_language_model`` folder) beam search with the LM at the head folder's tuned settings
    (``<head>/language_model/decoder_config.json``) where it has them, else at the LM folder's.
    """
    from ..processors import LaCTCTCTokenizer
    from ..recogniser.lm import LM_FOLDER, CTCBeamSearchDecoder

    systems = {}
    for name, folder in heads.items():
        if not any((Path(folder) / f).exists() for f in ("head_info.json", "config.json")):
            raise FileNotFoundError(
                f"--head {name}={folder}: neither a trained head (head_info.json, save_recogniser) nor a shipped "
                "recogniser folder (config.json, export_recogniser)"
            )
        tokenizer = LaCTCTCTokenizer.from_pretrained(folder)
        head = load_head(folder)
        decoding = {"method": "greedy"}
        decode = lambda lps, tokenizer=tokenizer: greedy_texts(lps, tokenizer)  # noqa: E731
        if lm_folder is not None:
            tuned = Path(folder) / LM_FOLDER / "decoder_config.json"
            source = tuned if tuned.exists() else Path(lm_folder) / "decoder_config.json"
            config = json.loads(source.read_text())
            settings = {k: config[k] for k in ("beam_size", "lm_weight", "word_score") if k in config}
            decoder = CTCBeamSearchDecoder(tokenizer.get_vocab(), lm_folder, **settings)
            decoding = {"method": "lm", "lm": str(lm_folder), "settings_from": str(source), **decoder.config}
            decode = lambda lps, decoder=decoder: decode_with_lm(lps, decoder)  # noqa: E731
        systems[name] = {"name": name, "head": head, "tokenizer": tokenizer, "decode": decode, "decoding": decoding}
    return systems


def _split_key(split: str) -> tuple[str, ...]:
    """How ``presets`` and ``evolution`` group a split: noise condition, domain, or speaker stream."""
    return GROUP_COLUMNS.get(split, ("session_id",))


def run_protocol(
    protocol: str, system: dict, data: datasets.Dataset, split: str, settings: AdaptationSettings, output: Path
) -> dict:
    """One protocol for one head on one split; returns the scored entry (``statistics.score_protocol``) with
    ``wall_seconds`` (runs and scoring) and, for ``evolution``, ``trace``.

    ``system`` is an entry of :func:`load_systems`; ``output`` the results folder (``presets`` writes its
    presets under ``output/presets/<head>/<split>``). The head's LaCT rates are scaled by
    ``settings.rate_scale`` while the protocol runs.
    """
    with scaled_lact_rates(system["head"], settings.rate_scale):
        return _run_protocol(protocol, system, data, split, settings, output)


def _run_protocol(
    protocol: str, system: dict, data: datasets.Dataset, split: str, settings: AdaptationSettings, output: Path
) -> dict:
    head, s, start = system["head"], settings, time.perf_counter()
    common = dict(max_streams=s.max_streams, max_utterances=s.max_utterances, seed=s.seed)
    trace = None
    if protocol == "speaker":
        result = k_context(head, data, build_streams(data, "session_id", **common), s.ks, desc=f"{protocol} {split}")
    elif protocol in ("noise", "domain"):
        key = ("condition", "snr_db") if protocol == "noise" else "domain"
        streams = build_streams(data, key, session_length=s.session_length, **common)
        result = k_context(head, data, streams, s.ks, desc=f"{protocol} {split}")
    elif protocol == "conversation":
        conversations = build_conversations(build_streams(data, "session_id", **common), s.turns, seed=s.seed)
        result = conversation(head, data, conversations)
    elif protocol == "failure":
        pairs = speaker_change_pairs(build_streams(data, "session_id", **common), s.before, seed=s.seed)
        result = speaker_change(head, data, pairs, s.before, s.after)
    elif protocol == "presets":
        streams = build_streams(data, _split_key(split), **common)
        result = presets(head, data, streams, str(output / "presets" / system["name"] / split), s.adapt)
    elif protocol == "gradient":
        result = gradient_baselines(
            head,
            system["tokenizer"],
            data,
            build_streams(data, "session_id", **common),
            labelled=s.labelled,
            suta_steps=s.suta_steps,
            suta_lr=s.suta_lr,
            finetune_steps=s.finetune_steps,
            finetune_lr=s.finetune_lr,
            scopes=tuple(s.finetune_scopes),
            desc=f"gradient {system['name']} {split}",
        )
    elif protocol == "evolution":
        key = _split_key(split)
        session_length = None if key == ("session_id",) else s.session_length
        count = min(s.evolution_streams, s.max_streams or s.evolution_streams)
        streams = build_streams(data, key, session_length, count, s.max_utterances, s.seed)
        trace, result = evolution(head, data, streams, "speaker" if key == ("session_id",) else key)
    elif protocol == "reliance":
        result = branch_reliance(head, data, build_streams(data, "session_id", **common))
    else:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    scored = score_protocol(result, system["decode"])
    scored["wall_seconds"] = time.perf_counter() - start  # the protocol's runs and scoring, all streams
    if trace is not None:
        scored["trace"] = trace
    return scored


def run_adaptation(
    protocols: list[str],
    heads: dict[str, str],
    cache: str,
    output: str,
    splits: list[str] | None = None,
    settings: AdaptationSettings | None = None,
    lm_folder: str | None = None,
    command: str | None = None,
) -> dict:
    """Run ``protocols`` for ``heads`` on the cached splits and write ``output/results.json``, ``REPORT.md`` and plots.

    Args:
        protocols: names from :data:`PROTOCOLS`.
        heads: system name -> head folder (``save_recogniser``). Heads with LaCT fast weights run every
            protocol; the others run the reset baseline of ``speaker`` / ``noise`` / ``domain`` and ``gradient``.
        cache: the folder of cached splits (``cache/<split>`` saved by ``encoder_cache``).
        output: the results folder; a ``results.json`` already there is updated, not replaced: the protocols
            run now replace their own entries, the others are kept.
        splits: the splits every protocol runs on; None: each protocol's :data:`DEFAULT_SPLITS`.
        settings: protocol options (default :class:`AdaptationSettings`).
        lm_folder: LM beam-search decoding (:func:`load_systems`); None: greedy.
        command: the command line, recorded with the results.

    Returns:
        the merged results dict (``protocols[name]["heads"][head][split]``: ``statistics.score_protocol``).
    """
    from .report import plot, render_report

    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocols {unknown}; choose from {PROTOCOLS}")
    if not heads:
        raise ValueError("no head given: pass at least one --head NAME=FOLDER")
    settings = settings or AdaptationSettings()
    output = Path(output)
    results_file = output / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    results.setdefault("protocols", {})
    results.setdefault("commands", {})
    systems = load_systems(heads, lm_folder)
    loaded, finished = {}, {}
    for protocol in protocols:
        entry = {
            "command": command,
            "splits": splits or DEFAULT_SPLITS[protocol],
            "settings": asdict(settings),
            "heads": {},
            "systems": {},
        }
        for name, system in systems.items():
            carry = carries_state(system["head"])
            entry["systems"][name] = {"folder": heads[name], "carries_state": carry, **system["decoding"]}
            if protocol in CARRY_ONLY and not carry:
                continue
            for split in entry["splits"]:
                if split not in loaded:
                    path = Path(cache) / split
                    if not path.exists():
                        raise FileNotFoundError(
                            f"no cached split {split!r} in {cache} (encode it with run_scripts/cache_encoder_states.py)"
                        )
                    loaded[split] = datasets.load_from_disk(str(path))
                scored = run_protocol(protocol, system, loaded[split], split, settings, output)
                entry["heads"].setdefault(name, {})[split] = scored
        finished[protocol] = entry
        if results_file.exists():  # another run may have finished other protocols meanwhile: keep them
            results = json.loads(results_file.read_text())
            results.setdefault("protocols", {})
            results.setdefault("commands", {})
        results["protocols"].update(finished)
        results["commands"].update({name: command for name in finished})
        results["command"] = command
        write_json(results_file, results)
        (output / "REPORT.md").write_text(render_report(results))
        plot(results, output)
    return results


def merge_results(output: str, sources: list[str]) -> dict:
    """Merge the protocols of other results folders into ``output/results.json`` and re-render its report.

    Each source's ``results.json`` protocols (and their commands) replace the same protocols in ``output``;
    a source's preset folders stay where that run wrote them (the report names them). Returns the merged dict.
    """
    from .report import plot, render_report

    output = Path(output)
    results_file = output / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    results.setdefault("protocols", {})
    results.setdefault("commands", {})
    for source in sources:
        path = Path(source) / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: pass a folder written by run_adaptation.py --output")
        other = json.loads(path.read_text())
        results["protocols"].update(other.get("protocols", {}))
        results["commands"].update(other.get("commands", {}))
    write_json(results_file, results)
    (output / "REPORT.md").write_text(render_report(results))
    plot(results, output)
    return results
