"""Train a LaCT audio model or a matched baseline with Accelerate (ASR with CTC, or audio-token LM).

    python run_scripts/train.py run_scripts/configs/tiny_cpu.yaml [--model lact] [--max_steps 50] ...
    accelerate launch --multi_gpu --num_processes 2 run_scripts/train.py run_scripts/configs/tiny_cpu.yaml
    python run_scripts/train.py --help

A YAML/JSON file (first argument) gives defaults; any flag after it overrides them. The run folder
holds ``checkpoints/step-N`` (Accelerate state: weights, optimizer, scheduler, RNG, data position),
``last/`` and ``best/`` (``save_pretrained`` model + processor, ready for ``from_pretrained`` and
``pipeline("automatic-speech-recognition")``), ``log.jsonl`` (one line per step) and TensorBoard logs.
Rerunning the same command resumes from the newest checkpoint exactly where it stopped.
"""

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import yaml  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.utils import broadcast_object_list, set_seed  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from training import data as D  # noqa: E402
from training.arguments import DataArguments, ModelArguments, TrainArguments  # noqa: E402
from training.evaluation import evaluate_asr, evaluate_lm, load_metrics  # noqa: E402
from training.models import activation_bytes, build_model, check_model_arguments, parameter_count  # noqa: E402
from transformers import HfArgumentParser, get_scheduler  # noqa: E402

from modeling_lact_audio.processors import (  # noqa: E402
    LaCTAudioTokenizer,
    LaCTAudioTokenizerConfig,
    LaCTCTCTokenizer,
    LaCTFeatureExtractor,
    LaCTProcessor,
)


def parse_args(argv=None):
    parser = HfArgumentParser((ModelArguments, DataArguments, TrainArguments), description=__doc__)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        with open(argv[0]) as handle:
            defaults = yaml.safe_load(handle) or {}  # JSON is YAML
        known = {f for dc in parser.dataclass_types for f in dc.__dataclass_fields__}
        unknown = sorted(set(defaults) - known)
        if unknown:
            raise ValueError(f"{argv[0]}: unknown fields {unknown}; see `python run_scripts/train.py --help`")
        if isinstance(defaults.get("config_overrides"), dict):
            defaults["config_overrides"] = json.dumps(defaults["config_overrides"])
        parser.set_defaults(**defaults)
        argv = argv[1:]
    return parser.parse_args_into_dataclasses(argv)


def save_atomically(folder: Path, write) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``folder``: a kill mid-write leaves the previous ``folder`` intact."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob("checkpoints/step-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))
    return found[-1] if found else None


model_args, data_args, train_args = parse_args()
check_model_arguments(model_args)
run_dir = Path(train_args.output_dir)
task, kind = model_args.task, model_args.model

# -----------------------------------------------------------------------------
# Accelerate: processes, device, precision, accumulation, trackers.
if train_args.mixed_precision == "fp16":
    raise ValueError("--mixed_precision fp16 is not supported (about 1000x slower on the CPU); use bf16 or no")
if train_args.mixed_precision == "auto":
    has_bf16 = torch.cuda.is_bf16_supported() if torch.cuda.is_available() else True
    train_args.mixed_precision = "bf16" if has_bf16 else "no"
report_to = {"none": None, "all": "all"}.get(train_args.report_to, train_args.report_to.split(","))
# cpu=True on a GPU-less host: with `accelerate launch --multi_gpu --num_processes 2` this makes the
# processes join one gloo group (MULTI_CPU) instead of running as independent single processes.
accelerator = Accelerator(
    cpu=not torch.cuda.is_available(),
    mixed_precision=train_args.mixed_precision,
    gradient_accumulation_steps=train_args.gradient_accumulation_steps,
    log_with=report_to,
    project_dir=str(run_dir),
)
set_seed(train_args.seed)
device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
accelerator.print(f"{world} process(es) on {device}, mixed precision {accelerator.mixed_precision}")

# -----------------------------------------------------------------------------
# Data: the corpus splits, their lengths and the processor built from the training texts.
train_rows = D.load_split(data_args.corpus, data_args.train_split, data_args.max_train_examples)
eval_rows = D.load_split(data_args.corpus, data_args.eval_split, data_args.max_eval_examples)
keep = [i for i, s in enumerate(D.durations(train_rows)) if s <= data_args.max_seconds]
if not keep:
    raise ValueError(f"no training row is shorter than max_seconds={data_args.max_seconds:g}: raise it")
train_rows = train_rows.select(keep)
train_lengths = D.seconds_to_frames(D.durations(train_rows))
D.check_batch_fits(data_args.max_frames_per_batch, train_lengths, data_args.max_seconds)

texts = train_rows["text"]
tokenizer = LaCTCTCTokenizer.from_texts(texts)
feature_type = "waveform" if kind == "wav2vec2" else "log_mel"
feature_extractor = LaCTFeatureExtractor(feature_type=feature_type, normalization="per_utterance")
processor = LaCTProcessor(feature_extractor, tokenizer)
audio_tokenizer = None
if task == "lm":
    audio_tokenizer = LaCTAudioTokenizer(
        LaCTAudioTokenizerConfig(
            backend="mel_rvq", num_codebooks=model_args.lm_num_codebooks, codebook_size=model_args.lm_codebook_size
        )
    )
    fit_rows = train_rows.select(range(min(len(train_rows), 2000)))
    audio_tokenizer.fit((D.read_audio(c) for c in fit_rows["audio"]), sampling_rate=D.SAMPLING_RATE, seed=0)

# -----------------------------------------------------------------------------
# Model, and how its batches are collated and decoded.
model, lact_config = build_model(model_args, vocab_size=len(tokenizer), audio_tokenizer=audio_tokenizer)
num_params = parameter_count(model)
decode_kind, extras = "ctc", {}
if task == "lm":
    collator = D.AudioTokenCollator(audio_tokenizer)
elif kind == "whisper":
    msp = model.config.max_source_positions
    if data_args.max_seconds > msp * 2 / D.FRAMES_PER_SECOND:
        raise ValueError(
            f"Whisper with whisper_max_source_positions={msp} reads {msp * 2 / D.FRAMES_PER_SECOND:g} s at most: "
            f"lower max_seconds (now {data_args.max_seconds:g}) or raise whisper_max_source_positions"
        )
    collator = D.WhisperCollator(feature_extractor, tokenizer, 2 * msp, model.config.eos_token_id)
    decode_kind = "whisper"
    longest = max(len(t) for t in texts)
    extras = dict(
        start_id=model.config.decoder_start_token_id, eos_id=model.config.eos_token_id, max_new_tokens=2 * longest + 8
    )
elif kind == "whisper_pretrained":
    from transformers import WhisperProcessor

    processor = WhisperProcessor.from_pretrained(model_args.pretrained_path)
    tokenizer = processor.tokenizer
    collator = D.PretrainedWhisperCollator(processor, model.config.decoder_start_token_id)
    decode_kind, extras = "whisper_pretrained", dict(max_new_tokens=200)
else:
    collator = D.CTCCollator(feature_extractor, tokenizer)
if train_args.gradient_checkpointing:
    model.gradient_checkpointing_enable()

# A batch larger than memory allows fails here, not after an hour.
if lact_config is not None:
    frames = data_args.max_frames_per_batch // max(1, lact_config.total_stride)
    if kind == "whisper":
        rows = min(data_args.max_batch_size, data_args.max_frames_per_batch // max(1, int(train_lengths.min())))
        # Every row is padded to Whisper's fixed length; its encoder has half the LaCT model's layers.
        frames = rows * model.config.max_source_positions // 2
    need = activation_bytes(lact_config, frames, train_args.gradient_checkpointing) + 16 * num_params
    free = D.memory_available_bytes(device) / world if device.type == "cpu" else D.memory_available_bytes(device)
    if need > 0.8 * free:
        raise ValueError(
            f"a batch of max_frames_per_batch={data_args.max_frames_per_batch} needs about {need / 2**30:.1f} GiB, "
            f"more than the {free / 2**30:.1f} GiB free per process: lower max_frames_per_batch "
            f"(to about {int(data_args.max_frames_per_batch * 0.8 * free / need)}) or set --gradient_checkpointing"
        )

# -----------------------------------------------------------------------------
# Optimiser and schedule: the same for every model; no weight decay on 1-D parameters (biases, norm scales).
decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]
no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.dim() < 2]
optimizer = torch.optim.AdamW(
    [{"params": decay, "weight_decay": train_args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
    lr=train_args.learning_rate,
    betas=(train_args.adam_beta1, train_args.adam_beta2),
)
# Stepped once per optimizer step by us (a prepared scheduler would step once per process).
scheduler = get_scheduler(
    train_args.lr_scheduler,
    optimizer,
    num_warmup_steps=train_args.warmup_steps,
    num_training_steps=train_args.max_steps,
)
model, optimizer = accelerator.prepare(model, optimizer)
data_state = D.DataState()
accelerator.register_for_checkpointing(scheduler, data_state)
stream = D.BatchStream(
    train_lengths,
    data_args.max_frames_per_batch,
    data_args.max_batch_size,
    train_args.seed,
    data_args.bucket_size_multiplier,
    train_args.gradient_accumulation_steps,
    world,
    rank,
    data_state,
)

resume_from = latest_checkpoint(run_dir) if train_args.resume else None
if resume_from is not None:
    accelerator.load_state(str(resume_from))
    accelerator.print(f"resumed from {resume_from} at step {data_state.completed_steps}")
    log_path = run_dir / "log.jsonl"
    if accelerator.is_main_process and log_path.exists():  # drop steps logged after the checkpoint
        lines = log_path.read_text().splitlines()
        kept = [line for line in lines if json.loads(line)["step"] <= data_state.completed_steps]
        log_path.write_text("".join(line + "\n" for line in kept))

hyperparameters = {
    **{f"model/{k}": v for k, v in vars(model_args).items()},
    **{f"data/{k}": v for k, v in vars(data_args).items()},
    **{f"train/{k}": v for k, v in vars(train_args).items()},
    "num_parameters": num_params,
    "num_processes": world,
    "train_rows": len(train_rows),
    "vocab_size": len(tokenizer),
}
hyperparameters = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hyperparameters.items()}
accelerator.init_trackers(run_dir.name, config=hyperparameters)
if accelerator.is_main_process:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run_config.json").write_text(json.dumps(hyperparameters, indent=1))
    if lact_config is not None:
        (run_dir / "lact_config.json").write_text(lact_config.to_json_string())
accelerator.print(f"{kind} ({task}): {num_params / 1e6:.2f}M parameters, {len(train_rows)} training rows")

metrics = load_metrics() if task == "ctc" else None


def autocast():
    return accelerator.autocast() if accelerator.mixed_precision != "no" else contextlib.nullcontext()


def save_model(folder: Path) -> None:
    """``save_pretrained`` the model with its processor (and the audio tokenizer for --task lm)."""

    def write(tmp: Path) -> None:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        if audio_tokenizer is not None:
            audio_tokenizer.save_pretrained(tmp / "audio_tokenizer")
        if kind == "whisper":
            tokenizer.save_pretrained(tmp)  # the character vocabulary the decoder was trained on

    save_atomically(folder, write)


def save_checkpoint() -> None:
    """Accelerate state into ``checkpoints/step-N.tmp`` on every process, then renamed by the main one."""
    folder = run_dir / "checkpoints" / f"step-{data_state.completed_steps}"
    tmp = folder.with_name(folder.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        done = sorted(run_dir.glob("checkpoints/step-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))
        for old in done[: -max(1, train_args.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def validate() -> dict:
    """Validation metrics on the main process (the others wait)."""
    result = {}
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        if task == "lm":
            result = evaluate_lm(unwrapped, eval_rows, collator, train_args.eval_batch_size, device, autocast)
        else:
            result = evaluate_asr(
                decode_kind,
                unwrapped,
                eval_rows,
                collator,
                tokenizer,
                extras,
                train_args.eval_batch_size,
                device,
                autocast,
                metrics,
            )
    accelerator.wait_for_everyone()
    return result


# -----------------------------------------------------------------------------
# The loop: one iteration per optimizer step; gradient accumulation inside.
model.train()
start_step = data_state.completed_steps
stop_at = min(train_args.max_steps, train_args.stop_after_steps or train_args.max_steps)
bar = tqdm(
    total=train_args.max_steps,
    initial=start_step,
    desc=f"{kind}",
    disable=not (train_args.progress_bar and accelerator.is_local_main_process),
    dynamic_ncols=True,
)
log_file = open(run_dir / "log.jsonl", "a") if accelerator.is_main_process else None
t_start = time.time()
frames_seen = 0
while data_state.completed_steps < stop_at:
    step_loss = torch.zeros((), device=device)
    for indices in stream.next_step():
        batch, _ = D.rows_to_batch(train_rows, indices, collator)
        batch = {k: v.to(device) for k, v in batch.items()}
        frames_seen += int(train_lengths[indices].sum())
        with accelerator.accumulate(model):
            with autocast():
                loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {data_state.completed_steps}")
            accelerator.backward(loss)
            grad_norm = None
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), train_args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        step_loss += loss.detach() / train_args.gradient_accumulation_steps
    scheduler.step()
    data_state.completed_steps += 1
    step = data_state.completed_steps
    step_loss = accelerator.reduce(step_loss, reduction="mean").item()
    lr = scheduler.get_last_lr()[0]
    bar.update(1)
    bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.2e}")
    record = {
        "step": step,
        "loss": step_loss,
        "lr": lr,
        "grad_norm": float(grad_norm) if grad_norm is not None else None,
        "seconds": round(time.time() - t_start, 2),
    }
    if log_file:
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
    if step % train_args.logging_steps == 0 or step == stop_at:
        elapsed = time.time() - t_start
        accelerator.log(
            {"train/loss": step_loss, "train/lr": lr, "train/audio_seconds_per_second": frames_seen / 100 / elapsed},
            step=step,
        )
    if step % train_args.eval_steps == 0 or step == train_args.max_steps:
        result = validate()
        if accelerator.is_main_process:
            score = result["wer"] if task == "ctc" else result["loss"]
            accelerator.log({f"eval/{k}": v for k, v in result.items() if isinstance(v, float)}, step=step)
            log_file.write(json.dumps({"step": step, "eval": {k: v for k, v in result.items()}}) + "\n")
            log_file.flush()
            shown = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))
            bar.write(f"step {step}: {shown}")
            for ref, hyp in result.get("examples", [])[:2]:
                bar.write(f"  ref: {ref}\n  hyp: {hyp}")
            if data_state.best_metric is None or score < data_state.best_metric:
                data_state.best_metric = score
                save_model(run_dir / "best")
        best = [data_state.best_metric]
        broadcast_object_list(best, from_process=0)  # keep every process's copy (and checkpoint) equal
        data_state.best_metric = best[0]
    if step % train_args.save_steps == 0 or step == stop_at:
        if accelerator.is_main_process:
            save_model(run_dir / "last")
        save_checkpoint()
bar.close()

if accelerator.is_main_process:
    summary = {
        "steps": data_state.completed_steps,
        "seconds": time.time() - t_start,
        "num_parameters": num_params,
        "best_metric": data_state.best_metric,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    log_file.close()
accelerator.end_training()
if torch.distributed.is_available() and torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
