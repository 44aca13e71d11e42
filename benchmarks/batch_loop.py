"""llama-cpp-python driven directly in a continuous-batching loop, without HTTP.

This is the ceiling of the stack for concurrent generation: N sequences share one context, and
every step decodes one token of each in a single ``llama_decode``. It uses the low-level API the
engine's scheduler is built on (``llama_batch``, sequence ids, per-sequence sampler chains).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from benchmarks.engine import load_in_process


@dataclass
class BatchRun:
    wall_s: float
    tokens_per_sequence: list[int]
    ttft_s: list[float]

    @property
    def aggregate_tok_s(self) -> float:
        return sum(self.tokens_per_sequence) / self.wall_s


class BatchLoop:
    """One model, one context with ``max_sequences`` sequences; greedy decoding."""

    def __init__(self, model_path: Path, max_sequences: int, ctx_per_sequence: int, threads: int):
        self.max_sequences = max_sequences
        path = load_in_process(model_path, threads)  # the runners' engine check, shared
        model_params = llama_cpp.llama_model_default_params()
        model_params.use_extra_bufts = path.extra_buffers
        self.model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), model_params)
        if not self.model:
            raise RuntimeError(f"cannot load {model_path}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = ctx_per_sequence * max_sequences
        params.n_batch = max(512, max_sequences)
        params.n_seq_max = max_sequences
        params.n_threads = threads
        params.n_threads_batch = threads
        params.kv_unified = True
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as the engine
        self.ctx = llama_cpp.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise RuntimeError("cannot create the context")
        self.batch = llama_cpp.llama_batch_init(params.n_batch, 0, max_sequences)

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        buffer = (llama_cpp.llama_token * (len(data) + 8))()
        count = llama_cpp.llama_tokenize(
            self.vocab, data, len(data), buffer, len(buffer), True, False
        )
        return list(buffer[:count])

    def _add(self, index: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch = self.batch
        batch.token[index] = token
        batch.pos[index] = pos
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = seq
        batch.logits[index] = logits

    def run(self, prompts: list[list[int]], max_tokens: int) -> BatchRun:
        """Prefill all prompts in one batch, then decode all sequences together."""
        assert len(prompts) <= self.max_sequences
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        samplers = []
        for _ in prompts:
            chain = llama_cpp.llama_sampler_chain_init(
                llama_cpp.llama_sampler_chain_default_params()
            )
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
            samplers.append(chain)
        started = time.perf_counter()
        index = 0
        logits_at: list[int] = []
        for seq, prompt in enumerate(prompts):
            for pos, token in enumerate(prompt):
                self._add(index, token, pos, seq, pos == len(prompt) - 1)
                index += 1
            logits_at.append(index - 1)
        self.batch.n_tokens = index
        if llama_cpp.llama_decode(self.ctx, self.batch) != 0:
            raise RuntimeError("prefill failed")
        positions = [len(prompt) for prompt in prompts]
        produced = [0] * len(prompts)
        ttft = [0.0] * len(prompts)
        active = set(range(len(prompts)))
        while active:
            index = 0
            next_logits: dict[int, int] = {}
            for seq in sorted(active):
                token = llama_cpp.llama_sampler_sample(samplers[seq], self.ctx, logits_at[seq])
                if produced[seq] == 0:
                    ttft[seq] = time.perf_counter() - started
                produced[seq] += 1
                if produced[seq] >= max_tokens or llama_cpp.llama_vocab_is_eog(self.vocab, token):
                    active.discard(seq)
                    continue
                self._add(index, token, positions[seq], seq, True)
                next_logits[seq] = index
                positions[seq] += 1
                index += 1
            if index == 0:
                break
            self.batch.n_tokens = index
            if llama_cpp.llama_decode(self.ctx, self.batch) != 0:
                raise RuntimeError("decode failed")
            logits_at = [next_logits.get(seq, -1) for seq in range(len(prompts))]
        wall = time.perf_counter() - started
        for chain in samplers:
            llama_cpp.llama_sampler_free(chain)
        return BatchRun(wall, produced, ttft)

    def close(self) -> None:
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)
