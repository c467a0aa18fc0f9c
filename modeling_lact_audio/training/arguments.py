"""Arguments of the training run as HfArgumentParser dataclasses, with defaults from a YAML/JSON file."""

import json
import sys
from dataclasses import dataclass, field

import torch
import yaml
from transformers import HfArgumentParser

MODELS = ("lact", "baseline_transformer", "baseline_sliding_window", "wav2vec2", "whisper", "whisper_pretrained")
TASKS = ("ctc", "lm")


@dataclass
class ModelArguments:
    """What to train. Every ``--model`` is sized from the same LaCT preset, so runs differ only in the model."""

    model: str = field(default="lact", metadata={"help": f"one of {MODELS}"})
    task: str = field(default="ctc", metadata={"help": "ctc (ASR) or lm (audio-token generation)"})
    preset: str = field(default="tiny", metadata={"help": "LaCT size preset: tiny, small, base, large"})
    config_overrides: str = field(
        default="{}",
        metadata={"help": "LaCTAudioConfig fields replacing the preset's: a JSON object (a mapping in YAML)"},
    )
    pretrained_path: str | None = field(
        default=None, metadata={"help": "converted transformers Whisper folder (--model whisper_pretrained)"}
    )
    whisper_max_source_positions: int = field(
        default=750, metadata={"help": "Whisper encoder frames; inputs are padded to twice this many mel frames"}
    )
    lm_num_codebooks: int = field(default=4, metadata={"help": "--task lm: mel_rvq codebooks"})
    lm_codebook_size: int = field(default=256, metadata={"help": "--task lm: codes per codebook"})


@dataclass
class DataArguments:
    """Where the corpus lives and how it becomes batches."""

    corpus: str = field(default="data/corpus", metadata={"help": "datasets.DatasetDict saved with save_to_disk"})
    train_split: str = "train"
    eval_split: str = "validation"
    max_train_examples: int | None = field(default=None, metadata={"help": "keep the first N training rows"})
    max_eval_examples: int | None = field(default=None, metadata={"help": "keep the first N validation rows"})
    max_frames_per_batch: int = field(
        default=20000, metadata={"help": "padded input frames (10 ms log-mel frames) per micro-batch, all rows"}
    )
    max_batch_size: int = field(default=32, metadata={"help": "rows per micro-batch at most"})
    max_seconds: float = field(default=20.0, metadata={"help": "drop training rows longer than this"})
    bucket_size_multiplier: int = field(
        default=50, metadata={"help": "rows are sorted by length within windows of this many batches"}
    )
    dataloader_num_workers: int = field(
        default=2, metadata={"help": "processes decoding audio and extracting features (0: in the training process)"}
    )


@dataclass
class TrainArguments:
    """How to train; the optimiser, schedule and step budget are the same for every --model."""

    output_dir: str = "outputs/run"
    seed: int = 0
    max_steps: int = 100
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    warmup_steps: int = 10
    lr_scheduler: str = field(default="cosine", metadata={"help": "any transformers scheduler name"})
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = field(
        default="auto", metadata={"help": "no, bf16 or auto (bf16 where the hardware has it; never fp16 on CPU)"}
    )
    gradient_checkpointing: bool = False
    logging_steps: int = 10
    eval_steps: int = 100
    save_steps: int = 100
    keep_checkpoints: int = field(default=2, metadata={"help": "newest checkpoints kept (Accelerate's total_limit)"})
    resume: bool = field(default=True, metadata={"help": "continue from output_dir/checkpoints/latest if there"})
    report_to: str = field(
        default="tensorboard",
        metadata={
            "help": "Accelerate trackers, comma-separated (tensorboard, mlflow, wandb), all or none; mlflow keeps "
            "its store in output_dir/mlflow.db unless MLFLOW_TRACKING_URI is set (training/tracking.py)"
        },
    )
    eval_batch_size: int = 16
    progress_bar: bool = True
    stop_after_steps: int | None = field(
        default=None, metadata={"help": "stop (after saving) at this step although the schedule runs to max_steps"}
    )


def parse_args(argv: list[str] | None = None, description: str | None = None):
    """``(ModelArguments, DataArguments, TrainArguments)`` from ``argv`` (default ``sys.argv[1:]``).

    A first argument ending in ``.yaml``/``.yml``/``.json`` gives defaults; the flags after it override them.

    Raises:
        ValueError: the file names a field no dataclass has.
    """
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainArguments), description=description)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        with open(argv[0]) as handle:
            defaults = yaml.safe_load(handle) or {}  # JSON is YAML
        known = {f for dc in parser.dataclass_types for f in dc.__dataclass_fields__}
        unknown = sorted(set(defaults) - known)
        if unknown:
            raise ValueError(
                f"{argv[0]}: unknown fields {unknown}; see `python -m modeling_lact_audio.training --help`"
            )
        if isinstance(defaults.get("config_overrides"), dict):
            defaults["config_overrides"] = json.dumps(defaults["config_overrides"])
        parser.set_defaults(**defaults)
        argv = argv[1:]
    return parser.parse_args_into_dataclasses(argv)


def build_optimizer(model, train_args) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, without weight decay on 1-D ones (biases, norm scales)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": train_args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=train_args.learning_rate,
        betas=(train_args.adam_beta1, train_args.adam_beta2),
    )
