"""`localserve chat` against a real daemon on the starter model: piped, as a script uses it,
and in a pseudo-terminal (pexpect), as a person types at it."""

from __future__ import annotations

import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess, run_cli
from tests.helpers.imported_models import ModelImport, daemon_with_models
from tests.helpers.model_files import templated_starter

if sys.platform == "win32":
    pytest.skip("pexpect drives a POSIX pseudo-terminal", allow_module_level=True)

import pexpect  # a test dependency: pip install -e '.[test]'

TIMEOUT = 180  # seconds for one expectation: this machine may have 2 busy cores
R1 = "r1-distill"  # the starter with DeepSeek-R1's template: it thinks, within the budget


def ready(model: str) -> re.Pattern[str]:
    return re.compile(rf"Loading {re.escape(model)}\.\.\. ready in [\d.]+ s")


READY = ready(STARTER_MODEL)
CANCELLED = re.compile(r"generated (\d+) \(cancelled\)")
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")  # readline's bracketed-paste switches


def spawn_chat(env: dict[str, str], *args: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "localserve", "chat", *args],
        env={**env, "TERM": "xterm"},
        encoding="utf-8",
        timeout=TIMEOUT,
        dimensions=(40, 250),
    )


@pytest.fixture
def chat(daemon: DaemonProcess) -> Iterator[pexpect.spawn]:
    """A chat with the module's daemon, at its first prompt."""
    child = spawn_chat(daemon.env())
    try:
        child.expect(READY)
        child.expect_exact(">>> ")
        yield child
    finally:
        child.close(force=True)


def ask(child: pexpect.spawn, line: str) -> str:
    """Type ``line`` and return what came back before the next prompt (without the echo)."""
    child.sendline(line)
    child.expect_exact(">>> ")
    return ESCAPES.sub("", str(child.before)).split(line, 1)[-1].strip()


def leave(child: pexpect.spawn) -> int:
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    return int(child.exitstatus)


def cancelled_generations(daemon: DaemonProcess) -> list[int]:
    return [int(n) for n in CANCELLED.findall(daemon.runner_log())]


# -- piped ---------------------------------------------------------------------------------------


def test_a_piped_question_prints_the_answer_alone(daemon: DaemonProcess) -> None:
    result = daemon.cli("chat", STARTER_MODEL, "--max-tokens", "24", input="Say hello.\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert result.stdout.endswith("\n")
    assert "\x1b" not in result.stdout and ">>>" not in result.stdout
    assert result.stderr == ""  # no progress line where stderr is not a terminal


def test_the_default_model_answers_when_none_is_named(daemon: DaemonProcess) -> None:
    result = daemon.cli("chat", "--max-tokens", "8", input="Hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_an_unknown_model_is_one_line_naming_the_models(daemon: DaemonProcess) -> None:
    result = daemon.cli("chat", "no-such-model", input="Hi")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no-such-model" in lines[0] and STARTER_MODEL in lines[0]


def test_empty_stdin_is_one_line(daemon: DaemonProcess) -> None:
    result = daemon.cli("chat", input="")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: Nothing to ask: stdin was empty. Pipe a question in, or run this in a terminal."
    ]


def test_a_daemon_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**DaemonProcess(tmp_path / "home").env(), "LOCALSERVE_PORT": str(port)}
        result = run_cli("chat", input="Hi", env=env, timeout=TIMEOUT)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: localserve did not start: Cannot listen on 127.0.0.1:")


# -- in a terminal -------------------------------------------------------------------------------


def test_a_conversation_in_a_terminal(chat: pexpect.spawn) -> None:
    assert ask(chat, "/set max_tokens 24") == "Set max_tokens to 24."
    assert ask(chat, "/system You are a pirate.") == "Set the system prompt."
    settings = ask(chat, "/set")
    assert "max_tokens      24" in settings and "system          You are a pirate." in settings
    assert ask(chat, "Say hello.")  # an answer streamed back, then the prompt
    assert ask(chat, "/clear") == "Cleared the conversation."
    assert "Unknown setting 'warmth'" in ask(chat, "/set warmth 3")
    chat.sendline('"""')
    chat.expect_exact("... ")
    chat.sendline("Name a colour.")
    chat.expect_exact("... ")
    assert ask(chat, '"""')
    assert leave(chat) == 0


def test_ctrl_c_stops_the_answer_not_the_chat(daemon: DaemonProcess, chat: pexpect.spawn) -> None:
    assert ask(chat, "/set max_tokens 2000") == "Set max_tokens to 2000."
    before = len(cancelled_generations(daemon))
    question = "Write a very long story about a dragon and a knight, in many chapters."
    chat.sendline(question)
    chat.expect_exact(question)
    chat.expect(r"\w\w\w")  # the answer is streaming
    chat.sendintr()
    chat.expect_exact(">>> ")
    assert chat.isalive()
    deadline = time.monotonic() + 60
    while len(cancelled_generations(daemon)) <= before and time.monotonic() < deadline:
        time.sleep(0.2)
    counts = cancelled_generations(daemon)
    assert len(counts) > before, "the daemon never cancelled the generation"
    assert counts[-1] < 2000
    assert ask(chat, "/set max_tokens 8") == "Set max_tokens to 8."
    assert ask(chat, "Say yes.")  # the chat goes on
    assert leave(chat) == 0


def test_ctrl_c_twice_or_ctrl_d_at_the_prompt_leaves(chat: pexpect.spawn) -> None:
    chat.sendintr()
    chat.expect_exact("Use /bye or Ctrl-D to exit, or press Ctrl-C again.")
    chat.expect_exact(">>> ")
    chat.sendintr()
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0


def test_ctrl_d_leaves(chat: pexpect.spawn) -> None:
    chat.sendeof()
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0


def test_chat_starts_the_daemon_when_none_runs(tmp_path: Path) -> None:
    env = {**DaemonProcess(tmp_path / "home").env(), "LOCALSERVE_PORT": "0"}
    child = spawn_chat(env, "--max-tokens", "16")
    try:
        child.expect_exact("Starting localserve...")
        child.expect(READY)
        child.expect_exact(">>> ")
        assert ask(child, "Say hello.")
        assert leave(child) == 0
        status = run_cli("status", env=env, timeout=60)
        assert status.returncode == 0, status.stderr  # the daemon outlives the chat
    finally:
        child.close(force=True)
        stopped = run_cli("stop", env=env, timeout=60)
    assert stopped.returncode == 0, stopped.stderr


# -- a thinking model ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def thinking_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """A daemon with an R1-templated starter whose thoughts end after 8 tokens (the budget)."""
    home = tmp_path_factory.mktemp("thinking-daemon")
    path = templated_starter(home, R1, "deepseek-r1-distill-qwen.jinja")
    env = {"LOCALSERVE_THINKING_BUDGET": "8"}
    with daemon_with_models(home, [ModelImport(R1, path)], env) as running:
        yield running


def test_thoughts_show_dimmed_before_the_answer(thinking_daemon: DaemonProcess) -> None:
    child = spawn_chat(thinking_daemon.env(), R1, "--max-tokens", "40", "--temperature", "0")
    try:
        child.expect(ready(R1))
        child.expect_exact(">>> ")
        child.sendline("What is 2+2?")
        child.expect_exact(">>> ")
        shown = str(child.before).replace("\r", "")
        dimmed = re.search(r"\x1b\[2m(.+?)\x1b\[0m\n\n(.+)", shown, re.DOTALL)
        assert dimmed, shown
        thought, answer = dimmed[1].strip(), dimmed[2].strip()
        assert thought and answer and "<think>" not in shown and "</think>" not in shown
        assert leave(child) == 0
    finally:
        child.close(force=True)


def test_piped_output_leaves_the_thoughts_out(thinking_daemon: DaemonProcess) -> None:
    question = "What is 2+2?"
    result = thinking_daemon.cli(
        "chat", R1, "--max-tokens", "40", "--temperature", "0", input=question
    )
    assert result.returncode == 0, result.stderr
    message = thinking_daemon.chat(
        R1, messages=[{"role": "user", "content": question}], max_tokens=40, temperature=0
    ).json()["choices"][0]["message"]
    assert message["reasoning_content"].strip() and message["content"].strip()
    assert result.stdout == message["content"].strip() + "\n"
    assert "\x1b" not in result.stdout
