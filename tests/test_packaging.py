"""A plain (non-editable) install imports, and installs no generic top-level names."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_plain_install_imports_from_its_own_files(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
         str(target), str(ROOT)],
        capture_output=True, text=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert build.returncode == 0, build.stderr[-2000:]
    top_level = {p.name for p in target.iterdir() if not p.name.endswith((".dist-info", ".egg-info"))}
    assert "modeling_lact_audio" in top_level
    assert not top_level & {"kernels", "processors", "eval", "run_scripts", "tests"}, top_level
    code = (
        "import modeling_lact_audio, modeling_lact_audio.kernels as k, modeling_lact_audio.processors as p;"
        "print(modeling_lact_audio.__file__); print(k.__file__); print(p.__file__);"
        "print(k.lact_swiglu.__name__, p.LaCTFeatureExtractor.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(target)})
    assert out.returncode == 0, out.stderr[-2000:]
    files = out.stdout.splitlines()[:3]
    assert all(f.startswith(str(target)) for f in files), files
    assert files[1].endswith("modeling_lact_audio/kernels/__init__.py")
    assert files[2].endswith("modeling_lact_audio/processors/__init__.py")
