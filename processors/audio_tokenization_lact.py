"""LaCTAudioTokenizer: audio to discrete codes ``[B, K, T']`` and back, with two backends.

- ``mel_rvq``: residual vector quantisation of normalised log-mel frames (K codebooks fitted by
  k-means with :meth:`LaCTAudioTokenizer.fit`), decoded with torchaudio's ``InverseMelScale`` and
  ``GriffinLim``. Light and fully offline.
- ``encodec``: transformers' ``EncodecModel`` (a pretrained local folder via
  :meth:`LaCTAudioTokenizer.from_encodec`, or any ``EncodecConfig``).
"""

import torch
import torchaudio
from transformers import EncodecConfig, EncodecModel, PretrainedConfig
from transformers.modeling_utils import PreTrainedAudioTokenizerBase

from .audio_input import prepare_waveforms
from .log_mel import LogMelSpectrogram
from .rvq import ResidualVectorQuantizer

BACKENDS = ("mel_rvq", "encodec")



def check_audio_codes(codes, num_codebooks: int, codebook_size: int, owner: str) -> torch.LongTensor:
    """``codes`` as int64 ``[B, K, T']`` with ``K == num_codebooks`` and values in ``[0, codebook_size)``, or a
    ``ValueError`` saying what is wrong (``owner`` names what holds ``num_codebooks``, e.g. "this tokenizer has")."""
    codes = torch.as_tensor(codes)
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise ValueError(f"codes must be integers, got dtype {codes.dtype}.")
    if codes.ndim != 3:
        raise ValueError(f"codes must have shape [B, K, T'], got {tuple(codes.shape)}.")
    if codes.shape[1] != num_codebooks:
        raise ValueError(f"codes have K={codes.shape[1]} codebooks, {owner} {num_codebooks}.")
    if codes.numel() == 0:
        raise ValueError(f"codes are empty: shape {tuple(codes.shape)}.")
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= codebook_size:
        raise ValueError(f"codes must lie in [0, {codebook_size}), got values in [{low}, {high}].")
    return codes.long()

class LaCTAudioTokenizerConfig(PretrainedConfig):
    """Configuration of :class:`LaCTAudioTokenizer`.

    Args:
        backend: ``"mel_rvq"`` or ``"encodec"``.
        sampling_rate, n_fft, win_length, hop_length, n_mels, f_min, f_max: log-mel analysis of
            ``mel_rvq`` (one code frame per ``hop_length`` samples).
        mel_floor: mel power floor before the log; 1e-5 keeps about 60 dB below a loud speech
            bin, so codebooks are not spent on near-silent bins Griffin-Lim cannot reproduce.
        num_codebooks, codebook_size: K and C of ``mel_rvq``.
        griffin_lim_iters: Griffin-Lim iterations when decoding ``mel_rvq``.
        encodec_config: ``EncodecConfig.to_dict()`` for the ``encodec`` backend; it sets
            ``sampling_rate``, ``codebook_size`` and (with ``encodec_bandwidth``, in kbps, default the
            smallest target bandwidth) ``num_codebooks``.
    """

    model_type = "lact_audio_tokenizer"

    def __init__(
        self,
        backend: str = "mel_rvq",
        sampling_rate: int = 16000,
        n_fft: int = 1024,
        win_length: int | None = None,
        hop_length: int = 256,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_floor: float = 1e-5,
        num_codebooks: int = 8,
        codebook_size: int = 256,
        griffin_lim_iters: int = 32,
        encodec_config: dict | None = None,
        encodec_bandwidth: float | None = None,
        **kwargs,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
        if backend == "encodec":
            if encodec_config is None:
                raise ValueError("backend='encodec' needs `encodec_config` (an EncodecConfig dict).")
            encodec = EncodecConfig(**encodec_config)
            if encodec.chunk_length_s is not None or encodec.normalize or encodec.audio_channels != 1:
                raise ValueError(
                    "encodec_config must be mono, unchunked and unnormalised (chunk_length_s=None, "
                    "normalize=False, "
                    "audio_channels=1), like the 24 kHz EnCodec, so that codes alone decode back to audio."
                )
            encodec_bandwidth = encodec_bandwidth or encodec.target_bandwidths[0]
            if encodec_bandwidth not in encodec.target_bandwidths:
                raise ValueError(
                    f"encodec_bandwidth={encodec_bandwidth} is not one of {list(encodec.target_bandwidths)}."
                )
            sampling_rate, codebook_size = encodec.sampling_rate, encodec.codebook_size
            bits_per_second = torch.tensor(float(codebook_size)).log2().item() * encodec.frame_rate
            num_codebooks = max(1, int(encodec_bandwidth * 1000 // bits_per_second))
            encodec_config = encodec.to_dict()
        elif num_codebooks < 1 or codebook_size < 2:
            raise ValueError(f"Need num_codebooks >= 1 and codebook_size >= 2, got {num_codebooks}, {codebook_size}.")
        self.backend, self.sampling_rate = backend, sampling_rate
        self.n_fft, self.win_length, self.hop_length, self.n_mels = n_fft, win_length, hop_length, n_mels
        self.f_min, self.f_max, self.mel_floor = f_min, f_max, mel_floor
        self.num_codebooks, self.codebook_size = num_codebooks, codebook_size
        self.griffin_lim_iters = griffin_lim_iters
        self.encodec_config, self.encodec_bandwidth = encodec_config, encodec_bandwidth
        super().__init__(**kwargs)


class LaCTAudioTokenizer(PreTrainedAudioTokenizerBase):
    """Audio to discrete codes and back.

    ``encode(audio, sampling_rate) -> codes`` int64 ``[B, K, T']`` (a batch is zero-padded to its
    longest utterance; :meth:`num_frames` gives each utterance's true frame count);
    ``decode(codes) -> audio`` float32 ``[B, L]`` at ``config.sampling_rate``. Audio input follows
    ``processors/audio_input.py`` (any rate: resampled; mono or mixed down). ``save_pretrained`` /
    ``from_pretrained`` store the config and the codebooks (or EnCodec weights) as safetensors.
    """

    config_class = LaCTAudioTokenizerConfig
    main_input_name = "input_values"
    base_model_prefix = "lact_audio_tokenizer"

    def __init__(self, config: LaCTAudioTokenizerConfig):
        super().__init__(config)
        if config.backend == "mel_rvq":
            # from_pretrained builds modules on the meta device, where torchaudio cannot build its
            # filter bank; these buffers are derived from the config, so build them for real.
            with torch.device("cpu"):
                self.log_mel = self._build_log_mel(config)
            self.rvq = ResidualVectorQuantizer(config.num_codebooks, config.codebook_size, config.n_mels)
            self.register_buffer("feature_mean", torch.zeros(config.n_mels))
            self.register_buffer("feature_std", torch.ones(config.n_mels))
            self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        else:
            self.encodec = EncodecModel(EncodecConfig(**config.encodec_config))
        self.post_init()

    @staticmethod
    def _build_log_mel(config: LaCTAudioTokenizerConfig) -> LogMelSpectrogram:
        return LogMelSpectrogram(
            sampling_rate=config.sampling_rate,
            n_fft=config.n_fft,
            win_length=config.win_length,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            f_min=config.f_min,
            f_max=config.f_max,
            mel_floor=config.mel_floor,
        )

    def _init_weights(self, module):
        # Codebooks come from fit(); EnCodec keeps its own initialisation or pretrained weights.
        pass

    @classmethod
    def from_encodec(cls, encodec, bandwidth: float | None = None) -> "LaCTAudioTokenizer":
        """Wrap an ``EncodecModel`` or a local folder holding one (``EncodecModel.from_pretrained``)."""
        if not isinstance(encodec, EncodecModel):
            encodec = EncodecModel.from_pretrained(encodec, local_files_only=True)
        config = LaCTAudioTokenizerConfig(
            backend="encodec", encodec_config=encodec.config.to_dict(), encodec_bandwidth=bandwidth
        )
        tokenizer = cls(config)
        tokenizer.encodec.load_state_dict(encodec.state_dict())
        return tokenizer.eval()

    def num_frames(self, num_samples: int) -> int:
        """Code frames for ``num_samples`` samples at ``config.sampling_rate``."""
        if self.config.backend == "mel_rvq":
            return self.log_mel.num_frames(num_samples)
        return -(-num_samples // self.encodec.config.hop_length)

    def _waveforms(self, audio, sampling_rate) -> torch.Tensor:
        waveforms, _ = prepare_waveforms(audio, sampling_rate, self.config.sampling_rate, True, type(self).__name__)
        return torch.nn.utils.rnn.pad_sequence(waveforms, batch_first=True)  # [B, L]

    def _normalised_log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        return (self.log_mel(waveform) - self.feature_mean) / self.feature_std  # [T', n_mels]

    @torch.no_grad()
    def fit(
        self,
        audio,
        sampling_rate: int | None = None,
        iters: int = 20,
        max_frames: int = 100_000,
        seed: int = 0,
    ):
        """Fit the ``mel_rvq`` codebooks by k-means on log-mel frames.

        Args:
            audio: an iterable of utterances (each as ``encode`` accepts one).
            sampling_rate: rate of every utterance in Hz.
            iters: Lloyd iterations per codebook.
            max_frames: frames sampled at random (seeded) from all the audio to fit on.
            seed: seeds sampling and k-means++.

        Returns:
            ``self``.
        """
        if self.config.backend != "mel_rvq":
            raise ValueError("fit() trains the mel_rvq codebooks; the encodec backend is pretrained or random.")
        frames = [self.log_mel(wave) for item in audio for wave in self._waveforms([item], sampling_rate)]
        if not frames:
            raise ValueError("fit() got no audio.")
        frames = torch.cat(frames)
        generator = torch.Generator().manual_seed(seed)
        if len(frames) > max_frames:
            frames = frames[torch.randperm(len(frames), generator=generator)[:max_frames]]
        self.feature_mean.copy_(frames.mean(0))
        self.feature_std.copy_(frames.std(0, unbiased=False).clamp_min(1e-3))
        self.rvq.fit((frames - self.feature_mean) / self.feature_std, iters=iters, seed=seed)
        self.fitted.fill_(True)
        return self

    @torch.no_grad()
    def encode(self, audio, sampling_rate: int | None = None) -> torch.LongTensor:
        """Codes ``[B, K, T']`` int64 of one utterance or a batch (see the class docstring).

        Raises:
            ValueError: bad audio (empty, NaN/Inf, dtype, rank), or ``mel_rvq`` not fitted yet.
        """
        waveforms = self._waveforms(audio, sampling_rate)
        if self.config.backend == "encodec":
            codes = self.encodec.encode(waveforms[:, None], bandwidth=self.config.encodec_bandwidth).audio_codes
            return codes[0]  # unchunked EnCodec: [1, B, K, T'] -> [B, K, T']
        if not self.fitted:
            raise ValueError("The mel_rvq codebooks are not fitted: call fit(audio) or load a fitted tokenizer.")
        features = torch.stack([self._normalised_log_mel(wave) for wave in waveforms])  # [B, T', n_mels]
        return self.rvq.encode(features).transpose(1, 2)

    def check_codes(self, codes) -> torch.LongTensor:
        """Return ``codes`` as int64 ``[B, K, T']`` or raise ``ValueError`` saying what is wrong."""
        return check_audio_codes(codes, self.config.num_codebooks, self.config.codebook_size, "this tokenizer has")

    @torch.no_grad()
    def decode(self, codes) -> torch.FloatTensor:
        """Audio ``[B, L]`` float32 at ``config.sampling_rate`` from codes ``[B, K, T']``.

        ``mel_rvq`` gives ``L = (T' - 1) * hop_length`` samples (Griffin-Lim phases are seeded, so
        decoding is deterministic).
        """
        if self.config.backend == "encodec":
            codes = self.check_codes(codes).to(self.device)
            return self.encodec.decode(codes[None], [None]).audio_values[:, 0]
        return self.log_mel_to_audio(self.codes_to_log_mel(codes))

    @torch.no_grad()
    def codes_to_log_mel(self, codes) -> torch.FloatTensor:
        """The ``mel_rvq`` log-mel ``[B, T', n_mels]`` float32 that codes ``[B, K, T']`` stand for."""
        if self.config.backend != "mel_rvq":
            raise ValueError("codes_to_log_mel() reads mel_rvq codes; EnCodec codes are not log-mel frames.")
        if not self.fitted:
            raise ValueError("The mel_rvq codebooks are not fitted: call fit(audio) or load a fitted tokenizer.")
        codes = self.check_codes(codes).to(self.device)
        return self.rvq.decode(codes.transpose(1, 2)) * self.feature_std + self.feature_mean

    @torch.no_grad()
    def log_mel_to_audio(self, log_mel: torch.Tensor) -> torch.FloatTensor:
        """The ``mel_rvq`` vocoder: log-mel ``[B, T', n_mels]`` -> audio ``[B, (T' - 1) * hop]`` (float32).

        ``InverseMelScale`` (least squares) then ``GriffinLim`` with seeded initial phases, so the
        result is deterministic.
        """
        config = self.config
        frames = log_mel.shape[1]
        if frames < 2:
            raise ValueError(f"decoding needs at least 2 code frames ((T' - 1) * hop samples), got {frames}.")
        # Griffin-Lim's STFT reflects n_fft / 2 samples at each end, so it needs a signal longer than that:
        # shorter inputs are extended by repeating their last frame, and the audio is cut back after.
        shortest = config.n_fft // (2 * config.hop_length) + 2
        if frames < shortest:
            log_mel = torch.nn.functional.pad(log_mel.transpose(1, 2), (0, shortest - frames), mode="replicate")
            log_mel = log_mel.transpose(1, 2)
        mel_power = log_mel.exp().transpose(1, 2)  # [B, n_mels, T']
        inverse_mel = torchaudio.transforms.InverseMelScale(
            n_stft=config.n_fft // 2 + 1,
            n_mels=config.n_mels,
            sample_rate=config.sampling_rate,
            f_min=config.f_min,
            f_max=config.f_max,
        ).to(mel_power)
        griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=config.n_fft,
            n_iter=config.griffin_lim_iters,
            win_length=config.win_length,
            hop_length=config.hop_length,
            power=2.0,
            length=(log_mel.shape[1] - 1) * config.hop_length,
        ).to(mel_power)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return griffin_lim(inverse_mel(mel_power))[:, : (frames - 1) * config.hop_length]
