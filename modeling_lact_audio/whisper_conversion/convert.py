"""Convert a CTranslate2 Whisper folder into a transformers ``WhisperForConditionalGeneration`` folder.

    python run_scripts/convert_ct2_whisper.py --ct2 CT2_DIR --output HF_DIR
    python -m modeling_lact_audio.whisper_conversion.convert --ct2 CT2_DIR --output HF_DIR

``CT2_DIR`` holds what ``ct2-transformers-converter`` writes for Whisper: ``model.bin``,
``config.json`` (suppress ids, alignment heads), ``tokenizer.json`` and ``vocabulary.txt``.
``HF_DIR`` receives ``config.json``, ``model.safetensors`` (float32), ``generation_config.json``
(greedy English transcription, no timestamps), the ``WhisperProcessor`` files, and
``ct2_conversion.json`` (source hash, skipped variables and why). Every ct2 variable is mapped,
checked, or skipped with a reason below; a missing or an unexpected one is an error.
"""

import argparse
import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

from ..export.target import claim_target
from . import ct2_format

# Stored by ct2's generic TransformerDecoderSpec for translation models (which decoder layer/head
# `translate_batch(return_attention=True)` returns). Whisper's word-timing heads come from
# config.json's `alignment_heads` instead, so these two do not describe the Whisper model.
SKIPPED = {
    "decoder/alignment_layer": "ct2 translation-alignment layer; Whisper uses config.json alignment_heads",
    "decoder/alignment_heads": "ct2 translation-alignment head count; Whisper uses alignment_heads",
}
# Flags whose value transformers' Whisper hard-codes: any other value means a different network.
REQUIRED_FLAGS = {
    "decoder/activation": (3, "ct2 Activation.GELU; transformers' Whisper uses exact (erf) GELU"),
    "decoder/alibi": (0, "Whisper uses learned absolute positions, not ALiBi"),
    "decoder/pre_norm": (1, "Whisper layers are pre-norm"),
    "decoder/scale_embeddings": (0, "Whisper does not scale token embeddings by sqrt(d_model)"),
    "decoder/start_from_zero_embedding": (0, "Whisper's decoder starts from <|startoftranscript|>"),
}
# OpenAI's rule (whisper/model.py `is_multilingual`), also used by ct2 and faster-whisper.
MULTILINGUAL_MIN_VOCAB = 51865
TIME_PRECISION = 0.02


class _Variables:
    """Pops ct2 variables by name, so whatever is left over at the end is an unexpected extra."""

    def __init__(self, variables: dict):
        self.left = dict(variables)

    def take(self, name: str) -> torch.Tensor:
        if name not in self.left:
            raise ValueError(f"ct2 model is missing variable {name!r}")
        return self.left.pop(name)


def _layer_count(names, side: str) -> int:
    found = {int(m.group(1)) for n in names if (m := re.match(rf"{side}/layer_(\d+)/", n))}
    if not found:
        raise ValueError(f"ct2 model has no {side} layers")
    return max(found) + 1


def map_variables(variables: dict, aliases: dict) -> tuple:
    """Map ct2 Whisper variables onto transformers' parameter names.

    Args:
        variables: ct2 name -> tensor (any float dtype; kept as stored).
        aliases: ct2 alias -> target name. Only ``decoder/projection/weight`` may be an alias
            (tied output projection).

    Returns:
        ``(state_dict, info)``: ``state_dict`` has every parameter of ``WhisperForConditionalGeneration``
        (``proj_out.weight`` is the embedding tensor itself when tied); ``info`` holds the head counts,
        layer counts, ``tied`` and the max |bias| of each dropped key-projection bias.

    Raises:
        ValueError: a missing variable, an extra variable or alias, a flag transformers cannot
            express, or a fused projection whose rows do not split evenly.
    """
    vs = _Variables(variables)
    sd, dropped_key_bias = {}, {}
    d_model = variables["encoder/conv1/weight"].shape[0] if "encoder/conv1/weight" in variables else 0

    def linear(src, dst):
        sd[f"{dst}.weight"] = vs.take(f"{src}/weight")
        sd[f"{dst}.bias"] = vs.take(f"{src}/bias")

    def norm(src, dst):
        sd[f"{dst}.weight"] = vs.take(f"{src}/gamma")
        sd[f"{dst}.bias"] = vs.take(f"{src}/beta")

    def fused(src, dsts):
        # ct2 fuses q|k|v (self-attention) or k|v (cross-attention) by stacking output rows.
        weight, bias = vs.take(f"{src}/weight"), vs.take(f"{src}/bias")
        if weight.shape[0] != len(dsts) * d_model or bias.shape != (len(dsts) * d_model,):
            raise ValueError(f"{src}: {tuple(weight.shape)} does not split into {len(dsts)} x {d_model} rows")
        for dst, w, b in zip(dsts, weight.split(d_model), bias.split(d_model)):
            sd[f"{dst}.weight"] = w.clone()
            if dst.endswith("k_proj"):
                # Whisper's k_proj has no bias and ct2's converter stores zeros there. Dropping it is
                # exact anyway: it adds q.b_k to every score of a query, which softmax cancels.
                dropped_key_bias[f"{src}/bias[{dst}]"] = float(b.abs().max())
            else:
                sd[f"{dst}.bias"] = b.clone()

    def block(src, dst, cross: bool):
        norm(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        fused(f"{src}/self_attention/linear_0", [f"{dst}.self_attn.{p}_proj" for p in "qkv"])
        linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
        if cross:
            norm(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
            linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
            fused(f"{src}/attention/linear_1", [f"{dst}.encoder_attn.{p}_proj" for p in "kv"])
            linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        norm(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
        linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
        linear(f"{src}/ffn/linear_1", f"{dst}.fc2")

    info = {side: _layer_count(variables, side) for side in ("encoder", "decoder")}
    for side in ("encoder", "decoder"):
        info[f"{side}_heads"] = int(vs.take(f"{side}/num_heads"))
    for name, (value, why) in REQUIRED_FLAGS.items():
        if int(vs.take(name)) != value:
            raise ValueError(f"{name} = {int(variables[name])}, transformers' Whisper needs {value}: {why}")
    for name in SKIPPED:
        vs.take(name)

    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    sd["model.encoder.embed_positions.weight"] = vs.take("encoder/position_encodings/encodings")
    for i in range(info["encoder"]):
        block(f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)
    norm("encoder/layer_norm", "model.encoder.layer_norm")

    sd["model.decoder.embed_tokens.weight"] = vs.take("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = vs.take("decoder/position_encodings/encodings")
    for i in range(info["decoder"]):
        block(f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)
    norm("decoder/layer_norm", "model.decoder.layer_norm")

    extra_aliases = {a: t for a, t in aliases.items() if a != "decoder/projection/weight"}
    if extra_aliases:
        raise ValueError(f"unexpected ct2 aliases: {extra_aliases}")
    target = aliases.get("decoder/projection/weight")
    info["tied"] = target is not None
    if target == "decoder/embeddings/weight":
        sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]
    elif target is not None:
        raise ValueError(f"decoder/projection/weight aliases {target!r}, expected decoder/embeddings/weight")
    else:
        sd["proj_out.weight"] = vs.take("decoder/projection/weight")

    if vs.left:
        raise ValueError(f"unexpected ct2 variables (not mapped, not skipped): {sorted(vs.left)}")
    info["dropped_key_bias_max_abs"] = dropped_key_bias
    return sd, info


def build_tokenizer(ct2_dir: Path, vocab_size: int, max_length: int) -> WhisperTokenizer:
    """WhisperTokenizer from the shipped ``tokenizer.json``, checked against ``vocabulary.txt``.

    ``vocabulary.txt`` is the decoder's id -> token table (one token per line, ``vocab_size``
    lines): ids below ``len(tokenizer)`` must name the same tokens, the rest must be the
    timestamp tokens ``<|0.00|>``, ``<|0.02|>``, ... that Whisper predicts but the tokenizer omits.
    """
    tok_file = ct2_dir / "tokenizer.json"
    added = sorted(json.loads(tok_file.read_text())["added_tokens"], key=lambda t: t["id"])
    # Registering every <|...|> token as special keeps `all_special_ids[-1] + 1` equal to the first
    # timestamp id, which transformers' Whisper decoding relies on.
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(tok_file),
        extra_special_tokens=[t["content"] for t in added if t["content"] != "<|endoftext|>"],
        pad_token="<|endoftext|>",
        model_max_length=max_length,
    )
    lines = (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")
    lines = lines[:-1] if lines and lines[-1] == "" else lines
    if len(lines) != vocab_size:
        raise ValueError(f"vocabulary.txt has {len(lines)} tokens, the embedding has {vocab_size} rows")
    n_text = len(tokenizer)
    if lines[:n_text] != tokenizer.convert_ids_to_tokens(list(range(n_text))):
        raise ValueError("vocabulary.txt disagrees with tokenizer.json on the text/special tokens")
    timestamps = [f"<|{i * TIME_PRECISION:.2f}|>" for i in range(vocab_size - n_text)]
    if lines[n_text:] != timestamps:
        raise ValueError(f"vocabulary.txt ids >= {n_text} are not the timestamp tokens <|0.00|>...")
    return tokenizer


def build_configs(sd: dict, info: dict, ct2_config: dict, tokenizer) -> tuple:
    """``WhisperConfig`` (from tensor shapes) and the English-transcription ``GenerationConfig``."""
    vocab_size, d_model = sd["model.decoder.embed_tokens.weight"].shape
    if vocab_size >= MULTILINGUAL_MIN_VOCAB:
        raise ValueError(
            f"vocabulary of {vocab_size} tokens is a multilingual Whisper; this converter writes the "
            "English-only generation config (language/task tokens are never forced)"
        )
    vocab = tokenizer.get_vocab()
    names = ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "<|startofprev|>")
    missing = [t for t in names if t not in vocab]
    if missing:
        raise ValueError(f"tokenizer.json lacks Whisper's special tokens {missing}")
    ids = {t: vocab[t] for t in names}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    heads = [[int(layer), int(head)] for layer, head in ct2_config.get("alignment_heads", [])]
    for layer, head in heads:
        if not (0 <= layer < info["decoder"] and 0 <= head < info["decoder_heads"]):
            raise ValueError(f"alignment head {(layer, head)} outside the decoder's layers x heads")
    suppress = [int(i) for i in ct2_config["suppress_ids"]]
    begin_suppress = [int(i) for i in ct2_config["suppress_ids_begin"]]
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=sd["model.encoder.conv1.weight"].shape[1],
        d_model=d_model,
        encoder_layers=info["encoder"],
        decoder_layers=info["decoder"],
        encoder_attention_heads=info["encoder_heads"],
        decoder_attention_heads=info["decoder_heads"],
        encoder_ffn_dim=sd["model.encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=sd["model.decoder.layers.0.fc1.weight"].shape[0],
        max_source_positions=sd["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=sd["model.decoder.embed_positions.weight"].shape[0],
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=info["tied"],
        decoder_start_token_id=sot,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        suppress_tokens=suppress,
        begin_suppress_tokens=begin_suppress,
        architectures=["WhisperForConditionalGeneration"],
    )
    generation = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=config.max_target_positions,
        suppress_tokens=suppress,
        begin_suppress_tokens=begin_suppress,
        alignment_heads=heads,
        is_multilingual=False,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        # 1.0 s, the default of OpenAI's and faster-whisper's decoders.
        max_initial_timestamp_index=int(round(1.0 / TIME_PRECISION)),
        return_timestamps=False,
    )
    return config, generation


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (model.bin is 75 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def converter_sha256() -> str:
    """Hash of this converter's source files, so a changed converter invalidates cached output."""
    digest = hashlib.sha256()
    for path in (Path(__file__), Path(ct2_format.__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def convert(ct2_dir, output_dir, overwrite: bool = False) -> dict:
    """Convert ``ct2_dir`` into a transformers folder at ``output_dir`` (replaced atomically).

    An existing ``output_dir`` is replaced only if it is an earlier conversion (it holds
    ``ct2_conversion.json``), is empty, or ``overwrite`` is True; otherwise ``ValueError``.

    Weights are written in float32: float16 upcasts exactly, and fp16 matmuls on CPU are far
    slower than fp32.

    Returns:
        The provenance record also written to ``output_dir/ct2_conversion.json``.
    """
    ct2_dir, output_dir = Path(ct2_dir), Path(output_dir)
    claim_target(output_dir, overwrite, record="ct2_conversion.json")
    ct2 = ct2_format.read_model_bin(ct2_dir / "model.bin")
    if ct2.spec != "WhisperSpec":
        raise ValueError(f"{ct2_dir}/model.bin holds a {ct2.spec}, not a WhisperSpec")
    ct2_config = json.loads((ct2_dir / "config.json").read_text())
    sd, info = map_variables(ct2.variables, ct2.aliases)
    sd = {k: v.float() for k, v in sd.items()}
    if info["tied"]:
        sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]

    vocab_size = sd["model.decoder.embed_tokens.weight"].shape[0]
    max_length = sd["model.decoder.embed_positions.weight"].shape[0]
    tokenizer = build_tokenizer(ct2_dir, vocab_size, max_length)
    config, generation = build_configs(sd, info, ct2_config, tokenizer)

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = set(model.state_dict())
    if expected != set(sd):
        raise ValueError(
            f"mapped tensors differ from WhisperForConditionalGeneration: missing "
            f"{sorted(expected - set(sd))}, extra {sorted(set(sd) - expected)}"
        )
    model.load_state_dict(sd, strict=True, assign=True)
    if info["tied"]:
        model.tie_weights()
    model.generation_config = generation

    record = {
        "source": str(ct2_dir.resolve()),
        "model_bin_sha256": sha256_file(ct2_dir / "model.bin"),
        "converter_sha256": converter_sha256(),
        "spec": ct2.spec,
        "spec_revision": ct2.revision,
        "binary_version": ct2.binary_version,
        "source_dtypes": sorted({str(v.dtype) for v in ct2.variables.values()}),
        "skipped": SKIPPED,
        "checked_flags": {k: why for k, (_, why) in REQUIRED_FLAGS.items()},
        "aliases": ct2.aliases,
        "dropped_key_bias_max_abs": info["dropped_key_bias_max_abs"],
        "unused_config_fields": {
            "lang_ids": "English-only model: no language token is ever forced",
        },
    }
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        model.save_pretrained(tmp)
        WhisperProcessor(
            feature_extractor=WhisperFeatureExtractor(feature_size=config.num_mel_bins),
            tokenizer=tokenizer,
        ).save_pretrained(tmp)
        (tmp / "ct2_conversion.json").write_text(json.dumps(record, indent=2) + "\n")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        tmp.rename(output_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return record


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: converts ``--ct2`` into ``--output`` and prints where it wrote."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct2", required=True, help="CTranslate2 Whisper folder (model.bin, config.json...)")
    parser.add_argument("--output", required=True, help="transformers folder to write (replaces an earlier conversion)")
    parser.add_argument("--overwrite", action="store_true", help="replace --output even if it is not a conversion")
    args = parser.parse_args(argv)
    record = convert(args.ct2, args.output, args.overwrite)
    print(f"wrote {args.output} from {record['source']} (sha256 {record['model_bin_sha256'][:12]})")


if __name__ == "__main__":
    main()
