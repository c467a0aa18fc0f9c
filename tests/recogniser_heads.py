"""Tiny recogniser-head configurations shared by the recogniser and adaptation tests."""

from modeling_lact_audio.recogniser.heads import recogniser_config


def tiny_recogniser_config(vocab_size: int, **overrides):
    """``recogniser_config`` shrunk to 2 blocks of width 32 (one LaCT head): fast enough for any CPU test.
    ``overrides`` replace any field (chunk size, window, dropout)."""
    fields = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_lact_heads=1,
        intermediate_size=64,
        lact_chunk_size=8,
        window_size=4,
    )
    fields.update(overrides)
    return recogniser_config(vocab_size, **fields)


def save_tiny_whisper_recogniser(folder, whisper, shipped_folder):
    """Save an untrained one-block LaCT recogniser on ``whisper``'s own encoder (copied) in ``folder``, with the
    processor files (vocabulary, tokenizer and feature extractor settings) of the recogniser at ``shipped_folder``."""
    import json
    import shutil
    from pathlib import Path

    import torch

    from modeling_lact_audio import LaCTAudioConfig, LaCTAudioForCTC
    from modeling_lact_audio.whisper_frontend_lact_audio import whisper_encoder_config

    shipped_folder, folder = Path(shipped_folder), Path(folder)
    vocab = json.loads((shipped_folder / "vocab.json").read_text())
    config = LaCTAudioConfig(
        frontend="whisper_encoder",
        whisper_config=whisper_encoder_config(whisper.config),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_lact_heads=1,
        intermediate_size=64,
        lact_chunk_size=64,
        window_size=16,
        lact_order="bidirectional",
        attention_pattern="bidirectional",
        vocab_size=len(vocab),
    )
    torch.manual_seed(0)
    model = LaCTAudioForCTC(config).eval()
    model.model.frontend.encoder.load_state_dict(whisper.get_encoder().state_dict())
    model.save_pretrained(folder)
    for name in ("vocab.json", "tokenizer_config.json", "processor_config.json"):
        shutil.copy(shipped_folder / name, folder / name)
    return folder
