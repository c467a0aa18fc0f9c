"""Helpers of run_scripts/train.py: arguments, data, model factory, evaluation."""
