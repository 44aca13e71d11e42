"""The runner's stream chunks: a text chunk rendered from its per-response template is the
same bytes as the whole chunk rendered as JSON, whatever the text holds."""

from __future__ import annotations

import json

import pytest

from localserve.runner.openai_format import TEXT_MARK, ResponseShape

TEXTS = [
    "",
    "Hello",
    " world",
    'a "quoted" \\ back\\slash',
    "line\nbreak\ttab",
    "é 日本 🐉",
    "\u2028",
    TEXT_MARK,
]


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("text", TEXTS)
def test_a_text_chunk_from_the_template_is_the_whole_chunk(chat: bool, text: str) -> None:
    shape = ResponseShape("smollm2-135m-instruct", chat)
    assert shape.text_chunk(text) == shape._text_chunk(text)


@pytest.mark.parametrize("chat", [True, False])
def test_a_text_chunk_is_one_sse_event_carrying_the_text(chat: bool) -> None:
    shape = ResponseShape("smollm2-135m-instruct", chat, id="x-1", created=7)
    chunk = shape.text_chunk('say "hi" 🐉')
    assert chunk.startswith(b"data: ") and chunk.endswith(b"\n\n") and chunk.count(b"\n") == 2
    body = json.loads(chunk[len(b"data: ") :])
    assert (body["id"], body["created"], body["model"]) == ("x-1", 7, "smollm2-135m-instruct")
    choice = body["choices"][0]
    assert (choice["delta"]["content"] if chat else choice["text"]) == 'say "hi" 🐉'
    assert choice["finish_reason"] is None
