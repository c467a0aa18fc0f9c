"""The recogniser recipe's data path: session plans, session batches, encoder-state caching, SpecAugment."""

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from modeling_lact_audio.recogniser.encoder_cache import encode_waveforms, encoder_output_lengths
from modeling_lact_audio.recogniser.sessions import SessionCollator, SessionSampler
from modeling_lact_audio.recogniser.training import RecogniserTrainingArguments, spec_augment


def _speakers(n_speakers=5, per_speaker=9):
    return [f"s{i}" for i in range(n_speakers) for _ in range(per_speaker)]


def test_session_plan_covers_every_row_once_with_one_speaker_per_session():
    speakers = _speakers()
    frames = np.full(len(speakers), 10)
    sampler = SessionSampler(speakers, frames, batch_frames=200, max_utterances=4, seed=3)
    sessions = [s for batch in sampler for s in batch]
    rows = sorted(i for s in sessions for i in s)
    assert rows == list(range(len(speakers)))
    assert all(len({speakers[i] for i in s}) == 1 for s in sessions)
    assert all(1 <= len(s) <= 4 for s in sessions)
    for batch in sampler:
        assert sum(frames[i] for s in batch for i in s) <= 200
        assert [len(s) for s in batch] == sorted((len(s) for s in batch), reverse=True)


def test_session_plan_depends_on_seed_and_epoch_only():
    speakers = _speakers()
    frames = np.arange(len(speakers)) % 7 + 5
    a = SessionSampler(speakers, frames, 150, seed=1)
    b = SessionSampler(speakers, frames, 150, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert list(SessionSampler(speakers, frames, 150, seed=2)) != list(a)


def test_session_plan_rejects_a_budget_that_cannot_hold_a_session():
    with pytest.raises(ValueError, match="batch_frames"):
        SessionSampler(_speakers(), np.full(45, 100), batch_frames=300, max_utterances=8)


def test_collator_pads_each_position_to_the_sessions_that_reach_it():
    def row(T, labels):
        return {"states": np.ones((T, 3), dtype=np.float16), "labels": labels}

    sessions = [[row(4, [1, 2]), row(2, [3])], [row(3, [4, 5, 6])]]
    positions = SessionCollator()(sessions)
    assert len(positions) == 2
    first, second = positions
    assert first["frontend_states"].shape == (2, 4, 3) and second["frontend_states"].shape == (1, 2, 3)
    assert first["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert first["labels"].tolist() == [[1, 2, -100], [4, 5, 6]]
    assert first["frontend_states"][1, 3].abs().sum() == 0


def test_encoder_states_keep_only_the_frames_of_real_audio():
    config = WhisperConfig(
        d_model=16,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        num_mel_bins=80,
        max_source_positions=1500,
    )
    encoder = WhisperEncoder(config).eval()
    fe = WhisperFeatureExtractor()
    audio = [np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 8000)]
    states = encode_waveforms(encoder, fe, audio)
    assert [s.shape for s in states] == [(int(encoder_output_lengths(100)), 16), (int(encoder_output_lengths(50)), 16)]
    full = encoder(fe(audio[:1], sampling_rate=16000, return_tensors="pt").input_features).last_hidden_state
    np.testing.assert_allclose(states[0], full[0, : len(states[0])].detach().numpy(), atol=1e-5)
    (long,) = encode_waveforms(encoder, fe, [np.zeros(31 * 16000, dtype=np.float32)])
    assert long.shape == (int(encoder_output_lengths(3000) + encoder_output_lengths(100)), 16)


def test_spec_augment_masks_within_real_frames_and_is_seeded():
    args = RecogniserTrainingArguments(
        output_dir="unused", time_mask_prob=0.2, time_mask_length=3, feature_mask_prob=0.2, feature_mask_length=2
    )
    states = torch.ones(2, 20, 8)
    mask = torch.ones(2, 20, dtype=torch.long)
    a = spec_augment(states, mask, args, np.random.default_rng(0))
    b = spec_augment(states, mask, args, np.random.default_rng(0))
    assert torch.equal(a, b)
    assert 0 < int((a == 0).sum()) < a.numel()
    assert torch.equal(states, torch.ones(2, 20, 8))  # the input is not changed in place
