"""The demo app (modeling_lact_audio.demo_app, run_scripts/app.py): its functions in-process, and the served
page driven end to end by Debian's headless chromium through Playwright."""

import runpy
import socket
import sys
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import soundfile as sf
import torch
from torchcodec.encoders import AudioEncoder

from modeling_lact_audio import LaCTAudioForCausalLM
from modeling_lact_audio.asr import Transcriber
from modeling_lact_audio.demo_app import DemoApp, SpeakerState, fast_weights, launch_app
from modeling_lact_audio.processors import LaCTAudioTokenizer, LaCTAudioTokenizerConfig
from tests.model_testers import LaCTAudioModelTester

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "model_cards" / "checkpoints" / "lact_tiny_ctc"
CHROMIUM = Path("/usr/bin/chromium")
SAMPLING_RATE = 16000


def voiced_signal(seconds: float, f0: float = 120.0, seed: int = 0) -> np.ndarray:
    """A buzz with a gliding pitch and a syllable-rate envelope, float32 ``[L]`` at 16 kHz (the tiny model
    writes a non-empty transcript for it)."""
    t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
    phase = 2 * np.pi * np.cumsum(f0 + 30 * np.sin(2 * np.pi * 1.5 * t)) / SAMPLING_RATE
    wave = sum(np.sin(k * phase) / k for k in range(1, 20)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t + seed))
    noise = np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * wave / np.abs(wave).max() + 0.005 * noise).astype(np.float32)


@pytest.fixture(scope="module")
def wavs(tmp_path_factory) -> dict[str, Path]:
    """Good and bad uploads, by name."""
    folder = tmp_path_factory.mktemp("uploads")
    paths = {name: folder / f"{name}.wav" for name in ("speech", "other_speaker", "empty", "nan", "low_rate")}
    sf.write(paths["speech"], voiced_signal(2.5), SAMPLING_RATE)
    sf.write(paths["other_speaker"], voiced_signal(2.0, f0=210.0, seed=1), SAMPLING_RATE)
    sf.write(paths["empty"], np.zeros(0, np.float32), SAMPLING_RATE)
    with_nan = voiced_signal(1.0)
    with_nan[100] = np.nan
    sf.write(paths["nan"], with_nan, SAMPLING_RATE, subtype="FLOAT")
    sf.write(paths["low_rate"], voiced_signal(1.0)[:2000], 2000)
    # webm/opus, as some browsers record: libsndfile cannot read it, FFmpeg (torchcodec) can.
    paths["webm"] = folder / "recording.webm"
    AudioEncoder(torch.from_numpy(voiced_signal(2.5))[None], sample_rate=SAMPLING_RATE).to_file(str(paths["webm"]))
    paths["not_audio"] = folder / "notes.wav"  # a text file under an audio name: passes the upload's filter
    paths["not_audio"].write_text("these are meeting notes, not audio\n")
    return paths


@pytest.fixture(scope="module")
def app() -> DemoApp:
    return DemoApp(TINY)


def last(stream):
    """The last item a generator yields, and how many it yielded."""
    items = list(stream)
    return items[-1], len(items)


def test_streamed_partials_end_with_the_offline_transcript(app, wavs):
    partials = [text for text, _, _ in app.transcribe(wavs["speech"], False, None)]
    audio, _ = sf.read(wavs["speech"], dtype="float32")
    (offline,) = Transcriber.from_pretrained(TINY)([audio])
    assert offline, "the tiny model should write something for a voiced signal"
    # A stream fed one LaCT chunk at a time is the same computation as one offline call.
    assert partials[-1] == offline, f"streamed {partials[-1]!r} != offline {offline!r}"
    frames = -(-len(audio) // 160) + 1  # the feature extractor's centred frames
    assert len(partials) == -(-frames // app.piece) + 1  # one per chunk, then the final status
    assert len(partials) > 2 and partials[0] != partials[-1], "the transcript should grow chunk by chunk"


def test_a_webm_recording_is_decoded_with_ffmpeg(app, wavs):
    (text, _, _), _ = last(app.transcribe(wavs["webm"], False, None))
    (from_wav, _, _), _ = last(app.transcribe(wavs["speech"], False, None))
    assert text and len(text) > len(from_wav) // 2  # lossy opus at 48 kHz: close, not equal


def test_adaptation_toggle_carries_the_fast_weights(app, wavs):
    (_, first, status), _ = last(app.transcribe(wavs["speech"], True, None))
    assert first.cache is not None and "1 utterance" in status
    (text, second, status), _ = last(app.transcribe(wavs["other_speaker"], True, first))
    assert second.utterances == 2 and "2 utterance" in status and second.cache is first.cache
    carried = [w.clone() for w in fast_weights(second.cache)]

    fresh_state, status = app.reset()
    assert fresh_state.cache is None and "fresh" in status
    (reset_text, from_reset, _), _ = last(app.transcribe(wavs["other_speaker"], True, fresh_state))
    assert from_reset.utterances == 1
    reset_weights = fast_weights(from_reset.cache)
    assert len(carried) == len(reset_weights) > 0
    assert any(not torch.allclose(a, b) for a, b in zip(carried, reset_weights)), (
        "the carried fast weights should differ from those of a stream started from the trained weights"
    )

    # With the toggle off the model reads from the trained weights and the adapted state is kept untouched.
    (off_text, kept, status), _ = last(app.transcribe(wavs["other_speaker"], False, second))
    assert kept is second and off_text == reset_text and "adaptation off" in status
    assert all(torch.equal(a, b) for a, b in zip(carried, fast_weights(kept.cache)))


@pytest.mark.parametrize(
    "name, message",
    [
        ("not_audio", "notes.wav: not an audio file this demo can read"),
        ("empty", "empty.wav: the audio is empty"),
        ("nan", "nan.wav: the audio contains NaN or Inf"),
        ("low_rate", "2000 Hz is outside the supported range"),
    ],
)
def test_bad_uploads_raise_gradio_errors_with_the_library_message(app, wavs, name, message):
    with pytest.raises(gr.Error, match=message):
        list(app.transcribe(wavs[name], True, None))


def test_missing_audio_and_missing_generator_say_what_to_do(app, wavs):
    with pytest.raises(gr.Error, match="upload a file or record one"):
        list(app.transcribe(None, False, SpeakerState()))
    with pytest.raises(gr.Error, match="--generator DIR"):
        app.continue_audio(wavs["speech"], 1.0, 0.9, 8, 0)


def tiny_generator(folder: Path, num_codebooks: int = 2, codebook_size: int = 13) -> Path:
    """A random ``LaCTAudioForCausalLM`` with a fitted mel_rvq audio tokenizer, saved as ``train.py --task lm``
    saves a generator (the tokenizer in ``audio_tokenizer/``)."""
    config = LaCTAudioModelTester().lm_config(num_conditions=0, condition_dim=0)
    config.num_codebooks, config.codebook_size = 2, 13
    LaCTAudioForCausalLM(config).save_pretrained(folder)
    tokenizer = LaCTAudioTokenizer(
        LaCTAudioTokenizerConfig(num_codebooks=num_codebooks, codebook_size=codebook_size, griffin_lim_iters=4)
    )
    tokenizer.fit([voiced_signal(1.0), voiced_signal(1.0, f0=200.0, seed=1)], sampling_rate=SAMPLING_RATE, iters=3)
    tokenizer.save_pretrained(folder / "audio_tokenizer")
    return folder


def test_continuation_with_a_generator_folder(wavs, tmp_path):
    app = DemoApp(TINY, generator_dir=tiny_generator(tmp_path / "generator"))
    rate, audio = app.continue_audio(wavs["speech"], 0.5, 0.9, 5, seed=0)
    hop = app.audio_tokenizer.config.hop_length
    prompt_frames = app.audio_tokenizer.num_frames(len(sf.read(wavs["speech"])[0]))
    assert rate == SAMPLING_RATE and audio.dtype == np.float32 and np.isfinite(audio).all()
    assert len(audio) % hop == 0 and abs((len(audio) - (prompt_frames - 1) * hop) / rate - 0.5) <= 2 * hop / rate
    again = app.continue_audio(wavs["speech"], 0.5, 0.9, 5, seed=0)[1]
    assert np.array_equal(audio, again), "the seed should fix the sampling"
    with pytest.raises(gr.Error, match="the audio is empty"):
        app.continue_audio(wavs["empty"], 0.5, 0.9, 5, seed=0)


def test_a_generator_folder_that_does_not_fit_is_refused(tmp_path):
    with pytest.raises(ValueError, match="codebook_size=13 but its audio tokenizer has 7"):
        DemoApp(TINY, generator_dir=tiny_generator(tmp_path / "mismatch", codebook_size=7))
    LaCTAudioForCausalLM(LaCTAudioModelTester().lm_config()).save_pretrained(tmp_path / "bare")
    with pytest.raises(FileNotFoundError, match="holds no audio_tokenizer/"):
        DemoApp(TINY, generator_dir=tmp_path / "bare")


def test_app_script_help(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["app.py", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "run_scripts" / "app.py"), run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--model" in out and "--generator" in out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")  # pandas 3 deprecations in Gradio's queue
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium; `make` does)")
def test_in_a_headless_browser(app, wavs):
    from playwright.sync_api import expect, sync_playwright

    text, _ = last(app.transcribe(wavs["speech"], False, None))
    expected = text[0]
    port = free_port()
    # prevent_thread_lock: the server runs in Gradio's background thread and launch() returns.
    demo = launch_app(TINY, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            page = browser.new_page()
            requests = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator("#audio input[type=file]").set_input_files(str(wavs["speech"]))
            page.locator("#transcribe").click()
            expect(page.locator("#transcript textarea")).to_have_value(expected, timeout=30_000)
            expect(page.locator("#status")).to_contain_text("adaptation off")

            page.locator("#audio button[aria-label='Clear']").click()
            page.locator("#audio input[type=file]").set_input_files(str(wavs["not_audio"]))
            page.locator("#transcribe").click()
            expect(page.get_by_text("not an audio file this demo can read").first).to_be_visible(timeout=30_000)
            assert "Traceback" not in page.content()

            page.get_by_role("tab", name="Continue audio").click()
            expect(page.locator("#no-generator")).to_contain_text("--generator DIR")
            browser.close()
        offsite = [url for url in requests if not url.startswith((f"http://127.0.0.1:{port}/", "data:", "blob:"))]
        assert not offsite, f"the page should load nothing from outside the app (offline): {offsite}"
    finally:
        demo.close()
