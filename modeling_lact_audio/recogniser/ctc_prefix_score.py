"""CTC prefix probabilities of character strings, for joint CTC / attention decoding.

The prefix probability of a label string ``g`` is the total probability of every CTC path whose collapsed
output *starts with* ``g`` (Watanabe et al. 2017, "Hybrid CTC/Attention Architecture for End-to-End Speech
Recognition", Algorithm 2). An attention decoder proposes the next token; the change in the CTC prefix
log-probability says how well the audio's frames support it, so a hypothesis the frames do not contain
(a hallucinated phrase, a dropped word) loses score. Here the forward variables of a string are extended by
one label in closed form: both recursions of the algorithm are linear in the probability domain, so each is a
cumulative log-sum-exp over frames (``O(T)`` tensor operations per label, no Python loop over frames).
"""

import torch


class CTCPrefixScorer:
    """Prefix and full-string CTC log-probabilities over one utterance's frames, cached per string.

    Args:
        log_probs: ``[T, V]`` log-softmax outputs of a CTC model for one utterance (real frames only).
        blank: the blank's id.

    A string is a tuple of label ids (no blanks). ``prefix(g)`` returns ``log P(output starts with g)``
    (0 for the empty string); ``full(g)`` returns ``log P(output == g)``, the negative of
    ``torch.nn.functional.ctc_loss(..., reduction="sum")``. Every string met is cached with its forward
    variables, so extending a hypothesis by a few labels costs only those labels.
    """

    def __init__(self, log_probs: torch.Tensor, blank: int = 0):
        if log_probs.dim() != 2:
            raise ValueError(f"log_probs must be [T, V] for one utterance, got shape {tuple(log_probs.shape)}")
        if log_probs.shape[0] == 0:
            raise ValueError("log_probs has no frames: a CTC prefix score needs at least one frame")
        # A log-prob of exactly -inf would make the cumulative sums below -inf - -inf; e^-1e4 is already 0.
        self.x = log_probs.detach().double().cpu().clamp_min(-1e4)
        self.blank = blank
        self.label_cum = torch.cumsum(self.x, 0)  # [T, V] log prod_{u<=t} x_u(v), once for every label
        self.blank_cum = self.label_cum[:, blank]
        neg_inf = torch.full_like(self.blank_cum, -torch.inf)
        # Forward variables of the empty string: every frame so far blank, no label yet.
        self.cache = {(): (neg_inf, self.blank_cum, 0.0)}

    def _variables(self, g: tuple) -> tuple:
        """``(r_n [T], r_b [T], prefix log-prob)`` of ``g``: paths over frames ``0..t`` that collapse to
        exactly ``g``, ending in ``g``'s last label (``r_n``) or in a blank (``r_b``)."""
        if g in self.cache:
            return self.cache[g]
        head = g[:-1]
        r_n, r_b, _ = self._variables(head)
        c = g[-1]
        # phi[t]: paths over frames 0..t that may be followed by a new emission of c at t+1.
        phi = r_b if head and head[-1] == c else torch.logaddexp(r_n, r_b)
        # Paths starting c at frame s+1 after phi[s], with s = -1 standing for "before the first frame"
        # (only when g is a single label): r_n[t] = sum_s phi[s] * prod_{u=s+1..t} x_u(c).
        lc = self.label_cum[:, c]  # [T] log prod_{u<=t} x_u(c)
        start = torch.cat([torch.tensor([0.0 if not head else -torch.inf], dtype=phi.dtype), phi[:-1]])
        offset = torch.cat([torch.zeros(1, dtype=lc.dtype), lc[:-1]])  # lc[s] for s = t - 1, lc[-1] = 0
        new_n = lc + torch.logcumsumexp(start - offset, 0)
        # r_b[t] = sum_{s<t} r_n[s] * prod_{u=s+1..t} x_u(blank).
        shifted = torch.cat([torch.full((1,), -torch.inf, dtype=new_n.dtype), new_n[:-1]])
        blank_offset = torch.cat([torch.zeros(1, dtype=lc.dtype), self.blank_cum[:-1]])
        new_b = self.blank_cum + torch.logcumsumexp(shifted - blank_offset, 0)
        # Prefix: the first emission of c (the end of g) happens at some frame t.
        prefix = float(torch.logsumexp(start + self.x[:, c], 0))
        self.cache[g] = (new_n, new_b, prefix)
        return self.cache[g]

    def prefix(self, g) -> float:
        """``log P(the collapsed output starts with g)``; 0.0 for the empty string."""
        return self._variables(tuple(g))[2]

    def full(self, g) -> float:
        """``log P(the collapsed output is exactly g)`` over all the frames."""
        r_n, r_b, _ = self._variables(tuple(g))
        return float(torch.logaddexp(r_n[-1], r_b[-1]))
