"""A folder whose code copies differ from the installed package is never loaded with the installed code silently.

transformers prefers classes registered in the process over a folder's ``auto_map`` code, even with
``trust_remote_code=True``; once ``modeling_lact_audio`` is imported, the installed code runs. The load must
say so, naming the files that differ (the subprocess test in test_export_checkpoint.py shows a folder's own
code running where the package is not imported).
"""

import shutil
from pathlib import Path

from transformers import AutoModelForCTC
from transformers.testing_utils import CaptureLogger

from modeling_lact_audio import modeling_lact_audio as modeling

SHIPPED = Path(__file__).resolve().parents[2] / "model_cards" / "checkpoints" / "lact_tiny_ctc"


def test_a_changed_folder_warns_naming_the_files_and_a_fresh_one_does_not(tmp_path):
    fresh = tmp_path / "fresh"
    shutil.copytree(SHIPPED, fresh)
    with CaptureLogger(modeling.logger) as quiet:
        AutoModelForCTC.from_pretrained(fresh, trust_remote_code=True)
    assert "differs from the installed" not in quiet.out

    changed = tmp_path / "changed"
    shutil.copytree(SHIPPED, changed)
    (changed / "lact_kernels.py").write_text((changed / "lact_kernels.py").read_text() + "\nsyntax error here\n")
    with CaptureLogger(modeling.logger) as noisy:
        model = AutoModelForCTC.from_pretrained(changed, trust_remote_code=True)
    assert "ships modeling code that differs from the installed lact-audio (lact_kernels.py)" in noisy.out
    assert "--refresh-code" in noisy.out
    assert type(model).__module__ == "modeling_lact_audio.modeling_lact_audio"  # what transformers chose
    assert modeling.warn_if_folder_code_differs(tmp_path) == []  # a folder without code copies: nothing to say
