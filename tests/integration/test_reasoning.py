"""Thinking models through the three protocols and the Responses API, with real generation
on copies of the starter model that carry real templates: a DeepSeek-R1 distill's (which opens
``<think>`` in the prompt), Qwen3's (``enable_thinking``) and gpt-oss's (harmony channels).

The 135M starter never thinks on its own. The R1 template opens the thought for it, and the
engine's thinking budget closes it: what comes before the closer is thought, what follows is
the answer, so both must be there and apart. The daemon's ``thinking_budget`` setting is 8
tokens; requests that carry their own budget use a different number, to show theirs wins.
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import ollama
import openai
import pytest

from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess
from tests.helpers.imported_models import ModelImport, daemon_with_models
from tests.helpers.model_files import templated_starter

R1 = "r1-distill"
QWEN3 = "qwen3"
GPT_OSS = "gpt-oss"
SETTING_BUDGET = 8
QUESTION = [{"role": "user", "content": "What is 2+2?"}]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    home = tmp_path_factory.mktemp("reasoning-daemon")
    models = [
        ModelImport(name, templated_starter(home, name, template))
        for name, template in [
            (R1, "deepseek-r1-distill-qwen.jinja"),
            (QWEN3, "qwen3.jinja"),
            (GPT_OSS, "gpt-oss.jinja"),
        ]
    ]
    env = {"LOCALSERVE_THINKING_BUDGET": str(SETTING_BUDGET)}
    with daemon_with_models(home, models, env) as running:
        yield running


def apart(reasoning: str, content: str) -> None:
    """Both parts are there, the thought carries no marker, and the answer neither opens one
    nor starts with the closer that ended the thought. A ``</think>`` later in the answer is
    the 135M model's own text: it writes one there, greedily, on llama.cpp's AMX kernels."""
    assert reasoning.strip() and content.strip()
    for marker in ("<think>", "</think>"):
        assert marker not in reasoning
    assert "<think>" not in content
    assert not content.lstrip().startswith("</think>")


def test_openai_chat_keeps_the_thought_apart(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=R1,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=40,
        temperature=0,
        extra_body={"thinking_budget_tokens": 5},
    )
    message = reply.choices[0].message
    reasoning = (message.model_extra or {}).get("reasoning_content", "")
    apart(reasoning, message.content or "")
    details = reply.usage.completion_tokens_details if reply.usage else None
    assert details is not None and details.reasoning_tokens == 5  # the request's budget


def test_openai_stream_sends_the_thought_first(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=R1,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=40,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    kinds: list[str] = []
    reasoning = content = ""
    reasoning_tokens = None
    for chunk in stream:
        if chunk.usage and chunk.usage.completion_tokens_details:
            reasoning_tokens = chunk.usage.completion_tokens_details.reasoning_tokens
        for choice in chunk.choices:
            piece = (choice.delta.model_extra or {}).get("reasoning_content")
            if piece:
                kinds.append("reasoning")
                reasoning += piece
            if choice.delta.content:
                kinds.append("content")
                content += choice.delta.content
    apart(reasoning, content)
    assert kinds == sorted(kinds, key=lambda kind: kind == "content")  # thought, then answer
    assert reasoning_tokens == SETTING_BUDGET  # the daemon's setting


def test_reasoning_format_none_keeps_the_thought_inline(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=R1,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=40,
        temperature=0,
        extra_body={"reasoning_format": "none"},
    )
    message = reply.choices[0].message
    assert "reasoning_content" not in (message.model_extra or {})
    assert "</think>" in (message.content or "")


def test_reasoning_effort_none_closes_the_thought_the_template_opened(
    client: openai.OpenAI,
) -> None:
    reply = client.chat.completions.create(
        model=R1,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=20,
        temperature=0,
        reasoning_effort="none",  # type: ignore[arg-type]
    )
    message = reply.choices[0].message
    assert not (message.model_extra or {}).get("reasoning_content")
    assert message.content and "</think>" not in message.content


def test_anthropic_thinking_blocks(daemon: DaemonProcess) -> None:
    with anthropic.Anthropic(base_url=daemon.url, api_key=daemon.admin_key, max_retries=0) as sdk:
        message = sdk.messages.create(
            model=R1,
            max_tokens=40,
            messages=QUESTION,  # type: ignore[arg-type]
            extra_body={"temperature": 0},
            thinking={"type": "enabled", "budget_tokens": 6},
        )
        kinds = [block.type for block in message.content]
        assert kinds == ["thinking", "text"]
        thinking, text = message.content
        assert thinking.type == "thinking" and text.type == "text"
        apart(thinking.thinking, text.text)
        assert thinking.signature

        with sdk.messages.stream(
            model=R1,
            max_tokens=40,
            messages=QUESTION,  # type: ignore[arg-type]
            extra_body={"temperature": 0},
            thinking={"type": "enabled", "budget_tokens": 6},
        ) as stream:
            final = stream.get_final_message()
        assert [block.type for block in final.content] == ["thinking", "text"]

        plain = sdk.messages.create(
            model=R1,
            max_tokens=20,
            messages=QUESTION,  # type: ignore[arg-type]
            extra_body={"temperature": 0},
        )
        assert [block.type for block in plain.content] == ["text"]


@pytest.mark.parametrize("stream", [False, True])
def test_ollama_think(daemon: DaemonProcess, stream: bool) -> None:
    with ollama.Client(host=daemon.url, headers=daemon.headers()) as sdk:
        options = {"num_predict": 40, "temperature": 0}
        if stream:
            thinking = content = ""
            for part in sdk.chat(R1, QUESTION, think=True, stream=True, options=options):
                thinking += part.message.thinking or ""
                content += part.message.content or ""
        else:
            reply = sdk.chat(R1, QUESTION, think=True, options=options)
            thinking, content = reply.message.thinking or "", reply.message.content or ""
        apart(thinking, content)
        quiet = sdk.chat(R1, QUESTION, think=False, options={"num_predict": 20, "temperature": 0})
        assert not quiet.message.thinking and quiet.message.content


def test_think_false_reaches_the_template(daemon: DaemonProcess) -> None:
    """Qwen3's template writes an empty, closed thought when enable_thinking is false: the
    prompt grows by those tokens."""
    with ollama.Client(host=daemon.url, headers=daemon.headers()) as sdk:
        options = {"num_predict": 1}
        thinking = sdk.chat(QWEN3, QUESTION, think=True, options=options)
        quiet = sdk.chat(QWEN3, QUESTION, think=False, options=options)
    assert thinking.prompt_eval_count and quiet.prompt_eval_count
    assert quiet.prompt_eval_count > thinking.prompt_eval_count


def test_responses_api_reasoning_item(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=R1,
        input="What is 2+2?",
        max_output_tokens=40,
        temperature=0,
        reasoning={"effort": "high"},
    )
    kinds = [item.type for item in response.output]
    assert kinds == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.content
    apart(reasoning.content[0].text, response.output_text)
    assert response.usage and response.usage.output_tokens_details.reasoning_tokens > 0


def test_models_report_thinking(daemon: DaemonProcess) -> None:
    with ollama.Client(host=daemon.url, headers=daemon.headers()) as sdk:
        capabilities = {name: sdk.show(name).capabilities or [] for name in (R1, GPT_OSS)}
        starter = sdk.show(STARTER_MODEL).capabilities or []
    assert all("thinking" in found for found in capabilities.values())
    assert "thinking" not in starter
