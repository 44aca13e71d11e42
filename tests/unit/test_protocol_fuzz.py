"""Hostile request bodies at every inference endpoint of every protocol, through the whole
gateway in-process: whatever the body (any JSON, each protocol's own fields with the wrong
types, invalid UTF-8, truncated JSON, nothing, nesting thousands deep), the answer is never a
5xx, and every 4xx is in the error shape of the protocol that was asked.

The fake backend (``tests/helpers/fake_backend.py``) checks what reaches it as the runner would and
never fails, so a 5xx can only come from the gateway itself."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, find, given, settings
from hypothesis import strategies as st

from tests.helpers.fake_backend import MODEL
from tests.helpers.gateway import Gateway, build_gateway, ndjson_lines, sse_events

# A deeper hunt than the test suite's: FUZZ_EXAMPLES=5000 pytest tests/unit/test_protocol_fuzz.py
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- values --------------------------------------------------------------------------------------
# Control and format characters, emoji, and lone UTF-16 surrogates (JSON's "\ud800")
odd_text = st.text(st.characters(categories=["Cs", "Cc", "Cf", "So"]), min_size=1, max_size=4)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.floats(),  # nan and ±inf too: Python's json writes and reads them
    st.text(),
    odd_text,
    st.sampled_from(["", " ", "\x00", "\ud800", "\udfff", "😀", "tiny", "0", "-1", "json"]),
)
any_json = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=12,
)


def field(*plausible: st.SearchStrategy[Any], junk: int = 5) -> st.SearchStrategy[Any]:
    """A known field: one of its plausible values, mostly; anything at all, one time in ``junk``."""
    values = st.one_of(*plausible)
    return st.one_of(*[values] * (junk - 1), any_json)


def obj(
    required: dict[str, st.SearchStrategy[Any]] | None = None,
    **optional: st.SearchStrategy[Any],
) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object with these fields (the optional ones present or not) and sometimes extras."""
    known = st.fixed_dictionaries(required or {}, optional=optional)
    extras = st.dictionaries(st.text(max_size=8), any_json, max_size=2)
    return st.builds(lambda extra, fields: {**extra, **fields}, extras, known)


def listing(element: st.SearchStrategy[Any], max_size: int = 3) -> st.SearchStrategy[Any]:
    return field(st.lists(element, min_size=1, max_size=max_size))


model = field(
    st.just(MODEL),
    st.sampled_from([f"{MODEL}:latest", f" {MODEL.upper()} ", "nope", f"{MODEL}\udc80"]),
    junk=10,
)
text = field(st.text(max_size=20), odd_text)
number = field(st.floats(0, 1), st.floats(-3, 3), st.integers(-3, 100))
count = field(st.integers(1, 4096), st.integers(-2, 10**6), st.integers())
flag = field(st.booleans())
json_schema = field(st.just({"type": "object", "properties": {"city": {"type": "string"}}}))
keep_alive = field(st.sampled_from([0, -1, "0", "5m", "1h30m", "-1", "soon", 1e308, "1e999"]))

# OpenAI
text_part = obj({"type": field(st.just("text"))}, text=text)
content = field(st.text(max_size=20), st.lists(text_part, max_size=3), st.none())
openai_call = obj(
    id=text,
    type=field(st.just("function")),
    function=obj(name=text, arguments=field(st.just('{"a": 1}'), st.text(max_size=8))),
)
openai_message = obj(
    {"role": field(st.sampled_from(["system", "developer", "user", "assistant", "tool"]))},
    content=content,
    name=text,
    tool_calls=listing(openai_call),
    tool_call_id=text,
)
openai_tool = obj(
    {"type": field(st.just("function"))},
    function=obj(
        {"name": field(st.sampled_from(["get_weather", "x" * 65, "bad name"]))},
        description=text,
        parameters=json_schema,
    ),
)
tool_choice = field(
    st.sampled_from(["none", "auto", "required"]),
    obj(type=field(st.just("function")), function=obj(name=text)),
)
sampling_fields = {
    "max_tokens": count,
    "max_completion_tokens": count,
    "temperature": number,
    "top_p": number,
    "top_k": count,
    "min_p": number,
    "presence_penalty": number,
    "frequency_penalty": number,
    "repeat_penalty": number,
    "seed": count,
    "stop": field(st.text(max_size=5), st.lists(st.text(max_size=3), max_size=20)),
    "n": count,
    "stream": flag,
    "stream_options": field(obj(include_usage=flag)),
    "response_format": field(
        obj(
            {"type": field(st.sampled_from(["text", "json_object", "json_schema"]))},
            json_schema=field(obj(name=text, schema=json_schema)),
        )
    ),
    "prompt_lookup": flag,
    "keep_alive": keep_alive,
}
openai_chat = obj(
    {"model": model, "messages": listing(openai_message)},
    tools=listing(openai_tool),
    tool_choice=tool_choice,
    parallel_tool_calls=flag,
    **sampling_fields,
)
openai_completion = obj(
    {"model": model, "prompt": field(st.text(max_size=20), st.lists(st.text(), max_size=2))},
    suffix=text,
    **sampling_fields,
)
openai_embedding = obj(
    {
        "model": model,
        "input": field(st.text(min_size=1), st.lists(st.text(min_size=1), max_size=3)),
    },
    encoding_format=field(st.sampled_from(["float", "base64"])),
    keep_alive=keep_alive,
)

# Anthropic
block = obj(
    {
        "type": field(
            st.sampled_from(
                ["text", "tool_use", "tool_result", "thinking", "redacted_thinking", "image"]
            )
        )
    },
    text=text,
    id=text,
    name=text,
    input=field(st.dictionaries(st.text(max_size=5), any_json, max_size=3)),
    tool_use_id=text,
    content=field(st.text(max_size=10), st.lists(obj(type=field(st.just("text")), text=text))),
    is_error=flag,
    thinking=text,
    signature=text,
    data=text,
)
anthropic_message = obj(
    {
        "role": field(st.sampled_from(["user", "assistant"])),
        "content": field(st.text(max_size=20), st.lists(block, max_size=3)),
    }
)
anthropic_tool = obj(
    {"name": text, "input_schema": json_schema},
    description=text,
    type=field(st.sampled_from(["custom", "web_search_20250305", "bash_20250124"])),
)
thinking_config = field(
    obj(
        {"type": field(st.sampled_from(["enabled", "adaptive", "disabled"]))},
        budget_tokens=count,
        display=field(st.sampled_from(["summarized", "omitted"])),
    )
)
anthropic_fields = {
    "system": field(st.text(max_size=10), st.lists(block, max_size=2)),
    "thinking": thinking_config,
    "tools": listing(anthropic_tool),
    "tool_choice": field(
        obj(
            {"type": field(st.sampled_from(["auto", "any", "tool", "none"]))},
            name=text,
            disable_parallel_tool_use=flag,
        )
    ),
}
anthropic_count = obj({"model": model, "messages": listing(anthropic_message)}, **anthropic_fields)
anthropic_messages = obj(
    {"model": model, "messages": listing(anthropic_message), "max_tokens": count},
    stop_sequences=field(st.lists(st.text(max_size=3), max_size=20)),
    temperature=number,
    top_p=number,
    top_k=count,
    stream=flag,
    metadata=field(obj(user_id=text)),
    **anthropic_fields,
)

# Ollama
options = field(
    obj(
        temperature=number,
        top_p=number,
        top_k=count,
        min_p=number,
        seed=count,
        stop=field(st.lists(st.text(max_size=3), max_size=3)),
        repeat_penalty=number,
        presence_penalty=number,
        frequency_penalty=number,
        num_predict=count,
        num_ctx=count,
    )
)
ollama_call = obj(
    id=text,
    function=obj({"name": text}, arguments=field(st.dictionaries(st.text(max_size=4), any_json))),
)
ollama_message = obj(
    {
        "role": field(st.sampled_from(["system", "user", "assistant", "tool"])),
        "content": text,
    },
    images=field(st.lists(st.text(max_size=4), max_size=1)),
    tool_calls=listing(ollama_call),
    tool_name=text,
    name=text,
    tool_call_id=text,
    thinking=text,
)
ollama_common = {
    "think": field(st.booleans(), st.sampled_from(["low", "medium", "high", "max", ""])),
    "options": options,
    "format": field(st.just("json"), json_schema),
    "stream": flag,
    "keep_alive": keep_alive,
}
ollama_chat = obj(
    {"model": model, "messages": listing(ollama_message)},
    tools=listing(openai_tool),
    **ollama_common,
)
ollama_generate = obj(
    {"model": model},
    prompt=text,
    suffix=text,
    system=text,
    raw=flag,
    template=text,
    context=field(st.lists(st.integers(), max_size=3)),
    images=field(st.lists(st.text(max_size=4), max_size=1)),
    **ollama_common,
)
ollama_embed = obj(
    {
        "model": model,
        "input": field(st.text(min_size=1), st.lists(st.text(min_size=1), max_size=3)),
    },
    truncate=flag,
    options=options,
    keep_alive=keep_alive,
)
ollama_named = obj(model=model, name=model, verbose=flag, stream=flag, insecure=flag)
ollama_pull = obj(
    model=field(st.sampled_from(["owner/repo", "owner/repo:Q4_K_M", "hf.co/a/b", "a", "/", ":"])),
    name=text,
    stream=flag,
    insecure=flag,
)


# -- bodies --------------------------------------------------------------------------------------
def nested(depth: int, kind: str) -> str:
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@st.composite
def bodies(draw: st.DrawFn, shaped: st.SearchStrategy[dict[str, Any]]) -> bytes:
    """A request body: the endpoint's own fields (often), any JSON, bytes, a cut-off body..."""
    kind = draw(
        st.sampled_from(
            ["shaped", "shaped", "shaped", "any", "bytes", "cut", "empty", "deep", "encoded"]
        )
    )
    if kind == "any":
        return json.dumps(draw(any_json)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "empty":
        return draw(st.sampled_from([b"", b" ", b"null", b"{}", b"[]", b'""', b"\xef\xbb\xbf{}"]))
    if kind == "deep":
        depth = draw(st.sampled_from([64, 200, 900, 1000, 5000, 100_000]))
        deep = nested(depth, draw(st.sampled_from(["list", "object"])))
        where = draw(st.sampled_from(["body", "messages", "options", "tools", "input", "system"]))
        if where == "body":
            return deep.encode()
        return f'{{"model": "{MODEL}", "{where}": {deep}}}'.encode()
    body = json.dumps(draw(shaped))
    if kind == "cut":
        return body.encode()[: draw(st.integers(0, max(0, len(body) - 1)))]
    if kind == "encoded":  # other encodings JSON parsers detect, and lone surrogates as bytes
        raw = json.dumps(draw(shaped), ensure_ascii=False)
        codec = draw(st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32"]))
        return raw.encode(codec, "surrogatepass")
    return body.encode()


# -- the property --------------------------------------------------------------------------------
def openai_error(body: Any) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("message"), str)
        and isinstance(error.get("type"), str)
    )


def anthropic_error(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and body.get("type") == "error"
        and isinstance(body.get("error"), dict)
        and isinstance(body["error"].get("type"), str)
        and isinstance(body["error"].get("message"), str)
    )


def ollama_error(body: Any) -> bool:
    return isinstance(body, dict) and list(body) == ["error"] and isinstance(body["error"], str)


def sse_ok(content: bytes) -> None:
    for _, data in sse_events(content):
        assert data is not None


def ndjson_ok(content: bytes) -> None:
    lines = ndjson_lines(content)
    assert lines and all(isinstance(line, dict) for line in lines)


def answer_ok(response: Any) -> None:
    """A 2xx body that parses: JSON, server-sent events or NDJSON lines."""
    kind = response.headers.get("content-type", "")
    if kind.startswith("text/event-stream"):
        sse_ok(response.content)
    elif kind.startswith("application/x-ndjson"):
        ndjson_ok(response.content)
    elif response.content:
        json.loads(response.content)


# OpenAI Responses
input_part = obj(
    {"type": field(st.sampled_from(["input_text", "output_text", "input_image"]))}, text=text
)
response_item = field(
    obj(
        {"role": field(st.sampled_from(["user", "assistant", "system", "developer", "tool"]))},
        type=field(st.just("message")),
        content=field(st.text(max_size=20), st.lists(input_part, max_size=3)),
    ),
    obj(
        {"type": field(st.just("function_call"))},
        call_id=text,
        name=text,
        arguments=field(st.just('{"a": 1}'), st.text(max_size=8)),
    ),
    obj({"type": field(st.just("function_call_output"))}, call_id=text, output=text),
    obj(
        {"type": field(st.just("reasoning"))},
        id=text,
        summary=field(st.lists(obj(type=field(st.just("summary_text")), text=text))),
        content=field(st.lists(obj(type=field(st.just("reasoning_text")), text=text))),
        encrypted_content=text,
    ),
    obj({"type": field(st.sampled_from(["web_search_call", "item_reference"]))}),
)
responses_tool = obj(
    {"type": field(st.just("function")), "name": field(st.sampled_from(["get_weather", ""]))},
    description=text,
    parameters=json_schema,
)
openai_responses = obj(
    {"model": model, "input": field(st.text(max_size=20), st.lists(response_item, max_size=4))},
    instructions=text,
    tools=listing(responses_tool),
    tool_choice=field(st.sampled_from(["none", "auto", "required"]), obj(type=text, name=text)),
    max_output_tokens=count,
    temperature=number,
    top_p=number,
    stream=flag,
    text=field(
        obj(
            format=obj(
                {"type": field(st.sampled_from(["text", "json_object", "json_schema"]))},
                name=text,
                schema=json_schema,
            )
        )
    ),
    previous_response_id=field(st.none(), text),
    store=flag,
    reasoning=field(
        obj(
            effort=field(st.sampled_from(["none", "minimal", "low", "medium", "high", "max"])),
            summary=field(st.sampled_from(["auto", "concise", "detailed"])),
        )
    ),
)


@dataclass(frozen=True)
class Endpoint:
    method: str
    shaped: st.SearchStrategy[dict[str, Any]]  # bodies with the endpoint's own fields
    refusal: Callable[[Any], bool]  # whether an error body has the protocol's shape


ENDPOINTS = {
    "/v1/chat/completions": Endpoint("POST", openai_chat, openai_error),
    "/v1/completions": Endpoint("POST", openai_completion, openai_error),
    "/v1/embeddings": Endpoint("POST", openai_embedding, openai_error),
    "/v1/responses": Endpoint("POST", openai_responses, openai_error),
    "/v1/responses/input_tokens": Endpoint("POST", openai_responses, openai_error),
    "/v1/messages": Endpoint("POST", anthropic_messages, anthropic_error),
    "/v1/messages/count_tokens": Endpoint("POST", anthropic_count, anthropic_error),
    "/api/chat": Endpoint("POST", ollama_chat, ollama_error),
    "/api/generate": Endpoint("POST", ollama_generate, ollama_error),
    "/api/embed": Endpoint("POST", ollama_embed, ollama_error),
    "/api/show": Endpoint("POST", ollama_named, ollama_error),
    "/api/pull": Endpoint("POST", ollama_pull, ollama_error),
    "/api/delete": Endpoint("DELETE", ollama_named, ollama_error),
}
ANSWERED = [path for path in ENDPOINTS if path not in ("/api/pull", "/api/delete")]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    return build_gateway(tmp_path_factory.mktemp("fuzz-home"))


def check(gateway: Gateway, path: str, body: bytes) -> None:
    endpoint = ENDPOINTS[path]
    # The admin key: pull and delete then read their bodies too (instead of a 403 first).
    admin = gateway.auth(gateway.admin_key)
    response = gateway.post(path, content=body, method=endpoint.method, headers=admin)
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert endpoint.refusal(response.json()), response.text[:500]
    else:
        answer_ok(response)


@pytest.mark.parametrize("path", list(ENDPOINTS))
@FUZZ
@given(data=st.data())
@example(data=None)  # the empty body, always
def test_no_body_gets_a_5xx_and_every_refusal_has_the_protocols_shape(
    gateway: Gateway, path: str, data: st.DataObject | None
) -> None:
    body = b"" if data is None else data.draw(bodies(ENDPOINTS[path].shaped), label="body")
    check(gateway, path, body)


@pytest.mark.parametrize("path", ANSWERED)
def test_the_fuzzed_fields_make_valid_requests_too(gateway: Gateway, path: str) -> None:
    """Each endpoint's own fields also make requests that are answered (200), so the fuzz above
    goes past the first check, into the translators and the backend."""
    endpoint = ENDPOINTS[path]

    def answered(body: dict[str, Any]) -> bool:
        return gateway.post(path, body, method=endpoint.method).status_code == 200

    search = settings(max_examples=300, phases=[Phase.generate], database=None, deadline=None)
    body = find(endpoint.shaped, answered, settings=search)  # NoSuchExample if none is
    assert gateway.post(path, body, method=endpoint.method).status_code == 200


# What the fuzz found once (a 500 each, but the second), kept as plain cases.
def anthropic_blocks(*blocks: Any) -> bytes:
    message = {"role": "user", "content": list(blocks)}
    return json.dumps({"model": MODEL, "max_tokens": 1, "messages": [message]}).encode()


FOUND = [
    pytest.param(
        "/v1/chat/completions", b"[" * 5000 + b"]" * 5000, 400, id="parser-recursion-overflow"
    ),
    pytest.param(
        "/api/chat",
        f'{{"model": "{MODEL}", "format": {nested(500, "object")}}}'.encode(),
        400,
        id="past-the-nesting-limit",
    ),
    pytest.param("/v1/messages", anthropic_blocks({"type": []}), 400, id="unhashable-block-type"),
    pytest.param(
        "/v1/messages/count_tokens",
        anthropic_blocks({"type": "text"}),
        400,
        id="text-block-no-text",
    ),
    pytest.param(
        "/api/chat",
        json.dumps(
            {"model": MODEL, "messages": [{"role": "assistant", "content": "", "tool_calls": 1}]}
        ).encode(),
        400,
        id="ollama-tool-calls-not-a-list",
    ),
    pytest.param(  # lone surrogates, echoed in the error message
        "/api/chat",
        json.dumps({"model": f"{MODEL}\ud800", "messages": [{"role": "user"}]}).encode(),
        404,
        id="lone-surrogate-in-model",
    ),
    pytest.param(
        "/api/pull", json.dumps({"model": "\udfff"}).encode(), 404, id="lone-surrogate-in-repo"
    ),
    pytest.param(
        "/v1/messages", anthropic_blocks({"type": "x\udc80"}), 400, id="lone-surrogate-in-type"
    ),
]


@pytest.mark.parametrize(("path", "body", "status"), FOUND)
def test_bodies_the_fuzz_found(gateway: Gateway, path: str, body: bytes, status: int) -> None:
    check(gateway, path, body)
    admin = gateway.auth(gateway.admin_key)
    assert gateway.post(path, content=body, headers=admin).status_code == status
