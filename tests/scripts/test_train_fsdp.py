"""Training under FSDP (modeling_lact_audio.training, run_scripts/train.py): the strategy the memory check
reads from the launch, and a 2-process CPU FSDP2 run that stops, resumes exactly and saves loadable weights."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from torch.distributed.fsdp import ShardingStrategy, StateDictType

from modeling_lact_audio.corpus.build import build
from modeling_lact_audio.training.checkpoint_files import check_checkpoint_files
from modeling_lact_audio.training.trainer import sharding_strategy

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "run_scripts" / "configs" / "tiny_cpu.yaml"

# FSDP2 on 2 CPU processes over gloo; the full state dict keeps every checkpoint file a weights_only load.
CPU_FSDP_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
mixed_precision: 'no'
num_machines: 1
num_processes: 2
machine_rank: 0
main_training_function: main
rdzv_backend: static
same_network: true
use_cpu: true
downcast_bf16: 'no'
fsdp_config:
  fsdp_version: 2
  fsdp_reshard_after_forward: true
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_transformer_layer_cls_to_wrap: LaCTAudioBlock
  fsdp_offload_params: false
  fsdp_cpu_ram_efficient_loading: false
  fsdp_state_dict_type: FULL_STATE_DICT
  fsdp_activation_checkpointing: false
"""

# Accelerate 1.15 turns an FSDP launch on a GPU-less host into MULTI_CPU (DDP), and refuses FSDP1 there
# outright; this makes its state what the same FSDP2 launch gets on GPUs, so the trainer's FSDP code runs
# as it would there (torch's FSDP2 runs on CPU tensors over gloo). The library carries no such patch.
LAUNCHER = """\
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

from modeling_lact_audio.training.trainer import main

_init = AcceleratorState.__init__


def init(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        self.distributed_type, self.fsdp_plugin = DistributedType.FSDP, fsdp_plugin


AcceleratorState.__init__ = init

if __name__ == "__main__":
    main()
"""


def _launch(version: int, strategy, state_dict_type=StateDictType.FULL_STATE_DICT):
    plugin = SimpleNamespace(
        fsdp_version=version,
        sharding_strategy=strategy if version == 1 else None,
        reshard_after_forward=strategy if version == 2 else None,
        state_dict_type=state_dict_type,
    )
    return SimpleNamespace(distributed_type=DistributedType.FSDP, state=SimpleNamespace(fsdp_plugin=plugin))


def test_sharding_strategy_follows_the_launch_and_refuses_pickled_checkpoints():
    assert sharding_strategy(SimpleNamespace(distributed_type=DistributedType.MULTI_GPU)) == "ddp"
    assert sharding_strategy(_launch(1, ShardingStrategy.FULL_SHARD)) == "fsdp"
    assert sharding_strategy(_launch(1, ShardingStrategy.SHARD_GRAD_OP)) == "zero2"
    assert sharding_strategy(_launch(1, ShardingStrategy.NO_SHARD)) == "ddp"
    assert sharding_strategy(_launch(2, True)) == "fsdp"
    assert sharding_strategy(_launch(2, False)) == "zero2"
    with pytest.raises(ValueError, match="SHARDED_STATE_DICT is not supported"):
        sharding_strategy(_launch(2, True, StateDictType.SHARDED_STATE_DICT))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train_fsdp") / "corpus"
    build(str(folder), seed=0, tiny=True, workers=1, progress=False)
    return folder


def _train(tmp_path, corpus, out, *flags) -> str:
    """``accelerate launch`` of the trainer on 2 CPU processes under FSDP2; returns its output."""
    (tmp_path / "fsdp_cpu.yaml").write_text(CPU_FSDP_CONFIG)
    (tmp_path / "train_fsdp_on_cpu.py").write_text(LAUNCHER)
    command = [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file"]
    command += [str(tmp_path / "fsdp_cpu.yaml"), str(tmp_path / "train_fsdp_on_cpu.py")]
    command += [str(CONFIG), "--corpus", str(corpus), "--output_dir", str(out), "--report_to", "none"]
    command += ["--progress_bar", "false", "--max_eval_examples", "2", "--dataloader_num_workers", "0", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout


def _losses(out):
    rows = [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.slow
def test_fsdp_on_two_processes_resumes_exactly_and_saves_gathered_weights(corpus, tmp_path):
    from transformers import AutoModelForCTC

    flags = ("--max_steps", "4", "--eval_steps", "4", "--save_steps", "100", "--warmup_steps", "1")
    flags += ("--max_batch_size", "2")
    stdout = _train(tmp_path, corpus, tmp_path / "straight", *flags)
    assert "2 process(es) on cpu:0 (fsdp)" in stdout
    _train(tmp_path, corpus, tmp_path / "resumed", *flags, "--stop_after_steps", "2")
    checkpoint = tmp_path / "resumed" / "checkpoints" / "checkpoint_2"
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "COMPLETE",
        "optimizer.bin",
        "pytorch_model_fsdp.bin",
        "random_states_0.pkl",
        "random_states_1.pkl",
        "training_state.json",
    ]
    check_checkpoint_files(checkpoint, allowed=("training_state.json", "COMPLETE"))
    assert "resumed from" in _train(tmp_path, corpus, tmp_path / "resumed", *flags)

    straight = _losses(tmp_path / "straight")
    assert len(straight) == 4 and _losses(tmp_path / "resumed") == straight
    # The main process's gathered full state dict, as the last checkpoint holds it, is what last/ loads to.
    gathered = torch.load(
        tmp_path / "resumed" / "checkpoints" / "checkpoint_4" / "pytorch_model_fsdp.bin", weights_only=True
    )
    for run in ("straight", "resumed"):
        for saved in ("last", "best"):
            loaded = AutoModelForCTC.from_pretrained(tmp_path / run / saved).state_dict()
            assert loaded.keys() == gathered.keys()
            assert all(torch.equal(loaded[k], gathered[k]) for k in gathered), (run, saved)


@pytest.mark.parametrize("name,expected", [("a40_1p3b_fsdp", "zero2"), ("a40_3b_fsdp", "fsdp")])
def test_shipped_a40_configs_are_fsdp2_with_the_plans_strategy(name, expected):
    import yaml
    from accelerate.utils import FullyShardedDataParallelPlugin

    config = yaml.safe_load((ROOT / "run_scripts" / "configs" / "accelerate" / f"{name}.yaml").read_text())
    fsdp = config["fsdp_config"]
    assert config["distributed_type"] == "FSDP" and config["num_processes"] == 2 and fsdp["fsdp_version"] == 2
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        reshard_after_forward=fsdp["fsdp_reshard_after_forward"],
        state_dict_type=fsdp["fsdp_state_dict_type"],
    )
    launch = SimpleNamespace(distributed_type=DistributedType.FSDP, state=SimpleNamespace(fsdp_plugin=plugin))
    assert sharding_strategy(launch) == expected  # the strategy the header's memory plan was made for
