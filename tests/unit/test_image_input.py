"""Images in each protocol's own shape, as the pure translators turn them into OpenAI's
``image_url`` parts of the core request (``api/requests.py``), and what the core does with them.

Each protocol's documented example of an image input is translated, validated as the core
request and rendered with a media marker, so a test fails if an image is dropped anywhere on
the way, moved, or its URL changed.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from localserve.api.errors import APIError
from localserve.api.requests import ChatCompletionRequest, ChatMessage, validate
from localserve.errors import UnsupportedFeatureError
from localserve.protocols.anthropic import MessagesRequest, openai_request
from localserve.protocols.anthropic import error_object as anthropic_error_object
from localserve.protocols.ollama import (
    chat_call,
    generate_call,
    image_media_type,
    loads_only,
    openai_chat_messages,
)
from localserve.protocols.ollama import error_object as ollama_error_object
from localserve.protocols.openai import lift_tool_images
from localserve.protocols.responses import ResponsesRequest, input_messages

MARKER = "<__media__>"  # libmtmd's default media marker, as a runner passes it

# The start of the PNG in Ollama's API docs ("Chat request (with images)"), cut short: the
# translator reads only a file's first bytes, and the whole string must reach the data URL.
OLLAMA_DOC_IMAGE = (
    "iVBORw0KGgoAAAANSUhEUgAAAG0AAABmCAYAAADBPx+VAAAACXBIWXMAAAsTAAALEwEAmpwYAAAAAXNSR0IArs4c6QAAAARnQU"
    "1BAACxjwv8YQUAAA3VSURBVHgB7Z27r"
)
JPEG_B64 = base64.b64encode(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00").decode()
GIF_B64 = base64.b64encode(b"GIF89a\x01\x00\x01\x00\x80\x00\x00").decode()
WEBP_B64 = base64.b64encode(b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00").decode()

# OpenAI's and Anthropic's vision guides show these pictures.
BOARDWALK = (
    "https://upload.wikimedia.org/wikipedia/commons/thumb/d/dd/"
    "Gfp-wisconsin-madison-the-nature-boardwalk.jpg/2560px-Gfp-wisconsin-madison-the-nature-"
    "boardwalk.jpg"
)
ANT = "https://upload.wikimedia.org/wikipedia/commons/a/a7/Camponotus_flavomarginatus_ant.jpg"
ANTHROPIC_BASE64 = "/9j/4AAQSkZJRgABAQEASABIAAD"  # the start of a JPEG, as in its guide


def image(url: str, detail: str | None = None) -> dict[str, Any]:
    inner: dict[str, Any] = {"url": url}
    if detail is not None:
        inner["detail"] = detail
    return {"type": "image_url", "image_url": inner}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def core(payload: dict[str, Any]) -> ChatCompletionRequest:
    """The translated request as the gateway and the runner read it."""
    return validate(ChatCompletionRequest, payload)


def rendered(request: ChatCompletionRequest) -> list[str]:
    return [message.as_template_input(MARKER)["content"] for message in request.messages]


# -- OpenAI chat: the core model ------------------------------------------------------------------
# OpenAI's vision guide, "Analyze images" (chat completions, an image by URL).
OPENAI_CHAT_IMAGE = {
    "model": "gpt-4.1-mini",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What's in this image?"},
                {"type": "image_url", "image_url": {"url": BOARDWALK}},
            ],
        }
    ],
}


def test_openai_chat_image_parts_are_read_in_order() -> None:
    request = core(OPENAI_CHAT_IMAGE)
    assert request.has_images() and request.image_urls() == [BOARDWALK]
    assert rendered(request) == [f"What's in this image?{MARKER}"]
    # The request the runner receives is the client's, image and all.
    assert request.model_dump(exclude_unset=True) == OPENAI_CHAT_IMAGE


def test_the_string_form_of_image_url_becomes_the_object_form() -> None:
    content = [{"type": "image_url", "image_url": "data:image/png;base64,AAAA"}, text("Hi")]
    request = core({"model": "m", "messages": [{"role": "user", "content": content}]})
    dumped = request.model_dump(exclude_unset=True)["messages"][0]["content"]
    assert dumped == [image("data:image/png;base64,AAAA"), text("Hi")]


@pytest.mark.parametrize("detail", ["auto", "low", "high", "original"])
def test_detail_is_kept(detail: str) -> None:
    content = [image("data:image/png;base64,AAAA", detail)]
    request = core({"model": "m", "messages": [{"role": "user", "content": content}]})
    assert request.messages[0].images()[0].image_url.detail == detail


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"type": "image_url", "image_url": {"url": ""}}, "messages.0.content.0.image_url.url"),
        ({"type": "image_url"}, "messages.0.content.0.image_url"),
        (
            {"type": "image_url", "image_url": {"url": "x", "detail": "max"}},
            "messages.0.content.0.image_url.detail",
        ),
        ({"type": "image", "image_url": "x"}, "messages.0.content.0"),
    ],
)
def test_a_malformed_image_part_is_a_400_naming_it(part: dict[str, Any], param: str) -> None:
    with pytest.raises(APIError) as refused:
        core({"model": "m", "messages": [{"role": "user", "content": [part]}]})
    assert refused.value.status_code == 400 and refused.value.param == param


@pytest.mark.parametrize("role", ["system", "developer", "assistant", "tool"])
def test_an_image_outside_a_user_message_is_refused(role: str) -> None:
    message = {"role": role, "content": [text("Look:"), image("data:image/png;base64,AAAA")]}
    with pytest.raises(APIError, match=f"user messages only, not in {role} messages") as refused:
        core({"model": "m", "messages": [{"role": "user", "content": "Hi"}, message]})
    assert refused.value.status_code == 400 and refused.value.param == "messages.1"


def test_the_marker_stands_where_each_image_stood() -> None:
    message = ChatMessage.model_validate(
        {
            "role": "user",
            "content": [
                image("data:image/png;base64,AAAA"),
                text("Compare this "),
                image("https://example.com/b.png"),
                text(" with that."),
            ],
        }
    )
    assert message.as_template_input(MARKER) == {
        "role": "user",
        "content": f"{MARKER}Compare this {MARKER} with that.",
    }
    assert message.as_template_input("[IMG]")["content"] == "[IMG]Compare this [IMG] with that."


def test_without_a_marker_an_image_is_refused_not_dropped() -> None:
    message = ChatMessage.model_validate(
        {"role": "user", "content": [text("What is it?"), image("data:image/png;base64,AAAA")]}
    )
    with pytest.raises(UnsupportedFeatureError) as refused:
        message.as_template_input()
    assert refused.value.code == "image_not_supported" and refused.value.param == "messages"
    # Text alone needs no marker.
    plain = ChatMessage.model_validate({"role": "user", "content": [text("a"), text("b")]})
    assert plain.as_template_input() == {"role": "user", "content": "ab"}


def test_image_urls_lists_each_url_in_order() -> None:
    request = core(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [image("https://a.example/1.png", "low"), text("1")]},
                {"role": "assistant", "content": "One."},
                {
                    "role": "user",
                    "content": [
                        text("2 and 3:"),
                        image("https://a.example/2.png"),
                        {"type": "image_url", "image_url": "data:image/gif;base64,R0lG"},
                    ],
                },
            ],
        }
    )
    assert request.image_urls() == [
        "https://a.example/1.png",
        "https://a.example/2.png",
        "data:image/gif;base64,R0lG",
    ]


def test_a_request_without_images_has_none() -> None:
    request = core({"model": "m", "messages": [{"role": "user", "content": [text("Hi")]}]})
    assert not request.has_images() and request.image_urls() == []


# -- Anthropic -------------------------------------------------------------------------------------
# Anthropic's vision guide: a base64 image, then a URL image, each followed by its question.
ANTHROPIC_BASE64_EXAMPLE = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {
                        "type": "base64",
                        "media_type": "image/jpeg",
                        "data": ANTHROPIC_BASE64,
                    },
                },
                {"type": "text", "text": "Describe this image."},
            ],
        }
    ],
}
ANTHROPIC_URL_EXAMPLE = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": {"type": "url", "url": ANT}},
                {"type": "text", "text": "Describe this image."},
            ],
        }
    ],
}


def anthropic(payload: dict[str, Any]) -> dict[str, Any]:
    return openai_request(validate(MessagesRequest, payload))


def test_anthropics_base64_image_block_becomes_a_data_url() -> None:
    sent = anthropic(ANTHROPIC_BASE64_EXAMPLE)
    url = f"data:image/jpeg;base64,{ANTHROPIC_BASE64}"
    assert sent["messages"] == [
        {"role": "user", "content": [image(url), text("Describe this image.")]}
    ]
    request = core(sent)
    assert request.image_urls() == [url]
    assert rendered(request) == [f"{MARKER}Describe this image."]


def test_anthropics_url_image_block_keeps_its_url() -> None:
    sent = anthropic(ANTHROPIC_URL_EXAMPLE)
    assert sent["messages"] == [
        {"role": "user", "content": [image(ANT), text("Describe this image.")]}
    ]
    assert core(sent).image_urls() == [ANT]


def test_anthropic_images_keep_their_place_among_the_text() -> None:
    blocks = [
        {"type": "text", "text": "Image 1:"},
        {"type": "image", "source": {"type": "url", "url": "https://a.example/1.png"}},
        {"type": "text", "text": "Image 2:"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/webp", "data": WEBP_B64},
        },
        {"type": "text", "text": "How are they different?"},
    ]
    payload = {**ANTHROPIC_URL_EXAMPLE, "messages": [{"role": "user", "content": blocks}]}
    request = core(anthropic(payload))
    assert request.image_urls() == ["https://a.example/1.png", f"data:image/webp;base64,{WEBP_B64}"]
    assert rendered(request) == [f"Image 1:{MARKER}Image 2:{MARKER}How are they different?"]


def test_images_in_a_tool_result_move_to_the_user_turn_after_the_results() -> None:
    screenshot = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": OLLAMA_DOC_IMAGE},
    }
    payload: dict[str, Any] = {
        **ANTHROPIC_URL_EXAMPLE,
        "messages": [
            {"role": "user", "content": "Take two screenshots."},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}},
                    {"type": "tool_use", "id": "toolu_2", "name": "screenshot", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "Screen 1:"}, screenshot],
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "image", "source": {"type": "url", "url": ANT}}],
                    },
                    {"type": "text", "text": "What changed?"},
                ],
            },
        ],
    }
    sent = anthropic(payload)["messages"]
    png = f"data:image/png;base64,{OLLAMA_DOC_IMAGE}"
    assert sent[2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Screen 1:"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": ""},
        {"role": "user", "content": [image(png), image(ANT), text("What changed?")]},
    ]
    assert core({"model": "m", "messages": sent}).image_urls() == [png, ANT]
    # With nothing besides the results, the images still get a user turn of their own.
    only_results = payload["messages"][2]["content"][:2]
    alone = anthropic(
        {
            **payload,
            "messages": [*payload["messages"][:2], {"role": "user", "content": only_results}],
        }
    )["messages"]
    assert alone[-1] == {"role": "user", "content": [image(png), image(ANT)]}


@pytest.mark.parametrize(
    ("source", "param", "message"),
    [
        ({"type": "file", "file_id": "file_011"}, "messages.0.content.0.source", "Files API"),
        (
            {"type": "base64", "media_type": "image/bmp", "data": "Qk0="},
            "messages.0.content.0.source.media_type",
            "image/jpeg, image/png, image/gif, image/webp",
        ),
        (
            {"type": "base64", "media_type": "image/png"},
            "messages.0.content.0.source.data",
            "base64-encoded",
        ),
        ({"type": "url", "url": ""}, "messages.0.content.0.source.url", "must be a URL"),
        ({"type": "path", "path": "/etc/passwd"}, "messages.0.content.0.source.type", "'url'"),
        (None, "messages.0.content.0.source", "needs a source"),
    ],
)
def test_a_bad_anthropic_image_source_is_refused_in_anthropics_shape(
    source: dict[str, Any] | None, param: str, message: str
) -> None:
    block: dict[str, Any] = {"type": "image", "source": source}
    payload = {**ANTHROPIC_URL_EXAMPLE, "messages": [{"role": "user", "content": [block]}]}
    with pytest.raises(APIError, match=message) as refused:
        anthropic(payload)
    assert refused.value.status_code == 400 and refused.value.param == param
    assert anthropic_error_object(refused.value)["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("where", ["assistant", "system"])
def test_an_anthropic_image_outside_a_user_turn_is_refused(where: str) -> None:
    block = {"type": "image", "source": {"type": "url", "url": ANT}}
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Hi"}]
    fields: dict[str, Any] = {}
    if where == "assistant":
        messages.append({"role": "assistant", "content": [block]})
    else:
        fields["system"] = [block]
    with pytest.raises(APIError, match="image blocks are accepted in user turns"):
        anthropic({**ANTHROPIC_URL_EXAMPLE, "messages": messages, **fields})


# -- Ollama ----------------------------------------------------------------------------------------
# Ollama's API docs: "Chat request (with images)" and "Request (with images)" for generate.
OLLAMA_CHAT_EXAMPLE = {
    "model": "llava",
    "messages": [
        {"role": "user", "content": "what is in this image?", "images": [OLLAMA_DOC_IMAGE]}
    ],
}
OLLAMA_GENERATE_EXAMPLE = {
    "model": "llava",
    "prompt": "What is in this picture?",
    "stream": False,
    "images": [OLLAMA_DOC_IMAGE],
}


def test_ollama_chat_images_become_data_urls_before_the_text() -> None:
    call = chat_call(OLLAMA_CHAT_EXAMPLE)
    png = f"data:image/png;base64,{OLLAMA_DOC_IMAGE}"
    assert call.payload["messages"] == [
        {"role": "user", "content": [image(png), text("what is in this image?")]}
    ]
    request = core(call.payload)
    assert request.image_urls() == [png]
    assert rendered(request) == [f"{MARKER}what is in this image?"]


def test_ollama_generate_images_become_a_user_turns_images() -> None:
    call = generate_call(OLLAMA_GENERATE_EXAMPLE)
    png = f"data:image/png;base64,{OLLAMA_DOC_IMAGE}"
    assert call.path == "/v1/chat/completions"
    assert call.payload["messages"] == [
        {"role": "user", "content": [image(png), text("What is in this picture?")]}
    ]
    assert core(call.payload).image_urls() == [png]
    # Images without a prompt are a question about them, not a request to load the model.
    no_prompt = {"model": "llava", "images": [OLLAMA_DOC_IMAGE]}
    assert not loads_only(no_prompt)
    assert generate_call(no_prompt).payload["messages"] == [
        {"role": "user", "content": [image(png)]}
    ]


@pytest.mark.parametrize(
    ("encoded", "media_type"),
    [
        (OLLAMA_DOC_IMAGE, "image/png"),
        (JPEG_B64, "image/jpeg"),
        (GIF_B64, "image/gif"),
        (WEBP_B64, "image/webp"),
    ],
)
def test_ollama_images_are_named_by_their_first_bytes(encoded: str, media_type: str) -> None:
    assert image_media_type(base64.b64decode(encoded[:16])) == media_type
    messages = openai_chat_messages([{"role": "user", "content": "", "images": [encoded]}])
    assert messages == [{"role": "user", "content": [image(f"data:{media_type};base64,{encoded}")]}]


def test_ollama_images_fill_img_placeholders_first_then_go_before_the_text() -> None:
    images = [JPEG_B64, GIF_B64, OLLAMA_DOC_IMAGE]
    jpeg, gif, png = (
        f"data:image/jpeg;base64,{JPEG_B64}",
        f"data:image/gif;base64,{GIF_B64}",
        f"data:image/png;base64,{OLLAMA_DOC_IMAGE}",
    )
    content = "Is [img] the same as [img]?"
    messages = openai_chat_messages([{"role": "user", "content": content, "images": images}])
    assert messages[0]["content"] == [
        image(png),  # no placeholder left for the third: before the text, as in Ollama
        text("Is "),
        image(jpeg),
        text(" the same as "),
        image(gif),
        text("?"),
    ]
    fewer = openai_chat_messages(
        [{"role": "user", "content": "[img] or [img]", "images": [GIF_B64]}]
    )
    assert fewer[0]["content"] == [image(gif), text(" or [img]")]


def test_ollama_images_wrapped_in_lines_are_joined() -> None:
    wrapped = OLLAMA_DOC_IMAGE[:40] + "\n" + OLLAMA_DOC_IMAGE[40:]
    messages = openai_chat_messages([{"role": "user", "content": "?", "images": [wrapped]}])
    assert messages[0]["content"][0] == image(f"data:image/png;base64,{OLLAMA_DOC_IMAGE}")


def test_images_on_an_ollama_tool_message_go_to_the_next_user_turn() -> None:
    messages = openai_chat_messages(
        [
            {"role": "user", "content": "Screenshot, please."},
            {"role": "assistant", "tool_calls": [{"function": {"name": "shot", "arguments": {}}}]},
            {"role": "tool", "tool_name": "shot", "content": "done", "images": [JPEG_B64]},
            {"role": "user", "content": "What is on it?"},
        ]
    )
    jpeg = f"data:image/jpeg;base64,{JPEG_B64}"
    assert messages[2] == {
        "role": "tool",
        "content": "done",
        "tool_call_id": messages[1]["tool_calls"][0]["id"],
    }
    assert messages[3] == {"role": "user", "content": [image(jpeg), text("What is on it?")]}
    assert core({"model": "m", "messages": messages}).image_urls() == [jpeg]


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (["aGk="], "is not a PNG, JPEG, WebP or GIF image"),  # "hi"
        (["not base64!"], "is not base64"),
        ([""], "must be a base64-encoded image"),
        ([42], "must be a base64-encoded image"),
        ("iVBORw0KGgo", "must be a list of base64 images"),
    ],
)
def test_a_bad_ollama_image_is_refused_in_ollamas_shape(images: Any, message: str) -> None:
    with pytest.raises(APIError, match=message) as refused:
        chat_call({"model": "m", "messages": [{"role": "user", "content": "?", "images": images}]})
    assert refused.value.status_code == 400
    assert list(ollama_error_object(refused.value)) == ["error"]
    with pytest.raises(APIError, match=message):
        generate_call({"model": "m", "prompt": "?", "images": images})


@pytest.mark.parametrize("role", ["system", "assistant"])
def test_ollama_images_outside_user_and_tool_messages_are_refused(role: str) -> None:
    with pytest.raises(APIError, match="images are accepted on user and tool messages only"):
        openai_chat_messages([{"role": role, "content": "x", "images": [JPEG_B64]}])


@pytest.mark.parametrize("fields", [{"raw": True}, {"suffix": "}"}])
def test_ollama_raw_and_suffix_prompts_refuse_images(fields: dict[str, Any]) -> None:
    with pytest.raises(APIError, match="images need the model's chat template"):
        generate_call({**OLLAMA_GENERATE_EXAMPLE, **fields})


# -- the Responses API -----------------------------------------------------------------------------
# OpenAI's vision guide, "Analyze images" (Responses): an image by URL, and one as base64.
RESPONSES_URL_EXAMPLE = {
    "model": "gpt-4.1-mini",
    "input": [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "what's in this image?"},
                {"type": "input_image", "image_url": BOARDWALK},
            ],
        }
    ],
}
RESPONSES_BASE64_EXAMPLE = {
    "model": "gpt-4.1",
    "input": [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "what's in this image?"},
                {
                    "type": "input_image",
                    "image_url": f"data:image/jpeg;base64,{ANTHROPIC_BASE64}",
                    "detail": "high",
                },
            ],
        }
    ],
}


def responses(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return input_messages(validate(ResponsesRequest, payload))


def test_responses_input_images_become_image_parts() -> None:
    assert responses(RESPONSES_URL_EXAMPLE) == [
        {"role": "user", "content": [text("what's in this image?"), image(BOARDWALK)]}
    ]
    url = f"data:image/jpeg;base64,{ANTHROPIC_BASE64}"
    messages = responses(RESPONSES_BASE64_EXAMPLE)
    assert messages == [
        {"role": "user", "content": [text("what's in this image?"), image(url, "high")]}
    ]
    request = core({"model": "m", "messages": messages})
    assert request.image_urls() == [url]
    assert rendered(request) == [f"what's in this image?{MARKER}"]


def test_images_in_a_function_call_output_go_to_the_next_user_turn() -> None:
    payload = {
        "model": "m",
        "input": [
            {"type": "function_call", "call_id": "call_1", "name": "shot", "arguments": "{}"},
            {
                "type": "function_call_output",
                "call_id": "call_1",
                "output": [
                    {"type": "input_text", "text": "The screen:"},
                    {"type": "input_image", "image_url": BOARDWALK, "detail": "low"},
                ],
            },
        ],
    }
    assert responses(payload)[1:] == [
        {"role": "tool", "tool_call_id": "call_1", "content": "The screen:"},
        {"role": "user", "content": [image(BOARDWALK, "low")]},
    ]


@pytest.mark.parametrize(
    ("part", "param", "message"),
    [
        ({"type": "input_image", "file_id": "file-123"}, "input.0.content.0.file_id", "file_id"),
        ({"type": "input_image"}, "input.0.content.0.image_url", "must be a URL"),
        (
            {"type": "input_image", "image_url": BOARDWALK, "detail": "max"},
            "input.0.content.0.detail",
            "auto, low, high, original",
        ),
    ],
)
def test_a_bad_input_image_is_refused(part: dict[str, Any], param: str, message: str) -> None:
    payload = {"model": "m", "input": [{"role": "user", "content": [part]}]}
    with pytest.raises(APIError, match=message) as refused:
        responses(payload)
    assert refused.value.status_code == 400 and refused.value.param == param


@pytest.mark.parametrize("role", ["assistant", "system", "developer"])
def test_a_responses_image_outside_a_user_message_is_refused(role: str) -> None:
    part = {"type": "input_image", "image_url": BOARDWALK}
    with pytest.raises(APIError, match="images are accepted in user messages only"):
        responses({"model": "m", "input": [{"role": role, "content": [part]}]})


# -- lifting, on its own ---------------------------------------------------------------------------
def test_lifted_images_get_a_user_turn_before_an_assistant_turn() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "tool", "tool_call_id": "a", "content": [text("x"), image("data:1")]},
        {"role": "tool", "tool_call_id": "b", "content": [image("data:2")]},
        {"role": "assistant", "content": "ok"},
    ]
    assert lift_tool_images(messages) == [
        {"role": "tool", "tool_call_id": "a", "content": "x"},
        {"role": "tool", "tool_call_id": "b", "content": ""},
        {"role": "user", "content": [image("data:1"), image("data:2")]},
        {"role": "assistant", "content": "ok"},
    ]
