"""Will a model fit this machine? An estimate of what a runner needs, and a verdict.

What a runner holds, as llama.cpp lays it out for our engine (runner/engine.py):
- weights: the file's size (mapped; every page is read at load);
- KV cache: per layer, K and V in f16 for every cell of the batching context (context size x
  slots) and of the 512-cell embedding context;
- compute: a base for the CPU backend and tokenizer, buffers for a full 512-token batch of
  activations, and llama.cpp's output buffer of one vocabulary-sized row of logits per batch
  token, which llama-cpp-python also mirrors;
- a vision model's projector: its file's size, and ``IMAGE_ENCODING_BYTES`` for encoding an
  image. llama.cpp reserves the image encoder's compute buffer when the projector loads, sized
  for the largest image it takes (clip.cpp's warmup: up to 46x46 output tokens for the dynamic
  resolution families). Reported sizes of that buffer, with flash attention (llama.cpp's
  default where the backend has it), run from about 120 MiB (Gemma 3) to 705 MiB (Qwen2.5-VL);
  1 GiB covers them all. Without flash attention the Qwen-VL families' attention scores alone
  (8464 patches squared, 16 heads, f32) take over 4 GiB, which this does not plan for. Image
  tokens take context cells, which the KV cache already counts.

Checked against reality by tests/integration/test_fit.py: the starter model's runner RSS after
a prompt and an embedding is within 25% of this estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from localserve.api.runner import BATCH_TOKENS, EMBEDDING_CTX
from localserve.hardware.memory import MemorySnapshot
from localserve.hub.library import ModelRecord

MiB = 2**20
RUNTIME_BASE_BYTES = 24 * MiB
ACTIVATION_FLOATS_PER_EMBEDDING = 16  # live f32 activations per batch token, in embedding widths
HEADROOM = 0.9  # never plan to fill more than 90% of free memory
IMAGE_ENCODING_BYTES = 1024 * MiB  # a projector's compute allowance (see above)


class Verdict(str, Enum):
    GPU = "gpu"  # every layer on the GPU
    PARTIAL = "partial"  # some layers on the GPU, the rest on the CPU
    CPU = "cpu"
    TOO_LARGE = "too_large"


@dataclass(frozen=True)
class FitEstimate:
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    layers: int
    verdict: Verdict
    gpu_layers: int  # layers the verdict puts on the GPU
    context_length: int
    parallel: int
    projector_bytes: int = 0  # a vision projector's file and its image-encoding allowance

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.compute_bytes + self.projector_bytes

    def describe(self) -> str:
        if self.verdict is Verdict.PARTIAL:
            return f"partial offload ({self.gpu_layers} of {self.layers} layers on the GPU)"
        return {
            Verdict.GPU: "fits on the GPU",
            Verdict.CPU: "CPU only",
            Verdict.TOO_LARGE: "too large for this machine",
        }[self.verdict]


def kv_bytes_per_token(record: ModelRecord) -> int:
    """K and V, f16, all layers."""
    return record.layers * record.head_count_kv * (record.key_length + record.value_length) * 2


def memory_needed(
    record: ModelRecord, context_length: int, parallel: int = 1, kv_scale: float = 1.0
) -> tuple[int, int, int]:
    """Weights, KV cache and compute bytes of a runner for this model; ``parallel`` full
    contexts of KV cache, whose cells are ``kv_scale`` times an f16 cell (quantized caches)."""
    cells = context_length * parallel + EMBEDDING_CTX
    kv = int(kv_bytes_per_token(record) * cells * kv_scale)
    activations = BATCH_TOKENS * record.embedding_length * 4 * ACTIVATION_FLOATS_PER_EMBEDDING
    logits = BATCH_TOKENS * record.vocab_size * 4
    return record.size_bytes, kv, RUNTIME_BASE_BYTES + activations + logits


def projector_needed(record: ModelRecord) -> int:
    """A vision projector's file and its image-encoding allowance; 0 without a projector."""
    if record.mmproj is None:
        return 0
    return record.mmproj_size_bytes + IMAGE_ENCODING_BYTES


def estimate_fit(
    record: ModelRecord,
    memory: MemorySnapshot,
    context_length: int | None = None,
    parallel: int = 1,
    gpu_offload_supported: bool = True,
    kv_scale: float = 1.0,
) -> FitEstimate:
    ctx = context_length or min(record.context_length or 4096, 4096)
    weights, kv, compute = memory_needed(record, ctx, parallel, kv_scale)
    projector = projector_needed(record)
    layers = max(1, record.layers)
    total = weights + kv + compute + projector
    ram = memory.ram_free_bytes * HEADROOM
    vram = max((gpu.free_bytes for gpu in memory.gpus), default=0) * HEADROOM
    gpu_layers = 0
    if gpu_offload_supported and vram > 0:
        if total <= vram:
            verdict, gpu_layers = Verdict.GPU, layers
        else:
            # Each layer takes its share of weights and KV; compute buffers stay on both sides,
            # and the projector, loaded whole, goes to the GPU first.
            per_layer = (weights + kv) / layers
            room = vram - compute - projector
            gpu_layers = max(0, min(layers - 1, int(room // per_layer)))
            rest = total - projector - gpu_layers * per_layer
            if gpu_layers and rest <= ram:
                verdict = Verdict.PARTIAL
            else:
                verdict, gpu_layers = (Verdict.CPU if total <= ram else Verdict.TOO_LARGE), 0
    else:
        verdict = Verdict.CPU if total <= ram else Verdict.TOO_LARGE
    return FitEstimate(weights, kv, compute, layers, verdict, gpu_layers, ctx, parallel, projector)
