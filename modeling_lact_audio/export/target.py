"""Output folders that exporters may replace: only their own, unless told otherwise.

An exporter writes a record file into every folder it creates (:data:`EXPORT_RECORD`, or its own record
such as the Whisper conversion's ``ct2_conversion.json``). Replacing a folder is allowed when it is
missing, empty, or holds that record; any other non-empty folder (a typo'd path to a home directory, a
project folder) is refused unless the caller passes ``overwrite=True`` (``--overwrite``).
"""

import json
from pathlib import Path

EXPORT_RECORD = "lact_export.json"


def claim_target(target: Path, overwrite: bool = False, record: str = EXPORT_RECORD) -> None:
    """Raise unless ``target`` may be deleted and rewritten.

    Args:
        target: the folder about to be replaced.
        overwrite: replace a non-empty folder even without ``record`` in it.
        record: the file name that marks a folder as written by this exporter.

    Raises:
        ValueError: ``target`` is a file, or a non-empty folder without ``record`` and ``overwrite`` is False.
    """
    target = Path(target)
    if not target.exists():
        return
    if not target.is_dir():
        raise ValueError(f"{target} exists and is not a folder; choose a folder path for the export.")
    if overwrite or (target / record).is_file() or not any(target.iterdir()):
        return
    raise ValueError(
        f"{target} is a non-empty folder that was not written by this exporter (no {record} in it); it would be "
        "deleted. Choose another folder, or pass --overwrite (overwrite=True) to replace it."
    )


def write_export_record(target: Path, **fields) -> None:
    """Write ``target/lact_export.json`` (what made the folder and from what), the mark :func:`claim_target`
    looks for, with ``weights_sha256``: the sha256 of every ``*.safetensors`` file in ``target``, which the
    models' ``from_pretrained`` verifies. Call it after the weights are written."""
    from ..modeling_lact_audio import file_sha256

    target = Path(target)
    sums = {p.name: file_sha256(p) for p in sorted(target.glob("*.safetensors"))}
    record = {"written_by": "lact-audio", **fields, "weights_sha256": sums}
    (target / EXPORT_RECORD).write_text(json.dumps(record, indent=1) + "\n")
