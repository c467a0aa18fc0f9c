"""Export a trained run's model and processor as a Hub-ready checkpoint folder (what `model_cards/checkpoints/` holds).

    python run_scripts/export_checkpoint.py outputs/small_cpu_long/lact/best model_cards/checkpoints/lact_small_ctc \
        --storage_dtype bfloat16
    python run_scripts/export_checkpoint.py --refresh-code model_cards/checkpoints/*/

Writes ``config.json``, ``model.safetensors``, the processor files and the modeling code copies
(``trust_remote_code`` works where lact-audio is not installed). ``--storage_dtype bfloat16``
halves the download: the tensors are stored in bf16 while ``config.json`` keeps ``dtype: float32``,
so ``from_pretrained`` loads (and the model computes) in float32 from the bf16-rounded weights.
The export is checked before the script returns: the folder is reloaded with the Auto classes and
its CTC logits on a random input are compared with the source model's (the max difference is
printed). Model card: write ``README.md`` in the folder from the evaluation of the exported folder
itself (``eval/asr_eval.py --models name=<folder>``), not of the source run.

The code copies and ``config.json`` are generated: ``--refresh-code FOLDER...`` rewrites them from
the current package (after a change to the modeling files, ``kernels/`` or the config class), leaving
the weights, the processor files and the model card alone; a test checks every shipped folder is fresh.
"""

import argparse
import copy
import filecmp
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoModelForCTC, AutoProcessor
from transformers.dynamic_module_utils import custom_object_save

import modeling_lact_audio
from modeling_lact_audio import LaCTAudioConfig

from .target import claim_target, write_export_record

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def architecture_class(name: str) -> type:
    """The lact-audio model class named ``name`` in a config's ``architectures`` (the package's models and its
    parameter-matched baselines); ValueError for a name lact-audio does not define."""
    from modeling_lact_audio import baselines  # the baselines subclass the models, so they import after them

    for module in (modeling_lact_audio, baselines):
        if isinstance(getattr(module, name, None), type):
            return getattr(module, name)
    raise ValueError(f"config.architectures names {name!r}, which is not a lact-audio model class")


def write_generated_files(config: LaCTAudioConfig, target: Path) -> None:
    """Write the modeling code copies and ``config.json`` (``dtype: float32``) of a folder saved from ``config``.

    The code copies are what ``save_pretrained`` copies for ``register_for_auto_class``: the modules of
    the config class and of the architectures, and every file they import relatively.
    """
    if not config.architectures:
        raise ValueError(
            "the config names no architectures (config.architectures is empty): it was not saved by a lact-audio "
            "model's save_pretrained; export a trained run with run_scripts/export_checkpoint.py SOURCE TARGET"
        )
    for name in config.architectures:
        custom_object_save(architecture_class(name), target)
    config = copy.deepcopy(config)
    config.dtype = torch.float32  # compute dtype; the stored tensors may be narrower
    config.save_pretrained(target)


def export_checkpoint(source: Path, target: Path, storage_dtype: str = "float32", overwrite: bool = False) -> float:
    """Save the CTC model and processor of ``source`` (a ``save_pretrained`` folder) into ``target``.

    Args:
        source: folder with ``config.json``, weights and processor files (``run_scripts/train.py``'s
            ``best/`` or ``last/``).
        target: output folder; replaced if it is an earlier export (a README.md model card there is kept).
        storage_dtype: ``"float32"`` or ``"bfloat16"`` for the stored tensors; the model loads in float32.
        overwrite: replace ``target`` even if it is a non-empty folder this exporter did not write.

    Returns:
        The max absolute difference between the source model's logits and the reloaded export's on
        one random 2 s input (0 for float32 storage; bf16 rounding otherwise).
    """
    if storage_dtype not in DTYPES:
        raise ValueError(f"storage_dtype must be one of {sorted(DTYPES)}, got {storage_dtype!r}")
    source, target = Path(source), Path(target)
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"{source} has no config.json: pass a save_pretrained folder such as <run>/best")
    claim_target(target, overwrite)
    model = AutoModelForCTC.from_pretrained(source, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(source)
    features = torch.randn(1, 200, model.config.num_mel_bins, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = model(input_features=features).logits
    card = (target / "README.md").read_text() if (target / "README.md").is_file() else None
    if target.exists():
        shutil.rmtree(target)
    model.to(DTYPES[storage_dtype]).save_pretrained(target, safe_serialization=True)
    processor.save_pretrained(target)
    write_generated_files(model.config, target)
    write_export_record(target, tool="export_checkpoint", source=str(source), storage_dtype=storage_dtype)
    if card is not None:
        (target / "README.md").write_text(card)

    reloaded = AutoModelForCTC.from_pretrained(target).eval()
    if reloaded.dtype != torch.float32:
        raise RuntimeError(f"the export loads in {reloaded.dtype}, expected float32")
    with safe_open(target / "model.safetensors", "pt") as f:
        stored = {f.get_slice(name).get_dtype() for name in f.keys()}
    expected = {"F32": "float32", "BF16": "bfloat16"}
    if {expected.get(d, d) for d in stored} != {storage_dtype}:
        raise RuntimeError(f"stored tensor dtypes {sorted(stored)} are not all {storage_dtype}")
    with torch.inference_mode():
        diff = (want - reloaded(input_features=features).logits).abs().max()
    return float(diff)


def _generated_names(folder: Path) -> set:
    return {p.name for p in folder.glob("*.py")} | {"config.json"}


def refresh_code(folder: Path) -> list:
    """Rewrite the code copies and ``config.json`` of the checkpoint ``folder`` from the current package.

    Weights, processor files and ``README.md`` are left untouched. Returns the names of the files that changed.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} has no config.json: --refresh-code rewrites the code of an exported checkpoint folder "
            "(export one with run_scripts/export_checkpoint.py SOURCE TARGET)"
        )
    stale = stale_generated_files(folder)
    for name in {p.name for p in folder.glob("*.py")}:
        (folder / name).unlink()  # a module the package no longer ships must not linger
    write_generated_files(LaCTAudioConfig.from_pretrained(folder), folder)
    return stale


def stale_generated_files(folder: Path) -> list:
    """Names of the generated files of ``folder`` that differ from what the export would write now
    (including ones it would add or no longer write); empty when the folder is fresh."""
    folder = Path(folder)
    with tempfile.TemporaryDirectory() as fresh:
        fresh = Path(fresh)
        write_generated_files(LaCTAudioConfig.from_pretrained(folder), fresh)
        names = _generated_names(folder) | _generated_names(fresh)
        return sorted(
            n
            for n in names
            if not (folder / n).is_file()
            or not (fresh / n).is_file()
            or not filecmp.cmp(folder / n, fresh / n, shallow=False)
        )


def main(argv=None) -> None:
    """Export a run (``SOURCE TARGET``) or refresh the generated files of folders (``--refresh-code FOLDER...``)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, nargs="?", help="save_pretrained folder of a trained CTC model")
    parser.add_argument("target", type=Path, nargs="?", help="output folder, e.g. model_cards/checkpoints/lact_x")
    parser.add_argument("--storage_dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--overwrite", action="store_true", help="replace TARGET even if it is not an earlier export")
    parser.add_argument(
        "--refresh-code", type=Path, nargs="+", metavar="FOLDER", help="rewrite the code copies and config.json"
    )
    args = parser.parse_args(argv)
    if args.refresh_code:
        if args.source or args.target:
            parser.error("--refresh-code takes checkpoint folders only, not SOURCE TARGET")
        for folder in args.refresh_code:
            changed = refresh_code(folder)
            print(f"{folder}: {', '.join(changed) if changed else 'already fresh'}")
        return
    if args.source is None or args.target is None:
        parser.error("pass SOURCE and TARGET to export a run, or --refresh-code FOLDER...")
    diff = export_checkpoint(args.source, args.target, args.storage_dtype, args.overwrite)
    size = sum(p.stat().st_size for p in args.target.iterdir() if p.is_file())
    print(f"wrote {args.target} ({size / 2**20:.1f} MiB); max |logit difference| after reload: {diff:.3g}")


if __name__ == "__main__":
    main()
