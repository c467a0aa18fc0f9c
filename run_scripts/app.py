"""The lact-audio demo app (Gradio), as a Hub Space's ``app.py`` would launch it; offline, analytics off.

    python run_scripts/app.py [--model model_cards/checkpoints/lact_small_ctc] [--generator DIR]
        [--host 127.0.0.1] [--port 7860] [--device cpu]

Upload or record audio for a streamed transcript, optionally keep adapting the fast weights to the
speaker; continue a prompt's audio with a generator folder (``run_scripts/train.py --task lm``).
See ``modeling_lact_audio.demo_app``.
"""

import argparse

from modeling_lact_audio.demo_app import DEFAULT_MODEL, launch_app


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: parse the arguments and serve the app until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="recogniser folder (streams if block_causal)")
    parser.add_argument("--generator", default=None, help="generator folder: LaCTAudioForCausalLM + audio_tokenizer/")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0 in a Space)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    launch_app(args.model, args.generator, args.device, server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
