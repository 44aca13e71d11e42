"""Reading tool calls out of model output, in each family's syntax, whole and streamed."""

from __future__ import annotations

import json

import pytest

from localserve.hub.templates import (
    BARE_JSON,
    COMMAND_R,
    COMMAND_R_PLUS,
    DEEPSEEK,
    GEMMA,
    HERMES,
    MISTRAL,
    TOOL_CALL_TOKEN,
    ToolSyntax,
    template_supports_tools,
    tool_syntax,
)
from localserve.runner.tools import (
    ToolCall,
    ToolCallReader,
    forced_call_schema,
    parse_tool_calls,
)
from tests.helpers.model_files import TEMPLATES

NAMES = {"get_weather", "get_time"}
WEATHER = {"city": "Paris", "unit": "celsius"}

# What models of each family really write when they call get_weather.
OUTPUTS = [
    (
        HERMES,
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", '
        '"unit": "celsius"}}\n</tool_call>',
    ),
    (
        HERMES,
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "<parameter=unit>\ncelsius\n</parameter>\n</function>\n</tool_call>",
    ),
    (
        MISTRAL,
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]',
    ),
    (MISTRAL, '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "celsius"}'),
    (
        TOOL_CALL_TOKEN,
        '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris", '
        '"unit": "celsius"}}]<|/tool_call|>',
    ),
    (BARE_JSON, '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}'),
    (
        BARE_JSON,
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}',
    ),
    (
        BARE_JSON,
        '```json\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", '
        '\\"unit\\": \\"celsius\\"}"}\n```',
    ),
    (
        DEEPSEEK,  # R1 and its distills, V3
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
        '{"city": "Paris", "unit": "celsius"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>'
        "<｜end▁of▁sentence｜>",
    ),
    (
        DEEPSEEK,  # V3.1
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>"
        '{"city": "Paris", "unit": "celsius"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
    ),
    (
        GEMMA,
        '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>,unit:<|"|>celsius<|"|>}<tool_call|>',
    ),
    (
        COMMAND_R,
        '<|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": "get_weather", '
        '"parameters": {"city": "Paris", "unit": "celsius"}}\n]<|END_ACTION|>',
    ),
    (
        COMMAND_R_PLUS,
        'Action: ```json\n[\n    {\n        "tool_name": "get_weather",\n        "parameters": '
        '{"city": "Paris", "unit": "celsius"}\n    }\n]\n```',
    ),
]

# Prose, then calls to get_weather (city Paris) and get_time (zone CET), in each new syntax.
TWO_CALLS = {
    "deepseek-r1": (
        DEEPSEEK,
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
        '{"city": "Paris"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>'
        'get_time\n```json\n{"zone": "CET"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
    ),
    "deepseek-v3.1": (
        DEEPSEEK,
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>"
        '{"city": "Paris"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>'
        '{"zone": "CET"}<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
    ),
    "gemma": (
        GEMMA,
        '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>'
        '<|tool_call>call:get_time{zone:<|"|>CET<|"|>}<tool_call|>',
    ),
    "command-r": (
        COMMAND_R,
        '<|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": "get_weather", '
        '"parameters": {"city": "Paris"}},\n    {"tool_call_id": "1", "tool_name": "get_time", '
        '"parameters": {"zone": "CET"}}\n]<|END_ACTION|>',
    ),
    "command-r-plus": (
        COMMAND_R_PLUS,
        'Action: ```json\n[\n    {"tool_name": "get_weather", "parameters": {"city": "Paris"}},\n'
        '    {"tool_name": "get_time", "parameters": {"zone": "CET"}}\n]\n```',
    ),
}

# Text in each new syntax that is not a well-formed call to a known tool.
NOT_CALLS = [
    (
        DEEPSEEK,
        '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{"ci',
    ),
    (
        DEEPSEEK,
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>launch_rockets<｜tool▁sep｜>{}<｜tool▁call▁end｜>",
    ),
    (
        DEEPSEEK,
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_time<｜tool▁sep｜>now<｜tool▁call▁end｜>",
    ),
    (GEMMA, '<|tool_call>call:get_weather{city:<|"|>Paris}<tool_call|>'),  # the string never ends
    (GEMMA, "<|tool_call>call:get_weather{city:Paris}<tool_call|>"),  # a string without quotes
    (GEMMA, "<|tool_call>call:launch_rockets{}<tool_call|>"),
    (
        COMMAND_R,
        '<|START_ACTION|>[{"tool_name": "get_weather", "parameters": "Paris"}]<|END_ACTION|>',
    ),
    (COMMAND_R_PLUS, 'Action: ```json\n[{"tool_name": "directly-answer", "parameters": {}}]\n```'),
    (COMMAND_R_PLUS, "Action: none is needed here."),
]


def read_all(syntax: ToolSyntax, text: str, piece_size: int) -> tuple[str, str, list[ToolCall]]:
    """Feed ``text`` in pieces; the content passed on at once, the rest, and the calls."""
    reader = ToolCallReader(syntax, NAMES)
    streamed = "".join(
        reader.feed(text[i : i + piece_size]) for i in range(0, len(text), piece_size)
    )
    rest, calls = reader.finish()
    return streamed, rest, calls


@pytest.mark.parametrize(("syntax", "text"), OUTPUTS)
@pytest.mark.parametrize("piece_size", [1, 3, 1000])
def test_each_familys_calls_are_read(syntax, text: str, piece_size: int) -> None:
    streamed, rest, calls = read_all(syntax, text, piece_size)
    assert streamed == "" and rest.strip() in ("", "```")
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", WEATHER)]
    assert calls[0].id.startswith("call_")


@pytest.mark.parametrize("piece_size", [1, 2, 1000])
def test_prose_before_a_call_streams_and_parallel_calls_are_kept(piece_size: int) -> None:
    text = (
        "Let me check both.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>'
    )
    streamed, rest, calls = read_all(HERMES, text, piece_size)
    assert streamed == "Let me check both.\n" and rest == ""
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2


@pytest.mark.parametrize(("syntax", "text"), TWO_CALLS.values(), ids=TWO_CALLS.keys())
@pytest.mark.parametrize("piece_size", [1, 3, 1000])
def test_each_new_familys_prose_and_two_calls_are_read(
    syntax: ToolSyntax, text: str, piece_size: int
) -> None:
    streamed, rest, calls = read_all(syntax, "Let me check both.\n" + text, piece_size)
    assert streamed == "Let me check both.\n" and rest == ""
    read = [(c.name, json.loads(c.arguments)) for c in calls]
    assert read == [("get_weather", {"city": "Paris"}), ("get_time", {"zone": "CET"})]


@pytest.mark.parametrize(("syntax", "text"), NOT_CALLS)
@pytest.mark.parametrize("piece_size", [1, 3, 1000])
def test_what_is_not_a_call_in_a_new_syntax_comes_back_as_content(
    syntax: ToolSyntax, text: str, piece_size: int
) -> None:
    streamed, rest, calls = read_all(syntax, "Sure. " + text, piece_size)
    assert calls == [] and streamed + rest == "Sure. " + text


def test_gemma_arguments_become_json() -> None:
    text = (
        '<|tool_call>call:get_weather{city:<|"|>Paris, "FR": {x}<|"|>,days:3,ratio:-1.5e2,'
        'flags:[true,false,null],where:{lat:48.85,tags:[]},empty:<|"|><|"|>}<tool_call|>'
    )
    parsed = parse_tool_calls(text, GEMMA, NAMES)
    assert parsed is not None
    assert json.loads(parsed[0][0].arguments) == {
        "city": 'Paris, "FR": {x}',
        "days": 3,
        "ratio": -150.0,
        "flags": [True, False, None],
        "where": {"lat": 48.85, "tags": []},
        "empty": "",
    }


@pytest.mark.parametrize(
    "syntax",
    [HERMES, MISTRAL, TOOL_CALL_TOKEN, BARE_JSON, DEEPSEEK, GEMMA, COMMAND_R, COMMAND_R_PLUS],
)
@pytest.mark.parametrize("piece_size", [1, 4, 1000])
def test_plain_answers_pass_through_whole(syntax, piece_size: int) -> None:
    text = "The weather is fine: <tool or not> [maybe] {braces} too."
    streamed, rest, calls = read_all(syntax, text, piece_size)
    assert streamed + rest == text and calls == []


@pytest.mark.parametrize(
    "text",
    [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par',  # cut by max_tokens
        '<tool_call>\n{"name": "launch_rockets", "arguments": {}}\n</tool_call>',  # unknown tool
        '<tool_call>\n{"name": "get_weather", "arguments": "not json"}\n</tool_call>',
        "<tool_call> I was going to call something",
    ],
)
def test_text_that_is_not_a_well_formed_call_comes_back_as_content(text: str) -> None:
    streamed, rest, calls = read_all(HERMES, "Sure. " + text, 5)
    assert calls == [] and streamed + rest == "Sure. " + text


def test_a_json_answer_that_is_not_a_call_is_content() -> None:
    text = '{"answer": 42}'
    streamed, rest, calls = read_all(BARE_JSON, text, 3)
    assert calls == [] and streamed + rest == text


def test_parallel_off_keeps_the_first_call() -> None:
    reader = ToolCallReader(MISTRAL, NAMES, parallel=False)
    reader.feed('[TOOL_CALLS][{"name": "get_time", "arguments": {}}, ')
    reader.feed('{"name": "get_weather", "arguments": {"city": "Oslo"}}]')
    _, calls = reader.finish()
    assert [c.name for c in calls] == ["get_time"]


def test_parse_reports_the_text_after_the_calls() -> None:
    parsed = parse_tool_calls(
        '<tool_call>{"name": "get_time", "arguments": {}}</tool_call> Done.', HERMES, NAMES
    )
    assert parsed is not None
    calls, trailing = parsed
    assert [c.name for c in calls] == ["get_time"] and trailing == "Done."


def test_templates_tell_tool_support_and_syntax() -> None:
    qwen = (TEMPLATES / "qwen2.5-instruct.jinja").read_text()
    llama = (TEMPLATES / "llama3.1-instruct.jinja").read_text()
    plain = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}"
    assert tool_syntax(qwen) == HERMES and tool_syntax(llama) == BARE_JSON
    assert template_supports_tools(qwen) and template_supports_tools(llama)
    assert not template_supports_tools(plain) and tool_syntax(plain) is None
    mistral = "{% if tools %}[AVAILABLE_TOOLS]{{ tools|tojson }}[/AVAILABLE_TOOLS]{% endif %}"
    assert tool_syntax(mistral + "[TOOL_CALLS]") == MISTRAL
    assert not template_supports_tools("{% if %}")  # a broken template takes nothing


@pytest.mark.parametrize(
    ("template_file", "syntax"),
    [
        ("qwen2.5-instruct.jinja", HERMES),
        ("llama3.1-instruct.jinja", BARE_JSON),
        ("llama-cpp-deepseek-r1.jinja", DEEPSEEK),
        ("google-gemma-4-31B-it.jinja", GEMMA),
        ("CohereForAI-c4ai-command-r-plus-tool_use.jinja", COMMAND_R_PLUS),
        ("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", COMMAND_R),
        # DeepSeek's own templates and Gemma 2's have no place for tools.
        ("deepseek-ai-DeepSeek-V3.1.jinja", None),
        ("google-gemma-2-2b-it.jinja", None),
    ],
)
def test_real_templates_tell_their_syntax(template_file: str, syntax: ToolSyntax | None) -> None:
    assert tool_syntax((TEMPLATES / template_file).read_text()) == syntax


@pytest.mark.parametrize(
    ("template_file", "syntax"),
    [
        ("llama-cpp-deepseek-r1.jinja", DEEPSEEK),
        ("deepseek-ai-DeepSeek-V3.1.jinja", DEEPSEEK),
        ("google-gemma-4-31B-it.jinja", GEMMA),
        ("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", COMMAND_R),
        ("CohereForAI-c4ai-command-r-plus-tool_use.jinja", COMMAND_R_PLUS),
    ],
)
def test_every_marker_is_written_as_the_family_writes_it(
    template_file: str, syntax: ToolSyntax
) -> None:
    template = (TEMPLATES / template_file).read_text()
    assert syntax.markers and all(marker in template for marker in syntax.markers)


def test_each_syntax_names_its_markers() -> None:
    assert HERMES.markers == ("<tool_call>", "</tool_call>")
    assert MISTRAL.markers == ("[TOOL_CALLS]",)
    assert TOOL_CALL_TOKEN.markers == ("<|tool_call|>", "<|/tool_call|>")
    assert BARE_JSON.markers == ("<|python_tag|>",)
    assert GEMMA.markers == ("<|tool_call>", "<tool_call|>", '<|"|>')
    assert len(DEEPSEEK.markers) == 5 and "<｜tool▁sep｜>" in DEEPSEEK.markers


def test_the_forced_call_schema_pins_the_name_and_the_arguments() -> None:
    tools = [
        {"type": "function", "function": {"name": "get_time"}},
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
    ]
    one = forced_call_schema(tools, "get_weather")
    assert one["properties"]["name"] == {"const": "get_weather"}
    assert one["properties"]["arguments"]["properties"] == {"city": {"type": "string"}}
    anyone = forced_call_schema(tools, None)
    names = [option["properties"]["name"]["const"] for option in anyone["oneOf"]]
    assert names == ["get_time", "get_weather"]
    assert anyone["oneOf"][0]["properties"]["arguments"] == {"type": "object"}
