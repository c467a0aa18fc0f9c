"""generation.decode_cost: the manual decode loop equals a full forward's argmax; a LaCT cache keeps its size
however long the context, a full-attention baseline's KV cache grows linearly with it."""

import pytest
import torch

from modeling_lact_audio import LaCTAudioForCausalLM
from modeling_lact_audio.baselines import BaselineAudioTransformer
from modeling_lact_audio.generation import cache_nbytes, decoding_cost, greedy_decode
from tests.model_testers import LaCTAudioModelTester

tester = LaCTAudioModelTester()  # K=2 codebooks of 13 codes, hidden 16, 2 layers, LaCT chunk 4, window 3
KEYS = {
    "context_frames",
    "context_seconds",
    "prefill_seconds",
    "decode_seconds",
    "seconds_per_generated_second",
    "real_time_factor",
    "cache_bytes",
    "peak_rss_increase_mib",
}


@pytest.fixture(scope="module")
def models() -> dict:
    torch.manual_seed(0)
    config = tester.lm_config()
    return {
        "lact": LaCTAudioForCausalLM(config).eval(),
        "baseline": BaselineAudioTransformer.from_lact_config(config).eval(),
        "sliding": BaselineAudioTransformer.from_lact_config(config, "sliding_window").eval(),
    }


@pytest.mark.parametrize("kind", ["lact", "baseline", "sliding"])
def test_greedy_decode_matches_full_forward_argmax(models, kind):
    model = models[kind]
    prompt = torch.randint(0, 13, (2, 11), generator=torch.Generator().manual_seed(1))
    run = greedy_decode(model, prompt, 9)
    codes = run["codes"]
    assert codes.shape == (2, 9) and run["prefill_seconds"] > 0 and run["decode_seconds"] > 0
    with torch.no_grad():
        logits = model(input_ids=torch.cat([prompt, codes[:, :-1]], dim=1)).logits  # [K, 19, V]
    assert torch.equal(logits[:, 10:].argmax(-1), codes)
    assert torch.equal(codes, model.generate(input_ids=prompt, max_new_tokens=9, do_sample=False)[:, 11:])
    assert run["cache"].seen_inputs == 20  # the prompt and every new frame went through the cache


def test_lact_cache_is_constant_and_full_attention_grows(models):
    contexts = [8, 16, 32, 64]  # multiples of the LaCT chunk: the same position inside a chunk after decoding
    lact = decoding_cost(models["lact"], 2, contexts, new_frames=8, frame_rate=62.5)
    assert [r["context_frames"] for r in lact] == contexts and all(set(r) == KEYS for r in lact)
    assert len({r["cache_bytes"] for r in lact}) == 1 and lact[0]["cache_bytes"] > 0
    sliding = decoding_cost(models["sliding"], 2, contexts, new_frames=8)
    assert len({r["cache_bytes"] for r in sliding}) == 1
    full = [r["cache_bytes"] for r in decoding_cost(models["baseline"], 2, contexts, new_frames=8)]
    assert full == sorted(full) and full[-1] > 4 * full[0]
    per_frame = [(b - a) / (tb - ta) for a, b, ta, tb in zip(full, full[1:], contexts, contexts[1:])]
    assert max(per_frame) == pytest.approx(min(per_frame))  # linear in the context length
    # 2 layers x (keys + values) x [1, heads, T, head_dim] float32 per frame of context, plus a bool mask
    config = models["baseline"].config
    kv_per_frame = 2 * 2 * config.hidden_size * 4
    assert kv_per_frame <= per_frame[0] <= kv_per_frame + 2 * 8


def test_timings_and_ratios(models):
    (row,) = decoding_cost(models["lact"], 2, [5], new_frames=4, frame_rate=2.0)
    assert row["context_seconds"] == 2.5
    assert row["seconds_per_generated_second"] == pytest.approx(row["decode_seconds"] / 2.0)
    assert row["real_time_factor"] == pytest.approx((row["prefill_seconds"] + row["decode_seconds"]) / 2.0)
    assert row["peak_rss_increase_mib"] >= 0


def test_cache_nbytes_counts_shared_storage_once():
    base = torch.zeros(4, 10)
    holder = {"a": base, "views": [base[:2], base[2:]], "other": (torch.zeros(3, dtype=torch.float64), None, 7)}
    assert cache_nbytes(holder) == 4 * 10 * 4 + 3 * 8
    assert cache_nbytes(None) == 0


def test_bad_inputs(models):
    model = models["lact"]
    with pytest.raises(ValueError, match="num_codebooks=3 but the model has config.num_codebooks=2"):
        decoding_cost(model, 3, [8])
    with pytest.raises(ValueError, match="context_frames must be a non-empty list of ints >= 1"):
        decoding_cost(model, 2, [])
    with pytest.raises(ValueError, match="context_frames must be a non-empty list of ints >= 1"):
        decoding_cost(model, 2, [0, 4])
    with pytest.raises(ValueError, match="new_frames must be an int >= 1"):
        decoding_cost(model, 2, [4], new_frames=0)
    with pytest.raises(ValueError, match="frame_rate"):
        decoding_cost(model, 2, [4], frame_rate=float("nan"))
