"""A plain (non-editable) install imports and installs no generic top-level names; without the install the
package raises an ImportError that says how to install, instead of falling back."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


BLOCK_INSTALL = """
import importlib.abc, sys

class BlockInstalledParts(importlib.abc.MetaPathFinder):  # what a clone without `pip install -e .` lacks
    def find_spec(self, name, path=None, target=None):
        if name.startswith(("modeling_lact_audio.kernels", "modeling_lact_audio.processors")):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, BlockInstalledParts())
"""


@pytest.mark.slow
def test_the_package_without_its_installed_parts_raises_how_to_install():
    code = BLOCK_INSTALL + "import modeling_lact_audio\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode != 0
    assert "ImportError: lact-audio is not installed: run `pip install -e .`" in out.stderr, out.stderr[-2000:]


@pytest.mark.slow
def test_the_modeling_files_outside_the_package_or_a_hub_folder_raise(tmp_path):
    """Copied into another package, the flat files use neither the installed op nor the bundle: they raise."""
    copy = tmp_path / "my_models"
    copy.mkdir()
    (copy / "__init__.py").write_text("")
    for source in (ROOT / "modeling_lact_audio").glob("*.py"):
        if source.name != "__init__.py":
            shutil.copy(source, copy / source.name)
    code = "import my_models.modeling_lact_audio"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode != 0
    assert "not as 'my_models'" in out.stderr and "pip install -e ." in out.stderr, out.stderr[-2000:]
