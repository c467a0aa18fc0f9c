"""Training with Accelerate: arguments, length-bucketed data loading, the model factory, validation and the loop.

``python -m modeling_lact_audio.training CONFIG.yaml [--flag value ...]`` (or ``run_scripts/train.py``).
"""
