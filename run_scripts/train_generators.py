"""Train the generation study's three generators at one budget: the LaCT LM, full attention, sliding window.

    python run_scripts/train_generators.py                       # all three, one after the other
    python run_scripts/train_generators.py --jobs 2              # two processes (one thread each)
    python run_scripts/train_generators.py --models lact --max-steps 20

Each goes to ``<output>/<kind>/`` (a ``save_pretrained`` folder and ``generator.json``); an interrupted run
resumes from its last state checkpoint, a finished one is skipped. The codes and speaker embeddings are built
once under ``--tokens`` (``generation.study_data``).
"""

import argparse
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

from modeling_lact_audio.ablations.lm_model import LMTrainingArguments
from modeling_lact_audio.generation.study_data import data_settings, load_generation_data
from modeling_lact_audio.generation.training import GENERATORS, GeneratorSize, train_generator_job


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring); ``--models`` is split into a list of kinds."""
    size = GeneratorSize()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default="data/corpus")
    parser.add_argument("--tokens", default="cache/generation_tokens", help="code and embedding cache root")
    parser.add_argument("--output", default="outputs/generation")
    parser.add_argument("--models", default=",".join(GENERATORS), help=f"comma-separated, of {GENERATORS}")
    parser.add_argument("--num-codebooks", type=int, default=8)
    parser.add_argument("--codebook-size", type=int, default=256)
    parser.add_argument("--fit-frames", type=int, default=100000)
    parser.add_argument("--train-frames", type=int, default=2048, help="frames per training window (62.5/s)")
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument("--jobs", type=int, default=1, help="training processes at once")
    parser.add_argument("--hidden-size", type=int, default=size.hidden_size)
    parser.add_argument("--layers", type=int, default=size.num_hidden_layers)
    parser.add_argument("--heads", type=int, default=size.num_attention_heads)
    parser.add_argument("--lact-heads", type=int, default=size.num_lact_heads)
    parser.add_argument("--intermediate-size", type=int, default=size.intermediate_size)
    parser.add_argument("--lact-chunk-size", type=int, default=size.lact_chunk_size)
    parser.add_argument("--window-size", type=int, default=size.window_size)
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = set(args.models) - set(GENERATORS)
    if unknown:
        parser.error(f"--models: unknown {sorted(unknown)}; choose from {GENERATORS}")
    return args


def main(argv=None) -> dict:
    """Build the code cache, train the chosen generators (``--jobs`` processes); returns ``{kind: generator.json}``."""
    args = parse_args(argv)
    data = data_settings(args.corpus, args.num_codebooks, args.codebook_size, args.fit_frames)
    load_generation_data(data, args.tokens)  # builds the shared cache once, before any worker reads it
    size = GeneratorSize(
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_lact_heads=args.lact_heads,
        intermediate_size=args.intermediate_size,
        lact_chunk_size=args.lact_chunk_size,
        window_size=args.window_size,
    )
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    command = "python run_scripts/train_generators.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    (output / "command.txt").write_text(command + "\n")
    jobs = []
    for kind in args.models:
        training = LMTrainingArguments(
            output_dir=str(output / kind),
            max_steps=args.max_steps,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            warmup_steps=args.warmup_steps,
            save_every=args.save_every,
            threads=args.threads,
            seed=args.seed,
        )
        jobs.append((kind, data, args.tokens, asdict(size), args.train_frames, asdict(training)))
    start, infos = time.time(), {}
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            futures = {job[0]: pool.submit(train_generator_job, *job) for job in jobs}
            infos = {kind: future.result() for kind, future in futures.items()}
    else:
        for job in jobs:
            print(f"training {job[0]}", flush=True)
            infos[job[0]] = train_generator_job(*job)
    for kind, info in infos.items():
        print(
            f"{kind}: {info['parameters']:,} parameters, {info['steps']} steps, loss {info['final_loss']:.3f}, "
            f"{info['mean_step_seconds']:.2f} s/step"
        )
    print(f"done in {(time.time() - start) / 60:.1f} min")
    return infos


if __name__ == "__main__":
    main()
