"""A tiny random-weight vision model for tests: a text GGUF and its projector (``mmproj``).

No small vision GGUF can be fetched here, so this writes one with the ``gguf`` package:

- a ``llama`` text model (64-wide, 2 layers) carrying the starter's real tokenizer and chat
  template, so prompts tokenize as SmolLM2's do and chat templates render;
- an LLaVA-1.5 style projector (``clip.projector_type = "mlp"``) that libmtmd loads: a 2-layer
  CLIP-like ViT over a fixed 56x56 input (4x4 patches of 14 pixels) and a 2-layer MLP into the text
  model's width. Every image, whatever its size, becomes ``IMAGE_TOKENS`` (16) embeddings, at
  16 positions, with causal attention and plain RoPE (no M-RoPE).

The names and keys are those the vendored llama.cpp reads (``tools/mtmd/clip.cpp`` and
``clip-impl.h`` of the pinned llama-cpp-python sdist). The weights are seeded noise, so the model's
output means nothing; tests check the plumbing (image tokens counted, different images giving
different logits, and mostly different first tokens). The files (8.2 MB and 170 kB) are the same
bytes on every run; llama.cpp loads the text model in about 50 ms.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, Keys, LlamaFileType

from tests.helpers.model_files import starter_path

# The text model.
N_EMBD = 64
N_LAYER = 2
N_HEAD = 4
N_FF = 128
N_CTX = 2048
# Token embeddings small beside the layers' outputs (as in trained models), so what a prompt
# attends to (its image) decides the next token rather than an echo of the last token through
# the tied output head; the output norm's gain gives the logits a spread of a few units.
EMBD_STD = 0.02
OUTPUT_GAIN = 12.5

# The projector. llava keeps the second to last ViT layer's output, so with 2 layers one runs
# (clip.cpp still requires every layer's tensors).
IMAGE_SIZE = 56
PATCH_SIZE = 14
V_EMBD = 32
V_LAYER = 2
V_HEAD = 4
V_FF = 64  # must differ from V_EMBD: clip.cpp swaps ffn_up/ffn_down of old files by shape
MM_HIDDEN = 64
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # each image's embeddings (and positions)

SEED = 22


def make_vision_pair(folder: Path, stem: str = "tiny-llava") -> tuple[Path, Path]:
    """Write ``{stem}-F16.gguf`` and ``mmproj-{stem}-F32.gguf`` into ``folder``; return
    (text model, projector)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / f"{stem}-F16.gguf"
    mmproj = folder / f"mmproj-{stem}-F32.gguf"
    write_text_model(text)
    write_projector(mmproj)
    return text, mmproj


@functools.cache
def _starter_tokenizer() -> list[tuple[str, Any, GGUFValueType, GGUFValueType | None]]:
    """The starter's ``tokenizer.*`` fields (vocabulary, merges, special ids, chat template) as
    (key, value, type, item type); reading them takes about a second, so once per process."""
    fields = []
    for key, field in GGUFReader(starter_path()).fields.items():
        if key.startswith("tokenizer."):
            kind = field.types[0]
            item = field.types[-1] if kind == GGUFValueType.ARRAY else None
            fields.append((key, field.contents(), kind, item))
    return fields


def _normal(rng: np.random.Generator, *shape: int, fan_in: int | None = None) -> Any:
    """Noise of unit variance, scaled by ``1/sqrt(fan_in)`` for a weight matrix (numpy's shape is
    (out, in), the reverse of ggml's ``ne``)."""
    scale = 1.0 / np.sqrt(fan_in if fan_in is not None else shape[-1])
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _write(writer: GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_text_model(path: Path) -> Path:
    """A llama-architecture model, matrices F16 and norms F32, with the starter's tokenizer."""
    rng = np.random.default_rng(SEED)
    tokenizer = _starter_tokenizer()
    n_vocab = len(next(value for key, value, *_ in tokenizer if key == Keys.Tokenizer.LIST))
    head_dim = N_EMBD // N_HEAD

    writer = GGUFWriter(path, "llama")
    writer.add_name("tiny llava test model")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(LlamaFileType.MOSTLY_F16)
    for key, value, kind, item in tokenizer:
        writer.add_key_value(key, value, kind, item)

    ones = np.ones(N_EMBD, dtype=np.float32)
    # The output head is tied to the token embeddings (no output.weight), as in SmolLM2.
    embeddings = rng.standard_normal((n_vocab, N_EMBD)) * EMBD_STD
    writer.add_tensor("token_embd.weight", embeddings.astype(np.float16))
    writer.add_tensor("output_norm.weight", ones * OUTPUT_GAIN)
    for i in range(N_LAYER):
        matrices = {
            "attn_q": (N_EMBD, N_EMBD),
            "attn_k": (N_EMBD, N_EMBD),
            "attn_v": (N_EMBD, N_EMBD),
            "attn_output": (N_EMBD, N_EMBD),
            "ffn_gate": (N_FF, N_EMBD),
            "ffn_up": (N_FF, N_EMBD),
            "ffn_down": (N_EMBD, N_FF),
        }
        writer.add_tensor(f"blk.{i}.attn_norm.weight", ones)
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", ones)
        for name, shape in matrices.items():
            writer.add_tensor(f"blk.{i}.{name}.weight", _normal(rng, *shape).astype(np.float16))
    _write(writer)
    return path


def write_projector(path: Path) -> Path:
    """An LLaVA-style ``mlp`` projector whose output width is the text model's ``N_EMBD``."""
    rng = np.random.default_rng(SEED + 1)
    n_patches = IMAGE_TOKENS
    vision = Keys.ClipVision

    writer = GGUFWriter(path, "clip")
    writer.add_name("tiny llava test projector")
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_string(Keys.Clip.PROJECTOR_TYPE, "mlp")
    writer.add_bool(Keys.Clip.HAS_VISION_ENCODER, True)
    writer.add_uint32(vision.IMAGE_SIZE, IMAGE_SIZE)
    writer.add_uint32(vision.PATCH_SIZE, PATCH_SIZE)
    writer.add_uint32(vision.EMBEDDING_LENGTH, V_EMBD)
    writer.add_uint32(vision.FEED_FORWARD_LENGTH, V_FF)
    writer.add_uint32(vision.BLOCK_COUNT, V_LAYER)
    writer.add_uint32(vision.PROJECTION_DIM, N_EMBD)
    writer.add_uint32(vision.Attention.HEAD_COUNT, V_HEAD)
    writer.add_float32(vision.Attention.LAYERNORM_EPS, 1e-5)
    writer.add_array(vision.IMAGE_MEAN, [0.48145466, 0.4578275, 0.40821073])
    writer.add_array(vision.IMAGE_STD, [0.26862954, 0.26130258, 0.27577711])

    ones = np.ones(V_EMBD, dtype=np.float32)
    zeros = np.zeros(V_EMBD, dtype=np.float32)
    patch_in = 3 * PATCH_SIZE * PATCH_SIZE
    # numpy (out, in, kh, kw) is ggml's conv kernel ne [kw, kh, in, out]
    writer.add_tensor(
        "v.patch_embd.weight", _normal(rng, V_EMBD, 3, PATCH_SIZE, PATCH_SIZE, fan_in=patch_in)
    )
    writer.add_tensor("v.patch_embd.bias", zeros)
    writer.add_tensor("v.position_embd.weight", _normal(rng, n_patches, V_EMBD, fan_in=1))
    for i in range(V_LAYER):
        for norm in ("ln1", "ln2"):
            writer.add_tensor(f"v.blk.{i}.{norm}.weight", ones)
            writer.add_tensor(f"v.blk.{i}.{norm}.bias", zeros)
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(f"v.blk.{i}.{name}.weight", _normal(rng, V_EMBD, V_EMBD))
            writer.add_tensor(f"v.blk.{i}.{name}.bias", zeros)
        writer.add_tensor(f"v.blk.{i}.ffn_up.weight", _normal(rng, V_FF, V_EMBD))
        writer.add_tensor(f"v.blk.{i}.ffn_up.bias", np.zeros(V_FF, dtype=np.float32))
        writer.add_tensor(f"v.blk.{i}.ffn_down.weight", _normal(rng, V_EMBD, V_FF))
        writer.add_tensor(f"v.blk.{i}.ffn_down.bias", zeros)
    # llava's projector: mm.0 (ViT width -> hidden), GELU, mm.2 (hidden -> text width)
    writer.add_tensor("mm.0.weight", _normal(rng, MM_HIDDEN, V_EMBD))
    writer.add_tensor("mm.0.bias", np.zeros(MM_HIDDEN, dtype=np.float32))
    writer.add_tensor("mm.2.weight", _normal(rng, N_EMBD, MM_HIDDEN))
    writer.add_tensor("mm.2.bias", np.zeros(N_EMBD, dtype=np.float32))
    _write(writer)
    return path
