"""Train a LaCT audio model or a matched baseline with Accelerate (ASR with CTC, or audio-token LM).

    python run_scripts/train.py run_scripts/configs/tiny_cpu.yaml [--model lact] [--max_steps 50] ...
    accelerate launch --multi_gpu --num_processes 2 run_scripts/train.py run_scripts/configs/tiny_cpu.yaml
    python run_scripts/train.py --help

The same as ``python -m modeling_lact_audio.training``; the library is ``modeling_lact_audio.training``.
"""

from modeling_lact_audio.training.trainer import main

if __name__ == "__main__":
    main()
