"""Test-time adaptation of recognisers: carried fast-weight states, their presets and statistics, and the
gradient baselines (SUTA, supervised fine-tuning) they are compared with."""
