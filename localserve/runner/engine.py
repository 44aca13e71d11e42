"""The inference engine of one runner: a llama.cpp model behind a small, typed interface.

Generation runs our own loop over ``Llama.generate`` instead of ``create_completion`` so we know
exact token counts and time to first token, handle stop strings without re-detokenizing the whole
output on every token, and build fill-in-the-middle prompts from the model's own FIM tokens (the
binding's FIM path is unfinished). One request at a time: the caller serialises access.
"""

from __future__ import annotations

import codecs
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from localserve.errors import (
    ContextOverflowError,
    InvalidRequestError,
    ModelLoadError,
    UnsupportedFeatureError,
)
from localserve.hardware.devices import resolve_gpu_layers
from localserve.runner.sampling import SamplingParams


@dataclass(frozen=True)
class EngineConfig:
    model_path: Path
    model_id: str
    n_ctx: int
    gpu_layers: str | int
    threads: int


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    n_ctx: int
    n_ctx_train: int
    n_params: int
    size_bytes: int
    description: str
    supports_fim: bool
    has_chat_template: bool
    gpu_layers: int
    gpu_offload_supported: bool
    threads: int


@dataclass(frozen=True)
class PreparedGeneration:
    """A request checked against the context window, with its grammar compiled."""

    prompt_tokens: list[int]
    max_tokens: int
    grammar: LlamaGrammar | None
    params: SamplingParams


@dataclass
class GenerationStats:
    """Filled in while a generation runs; final once its iterator is exhausted."""

    prompt_tokens: int
    completion_tokens: int = 0
    finish_reason: str = "stop"
    started_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None

    @property
    def ttft_seconds(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started_at

    @property
    def generation_tokens_per_second(self) -> float | None:
        if self.first_token_at is None or self.finished_at is None or self.completion_tokens < 2:
            return None
        elapsed = self.finished_at - self.first_token_at
        return (self.completion_tokens - 1) / elapsed if elapsed > 0 else None


def check_gguf_magic(path: Path) -> None:
    """Fail fast, with a clear message, on files that are not GGUF at all."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelLoadError(f"Cannot read model file {path}: {exc.strerror or exc}") from exc
    if magic != b"GGUF":
        raise ModelLoadError(f"{path.name} is not a GGUF model file (bad header).")


def held_back_length(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest tail of ``text`` that could still grow into a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        check_gguf_magic(config.model_path)
        supports_offload = bool(llama_cpp.llama_supports_gpu_offload())
        gpu_layers = resolve_gpu_layers(config.gpu_layers, supports_offload)
        try:
            self._llama = llama_cpp.Llama(
                model_path=str(config.model_path),
                n_ctx=config.n_ctx,
                n_gpu_layers=gpu_layers,
                n_threads=config.threads,
                n_threads_batch=config.threads,
                # Mean pooling applies only while embeddings are switched on (see embed()).
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(
                f"llama.cpp could not load {config.model_path.name}: the file is corrupt, "
                "truncated, of an unsupported architecture, or too large for memory."
            ) from exc
        model = self._llama._model
        self._fim_tokens = (model.token_prefix(), model.token_suffix(), model.token_middle())
        self._eos_text = self._token_text(model.token_eos())
        template = self._llama.metadata.get("tokenizer.chat_template")
        self._formatter = (
            Jinja2ChatFormatter(
                template=template,
                eos_token=self._eos_text,
                bos_token=self._token_text(model.token_bos()),
            )
            if template
            else None
        )
        self.info = ModelInfo(
            model_id=config.model_id,
            n_ctx=self._llama.n_ctx(),
            n_ctx_train=model.n_ctx_train(),
            n_params=model.n_params(),
            size_bytes=model.size(),
            description=model.desc(),
            supports_fim=all(token >= 0 for token in self._fim_tokens),
            has_chat_template=self._formatter is not None,
            gpu_layers=gpu_layers,
            gpu_offload_supported=supports_offload,
            threads=config.threads,
        )

    def _token_text(self, token: int) -> str:
        return self._llama._model.token_get_text(token) if token >= 0 else ""

    def _tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special))

    # -- prompts ----------------------------------------------------------------------------
    def chat_prompt(self, messages: list[dict[str, Any]], tools: Any = None) -> list[int]:
        if self._formatter is None:
            raise UnsupportedFeatureError(
                f"The model '{self.info.model_id}' has no chat template; use /v1/completions.",
                param="messages",
            )
        try:
            rendered = self._formatter(messages=cast(Any, messages), tools=tools)
        except Exception as exc:  # a template may raise anything, by design (raise_exception)
            raise InvalidRequestError(
                f"The model's chat template rejected these messages: {exc}", param="messages"
            ) from exc
        return self._tokenize(rendered.prompt, add_bos=not rendered.added_special, special=True)

    def completion_prompt(self, prompt: str, suffix: str | None = None) -> list[int]:
        if suffix is None:
            return self._tokenize(prompt, add_bos=True, special=False)
        if not self.info.supports_fim:
            raise UnsupportedFeatureError(
                f"The model '{self.info.model_id}' has no fill-in-the-middle tokens, so 'suffix' "
                "is not supported. Use a code model with FIM (e.g. Qwen2.5-Coder, StarCoder2).",
                param="suffix",
            )
        prefix_token, suffix_token, middle_token = self._fim_tokens
        bos = [self._llama._model.token_bos()] if self._llama._model.add_bos_token() else []
        return (
            [t for t in bos if t >= 0]
            + [prefix_token]
            + self._tokenize(prompt, add_bos=False, special=False)
            + [suffix_token]
            + self._tokenize(suffix, add_bos=False, special=False)
            + [middle_token]
        )

    def check_fits(self, prompt_tokens: list[int], max_tokens: int | None) -> int:
        """The number of tokens the request may generate, or ContextOverflowError."""
        n_ctx = self.info.n_ctx
        room = n_ctx - len(prompt_tokens)
        if max_tokens is None:
            if room < 1:
                raise ContextOverflowError(len(prompt_tokens), 1, n_ctx)
            return room
        if max_tokens > room:
            raise ContextOverflowError(len(prompt_tokens), max_tokens, n_ctx)
        return max_tokens

    # -- generation -------------------------------------------------------------------------
    def prepare(self, prompt_tokens: list[int], params: SamplingParams) -> PreparedGeneration:
        """Everything that can reject a request, done before a stream starts."""
        return PreparedGeneration(
            prompt_tokens=prompt_tokens,
            max_tokens=self.check_fits(prompt_tokens, params.max_tokens),
            grammar=self._grammar(params.response_format),
            params=params,
        )

    def generate(
        self, job: PreparedGeneration, stats: GenerationStats, cancelled: threading.Event
    ) -> Iterator[str]:
        """Yield text pieces as they are generated; ``stats`` is complete afterwards."""
        params, max_tokens = job.params, job.max_tokens
        llama = self._llama
        model = llama._model
        llama.set_seed(params.seed if params.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        stats.finish_reason = "length"
        tokens = llama.generate(
            job.prompt_tokens,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            temp=params.temperature,
            repeat_penalty=params.repeat_penalty,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            grammar=job.grammar,
        )
        try:
            for token in tokens:
                if stats.first_token_at is None:
                    stats.first_token_at = time.perf_counter()
                if cancelled.is_set():
                    stats.finish_reason = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(model.vocab, token):
                    stats.finish_reason = "stop"
                    break
                stats.completion_tokens += 1
                pending += decoder.decode(model.detokenize([token], special=False))
                stop_at = min(
                    (i for i in (pending.find(s) for s in params.stop) if i >= 0), default=-1
                )
                if stop_at >= 0:
                    pending = pending[:stop_at]
                    stats.finish_reason = "stop"
                    break
                if stats.completion_tokens >= max_tokens:
                    break
                keep = held_back_length(pending, params.stop) if params.stop else 0
                if len(pending) > keep:
                    yield pending[: len(pending) - keep]
                    pending = pending[len(pending) - keep :]
        finally:
            tokens.close()
            stats.finished_at = time.perf_counter()
        pending += decoder.decode(b"", final=True)
        if pending and stats.finish_reason != "cancelled":
            yield pending

    @staticmethod
    def _grammar(response_format: dict[str, Any] | None) -> LlamaGrammar | None:
        if not response_format or response_format.get("type") == "text":
            return None
        kind = response_format.get("type")
        if kind == "json_object":
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        if kind == "json_schema":
            spec = response_format.get("json_schema") or {}
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise InvalidRequestError(
                    "response_format.json_schema.schema must be a JSON schema object.",
                    param="response_format",
                )
            try:
                return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            except Exception as exc:  # the converter raises assorted errors on bad schemas
                raise InvalidRequestError(
                    f"Unsupported JSON schema in response_format: {exc}", param="response_format"
                ) from exc
        raise InvalidRequestError(
            f"Unknown response_format type '{kind}'.", param="response_format.type"
        )

    # -- embeddings -------------------------------------------------------------------------
    def embed(self, inputs: list[str]) -> tuple[list[list[float]], int]:
        """Mean-pooled embeddings, one per input, and the number of tokens read."""
        limit = min(self._llama.n_batch, self.info.n_ctx)
        for index, text in enumerate(inputs):
            count = len(self._tokenize(text, add_bos=True, special=False))
            if count > limit:
                raise InvalidRequestError(
                    f"Input {index} has {count} tokens; this model embeds at most {limit}.",
                    param="input",
                )
        ctx = self._llama._ctx.ctx
        # The context generates text with embeddings off; switch them on only for this call.
        llama_cpp.llama_set_embeddings(ctx, True)
        self._llama.context_params.embeddings = True
        try:
            vectors, count = self._llama.embed(inputs, normalize=True, return_count=True)
        finally:
            llama_cpp.llama_set_embeddings(ctx, False)
            self._llama.context_params.embeddings = False
        return vectors, int(count)
