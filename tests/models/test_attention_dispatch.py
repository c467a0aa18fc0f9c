"""The attention branch through a flash-attention-style kernel equals the SDPA path.

No GPU here: a CPU function with flash-attention's contract (a ``[B, Tk]`` padding mask, bottom-right
causal alignment, ``sliding_window - 1`` frames of context each side) is registered in transformers'
``AttentionInterface``; the model must call it so that its results equal the explicit-mask SDPA path.
"""

import pytest
import torch
from transformers import AttentionInterface

from modeling_lact_audio import LaCTAudioForCausalLM, LaCTAudioForCTC
from tests.model_testers import LaCTAudioModelTester

tester = LaCTAudioModelTester()
CALLS = []


def flash_contract_attention(
    module, query, key, value, attention_mask, dropout=0.0, scaling=None, sliding_window=None, is_causal=None, **kwargs
):
    CALLS.append(attention_mask is None)
    Tq, Tk = query.shape[2], key.shape[2]
    q_pos = torch.arange(Tk - Tq, Tk)[:, None]  # bottom-right alignment, as flash-attn >= 2.1
    k_pos = torch.arange(Tk)[None, :]
    allowed = torch.ones(Tq, Tk, dtype=torch.bool)
    if is_causal:
        allowed &= k_pos <= q_pos
    if sliding_window is not None:
        allowed &= (q_pos - k_pos).abs() <= sliding_window - 1
    allowed = allowed[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask.bool()[:, None, None, :]
    scores = (query @ key.transpose(-1, -2)) * scaling
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
    return (weights @ value).transpose(1, 2), None


AttentionInterface.register("flash_contract_test", flash_contract_attention)


def _with_impl(model, impl):
    model.config._attn_implementation = impl
    return model


def test_causal_lm_full_and_cached_decode_match_sdpa():
    torch.manual_seed(0)
    model = LaCTAudioForCausalLM(tester.lm_config()).eval()
    ids = torch.randint(0, 13, (4, 15))
    ref = _with_impl(model, "sdpa")(input_ids=ids).logits
    CALLS.clear()
    _with_impl(model, "flash_contract_test")
    torch.testing.assert_close(model(input_ids=ids).logits, ref, rtol=1e-4, atol=1e-5)
    assert CALLS and all(CALLS)  # no padding: no mask handed to the kernel
    cache, outs = None, []
    for t in range(15):
        out = model(input_ids=ids[:, t : t + 1], past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        outs.append(out.logits)
    torch.testing.assert_close(torch.cat(outs, 1), ref, rtol=1e-4, atol=1e-5)


def test_bidirectional_ctc_with_padding_matches_sdpa():
    torch.manual_seed(0)
    model = LaCTAudioForCTC(tester.ctc_config(lact_order="bidirectional", attention_pattern="bidirectional")).eval()
    x, mask = tester.features(T=41, lengths=[41, 26])
    ref = _with_impl(model, "sdpa")(input_features=x, attention_mask=mask)
    CALLS.clear()
    got = _with_impl(model, "flash_contract_test")(input_features=x, attention_mask=mask)
    assert CALLS and not any(CALLS)  # padding: the [B, Tk] mask is handed over
    for b, n in enumerate(ref.output_lengths.tolist()):
        torch.testing.assert_close(got.logits[b, :n], ref.logits[b, :n], rtol=1e-4, atol=1e-5)


def test_block_causal_keeps_the_explicit_mask_path():
    torch.manual_seed(0)
    model = LaCTAudioForCTC(tester.ctc_config()).eval()  # block_causal: not expressible as a window
    x, _ = tester.features(T=24)
    ref = _with_impl(model, "sdpa")(input_features=x).logits
    CALLS.clear()
    torch.testing.assert_close(_with_impl(model, "flash_contract_test")(input_features=x).logits, ref)
    assert CALLS == []


@pytest.fixture(autouse=True)
def _restore():
    yield
    CALLS.clear()


def _dense_local_attention(self, attn_fn, q, k, v, q_start, n_cached, key_mask, dropout):
    """The same attention with one dense [T, Tk] mask: the reference for the blocked path."""
    T = q.shape[2]
    q_pos = torch.arange(q_start, q_start + T)
    k_pos = torch.arange(q_start - n_cached, q_start + T)
    out, _ = attn_fn(
        self, q, k, v, self._block_mask(q_pos, k_pos, key_mask), dropout=dropout, scaling=self.scaling, is_causal=False
    )
    return out


@pytest.mark.parametrize(
    "pattern,order,window,chunk",
    [
        ("causal", "apply_update", 6, 4),
        ("block_causal", "update_apply", 6, 4),
        ("block_causal", "update_apply", 2, 8),
        ("bidirectional", "bidirectional", 6, 4),
        ("bidirectional", "bidirectional", 3, 8),
    ],
)
def test_blocked_window_attention_equals_dense_mask(monkeypatch, pattern, order, window, chunk):
    from modeling_lact_audio.mixer_lact_audio import LaCTAudioMixer

    torch.manual_seed(0)
    config = tester.ctc_config(attention_pattern=pattern, lact_order=order, window_size=window, lact_chunk_size=chunk)
    model = LaCTAudioForCTC(config).eval()
    x, mask = tester.features(T=61, lengths=[61, 38])
    blocked = model(input_features=x, attention_mask=mask)
    monkeypatch.setattr(LaCTAudioMixer, "_local_attention", _dense_local_attention)
    dense = model(input_features=x, attention_mask=mask)
    for b, n in enumerate(dense.output_lengths.tolist()):
        torch.testing.assert_close(blocked.logits[b, :n], dense.logits[b, :n], rtol=1e-5, atol=1e-6)


def test_decoding_with_a_window_longer_than_a_chunk_equals_full_forward():
    torch.manual_seed(0)
    model = LaCTAudioForCausalLM(tester.lm_config(window_size=6, lact_chunk_size=4)).eval()
    ids = torch.randint(0, 13, (4, 30))
    full = model(input_ids=ids).logits
    cache, outs = None, []
    for s in range(0, 30, 3):  # pieces of 3 tokens: boundaries fall inside chunks and windows
        out = model(input_ids=ids[:, s : s + 3], past_key_values=cache, use_cache=True)
        cache, outs = out.past_key_values, [*outs, out.logits]
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-4, atol=1e-5)
    assert cache.layer_caches[0].keys.shape[2] == 6  # the window, not the stream, sets the cache size
