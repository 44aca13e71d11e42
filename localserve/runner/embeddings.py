"""Embeddings, on a llama.cpp context of their own made at the first request for them.

The batch loop's context generates; this one only embeds: mean pooling, one input per decode
and the vectors L2-normalised, as the binding's ``Llama.embed`` does. It is made when first
needed, not with the model: most runners never embed, and a context costs its KV cache's
memory and 8 ms of every model's load, on the way to the first answer.
"""

from __future__ import annotations

from typing import Any

import llama_cpp
import numpy

from localserve.api.runner import BATCH_TOKENS, EMBEDDING_CTX


class Embedder:
    def __init__(self, model: Any, threads: int) -> None:
        """``model``: the binding's ``LlamaModel``; ``threads``: until a grant says otherwise."""
        self._model = model
        self._threads = threads
        self._ctx: Any = None
        self._batch: Any = None

    @property
    def limit(self) -> int:
        """The most tokens one input may have."""
        return min(BATCH_TOKENS, EMBEDDING_CTX)

    def context(self) -> Any:
        """The embedding context, made on first use."""
        if self._ctx is None:
            params = llama_cpp.llama_context_default_params()
            params.n_ctx = EMBEDDING_CTX
            params.n_batch = params.n_ubatch = BATCH_TOKENS
            params.n_threads = params.n_threads_batch = self._threads
            params.embeddings = True
            params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
            # As the binding's ``Llama`` had it, which served embeddings before: the same vectors.
            params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            ctx = llama_cpp.llama_init_from_model(self._model.model, params)
            if not ctx:
                raise RuntimeError("llama.cpp could not create the embedding context")
            self._batch = llama_cpp.llama_batch_init(BATCH_TOKENS, 0, 1)
            self._ctx = ctx
        return self._ctx

    def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        """One vector per token list (each at most ``limit`` tokens)."""
        ctx = self.context()
        memory = llama_cpp.llama_get_memory(ctx)
        n_embd = self._model.n_embd()
        batch = self._batch
        vectors = []
        try:
            for tokens in inputs:
                llama_cpp.llama_memory_clear(memory, True)
                for index, token in enumerate(tokens):
                    batch.token[index] = token
                    batch.pos[index] = index
                    batch.n_seq_id[index] = 1
                    batch.seq_id[index][0] = 0
                    batch.logits[index] = True
                batch.n_tokens = len(tokens)
                if llama_cpp.llama_decode(ctx, batch) != 0:
                    raise RuntimeError("llama.cpp could not embed the input")
                pooled = llama_cpp.llama_get_embeddings_seq(ctx, 0)
                vectors.append(normalized(pooled[:n_embd]))
        finally:
            llama_cpp.llama_memory_clear(memory, True)
        return vectors

    def close(self) -> None:
        if self._ctx is not None:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            self._ctx = self._batch = None


def normalized(vector: list[float]) -> list[float]:
    """``vector`` scaled to length 1 (as the binding's ``normalize_embedding``)."""
    norm = float(numpy.linalg.norm(vector))
    return vector if norm == 0.0 else [value / norm for value in vector]
