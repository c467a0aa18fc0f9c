"""LaCTFeatureExtractor: raw audio in, padded log-mel or waveform features plus attention_mask out."""

from collections.abc import Iterable

import numpy as np
import torch
from transformers.feature_extraction_sequence_utils import SequenceFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature
from transformers.utils import logging

from .audio_input import check_sampling_rate, prepare_waveforms
from .log_mel import WINDOWS, LogMelSpectrogram, frame_waveform

logger = logging.get_logger(__name__)

FEATURE_TYPES = ("log_mel", "waveform")
NORMALIZATIONS = ("none", "per_utterance", "global", "per_speaker")
MIN_FEATURE_STD = 1e-6  # below this every feature is constant: the fitting audio was silence
STD_FLOOR_RATIO = 1e-2  # no fitted std is below this fraction of the largest one


class LaCTFeatureExtractor(SequenceFeatureExtractor):
    r"""Turns raw audio into the inputs of the LaCT audio models.

    Input: one utterance or a batch, numpy / torch / lists, float or int16/int32 PCM, mono or
    multi-channel (mixed down by averaging; see ``processors/audio_input.py`` for the exact rules).
    Audio at another rate is resampled with torchaudio when ``resample=True``.

    Output (a ``BatchFeature``; "pt" / "np" tensors or lists), time first after batch, like
    Wav2Vec2 and parakeet:

    - ``feature_type="log_mel"``: ``input_features`` float32 ``[B, T', n_mels]``, natural-log mel
      power, ``T' = 1 + T // hop_length`` for an even ``n_fft`` (centred frames);
    - ``feature_type="waveform"``: ``input_values`` float32 ``[B, T]`` (``frame_length=None``, the
      Wav2Vec2 layout) or ``[B, T', frame_length]`` frames taken every ``hop_length`` samples,
      multiplied by ``window`` (the tail is zero-padded);
    - ``attention_mask`` int32 ``[B, T']`` (1 = real frame, 0 = padding).

    Normalisation (after log-mel, per mel bin; for waveforms one statistic over all samples,
    applied before framing): ``"none"``, ``"per_utterance"`` (zero mean, unit variance over the
    utterance's own frames), ``"global"`` (``global_mean`` / ``global_std`` fitted once with
    :meth:`fit_normalization` and saved in ``preprocessor_config.json``), ``"per_speaker"``
    (``speaker_stats[str(speaker_id)]``, fitted with :meth:`fit_normalization` and the speaker ids;
    pass ``speaker_ids`` with the audio).

    Args:
        feature_type: ``"log_mel"`` or ``"waveform"``.
        sampling_rate: the rate features are computed at (Hz).
        resample: resample other rates (else they raise ``ValueError``).
        n_mels, n_fft, win_length, hop_length, window, f_min, f_max, mel_scale, mel_norm, mel_floor, pad_mode:
            log-mel parameters (see ``processors/log_mel.py``); ``hop_length`` and ``window`` also set
            waveform framing.
        frame_length: waveform frame length in samples, or None for the unframed waveform.
        normalization, global_mean, global_std, speaker_stats, norm_eps: see above.
        padding_value: value of padded features (0 is the mean after normalisation).
    """

    def __init__(
        self,
        feature_type: str = "log_mel",
        sampling_rate: int = 16000,
        resample: bool = True,
        n_mels: int = 80,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int = 160,
        window: str = "hann",
        f_min: float = 0.0,
        f_max: float | None = None,
        mel_scale: str = "htk",
        mel_norm: str | None = None,
        mel_floor: float = 1e-10,
        pad_mode: str = "constant",
        frame_length: int | None = None,
        normalization: str = "per_utterance",
        global_mean: list[float] | None = None,
        global_std: list[float] | None = None,
        speaker_stats: dict[str, dict[str, list[float]]] | None = None,
        norm_eps: float = 1e-5,
        padding_value: float = 0.0,
        **kwargs,
    ):
        if feature_type not in FEATURE_TYPES:
            raise ValueError(f"feature_type must be one of {FEATURE_TYPES}, got {feature_type!r}.")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}.")
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {sorted(WINDOWS)}, got {window!r}.")
        if frame_length is not None and (frame_length <= 0 or hop_length <= 0):
            raise ValueError(f"frame_length and hop_length must be positive, got {frame_length}, {hop_length}.")
        # Both are derived from the arguments below but come back from a saved preprocessor_config.json.
        kwargs.pop("feature_size", None)
        kwargs.pop("model_input_names", None)
        feature_size = n_mels if feature_type == "log_mel" else (frame_length or 1)
        sampling_rate = check_sampling_rate(sampling_rate)
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs)
        self.feature_type = feature_type
        self.resample = resample
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.win_length = win_length or n_fft
        self.hop_length = hop_length
        self.window = window
        self.f_min = f_min
        self.f_max = f_max
        self.mel_scale = mel_scale
        self.mel_norm = mel_norm
        self.mel_floor = mel_floor
        self.pad_mode = pad_mode
        self.frame_length = frame_length
        self.normalization, self.norm_eps = normalization, norm_eps
        self.global_mean, self.global_std = global_mean, global_std
        self.speaker_stats = speaker_stats or {}
        self._check_statistics()
        self.model_input_names = [
            "input_features" if feature_type == "log_mel" else "input_values",
            "attention_mask",
        ]
        self._log_mel = None
        if feature_type == "log_mel":
            self._log_mel = LogMelSpectrogram(
                sampling_rate=sampling_rate,
                n_fft=n_fft,
                win_length=self.win_length,
                hop_length=hop_length,
                n_mels=n_mels,
                f_min=f_min,
                f_max=f_max,
                window=window,
                mel_scale=mel_scale,
                mel_norm=mel_norm,
                mel_floor=mel_floor,
                pad_mode=pad_mode,
            )

    def to_dict(self) -> dict:
        """The JSON-serialisable constructor arguments (the torchaudio modules are rebuilt on load)."""
        output = super().to_dict()
        output.pop("_log_mel", None)
        output.pop("model_input_names", None)
        return output

    def _analysis(self, waveform: torch.Tensor) -> torch.Tensor:
        """Features before normalisation: log-mel ``[T', n_mels]`` or the waveform ``[T, 1]``."""
        if self._log_mel is not None:
            with torch.no_grad():
                return self._log_mel(waveform)
        return waveform[:, None]

    def _output(self, features: torch.Tensor) -> torch.Tensor:
        if self._log_mel is not None:
            return features
        if self.frame_length is None:
            return features[:, 0]
        return frame_waveform(features[:, 0], self.frame_length, self.hop_length, self.window)

    def _check_statistics(self) -> None:
        """Reject normalisation statistics that would give garbage features (a zero or non-finite std)."""
        tables = {"global": (self.global_mean, self.global_std)} if self.global_std is not None else {}
        tables |= {f"speaker {k!r}": (v.get("mean"), v.get("std")) for k, v in self.speaker_stats.items()}
        for who, (mean, std) in tables.items():
            mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
            if mean.shape != std.shape or not np.isfinite(mean).all() or not (np.isfinite(std) & (std > 0)).all():
                raise ValueError(
                    f"{type(self).__name__}: the {who} normalisation statistics need finite means and stds > 0 of "
                    f"one shape (got mean {mean.shape}, std {std.shape}, min std {std.min() if std.size else None}); "
                    "refit them with fit_normalization(audio)."
                )

    def _stats(self, features: torch.Tensor, speaker_id) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.normalization == "none":
            return None
        if self.normalization == "per_utterance":
            return features.mean(0), features.std(0, unbiased=False)
        if self.normalization == "global":
            if self.global_mean is None or self.global_std is None:
                raise ValueError("normalization='global' needs statistics: call fit_normalization(audio) first.")
            return torch.tensor(self.global_mean), torch.tensor(self.global_std)
        if speaker_id is None:
            raise ValueError("normalization='per_speaker' needs `speaker_ids`, one per utterance.")
        stats = self.speaker_stats.get(str(speaker_id))
        if stats is None:
            raise ValueError(
                f"No statistics for speaker {speaker_id!r}; fit them with "
                "fit_normalization(audio, speaker_ids=...). Known speakers: "
                f"{sorted(self.speaker_stats)[:10]}."
            )
        return torch.tensor(stats["mean"]), torch.tensor(stats["std"])

    def _features(self, waveform: torch.Tensor, speaker_id) -> np.ndarray:
        features = self._analysis(waveform)
        stats = self._stats(features, speaker_id)
        if stats is not None:
            mean, std = stats
            features = (features - mean.to(features)) / (std.to(features) + self.norm_eps)
        return self._output(features).numpy()

    @staticmethod
    def _speaker_list(speaker_ids, count: int) -> list:
        if speaker_ids is None:
            return [None] * count
        if isinstance(speaker_ids, (str, int, np.integer)):
            return [speaker_ids] * count
        speaker_ids = list(speaker_ids)
        if len(speaker_ids) != count:
            raise ValueError(f"Got {len(speaker_ids)} speaker ids for {count} utterances.")
        return speaker_ids

    def __call__(
        self,
        raw_speech,
        sampling_rate: int | None = None,
        speaker_ids=None,
        padding: bool | str = "longest",
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Featurise and pad one utterance or a batch.

        Args:
            raw_speech: ``[T]`` or a batch (list of ``[T_i]``, or ``[B, T]``); see the class docstring.
            sampling_rate: rate of ``raw_speech`` in Hz. Missing: a warning, and it is assumed to be
                ``self.sampling_rate`` (as in transformers).
            speaker_ids: one id per utterance (or one id for all), for
                ``normalization="per_speaker"``.
            padding, max_length, truncation, pad_to_multiple_of: as ``SequenceFeatureExtractor.pad``,
                in frames (or samples for the unframed waveform).
            return_attention_mask: default ``self.return_attention_mask`` (True).
            return_tensors: ``"pt"``, ``"np"`` or None (lists of numpy arrays).

        Returns:
            ``BatchFeature`` with ``input_features`` ``[B, T', n_mels]`` or ``input_values``
            ``[B, T]`` / ``[B, T', frame_length]`` (float32), and ``attention_mask`` ``[B, T']`` (int32).

        Raises:
            ValueError: empty audio, NaN/Inf, unsupported dtype or rank, a rate mismatch with
                ``resample=False``, missing normalisation statistics, non-finite features.
        """
        if kwargs:
            logger.warning_once(f"{type(self).__name__} ignores the arguments {sorted(kwargs)}.")
        waveforms, _ = prepare_waveforms(
            raw_speech, sampling_rate, self.sampling_rate, self.resample, type(self).__name__
        )
        speakers = self._speaker_list(speaker_ids, len(waveforms))
        features = [self._features(wave, speaker) for wave, speaker in zip(waveforms, speakers)]
        for i, item in enumerate(features):
            if not np.isfinite(item).all():
                peak = float(waveforms[i].abs().max())
                raise ValueError(f"audio[{i}] gives non-finite features: its peak amplitude {peak:g} is far too large.")
        name = self.model_input_names[0]
        padded = self.pad(
            BatchFeature({name: features}),
            padding=padding,
            max_length=max_length,
            truncation=truncation,
            pad_to_multiple_of=pad_to_multiple_of,
            return_attention_mask=self.return_attention_mask
            if return_attention_mask is None
            else return_attention_mask,
        )
        padded[name] = [np.asarray(item, dtype=np.float32) for item in padded[name]]
        return BatchFeature(dict(padded), tensor_type=return_tensors)

    def fit_normalization(self, audio: Iterable, sampling_rate: int | None = None, speaker_ids=None):
        """Fit ``global_mean`` / ``global_std`` (and per-speaker statistics) over a dataset.

        Utterances are read one at a time, so the dataset may be any iterable (memory is bounded by
        the longest utterance).

        Args:
            audio: iterable of utterances ``[T_i]`` (any input one ``__call__`` accepts per item).
            sampling_rate: rate of every utterance in Hz.
            speaker_ids: iterable of ids, one per utterance; fills ``speaker_stats`` (keys ``str(id)``).

        Returns:
            ``self``; the statistics are lists of ``feature dim`` floats (``n_mels``, or 1 for waveforms);
            each std is floored at ``STD_FLOOR_RATIO`` times the largest.

        Raises:
            ValueError: no audio, or audio whose features are all constant (silence).
        """
        totals: dict = {}
        speakers = iter(speaker_ids) if speaker_ids is not None else None
        for item in audio:
            (waveform,), _ = prepare_waveforms(item, sampling_rate, self.sampling_rate, self.resample, "fit")
            features = self._analysis(waveform).double()
            keys = [None] if speakers is None else [None, str(next(speakers))]
            for key in keys:
                count, total, squares = totals.get(key, (0, 0.0, 0.0))
                totals[key] = (count + len(features), total + features.sum(0), squares + (features**2).sum(0))
        if None not in totals:
            raise ValueError("fit_normalization got no audio.")

        def mean_std(count, total, squares, who):
            mean = total / count
            std = (squares / count - mean**2).clamp_min(0).sqrt()
            if float(std.max()) <= MIN_FEATURE_STD:
                raise ValueError(
                    f"fit_normalization: every feature of {who} is constant (std <= {MIN_FEATURE_STD}): silence or "
                    "a constant signal cannot give normalisation statistics; fit on speech."
                )
            # A band with (almost) no energy variation, e.g. above the cut-off of 8 kHz audio resampled to
            # 16 kHz, would be blown up by 1 / std: floor each std at STD_FLOOR_RATIO of the largest.
            std = std.clamp_min(STD_FLOOR_RATIO * float(std.max()))
            return mean.tolist(), std.tolist()

        self.global_mean, self.global_std = mean_std(*totals.pop(None), "the audio")
        for key, sums in totals.items():
            mean, std = mean_std(*sums, f"speaker {key!r}")
            self.speaker_stats[key] = {"mean": mean, "std": std}
        return self
