"""How the fast weights move over a session: update norms, distance from the initial weights, a 2-D map.

The adaptation report plots, for one speaker's session, how far each utterance (or each streamed piece)
moves the LaCT fast weights, how far they have drifted from the model's learned initial weights, and
the path of the states projected onto their first two principal components.

A *fast-weight vector* is every LaCT layer's ``w0, w1, w2`` of one batch element, flattened and
concatenated in layer order (per layer ``w0 [H, Dh, D]``, then ``w1 [H, D, Dh]``, then ``w2 [H, Dh, D]``),
as float32 on the CPU: :func:`initial_fast_weight_vector` gives it for the model's initial weights,
:func:`fast_weight_vector` for a ``LaCTCache``; both have the same length and order.
"""

import numpy as np
import torch

from ..cache_lact_audio import LaCTCache
from ..modeling_lact_audio import LaCTAudioModel

STEP_KEYS = ("update_norm", "relative_update_norm", "distance_from_initial", "relative_distance")


def _backbone(model) -> LaCTAudioModel:
    """The one ``LaCTAudioModel`` inside ``model`` (a ``LaCTAudioForCTC``, a ``CachedStatesCTC``, ...)."""
    found = [m for m in model.modules() if isinstance(m, LaCTAudioModel)]
    if len(found) != 1:
        raise ValueError(
            f"expected a model holding exactly one LaCTAudioModel backbone (LaCTAudioForCTC, CachedStatesCTC, "
            f"LaCTAudioModel), found {len(found)} in {type(model).__name__}"
        )
    return found[0]


def _flatten(parts) -> torch.Tensor:
    return torch.cat([p.detach().to("cpu", torch.float32).reshape(-1) for p in parts])


def initial_fast_weight_vector(model) -> torch.Tensor:
    """The model's initial fast weights (what a fresh stream starts from) as one vector.

    Args:
        model: a module holding one ``LaCTAudioModel`` whose mixer is ``"lact"``.

    Returns:
        float32 CPU tensor ``[n]``, ``n = num_layers * 3 * num_lact_heads * lact_head_dim * lact_hidden_dim``,
        in the order of :func:`fast_weight_vector` (the weights of ``mixer.initial_state(1)`` per layer).

    Raises:
        ValueError: the model has no LaCT fast weights (an attention baseline, a BiLSTM head).
    """
    backbone = _backbone(model)
    parts = []
    for layer in backbone.layers:
        if layer.mixer.use_lact:
            state = layer.mixer.initial_state(1)
            parts += [state.w0[0], state.w1[0], state.w2[0]]
    if not parts:
        raise ValueError(
            f"the model has no LaCT fast weights (mixer={backbone.config.mixer!r}); fast-weight statistics need "
            "mixer='lact'"
        )
    return _flatten(parts)


def fast_weight_vector(cache: LaCTCache, index: int = 0) -> torch.Tensor:
    """The fast weights a cache holds for one batch element, as one vector.

    Args:
        cache: a ``LaCTCache`` every layer of which holds fast weights (the model has run with it).
        index: the batch element (negative counts from the end).

    Returns:
        float32 CPU tensor ``[n]``: per layer ``w0[index]``, ``w1[index]``, ``w2[index]`` flattened, layers in
        order; same length and order as :func:`initial_fast_weight_vector` of the model that filled it.

    Raises:
        ValueError: a layer holds no fast weights, or ``index`` is outside the batch.
    """
    if not isinstance(cache, LaCTCache):
        raise TypeError(f"fast_weight_vector needs a LaCTCache, got {type(cache).__name__}")
    empty = [i for i, lc in enumerate(cache.layer_caches) if lc.fast is None]
    if empty or not cache.layer_caches:
        raise ValueError(
            f"layers {empty} of the cache hold no fast weights: run the model with this cache first "
            "(use_cache=True, past_key_values=cache); a model whose mixer is not 'lact' never fills them"
        )
    batch = cache.batch_size
    if not -batch <= index < batch:
        raise ValueError(f"index {index} is outside the cache's batch of {batch}")
    return _flatten(p for lc in cache.layer_caches for p in (lc.fast.w0[index], lc.fast.w1[index], lc.fast.w2[index]))


def _pieces(inputs: dict, chunk_frames: int | None) -> list[dict]:
    """``inputs`` cut along the time axis (dim 1 of every tensor with >= 2 dims) into ``chunk_frames`` pieces."""
    if chunk_frames is None:
        return [inputs]
    timed = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.dim() >= 2}
    lengths = {k: v.shape[1] for k, v in timed.items()}
    if not timed or len(set(lengths.values())) != 1:
        raise ValueError(
            f"chunk_frames cuts every input along dim 1, so the tensors must share that length; got {lengths}"
        )
    T = next(iter(lengths.values()))
    return [
        {k: v[:, s : s + chunk_frames] if k in timed else v for k, v in inputs.items()}
        for s in range(0, max(T, 1), chunk_frames)
    ]


def _check_utterance(u: int, inputs) -> None:
    if not isinstance(inputs, dict):
        raise ValueError(f"utterance {u}: each utterance is a dict of the model's forward kwargs, got {type(inputs)}")
    reserved = {"past_key_values", "use_cache"} & set(inputs)
    if reserved:
        raise ValueError(f"utterance {u}: {sorted(reserved)} are set by evolution_trace (it carries one cache)")
    wide = {k: tuple(v.shape) for k, v in inputs.items() if isinstance(v, torch.Tensor) and v.shape[:1] != (1,)}
    if wide:
        raise ValueError(f"utterance {u}: evolution_trace follows one stream, so every input must have batch 1: {wide}")


def evolution_trace(model, utterances: list[dict], chunk_frames: int | None = None) -> dict:
    """Run a session through ``model`` with one carried ``LaCTCache`` and measure each step's fast weights.

    The cache starts fresh (the model's initial weights, ``v_0``) and carries across the utterances, with
    ``start_new_utterance()`` between them, as at test time. A *step* is one utterance, or with
    ``chunk_frames`` one streamed piece of it.

    Granularity: in the offline ``"bidirectional"`` order an utterance's chunks update the weights inside
    one call and every frame reads the final weights, so cutting it into calls would change the model
    (attention does not cross calls there): the trace is per utterance and ``chunk_frames`` is refused.
    In the streaming orders (``"update_apply"``, ``"apply_update"``) the utterance can be fed in pieces
    of ``chunk_frames`` input positions (``lact_chunk_size * config.total_stride`` gives one vector per
    LaCT update; a multiple of it keeps ``"update_apply"`` equal to one call), so the trace is per piece.

    Args:
        model: a module holding one ``LaCTAudioModel`` with the LaCT mixer whose forward takes
            ``past_key_values`` and ``use_cache`` (``CachedStatesCTC``: ``frontend_states [1, T, d_model]``,
            ``attention_mask [1, T]``; ``LaCTAudioForCTC``: ``input_features [1, T, mels]`` or ``input_values``),
            in eval mode.
        utterances: the session in order: one dict of forward kwargs per utterance, batch 1.
        chunk_frames: None (one step per utterance) or the piece length along dim 1 of the inputs.

    Returns:
        a dict; the per-step lists have one entry per step ``i = 1..N``, ``v_i`` the state after step i:
            ``utterance``, ``piece``: the step's utterance index and piece index within it (0 per utterance);
            ``length``: input positions of the step;
            ``update_norm``: ``||v_i - v_{i-1}||``; ``relative_update_norm``: that over ``||v_{i-1}||``;
            ``distance_from_initial``: ``||v_i - v_0||``; ``relative_distance``: that over ``||v_0||``;
            ``vectors``: float32 tensor ``[N + 1, n]``, row 0 the initial weights (for :func:`project_2d`);
            ``granularity``: ``"utterance"`` or ``"piece"``.

    Raises:
        ValueError: the model is in training mode (dropout would make the trace random), has no LaCT fast
            weights, ``chunk_frames`` is not a positive int or is given for the bidirectional order or
            Whisper log-mel inputs, or an utterance is not a batch-1 dict of inputs.
    """
    if model.training:
        raise ValueError("evolution_trace: call model.eval() first (dropout would make the trace random)")
    config = _backbone(model).config
    if not isinstance(utterances, (list, tuple)) or not utterances:
        raise ValueError("evolution_trace: utterances must be a non-empty list of dicts of forward kwargs")
    if chunk_frames is not None:
        if not isinstance(chunk_frames, int) or isinstance(chunk_frames, bool) or chunk_frames < 1:
            raise ValueError(f"chunk_frames must be a positive int or None, got {chunk_frames!r}")
        if config.lact_order == "bidirectional":
            raise ValueError(
                "chunk_frames needs a streaming order: with lact_order='bidirectional' every frame reads the "
                "weights updated on the whole utterance, so a piece-wise run is another model; pass "
                "chunk_frames=None for one step per utterance"
            )
    v0 = initial_fast_weight_vector(model)
    vectors, utterance, piece, length = [v0], [], [], []
    cache = LaCTCache(config.num_hidden_layers)
    with torch.no_grad():
        for u, inputs in enumerate(utterances):
            _check_utterance(u, inputs)
            if chunk_frames is not None and config.frontend == "whisper_encoder" and "input_features" in inputs:
                raise ValueError(
                    "chunk_frames cannot cut Whisper log-mel inputs (the encoder reads whole 30 s windows); "
                    "pass frontend_states"
                )
            if u:
                cache.start_new_utterance()
            for j, part in enumerate(_pieces(inputs, chunk_frames)):
                cache = model(**part, past_key_values=cache, use_cache=True).past_key_values
                vectors.append(fast_weight_vector(cache))
                timed = [v for v in part.values() if isinstance(v, torch.Tensor) and v.dim() >= 2]
                utterance.append(u)
                piece.append(j)
                length.append(int(timed[0].shape[1]) if timed else 0)
    V = torch.stack(vectors)  # [N + 1, n]
    V64 = V.double()
    update = (V64[1:] - V64[:-1]).norm(dim=1)
    distance = (V64[1:] - V64[0]).norm(dim=1)
    before = V64[:-1].norm(dim=1)
    start = float(V64[0].norm())
    return {
        "utterance": utterance,
        "piece": piece,
        "length": length,
        "update_norm": update.tolist(),
        "relative_update_norm": (update / before).tolist(),
        "distance_from_initial": distance.tolist(),
        "relative_distance": (distance / start).tolist(),
        "vectors": V,
        "granularity": "utterance" if chunk_frames is None else "piece",
    }


def project_2d(vectors) -> np.ndarray:
    """Project points onto their first two principal components (PCA), with a deterministic sign.

    The points are centred; the components come from the eigendecomposition of the ``N x N`` Gram matrix
    of the centred points (in float64), which is cheap when there are few points of a large dimension, as
    for fast-weight vectors. Each axis is signed so that its largest-magnitude coordinate is positive.
    Distances between points are kept along each axis (the coordinates are projections, not rescaled).

    Args:
        vectors: ``[N, n]`` tensor or array (e.g. ``evolution_trace(...)["vectors"]``), N >= 1.

    Returns:
        float64 ndarray ``[N, 2]``; where the points span fewer than two dimensions the missing coordinate
        is zero (up to rounding: about 1e-8 of the first one's spread for points on a line).
    """
    X = torch.as_tensor(np.asarray(vectors) if not isinstance(vectors, torch.Tensor) else vectors)
    if X.dim() != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"project_2d needs a [N, n] matrix with N, n >= 1, got shape {tuple(X.shape)}")
    X = X.detach().to("cpu", torch.float64)
    if not torch.isfinite(X).all():
        raise ValueError("project_2d: the vectors hold non-finite values")
    X = X - X.mean(dim=0)
    N = X.shape[0]
    eigenvalues, eigenvectors = torch.linalg.eigh(X @ X.T)  # ascending
    k = min(2, N)
    values = eigenvalues.flip(0)[:k].clamp(min=0.0)
    axes = eigenvectors.flip(1)[:, :k]
    coords = axes * values.sqrt()  # [N, k]: U S of the centred matrix's SVD
    for j in range(k):
        peak = int(coords[:, j].abs().argmax())
        if coords[peak, j] < 0:
            coords[:, j] = -coords[:, j]
    out = np.zeros((N, 2))
    out[:, :k] = coords.numpy()
    return out
