"""`localserve chat`'s parts without a daemon: commands, multi-line input, settings, how an
answer is shown, the stream's lines and the prompt loop (tests/integration/test_chat_cli.py
runs the real thing in a pseudo-terminal)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field

import httpx
import pytest

from localserve.cli.chat import (
    DIM,
    HELP,
    RESET,
    AnswerFailed,
    AnswerRenderer,
    ChatCommandError,
    ChatLoop,
    ChatSettings,
    Command,
    Conversation,
    DaemonChat,
    Delta,
    Entry,
    InputAssembler,
    Message,
    Reply,
    apply_set,
    describe_settings,
    parse_command,
    preloads,
    read_deltas,
    show_answer,
    wait_showing,
)
from localserve.daemon.state import DaemonState

# -- commands ----------------------------------------------------------------------------------


def test_a_line_without_a_slash_is_a_message() -> None:
    assert parse_command("hello /bye") is None


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("/bye", Command("bye")),
        ("/BYE", Command("bye")),
        ("/clear", Command("clear")),
        ("/?", Command("help")),
        ("/help", Command("help")),
        ("/set", Command("set")),
        ("/set temperature 0.2", Command("set", "temperature 0.2")),
        ("/system  Be terse.\nAlways. ", Command("system", "Be terse.\nAlways.")),
    ],
)
def test_commands(text: str, command: Command) -> None:
    assert parse_command(text) == command


def test_an_unknown_command_is_one_line_naming_it() -> None:
    with pytest.raises(ChatCommandError, match=r"^Unknown command '/nope'\. Type /\? for help\.$"):
        parse_command("/nope now")


# -- multi-line input ----------------------------------------------------------------------------


def feed(lines: Iterable[str]) -> tuple[list[Entry], InputAssembler]:
    assembler = InputAssembler()
    entries = [entry for line in lines if (entry := assembler.feed(line)) is not None]
    return entries, assembler


def test_one_line_is_one_message_and_a_blank_line_none() -> None:
    entries, assembler = feed(["  hello  ", "", "   "])
    assert entries == [Entry("hello")]
    assert not assembler.pending


def test_triple_quotes_open_and_close_a_multi_line_message() -> None:
    assembler = InputAssembler()
    assert assembler.feed('"""first line') is None
    assert assembler.pending
    assert assembler.feed("") is None
    assert assembler.feed("    indented") is None
    assert assembler.feed('last"""  ignored after the quotes') == Entry(
        "first line\n\n    indented\nlast", verbatim=True
    )
    assert not assembler.pending


def test_triple_quotes_on_lines_of_their_own() -> None:
    entries, _ = feed(['"""', "/etc/hosts: what is it?", '"""'])
    assert entries == [Entry("/etc/hosts: what is it?", verbatim=True)]


def test_triple_quotes_on_one_line() -> None:
    entries, _ = feed(['"""/not a command"""'])
    assert entries == [Entry("/not a command", verbatim=True)]


def test_an_empty_quoted_block_is_nothing() -> None:
    entries, assembler = feed(['"""', "  ", '"""'])
    assert entries == []
    assert not assembler.pending


def test_a_backslash_at_the_end_goes_on_on_the_next_line() -> None:
    assembler = InputAssembler()
    assert assembler.feed("one \\") is None
    assert assembler.pending
    assert assembler.feed("two\\") is None
    assert assembler.feed("three") == Entry("one \ntwo\nthree")
    assert not assembler.pending


def test_a_command_may_go_on_over_lines() -> None:
    entries, _ = feed(["/system You are terse.\\", "Answer in French."])
    assert parse_command(entries[0].text) == Command("system", "You are terse.\nAnswer in French.")


def test_quotes_inside_a_continued_message_are_text() -> None:
    entries, _ = feed(["say \\", '"""hi'])
    assert entries == [Entry('say \n"""hi')]


def test_discard_drops_the_message_being_typed() -> None:
    assembler = InputAssembler()
    assembler.feed('"""half a')
    assembler.discard()
    assert not assembler.pending
    assert assembler.feed("fresh") == Entry("fresh")


# -- settings ------------------------------------------------------------------------------------


def test_set_changes_one_setting_and_says_so() -> None:
    settings, said = apply_set(ChatSettings(), "temperature 0.3")
    assert settings == ChatSettings(temperature=0.3)
    assert said == "Set temperature to 0.3."
    settings, said = apply_set(settings, "MAX_TOKENS 2000")
    assert settings == ChatSettings(temperature=0.3, max_tokens=2000)
    assert settings.request_fields() == {"temperature": 0.3, "max_tokens": 2000}
    settings, said = apply_set(settings, "max-tokens default")
    assert settings.max_tokens is None
    assert said == "Set max_tokens to the model's default."
    assert settings.request_fields() == {"temperature": 0.3}


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("warmth 5", r"^Unknown setting 'warmth'\. Settings: temperature, max_tokens, top_p, "),
        ("temperature", r"^Give a value: /set temperature VALUE"),
        ("temperature 3", r"^temperature must be a number from 0 to 2, not '3'\.$"),
        ("temperature warm", r"not 'warm'"),
        ("max_tokens 0", r"^max_tokens must be a whole number of 1 or more, not '0'\.$"),
        ("max_tokens 1.5", r"not '1\.5'"),
        ("top_p 0", r"^top_p must be a number above 0 and at most 1, not '0'\.$"),
        ("top_k -1", r"^top_k must be a whole number of 0 or more, not '-1'\.$"),
        ("min_p 2", r"^min_p must be a number from 0 to 1, not '2'\.$"),
        ("repeat_penalty 0", r"^repeat_penalty must be a number above 0, not '0'\.$"),
        ("min_p nan", r"not 'nan'"),
        ("repeat_penalty inf", r"^repeat_penalty must be a number above 0, not 'inf'\.$"),
        ("seed lucky", r"^seed must be a whole number, not 'lucky'\.$"),
        ('stop "unclosed', r"^stop strings must be quoted as a shell quotes: "),
        ("stop a b c d e", r"^Give 1 to 4 non-empty stop strings"),
        ('stop ""', r"^Give 1 to 4 non-empty stop strings"),
    ],
)
def test_a_bad_set_is_one_line(argument: str, message: str) -> None:
    with pytest.raises(ChatCommandError, match=message):
        apply_set(ChatSettings(), argument)


def test_the_sampling_settings_reach_the_request() -> None:
    settings = ChatSettings()
    for argument in ("top_p 0.9", "top_k 20", "min_p 0.1", "repeat_penalty 1.1", "seed 7"):
        settings, _ = apply_set(settings, argument)
    settings, said = apply_set(settings, 'stop "###" "User: "')
    assert said == 'Set stop to "###" "User: ".'
    assert settings.request_fields() == {
        "top_p": 0.9,
        "top_k": 20,
        "min_p": 0.1,
        "repeat_penalty": 1.1,
        "seed": 7,
        "stop": ["###", "User: "],
    }
    settings, _ = apply_set(settings, "stop default")
    assert "stop" not in settings.request_fields()


def test_describe_settings_lists_them_all() -> None:
    text = describe_settings(ChatSettings(max_tokens=64, stop=("a b",)), "Be terse.\nAlways.")
    assert text.splitlines() == [
        "temperature     the model's default",
        "max_tokens      64",
        "top_p           the model's default",
        "top_k           the model's default",
        "min_p           the model's default",
        "repeat_penalty  the model's default",
        "seed            the model's default",
        'stop            "a b"',
        "system          Be terse....",
    ]
    assert describe_settings(ChatSettings(), None).endswith("system          (none)")


def test_cloud_and_mapped_models_are_not_loaded_ahead() -> None:
    assert preloads("smollm2-135m-instruct", [])
    assert not preloads("openai/gpt-4o-mini", [])
    assert not preloads("Big-Model", ["big-model"])


# -- showing an answer ---------------------------------------------------------------------------


def render(renderer: AnswerRenderer, deltas: Iterable[Delta]) -> str:
    shown = "".join(renderer.thought(d.thought) + renderer.text(d.text) for d in deltas)
    return shown + renderer.end()


THINKING = [
    Delta(thought="\nHm, "),
    Delta(thought="two.\n"),
    Delta(text="\n\nTwo"),
    Delta(text="."),
]


def test_thoughts_are_dimmed_then_a_blank_line_then_the_answer() -> None:
    shown = render(AnswerRenderer(show_thoughts=True, color=True), THINKING)
    assert shown == f"{DIM}Hm, two.\n{RESET}\nTwo.\n"


def test_without_colours_thoughts_are_plain() -> None:
    shown = render(AnswerRenderer(show_thoughts=True, color=False), THINKING)
    assert shown == "Hm, two.\n\nTwo.\n"


def test_without_thoughts_only_the_answer() -> None:
    assert render(AnswerRenderer(show_thoughts=False, color=True), THINKING) == "Two.\n"


def test_an_answer_stopped_while_thinking_ends_the_dimming() -> None:
    shown = render(AnswerRenderer(show_thoughts=True, color=True), THINKING[:1])
    assert shown == f"{DIM}Hm, {RESET}\n"


def test_an_empty_answer_shows_nothing() -> None:
    assert render(AnswerRenderer(show_thoughts=True, color=True), [Delta(text=" ")]) == ""


def sse(*events: object) -> list[str]:
    return [
        ": a comment",
        *(f"data: {json.dumps(e)}" for e in events),
        "",
        "data: [DONE]",
        'data: {"choices": [{"delta": {"content": "after done"}}]}',
    ]


def chunk(content: str | None = None, reasoning: str | None = None) -> dict[str, object]:
    delta = {"role": "assistant", "content": content, "reasoning_content": reasoning}
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}


def test_read_deltas_reads_thoughts_and_text_until_done() -> None:
    lines = sse(chunk(reasoning="think"), chunk(content="Hi"), {"choices": []}, chunk())
    assert list(read_deltas(lines)) == [Delta(thought="think"), Delta(text="Hi")]


def test_an_error_event_midway_fails_the_answer() -> None:
    error = {"error": {"message": "The model's runner stopped.", "code": None}}
    deltas = read_deltas(sse(chunk(content="Hi"), error))
    assert next(deltas) == Delta(text="Hi")
    with pytest.raises(AnswerFailed, match=r"^The model's runner stopped\.$") as failed:
        next(deltas)
    assert not failed.value.fatal


def test_ctrl_c_stops_the_answer_and_closes_the_stream() -> None:
    closed = []

    def deltas() -> Generator[Delta, None, None]:
        try:
            yield Delta(text="Once upon")
            yield Delta(text=" a time")
            raise KeyboardInterrupt  # as when Ctrl-C lands while the socket is read
        finally:
            closed.append(True)

    out = io.StringIO()
    reply = show_answer(deltas(), out, AnswerRenderer(show_thoughts=True, color=False))
    assert reply.stopped and reply.text == "Once upon a time"
    assert out.getvalue() == "Once upon a time\n"
    assert closed


def test_ctrl_c_between_pieces_closes_the_stream_too() -> None:
    closed = []

    def deltas() -> Generator[Delta, None, None]:
        try:
            yield Delta(text="Once")
            yield Delta(text=" more")
        finally:
            closed.append(True)

    class Interrupting(io.StringIO):
        def write(self, text: str) -> int:
            if "more" in text:
                raise KeyboardInterrupt
            return super().write(text)

    reply = show_answer(deltas(), Interrupting(), AnswerRenderer(False, False))
    assert reply.stopped and closed


# -- the prompt loop -----------------------------------------------------------------------------


class Typed:
    """Lines typed at the prompt; an exception class stands for a key (Ctrl-C, Ctrl-D)."""

    def __init__(self, *keys: str | type[BaseException]) -> None:
        self.keys = list(keys)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.keys:
            raise EOFError
        key = self.keys.pop(0)
        if isinstance(key, str):
            return key
        raise key()


@dataclass
class FakeModel:
    """Answers with ``answers`` in turn; a callable answer runs in the stream (to raise)."""

    answers: list[list[Delta] | Callable[[], None]] = field(default_factory=list)
    asked: list[tuple[list[Message], ChatSettings]] = field(default_factory=list)

    def ask(self, messages: list[Message], settings: ChatSettings) -> Generator[Delta, None, None]:
        self.asked.append((messages, settings))
        answer = self.answers.pop(0) if self.answers else [Delta(text="ok")]
        if callable(answer):
            answer()
        else:
            yield from answer


def chat_loop(typed: Typed, model: FakeModel) -> tuple[ChatLoop, io.StringIO]:
    out = io.StringIO()
    return ChatLoop(model.ask, typed, out, color=False), out


def test_questions_carry_the_conversation_system_prompt_and_settings() -> None:
    model = FakeModel([[Delta(text="Paris.")], [Delta(text="Lyon.")]])
    typed = Typed(
        "/system Be terse.",
        "/set max_tokens 20",
        "Capital of France?",
        "Another city?",
        "/bye",
        "never read",
    )
    loop, out = chat_loop(typed, model)
    loop.run()
    (first, _), (second, settings) = model.asked
    assert first == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert second[1:] == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Another city?"},
    ]
    assert settings == ChatSettings(max_tokens=20)
    assert out.getvalue() == ("Set the system prompt.\nSet max_tokens to 20.\nParis.\n\nLyon.\n\n")
    assert typed.keys == ["never read"]


def test_clear_forgets_the_conversation_but_keeps_the_system_prompt() -> None:
    model = FakeModel()
    loop, out = chat_loop(Typed("/system S", "one", "/clear", "two"), model)
    loop.run()
    assert model.asked[1][0] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "two"},
    ]
    assert "Cleared the conversation." in out.getvalue()


def test_commands_that_only_answer() -> None:
    loop, out = chat_loop(Typed("/?", "/system", "/set", "/set top_q 1", "/what"), FakeModel())
    loop.run()
    assert out.getvalue() == "\n".join(
        [
            HELP,
            "No system prompt. Set one: /system TEXT",
            describe_settings(ChatSettings(), None),
            "Unknown setting 'top_q'. Settings: temperature, max_tokens, top_p, top_k, min_p, "
            "repeat_penalty, seed, stop.",
            "Unknown command '/what'. Type /? for help.",
            "",  # Ctrl-D
            "",
        ]
    )


def test_a_multi_line_message_shows_the_continuation_prompt() -> None:
    model = FakeModel()
    typed = Typed('"""', "line one", "line two", '"""')
    chat_loop(typed, model)[0].run()
    assert typed.prompts == [">>> ", "... ", "... ", "... ", ">>> "]
    assert model.asked[0][0] == [{"role": "user", "content": "line one\nline two"}]


def test_ctrl_c_during_an_answer_gives_the_prompt_back() -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    model = FakeModel([interrupted, [Delta(text="Still here.")]])
    loop, out = chat_loop(Typed("A long story, please.", "Are you there?"), model)
    loop.run()
    assert len(model.asked) == 2
    # nothing was answered, so the first question is not kept in the conversation
    assert model.asked[1][0] == [{"role": "user", "content": "Are you there?"}]
    assert out.getvalue().endswith("Still here.\n\n\n")


def test_a_stopped_answer_is_kept_as_far_as_it_went() -> None:
    conversation = Conversation()
    conversation.record("story", Reply("Once upon", stopped=True))
    assert conversation.messages("go on") == [
        {"role": "user", "content": "story"},
        {"role": "assistant", "content": "Once upon"},
        {"role": "user", "content": "go on"},
    ]


def test_the_first_ctrl_c_at_the_prompt_says_how_to_leave_the_second_leaves() -> None:
    typed = Typed(KeyboardInterrupt, KeyboardInterrupt, "never read")
    loop, out = chat_loop(typed, FakeModel())
    loop.run()
    assert out.getvalue() == "\nUse /bye or Ctrl-D to exit, or press Ctrl-C again.\n\n"
    assert typed.keys == ["never read"]


def test_ctrl_c_apart_does_not_leave() -> None:
    typed = Typed(KeyboardInterrupt, "hi", KeyboardInterrupt, "/bye")
    model = FakeModel()
    chat_loop(typed, model)[0].run()
    assert len(model.asked) == 1 and not typed.keys


def test_ctrl_c_in_a_multi_line_message_drops_it() -> None:
    typed = Typed('"""', "half", KeyboardInterrupt, "whole")
    model = FakeModel()
    loop, out = chat_loop(typed, model)
    loop.run()
    assert [asked[0][-1]["content"] for asked in model.asked] == ["whole"]
    assert "Use /bye" not in out.getvalue()


def test_a_failed_answer_is_one_line_and_the_chat_goes_on() -> None:
    def busy() -> None:
        raise AnswerFailed("All models are busy.", 503)

    model = FakeModel([busy])
    loop, out = chat_loop(Typed("hi", "again"), model)
    loop.run()
    assert out.getvalue() == "Error: All models are busy.\nok\n\n\n"


def test_an_unknown_model_ends_the_chat() -> None:
    def unknown() -> None:
        raise AnswerFailed("The model 'x' does not exist.", 404)

    loop, _ = chat_loop(Typed("hi", "again"), FakeModel([unknown]))
    with pytest.raises(AnswerFailed, match="does not exist"):
        loop.run()


# -- the daemon side, with the HTTP exchange in-process --------------------------------------------


STATE = DaemonState(pid=1, host="127.0.0.1", port=9, model="m", version="0", started_at=0.0)


def daemon_chat(handler: Callable[[httpx.Request], httpx.Response]) -> DaemonChat:
    return DaemonChat(STATE, "lsk-admin", "m", transport=httpx.MockTransport(handler))


def test_daemon_chat_streams_with_the_key_and_settings() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = "\n\n".join(sse(chunk(reasoning="hm"), chunk(content="Hi")))
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})

    chat = daemon_chat(handler)
    messages = [{"role": "user", "content": "Hello"}]
    deltas = list(chat.ask(messages, ChatSettings(temperature=0.0)))
    chat.close()
    assert deltas == [Delta(thought="hm"), Delta(text="Hi")]
    assert seen[0].url == "http://127.0.0.1:9/v1/chat/completions"
    assert seen[0].headers["authorization"] == "Bearer lsk-admin"
    assert json.loads(seen[0].content) == {
        "model": "m",
        "messages": messages,
        "stream": True,
        "temperature": 0.0,
    }


def test_daemon_chat_turns_an_error_answer_into_its_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        error = {"message": "The model 'm' does not exist. Available: a, b.", "code": "x"}
        return httpx.Response(404, json={"error": error})

    chat = daemon_chat(handler)
    with pytest.raises(
        AnswerFailed, match=r"^The model 'm' does not exist\. Available: a, b\.$"
    ) as failed:
        list(chat.ask([], ChatSettings()))
    chat.close()
    assert failed.value.fatal


def test_daemon_chat_says_when_the_daemon_cannot_be_reached() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    chat = daemon_chat(handler)
    with pytest.raises(
        AnswerFailed, match=r"^Lost the connection to localserve at http://127\.0\.0\.1:9"
    ):
        list(chat.ask([], ChatSettings()))
    chat.close()


def test_wait_showing_ticks_until_done_and_hands_failures_over() -> None:
    ticks: list[float] = []

    def slow() -> int:
        time.sleep(0.3)
        return 42

    assert wait_showing(slow, ticks.append, every=0.05) == 42
    assert len(ticks) >= 2 and ticks == sorted(ticks)

    def fail() -> int:
        raise AnswerFailed("no")

    with pytest.raises(AnswerFailed, match="no"):
        wait_showing(fail, ticks.append)
