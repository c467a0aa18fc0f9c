"""How long a LaCT head's carried state remembers an utterance, and how much its output depends on it.

    python eval/adaptation/state_memory.py --head model_cards/checkpoints/lact_whisper_ctc \\
        --cache cache/whisper_tiny_en_states_full --splits test_unseen_speakers test_real \\
        --output eval/results/adaptation/state_memory

For every speaker stream: the first utterance from a reset state, then the next ``--horizon`` utterances carried
on and from a reset state (``adaptation.state_memory``): retention of the first utterance's displacement of the
fast weights, relative change of the log-probabilities and share of frames whose greedy token changes, each
averaged over streams with a 95% bootstrap interval. Writes ``results.json``, ``REPORT.md`` and
``state_memory.png`` into ``--output``.
"""

import argparse
import shlex
import sys
import time
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head", required=True, help="a LaCT head folder or a shipped recogniser folder")
    parser.add_argument("--cache", default="cache/whisper_tiny_en_states_full", help="folder of cached splits")
    parser.add_argument("--splits", nargs="+", default=["test_unseen_speakers", "test_real"])
    parser.add_argument("--horizon", type=int, default=5, help="utterances followed after the first")
    parser.add_argument("--max-streams", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default="eval/results/adaptation/state_memory")
    return parser.parse_args(argv)


def render(result: dict) -> str:
    """The Markdown report of a ``main`` result."""
    lines = [
        "# How long a carried fast-weight state remembers an utterance",
        "",
        f"Head `{result['head']}`. For each speaker stream (at most {result['max_streams']} per split, seed "
        f"{result['seed']}): utterance 0 from a reset state, then utterances 1..n carried on and from a reset "
        "state. Retention = ||W_carried - W_reset|| / ||W_after_0 - W_initial|| (1: utterance 0's displacement of "
        "the fast weights is all still there); logit change = ||l_carried - l_reset|| / ||l_reset|| of utterance "
        "n; frames changed = share of utterance n's frames whose greedy token differs. Means over streams with "
        "95% bootstrap intervals.",
        "",
    ]
    fmt = lambda v, scale=1.0, d=3: f"{scale * v[0]:.{d}f} [{scale * v[1]:.{d}f}, {scale * v[2]:.{d}f}]"  # noqa: E731
    for split, rows in result["splits"].items():
        lines += [
            f"## {split}",
            "",
            "| n | streams | retention | logit change | frames changed % |",
            "|---|---|---|---|---|",
        ]
        for r in rows["summary"]:
            lines.append(
                f"| {r['n']} | {r['streams']} | {fmt(r['retention'])} | {fmt(r['logit_change'], d=4)} | "
                f"{fmt(r['frame_disagreement'], 100, 2)} |"
            )
        first = rows["summary"][0] if rows["summary"] else None
        if first:
            lines += [
                "",
                f"Utterance 0 moves the fast weights by {fmt(first['displacement'])} of their initial norm; against "
                f"the same utterance read with the fast weights frozen at their initial values, its own updates "
                f"change its log-probabilities by {fmt(first['own_update_change'], d=4)} and its greedy tokens on "
                f"{fmt(first['own_update_frames'], 100, 2)}% of the frames.",
            ]
        lines.append("")
    lines += [f"Wall time {result['wall_seconds'] / 60:.1f} min. Command:", "", f"    {result['command']}", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Retention and logit change against n, one line per split, with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for split, rows in result["splits"].items():
        n = [r["n"] for r in rows["summary"]]
        for ax, key in zip(axes, ("retention", "logit_change")):
            mean = [r[key][0] for r in rows["summary"]]
            low = [r[key][1] for r in rows["summary"]]
            high = [r[key][2] for r in rows["summary"]]
            ax.plot(n, mean, marker="o", label=split)
            ax.fill_between(n, low, high, alpha=0.2)
    axes[0].set_ylabel("retention of utterance 0's displacement")
    axes[1].set_ylabel("relative change of utterance n's log-probs")
    for ax in axes:
        ax.set_xlabel("utterances after utterance 0 (n)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    """Measure every split and write the JSON, report and plot; returns the result."""
    import datasets
    import torch

    from modeling_lact_audio.adaptation.state_memory import memory_of_streams, summarize_memory
    from modeling_lact_audio.adaptation.streams import UtteranceReader, build_streams, carries_state
    from modeling_lact_audio.recogniser.evaluation import load_head, write_json

    args = parse_args(argv)
    if args.horizon < 1:
        raise SystemExit(f"--horizon must be >= 1, got {args.horizon}")
    torch.set_num_threads(args.threads)
    head = load_head(args.head)
    if not carries_state(head):
        raise SystemExit(f"{args.head}: the head has no LaCT fast weights, so it carries no state")
    start = time.perf_counter()
    result = {
        "head": args.head,
        "horizon": args.horizon,
        "max_streams": args.max_streams,
        "seed": args.seed,
        "command": shlex.join(["python", "eval/adaptation/state_memory.py", *(sys.argv[1:] if argv is None else argv)]),
        "splits": {},
    }
    for split in args.splits:
        path = Path(args.cache) / split
        if not path.exists():
            raise SystemExit(f"no cached split {split!r} in {args.cache} (run_scripts/cache_encoder_states.py)")
        data = datasets.load_from_disk(str(path))
        streams = build_streams(data, "session_id", max_streams=args.max_streams, seed=args.seed)
        records = memory_of_streams(head, UtteranceReader(data), streams, args.horizon)
        result["splits"][split] = {"records": records, "summary": summarize_memory(records, seed=args.seed)}
    result["wall_seconds"] = time.perf_counter() - start
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "results.json", result)
    (output / "REPORT.md").write_text(render(result))
    plot(result, output / "state_memory.png")
    print(f"wrote {output}/results.json, REPORT.md, state_memory.png")
    return result


if __name__ == "__main__":
    main()
