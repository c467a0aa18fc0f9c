"""Ablation studies of the LaCT recogniser head: which components matter, how the fast-weight optimiser
compares, which chunk and window sizes suit a budget, and whether chunk boundaries should follow pauses.

``grid``: the YAML grid and its checks; ``data``: the splits every run reads; ``boundaries`` and ``pauses``:
chunk ends per frame, fixed or at Silero VAD pauses; ``runner``: one run per (variant, seed), resumable and
safe side by side; ``measure``: error rates, adaptation gain, speed, memory; ``statistics``: intervals over
seeds and utterances; ``report`` and ``recommendations``: REPORT.md, plots, the table
``presets.recommend`` reads; ``study``: all of it from one grid file (``eval/ablations/run_ablations.py``).

Generation studies (``task: lm``): ``lm_data``: audio-token sequences of the corpus' long sessions, tokenised
once; ``lm_model``: the small audio-token LMs, their training and held-out NLL by position; ``lm_runner``: one
run of such a study.
"""
