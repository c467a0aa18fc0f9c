"""Files generated for Hub folders, never edited by hand.

- ``bundle``: ``modeling_lact_audio/lact_kernels.py``, the LaCT op of ``kernels/`` as one flat file
  (``run_scripts/bundle_kernels.py``).
- ``checkpoint``: a training run exported as a Hub-ready checkpoint folder, and the code copies and
  ``config.json`` of an existing folder rewritten from the current package
  (``run_scripts/export_checkpoint.py``).

The modeling files never import this package: an exported folder stays flat.
"""
