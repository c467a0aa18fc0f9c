"""Where the models get the LaCT op from, chosen by where this file runs.

- In the installed package (``__package__ == "modeling_lact_audio"``): ``modeling_lact_audio.kernels``,
  the reference-tested op and the place for GPU kernels.
- In an exported Hub folder loaded with ``trust_remote_code`` (``__package__`` under
  ``transformers_modules``): the folder's own ``lact_kernels.py``, generated from ``kernels/`` by
  ``run_scripts/bundle_kernels.py``; nothing installed is imported.
- Anywhere else (a clone without ``pip install -e .``, a copy of these files in another package):
  ``ImportError`` saying how to install. There is no fallback from one source to the other.
"""

from transformers.utils import TRANSFORMERS_DYNAMIC_MODULE_NAME

INSTALL_HINT = (
    "lact-audio is not installed: run `pip install -e .` in the repository root (it installs kernels/ and "
    "processors/ as modeling_lact_audio.kernels and modeling_lact_audio.processors)"
)

if (__package__ or "").split(".")[0] == TRANSFORMERS_DYNAMIC_MODULE_NAME:
    from .lact_kernels import ORDERS, UPDATE_RULES, FastWeightState, lact_swiglu, value_checks_enabled
elif __package__ == "modeling_lact_audio":
    # transformers' check_imports skips try blocks, so an exported folder does not require this package.
    try:
        from modeling_lact_audio.kernels import ORDERS, UPDATE_RULES, FastWeightState, lact_swiglu
        from modeling_lact_audio.kernels.validation import value_checks_enabled
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("modeling_lact_audio"):
            raise  # a missing dependency of the op, not a missing install
        raise ImportError(f"{INSTALL_HINT} ({error})") from error
else:
    raise ImportError(
        f"the lact-audio modeling files run inside the installed package modeling_lact_audio or inside a Hub "
        f"folder loaded with trust_remote_code, not as {__package__!r}; {INSTALL_HINT}"
    )

__all__ = ["ORDERS", "UPDATE_RULES", "FastWeightState", "lact_swiglu", "value_checks_enabled"]
