"""The efficiency benchmark of lact-audio: the LaCT op, one mixer, whole models, streaming, FLOPs.

Modules: ``measure`` (timing with ``torch.utils.benchmark``, peak memory, exponent fits, machine
record), ``op`` (the op alone), ``flops`` (analytic FLOP counts), ``jobs`` (the measured ladders and
their worker processes), ``report`` (Markdown and plots from the JSON), ``suite`` (the sections and
the command line). Run ``python -m modeling_lact_audio.benchmarks --help``.
"""
