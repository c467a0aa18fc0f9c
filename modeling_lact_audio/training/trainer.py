"""Train a LaCT audio model or a matched baseline with Accelerate (ASR with CTC, or audio-token LM).

    python -m modeling_lact_audio.training run_scripts/configs/tiny_cpu.yaml [--model lact] [--max_steps 50] ...
    python run_scripts/train.py run_scripts/configs/tiny_cpu.yaml  (the same)
    accelerate launch --multi_gpu --num_processes 2 run_scripts/train.py run_scripts/configs/tiny_cpu.yaml
    accelerate launch --config_file run_scripts/configs/accelerate/a40_3b_fsdp.yaml run_scripts/train.py ...

Under FSDP (FULL_SHARD or SHARD_GRAD_OP, FSDP1 or FSDP2) the memory check counts sharded model states,
checkpoints hold the full state dict written by Accelerate (``fsdp_state_dict_type: FULL_STATE_DICT``)
and ``last/`` and ``best/`` the gathered weights.

A YAML/JSON file (first argument) gives defaults; any flag after it overrides them. The run folder
holds ``checkpoints/checkpoint_N`` (Accelerate state after step N: weights, optimizer, RNG; the
scheduler and the data position as ``training_state.json``; no pickle is ever loaded with code in it,
see ``checkpoint_files.py``; the newest ``keep_checkpoints`` are kept), ``last/`` and ``best/``
(``save_pretrained`` model + processor, ready for ``from_pretrained`` and
``pipeline("automatic-speech-recognition")``), ``log.jsonl`` (one line per step) and the trackers' logs
(TensorBoard; with ``--report_to mlflow`` an MLflow store, ``mlflow.db`` and ``mlruns/``, see ``tracking.py``).
Rerunning the same command resumes from the newest complete checkpoint exactly where it stopped.
"""

import json
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate import Accelerator, skip_first_batches
from accelerate.utils import DistributedType, ProjectConfiguration, broadcast_object_list, set_seed
from tqdm.auto import tqdm
from transformers import WhisperProcessor, get_scheduler

from ..asr import load_metrics
from ..cpu_features import cpu_has_native_bf16, resolve_mixed_precision
from ..data import SAMPLING_RATE, durations, load_split, read_audio
from ..modeling_lact_audio import count_parameters
from ..processors import (
    LaCTAudioTokenizer,
    LaCTAudioTokenizerConfig,
    LaCTCTCTokenizer,
    LaCTFeatureExtractor,
    LaCTProcessor,
)
from .arguments import build_optimizer, parse_args
from .checkpoint_files import TRAINING_STATE, check_checkpoint_files, read_training_state, write_training_state
from .data import (
    FRAMES_PER_SECOND,
    AudioTokenCollator,
    CTCCollator,
    DataState,
    LengthBucketBatchSampler,
    PretrainedWhisperCollator,
    WhisperCollator,
    check_batch_fits,
    make_loader,
    memory_available_bytes,
    seconds_to_frames,
)
from .evaluation import evaluate_asr, evaluate_lm
from .models import build_model, check_memory, check_model_arguments
from .tracking import hyperparameter_provenance, log_run_end, log_run_start, log_with, tracker_init_kwargs

COMPLETE = "COMPLETE"  # written into a checkpoint folder once every process has finished saving it


def mixed_precision(requested: str, device_type: str) -> str:
    """Accelerate's mixed-precision mode for ``requested`` (``no``, ``bf16`` or ``auto``) on ``device_type``.

    ``auto`` is bf16 where the hardware computes it natively; bf16 asked for on a CPU that only emulates
    it becomes fp32 with one warning (:func:`~modeling_lact_audio.cpu_features.resolve_mixed_precision`).
    """
    if requested == "fp16":
        raise ValueError("--mixed_precision fp16 is not supported (about 1000x slower on the CPU); use bf16 or no")
    if requested == "auto":
        native = torch.cuda.is_bf16_supported() if device_type == "cuda" else cpu_has_native_bf16()
        return "bf16" if native else "no"
    return resolve_mixed_precision(requested, device_type)


def sharding_strategy(accelerator: Accelerator) -> str:
    """The memory plan's strategy (``modeling_lact_audio.memory``) of this launch: ``"fsdp"`` under FSDP
    FULL_SHARD (FSDP2: ``reshard_after_forward``), ``"zero2"`` under SHARD_GRAD_OP, else ``"ddp"``.

    Raises:
        ValueError: an FSDP launch whose ``fsdp_state_dict_type`` is not FULL_STATE_DICT. A sharded state
            dict is saved with torch.distributed.checkpoint, whose ``.metadata`` file is read back with
            ``pickle.load``, and resuming never unpickles (``checkpoint_files.py``).
    """
    if accelerator.distributed_type != DistributedType.FSDP:
        return "ddp"
    plugin = accelerator.state.fsdp_plugin
    if plugin.state_dict_type.name != "FULL_STATE_DICT":
        raise ValueError(
            f"fsdp_state_dict_type {plugin.state_dict_type.name} is not supported: its checkpoints hold pickles "
            "that resuming would have to load; set fsdp_state_dict_type: FULL_STATE_DICT in the Accelerate config"
        )
    if plugin.fsdp_version == 2:
        return "fsdp" if plugin.reshard_after_forward else "zero2"
    name = (plugin.sharding_strategy or plugin.reshard_after_forward).name
    return {"FULL_SHARD": "fsdp", "HYBRID_SHARD": "fsdp", "SHARD_GRAD_OP": "zero2", "_HYBRID_SHARD_ZERO2": "zero2"}.get(
        name, "ddp"
    )


def save_atomically(folder: Path, write) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``folder``: a kill mid-write leaves the previous ``folder`` intact.

    The switch takes two renames (``folder`` -> ``folder.old``, ``tmp`` -> ``folder``); a kill between
    them leaves no ``folder``, which :func:`recover_interrupted_save` repairs (it runs first here, and
    when a run starts).
    """
    recover_interrupted_save(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def recover_interrupted_save(folder: Path) -> str | None:
    """Repair ``folder`` after a kill inside :func:`save_atomically`; returns what was done, or None.

    No ``folder`` but a ``folder.old`` means the kill fell between the two renames: ``folder.tmp`` was
    complete (it is renamed only after ``write`` returned), so it becomes ``folder``; without it the
    previous version ``folder.old`` comes back. A stale ``folder.old`` beside a ``folder`` is removed.
    """
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
            return f"removed the stale {old.name}"
        return None
    if not old.exists():
        return None
    if tmp.exists():
        os.replace(tmp, folder)
        shutil.rmtree(old)
        return f"completed the interrupted save of {folder.name} from {tmp.name}"
    os.replace(old, folder)
    return f"restored {folder.name} from {old.name}"


def trim_log(log_path: Path, last_step: int) -> int:
    """Drop the lines of ``log.jsonl`` logged after ``last_step`` (the resumed checkpoint's step, 0 when a
    run starts over after a kill before its first checkpoint), so a rerun logs no step twice; returns
    how many lines were dropped. A line cut off by the kill is dropped too."""
    if not log_path.exists():
        return 0
    lines = log_path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    log_path.write_text("".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def checkpoint_step(folder: Path) -> int:
    """The step of ``checkpoints/checkpoint_N``."""
    return int(folder.name.rsplit("_", 1)[1])


def resume_checkpoint(accelerator: Accelerator, run_dir: Path) -> Path | None:
    """The newest complete checkpoint of ``run_dir``, after the main process deleted incomplete ones (a
    process killed while saving), so they are neither loaded nor counted by the rotation."""
    folders = sorted(run_dir.glob("checkpoints/checkpoint_*"), key=checkpoint_step)
    complete = [f for f in folders if (f / COMPLETE).exists()]
    if accelerator.is_main_process:
        for folder in set(folders) - set(complete):
            shutil.rmtree(folder)
    accelerator.wait_for_everyone()
    return complete[-1] if complete else None


def train(model_args, data_args, train_args) -> dict:
    """Train as the arguments say (see ``arguments.py``); returns the run's summary (steps, seconds, best metric).

    Raises:
        ValueError: arguments that do not fit (unknown model, missing split, a batch beyond memory ...),
            before any step runs.
    """
    check_model_arguments(model_args)
    run_dir = Path(train_args.output_dir)
    task, kind = model_args.task, model_args.model
    device_type = "cuda" if torch.cuda.is_available() else "cpu"

    # -------------------------------------------------------------------------
    # Accelerate: processes, device, precision, accumulation, trackers, checkpoint rotation.
    precision = mixed_precision(train_args.mixed_precision, device_type)
    # cpu=True on a GPU-less host: with `accelerate launch --multi_gpu --num_processes 2` this makes the
    # processes join one gloo group (MULTI_CPU) instead of running as independent single processes.
    accelerator = Accelerator(
        cpu=device_type == "cpu",
        mixed_precision=precision,
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        log_with=log_with(train_args.report_to),
        project_config=ProjectConfiguration(
            project_dir=str(run_dir), automatic_checkpoint_naming=True, total_limit=max(1, train_args.keep_checkpoints)
        ),
    )
    set_seed(train_args.seed)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    strategy = sharding_strategy(accelerator)
    # Sharded, the model runs only with every process taking part: all of them validate and gather weights.
    sharded = accelerator.distributed_type == DistributedType.FSDP
    accelerator.print(f"{world} process(es) on {device} ({strategy}), mixed precision {accelerator.mixed_precision}")

    # -------------------------------------------------------------------------
    # Data: the corpus splits, their lengths and the processor built from the training texts.
    train_rows = load_split(data_args.corpus, data_args.train_split, data_args.max_train_examples)
    eval_rows = load_split(data_args.corpus, data_args.eval_split, data_args.max_eval_examples)
    keep = [i for i, s in enumerate(durations(train_rows)) if s <= data_args.max_seconds]
    if not keep:
        raise ValueError(f"no training row is shorter than max_seconds={data_args.max_seconds:g}: raise it")
    train_rows = train_rows.select(keep)
    train_lengths = seconds_to_frames(durations(train_rows))
    check_batch_fits(data_args.max_frames_per_batch, train_lengths, data_args.max_seconds)

    texts = train_rows["text"]
    tokenizer = LaCTCTCTokenizer.from_texts(texts)
    feature_extractor = LaCTFeatureExtractor(
        feature_type="waveform" if kind == "wav2vec2" else "log_mel", normalization="per_utterance"
    )
    processor = LaCTProcessor(feature_extractor, tokenizer)
    audio_tokenizer = None
    if task == "lm":
        audio_tokenizer = LaCTAudioTokenizer(
            LaCTAudioTokenizerConfig(
                backend="mel_rvq", num_codebooks=model_args.lm_num_codebooks, codebook_size=model_args.lm_codebook_size
            )
        )
        fit_rows = train_rows.select(range(min(len(train_rows), 2000)))
        audio_tokenizer.fit((read_audio(c) for c in fit_rows["audio"]), sampling_rate=SAMPLING_RATE, seed=0)

    # -------------------------------------------------------------------------
    # Model, and how its batches are collated and decoded.
    model, lact_config = build_model(model_args, vocab_size=len(tokenizer), audio_tokenizer=audio_tokenizer)
    num_params = count_parameters(model)
    max_new_tokens = None  # the Transcriber's default
    if task == "lm":
        collator = AudioTokenCollator(audio_tokenizer)
    elif kind == "whisper":
        msp = model.config.max_source_positions
        if data_args.max_seconds > msp * 2 / FRAMES_PER_SECOND:
            raise ValueError(
                f"Whisper with whisper_max_source_positions={msp} reads {msp * 2 / FRAMES_PER_SECOND:g} s at most: "
                f"lower max_seconds (now {data_args.max_seconds:g}) or raise whisper_max_source_positions"
            )
        collator = WhisperCollator(feature_extractor, tokenizer, 2 * msp, model.config.eos_token_id)
        max_new_tokens = 2 * max(len(t) for t in texts) + 8
    elif kind == "whisper_pretrained":
        processor = WhisperProcessor.from_pretrained(model_args.pretrained_path)
        tokenizer = processor.tokenizer
        collator = PretrainedWhisperCollator(processor, model.config.decoder_start_token_id)
    else:
        collator = CTCCollator(feature_extractor, tokenizer)
    if train_args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if lact_config is not None:
        free = memory_available_bytes(device)
        check_memory(
            model_args,
            data_args,
            lact_config,
            num_params,
            int(train_lengths.min()),
            free / world if device.type == "cpu" else free,
            2 if precision == "bf16" else 4,
            train_args.gradient_checkpointing,
            strategy,
            world,
            device.type,
        )

    # -------------------------------------------------------------------------
    # Optimiser and schedule: the same for every model; no weight decay on 1-D parameters (biases, norm scales).
    optimizer = build_optimizer(model, train_args)
    # Stepped once per optimizer step by us (a prepared scheduler would step once per process).
    scheduler = get_scheduler(
        train_args.lr_scheduler,
        optimizer,
        num_warmup_steps=train_args.warmup_steps,
        num_training_steps=train_args.max_steps,
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    data_state = DataState()
    # The scheduler and data_state are saved as JSON (checkpoint_files.py), never registered with
    # Accelerate, whose custom-object checkpoints are unpickled with weights_only=False.
    accumulation = train_args.gradient_accumulation_steps
    # Not prepared by Accelerate: the sampler shards the plan over the processes itself, so every
    # process count sees the same batches in the same optimizer steps.
    sampler = LengthBucketBatchSampler(
        train_lengths,
        data_args.max_frames_per_batch,
        data_args.max_batch_size,
        train_args.seed,
        data_args.bucket_size_multiplier,
        accumulation,
        world,
        rank,
    )
    if sampler.steps_per_epoch == 0:
        raise ValueError(
            f"one epoch makes {len(sampler.plan)} batches, fewer than one optimizer step needs "
            f"(gradient_accumulation_steps={accumulation} x {world} processes): lower "
            "max_frames_per_batch / max_batch_size or use more training rows"
        )
    loader = make_loader(train_rows, sampler, collator, data_args.dataloader_num_workers, train_args.seed)

    resume_from = resume_checkpoint(accelerator, run_dir) if train_args.resume else None
    if resume_from is not None:
        check_checkpoint_files(resume_from, allowed=(TRAINING_STATE, COMPLETE))
        training_state = read_training_state(resume_from)
        accelerator.load_state(str(resume_from))
        scheduler.load_state_dict(training_state["scheduler"])
        data_state.load_state_dict(training_state["data"])
        accelerator.print(f"resumed from {resume_from} at step {data_state.completed_steps}")
    log_path = run_dir / "log.jsonl"
    if accelerator.is_main_process:
        for saved in ("best", "last"):
            repaired = recover_interrupted_save(run_dir / saved)
            if repaired:
                accelerator.print(f"{run_dir / saved}: {repaired}")
        trim_log(log_path, data_state.completed_steps)

    hyperparameters = {
        **{f"model/{k}": v for k, v in vars(model_args).items()},
        **{f"data/{k}": v for k, v in vars(data_args).items()},
        **{f"train/{k}": v for k, v in vars(train_args).items()},
        "mixed_precision": accelerator.mixed_precision,
        "num_parameters": num_params,
        "num_processes": world,
        "train_rows": len(train_rows),
        "vocab_size": len(tokenizer),
        **hyperparameter_provenance(data_args.corpus),
    }
    hyperparameters = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hyperparameters.items()}
    resumed_step = data_state.completed_steps
    accelerator.init_trackers(
        run_dir.name, config=hyperparameters, init_kwargs=tracker_init_kwargs(accelerator, run_dir, resumed_step)
    )
    model_config = json.loads(accelerator.unwrap_model(model).config.to_json_string())
    log_run_start(accelerator, run_dir, model_config, hyperparameters, resumed_step)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "run_config.json").write_text(json.dumps(hyperparameters, indent=1))
        if lact_config is not None:
            (run_dir / "lact_config.json").write_text(lact_config.to_json_string())
    accelerator.print(f"{kind} ({task}): {num_params / 1e6:.2f}M parameters, {len(train_rows)} training rows")
    metrics = load_metrics() if task == "ctc" else None

    def save_model(folder: Path) -> None:
        """``save_pretrained`` the model with its processor (and the audio tokenizer for --task lm) from the
        main process; every process calls it, as gathering FSDP's shards into one state dict takes them all."""
        state_dict = accelerator.get_state_dict(model) if sharded else None
        if not accelerator.is_main_process:
            return

        def write(tmp: Path) -> None:
            accelerator.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
            processor.save_pretrained(tmp)
            if audio_tokenizer is not None:
                audio_tokenizer.save_pretrained(tmp / "audio_tokenizer")
            if kind == "whisper":
                tokenizer.save_pretrained(tmp)  # the character vocabulary the decoder was trained on

        save_atomically(folder, write)

    def save_checkpoint() -> None:
        """Accelerate state into ``checkpoints/checkpoint_<step>`` (Accelerate rotates old ones out), then
        the completion mark once every process has written its part."""
        accelerator.project_configuration.iteration = data_state.completed_steps
        folder = Path(accelerator.save_state())
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_training_state(folder, {"scheduler": scheduler.state_dict(), "data": data_state.state_dict()})
            (folder / COMPLETE).touch()
        accelerator.wait_for_everyone()

    def validate() -> dict:
        """Validation metrics on the main process (the others wait; sharded, they run the same batches)."""
        result = {}
        if accelerator.is_main_process or sharded:
            # FSDP1 gathers the parameters outside the blocks only in its outermost wrapper's forward.
            evaluated = model if sharded else accelerator.unwrap_model(model)
            workers = data_args.dataloader_num_workers
            if task == "lm":
                result = evaluate_lm(
                    evaluated, eval_rows, collator, train_args.eval_batch_size, device, workers, accelerator.autocast
                )
            else:
                result = evaluate_asr(
                    evaluated,
                    processor,
                    eval_rows,
                    collator,
                    metrics,
                    train_args.eval_batch_size,
                    device,
                    workers,
                    accelerator.autocast,
                    max_new_tokens,
                )
        accelerator.wait_for_everyone()
        return result

    # -------------------------------------------------------------------------
    # The loop: one iteration per optimizer step; gradient accumulation inside.
    model.train()
    stop_at = min(train_args.max_steps, train_args.stop_after_steps or train_args.max_steps)
    bar = tqdm(
        total=train_args.max_steps,
        initial=data_state.completed_steps,
        desc=f"{kind}",
        disable=not (train_args.progress_bar and accelerator.is_local_main_process),
        dynamic_ncols=True,
    )
    log_file = open(run_dir / "log.jsonl", "a") if accelerator.is_main_process else None
    t_start = time.time()
    frames_seen = 0
    final_eval = {}  # the last validation of this run, for the trackers' final table
    while data_state.completed_steps < stop_at:
        sampler.set_epoch(data_state.epoch)
        skipped = data_state.step_in_epoch * accumulation
        batches = iter(skip_first_batches(loader, skipped) if skipped else loader)
        for _ in range(sampler.steps_per_epoch - data_state.step_in_epoch):
            if data_state.completed_steps >= stop_at:
                break
            step_loss = torch.zeros((), device=device)
            for micro in range(accumulation):
                batch = {k: v.to(device) for k, v in next(batches).items()}
                frames_seen += int(train_lengths[sampler.micro_batch(skipped + micro)].sum())
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        loss = model(**batch).loss
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"loss is {loss.item()} at step {data_state.completed_steps}")
                    accelerator.backward(loss)
                    grad_norm = None
                    if accelerator.sync_gradients:
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), train_args.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                step_loss += loss.detach() / accumulation
            skipped += accumulation
            scheduler.step()
            data_state.step_in_epoch += 1
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
                audio_per_second = frames_seen / FRAMES_PER_SECOND / (time.time() - t_start)
                accelerator.log(
                    {"train/loss": step_loss, "train/lr": lr, "train/audio_seconds_per_second": audio_per_second},
                    step=step,
                )
            if step % train_args.eval_steps == 0 or step == train_args.max_steps:
                result = validate()
                improved = False
                if accelerator.is_main_process:
                    score = result["wer"] if task == "ctc" else result["loss"]
                    final_eval = {"step": step, **result}
                    accelerator.log({f"eval/{k}": v for k, v in result.items() if isinstance(v, float)}, step=step)
                    log_file.write(json.dumps({"step": step, "eval": result}) + "\n")
                    log_file.flush()
                    shown = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float))
                    bar.write(f"step {step}: {shown}")
                    for ref, hyp in result.get("examples", [])[:2]:
                        bar.write(f"  ref: {ref}\n  hyp: {hyp}")
                    if data_state.best_metric is None or score < data_state.best_metric:
                        data_state.best_metric, improved = score, True
                best = [data_state.best_metric, improved]
                broadcast_object_list(best, from_process=0)  # keep every process's copy (and checkpoint) equal
                data_state.best_metric, improved = best
                if improved:
                    save_model(run_dir / "best")
            if step % train_args.save_steps == 0 or step == stop_at:
                save_model(run_dir / "last")
                save_checkpoint()
        else:
            data_state.epoch, data_state.step_in_epoch = data_state.epoch + 1, 0
    bar.close()

    summary = {
        "steps": data_state.completed_steps,
        "seconds": time.time() - t_start,
        "num_parameters": num_params,
        "best_metric": data_state.best_metric,
    }
    if accelerator.is_main_process:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        log_file.close()
    log_run_end(accelerator, final_eval, summary)
    accelerator.end_training()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return summary



def main(argv: list[str] | None = None) -> dict:
    """Parse ``argv`` (a config file, then flags; see the module docstring) and train."""
    return train(*parse_args(argv, description=__doc__))
