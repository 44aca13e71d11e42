"""OpenAI request bodies, validated once at the gateway and parsed again by the runner.

Unknown fields are accepted and ignored (clients send vendor extras such as ``user``); fields
we cannot honour (``n`` > 1) are refused with a clear 400.

Images arrive as OpenAI's ``image_url`` content parts, in user messages only (OpenAI's rule),
whatever protocol the request came in: the translators in ``localserve/protocols/`` turn
Anthropic's ``image`` blocks, Ollama's ``images`` and the Responses API's ``input_image`` into
them. The gateway swaps http(s) URLs for the data URLs it fetched, on the request's JSON
(``router/images.with_fetched_images``); a runner writes its model's media marker where each
image stands (``ChatMessage.as_template_input``), and a model that does not see refuses the
request.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from localserve.api.errors import APIError
from localserve.api.sampling import SamplingParams
from localserve.errors import UnsupportedFeatureError

MAX_STOP_SEQUENCES = 16


class StreamOptions(BaseModel):
    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class GenerationRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repeat_penalty: float | None = Field(None, gt=0)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    prompt_lookup: bool | None = Field(
        None,
        description="localserve extension: speculative decoding with drafts looked up in the "
        "prompt. Default: on for /v1/completions (code completion repeats its context), off "
        "for chat.",
    )

    # Where prompt lookup measurably helps by default (docs/benchmarks.md).
    prompt_lookup_default: ClassVar[bool] = False

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are supported")
        if any(not stop for stop in stops):
            raise ValueError("stop sequences must not be empty")
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def sampling(self) -> SamplingParams:
        defaults = SamplingParams()
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return SamplingParams(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=defaults.temperature if self.temperature is None else self.temperature,
            top_p=defaults.top_p if self.top_p is None else self.top_p,
            top_k=defaults.top_k if self.top_k is None else self.top_k,
            min_p=defaults.min_p if self.min_p is None else self.min_p,
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            repeat_penalty=self.repeat_penalty or defaults.repeat_penalty,
            seed=self.seed,
            stop=tuple(stops),
            response_format=self.response_format.model_dump() if self.response_format else None,
            prompt_lookup=(
                self.prompt_lookup_default if self.prompt_lookup is None else self.prompt_lookup
            ),
        )


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text"]
    text: str


# OpenAI's hint for how finely to look ("original": at full size, newer SDKs); local projectors
# see each image at their own size, so it is kept, not acted on.
ImageDetail = Literal["auto", "low", "high", "original"]


class ImageURL(BaseModel):
    """Where an image is: a ``data:`` URL or an http(s) URL (what else is refused, and how they
    are fetched, is ``localserve.media``'s job, not the schema's). No ``detail`` means "auto"."""

    model_config = ConfigDict(extra="allow")
    url: str = Field(min_length=1)
    detail: ImageDetail | None = None


class ImagePart(BaseModel):
    """OpenAI's image content part, ``{"type": "image_url", "image_url": {"url", "detail"}}``.
    Some clients send ``"image_url": "URL"``; it becomes the object form."""

    model_config = ConfigDict(extra="allow")
    type: Literal["image_url"]
    image_url: ImageURL

    @field_validator("image_url", mode="before")
    @classmethod
    def _url_alone(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @property
    def url(self) -> str:
        return self.image_url.url


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
IMAGE_ROLES = frozenset({"user"})  # OpenAI's rule: only a user's turn holds images


TOOL_NAME = r"^[A-Za-z0-9_.\-]{1,64}$"


class FunctionCall(BaseModel):
    name: str
    arguments: str


class AssistantToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    def as_template_input(self) -> dict[str, Any]:
        """Templates (following Hugging Face's convention) expect arguments as an object."""
        try:
            arguments: Any = json.loads(self.function.arguments)
        except ValueError:
            arguments = self.function.arguments
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.function.name, "arguments": arguments},
        }


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[AssistantToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None  # an earlier answer's thoughts (llama-server, DeepSeek)

    @model_validator(mode="after")
    def _images_in_user_turns(self) -> ChatMessage:
        if self.images() and self.role not in IMAGE_ROLES:
            raise ValueError(
                f"images are accepted in user messages only, not in {self.role} messages "
                "(as in OpenAI's API)"
            )
        return self

    def images(self) -> list[ImagePart]:
        """The message's image parts, in order."""
        if not isinstance(self.content, list):
            return []
        return [part for part in self.content if isinstance(part, ImagePart)]

    def as_template_input(self, image_marker: str | None = None) -> dict[str, Any]:
        """The message as chat templates expect it: content is one string, each image the
        ``image_marker`` text where it stands (a runner passes its vision projector's marker,
        libmtmd's ``<__media__>``). Without a marker an image is refused, never dropped: the
        model would answer about a picture it was never shown."""
        if isinstance(self.content, list):
            content = "".join(self._part_text(part, image_marker) for part in self.content)
        else:
            content = self.content or ""
        role = "system" if self.role == "developer" else self.role
        message: dict[str, Any] = {"role": role, "content": content}
        if self.name:
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = [call.as_template_input() for call in self.tool_calls]
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        if self.reasoning_content:
            # Under both names templates read: Qwen3's and most others', and gpt-oss's. The
            # template keeps or drops earlier thoughts as its model expects.
            message["reasoning_content"] = message["thinking"] = self.reasoning_content
        return message

    @staticmethod
    def _part_text(part: TextPart | ImagePart, image_marker: str | None) -> str:
        if isinstance(part, TextPart):
            return part.text
        if image_marker is None:
            raise UnsupportedFeatureError(
                "This model does not see images: it has no vision projector (mmproj).",
                param="messages",
                code="image_not_supported",
            )
        return image_marker


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(pattern=TOOL_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[ToolDefinition] | None = Field(None, max_length=128)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    reasoning_effort: ReasoningEffort | None = Field(
        None,
        description="How much a thinking model thinks: 'none' (and 'minimal') asks it not to, "
        "where its template can switch thinking off; 'low', 'medium' and 'high' reach templates "
        "that take a level (gpt-oss; 'xhigh' reaches them as 'high'). Empty = the model's default.",
    )
    reasoning_format: Literal["none", "auto", "deepseek"] | None = Field(
        None,
        description="'none' leaves a thinking model's thoughts inline in the content, as the "
        "model wrote them (as llama-server's option); otherwise they come apart, in "
        "reasoning_content.",
    )
    thinking_budget_tokens: int | None = Field(
        None,
        ge=1,
        description="localserve extension: tokens the model may think before the engine closes "
        "its thought and the answer follows. Empty = the thinking_budget setting.",
    )
    chat_template_kwargs: dict[str, Any] | None = Field(
        None, description="Extra variables for the model's chat template (enable_thinking...)."
    )
    enable_thinking: bool | None = Field(
        None,
        description="localserve extension: false asks a thinking model not to think, as "
        "reasoning_effort 'none' does; the Anthropic and Ollama translators send it, and cloud "
        "backends drop it.",
    )

    @model_validator(mode="after")
    def _check_tool_choice(self) -> ChatCompletionRequest:
        names = [tool.function.name for tool in self.tools or []]
        if len(set(names)) != len(names):
            raise ValueError("tool names must be unique")
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"tool_choice names '{choice.function.name}', which is not in tools")
        if choice == "required" and not names:
            raise ValueError("tool_choice 'required' needs tools")
        return self

    def active_tools(self) -> list[dict[str, Any]] | None:
        """The tools to show the model (as templates expect them); None with tool_choice none."""
        if not self.tools or self.tool_choice == "none":
            return None
        return [tool.model_dump(exclude_none=True) for tool in self.tools]

    def forced_tool(self) -> str | None:
        """None when the model may answer freely; "" when it must call some tool
        (``required``); a tool's name when it must call that one."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return self.tool_choice.function.name
        return "" if self.tool_choice == "required" else None

    def image_urls(self) -> list[str]:
        """Every image's URL, in the order the images appear in the conversation."""
        return [part.url for message in self.messages for part in message.images()]

    def has_images(self) -> bool:
        return any(message.images() for message in self.messages)


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]
    suffix: str | None = None

    prompt_lookup_default: ClassVar[bool] = True

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt per request is supported")
        return value

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"

    @property
    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


ModelT = TypeVar("ModelT", bound=BaseModel)


def validate(model: type[ModelT], payload: dict[str, Any]) -> ModelT:
    """``payload`` as ``model``, or a 400 naming a parameter that is wrong: the error that got
    deepest, since a value that fits no member of a union (content as a string or a list of
    parts) gets one error per member, and the deepest is the one the client meant."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = exc.errors()
        deepest = max(errors, key=lambda error: len(error["loc"]))
        param = param_name(deepest["loc"]) or None
        raise APIError(400, f"Invalid '{param}': {deepest['msg']}.", param=param) from exc


UNION_MEMBERS = frozenset({"str", "none", "int", "float", "bool"})


def param_name(loc: tuple[int | str, ...]) -> str:
    """A dotted path as the client wrote it: without pydantic's union member labels
    (``str``, ``list[...]``, ``tagged-union[...]``) nor a tagged union's tag, which pydantic
    puts before the field of the same name (``content.0.image_url.image_url.url``)."""
    parts: list[str] = []
    for part in loc:
        text = str(part)
        if isinstance(part, str) and ("[" in part or part in UNION_MEMBERS):
            continue
        if parts and parts[-1] == text and isinstance(part, str):
            continue
        parts.append(text)
    return ".".join(parts)
