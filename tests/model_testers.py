"""Tiny configs and inputs for the model tests, in the style of transformers' ``*ModelTester``, and a loader
that runs a saved folder with ``trust_remote_code`` in a process where lact-audio cannot be imported."""

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch

from modeling_lact_audio import LaCTAudioConfig


class LaCTAudioModelTester:
    """Builds tiny configs (hidden 16, 2 layers) and matching random inputs."""

    def __init__(self, batch_size=2, num_mel_bins=8, hidden_size=16, chunk=4, window=3, vocab_size=11):
        self.batch_size = batch_size
        self.num_mel_bins = num_mel_bins
        self.hidden_size = hidden_size
        self.chunk = chunk
        self.window = window
        self.vocab_size = vocab_size

    def _backbone(self) -> dict:
        return dict(
            hidden_size=self.hidden_size,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_lact_heads=2,
            intermediate_size=32,
            lact_chunk_size=self.chunk,
            window_size=self.window,
            muon_steps=2,
            use_momentum=True,
        )

    def ctc_config(self, **overrides) -> LaCTAudioConfig:
        fields = dict(
            self._backbone(),
            task="ctc",
            vocab_size=self.vocab_size,
            conv_channels=[12, 12],
            conv_kernel_sizes=[3, 3],
            conv_strides=[2, 2],
        )
        if overrides.get("frontend", "log_mel") == "log_mel":
            fields["num_mel_bins"] = self.num_mel_bins
        fields.update(overrides)
        return LaCTAudioConfig(**fields)

    def waveform_config(self, **overrides) -> LaCTAudioConfig:
        fields = dict(
            frontend="waveform", conv_channels=[8, 8, 8], conv_kernel_sizes=[10, 3, 3], conv_strides=[5, 2, 2]
        )
        fields.update(overrides)
        return self.ctc_config(**fields)

    def lm_config(self, **overrides) -> LaCTAudioConfig:
        fields = dict(
            self._backbone(), task="lm", num_codebooks=2, codebook_size=13, num_conditions=3, condition_dim=5
        )
        fields.update(overrides)
        return LaCTAudioConfig(**fields)

    def features(self, T=37, lengths=None, seed=0):
        """``input_features [B, T, mels]`` and ``attention_mask [B, T]`` (int, 1 = real)."""
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(self.batch_size, T, self.num_mel_bins, generator=g)
        lengths = lengths or [T] * self.batch_size
        mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
        return x * mask[..., None], mask

    def labels(self, lengths=(5, 3), seed=0):
        g = torch.Generator().manual_seed(seed)
        labels = torch.full((len(lengths), max(lengths)), -100, dtype=torch.long)
        for i, n in enumerate(lengths):
            labels[i, :n] = torch.randint(1, self.vocab_size, (n,), generator=g)
        return labels


REMOTE_SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys

    class BlockPackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "modeling_lact_audio" or name.startswith("modeling_lact_audio."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, BlockPackage())
    import torch
    from transformers import AutoModelForCTC, AutoModelForCausalLM

    folder, kind = sys.argv[1], sys.argv[2]
    auto = AutoModelForCTC if kind == "ctc" else AutoModelForCausalLM
    model = auto.from_pretrained(folder, trust_remote_code=True).eval()
    inputs = torch.load(folder + "/inputs.pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    torch.save(logits, folder + "/remote_logits.pt")
    print(json.dumps({"class": type(model).__name__, "module": type(model).__module__,
                      "package_imported": any(m.split(".")[0] == "modeling_lact_audio" for m in sys.modules)}))
""")


def load_without_the_package(folder: Path, kind: str) -> dict:
    """Load ``folder`` with ``trust_remote_code`` in a fresh process that blocks ``modeling_lact_audio``, run it
    on ``folder/inputs.pt`` and save the logits as ``folder/remote_logits.pt``.

    ``kind``: ``"ctc"`` or ``"lm"`` (the Auto class). Returns what the process reports: the model's
    ``class`` and ``module``, and whether anything of the package was imported (``package_imported``).
    """
    with tempfile.TemporaryDirectory() as work:
        script = Path(work) / "remote.py"
        script.write_text(REMOTE_SCRIPT)
        out = subprocess.run(
            [sys.executable, str(script), str(folder), kind],
            capture_output=True,
            text=True,
            cwd=work,
            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_MODULES_CACHE": str(Path(work) / "modules")},
        )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
