"""Images into the batching context through libmtmd (``llama_cpp.mtmd_cpp``).

A model that sees comes with a projector (``mmproj-*.gguf``). For a chat with images:

1. The runner decodes each image itself (``localserve.media``: data URLs only, pixel limits),
   so libmtmd never parses untrusted bytes; it gets RGB pixels.
2. ``Projector.tokenize`` turns the rendered prompt, split at its image markers, and the images
   into libmtmd's chunks (``mtmd_tokenize_from_parts``, which never looks for markers in text,
   so a user typing one gets text). The prompt becomes one token list in which each image's
   positions hold *placeholder* ids: negative (never a real token), derived from the image's
   content hash. Prefix reuse and slot choice compare prompts as before: the same image gives
   the same placeholders, another image differs at its first position.
3. The scheduler decodes text in its shared token batches and each image on its own
   (``Projector.decode``: embeddings and tokens cannot share a ``llama_decode``), into the
   sequence's own ``seq_id`` at its position. Embeddings are cached by content hash, so a chat
   that sends the same image again does not encode it again.

Image tokens take KV cells and count in ``usage.prompt_tokens`` like text tokens. Projectors
that place images with M-RoPE (Qwen2-VL and later) use positions that are not one per token,
which the scheduler's bookkeeping assumes; their images are refused with a clear 400 for now.
The mtmd context is not thread-safe: one lock guards it (tokenizing runs on the HTTP threads,
encoding on the batch loop).
"""

from __future__ import annotations

import ctypes
import logging
import secrets
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import mtmd_cpp as mtmd

from localserve.errors import InvalidRequestError, ModelLoadError, UnsupportedFeatureError
from localserve.media import DecodedImage, content_hash

log = logging.getLogger(__name__)

EMBEDDING_CACHE_BYTES = 256 * 1024 * 1024  # encoded images kept for chats that resend them
GGML_LOG_WARN = 3  # ggml's log levels: 1 debug, 2 info, 3 warn, 4 error, 5 continued line


def _log_mtmd(level: int, text: bytes, _: Any) -> None:
    """libmtmd's warnings and errors into our log; its chatter (every tensor it loads) not."""
    if level in (GGML_LOG_WARN, GGML_LOG_WARN + 1):
        log.warning("libmtmd: %s", text.decode("utf-8", errors="replace").rstrip())


_MTMD_LOG = llama_cpp.llama_log_callback(_log_mtmd)  # kept alive: libmtmd holds the pointer
mtmd.mtmd_helper_log_set(_MTMD_LOG, None)  # sets libmtmd's own log too
NO_CALLBACK = mtmd.mtmd_helper_post_decode_callback()  # a NULL function pointer
PLACEHOLDER_SPAN = 2**30  # placeholders are -1 ... -2**30


def placeholders(key: str, count: int) -> list[int]:
    """The prompt ids standing for an image's ``count`` positions: negative, so never a token,
    and the same for the same image."""
    base = int(key[:15], 16)
    return [-1 - (base + index) % PLACEHOLDER_SPAN for index in range(count)]


@dataclass(frozen=True)
class PromptImage:
    """One image of a prompt: where its positions start, how many, and its libmtmd chunk."""

    start: int
    n_tokens: int
    key: str  # content hash: the embedding cache's key
    chunk: Any  # mtmd_input_chunk_p, owned by the ImagePrompt's chunks

    @property
    def end(self) -> int:
        return self.start + self.n_tokens


class ImagePrompt:
    """A prompt with images: its token list (placeholders included) and the images, whose
    libmtmd chunks live as long as this object."""

    def __init__(self, tokens: list[int], images: tuple[PromptImage, ...], chunks: Any) -> None:
        self.tokens = tokens
        self.images = images
        self._finalizer = weakref.finalize(self, mtmd.mtmd_input_chunks_free, chunks)

    def image_at(self, position: int) -> PromptImage | None:
        return next((image for image in self.images if image.start == position), None)

    def next_start(self, position: int) -> int | None:
        """The first image position at or after ``position``."""
        return next((image.start for image in self.images if image.start >= position), None)

    def whole(self, prefix: int) -> int:
        """``prefix`` moved back to the start of an image it would cut through: an image's
        positions are decoded together or not at all."""
        for image in self.images:
            if image.start < prefix < image.end:
                return image.start
        return prefix


class Projector:
    """A model's projector, loaded beside it; ``None`` of these for a model that only reads."""

    def __init__(self, path: Path, model: Any, threads: int, use_gpu: bool) -> None:
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = threads
        params.print_timings = False
        params.warmup = False  # the first image pays it; loading stays fast
        self._model = model
        context = mtmd.mtmd_init_from_file(str(path).encode("utf-8"), model, params)
        if not context:
            raise ModelLoadError(
                f"llama.cpp could not load the projector {path.name}: it is corrupt, of an "
                "unsupported kind, or made for another model (its output width must match)."
            )
        self._context = context
        self._finalizer = weakref.finalize(self, mtmd.mtmd_free, context)
        if not mtmd.mtmd_support_vision(context):
            self.close()
            raise ModelLoadError(f"The projector {path.name} does not take images.")
        self.mrope = bool(mtmd.mtmd_decode_use_mrope(context))
        self.n_embd = int(llama_cpp.llama_model_n_embd_inp(model))
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_bytes = 0
        self.encoded = self.cache_hits = 0

    def close(self) -> None:
        self._finalizer()

    @staticmethod
    def marker() -> str:
        """A marker for the template to write where each image goes: unguessable, so no text
        a user sends can pass for one."""
        return f"<__image_{secrets.token_hex(8)}__>"

    # -- on the request's thread ---------------------------------------------------------------
    def tokenize(self, prompt: str, marker: str, images: list[DecodedImage]) -> ImagePrompt:
        """The rendered ``prompt`` (its images written as ``marker``) as text and image chunks,
        and its token list with placeholders."""
        if self.mrope:
            raise UnsupportedFeatureError(
                "This model's projector places image tokens with M-RoPE (Qwen2-VL and later), "
                "which localserve's batching engine does not support yet.",
                param="messages",
                code="image_not_supported",
            )
        texts = prompt.split(marker)
        if len(texts) != len(images) + 1:
            raise InvalidRequestError(
                f"The chat template placed {len(texts) - 1} of the {len(images)} images; it "
                "may drop images from some messages.",
                param="messages",
            )
        keep: list[Any] = []  # every ctypes object the parts point at, alive until tokenized
        parts: list[Any] = []
        bitmaps: list[Any] = []
        try:
            for index, text in enumerate(texts):
                if text:
                    raw = text.encode("utf-8")
                    piece = mtmd.mtmd_input_text(raw, len(raw), False, True)
                    keep += [raw, piece]
                    parts.append(mtmd.mtmd_input_part(ctypes.pointer(piece), None))
                if index < len(images):
                    bitmap = self._bitmap(images[index])
                    bitmaps.append(bitmap)
                    parts.append(mtmd.mtmd_input_part(None, bitmap))
            pointers = [ctypes.pointer(part) for part in parts]
            array = (ctypes.POINTER(mtmd.mtmd_input_part) * len(parts))(*pointers)
            chunks = mtmd.mtmd_input_chunks_init()
            with self._lock:
                status = mtmd.mtmd_tokenize_from_parts(
                    self._context, chunks, array, len(parts), False
                )
            if status != 0:
                mtmd.mtmd_input_chunks_free(chunks)
                raise InvalidRequestError(
                    f"The images could not be prepared for the model (libmtmd status {status}).",
                    param="messages",
                )
        finally:
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)
        return self._prompt(chunks)

    def _bitmap(self, image: DecodedImage) -> Any:
        pixels = (ctypes.c_uint8 * len(image.rgb)).from_buffer_copy(image.rgb)
        bitmap = mtmd.mtmd_bitmap_init(image.width, image.height, pixels)
        if not bitmap:
            raise InvalidRequestError("The image could not be handed to the model.")
        mtmd.mtmd_bitmap_set_id(bitmap, content_hash(image).encode("ascii"))
        return bitmap

    def _prompt(self, chunks: Any) -> ImagePrompt:
        tokens: list[int] = []
        images: list[PromptImage] = []
        for index in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, index)
            kind = mtmd.mtmd_input_chunk_get_type(chunk)
            if kind == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                count = ctypes.c_size_t(0)
                pointer = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                tokens += pointer[: count.value] if count.value else []
            elif kind == mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                n_tokens = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
                key = (mtmd.mtmd_input_chunk_get_id(chunk) or b"").decode("ascii")
                images.append(PromptImage(len(tokens), n_tokens, key, chunk))
                tokens += placeholders(key, n_tokens)
            else:
                mtmd.mtmd_input_chunks_free(chunks)
                raise UnsupportedFeatureError(
                    "Only images are supported, not audio.", param="messages"
                )
        return ImagePrompt(tokens, tuple(images), chunks)

    # -- on the batch loop -------------------------------------------------------------------
    def decode(self, context: Any, image: PromptImage, seq_id: int, n_batch: int) -> bool:
        """Put ``image``'s embeddings into ``seq_id`` at its positions (encoding it unless
        its embeddings are cached); True when they came from the cache."""
        cached = image.key in self._cache
        embeddings = self._embeddings(image)
        new_position = llama_cpp.llama_pos(image.start)
        with self._lock:
            status = mtmd.mtmd_helper_decode_image_chunk(
                self._context,
                context,
                image.chunk,
                embeddings.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
                image.start,
                seq_id,
                n_batch,
                ctypes.byref(new_position),
                NO_CALLBACK,
                None,
            )
        if status != 0:
            raise RuntimeError(f"decoding an image failed (status {status})")
        return cached

    def _embeddings(self, image: PromptImage) -> np.ndarray:
        found = self._cache.get(image.key)
        if found is not None:
            self._cache.move_to_end(image.key)
            self.cache_hits += 1
            return found
        with self._lock:
            status = mtmd.mtmd_encode_chunk(self._context, image.chunk)
            if status != 0:
                raise RuntimeError(f"encoding an image failed (status {status})")
            output = mtmd.mtmd_get_output_embd(self._context)
            size = image.n_tokens * self.n_embd
            # Copied out: libmtmd reuses its output buffer for the next image.
            embeddings: np.ndarray = np.ctypeslib.as_array(output, shape=(size,)).copy()
        self.encoded += 1
        self._cache[image.key] = embeddings
        self._cache_bytes += embeddings.nbytes
        while self._cache_bytes > EMBEDDING_CACHE_BYTES and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cache_bytes -= dropped.nbytes
        return embeddings
