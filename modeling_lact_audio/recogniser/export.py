"""One self-contained recogniser folder from a trained head and the pretrained Whisper encoder.

The folder loads with ``AutoModelForCTC`` (or ``trust_remote_code``), ``AutoProcessor`` (a ``LaCTProcessor``
holding Whisper's own feature extractor, exactly what the encoder and the state cache saw, and the head's
CTC tokenizer) and the ASR ``pipeline``; ``language_model/`` holds the word n-gram LM and the decoder
settings tuned on validation, when given.
"""

import json
import shutil
from pathlib import Path

import torch
from transformers import WhisperFeatureExtractor

from ..configuration_lact_audio import LaCTAudioConfig
from ..export.checkpoint import write_generated_files
from ..export.target import claim_target, write_export_record
from ..modeling_lact_audio import LaCTAudioForCTC
from ..processors import LaCTCTCTokenizer, LaCTProcessor
from ..whisper_frontend_lact_audio import whisper_encoder_config
from .encoder_cache import load_whisper_encoder
from .evaluation import load_head
from .heads import CachedStatesCTC
from .lm import LM_FOLDER

# Fields of the head's config that belong to its unused log-mel front end or are bookkeeping.
_HEAD_ONLY_FIELDS = (
    "transformers_version",
    "model_type",
    "architectures",
    "auto_map",
    "conv_channels",
    "conv_kernel_sizes",
    "conv_strides",
    "feature_hop_length",
    "num_mel_bins",
    "frontend",
    "dtype",
)


def assemble_recogniser(head: CachedStatesCTC, whisper_folder: str) -> LaCTAudioForCTC:
    """A ``LaCTAudioForCTC`` with ``frontend="whisper_encoder"`` holding ``head``'s weights and the
    pretrained encoder of ``whisper_folder`` (frozen); from audio it computes what ``head`` computes from
    the cached states of that encoder. Returned in eval mode."""
    if not isinstance(head, CachedStatesCTC):
        raise TypeError(f"only LaCT / attention heads (CachedStatesCTC) assemble into a folder, got {type(head)}")
    encoder, _ = load_whisper_encoder(whisper_folder)
    fields = {k: v for k, v in head.config.to_dict().items() if k not in _HEAD_ONLY_FIELDS}
    config = LaCTAudioConfig(
        **fields,
        frontend="whisper_encoder",
        whisper_config=whisper_encoder_config(encoder.config),
        whisper_trainable_layers=0,
    )
    model = LaCTAudioForCTC(config)
    model.model.frontend.encoder.load_state_dict(encoder.state_dict())
    model.model.frontend.projection.load_state_dict(head.projection.state_dict())
    model.model.layers.load_state_dict(head.ctc.model.layers.state_dict())
    model.model.norm.load_state_dict(head.ctc.model.norm.state_dict())
    model.lm_head.load_state_dict(head.ctc.lm_head.state_dict())
    model.model.frontend.set_trainable_layers(0)
    return model.eval()


def export_recogniser(
    head_folder: str,
    whisper_folder: str,
    output: str,
    lm_folder: str | None = None,
    decoder_settings: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``output``: the assembled model, its processor and, with ``lm_folder``, the LM.

    Args:
        head_folder: a trained head (``train_recogniser.py``'s ``best/``).
        whisper_folder: the transformers Whisper folder whose encoder states the head was trained on.
        output: the folder to write (replaced if it is an earlier export; a ``README.md`` model card there is kept).
        lm_folder: a ``language_model`` folder (``build_language_model.py``), copied as ``language_model/``.
        decoder_settings: ``{"lm_weight", "word_score", "beam_size"}`` tuned on validation, written into the
            copied ``decoder_config.json`` (what the pipeline's decoder then uses).
        overwrite: replace ``output`` even if it is a non-empty folder this exporter did not write.

    Returns the folder. The export is checked: the reloaded folder's logits on one second of noise must
    equal the assembled model's.
    """
    output = Path(output)
    claim_target(output, overwrite)
    card = (output / "README.md").read_text() if (output / "README.md").is_file() else None
    if output.exists():
        shutil.rmtree(output)
    model = assemble_recogniser(load_head(head_folder), whisper_folder)
    model.save_pretrained(output)
    write_generated_files(model.config, output)  # code copies and config.json exactly as --refresh-code writes them
    processor = LaCTProcessor(
        # the mask by default: without it the model would read the window's padding as speech
        WhisperFeatureExtractor.from_pretrained(whisper_folder, return_attention_mask=True),
        LaCTCTCTokenizer.from_pretrained(head_folder),
    )
    processor.save_pretrained(output)
    if lm_folder is not None:
        shutil.copytree(lm_folder, output / LM_FOLDER)
        if decoder_settings:
            path = output / LM_FOLDER / "decoder_config.json"
            settings = json.loads(path.read_text())
            settings.update({k: decoder_settings[k] for k in ("lm_weight", "word_score", "beam_size")})
            path.write_text(json.dumps(settings, indent=1))
    write_export_record(
        output, tool="export_recogniser", head=str(head_folder), whisper=str(whisper_folder), lm=lm_folder
    )
    if card is not None:
        (output / "README.md").write_text(card)

    reloaded = LaCTAudioForCTC.from_pretrained(output).eval()
    audio = torch.randn(16000, generator=torch.Generator().manual_seed(0)).numpy() * 0.1
    features = processor(audio=audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    with torch.inference_mode():
        want, got = model(**features).logits, reloaded(**features).logits
    if not torch.equal(want, got):
        raise RuntimeError(f"the exported folder's logits differ by {(want - got).abs().max():.3g}")
    return output
