"""What a training checkpoint folder may hold, so that resuming never runs code from data.

Accelerate's ``save_state`` writes the weights as safetensors and the optimizer, scheduler, sampler and
RNG states with ``torch.save``; its ``load_state`` reads those back with ``weights_only=True`` (tensors,
numbers, containers and numpy arrays only). Objects registered with ``register_for_checkpointing`` are
the exception: it unpickles their ``custom_checkpoint_N.pkl`` with ``weights_only=False``, so a planted
file there runs arbitrary code. lact-audio registers nothing; its own progress goes to JSON beside
Accelerate's files, and :func:`check_checkpoint_files` refuses a folder holding any other file before
anything in it is loaded.

Under FSDP with ``fsdp_state_dict_type: FULL_STATE_DICT`` the main process writes the gathered weights as
``pytorch_model_fsdp.bin`` and the optimizer as ``optimizer.bin`` with ``torch.save``; they are read back
with ``weights_only=True`` too. A sharded state dict (torch.distributed.checkpoint) is refused before
training (``trainer.sharding_strategy``): its ``.metadata`` file is read with ``pickle.load``, and its
sub-folders would fail the check here anyway.
"""

import json
import re
from pathlib import Path

TRAINING_STATE = "training_state.json"

# The files Accelerate's save_state writes for one model, optimizer and scheduler, per process (the model
# under FSDP's full state dict: pytorch_model_fsdp.bin).
_ACCELERATE_FILES = re.compile(
    r"model(_\d+)?\.safetensors|pytorch_model_fsdp(_\d+)?\.bin"
    r"|(optimizer|scheduler|sampler|dl_state_dict)(_\d+)?\.bin|random_states_\d+\.pkl|scaler\.pt"
)


def check_checkpoint_files(folder: Path, allowed: tuple[str, ...] = ()) -> None:
    """Raise ``ValueError`` if ``folder`` holds a file that is neither Accelerate's nor in ``allowed``.

    Args:
        folder: a ``checkpoints/checkpoint_N`` folder about to be resumed from.
        allowed: other file names the caller writes there (JSON, marks).

    Raises:
        ValueError: naming the first unexpected file (a ``custom_checkpoint_*.pkl`` above all: Accelerate
            would unpickle it with ``weights_only=False``), a sub-folder, or a missing folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"no checkpoint folder at {folder}")
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.name in allowed or _ACCELERATE_FILES.fullmatch(path.name)):
            continue
        what = "a pickle that resuming would execute" if path.name.startswith("custom_checkpoint") else "unexpected"
        raise ValueError(
            f"{path}: {what}; a lact-audio checkpoint holds only Accelerate's weight and state files and "
            f"{', '.join(allowed) or 'nothing else'}. Remove the file if you know where it came from, or start "
            "the run over (--resume false / a new output folder)."
        )


def write_training_state(folder: Path, state: dict) -> None:
    """Write ``state`` (JSON values only: numbers, strings, lists, dicts) as ``folder/training_state.json``."""
    (Path(folder) / TRAINING_STATE).write_text(json.dumps(state, indent=1))


def read_training_state(folder: Path) -> dict:
    """The dict :func:`write_training_state` wrote; ``ValueError`` when the file is missing or not JSON."""
    path = Path(folder) / TRAINING_STATE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ValueError(
            f"{path} is missing: the checkpoint was written by an older lact-audio that kept its progress in "
            "pickles, which are no longer loaded; start the run over."
        ) from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): the checkpoint is corrupt; start the run over.") from err
