"""Generating audio with the audio-token LMs: continuations (whole or streamed chunk by chunk), the drift
metrics of a long continuation, and what decoding costs after a long context.

``streaming``: :func:`generate_continuation`, :func:`stream_generate_audio` and :func:`streaming_latency`;
``window_metrics``: :func:`continuation_metrics`; ``decode_cost``: :func:`decoding_cost`.
"""

from .decode_cost import cache_nbytes, decoding_cost, greedy_decode
from .streaming import AudioChunk, generate_continuation, samples_per_frame, stream_generate_audio, streaming_latency
from .window_metrics import continuation_metrics, pitch_track, window_features

__all__ = [
    "AudioChunk",
    "cache_nbytes",
    "continuation_metrics",
    "decoding_cost",
    "generate_continuation",
    "greedy_decode",
    "pitch_track",
    "samples_per_frame",
    "stream_generate_audio",
    "streaming_latency",
    "window_features",
]
