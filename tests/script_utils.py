"""Load a script that is not in the package (``run_scripts/*.py``, ``eval/**/*.py``) as a module, so tests call its
``main([...])`` in-process."""

import importlib.util
from pathlib import Path


def load_script(path: Path):
    """The module of the script at ``path``, named ``<stem>_script``."""
    spec = importlib.util.spec_from_file_location(path.stem + "_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
