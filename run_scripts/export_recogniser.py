"""Export a trained recogniser head with the pretrained Whisper encoder as one self-contained folder.

    python run_scripts/export_recogniser.py outputs/recogniser_v2/lact/best model_cards/checkpoints/lact_whisper_ctc \\
        --lm outputs/recogniser/language_model --decoder-settings eval/results/recogniser/results.json

The folder loads with ``AutoModelForCTC`` / ``AutoProcessor`` / ``pipeline("automatic-speech-recognition")``
(lact-audio installed) or ``trust_remote_code=True``; ``language_model/`` carries the word LM with the LM
weight and word bonus tuned on validation (``--decoder-settings``: the evaluation's ``results.json``, whose
``"lact + LM"`` system holds them, or a JSON file with ``lm_weight``, ``word_score``, ``beam_size``).
"""

import argparse
import json
from pathlib import Path

from modeling_lact_audio.recogniser.export import export_recogniser
from modeling_lact_audio.whisper_conversion.baseline import default_output_dir


def decoder_settings(path: str | None, head_name: str = "lact") -> dict | None:
    """The decoder settings tuned on validation in ``path``: an evaluation's ``results.json`` (the
    ``"<head_name> + LM"`` system's ``lm`` entry) or a file holding ``lm_weight``, ``word_score``, ``beam_size``."""
    if path is None:
        return None
    data = json.loads(Path(path).read_text())
    if "lm_weight" in data:
        return data
    system = data.get("systems", {}).get(f"{head_name} + LM")
    if not system or not system.get("lm"):
        raise ValueError(
            f"{path} has no tuned LM settings for {head_name!r}: pass the recogniser evaluation's results.json "
            "(run with --lm) and the head's name there (--head-name)"
        )
    return system["lm"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("head", help="a trained head folder (train_recogniser.py's best/)")
    parser.add_argument("output", help="the folder to write")
    parser.add_argument("--whisper", default=str(default_output_dir()), help="the Whisper folder of the state cache")
    parser.add_argument("--lm", default=None, help="language_model folder (build_language_model.py)")
    parser.add_argument("--decoder-settings", default=None, help="results.json of the evaluation, or a settings file")
    parser.add_argument("--head-name", default="lact", help="the head's system name in results.json")
    parser.add_argument(
        "--card", action="store_true", help="write README.md from --decoder-settings' results.json and summary.json"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT even if it is not an earlier export")
    args = parser.parse_args(argv)
    folder = export_recogniser(
        args.head,
        args.whisper,
        args.output,
        args.lm,
        decoder_settings(args.decoder_settings, args.head_name),
        overwrite=args.overwrite,
    )
    if args.card:
        from modeling_lact_audio import LaCTAudioConfig
        from modeling_lact_audio.recogniser.model_card import render_model_card

        results = json.loads(Path(args.decoder_settings).read_text())
        summary = json.loads((Path(args.head).parent / "summary.json").read_text())
        card = render_model_card(results, summary, LaCTAudioConfig.from_pretrained(folder), args.head_name, folder.name)
        (folder / "README.md").write_text(card)
    print(f"wrote {folder}")
    return folder


if __name__ == "__main__":
    main()
