"""Training sequences that teach the fast weights to carry information across utterances.

A *session* is 1-8 utterances of one training speaker, read in order: the LaCT fast-weight state runs
across the utterance boundaries (``LaCTCache`` carried, ``start_new_utterance()`` between them), while
attention and the CTC loss stay per utterance. At test time the same carried state is how the model
adapts to a speaker without a gradient step; trained only on single utterances, it never sees a
carried state and gets worse when one is given (measured on the first shipped model).
"""

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Sampler


class SessionSampler(Sampler):
    """Batches of sessions: each batch is a list of sessions, each a list of row indices of one speaker.

    Args:
        speakers: speaker id of every row ``[N]``.
        num_frames: encoder frames of every row ``[N]`` (for the per-batch frame budget).
        batch_frames: frames of one batch (all utterances of all its sessions) at most.
        max_utterances: longest session; lengths are drawn uniformly from ``[2, max_utterances]``.
        single_fraction: share of sessions that are single utterances (a reset state stays familiar).
        seed: with the epoch (``set_epoch``), fixes every batch: the plan depends on nothing else.

    Every row appears in exactly one session per epoch; sessions of a batch are sorted longest first
    (the collator relies on it).
    """

    def __init__(
        self,
        speakers: list[str],
        num_frames: np.ndarray,
        batch_frames: int,
        max_utterances: int = 8,
        single_fraction: float = 0.25,
        seed: int = 0,
    ):
        if max_utterances < 1:
            raise ValueError(f"max_utterances must be >= 1, got {max_utterances}")
        if int(np.max(num_frames)) * max_utterances > batch_frames:
            raise ValueError(
                f"batch_frames={batch_frames} cannot hold one session of {max_utterances} utterances of up to "
                f"{int(np.max(num_frames))} frames; raise batch_frames or lower max_utterances"
            )
        self.num_frames = np.asarray(num_frames)
        self.by_speaker = defaultdict(list)
        for i, s in enumerate(speakers):
            self.by_speaker[s].append(i)
        self.batch_frames, self.max_utterances = batch_frames, max_utterances
        self.single_fraction, self.seed, self.epoch = single_fraction, seed, 0
        self._plan = None

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose plan ``__iter__`` yields."""
        self.epoch, self._plan = epoch, None

    def sessions(self) -> list[list[int]]:
        """This epoch's sessions, shuffled."""
        rng = np.random.default_rng([self.seed, self.epoch])
        out = []
        for speaker in sorted(self.by_speaker):
            rows = list(rng.permutation(self.by_speaker[speaker]))
            while rows:
                n = 1 if rng.random() < self.single_fraction else int(rng.integers(2, self.max_utterances + 1))
                out.append([int(i) for i in rows[:n]])
                rows = rows[n:]
        return [out[i] for i in rng.permutation(len(out))]

    def plan(self) -> list[list[list[int]]]:
        """This epoch's batches; a batch is a list of sessions, longest session first."""
        if self._plan is None:
            batches, batch, frames = [], [], 0
            for session in self.sessions():
                cost = int(self.num_frames[session].sum())
                if batch and frames + cost > self.batch_frames:
                    batches.append(batch)
                    batch, frames = [], 0
                batch.append(session)
                frames += cost
            if batch:
                batches.append(batch)
            self._plan = [sorted(b, key=len, reverse=True) for b in batches]
        return self._plan

    def __iter__(self):
        return iter(self.plan())

    def __len__(self) -> int:
        return len(self.plan())


@dataclass
class SessionCollator:
    """A batch of sessions -> one padded batch per utterance position.

    ``__call__(sessions)`` takes, per session, a list of rows ``{"states": [T, d] float16, "labels": list[int]}``
    (sessions longest first) and returns a list over positions ``j``; entry ``j`` covers the sessions
    that have a ``j``-th utterance (a prefix of the batch, so the carried cache can be cut to it) with
    ``frontend_states [B_j, T_j, d]`` float32, ``attention_mask [B_j, T_j]`` long and ``labels [B_j, S_j]``
    (-100 padding).
    """

    def __call__(self, sessions: list[list[dict]]) -> list[dict]:
        positions = []
        for j in range(len(sessions[0])):
            rows = [s[j] for s in sessions if len(s) > j]
            states = [torch.as_tensor(np.asarray(r["states"]), dtype=torch.float32) for r in rows]
            T = max(s.shape[0] for s in states)
            S = max(max(len(r["labels"]), 1) for r in rows)
            x = torch.zeros(len(rows), T, states[0].shape[1])
            mask = torch.zeros(len(rows), T, dtype=torch.long)
            labels = torch.full((len(rows), S), -100, dtype=torch.long)
            for b, (s, r) in enumerate(zip(states, rows)):
                x[b, : s.shape[0]], mask[b, : s.shape[0]] = s, 1
                labels[b, : len(r["labels"])] = torch.as_tensor(r["labels"], dtype=torch.long)
            positions.append({"frontend_states": x, "attention_mask": mask, "labels": labels})
        return positions
