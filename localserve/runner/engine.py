"""The inference engine of one runner: a llama.cpp model behind a small, typed interface.

The engine turns requests into token prompts (chat template, fill-in-the-middle from the model's
own FIM tokens, since the binding's FIM path is unfinished), checks them against the context and
compiles grammars; the ``Scheduler`` generates, batching concurrent requests. Embeddings use a
context of their own, made at the first request for them (``embeddings.py``).
"""

from __future__ import annotations

import json
from typing import Any

import jinja2
import llama_cpp
import psutil
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

from localserve.api.engine import SHARED_KV_PARALLEL, EngineSettings
from localserve.api.requests import ImagePart
from localserve.api.runner import EnginePath, RunnerInfo
from localserve.api.sampling import SamplingParams
from localserve.errors import (
    ContextOverflowError,
    InvalidRequestError,
    UnsupportedFeatureError,
)
from localserve.hub.templates import (
    HARMONY,
    HARMONY_MARKERS,
    TOOL_TEMPLATE_KEY,
    ThinkingSyntax,
    ToolSyntax,
    thinking_syntax,
    tool_syntax,
)
from localserve.media import ImagePolicy, decode_data_url
from localserve.runner.chat_template import ChatTemplate, TemplateLimitError
from localserve.runner.commands import ThreadShare
from localserve.runner.embeddings import Embedder
from localserve.runner.llama_backends import devices
from localserve.runner.reasoning import ThoughtPlan
from localserve.runner.reporting import ThroughputMeter
from localserve.runner.scheduler import GenerationRequest, Scheduler, Sink
from localserve.runner.tools import forced_call_schema
from localserve.runner.vision import ImagePrompt, Projector
from localserve.runner.weights import EngineConfig, Weights, load_weights


def kv_bytes_per_cell(model: Any, settings: EngineSettings | None = None) -> int:
    """Bytes of one token's K and V, all layers, in the cache types of ``settings``."""
    n_head = max(1, llama_cpp.llama_model_n_head(model.model))
    head_dim = llama_cpp.llama_model_n_embd(model.model) // n_head
    kv_heads = llama_cpp.llama_model_n_head_kv(model.model)
    layers = llama_cpp.llama_model_n_layer(model.model)
    scale = settings.kv_scale if settings else 1.0
    return int(2 * layers * kv_heads * head_dim * 2 * scale)


def auto_parallel(model: Any, n_ctx: int, settings: EngineSettings, most: int = 8) -> int:
    """Slots for concurrent requests with ``batch_exact``: as many full-context KV caches as
    fit in a quarter of the free RAM, between 1 and ``most``."""
    bytes_per_sequence = kv_bytes_per_cell(model, settings) * n_ctx
    budget = psutil.virtual_memory().available // 4
    return int(max(1, min(most, budget // max(1, bytes_per_sequence))))


def describe_backend(gpu_layers: int) -> str:
    """Where this model runs: the GPUs llama.cpp offloads to when it offloads, and the CPU."""
    found = devices()
    gpus = [device.describe() for device in found if device.kind != "CPU"] if gpu_layers else []
    cpu = next((device.describe() for device in found if device.kind == "CPU"), "CPU")
    return " + ".join([*gpus, cpu])


class Engine:
    def __init__(
        self, config: EngineConfig, share: ThreadShare | None = None, weights: Weights | None = None
    ) -> None:
        """``share`` carries the thread count the daemon grants while this runs (default: the
        configured count, for good); ``weights``, the model file's, if loaded already."""
        weights = weights or load_weights(config)
        path = config.engine_path
        settings = weights.settings
        supports_offload = weights.supports_offload
        rss_before_load = weights.rss_before_load
        gpu_layers = settings.n_gpu_layers
        self._share = share or ThreadShare(settings.threads)
        self._embedding_threads = settings.threads
        self._model = weights.model
        model = self._model
        metadata = model.metadata()
        self._embedder = Embedder(model, settings.threads)
        self._fim_tokens = (model.token_prefix(), model.token_suffix(), model.token_middle())
        self._eos_text = self._token_text(model.token_eos())
        template = config.chat_template or metadata.get("tokenizer.chat_template")
        self._template_error: str | None = None
        self._formatter = self._compile(template)
        # Command R and Hermes 2 Pro carry a second template for requests with tools.
        tool_template = metadata.get(TOOL_TEMPLATE_KEY)
        self._tool_formatter = self._compile(tool_template) if tool_template else None
        tools_source = tool_template if self._tool_formatter else template
        self.tool_syntax: ToolSyntax | None = tool_syntax(tools_source) if tools_source else None
        self.thinking: ThinkingSyntax | None = thinking_syntax(template) if template else None
        self.settings = settings
        n_ctx = settings.ctx or model.n_ctx_train()
        if settings.batch_exact:
            parallel = settings.parallel or auto_parallel(model, n_ctx, settings)
        else:
            parallel = settings.parallel or SHARED_KV_PARALLEL
        self.projector = (
            Projector(config.mmproj_path, model.model, settings.threads, use_gpu=gpu_layers != 0)
            if config.mmproj_path is not None
            else None
        )
        self.image_policy = ImagePolicy()
        self._scheduler = Scheduler(
            model,
            settings,
            self._share,
            n_ctx,
            parallel,
            self._visible_markers(),
            projector=self.projector,
        )
        self.info = RunnerInfo(
            model_id=config.model_id,
            n_ctx=n_ctx,
            n_ctx_train=model.n_ctx_train(),
            n_params=model.n_params(),
            size_bytes=model.size(),
            description=model.desc(),
            supports_fim=all(token >= 0 for token in self._fim_tokens),
            has_chat_template=self._formatter is not None,
            tool_syntax=self.tool_syntax.name if self.tool_syntax else None,
            thinking_syntax=self.thinking.name if self.thinking else None,
            vision=self.projector is not None,
            gpu_layers=gpu_layers,
            gpu_offload_supported=supports_offload,
            threads=settings.threads,
            parallel=parallel,
            kv_cells=self._scheduler.kv_cells,
            kv_bytes_per_cell=kv_bytes_per_cell(model, settings),
            rss_before_load_bytes=rss_before_load,
            backend=describe_backend(gpu_layers),
            cpu_variant=path.cpu_variant,
            extra_buffers=path.extra_buffers,
            engine_note=path.note,
        )
        self.meter.kv_cells = self.info.kv_cells
        self.meter.kv_bytes_per_cell = self.info.kv_bytes_per_cell

    def check_decodes(self, path: EnginePath) -> None:
        """The engine check's decodes on this engine's batching context, for a trial path: a
        crash here is charged to ``path`` by the daemon, which then checks the other paths in
        children."""
        from localserve.runner.engine_check import check_context

        self._scheduler.check_before_serving(
            lambda ctx, batch: check_context(
                self._model.model, ctx, batch, path.extra_buffers, path.cpu_variant
            )
        )

    @property
    def meter(self) -> ThroughputMeter:
        """The batch loop's token counter; set its ``report`` to receive ticks."""
        return self._scheduler.meter

    def submit(self, request: GenerationRequest, sink: Sink) -> None:
        self._scheduler.submit(request, sink)

    def close(self) -> None:
        self._scheduler.close()
        self._embedder.close()
        if self.projector is not None:
            self.projector.close()

    def _compile(self, template: str | None) -> ChatTemplate | None:
        if not template:
            return None
        bos = self._token_text(self._model.token_bos())
        try:
            return ChatTemplate(template, self._eos_text, bos)
        except jinja2.TemplateError as exc:  # a broken template: serve completions only
            self._template_error = self._template_error or str(exc)
            return None

    def _visible_markers(self) -> frozenset[int]:
        """The special tokens that mark thoughts and tool calls in this model's output, which
        must reach the readers as text (gpt-oss's ``<|channel|>``...); the model's other
        special tokens stay hidden."""
        markers: list[str] = list(self.tool_syntax.markers) if self.tool_syntax else []
        if self.thinking is not None:
            markers += self.thinking.markers
            markers += HARMONY_MARKERS if self.thinking is HARMONY else ()
        visible = set()
        for marker in markers:
            tokens = self._tokenize(marker, add_bos=False, special=True)
            if len(tokens) == 1:
                visible.add(tokens[0])
        return frozenset(visible)

    def _token_text(self, token: int) -> str:
        return self._model.token_get_text(token) if token >= 0 else ""

    def _tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        return list(self._model.tokenize(text.encode("utf-8"), add_bos, special))

    # -- prompts ----------------------------------------------------------------------------
    def render_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """The chat as the model's template writes it, ``extra`` variables included."""
        if self._formatter is None:
            problem = (
                f"a chat template that does not compile ({self._template_error})"
                if self._template_error
                else "no chat template"
            )
            raise UnsupportedFeatureError(
                f"The model '{self.info.model_id}' has {problem}; use /v1/completions.",
                param="messages",
            )
        if tools and self.tool_syntax is None:
            raise UnsupportedFeatureError(
                f"The model '{self.info.model_id}' does not support tools: its chat template "
                "has no place for them. Use a model made for tool calling (Qwen2.5 or Qwen3, "
                "Llama 3.1+, Mistral Nemo or Small, Hermes 3...) or a cloud model.",
                param="tools",
                code="tools_not_supported",
            )
        formatter = self._tool_formatter if tools and self._tool_formatter else self._formatter
        try:
            return formatter.render(messages, tools, extra)
        except TemplateLimitError as exc:
            raise InvalidRequestError(
                f"The model's chat template was stopped: {exc}.", param="messages"
            ) from exc
        except Exception as exc:  # a template may raise anything, by design (raise_exception)
            raise InvalidRequestError(
                f"The model's chat template rejected these messages: {exc}", param="messages"
            ) from exc

    def image_marker(self) -> str | None:
        """What the template writes where an image goes; None for a model that does not see
        (its messages with images are then refused)."""
        return self.projector.marker() if self.projector is not None else None

    def image_prompt(self, prompt: str, marker: str, images: list[ImagePart]) -> ImagePrompt:
        """A rendered chat with images as tokens and images: each image decoded here, within
        the image policy's limits (data URLs only: the gateway fetched any http(s) image)."""
        assert self.projector is not None
        decoded = [decode_data_url(image.url, self.image_policy) for image in images]
        image_prompt = self.projector.tokenize(prompt, marker, decoded)
        if image_prompt.tokens and image_prompt.tokens[-1] < 0:
            raise InvalidRequestError(
                "The prompt ends with an image; the chat template must write text after it.",
                param="messages",
            )
        return image_prompt

    def chat_tokens(self, prompt: str) -> list[int]:
        """A rendered chat's tokens; the template writes the BOS token itself where the model
        wants one, and its markers are special tokens."""
        return self._tokenize(prompt, add_bos=False, special=True)

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
        bos = [self._model.token_bos()] if self._model.add_bos_token() else []
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
    def prepare(
        self,
        prompt_tokens: list[int],
        params: SamplingParams,
        grammar: LlamaGrammar | None = None,
        thought: ThoughtPlan | None = None,
        images: ImagePrompt | None = None,
    ) -> GenerationRequest:
        """Everything that can reject a request, done before a stream starts. ``grammar``
        (a forced tool call) takes the place of one from ``response_format``; ``thought``
        says how a thinking model's thought is watched and kept to its budget."""
        if not prompt_tokens:
            raise InvalidRequestError("The prompt is empty.", param="prompt")
        return GenerationRequest(
            prompt_tokens=prompt_tokens,
            max_tokens=self.check_fits(prompt_tokens, params.max_tokens),
            grammar=grammar or self._grammar(params.response_format),
            params=params,
            prompt_lookup=params.prompt_lookup,
            thought=thought,
            images=images,
        )

    @staticmethod
    def tool_call_grammar(tools: list[dict[str, Any]], name: str | None) -> LlamaGrammar:
        """A grammar that lets the model write only a call (``forced_call_schema``)."""
        return Engine._schema_grammar(
            forced_call_schema(tools, name),
            "Cannot constrain a call to these tools' parameter schemas",
            "tools",
        )

    @staticmethod
    def _schema_grammar(schema: dict[str, Any], problem: str, param: str) -> LlamaGrammar:
        try:
            return LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except Exception as exc:  # the converter raises assorted errors on schemas it cannot read
            raise InvalidRequestError(f"{problem}: {exc}", param=param) from exc

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
            return Engine._schema_grammar(
                schema, "Unsupported JSON schema in response_format", "response_format"
            )
        raise InvalidRequestError(
            f"Unknown response_format type '{kind}'.", param="response_format.type"
        )

    # -- embeddings -------------------------------------------------------------------------
    def embed(self, inputs: list[str]) -> tuple[list[list[float]], int]:
        """Mean-pooled embeddings, one per input, and the number of tokens read."""
        limit = self._embedder.limit
        token_lists = []
        for index, text in enumerate(inputs):
            tokens = self._tokenize(text, add_bos=True, special=False)
            if len(tokens) > limit:
                raise InvalidRequestError(
                    f"Input {index} has {len(tokens)} tokens; this model embeds at most {limit}.",
                    param="input",
                )
            if not tokens:
                raise InvalidRequestError(f"Input {index} is empty.", param="input")
            token_lists.append(tokens)
        # The batch loop applies a grant before its own next step; this is the other context.
        ctx = self._embedder.context()
        self._embedding_threads = self._share.apply(ctx, self._embedding_threads, "embeddings")
        vectors = self._embedder.embed(token_lists)
        return vectors, sum(len(tokens) for tokens in token_lists)
