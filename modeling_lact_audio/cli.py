"""``lact-audio``: one command for the library's entry points.

    lact-audio transcribe FILE... [--model DIR] [--lm]
    lact-audio adapt FILE... [--model DIR] [--preset-in DIR] [--preset-out DIR]
    lact-audio generate --model DIR [--prompt CODES.npy] [--max-new-tokens N] [--output CODES.npy]
    lact-audio train CONFIG.yaml [trainer flags]        (modeling_lact_audio.training)
    lact-audio bench [eval/bench_lact_op.py flags]      (--suite: modeling_lact_audio.benchmarks)
    lact-audio report paper|gpu|efficiency|recogniser|adaptation [...]

``train``, ``bench`` and ``report paper|gpu`` hand every argument after them to the entry point they
name, so ``lact-audio train --help`` prints the trainer's own help.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = ROOT / "model_cards" / "checkpoints"
DEFAULT_MODEL = CHECKPOINTS / "lact_small_ctc"
SAMPLING_RATE = 16000


def _fail(command: str, message: str) -> SystemExit:
    return SystemExit(f"lact-audio {command}: error: {message}")


def _script_main(relative: str):
    """``main`` of a repository script (``eval/...``) loaded by path: those scripts are no package modules."""
    path = ROOT / relative
    if not path.is_file():
        raise _fail(relative, f"{path} is missing: this command needs a checkout of the lact-audio repository")
    spec = importlib.util.spec_from_file_location(f"_lact_audio_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def read_wav(path: str, command: str):
    """Mono float32 samples ``[L]`` of ``path`` at 16 kHz (resampled when the file has another rate)."""
    import numpy as np
    import soundfile as sf
    import torch
    import torchaudio

    if not Path(path).is_file():
        raise _fail(command, f"no audio file at {path!r}")
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise _fail(command, f"cannot read {path!r} as audio: {error}") from error
    if audio.shape[0] == 0:
        raise _fail(command, f"{path!r} holds no samples")
    audio = audio.mean(axis=1)
    if rate != SAMPLING_RATE:
        audio = torchaudio.functional.resample(torch.from_numpy(audio), rate, SAMPLING_RATE).numpy()
    return np.ascontiguousarray(audio, dtype=np.float32)


def _model_folder(args, command: str) -> str:
    folder = Path(args.model)
    if not (folder / "config.json").is_file():
        raise _fail(command, f"no model at {str(folder)!r} (a folder with config.json); pass --model DIR")
    return str(folder)


def transcribe(args) -> list[str]:
    """Print ``FILE<TAB>transcript`` per file; returns the transcripts."""
    import torch

    from .asr import Transcriber

    if args.threads:
        torch.set_num_threads(args.threads)
    audio = [read_wav(f, "transcribe") for f in args.files]
    try:
        transcriber = Transcriber.from_pretrained(_model_folder(args, "transcribe"), use_lm=args.lm)
    except FileNotFoundError as error:
        raise _fail("transcribe", str(error)) from error
    texts = transcriber(audio)
    for path, text in zip(args.files, texts):
        print(f"{path}\t{text}")
    return texts


def adapt(args) -> list[str]:
    """Transcribe a speaker's files in order, carrying the fast-weight state from one to the next."""
    import torch
    from transformers import AutoModelForCTC, AutoProcessor

    from .cache_lact_audio import LaCTCache

    if args.threads:
        torch.set_num_threads(args.threads)
    audio = [read_wav(f, "adapt") for f in args.files]
    folder = _model_folder(args, "adapt")
    model, processor = AutoModelForCTC.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)
    if getattr(model.config, "mixer", None) != "lact":
        raise _fail("adapt", f"{folder} has no LaCT mixer (mixer={getattr(model.config, 'mixer', None)!r}): no state")
    if args.preset_in:
        try:
            cache = LaCTCache.from_pretrained(args.preset_in, model.config)
        except (FileNotFoundError, ValueError) as error:
            raise _fail("adapt", str(error)) from error
    else:
        cache = LaCTCache(model.config.num_hidden_layers)
    texts = []
    with torch.no_grad():
        for path, samples in zip(args.files, audio):
            inputs = processor(audio=[samples], sampling_rate=SAMPLING_RATE, return_tensors="pt")
            cache.start_new_utterance()
            out = model(**inputs, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            length = out.logits.shape[1] if out.output_lengths is None else int(out.output_lengths[0])
            ids = out.logits.argmax(-1)[:, :length]
            texts.append(processor.tokenizer.batch_decode(ids)[0])
            print(f"{path}\t{texts[-1]}")
    if args.preset_out:
        cache.save_pretrained(args.preset_out, model.config)
        print(f"preset: {args.preset_out}", file=sys.stderr)
    return texts


def generate(args):
    """Continue (or start) a sequence of audio codes ``[num_codebooks, T]`` with a generator checkpoint."""
    import numpy as np
    import torch

    from .modeling_lact_audio import LaCTAudioForCausalLM

    if args.model is None:
        shipped = [p.parent.name for p in sorted(CHECKPOINTS.glob("*/config.json")) if "CausalLM" in p.read_text()]
        if not shipped:
            raise _fail(
                "generate",
                f"no generator checkpoint ships under {CHECKPOINTS}; pass --model DIR of a LaCTAudioForCausalLM "
                "checkpoint (task='lm'), e.g. the best/ folder of `lact-audio train CONFIG --task lm`",
            )
        args.model = str(CHECKPOINTS / shipped[0])
    folder = _model_folder(args, "generate")
    config = json.loads((Path(folder) / "config.json").read_text())
    if config.get("task") != "lm":
        raise _fail("generate", f"{folder} is a task={config.get('task')!r} model; pass a generator (task='lm')")
    torch.manual_seed(args.seed)
    model = LaCTAudioForCausalLM.from_pretrained(folder).eval()
    K = model.config.num_codebooks
    if args.prompt:
        prompt = torch.as_tensor(np.load(args.prompt), dtype=torch.long)
        if prompt.dim() != 2 or prompt.shape[0] != K:
            raise _fail("generate", f"--prompt must hold codes [num_codebooks={K}, T], got {tuple(prompt.shape)}")
    else:
        prompt = torch.zeros(K, 1, dtype=torch.long)
    sampling = {"do_sample": False}
    if args.temperature > 0:
        sampling = {"do_sample": True, "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
    codes = model.generate(prompt, max_new_tokens=args.max_new_tokens, **sampling)  # [K, T + new]
    np.save(args.output, codes.numpy())
    print(f"{args.output}: codes {tuple(codes.shape)}")
    return codes


def _train(argv):
    from .training.trainer import main

    return main(argv)


def _bench(argv):
    if argv[:1] == ["--suite"]:
        from .benchmarks.suite import main

        return main(argv[1:])
    return _script_main("eval/bench_lact_op.py")(argv)


def _report(argv):
    what, rest = (argv[0], argv[1:]) if argv and not argv[0].startswith("-") else (None, argv)
    if what == "paper":
        from .paper import main

        return main(rest)
    if what == "gpu":
        from .benchmarks.gpu_report import main

        return main(rest)
    parser = argparse.ArgumentParser(
        prog="lact-audio report",
        description="Build the paper (report paper [--output DIR] [--no-pdf]), the GPU report (report gpu "
        "[--results DIR]), or REPORT.md next to a results JSON (efficiency / recogniser / adaptation).",
    )
    parser.add_argument("what", choices=("paper", "gpu", "efficiency", "recogniser", "adaptation"))
    parser.add_argument("json", type=Path, help="the results JSON (efficiency.json / results.json)")
    args = parser.parse_args(argv)
    if not args.json.is_file():
        parser.error(f"no results JSON at {str(args.json)!r}")
    results = json.loads(args.json.read_text())
    if args.what == "efficiency":
        from .benchmarks.report import write_report

        path = write_report(results, args.json.parent, args.json.stem)
    else:
        if args.what == "recogniser":
            from .recogniser.report import render_report
        else:
            from .adaptation.report import render_report
        path = args.json.parent / "REPORT.md"
        path.write_text(render_report(results))
    print(path)
    return path


FORWARDED = {
    "train": (_train, "train a model: the trainer's arguments (python -m modeling_lact_audio.training)"),
    "bench": (_bench, "benchmark the LaCT op (eval/bench_lact_op.py); --suite: the efficiency suite"),
    "report": (_report, "build the paper (report paper) or a report from results JSON"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lact-audio", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("transcribe", help="print the transcript of each audio file", description=transcribe.__doc__)
    p.add_argument("files", nargs="+", metavar="FILE", help="wav/flac/ogg files (resampled to 16 kHz)")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="a checkpoint folder (default: %(default)s)")
    p.add_argument("--lm", action="store_true", help="beam search with the folder's language_model/")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.set_defaults(func=transcribe)

    p = sub.add_parser(
        "adapt", help="transcribe a speaker's files, carrying the fast weights", description=adapt.__doc__
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="one speaker's files, in order")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="a LaCT CTC checkpoint (default: %(default)s)")
    p.add_argument("--preset-in", help="start from a saved state (LaCTCache.save_pretrained folder)")
    p.add_argument("--preset-out", help="save the adapted state here (LaCTCache.save_pretrained)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.set_defaults(func=adapt)

    p = sub.add_parser(
        "generate", help="generate audio codes with a generator checkpoint", description=generate.__doc__
    )
    p.add_argument("--model", default=None, help="a LaCTAudioForCausalLM checkpoint (none ships)")
    p.add_argument("--prompt", help="codes to continue, .npy int [num_codebooks, T] (default: one zero step)")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=1.0, help="0: greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="codes.npy", help="where to save the codes (.npy)")
    p.set_defaults(func=generate)

    for name, (_, help_text) in FORWARDED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None):
    """Run one subcommand; returns what it returns. Errors exit with a message (``SystemExit``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FORWARDED:
        return FORWARDED[argv[0]][0](argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    main()
