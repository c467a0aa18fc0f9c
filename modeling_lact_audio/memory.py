"""Training-memory planning for the LaCT audio models, and a measurement of one training step to check it.

``python -m modeling_lact_audio.memory --preset large --gpus 2 --gpu-memory 48GB --seconds 60`` prints
what one GPU holds while training (parameters, gradients, AdamW state, activations with and without
gradient checkpointing, the LaCT fast-weight state and the attention window of a stream) under DDP,
ZeRO-2 and FSDP (= ZeRO-3), and recommends a strategy, gradient checkpointing, a micro-batch and the
gradient accumulation that reach ``--target-batch-seconds`` of audio per optimizer step; or says that
the target cannot fit, and what would make it fit. Exit status 0 when it fits, 1 when it does not.

Notation: ``B`` examples of ``T`` model frames; ``d`` hidden, ``I`` MLP width, ``L`` layers, ``Ha``
attention heads (``hd = d / Ha``), ``H`` LaCT heads of ``D = d / H`` with fast-weight hidden ``Dh``,
``C`` LaCT chunk, ``W`` window, ``s`` Muon steps, ``m' = min(D, Dh)``, ``n' = max(D, Dh)``; ``c`` bytes
of an activation value (2 under bf16 autocast, 4 in fp32), ``f = 4`` (tensors kept in fp32 under autocast).
Frames per second of audio: ``sampling_rate / inputs_to_logits_ratio`` for CTC (16 kHz, hop 160,
strides 2 x 2: 25 frames/s), the audio tokenizer's ``sampling_rate / hop_length`` for the LM
(16 kHz / 256: 62.5 frames/s).

Activations: what autograd saves for backward, counted from the code (``modeling_lact_audio.py``,
``mixer_lact_audio.py``, ``layers_lact_audio.py``, ``frontend_lact_audio.py``, ``kernels/chunk.py``,
``kernels/newton_schulz.py``), per example:

- Per block and frame: RMSNorm x2 (its fp32 input and, on the CPU where it is not fused, the normalised
  value: ``2 (f d [+ f d on CPU] + f)``); linear inputs ``3 c d`` (normed input, mixer output, MLP input);
  the qkv output ``3 c d`` (SiLU inputs of the LaCT branch); SwiGLU MLP ``4 c I``; attention: rotated
  queries and the outputs ``2 c d``, log-sum-exp ``f Ha``, per query block of ``C`` frames a copy of the
  key and value blocks it reads (``2 c d`` x the frames of the key blocks: ``C`` for the first, ``2 C``
  after it while ``W <= C``) and the boolean mask as SDPA converts it (``c`` x queries x keys);
  LaCT branch: output gate ``3 c d``, output RMSNorm ``f d [+ f d] + f H``, the normalised SiLU of q and
  k ``2 c d + 4 c H``, the op's q, k, v ``3 c d``, rates and momentum ``(6 + 1) f H``, the read ``3 c Dh`` a head.
- Per block and LaCT head, for every token of an updating chunk: the gradient recomputation and its
  factors ``c (14 Dh + D)`` (the factored Muon path, taken without momentum when the chunk is short next
  to the head: ``11 c Dh + 6 f Dh + 3 f D``); per chunk update: the fast weights the chunk reads and the
  updated ones before renormalisation, with momentum its buffer (``f 3 Dh D`` each), the update
  Newton-Schulz reads, its iterates and Gram products ``3 (s m' n' + 2 s m'^2) c`` (plus two bf16 copies of
  the first iterate under autocast); the factored path keeps four ``C x C`` matrices per weight instead
  (``12 f C^2``). One more set of fast weights per sequence (the last update is read). Each set of a
  chunk's weights is ``3 d Dh / C`` values per frame: with C = 2048 and 20 s examples (500 frames, one
  chunk) these per-chunk terms are about half of a block's activations (``ActivationBytes.lact_chunks``).
- Front end (CTC): per conv layer its padded input ``c C_in`` x the input rate, the conv output and the
  LayerNorm output in fp32 ``2 f C_out`` x the output rate, the padding mask; the projection input.
- Head: final RMSNorm, the head's input, the log-softmax in fp32 (``V`` or ``K x codebook_size`` a
  frame); CTC's forward variables ``f (2 S + 1)`` a frame, ``S = CTC_LABELS_PER_SECOND`` x seconds labels.
- Backward working set: the gradients alive while a block runs backward, ``(BACKWARD_WORKING_D d +
  BACKWARD_WORKING_I I) c`` a frame, fitted to the measured steps (``eval/memory_check.py``).

Without gradient checkpointing every block's set is held at the start of backward; with it each block
keeps only its input (``c d``) and one block's set is rebuilt at a time. The activation peak is the
largest of: the saved set plus the logits at the loss, the saved set plus the logits' gradients, and the
saved set without the head's plus the rebuilt block and the working set. Training always passes an
attention mask (padded batches), so the per-example masks and ``torch.where`` copies are counted.

Model states per parameter (``P``), per GPU of ``N``: fp32 weights 4, gradients 4, AdamW moments 8 (the
"fp32 master weights" under mixed precision are the parameters themselves: accelerate's bf16 is autocast),
plus under bf16 a working copy 2 (autocast's cast cache, or FSDP's gathered bf16 blocks). DDP keeps
everything and a gradient bucket copy (4, ``gradient_as_bucket_view=False``); ZeRO-2 (FSDP SHARD_GRAD_OP)
shards the fp32 weights, gradients and moments and keeps all gathered weights from forward to backward (2
under bf16); FSDP/ZeRO-3 (FULL_SHARD) gathers two blocks at a time. Gradients are counted during the
forward (they persist under gradient accumulation). The optimizer step's foreach temporaries (4 per
parameter, sharded like the moments) come after backward, so the peak is the states plus the larger of
the activations (with the working copy) and that temporary. ``CUDA_RESERVED_BYTES`` and ``HEADROOM`` stand
for the CUDA context, NCCL and cuBLAS buffers and allocator fragmentation, which this does not count.

Checked on the CPU: the formula is within 2% of the bytes autograd saves for the tiny preset in fp32 (the
tests), and the plan's peak within 4% of measured training steps of the tiny and small presets
(``eval/results/memory_quantisation/MEMORY.md``). bf16 follows the CPU's autocast policy (within 4% of
what autograd saves there); on a GPU, fused RMSNorm and SDPA's memory-efficient kernel (which saves the
same tensors as the CPU's) are assumed, not measured.

The measurement (:mod:`modeling_lact_audio.memory_measure`) counts the bytes of live tensors (a ``TorchDispatchMode``
that tracks every storage an op allocates until it is freed), which is what
``torch.cuda.max_memory_allocated`` reports on a GPU and what the estimate models. The process RSS is
not used: glibc keeps freed memory, libraries and thread buffers, so on the CPU it says little about tensors.
"""

from __future__ import annotations

import argparse
import math
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from .configuration_lact_audio import LaCTAudioConfig
from .kernels.newton_schulz import factored_is_cheaper
from .processors.audio_tokenization_lact import LaCTAudioTokenizerConfig
from .processors.feature_extraction_lact import LaCTFeatureExtractor

GiB = 2**30
PRECISIONS = ("bf16", "fp32")
DEVICES = ("cuda", "cpu")
# "fsdp" and "zero3" are the same thing (FSDP FULL_SHARD); "zero2" is FSDP SHARD_GRAD_OP.
STRATEGIES = ("ddp", "zero2", "fsdp", "zero3")
STRATEGY_NAMES = {"ddp": "DDP", "zero2": "ZeRO-2 (SHARD_GRAD_OP)", "fsdp": "FSDP (FULL_SHARD)"}
# Characters of read English speech per second: the CTC targets, whose forward variables are [T, 2S+1].
CTC_LABELS_PER_SECOND = 15.0
# Gradients alive at the worst point of one block's backward, in hidden / MLP-width values per frame.
BACKWARD_WORKING_D = 6
BACKWARD_WORKING_I = 3
# Per GPU: CUDA context, cuBLAS workspace, NCCL buffers; then a fraction kept free for fragmentation.
CUDA_RESERVED_BYTES = int(1.5 * GiB)
HEADROOM = 0.10
# The longest training utterance: training_memory_bytes splits a micro-batch's frames into examples this long.
LONGEST_EXAMPLE_SECONDS = 30.0
# FSDP gathers the block being computed and prefetches the next one.
FSDP_BLOCKS_IN_FLIGHT = 2


def parse_bytes(text: str | int | float) -> int:
    """``"48GB"`` (10^9), ``"44.7GiB"`` (2^30), ``"512MB"``, ``"512MiB"``, or a plain number of bytes -> bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?i?B?)\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"cannot read a memory size from {text!r}: write e.g. 48GB, 44.7GiB or 512MiB")
    value, unit = float(match.group(1)), match.group(2).upper()
    powers = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}
    prefix = unit.rstrip("B").rstrip("I")
    base = 1024 if "I" in unit else 1000
    return int(value * base ** powers[prefix])


def frames_per_second(
    config: LaCTAudioConfig, sampling_rate: int | None = None, token_rate: float | None = None
) -> float:
    """Model frames per second of audio.

    CTC: ``sampling_rate / config.inputs_to_logits_ratio`` (``sampling_rate`` defaults to the feature
    extractor's, 16 kHz). LM: ``token_rate``, by default the audio tokenizer's code frames per second
    (``LaCTAudioTokenizerConfig``: ``sampling_rate / hop_length``).
    """
    if config.task == "lm":
        if token_rate is not None:
            return float(token_rate)
        tokenizer = LaCTAudioTokenizerConfig()
        return tokenizer.sampling_rate / tokenizer.hop_length
    rate = sampling_rate if sampling_rate is not None else LaCTFeatureExtractor().sampling_rate
    return rate / config.inputs_to_logits_ratio


def _check_supported(config: LaCTAudioConfig) -> None:
    if config.task == "ctc" and config.frontend == "whisper_encoder":
        raise ValueError(
            "the memory plan covers the log_mel and waveform front ends and the LM; a whisper_encoder model "
            "holds a pretrained Whisper encoder whose weights it does not count (build the model on the meta "
            "device and use count_parameters)"
        )


def block_parameter_count(config: LaCTAudioConfig) -> int:
    """Parameters of one ``LaCTAudioBlock`` (what FSDP gathers at a time)."""
    d, inter = config.hidden_size, config.intermediate_size
    block = 2 * d  # two RMSNorm scales
    block += 4 * d * d  # qkv + o
    block += 3 * d * inter  # SwiGLU
    if config.mixer == "lact":
        H, D, Dh = config.num_lact_heads, config.lact_head_dim, config.lact_hidden_dim
        block += d * 3 * H + 3 * H  # rates
        block += (d * H + H) if config.use_momentum else 0
        block += 3 * H * Dh * D  # initial fast weights
        block += D + d * d  # output RMSNorm, gate
    return block


def parameter_count(config: LaCTAudioConfig) -> int:
    """Trainable parameters of ``LaCTAudioForCTC`` / ``LaCTAudioForCausalLM`` built from ``config``
    (equals ``count_parameters(model)``), computed from the config alone."""
    _check_supported(config)
    d = config.hidden_size
    total = config.num_hidden_layers * block_parameter_count(config) + d  # blocks, final norm
    if config.task == "lm":
        K, V = config.num_codebooks, config.codebook_size
        total += 2 * K * V * d  # embeddings + heads (no bias)
        total += config.num_conditions * d
        total += (config.condition_dim * d + d) if config.condition_dim else 0
        return total
    c_in = config.num_mel_bins if config.frontend == "log_mel" else 1
    for c_out, k in zip(config.conv_channels, config.conv_kernel_sizes):
        total += c_in * c_out * k + c_out + 2 * c_out  # conv + bias + LayerNorm
        c_in = c_out
    total += c_in * d + d  # projection
    total += d * config.vocab_size + config.vocab_size  # CTC head
    return total


def fast_weight_state_bytes(
    config: LaCTAudioConfig, batch_size: int = 1, pending_frames: int = 0, compute_bytes: int = 4
) -> int:
    """Bytes of the fast-weight states of every layer for ``batch_size`` streams (``LaCTCache`` layers' ``fast``).

    Per layer and LaCT head, fp32: ``w0, w2 [Dh, D]``, ``w1 [D, Dh]``, the momentum buffers of the same
    shapes (``use_momentum``) and the row norms of the initial weights (``2 Dh + D``). ``pending_frames``
    (``apply_update`` streams that stopped inside a chunk): their k, v in ``compute_bytes``, rates,
    momentum (fp32) and mask (bool).
    """
    if config.mixer != "lact":
        return 0
    H, D, Dh = config.num_lact_heads, config.lact_head_dim, config.lact_hidden_dim
    per_head = 4 * (3 * Dh * D) * (2 if config.use_momentum else 1) + 4 * (2 * Dh + D)
    pending = pending_frames * (
        2 * config.hidden_size * compute_bytes + 4 * 3 * H + (4 * H if config.use_momentum else 0) + 1
    )
    return config.num_hidden_layers * batch_size * (H * per_head + pending)


def window_kv_bytes(config: LaCTAudioConfig, batch_size: int = 1, compute_bytes: int = 2) -> int:
    """Bytes of the attention keys and values a stream keeps per layer (``LaCTLayerCache.keys/values``), all layers.

    ``window_size`` frames (plus one LaCT chunk under ``block_causal``, whose frames see their whole
    chunk) of keys and values ``[B, Ha, frames, hd]`` in ``compute_bytes``, and the key mask (bool).
    The full-attention baseline's cache grows with the stream and is not covered (returns 0).
    """
    if config.window_size is None:
        return 0
    frames = config.window_size + (config.lact_chunk_size if config.attention_pattern == "block_causal" else 0)
    return config.num_hidden_layers * batch_size * frames * (2 * config.hidden_size * compute_bytes + 1)


def _query_blocks(config: LaCTAudioConfig, T: int) -> list[tuple[int, int, int]]:
    """``(queries, key frames stored, keys read)`` per query block of one full forward of ``T`` frames,
    following ``LaCTAudioMixer._local_attention`` (blocks end at chunk boundaries; a block's keys are a
    copy of the key blocks its span touches, of which the mask covers the span)."""
    C, W, pattern = config.lact_chunk_size, config.window_size, config.attention_pattern
    if W is None:
        return [(T, T, T)]
    bounds = [(a, min(T, a + C)) for a in range(0, T, C)]
    if len(bounds) == 1:
        return [(T, T, T)]  # the single-block path slices the keys (a view of the rotated keys)
    sizes = [b - a for a, b in bounds]
    starts = [a for a, _ in bounds]
    out = []
    for a, b in bounds:
        lo = a - W if pattern != "block_causal" else min(a - W, a // C * C)
        hi = min(T, b + W) if pattern == "bidirectional" else b
        first = max(0, bisect_right(starts, lo) - 1)
        last = bisect_left(starts, hi)
        stored = sum(sizes[first:last])
        read = min(hi, T) - max(lo, starts[first])
        out.append((b - a, stored, read))
    return out


def _lact_updates(config: LaCTAudioConfig, T: int) -> tuple[list[int], int]:
    """Sizes of the chunks that update the fast weights in one forward of ``T`` frames, and how many
    distinct fast-weight tensors the reads keep (``kernels/chunk.py``: ``apply_update`` reads a chunk
    before updating with it and holds a trailing partial chunk back)."""
    C = config.lact_chunk_size
    spans = [min(C, T - a) for a in range(0, T, C)]
    if config.lact_order == "apply_update":
        updates = [n for n in spans if n == C]
        return updates, len(spans)
    return spans, len(spans) + 1


@dataclass
class ActivationBytes:
    """Activation memory of one micro-batch, in bytes (see the module docstring for the formula).

    ``block``: what one block saves for backward (all its examples), of which ``lact_chunks`` are the
    LaCT op's per-chunk fast-weight tensors (and their chunk's per-token gradient recomputation);
    ``block_input``: one block's input (what a checkpointed block keeps); ``frontend`` and ``head``:
    saved outside the blocks (with the model-wide rotary tables); ``outputs``: the logits (and their
    fp32 copy under autocast) while the loss is computed; ``head_backward``: the gradients of the
    logits; ``backward``: the gradients alive while a block runs backward.
    """

    layers: int
    block: int
    lact_chunks: int
    block_input: int
    frontend: int
    head: int
    outputs: int
    head_backward: int
    backward: int

    def saved(self, gradient_checkpointing: bool) -> int:
        """Bytes saved for backward at the end of the forward."""
        blocks = self.layers * (self.block_input if gradient_checkpointing else self.block)
        return blocks + self.frontend + self.head

    def peak(self, gradient_checkpointing: bool) -> int:
        """Peak activation bytes of forward + backward: the largest of the end of the forward (saved set and
        logits), the head's backward, and a block's backward (the saved set without the head's, the block
        being recomputed under checkpointing, the gradient working set)."""
        saved = self.saved(gradient_checkpointing)
        rebuilt = self.block if gradient_checkpointing else 0
        return max(
            saved + self.outputs,
            saved + self.head_backward,
            saved - self.head + rebuilt + self.backward,
        )


def activation_bytes(
    config: LaCTAudioConfig, frames: int, batch_size: int = 1, precision: str = "bf16", device: str = "cuda"
) -> ActivationBytes:
    """Activation memory of a training forward + backward on ``batch_size`` examples of ``frames`` model frames.

    ``precision``: ``"bf16"`` (autocast; fp32 weights) or ``"fp32"``. ``device``: ``"cuda"`` (fused
    RMSNorm) or ``"cpu"`` (RMSNorm decomposed: it also saves its normalised value).
    """
    whisper = config.task == "ctc" and config.frontend == "whisper_encoder"
    if whisper and config.whisper_trainable_layers:
        raise ValueError(
            "activation_bytes models a whisper_encoder front end only when it is frozen "
            f"(whisper_trainable_layers=0, got {config.whisper_trainable_layers}): a frozen encoder runs without "
            "saving anything for backward, trainable Whisper layers are not modelled"
        )
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if frames < 1 or batch_size < 1:
        raise ValueError(f"frames and batch_size must be >= 1, got {frames} and {batch_size}")
    T, B = frames, batch_size
    c, f = (2, 4) if precision == "bf16" else (4, 4)
    autocast = precision == "bf16"
    d, inter, Ha = config.hidden_size, config.intermediate_size, config.num_attention_heads
    hd = config.attention_head_dim
    norm = f * d * (1 if device == "cuda" else 2) + f  # per frame: fp32 input (+ normalised value) + rstd

    # --- one block, one example ---
    per_frame = 2 * norm + 3 * c * d + 3 * c * d + 4 * c * inter
    per_frame += 2 * c * d + f * Ha  # rotated queries, attention outputs, log-sum-exp
    per_frame += 2 * c * hd if autocast else 0  # cos/sin cast to bf16 in every layer
    attention = 0
    blocks = _query_blocks(config, T)
    for queries, stored, read in blocks:
        attention += 2 * c * d * stored if len(blocks) > 1 else c * d * stored  # key/value copies, or the keys
        attention += c * queries * read  # the mask as SDPA converts it
    block = T * per_frame + attention
    chunks = 0
    if config.mixer == "lact":
        H, D, Dh = config.num_lact_heads, config.lact_head_dim, config.lact_hidden_dim
        lact = 3 * c * d + (f * d * (1 if device == "cuda" else 2) + f * H)  # gate, output RMSNorm
        lact += 2 * c * d + 4 * c * H + 3 * c * d  # normalised q, k; the op's q, k, v
        lact += f * (6 + config.use_momentum) * H + 1 + c  # rates, lr * mask, momentum; the masks
        lact += H * 3 * c * Dh  # the read: w0 x and w2 x, and the SwiGLU product
        updates, weights_kept = _lact_updates(config, T)
        steps, momentum = config.muon_steps, config.use_momentum
        m, n = min(D, Dh), max(D, Dh)
        W3 = 3 * Dh * D  # one head's stacked fast weights (w0; w2; w1^T)
        for C in updates:
            factored = not momentum and factored_is_cheaper(Dh, D, C, steps)
            if factored:
                # gradient recomputation; the factors L, L C and R in fp32 (R twice under autocast)
                tokens = c * 11 * Dh + f * 6 * Dh + f * 3 * D * (2 if autocast else 1)
                chunks += f * W3 * (1 + config.weight_norm) + 12 * f * C * C
            else:
                tokens = c * (14 * Dh + D)  # gradient recomputation and its factors
                # the weights read, before renormalisation, the momentum buffer; the update Newton-Schulz reads
                kept = 1 + config.weight_norm + (1 if momentum else 0)
                chunks += f * W3 * kept + ((f if momentum else c) * W3 if steps > 0 else 0)
                if steps > 0:
                    chunks += 3 * c * (steps * m * n + 2 * steps * m * m + (2 * m * n if autocast else 0))
            chunks += C * tokens + f * (3 * (2 * Dh + D) + 9)  # + renormalisation and Newton-Schulz norms
        chunks += f * W3 * (weights_kept - len(updates)) + f * 3 * (2 * Dh + D)  # last weights, initial norms
        chunks *= H
        block += T * lact + chunks
    block *= B

    # --- outside the blocks ---
    frontend = 0
    if whisper:
        frontend = B * T * c * config.whisper_config["d_model"]  # the projection's input
    elif config.task == "ctc":
        rate = config.total_stride  # input positions per model frame
        c_in = config.num_mel_bins if config.frontend == "log_mel" else 1
        for i, (c_out, k, s) in enumerate(zip(config.conv_channels, config.conv_kernel_sizes, config.conv_strides)):
            out_rate = rate // s
            frontend += T * (c * c_in * rate + 2 * f * c_out * out_rate + 2 * f * out_rate)
            frontend += c * c_in * (k - s)  # the causal context, per example
            frontend += T * f * rate if i > 0 else 0  # the padding mask
            rate, c_in = out_rate, c_out
        frontend += T * (f + c * c_in)  # the last mask, the projection input
        frontend *= B
        logits = config.vocab_size
        labels = CTC_LABELS_PER_SECOND * T / frames_per_second(config)
        head_frame = norm + c * d + f * logits + f * (2 * labels + 1)
    else:
        logits = config.num_codebooks * config.codebook_size
        head_frame = norm + c * d + f * logits
    outputs = B * T * (c + (f if autocast else 0)) * logits
    head_backward = B * T * (f + c) * logits
    head = B * T * head_frame + (0 if autocast else T * 2 * f * hd)  # + fp32 rotary tables, shared by the batch
    backward = B * T * c * (BACKWARD_WORKING_D * d + BACKWARD_WORKING_I * inter)
    return ActivationBytes(
        layers=config.num_hidden_layers,
        block=int(block),
        lact_chunks=int(B * chunks),
        block_input=B * T * c * d,
        frontend=int(frontend),
        head=int(head),
        outputs=int(outputs),
        head_backward=int(head_backward),
        backward=int(backward),
    )


@dataclass
class ModelStates:
    """Per-GPU bytes of what training keeps besides activations (see the module docstring).

    ``weights``: the fp32 parameters (sharded under FSDP); ``working_copy``: bf16 weights during
    forward/backward (autocast's cache, or the gathered FSDP blocks); ``gradients`` (fp32);
    ``buckets``: DDP's gradient buckets; ``optimizer``: AdamW's two moments; ``step``: the optimizer
    step's temporaries, alive only after backward.
    """

    weights: int
    working_copy: int
    gradients: int
    buckets: int
    optimizer: int
    step: int

    @property
    def persistent(self) -> int:
        return self.weights + self.gradients + self.buckets + self.optimizer


def canonical_strategy(strategy: str) -> str:
    """``"zero3"`` is ``"fsdp"`` (FULL_SHARD); the others are themselves."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    return "fsdp" if strategy == "zero3" else strategy


def model_state_bytes(
    config: LaCTAudioConfig, precision: str = "bf16", strategy: str = "ddp", gpus: int = 1, device: str = "cuda"
) -> ModelStates:
    """Per-GPU model-state bytes for training ``config`` with AdamW on ``gpus`` devices.

    ``strategy``: ``"ddp"`` (replicated; gradient buckets when ``gpus > 1``), ``"zero2"`` (FSDP
    SHARD_GRAD_OP: fp32 weights, gradients and moments sharded; the gathered weights, in the compute dtype,
    stay from forward to backward like ZeRO-2's bf16 copy), ``"fsdp"`` /
    ``"zero3"`` (everything sharded, ``FSDP_BLOCKS_IN_FLIGHT`` blocks gathered). ``device="cpu"``:
    torch's single-tensor AdamW (its step temporaries are two copies of the largest parameter);
    ``"cuda"``: the foreach AdamW (one fp32 temporary per parameter).
    """
    strategy = canonical_strategy(strategy)
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    P = parameter_count(config)
    block = block_parameter_count(config)
    shard = lambda n: math.ceil(n / gpus)
    compute = 2 if precision == "bf16" else 4
    # The gathered (unsharded) weights are in the compute dtype; in fp32 on one GPU they are the parameters.
    gather = lambda n: n * compute if gpus > 1 or precision == "bf16" else 0
    if strategy == "fsdp":  # FULL_SHARD: the blocks in flight are gathered
        weights, working = 4 * shard(P), gather(FSDP_BLOCKS_IN_FLIGHT * block)
    elif strategy == "zero2":  # SHARD_GRAD_OP: every gathered block stays until its backward
        weights, working = 4 * shard(P), gather(P)
    else:  # DDP: the parameters; under autocast their bf16 casts, cached for the forward
        weights, working = 4 * P, 2 * P if precision == "bf16" else 0
    sharded = strategy in ("zero2", "fsdp")
    gradients = 4 * (shard(P) if sharded else P)
    if sharded and gpus > 1:
        gradients += FSDP_BLOCKS_IN_FLIGHT * block * compute  # unsharded gradients before the reduce-scatter
    buckets = 4 * P if strategy == "ddp" and gpus > 1 else 0
    optimizer = 8 * (shard(P) if sharded else P)
    if device == "cpu":
        step = 2 * 4 * _largest_parameter(config)
    else:
        step = 4 * (shard(P) if sharded else P)
    return ModelStates(weights, working, gradients, buckets, optimizer, step)


def _largest_parameter(config: LaCTAudioConfig) -> int:
    """Elements of the largest single parameter tensor."""
    d, inter = config.hidden_size, config.intermediate_size
    sizes = [3 * d * d, d * inter]
    if config.task == "lm":
        sizes.append(config.codebook_size * d)
    else:
        sizes.append(d * config.vocab_size)
    if config.mixer == "lact":
        sizes.append(config.num_lact_heads * config.lact_hidden_dim * config.lact_head_dim)
    return max(sizes)


@dataclass
class MemoryEstimate:
    """Per-GPU training memory of one setting, in bytes: ``states`` and ``activations``; ``peak`` is
    what the device must hold (states, plus the larger of the activations with the working copy, and
    the optimizer step's temporaries)."""

    states: ModelStates
    activations: ActivationBytes
    gradient_checkpointing: bool

    @property
    def activation_peak(self) -> int:
        return self.activations.peak(self.gradient_checkpointing)

    @property
    def peak(self) -> int:
        s = self.states
        return s.persistent + max(self.activation_peak + s.working_copy, s.step)


def estimate(
    config: LaCTAudioConfig,
    frames: int,
    batch_size: int = 1,
    precision: str = "bf16",
    strategy: str = "ddp",
    gpus: int = 1,
    gradient_checkpointing: bool = True,
    device: str = "cuda",
) -> MemoryEstimate:
    """Per-GPU training memory for micro-batches of ``batch_size`` examples of ``frames`` model frames."""
    return MemoryEstimate(
        states=model_state_bytes(config, precision, strategy, gpus, device),
        activations=activation_bytes(config, frames, batch_size, precision, device),
        gradient_checkpointing=gradient_checkpointing,
    )


def training_memory_bytes(
    config: LaCTAudioConfig, num_params: int, frames: int, gradient_checkpointing: bool = True, bytes_per_value: int = 2
) -> dict:
    """Estimated training memory in bytes on one device for a micro-batch of ``frames`` model frames:
    ``{"states": ..., "activations": ...}``. The frames are taken as examples of at most
    ``LONGEST_EXAMPLE_SECONDS`` (the per-example terms, CTC's forward variables, grow faster than linearly).

    ``states``: fp32 weights, gradients and AdamW moments, 16 bytes a parameter, plus the bf16 working
    copy (2 bytes) when ``bytes_per_value`` is 2 (bf16 autocast; 4: fp32), for ``num_params`` parameters
    (which may be another model's sized from ``config``, e.g. a baseline); ``activations``: the peak of
    :func:`activation_bytes`.
    """
    precision = "bf16" if bytes_per_value == 2 else "fp32"
    frames = max(1, int(frames))
    examples = math.ceil(frames / max(1, int(LONGEST_EXAMPLE_SECONDS * frames_per_second(config))))
    per_example = math.ceil(frames / examples)
    activations = activation_bytes(config, per_example, examples, precision).peak(gradient_checkpointing)
    return {"states": (18 if precision == "bf16" else 16) * num_params, "activations": activations}


def usable_bytes(gpu_memory: int) -> int:
    """Bytes a training process can fill on a GPU of ``gpu_memory`` bytes (``HEADROOM``, ``CUDA_RESERVED_BYTES``)."""
    return int(gpu_memory * (1 - HEADROOM)) - CUDA_RESERVED_BYTES


def max_micro_batch(
    config: LaCTAudioConfig,
    frames: int,
    budget: int,
    precision: str = "bf16",
    strategy: str = "ddp",
    gpus: int = 1,
    gradient_checkpointing: bool = True,
    limit: int = 4096,
) -> int:
    """The most examples of ``frames`` frames per micro-batch whose :func:`estimate` peak fits ``budget``
    bytes (0 when not even one does), at most ``limit``."""
    fits = lambda b: estimate(config, frames, b, precision, strategy, gpus, gradient_checkpointing).peak <= budget
    if not fits(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and fits(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:  # fits(lo), not fits(hi) (or hi beyond the limit)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


@dataclass
class Choice:
    """One training setting: ``micro_batch`` examples per GPU, ``accumulation`` micro-steps per optimizer
    step, and its per-GPU :class:`MemoryEstimate`."""

    strategy: str
    gradient_checkpointing: bool
    micro_batch: int
    accumulation: int
    estimate: MemoryEstimate


@dataclass
class Plan:
    """A memory plan for one model and target (what :func:`plan` returns and :func:`format_plan` prints).

    ``choice``: the recommended setting, or None when none fits; ``problems``: why it does not fit;
    ``remedies``: what would make it fit.
    """

    config: LaCTAudioConfig
    name: str
    gpus: int
    gpu_memory: int
    precision: str
    seconds: float
    frames: int
    frames_per_second: float
    target_batch_seconds: float
    parameters: int
    choice: Choice | None
    problems: list = field(default_factory=list)
    remedies: list = field(default_factory=list)

    @property
    def usable(self) -> int:
        return usable_bytes(self.gpu_memory)

    @property
    def fits(self) -> bool:
        return self.choice is not None


# Preference when several settings fit: sharding before recomputation. ZeRO-2 moves as many bytes per
# step as DDP's all-reduce and FSDP about 1.5x, while gradient checkpointing adds a forward pass.
PREFERENCE = [(s, ck) for ck in (False, True) for s in ("ddp", "zero2", "fsdp")]
# A micro-batch of fewer frames leaves a GPU's matmuls short; a setting that allows more is preferred.
MIN_MICRO_FRAMES = 8192


def plan(
    config: LaCTAudioConfig,
    seconds: float,
    gpus: int = 1,
    gpu_memory: int | str = "48GB",
    precision: str = "bf16",
    target_batch_seconds: float = 1200.0,
    strategy: str | None = None,
    gradient_checkpointing: bool | None = None,
    micro_batch: int | None = None,
    name: str = "",
) -> Plan:
    """Choose a strategy, gradient checkpointing, micro-batch and gradient accumulation to train ``config``
    on ``gpus`` GPUs of ``gpu_memory`` with examples of ``seconds`` of audio, reaching
    ``target_batch_seconds`` of audio per optimizer step. ``strategy``, ``gradient_checkpointing`` and
    ``micro_batch`` fix that part of the choice; None leaves it to the plan.

    Among the settings that fit (``PREFERENCE`` order: DDP, ZeRO-2, FSDP without checkpointing, then
    with it), the first whose micro-batch reaches ``MIN_MICRO_FRAMES`` frames (or the whole per-GPU
    share of the target) is taken, else the one with the largest micro-batch. The micro-batch is the
    largest that fits, at most the per-GPU share of the target.
    """
    _check_supported(config)
    if seconds <= 0 or target_batch_seconds <= 0:
        raise ValueError(f"seconds and target_batch_seconds must be > 0, got {seconds} and {target_batch_seconds}")
    if micro_batch is not None and micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    gpu_memory = parse_bytes(gpu_memory)
    fps = frames_per_second(config)
    frames = max(1, math.ceil(seconds * fps))
    result = Plan(
        config,
        name,
        gpus,
        gpu_memory,
        precision,
        seconds,
        frames,
        fps,
        target_batch_seconds,
        parameter_count(config),
        None,
    )
    budget = result.usable
    share = max(1, math.ceil(target_batch_seconds / (seconds * gpus)))  # examples per GPU per optimizer step
    candidates = [
        (s, ck)
        for s, ck in PREFERENCE
        if (strategy is None or canonical_strategy(strategy) == s)
        and (gradient_checkpointing is None or gradient_checkpointing == ck)
    ]
    options = []
    for s, ck in candidates:
        if micro_batch is not None:
            b = micro_batch if estimate(config, frames, micro_batch, precision, s, gpus, ck).peak <= budget else 0
        else:
            b = min(share, max_micro_batch(config, frames, budget, precision, s, gpus, ck, limit=share))
        if b:
            options.append((s, ck, b))
    if options:
        enough = min(share, math.ceil(MIN_MICRO_FRAMES / frames))
        s, ck, b = next((o for o in options if o[2] >= enough), max(options, key=lambda o: o[2]))
        accumulation = math.ceil(share / b)
        if micro_batch is None:
            b = math.ceil(share / accumulation)  # as even as the accumulation allows: no overshoot beyond a step
        result.choice = Choice(s, ck, b, accumulation, estimate(config, frames, b, precision, s, gpus, ck))
        return result
    _explain(result, candidates, micro_batch or 1)
    if (strategy, gradient_checkpointing, micro_batch) != (None, None, None):
        free = plan(config, seconds, gpus, gpu_memory, precision, target_batch_seconds, name=name)
        if free.choice:
            ch = free.choice
            result.remedies.insert(
                0,
                f"{STRATEGY_NAMES[ch.strategy]}, gradient checkpointing "
                f"{'on' if ch.gradient_checkpointing else 'off'}, micro-batch {ch.micro_batch} "
                f"({ch.estimate.peak / GiB:.1f} GiB per GPU; the plan's own choice)",
            )
    return result


def _explain(result: Plan, candidates: list, micro_batch: int) -> None:
    """Fill ``result.problems`` and ``result.remedies`` for a target that does not fit."""
    config, frames, precision, gpus = result.config, result.frames, result.precision, result.gpus
    budget = result.usable
    s, ck = candidates[-1]  # the most frugal of the settings allowed
    est = estimate(config, frames, micro_batch, precision, s, gpus, ck)
    states = est.states.persistent
    result.problems.append(
        f"{micro_batch} example(s) of {result.seconds:g} s ({frames} frames) need {est.peak / GiB:.1f} GiB per GPU "
        f"with "
        f"{STRATEGY_NAMES[s]} and gradient checkpointing {'on' if ck else 'off'} (model states "
        f"{states / GiB:.1f} GiB, activations {est.activation_peak / GiB:.1f} GiB), but "
        f"{budget / GiB:.1f} GiB of each {result.gpu_memory / 1e9:g} GB GPU are usable"
    )
    if estimate(config, frames, 1, precision, "fsdp", gpus, True).peak <= budget:
        return  # a freer choice of strategy, checkpointing or micro-batch fits: plan() names it
    for n in range(gpus + 1, 1025):
        if estimate(config, frames, 1, precision, "fsdp", n, True).peak <= budget:
            result.remedies.append(f"{n} GPUs of this size with FSDP and gradient checkpointing (micro-batch 1)")
            break
    else:
        result.remedies.append("no number of these GPUs: the activations of one example alone do not fit")
    lo, hi = 0, frames
    while hi - lo > 1:  # the longest example that fits with FSDP + checkpointing on these GPUs
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if estimate(config, mid, 1, precision, "fsdp", gpus, True).peak <= budget else (lo, mid)
    if lo:
        result.remedies.append(
            f"examples of at most {lo / result.frames_per_second:.1f} s ({lo} frames) with FSDP and gradient "
            "checkpointing"
        )
    need = estimate(config, frames, 1, precision, "fsdp", gpus, True).peak
    per_gpu = (need + CUDA_RESERVED_BYTES) / (1 - HEADROOM)
    result.remedies.append(f"GPUs of at least {per_gpu / 1e9:.0f} GB (FSDP, checkpointing, micro-batch 1)")
    if precision == "fp32":
        result.remedies.append("bf16 mixed precision (halves most activations)")


def format_plan(result: Plan) -> str:
    """The plan as text: per-GPU memory under each strategy, the per-example states, the recommendation."""
    config, precision = result.config, result.precision
    c = 2 if precision == "bf16" else 4
    b = result.choice.micro_batch if result.choice else 1
    task = config.task
    lines = [
        f"Memory plan: {result.name or 'model'} (task {task}), {result.parameters / 1e6:,.1f}M parameters, "
        f"{result.gpus} GPU(s) x {result.gpu_memory / 1e9:g} GB ({result.usable / GiB:.1f} GiB usable each), "
        f"{precision}",
        f"examples of {result.seconds:g} s = {result.frames} frames at {result.frames_per_second:g} frames/s; "
        f"target {result.target_batch_seconds:g} s of audio per optimizer step",
        "",
        f"Per GPU, GiB (micro-batch {b}):",
        "| | " + " | ".join(STRATEGY_NAMES[s] for s in ("ddp", "zero2", "fsdp")) + " |",
        "|---|---|---|---|",
    ]
    ests = {
        (s, ck): estimate(config, result.frames, b, precision, s, result.gpus, ck)
        for s in ("ddp", "zero2", "fsdp")
        for ck in (False, True)
    }
    rows = [
        ("weights (fp32)", lambda e: e.states.weights),
        ("bf16 working copy" if precision == "bf16" else "gathered weights", lambda e: e.states.working_copy),
        ("gradients (fp32)", lambda e: e.states.gradients),
        ("DDP gradient buckets", lambda e: e.states.buckets),
        ("AdamW moments (fp32)", lambda e: e.states.optimizer),
        ("optimizer-step temporaries", lambda e: e.states.step),
    ]
    for label, get in rows:
        lines.append(
            f"| {label} | " + " | ".join(f"{get(ests[s, False]) / GiB:.2f}" for s in ("ddp", "zero2", "fsdp")) + " |"
        )
    for ck in (False, True):
        act = ests["ddp", ck].activation_peak
        lines.append(
            f"| activations, checkpointing {'on' if ck else 'off'} | " + " | ".join([f"{act / GiB:.2f}"] * 3) + " |"
        )
    for ck in (False, True):
        peaks = [ests[s, ck].peak / GiB for s in ("ddp", "zero2", "fsdp")]
        mark = lambda p: f"**{p:.2f}**" if p * GiB > result.usable else f"{p:.2f}"
        lines.append(f"| peak, checkpointing {'on' if ck else 'off'} | " + " | ".join(mark(p) for p in peaks) + " |")
    one = activation_bytes(config, result.frames, 1, precision)
    lines += [
        "(bold: over the usable memory)",
        "",
        f"Per example of {result.seconds:g} s: activations {one.peak(False) / GiB:.2f} GiB without checkpointing, "
        f"{one.peak(True) / GiB:.2f} GiB with it (each block saves {one.block / GiB:.3f} GiB, of which the LaCT "
        f"op's per-chunk intermediates {one.lact_chunks / GiB:.3f} GiB; a checkpointed block keeps "
        f"{one.block_input / 2**20:.1f} MiB).",
    ]
    if config.mixer == "lact":
        H, D, Dh = config.num_lact_heads, config.lact_head_dim, config.lact_hidden_dim
        fast = fast_weight_state_bytes(config, 1)
        lines.append(
            f"LaCT fast-weight state per example (streaming / test-time adaptation, fp32): {fast / 2**20:.1f} MiB = "
            f"{config.num_hidden_layers} layers x {H} heads x (w0, w2 [{Dh}, {D}], w1 [{D}, {Dh}]"
            f"{' + momentum' if config.use_momentum else ''} + norms)."
        )
    kv = window_kv_bytes(config, 1, c)
    if kv:
        lines.append(f"Attention window KV per example (streaming): {kv / 2**20:.1f} MiB.")
    lines.append("")
    if result.choice:
        ch = result.choice
        got = ch.micro_batch * ch.accumulation * result.seconds * result.gpus
        lines.append(
            f"Recommendation: {STRATEGY_NAMES[ch.strategy]}, gradient checkpointing "
            f"{'on' if ch.gradient_checkpointing else 'off'}, micro-batch {ch.micro_batch} x {result.seconds:g} s "
            "per GPU "
            f"({ch.estimate.peak / GiB:.1f} of {result.usable / GiB:.1f} GiB usable), gradient accumulation "
            f"{ch.accumulation}: {got:g} s of audio per optimizer step (target {result.target_batch_seconds:g} s)."
        )
    else:
        lines.append("DOES NOT FIT: " + "; ".join(result.problems) + ".")
        lines.append("It would fit with: " + "; or ".join(result.remedies) + ".")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m modeling_lact_audio.memory``: print a memory plan; exit status 1 when the target does not fit."""
    from .configuration_lact_audio import TASKS
    from .presets import PRESETS, preset_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=PRESETS, required=True)
    parser.add_argument("--task", choices=TASKS, default="ctc")
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--gpu-memory", default="48GB", help="memory of one GPU: 48GB, 44.7GiB, 80GB ...")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of one training example (s of audio)")
    parser.add_argument("--target-batch-seconds", type=float, default=1200.0, help="audio per optimizer step (s)")
    parser.add_argument("--micro-batch", type=int, default=None, help="examples per GPU per micro-step (default: plan)")
    parser.add_argument("--precision", choices=PRECISIONS, default="bf16")
    parser.add_argument("--strategy", choices=STRATEGIES, default=None, help="default: the plan's choice")
    parser.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="default: the plan's choice",
    )
    args = parser.parse_args(argv)
    if args.gpus < 1:
        parser.error(f"--gpus must be >= 1, got {args.gpus}")
    result = plan(
        preset_config(args.preset, args.task),
        seconds=args.seconds,
        gpus=args.gpus,
        gpu_memory=args.gpu_memory,
        precision=args.precision,
        target_batch_seconds=args.target_batch_seconds,
        strategy=args.strategy,
        gradient_checkpointing=args.gradient_checkpointing,
        micro_batch=args.micro_batch,
        name=args.preset,
    )
    print(format_plan(result))
    return 0 if result.fits else 1


if __name__ == "__main__":
    raise SystemExit(main())
