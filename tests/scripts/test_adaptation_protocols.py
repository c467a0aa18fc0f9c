"""Adaptation protocols on a tiny random head and a fake cached split: each condition equals the runs it stands for."""

import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from modeling_lact_audio.adaptation.gradient_protocols import SUTA, finetune_condition, gradient_baselines
from modeling_lact_audio.adaptation.protocols import (
    CARRY_ALL,
    ProtocolResult,
    Transcribed,
    conversation,
    evolution,
    k_context,
    presets,
    speaker_change,
)
from modeling_lact_audio.adaptation.report import bars_section, evaluate_bars
from modeling_lact_audio.adaptation.statistics import relative_change_interval, score_protocol
from modeling_lact_audio.adaptation.streams import (
    build_conversations,
    build_streams,
    new_cache,
    run_utterance,
    speaker_change_pairs,
)
from modeling_lact_audio.processors import LaCTCTCTokenizer
from modeling_lact_audio.recogniser.evaluation import paired_bootstrap_pvalue
from modeling_lact_audio.recogniser.heads import build_recogniser
from modeling_lact_audio.recogniser.training import cached_logits, save_recogniser
from tests.recogniser_heads import tiny_recogniser_config
from tests.script_utils import load_script

ROOT = Path(__file__).resolve().parents[2]
TEXTS = ["hello world", "a cat sat", "the dog ran", "one two three", "bye now", "good day"]
D_MODEL = 16


@pytest.fixture(scope="module")
def tokenizer():
    return LaCTCTCTokenizer.from_texts(TEXTS)


def _head(kind: str, tokenizer):
    torch.manual_seed(0)
    config = tiny_recogniser_config(len(tokenizer), hidden_dropout=0.0, final_dropout=0.0)
    head = build_recogniser(kind, config, d_model=D_MODEL).eval()
    # A random init moves the fast weights too little to tell a carried state from a reset one: scale the
    # projection so that the carried state changes the output visibly.
    if hasattr(head, "projection"):
        with torch.no_grad():
            head.projection.weight.mul_(4)
    return head


@pytest.fixture(scope="module")
def lact(tokenizer):
    return _head("lact", tokenizer)


@pytest.fixture(scope="module")
def bilstm(tokenizer):
    return _head("bilstm", tokenizer)


@pytest.fixture(scope="module")
def split():
    """4 speakers x 6 utterances, rows shuffled; two noise conditions and two domains."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(4):
        for i in range(6):
            rows.append(
                {
                    "uid": f"test-{s}{i}",
                    "text": TEXTS[(s + i) % len(TEXTS)],
                    "speaker": f"spk{s}",
                    "condition": ["white", "pink"][(s + i) % 2],
                    "snr_db": 5.0,
                    "domain": ["news", "poetry"][s % 2],
                    "session_id": f"test/spk{s}",
                    "utterance_index": i,
                    "duration": 1.0,
                    "states": rng.standard_normal((int(rng.integers(9, 30)), D_MODEL)).astype(np.float16),
                }
            )
    rows = [rows[i] for i in rng.permutation(len(rows))]
    features = datasets.Features(
        {
            **{c: datasets.Value("string") for c in ("uid", "text", "speaker", "condition", "domain", "session_id")},
            "snr_db": datasets.Value("float32"),
            "utterance_index": datasets.Value("int32"),
            "duration": datasets.Value("float64"),
            "states": datasets.Array2D(shape=(None, D_MODEL), dtype="float16"),
        }
    )
    return datasets.Dataset.from_list(rows, features=features)


def _index(split):
    return {u: i for i, u in enumerate(split["uid"])}


def _states(split, i):
    return np.asarray(split.with_format("numpy")[i]["states"])


def _carry_by_hand(head, split, rows):
    """Log-probs of ``rows`` transcribed in order with one carried cache."""
    cache, out = new_cache(head), []
    for i in rows:
        log_probs, cache, _ = run_utterance(head, _states(split, i), cache)
        out.append(log_probs)
    return out


def test_streams_are_ordered_groups_cut_into_sessions(split):
    streams = build_streams(split)
    assert [s.name for s in streams] == [f"test/spk{s}" for s in range(4)]
    for s in streams:
        assert [split[i]["utterance_index"] for i in s.rows] == list(range(6))
    noise = build_streams(split, ("condition", "snr_db"), session_length=5)
    assert sorted({s.name.split("#")[0] for s in noise}) == ["pink/5.0", "white/5.0"]
    assert sorted(len(s.rows) for s in noise) == [2, 2, 5, 5, 5, 5]
    for s in noise:
        uids = [split[i]["uid"] for i in s.rows]
        assert uids == sorted(uids) and len({split[i]["condition"] for i in s.rows}) == 1
    few = build_streams(split, max_streams=2, max_utterances=3)
    assert len(few) == 2 and all(len(s.rows) == 3 for s in few)
    with pytest.raises(ValueError, match="no column"):
        build_streams(split, "accent")


def test_k0_equals_the_batched_reset_predictions(lact, split):
    result = k_context(lact, split, build_streams(split), ks=(0, 1, 2))
    with_frames = split.map(lambda b: {"num_frames": [len(s) for s in b["states"]]}, batched=True)
    batched = cached_logits(lact, with_frames, batch_size=8)
    for i, uid in enumerate(split["uid"]):
        torch.testing.assert_close(result.conditions["k=0"][uid].log_probs, batched[i], atol=1e-4, rtol=1e-4)
        assert result.conditions["k=0"][uid].context_seconds == 0.0


def test_k1_equals_two_utterances_by_hand_and_k_counts_predecessors(lact, split):
    streams = build_streams(split)
    result = k_context(lact, split, streams, ks=(0, 1, 2))
    assert {k: len(v) for k, v in result.conditions.items()} == {"k=0": 24, "k=1": 20, "k=2": 16, CARRY_ALL: 24}
    for stream in streams:
        for n in range(1, len(stream.rows)):
            previous, row = stream.rows[n - 1], stream.rows[n]
            by_hand = _carry_by_hand(lact, split, [previous, row])[1]
            done = result.conditions["k=1"][split[row]["uid"]]
            torch.testing.assert_close(done.log_probs, by_hand)
            assert done.context_seconds > 0
        n = 4
        by_hand = _carry_by_hand(lact, split, stream.rows[n - 2 : n + 1])[2]
        torch.testing.assert_close(result.conditions["k=2"][split[stream.rows[n]]["uid"]].log_probs, by_hand)
        # "carry all" shares the k-window's forwards up to n = max(ks), then runs on by itself
        for row, by_hand in zip(stream.rows, _carry_by_hand(lact, split, stream.rows)):
            torch.testing.assert_close(result.conditions[CARRY_ALL][split[row]["uid"]].log_probs, by_hand)
    uid = split[streams[0].rows[1]]["uid"]
    reset = result.conditions["k=0"][uid].log_probs
    assert (result.conditions["k=1"][uid].log_probs - reset).abs().max() > 1e-3  # the carried state matters


def test_carry_all_equals_cached_logits_carried_by_session(lact, split):
    streams = build_streams(split)
    ordered = split.select([i for s in streams for i in s.rows])
    carried = cached_logits(lact, ordered, carry_by="session_id")
    result = k_context(lact, split, streams, ks=(0,))
    for i, uid in enumerate(ordered["uid"]):
        torch.testing.assert_close(result.conditions[CARRY_ALL][uid].log_probs, carried[i])


def test_a_head_without_fast_weights_gets_the_reset_baseline_only(bilstm, split):
    result = k_context(bilstm, split, build_streams(split, max_streams=2))
    assert list(result.conditions) == ["k=0"] and len(result.conditions["k=0"]) == 12
    with pytest.raises(ValueError, match="LaCT fast weights"):
        conversation(bilstm, split, [])


def test_branch_reliance_scales_only_the_lact_branch_and_restores_it(lact, split):
    from modeling_lact_audio.adaptation.reliance import branch_reliance, scaled_lact_branch
    from modeling_lact_audio.mixer_lact_audio import LaCTAudioMixer

    streams = build_streams(split, max_streams=2)
    result = branch_reliance(lact, split, streams, scales=(0.0, 1.0))
    assert result.baseline == "lact branch x1" and set(result.conditions) == {"lact branch x1", "lact branch x0"}
    reset = k_context(lact, split, streams, ks=(0,))
    for uid, done in result.conditions["lact branch x1"].items():
        torch.testing.assert_close(done.log_probs, reset.conditions["k=0"][uid].log_probs)
    # x0 is the model with the LaCT branch's output removed by hand
    mixers = [m for m in lact.modules() if isinstance(m, LaCTAudioMixer)]
    originals = [m._lact for m in mixers]
    for m, lact_fn in zip(mixers, originals):
        m._lact = lambda *a, f=lact_fn, **k: (f(*a, **k)[0] * 0, f(*a, **k)[1])
    try:
        removed = k_context(lact, split, streams, ks=(0,))
    finally:
        for m in mixers:
            del m._lact
    for uid, done in result.conditions["lact branch x0"].items():
        torch.testing.assert_close(done.log_probs, removed.conditions["k=0"][uid].log_probs)
        assert (done.log_probs - reset.conditions["k=0"][uid].log_probs).abs().max() > 1e-4
    assert all(m.lact_output_scale == 1.0 for m in mixers)
    with pytest.raises(RuntimeError), scaled_lact_branch(lact, 0.0):
        raise RuntimeError
    assert all(m.lact_output_scale == 1.0 for m in mixers)
    with pytest.raises(ValueError, match="must include 1.0"):
        branch_reliance(lact, split, streams, scales=(0.0,))


def test_conversations_per_speaker_states_equal_separate_carries(lact, split):
    streams = build_streams(split)
    conversations = build_conversations(streams, turns_per_speaker=3, speakers=(2, 2), seed=1)
    assert len(conversations) == 2
    result = conversation(lact, split, conversations)
    index = _index(split)
    for conv in conversations:
        labels = [label for label, _ in conv.turns]
        assert len(set(labels)) == 2 and len(conv.turns) == 6
        for label in set(labels):
            rows = [row for lab, row in conv.turns if lab == label]
            stream = next(s for s in streams if s.name == label)
            assert rows == stream.rows[:3]  # a speaker's turns come in reading order
            for row, by_hand in zip(rows, _carry_by_hand(lact, split, rows)):
                torch.testing.assert_close(
                    result.conditions["per-speaker states"][split[row]["uid"]].log_probs, by_hand
                )
        shared = _carry_by_hand(lact, split, [row for _, row in conv.turns])
        for (_, row), by_hand in zip(conv.turns, shared):
            torch.testing.assert_close(result.conditions["shared state"][split[row]["uid"]].log_probs, by_hand)
    assert set(result.rows) == {split[row]["uid"] for c in conversations for _, row in c.turns}
    assert all(split[index[u]]["uid"] == u for u in result.rows)


def test_speaker_change_carries_a_onward_and_resets_on_the_change(lact, split):
    streams = build_streams(split)
    pairs = speaker_change_pairs(streams, before=3)
    assert len(pairs) == 4 and all(a.name != b.name for a, b in pairs)
    assert sorted(b.name for _, b in pairs) == sorted(a.name for a, _ in pairs)
    result = speaker_change(lact, split, pairs, before=3, after=2)
    for a, b in pairs:
        onward = _carry_by_hand(lact, split, a.rows[:3] + b.rows[:2])[3:]
        own = _carry_by_hand(lact, split, b.rows[:2])
        for p, row in enumerate(b.rows[:2]):
            uid = split[row]["uid"]
            assert result.rows[uid]["position"] == p + 1
            torch.testing.assert_close(result.conditions["carried from A"][uid].log_probs, onward[p])
            torch.testing.assert_close(result.conditions["reset on speaker change"][uid].log_probs, own[p])


def test_presets_reload_the_adapted_state_for_every_utterance(lact, split, tmp_path):
    streams = build_streams(split, "domain")
    result = presets(lact, split, streams, str(tmp_path), adapt=4)
    for stream in streams:
        folder = Path(result.info["preset_folders"][stream.name])
        assert (folder / "fast_weights.safetensors").exists()
        for row in stream.rows[4:7]:
            by_hand = _carry_by_hand(lact, split, stream.rows[:4] + [row])[-1]
            torch.testing.assert_close(result.conditions["preset"][split[row]["uid"]].log_probs, by_hand)
        first = split[stream.rows[4]]["uid"]
        torch.testing.assert_close(
            result.conditions["carried"][first].log_probs, result.conditions["preset"][first].log_probs
        )
    short = presets(lact, split, build_streams(split, "domain"), str(tmp_path / "short"), adapt=12)
    assert sorted(short.info["skipped"]) == ["news", "poetry"]


def test_evolution_traces_each_stream_and_projects_every_state(lact, split):
    streams = build_streams(split, max_streams=2, max_utterances=4)
    trace, result = evolution(lact, split, streams, label="speaker")
    assert [s["label"] for s in trace["streams"]] == [split[s.rows[0]]["speaker"] for s in streams]
    assert all(len(s["update_norm"]) == 4 for s in trace["streams"])
    assert np.asarray(trace["projection"]["points"]).shape == (1 + 8, 2)
    assert set(result.conditions) == {"reset", "carried"} and len(result.conditions["carried"]) == 8


def test_gradient_baselines_run_on_the_same_later_utterances(lact, bilstm, tokenizer, split):
    streams = build_streams(split, max_streams=2)
    result = gradient_baselines(lact, tokenizer, split, streams, labelled=4, suta_steps=1, finetune_steps=1)
    later = {split[i]["uid"] for s in streams for i in s.rows[4:]}
    expected = {"reset", SUTA, finetune_condition("head", 4), finetune_condition("full", 4), CARRY_ALL}
    assert set(result.conditions) == expected
    for name in expected:
        assert set(result.conditions[name]) == later
    carried = k_context(lact, split, streams, ks=(0,))
    for uid in later:
        torch.testing.assert_close(
            result.conditions[CARRY_ALL][uid].log_probs, carried.conditions[CARRY_ALL][uid].log_probs
        )
        torch.testing.assert_close(result.conditions["reset"][uid].log_probs, carried.conditions["k=0"][uid].log_probs)
        assert result.conditions[finetune_condition("full", 4)][uid].context_seconds > 0
    bilstm = gradient_baselines(bilstm, tokenizer, split, streams, 4, 1, 1, scopes=("head",))
    assert set(bilstm.conditions) == {"reset", SUTA, finetune_condition("head", 4)}


def test_gradient_baselines_pass_the_suta_rate_through(lact, tokenizer, split):
    """``suta_lr`` reaches SUTA's optimiser (the result equals ``suta_log_probs`` at that rate, and a larger
    rate moves the output); ``scopes=()`` runs no fine-tune."""
    from modeling_lact_audio.adaptation.gradient_tta import suta_log_probs
    from modeling_lact_audio.adaptation.streams import UtteranceReader, utterance_inputs

    streams = build_streams(split, max_streams=1)
    fast = gradient_baselines(lact, tokenizer, split, streams, labelled=4, suta_steps=2, suta_lr=0.05, scopes=())
    slow = gradient_baselines(lact, tokenizer, split, streams, labelled=4, suta_steps=2, suta_lr=1e-6, scopes=())
    assert set(fast.conditions) == {"reset", SUTA, CARRY_ALL} and fast.info["suta_lr"] == 0.05
    row = streams[0].rows[4]
    x, mask = utterance_inputs(UtteranceReader(split)[row], "cpu")
    direct, _ = suta_log_probs(lact, x, mask, steps=2, lr=0.05)
    uid = split[row]["uid"]
    torch.testing.assert_close(fast.conditions[SUTA][uid].log_probs, direct)
    assert not torch.allclose(fast.conditions[SUTA][uid].log_probs, slow.conditions[SUTA][uid].log_probs)


def test_relative_change_interval_matches_the_hand_formula():
    rng = np.random.default_rng(3)
    words = rng.integers(3, 15, size=40)
    errors_a = rng.binomial(words, 0.3)
    errors_b = rng.binomial(words, 0.2)
    rel, low, high = relative_change_interval(errors_a, errors_b, words, samples=500, seed=7)
    assert rel == pytest.approx(errors_b.sum() / errors_a.sum() - 1)
    assert low <= rel <= high
    picks = np.random.default_rng(7).integers(0, 40, size=(500, 40))
    by_hand = [(errors_b[p].sum() / words[p].sum()) / (errors_a[p].sum() / words[p].sum()) - 1 for p in picks]
    assert (low, high) == pytest.approx(tuple(np.percentile(by_hand, [2.5, 97.5])))
    assert all(np.isnan(relative_change_interval([0, 0], [1, 2], [3, 3])))
    with pytest.raises(ValueError, match="one length"):
        relative_change_interval([1, 2], [1], [3, 3])


def test_scores_pair_each_condition_with_the_baseline_on_shared_utterances():
    rows = {f"u{i}": {"text": t, "position": i % 3} for i, t in enumerate(["a b c", "d e", "f g h i", "j"] * 5)}
    transcripts = {}  # id of a log-prob tensor -> the transcript the fake decoder reads from it

    def done(right: bool, uids):
        out = {}
        for u in uids:
            log_probs = torch.zeros(1, 2)
            transcripts[id(log_probs)] = rows[u]["text"] if right else "x"
            out[u] = Transcribed(log_probs, 0.01)
        return out

    uids = list(rows)
    result = ProtocolResult(
        rows=rows,
        conditions={"k=0": done(False, uids), "k=1": done(True, uids[5:]), "same": done(False, uids)},
        comparisons=[("same", "k=1")],
    )
    scored = score_protocol(result, lambda lps: [transcripts[id(lp)] for lp in lps])
    assert scored["conditions"]["k=1"]["wer"] == 0.0 and scored["conditions"]["k=0"]["wer"] > 0.5
    paired = scored["conditions"]["k=1"]["vs_baseline"]
    assert paired["utterances"] == 15 and paired["relative_change"] == -1.0
    errors = np.asarray(scored["conditions"]["k=0"]["counts"]["word_errors"])[5:]
    words = np.asarray(scored["conditions"]["k=0"]["counts"]["words"])[5:]
    assert paired["p_value"] == paired_bootstrap_pvalue(errors, np.zeros(15), words)
    same = scored["conditions"]["same"]["vs_baseline"]
    assert same["relative_change"] == 0.0 and same["p_value"] == 1.0
    assert scored["comparisons"][0]["condition"] == "k=1" and scored["comparisons"][0]["utterances"] == 15
    assert [p["position"] for p in scored["positions"]["k=0"]] == [0, 1, 2]


def _saved_heads(heads: dict, tokenizer, split, split_name: str, folder: Path) -> Path:
    """Save ``heads`` (name -> head) as recogniser folders and ``split`` as ``<folder>/cache/<split_name>``;
    returns the cache folder."""
    cache = folder / "cache"
    split.save_to_disk(str(cache / split_name))
    for name, head in heads.items():
        save_recogniser(head, tokenizer, folder / name)
    return cache


def test_the_command_line_writes_every_protocol_and_keeps_them_on_a_rerun(lact, bilstm, tokenizer, split, tmp_path):
    cache = _saved_heads({"lact": lact, "bilstm": bilstm}, tokenizer, split, "tiny", tmp_path)
    script = load_script(ROOT / "eval" / "adaptation" / "run_adaptation.py")
    out = tmp_path / "results"
    common = [
        "--head", f"lact={tmp_path / 'lact'}", "--head", f"bilstm={tmp_path / 'bilstm'}",
        "--cache", str(cache), "--splits", "tiny", "--ks", "0", "1", "2", "--session-length", "5",
        "--turns", "3", "--before", "2", "--after", "2", "--adapt", "3", "--labelled", "3", "--suta-steps", "1",
        "--finetune-steps", "1", "--evolution-streams", "2", "--output", str(out),
    ]  # fmt: skip
    results = script.main(["all", *common])
    assert set(results["protocols"]) == {
        "speaker", "noise", "domain", "conversation", "failure", "presets", "gradient", "evolution", "reliance",
    }  # fmt: skip
    saved = json.loads((out / "results.json").read_text())
    speaker = saved["protocols"]["speaker"]["heads"]
    assert set(speaker) == {"lact", "bilstm"} and list(speaker["bilstm"]["tiny"]["conditions"]) == ["k=0"]
    assert "bilstm" not in saved["protocols"]["conversation"]["heads"]
    k1 = speaker["lact"]["tiny"]["conditions"]["k=1"]
    assert len(k1["uids"]) == len(k1["counts"]["word_errors"]) == 20
    assert "run_adaptation.py all" in saved["commands"]["speaker"]
    report = (out / "REPORT.md").read_text()
    assert "The seed's success threshold" in report and "### lact on tiny" in report
    assert len(list(out.glob("*.png"))) >= 1 and (out / "presets" / "lact" / "tiny").is_dir()
    assert (out / "k_context_speaker_lact_tiny.png").stat().st_size > 0
    assert all(saved["protocols"][p]["heads"]["lact"]["tiny"]["wall_seconds"] > 0 for p in saved["protocols"])
    before = saved["protocols"]["conversation"]
    again = script.main(["failure", *common, "--after", "1"])
    assert again["protocols"]["conversation"] == before
    assert again["protocols"]["failure"]["settings"]["after"] == 1
    assert "run_adaptation.py failure" in again["commands"]["failure"]
    assert set(json.loads((out / "results.json").read_text())["protocols"]) == set(results["protocols"])
    elsewhere = tmp_path / "elsewhere"
    script.main(["failure", *common[:-1], str(elsewhere), "--after", "2"])
    merged = script.main(["report", "--output", str(out), "--merge-from", str(elsewhere)])
    assert merged["protocols"]["failure"]["settings"]["after"] == 2
    assert merged["protocols"]["conversation"] == before and (out / "REPORT.md").stat().st_size > 0


@pytest.mark.skipif(
    shutil.which("tlm") is None and not Path("/usr/lib/irstlm/bin/tlm").exists(),
    reason="Debian's irstlm is not installed (make install installs it)",
)
def test_lm_decoding_uses_the_head_folders_tuned_settings(lact, tokenizer, tmp_path):
    from modeling_lact_audio.adaptation.experiment import load_systems
    from modeling_lact_audio.recogniser.lm import build_language_model

    lm = build_language_model(TEXTS, tokenizer.get_vocab(), str(tmp_path / "lm"))
    save_recogniser(lact, tokenizer, tmp_path / "lact")
    system = load_systems({"lact": str(tmp_path / "lact")}, str(lm))["lact"]
    assert system["decoding"]["method"] == "lm"
    assert system["decoding"]["settings_from"] == str(lm / "decoder_config.json")
    tuned = tmp_path / "lact" / "language_model"
    tuned.mkdir()
    (tuned / "decoder_config.json").write_text(json.dumps({"lm_weight": 0.5, "word_score": 1.0, "beam_size": 8}))
    system = load_systems({"lact": str(tmp_path / "lact")}, str(lm))["lact"]
    assert (system["decoding"]["lm_weight"], system["decoding"]["beam_size"]) == (0.5, 8)
    texts = system["decode"]([torch.log_softmax(torch.randn(12, len(tokenizer)), -1) for _ in range(2)])
    words = {w for t in TEXTS for w in t.split()}
    assert len(texts) == 2 and all(w in words for t in texts for w in t.split())
    assert load_systems({"lact": str(tmp_path / "lact")})["lact"]["decoding"] == {"method": "greedy"}
    with pytest.raises(FileNotFoundError, match="head_info.json"):
        load_systems({"nothing": str(tmp_path)})


def test_bars_are_judged_from_the_measured_numbers():
    def scored(rel, ci, extra, names):
        paired = {
            "relative_change": rel, "relative_change_ci": ci, "p_value": 0.01, "utterances": 50,
            "extra_seconds_per_utterance": extra, "reference_wer": 0.2, "wer": 0.2 * (1 + rel),
        }  # fmt: skip
        return {"conditions": {n: {"vs_baseline": dict(paired)} for n in names}}

    speaker = scored(-0.2, [-0.3, -0.1], 0.01, ["k=5", CARRY_ALL])
    gradient = scored(-0.2, [-0.3, -0.1], 0.01, [CARRY_ALL])
    gradient["conditions"][SUTA] = scored(-0.1, [-0.2, 0.0], 2.0, ["x"])["conditions"]["x"]
    systems = {"lact": {"carries_state": True}}
    results = {
        "protocols": {
            "speaker": {"heads": {"lact": {"test_unseen_speakers": speaker}}, "systems": systems},
            "gradient": {"heads": {"lact": {"test_unseen_speakers": gradient}}, "systems": systems},
        }
    }
    assert [r["met"] for r in evaluate_bars(results)] == [True, True, True, True]
    assert "neither changes WER" not in evaluate_bars(results)[3]["measured"]
    gradient["conditions"][CARRY_ALL]["vs_baseline"].update(relative_change=0.0, relative_change_ci=[-0.05, 0.04])
    gradient["conditions"][SUTA]["vs_baseline"].update(relative_change=0.0, relative_change_ci=[0.0, 0.0])
    assert "neither changes WER" in evaluate_bars(results)[3]["measured"]
    gradient["conditions"][CARRY_ALL]["vs_baseline"].update(relative_change=-0.2, relative_change_ci=[-0.3, -0.1])
    gradient["conditions"][SUTA]["vs_baseline"].update(relative_change=-0.1, relative_change_ci=[-0.2, 0.0])
    speaker["conditions"]["k=5"]["vs_baseline"]["relative_change_ci"] = [-0.3, 0.02]
    assert [r["met"] for r in evaluate_bars(results)] == [True, False, True, True]
    del results["protocols"]["gradient"]
    assert [r["met"] for r in evaluate_bars(results)] == [None, False, True, None]
    assert "not measured" in bars_section(results)


def test_suta_rate_is_tuned_on_validation_and_refused_on_test(lact, bilstm, tokenizer, split, tmp_path):
    cache = _saved_heads({"lact": lact, "bilstm": bilstm}, tokenizer, split, "validation", tmp_path)
    script = load_script(ROOT / "eval" / "adaptation" / "tune_suta.py")
    out = tmp_path / "tuned"
    heads = ["--head", f"lact={tmp_path / 'lact'}", "--head", f"bilstm={tmp_path / 'bilstm'}"]
    args = [*heads, "--cache", str(cache), "--rates", "1e-6", "0.5", "--labelled", "3", "--suta-steps", "2"]
    result = script.main([*args, "--output", str(out)])
    for name in ("lact", "bilstm"):
        entry = result["heads"][name]
        assert [run["suta_lr"] for run in entry["runs"]] == [1e-6, 0.5]
        best = min(entry["runs"], key=lambda run: (run["wer"], run["suta_lr"]))
        assert entry["chosen_lr"] == best["suta_lr"]
        assert all(run["utterances"] == 4 * 3 for run in entry["runs"])  # 4 streams of 6, the first 3 skipped
        # a rate of 1e-6 barely moves the norm weights: SUTA's WER is the reset model's
        assert entry["runs"][0]["wer"] == pytest.approx(entry["reset_wer"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["heads"]["lact"]["chosen_lr"] == result["heads"]["lact"]["chosen_lr"]
    report = (out / "REPORT.md").read_text()
    assert "## lact (reset WER" in report and "tune_suta.py" in report
    split.save_to_disk(str(cache / "sessions_test_unseen"))
    with pytest.raises(SystemExit, match="is a test split"):
        script.main([*args, "--split", "sessions_test_unseen", "--output", str(tmp_path / "no")])
    assert not (tmp_path / "no").exists()


def test_a_rate_factor_cancels_under_muon_and_zero_freezes_the_fast_weights(lact, split):
    """Muon orthogonalises each chunk's update after dividing it by its norm, so a global factor on the learned
    rates changes nothing (only their relative weights within a chunk count); without Muon it scales the step."""
    import copy

    from modeling_lact_audio.adaptation.reliance import scaled_lact_rates

    rows = _index(split)
    order = [rows[f"test-0{i}"] for i in range(3)]
    assert lact.config.muon_steps > 0
    trained = _carry_by_hand(lact, split, order)
    with scaled_lact_rates(lact, 1.0):
        assert all(torch.equal(a, b) for a, b in zip(_carry_by_hand(lact, split, order), trained))
    with scaled_lact_rates(lact, 0.0):
        frozen = _carry_by_hand(lact, split, order)
        alone = [run_utterance(lact, _states(split, i), None)[0] for i in order]
    # no update: a carried state is the initial one, so carrying changes nothing
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(frozen, alone))
    assert not torch.allclose(frozen[2], trained[2], atol=1e-4)  # and the trained rates do move the weights
    for factor in (0.25, 4.0):
        with scaled_lact_rates(lact, factor):
            scaled = _carry_by_hand(lact, split, order)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(scaled, trained))
    plain = copy.deepcopy(lact)
    plain.config.muon_steps = 0

    def moved(head):  # how far the first layer's w0 moved from its initial value over the three utterances
        cache = new_cache(head)
        for i in order:
            cache = run_utterance(head, _states(split, i), cache)[1]
        return float((cache.layer_caches[0].fast.w0[0] - head.ctc.model.layers[0].mixer.w0).norm())

    with scaled_lact_rates(plain, 0.5):
        half = moved(plain)
    with scaled_lact_rates(plain, 2.0):
        double = moved(plain)
    assert double > 2 * half > 0  # a plain step grows with the factor (four times the rate: about four times)
    with scaled_lact_rates(lact, 0.5):
        muon_half = moved(lact)
    with scaled_lact_rates(lact, 2.0):
        assert moved(lact) == pytest.approx(muon_half, rel=1e-3)  # float32 rounding only
    assert all(m.lact_rate_scale == 1.0 for m in lact.modules() if hasattr(m, "lact_rate_scale"))  # restored
    with pytest.raises(ValueError, match="finite number >= 0"):
        with scaled_lact_rates(lact, -1.0):
            pass


def test_the_command_line_scales_the_rates(lact, tokenizer, split, tmp_path):
    cache = _saved_heads({"lact": lact}, tokenizer, split, "tiny", tmp_path)
    script = load_script(ROOT / "eval" / "adaptation" / "run_adaptation.py")
    args = ["speaker", "--head", f"lact={tmp_path / 'lact'}", "--cache", str(cache), "--splits", "tiny"]
    runs = {
        factor: script.main([*args, "--ks", "0", "2", "--rate-scale", factor, "--output", str(tmp_path / factor)])
        for factor in ("1", "0")
    }
    conditions = {f: r["protocols"]["speaker"]["heads"]["lact"]["tiny"]["conditions"] for f, r in runs.items()}
    assert conditions["0"]["carry all"]["wer"] == pytest.approx(conditions["0"]["k=0"]["wer"])  # nothing carried
    assert runs["0"]["protocols"]["speaker"]["settings"]["rate_scale"] == 0.0


def test_state_memory_against_the_runs_it_stands_for(lact, split):
    from modeling_lact_audio.adaptation.fast_weight_stats import fast_weight_vector, initial_fast_weight_vector
    from modeling_lact_audio.adaptation.reliance import scaled_lact_rates
    from modeling_lact_audio.adaptation.state_memory import state_memory, summarize_memory

    rows = _index(split)
    utterances = [_states(split, rows[f"test-1{i}"]) for i in range(4)]
    records = state_memory(lact, utterances, horizon=5)
    assert [r["n"] for r in records] == [1, 2, 3]  # capped by the stream
    # n = 2 by hand: utterance 0, then 1 and 2 carried, against 1 and 2 from a reset state
    w0 = initial_fast_weight_vector(lact)
    cache = new_cache(lact)
    _, cache, _ = run_utterance(lact, utterances[0], cache)
    w_a = fast_weight_vector(cache)
    for u in utterances[1:3]:
        carried_logits, cache, _ = run_utterance(lact, u, cache)
    reset = new_cache(lact)
    for u in utterances[1:3]:
        reset_logits, reset, _ = run_utterance(lact, u, reset)
    gap = (fast_weight_vector(cache) - fast_weight_vector(reset)).norm()
    assert records[1]["retention"] == pytest.approx(float(gap / (w_a - w0).norm()), rel=1e-5)
    expected = float((carried_logits - reset_logits).norm() / reset_logits.norm())
    assert records[1]["logit_change"] == pytest.approx(expected, rel=1e-5)
    assert all(r["retention"] > 0 and r["logit_change"] > 0 for r in records)
    with scaled_lact_rates(lact, 0.0):
        frozen_0 = run_utterance(lact, utterances[0], None)[0]
    own = float((run_utterance(lact, utterances[0], None)[0] - frozen_0).norm() / frozen_0.norm())
    assert all(r["own_update_change"] == pytest.approx(own, rel=1e-5) for r in records) and own > 0
    with scaled_lact_rates(lact, 0.0):  # frozen fast weights: nothing moves (but the renorm's eps), nothing changes
        frozen = state_memory(lact, utterances, horizon=2)
    assert all(r["displacement"] < 1e-5 and r["logit_change"] < 1e-5 and r["frame_disagreement"] == 0 for r in frozen)
    assert all(r["displacement"] > 1e-3 for r in records)
    summary = summarize_memory(records + records, samples=200)
    assert [s["n"] for s in summary] == [1, 2, 3] and all(s["streams"] == 2 for s in summary)
    mean, low, high = summary[0]["retention"]
    assert mean == pytest.approx(records[0]["retention"]) and low <= mean <= high
    with pytest.raises(ValueError, match="need >= 2 utterances"):
        state_memory(lact, utterances[:1], horizon=1)


def test_state_memory_command_line(lact, bilstm, tokenizer, split, tmp_path):
    cache = _saved_heads({"lact": lact, "bilstm": bilstm}, tokenizer, split, "tiny", tmp_path)
    script = load_script(ROOT / "eval" / "adaptation" / "state_memory.py")
    out = tmp_path / "memory"
    result = script.main(
        ["--head", str(tmp_path / "lact"), "--cache", str(cache), "--splits", "tiny", "--horizon", "2",
         "--output", str(out)]
    )  # fmt: skip
    assert {p.name for p in out.iterdir()} == {"results.json", "REPORT.md", "state_memory.png"}
    summary = result["splits"]["tiny"]["summary"]
    assert [s["n"] for s in summary] == [1, 2] and summary[0]["streams"] == 4  # 4 speakers of 6 utterances
    assert "| 1 | 4 |" in (out / "REPORT.md").read_text()
    with pytest.raises(SystemExit, match="no LaCT fast weights"):
        script.main(["--head", str(tmp_path / "bilstm"), "--cache", str(cache), "--splits", "tiny"])
