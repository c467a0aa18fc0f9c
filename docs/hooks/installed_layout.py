"""MkDocs hook: give mkdocstrings the package as it installs, not as it sits in the repository.

``setup.py`` installs ``processors/`` and ``kernels/`` *inside* ``modeling_lact_audio`` (``package_dir``),
which griffe's static analysis cannot follow. Before any page is collected, this hook lays out
``build/docs_src/modeling_lact_audio`` as symbolic links: every entry of ``modeling_lact_audio/`` plus
``processors`` and ``kernels``; ``mkdocs.yml`` points the Python handler's ``paths`` there.
"""

import shutil
from pathlib import Path

from mkdocs.plugins import event_priority

PACKAGE = "modeling_lact_audio"
MAPPED = {"processors": "processors", "kernels": "kernels"}  # installed name -> repository folder
MIRROR = Path("build") / "docs_src"


@event_priority(100)  # before mkdocstrings reads its handler options
def on_config(config):
    root = Path(config.config_file_path).resolve().parent
    mirror = root / MIRROR / PACKAGE
    shutil.rmtree(mirror.parent, ignore_errors=True)
    mirror.mkdir(parents=True)
    for entry in (root / PACKAGE).iterdir():
        if entry.name != "__pycache__" and entry.name not in MAPPED:
            (mirror / entry.name).symlink_to(entry)
    for name, folder in MAPPED.items():
        (mirror / name).symlink_to(root / folder, target_is_directory=True)
    return config
