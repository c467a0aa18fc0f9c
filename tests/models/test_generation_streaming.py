"""generation.streaming: streamed chunks equal generate_continuation's codes, have exactly the right audio length,
propagate errors from the generation thread, and stop when closed early."""

import time

import numpy as np
import pytest
import torch
from transformers import GenerationConfig

from modeling_lact_audio import LaCTAudioForCausalLM
from modeling_lact_audio.baselines import BaselineAudioTransformer
from modeling_lact_audio.generation import (
    AudioChunk,
    generate_continuation,
    samples_per_frame,
    stream_generate_audio,
    streaming_latency,
)
from modeling_lact_audio.processors import LaCTAudioTokenizer, LaCTAudioTokenizerConfig
from tests.model_testers import LaCTAudioModelTester

SR = 16000
tester = LaCTAudioModelTester()  # K=2 codebooks of 13 codes, hidden 16, 2 layers, LaCT chunk 4, window 3


def harmonic(f0: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    return (0.2 * wave * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def audio_tokenizer() -> LaCTAudioTokenizer:
    config = LaCTAudioTokenizerConfig(
        n_fft=512, hop_length=128, n_mels=20, num_codebooks=2, codebook_size=13, griffin_lim_iters=2
    )
    return LaCTAudioTokenizer(config).fit([harmonic(110, 0.5), harmonic(220, 0.5)], sampling_rate=SR, iters=3)


@pytest.fixture(scope="module")
def models() -> dict:
    torch.manual_seed(0)
    config = tester.lm_config()
    return {
        "lact": LaCTAudioForCausalLM(config).eval(),
        "baseline": BaselineAudioTransformer.from_lact_config(config).eval(),
    }


def prompt(T: int = 6, seed: int = 0) -> torch.LongTensor:
    return torch.randint(0, 13, (2, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["lact", "baseline"])
def test_stream_equals_generate_continuation(models, audio_tokenizer, kind):
    model, p = models[kind], prompt()
    expected = generate_continuation(model, p, 23)
    assert expected.shape == (2, 23) and expected.dtype == torch.long
    full = model.generate(input_ids=p, max_new_tokens=23, do_sample=False)
    assert torch.equal(expected, full[:, 6:])
    chunks = list(stream_generate_audio(model, audio_tokenizer, p, 23, chunk_frames=5, context_frames=4))
    assert [c.frame_start for c in chunks] == [0, 5, 10, 15, 20]
    assert [c.codes.shape[1] for c in chunks] == [5, 5, 5, 5, 3]
    assert torch.equal(torch.cat([c.codes for c in chunks], dim=1), expected)
    hop = samples_per_frame(audio_tokenizer)
    assert hop == 128
    for c in chunks:
        assert c.audio.dtype == np.float32 and c.audio.shape == (c.codes.shape[1] * hop,)
        assert np.isfinite(c.audio).all() and np.abs(c.audio).max() > 0
    assert sum(len(c.audio) for c in chunks) == 23 * hop
    seconds = [c.seconds for c in chunks]
    assert seconds == sorted(seconds) and seconds[0] > 0


def test_stream_conditioning_and_context(models, audio_tokenizer):
    model, p = models["lact"], prompt(seed=1)
    cond = torch.randn(1, 5, generator=torch.Generator().manual_seed(0))
    expected = generate_continuation(model, p, 9, conditioning_embeds=cond)
    assert not torch.equal(expected, generate_continuation(model, p, 9))  # the prefix changes the continuation
    chunks = list(stream_generate_audio(model, audio_tokenizer, p, 9, chunk_frames=4, conditioning_embeds=cond))
    assert torch.equal(torch.cat([c.codes for c in chunks], dim=1), expected)
    # Without left context, a chunk's audio is its own frames decoded alone.
    alone = list(stream_generate_audio(model, audio_tokenizer, p, 9, chunk_frames=9, context_frames=0))[0]
    codes = torch.cat([alone.codes, alone.codes[:, -1:]], dim=1)
    np.testing.assert_allclose(alone.audio, audio_tokenizer.decode(codes[None])[0].numpy(), atol=1e-6)


def test_seeded_sampling_streams_what_generate_continuation_samples(models, audio_tokenizer):
    model, p = models["lact"], prompt()
    config = GenerationConfig(do_sample=True, top_p=0.9, temperature=1.5)
    torch.manual_seed(3)
    a = generate_continuation(model, p, 30, generation_config=config)
    assert a.shape == (2, 30) and a.min() >= 0 and a.max() < 13
    assert config.max_new_tokens is None  # the caller's config is copied, not changed
    forward = model.forward

    def slow_forward(*args, **kwargs):  # decoding a chunk would otherwise overlap sampling only by chance
        time.sleep(0.003)
        return forward(*args, **kwargs)

    model.forward = slow_forward
    try:
        torch.manual_seed(3)
        # Griffin-Lim reseeds the global generator: generation pauses while a chunk decodes, so the draws match.
        chunks = stream_generate_audio(model, audio_tokenizer, p, 30, chunk_frames=4, generation_config=config)
        assert torch.equal(torch.cat([c.codes for c in chunks], dim=1), a)
    finally:
        del model.forward
    torch.manual_seed(4)
    assert not torch.equal(generate_continuation(model, p, 30, generation_config=config), a)


def test_errors_in_the_generation_thread_reach_the_caller(models, audio_tokenizer):
    model = models["lact"]
    with pytest.raises(ValueError, match="num_beams"):
        list(
            stream_generate_audio(model, audio_tokenizer, prompt(), 8, generation_config=GenerationConfig(num_beams=2))
        )
    calls, forward = [0], model.forward

    def failing_forward(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 8:
            raise RuntimeError("forward failed on purpose")
        return forward(*args, **kwargs)

    model.forward = failing_forward
    try:
        stream = stream_generate_audio(model, audio_tokenizer, prompt(), 20, chunk_frames=3)
        first = next(stream)
        assert first.codes.shape == (2, 3)
        with pytest.raises(RuntimeError, match="forward failed on purpose"):
            list(stream)
    finally:
        del model.forward


def test_closing_the_stream_early_stops_generation(models, audio_tokenizer):
    model, calls, forward = models["baseline"], [0], models["baseline"].forward

    def counting_forward(*args, **kwargs):
        calls[0] += 1
        return forward(*args, **kwargs)

    model.forward = counting_forward
    try:
        stream = stream_generate_audio(model, audio_tokenizer, prompt(), 400, chunk_frames=2)
        next(stream)
        stream.close()  # joins the generation thread, which stops at its next frame
        assert calls[0] < 400
    finally:
        del model.forward


def test_bad_inputs(models, audio_tokenizer):
    model = models["lact"]
    with pytest.raises(ValueError, match=r"prompt_codes must be \[K=2, T\]"):
        generate_continuation(model, torch.zeros(3, 4, dtype=torch.long), 4)
    with pytest.raises(ValueError, match=r"prompt_codes must be \[K=2, T\]"):
        generate_continuation(model, torch.zeros(2, 0, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="integer codes"):
        generate_continuation(model, torch.zeros(2, 4), 4)
    with pytest.raises(ValueError, match="codebook_size=13"):
        generate_continuation(model, torch.full((2, 4), 13), 4)
    with pytest.raises(ValueError, match="max_new_frames must be an int >= 1"):
        generate_continuation(model, prompt(), 0)
    with pytest.raises(ValueError, match=r"conditioning_embeds must be a tensor \[1, condition_dim=5\]"):
        generate_continuation(model, prompt(), 4, conditioning_embeds=torch.zeros(2, 5))
    with pytest.raises(ValueError, match="GenerationConfig"):
        generate_continuation(model, prompt(), 4, generation_config={"do_sample": True})
    with pytest.raises(ValueError, match="chunk_frames must be an int >= 1"):
        stream_generate_audio(model, audio_tokenizer, prompt(), 4, chunk_frames=0)
    with pytest.raises(ValueError, match="context_frames must be an int >= 0"):
        stream_generate_audio(model, audio_tokenizer, prompt(), 4, context_frames=-1)


def test_streaming_latency():
    codes = torch.zeros(2, 10, dtype=torch.long)
    chunks = [AudioChunk(codes, np.zeros(1280, np.float32), 10 * i, s) for i, s in enumerate((0.5, 0.7, 1.2))]
    out = streaming_latency(chunks, frame_rate=20.0)
    assert out["time_to_first_audio_s"] == 0.5
    assert out["per_chunk_latency_s"] == pytest.approx([0.5, 0.2, 0.5])
    assert out["mean_chunk_latency_s"] == pytest.approx(0.4)
    assert out["audio_seconds"] == pytest.approx(1.5) and out["real_time_factor"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="at least one AudioChunk"):
        streaming_latency([], 62.5)
    with pytest.raises(ValueError, match="frame_rate"):
        streaming_latency(chunks, 0)
    with pytest.raises(ValueError, match="must not decrease"):
        streaming_latency(chunks[::-1], 62.5)
