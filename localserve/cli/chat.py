"""``localserve chat [MODEL]``: talk to a model in the terminal, as ``ollama run`` does.

In a terminal: a prompt with line editing and history (readline, where Python has it), answers
streamed as they are generated, and a thinking model's thoughts before its answer, dimmed. A
line starting with ``\"\"\"`` opens a multi-line message that the next ``\"\"\"`` closes; a line
ending in a backslash goes on on the next line. Ctrl-C while an answer streams closes the
stream, which makes the daemon cancel the generation, and gives the prompt back; at the prompt,
Ctrl-D or a second Ctrl-C leaves.

Piped (stdin is not a terminal): all of stdin is one message, and the answer alone goes to
stdout (no thoughts, no prompt, no colours); an error is one line on stderr and status 1.

The daemon is started if it is not running, and a local model is loaded through the control
API before the first question, so its load time shows as a progress line, not as a slow first
answer. Answers come from the daemon's ``/v1/chat/completions`` with the admin key, read with
httpx like every other CLI call (the ``openai`` SDK is a test dependency only, not the app's).

The parts without IO (commands, multi-line input, settings, how deltas are shown, the stream's
lines, the prompt loop given a way to ask) have millisecond tests in
tests/unit/test_chat_cli.py; `DaemonChat` and the `chat` command are the IO around them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TextIO, TypeVar

import click
import httpx

from localserve.api.sse import read_chunk
from localserve.cloud.providers import ProviderStore
from localserve.daemon.client import DaemonClient, error_from
from localserve.daemon.launcher import start_daemon
from localserve.daemon.state import DaemonState, read_state
from localserve.errors import LocalserveError
from localserve.paths import AppPaths, app_paths
from localserve.security.keys import KeyStore

PROMPT, MORE_PROMPT = ">>> ", "... "
QUOTES = '"""'
DIM, RESET = "\x1b[2m", "\x1b[0m"
DAEMON_START_TIMEOUT_S = 120.0
LOAD_TIMEOUT_S = 900.0  # a large model from a slow disk
ANSWER_READ_TIMEOUT_S = 900.0  # the first chunk can wait for a model to load
HISTORY_LINES = 1000

Message = dict[str, str]
T = TypeVar("T")

HELP = f"""\
Type a message and press Enter to send it.
  {QUOTES}                  start a multi-line message; a line with {QUOTES} ends it
  a line ending in \\   goes on on the next line
  /set                 show the settings
  /set temperature X   sampling temperature, 0 to 2 (`default`, for each: the model's own)
  /set max_tokens N    the longest answer, in tokens
  /set top_p X         nucleus sampling, above 0 to 1
  /set top_k N         sample from the N likeliest tokens (0: all)
  /set min_p X         drop tokens under X times the likeliest one's odds, 0 to 1
  /set repeat_penalty X  above 0; over 1 discourages repeating
  /set seed N          the same seed and settings give the same answer
  /set stop "A" "B"    up to 4 strings that end an answer, quoted as in a shell
  /system TEXT         set the system prompt (/system alone shows it)
  /clear               forget the conversation (the system prompt stays)
  /bye                 leave (or Ctrl-D)
  /?, /help            this help
Ctrl-C stops an answer. A message that starts with / goes between {QUOTES}."""


class ChatCommandError(LocalserveError):
    """A command typed at the prompt that cannot run as typed; the chat goes on."""


class AnswerFailed(LocalserveError):
    """The daemon did not answer a question (``status``: its HTTP status, None for a failure
    midway or a lost connection)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)

    @property
    def fatal(self) -> bool:
        """No later question can fare better: the model does not exist."""
        return self.status == 404


# -- commands ----------------------------------------------------------------------------------
CommandName = Literal["bye", "clear", "system", "set", "help"]
COMMANDS: dict[str, CommandName] = {
    "/bye": "bye",
    "/clear": "clear",
    "/system": "system",
    "/set": "set",
    "/help": "help",
    "/?": "help",
}


@dataclass(frozen=True)
class Command:
    name: CommandName
    argument: str = ""


def parse_command(text: str) -> Command | None:
    """The command ``text`` is, or None when it is a message (it does not start with ``/``)."""
    if not text.startswith("/"):
        return None
    word, *rest = text.split(maxsplit=1)
    name = COMMANDS.get(word.lower())
    if name is None:
        raise ChatCommandError(f"Unknown command '{word}'. Type /? for help.")
    return Command(name, rest[0].strip() if rest else "")


# -- settings ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatSettings:
    """What each request carries besides the conversation; None leaves it to the model."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None

    def request_fields(self) -> dict[str, object]:
        values = {name: getattr(self, name) for name in SETTERS}
        found = {name: value for name, value in values.items() if value is not None}
        if "stop" in found:
            found["stop"] = list(found["stop"])
        return found


Parser = Callable[[str], Any]  # a setting's value, or None for the model's default
MAX_STOPS = 4  # as OpenAI's API allows


def number_parser(
    name: str, low: float, high: float | None = None, *, above: bool = False, whole: bool = False
) -> Parser:
    """A parser of ``name``'s value: a number from ``low`` (or above it) to ``high``, or
    `default`; one readable line when it is not."""
    kind = "a whole number" if whole else "a number"
    if above:
        bounds = f"above {low:g}" + (f" and at most {high:g}" if high is not None else "")
    else:
        bounds = f"from {low:g} to {high:g}" if high is not None else f"of {low:g} or more"
    problem = f"{name} must be {kind} {bounds}"

    def parse(value: str) -> object:
        if value.lower() == "default":
            return None
        try:
            number: float = int(value) if whole else float(value)
        except ValueError:
            raise ChatCommandError(f"{problem}, not '{value}'.") from None
        too_low = number <= low if above else number < low
        # Not infinite nor NaN either: JSON has no such numbers, so the request could not go.
        if too_low or (high is not None and number > high) or not math.isfinite(number):
            raise ChatCommandError(f"{problem}, not '{value}'.")
        return number

    return parse


def parse_seed(value: str) -> object:
    if value.lower() == "default":
        return None
    try:
        return int(value)
    except ValueError:
        raise ChatCommandError(f"seed must be a whole number, not '{value}'.") from None


def parse_stop(value: str) -> object:
    """Up to four stop strings, quoted as a shell quotes them: /set stop "###" "User:"."""
    if value.lower() == "default":
        return None
    try:
        stops = tuple(shlex.split(value))
    except ValueError as exc:
        raise ChatCommandError(f"stop strings must be quoted as a shell quotes: {exc}.") from None
    if not stops or len(stops) > MAX_STOPS or not all(stops):
        raise ChatCommandError(f"Give 1 to {MAX_STOPS} non-empty stop strings, not '{value}'.")
    return stops


SETTERS: dict[str, Parser] = {
    "temperature": number_parser("temperature", 0, 2),
    "max_tokens": number_parser("max_tokens", 1, whole=True),
    "top_p": number_parser("top_p", 0, 1, above=True),
    "top_k": number_parser("top_k", 0, whole=True),
    "min_p": number_parser("min_p", 0, 1),
    "repeat_penalty": number_parser("repeat_penalty", 0, above=True),
    "seed": parse_seed,
    "stop": parse_stop,
}


def apply_set(settings: ChatSettings, argument: str) -> tuple[ChatSettings, str]:
    """``settings`` changed as ``/set NAME VALUE`` asks, and a line saying what changed."""
    name, _, value = argument.strip().partition(" ")
    name, value = name.lower().replace("-", "_"), value.strip()
    parse = SETTERS.get(name)
    if parse is None:
        raise ChatCommandError(f"Unknown setting '{name}'. Settings: {', '.join(SETTERS)}.")
    if not value:
        raise ChatCommandError(f"Give a value: /set {name} VALUE (or `default`).")
    changed = replace(settings, **{name: parse(value)})
    return changed, f"Set {name} to {describe_value(getattr(changed, name))}."


def describe_value(value: object) -> str:
    if value is None:
        return "the model's default"
    if isinstance(value, tuple):
        return " ".join(json.dumps(part) for part in value)
    return str(value)


def describe_settings(settings: ChatSettings, system: str | None) -> str:
    lines = [f"{name:<15} {describe_value(getattr(settings, name))}" for name in SETTERS]
    lines.append(f"{'system':<15} {first_line(system) if system else '(none)'}")
    return "\n".join(lines)


def first_line(text: str, width: int = 60) -> str:
    """The start of ``text``, to show a long system prompt in one line."""
    lines = text.strip().splitlines() or [""]
    more = len(lines) > 1 or len(lines[0]) > width
    return lines[0][:width] + ("..." if more else "")


# -- input -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """What was typed at the prompt, assembled; ``verbatim`` when it came between triple
    quotes (then it is a message even if it starts with ``/``)."""

    text: str
    verbatim: bool = False


class InputAssembler:
    """Lines typed at the prompt into messages: ``\"\"\"`` opens a block that the next ``\"\"\"``
    closes (on the same line too), a line ending in a backslash goes on on the next line."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._mode: Literal["line", "quoted", "continued"] = "line"

    @property
    def pending(self) -> bool:
        """Whether a message is begun and waits for more lines."""
        return self._mode != "line"

    def discard(self) -> None:
        self._lines, self._mode = [], "line"

    def feed(self, line: str) -> Entry | None:
        """The entry ``line`` completes, or None while it needs more lines (or is blank)."""
        if self._mode == "quoted":
            before, closed, _ = line.partition(QUOTES)
            self._lines.append(before)
            return self._finish(verbatim=True) if closed else None
        if self._mode == "line" and line.lstrip().startswith(QUOTES):
            opened = line.lstrip()[len(QUOTES) :]
            before, closed, _ = opened.partition(QUOTES)
            self._lines.append(before)
            if closed:
                return self._finish(verbatim=True)
            self._mode = "quoted"
            return None
        if line.endswith("\\"):
            self._lines.append(line[:-1])
            self._mode = "continued"
            return None
        self._lines.append(line)
        return self._finish(verbatim=False)

    def _finish(self, verbatim: bool) -> Entry | None:
        text = "\n".join(self._lines)
        self.discard()
        text = text.strip("\n").rstrip() if verbatim else text.strip()
        return Entry(text, verbatim) if text.strip() else None


# -- output ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delta:
    """One streamed piece of an answer: thought text, answer text, or both."""

    thought: str = ""
    text: str = ""


class AnswerRenderer:
    """What the terminal shows of one answer's deltas: thoughts first (dimmed where colours
    are on; left out where they are not wanted), one blank line, then the answer; the start of
    each is trimmed of blank space, and the end closes the dimming and the line."""

    def __init__(self, show_thoughts: bool, color: bool) -> None:
        self.show_thoughts = show_thoughts
        self.color = color
        self._phase: Literal["waiting", "thinking", "answering"] = "waiting"
        self._tail = ""  # the last two characters written, for clean line ends

    def thought(self, text: str) -> str:
        if not self.show_thoughts or not text:
            return ""
        if self._phase == "waiting":
            text = text.lstrip()
            if not text:
                return ""
            self._phase = "thinking"
            return (DIM if self.color else "") + self._written(text)
        if self._phase == "answering":  # thoughts after the answer began: shown as they come
            return self._dim(self._written(text))
        return self._written(text)

    def text(self, text: str) -> str:
        if self._phase == "answering":
            return self._written(text)
        text = text.lstrip()
        if not text:
            return ""
        lead = ""
        if self._phase == "thinking":
            lead = (RESET if self.color else "") + self._blank_line()
        self._phase = "answering"
        return lead + self._written(text)

    def end(self) -> str:
        """Closes the answer (whole or stopped): the colour reset, then a line end if needed."""
        reset = RESET if self.color and self._phase == "thinking" else ""
        if self._phase == "waiting" or self._tail.endswith("\n"):
            return reset
        return reset + "\n"

    def _written(self, text: str) -> str:
        self._tail = (self._tail + text)[-2:]
        return text

    def _dim(self, text: str) -> str:
        return f"{DIM}{text}{RESET}" if self.color else text

    def _blank_line(self) -> str:
        ending = len(self._tail) - len(self._tail.rstrip("\n"))
        return "\n" * (2 - ending)


def read_deltas(lines: Iterable[str]) -> Generator[Delta, None, None]:
    """The deltas of a chat completion stream's server-sent event lines, until ``[DONE]``;
    an error event (a failure after the stream began) raises `AnswerFailed`."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        chunk = read_chunk(data)
        if chunk is None:
            raise AnswerFailed(f"localserve sent a line that is not a JSON object: {data[:80]}")
        if chunk.error is not None:
            error = chunk.error
            message = error.get("message") if isinstance(error, dict) else None
            raise AnswerFailed(str(message or error))
        if chunk.thought or chunk.text:
            yield Delta(chunk.thought, chunk.text)


@dataclass(frozen=True)
class Reply:
    text: str
    stopped: bool  # Ctrl-C stopped it


def show_answer(
    deltas: Generator[Delta, None, None], out: TextIO, renderer: AnswerRenderer
) -> Reply:
    """Write the answer as it streams; Ctrl-C stops it (the stream is closed, which is what
    makes the daemon cancel the generation) and the reply says so."""
    parts: list[str] = []
    stopped = False

    def write(text: str) -> None:
        if text:
            out.write(text)
            out.flush()

    try:
        for delta in deltas:
            write(renderer.thought(delta.thought))
            parts.append(delta.text)
            write(renderer.text(delta.text))
    except KeyboardInterrupt:
        stopped = True
    finally:
        deltas.close()  # a no-op when it ended; else it leaves `with stream`: the socket closes
        write(renderer.end())
    return Reply("".join(parts), stopped)


# -- the conversation and the prompt loop --------------------------------------------------------
@dataclass
class Conversation:
    system: str | None = None
    turns: list[Message] = field(default_factory=list)

    def messages(self, question: str) -> list[Message]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return [*head, *self.turns, {"role": "user", "content": question}]

    def record(self, question: str, reply: Reply) -> None:
        """Keep the exchange; a stopped answer as far as it went (it was read), and a question
        without any answer not at all (two questions in a row confuse some templates)."""
        if reply.text.strip():
            self.turns.append({"role": "user", "content": question})
            self.turns.append({"role": "assistant", "content": reply.text})

    def clear(self) -> None:
        self.turns.clear()


Ask = Callable[[list[Message], ChatSettings], Generator[Delta, None, None]]


class ChatLoop:
    """The interactive chat: reads lines, runs commands, asks questions and shows answers.

    ``read_line`` is ``input`` (with readline) in the terminal and a script in tests; ``ask``
    streams one answer's deltas."""

    def __init__(
        self,
        ask: Ask,
        read_line: Callable[[str], str],
        out: TextIO,
        color: bool,
        settings: ChatSettings | None = None,
        conversation: Conversation | None = None,
    ) -> None:
        self.ask = ask
        self.read_line = read_line
        self.out = out
        self.color = color
        self.settings = settings or ChatSettings()
        self.conversation = conversation or Conversation()

    def run(self) -> None:
        """Until /bye, Ctrl-D, or Ctrl-C twice in a row at the prompt."""
        entries = InputAssembler()
        interrupts = 0
        while True:
            try:
                line = self.read_line(MORE_PROMPT if entries.pending else PROMPT)
            except EOFError:
                self.say("")
                return
            except KeyboardInterrupt:
                self.say("")
                if entries.pending:  # Ctrl-C drops the message being typed
                    entries.discard()
                    continue
                interrupts += 1
                if interrupts > 1:
                    return
                self.say("Use /bye or Ctrl-D to exit, or press Ctrl-C again.")
                continue
            interrupts = 0
            entry = entries.feed(line)
            try:
                if entry is not None and not self.handle(entry):
                    return
            except KeyboardInterrupt:
                self.say("")

    def handle(self, entry: Entry) -> bool:
        """Run one command or ask one question; False when the chat should end."""
        try:
            command = None if entry.verbatim else parse_command(entry.text)
        except ChatCommandError as exc:
            self.say(str(exc))
            return True
        if command is None:
            self.question(entry.text)
            return True
        return self.command(command)

    def command(self, command: Command) -> bool:
        if command.name == "bye":
            return False
        if command.name == "clear":
            self.conversation.clear()
            self.say("Cleared the conversation.")
        elif command.name == "system":
            if command.argument:
                self.conversation.system = command.argument
                self.say("Set the system prompt.")
            else:
                self.say(self.conversation.system or "No system prompt. Set one: /system TEXT")
        elif command.name == "set":
            if not command.argument:
                self.say(describe_settings(self.settings, self.conversation.system))
                return True
            try:
                self.settings, said = apply_set(self.settings, command.argument)
            except ChatCommandError as exc:
                said = str(exc)
            self.say(said)
        else:
            self.say(HELP)
        return True

    def question(self, question: str) -> None:
        deltas = self.ask(self.conversation.messages(question), self.settings)
        try:
            reply = show_answer(deltas, self.out, AnswerRenderer(True, self.color))
        except AnswerFailed as exc:
            if exc.fatal:
                raise
            self.say(f"Error: {exc}")
            return
        self.conversation.record(question, reply)
        self.say("")

    def say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def answer_once(ask: Ask, question: str, settings: ChatSettings, system: str | None) -> None:
    """The piped form: one answer to stdout, nothing else."""
    messages = Conversation(system).messages(question)
    reply = show_answer(ask(messages, settings), sys.stdout, AnswerRenderer(False, False))
    if reply.stopped:
        raise KeyboardInterrupt


# -- the daemon --------------------------------------------------------------------------------
class ProgressLine:
    """A line on a terminal's stderr that rewrites itself; silent where stderr is not a
    terminal (scripts get the answer alone)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self._shown = ""

    def show(self, text: str, end: str = "") -> None:
        if self.live and (text, end) != (self._shown, ""):
            self.stream.write(f"\r\x1b[K{text}{end}")
            self.stream.flush()
        self._shown = "" if end else text

    def done(self, text: str) -> None:
        self.show(text, "\n")

    def clear(self) -> None:
        self.show("")


def ensure_daemon(
    paths: AppPaths, progress: ProgressLine, timeout: float = DAEMON_START_TIMEOUT_S
) -> DaemonState:
    """The running daemon, started detached (as the tray does) when there is none."""
    state = read_state(paths.state_file)
    if state is not None:
        return state
    launch = start_daemon(paths)
    started = time.monotonic()
    while True:
        state = read_state(paths.state_file)
        if state is not None:
            return state
        failure = launch.failure()
        elapsed = time.monotonic() - started
        if failure is not None or elapsed > timeout:
            progress.clear()
            if failure is not None:
                raise LocalserveError(
                    f"localserve did not start: {failure.removeprefix('Error: ')}"
                )
            raise LocalserveError(
                f"localserve did not start within {timeout:.0f} s; see {paths.daemon_log}."
            )
        progress.show(f"Starting localserve... {elapsed:.0f}s")
        time.sleep(0.1)


def preloads(model: str, mapped: Iterable[str]) -> bool:
    """Whether to load ``model`` through the control API before the first question: not for
    a cloud model (``provider/model``) or a name mapped to one; the router decides those."""
    name = model.strip().lower()
    return "/" not in name and name not in {m.lower() for m in mapped}


def wait_showing(work: Callable[[], T], tick: Callable[[float], None], every: float = 0.25) -> T:
    """``work()`` on a worker thread, with ``tick(seconds so far)`` until it is done; Ctrl-C
    stays with the main thread."""
    done: list[T] = []
    failed: list[BaseException] = []

    def target() -> None:
        try:
            done.append(work())
        except BaseException as exc:  # handed to the main thread
            failed.append(exc)

    thread = threading.Thread(target=target, name="chat-wait", daemon=True)
    started = time.monotonic()
    thread.start()
    while thread.is_alive():
        tick(time.monotonic() - started)
        thread.join(every)
    if failed:
        raise failed[0]
    return done[0]


def load_model(client: DaemonClient, model: str, progress: ProgressLine) -> None:
    label = f"Loading {model}..."
    started = time.monotonic()
    try:
        status = wait_showing(
            lambda: client.load_model(model), lambda s: progress.show(f"{label} {s:.0f}s")
        )
    except BaseException:
        progress.clear()
        raise
    if status.state != "ready":
        progress.clear()
        why = status.last_error or f"its runner is {status.state}"
        raise LocalserveError(f"{model} did not load: {why}")
    progress.done(f"{label} ready in {time.monotonic() - started:.1f} s")


class DaemonChat:
    """Streams answers from the daemon's ``/v1/chat/completions`` (admin key, never through a
    proxy: the daemon is on loopback)."""

    def __init__(
        self,
        state: DaemonState,
        key: str,
        model: str,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.state = state
        self.model = model
        self._http = httpx.Client(
            base_url=state.url + "/v1",
            headers={"authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(30.0, read=ANSWER_READ_TIMEOUT_S),
            transport=transport,
            trust_env=False,
        )

    def close(self) -> None:
        self._http.close()

    def ask(self, messages: list[Message], settings: ChatSettings) -> Generator[Delta, None, None]:
        body = {"model": self.model, "messages": messages, "stream": True}
        body.update(settings.request_fields())
        try:
            with self._http.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    error = error_from(response)
                    raise AnswerFailed(str(error), error.status_code)
                yield from read_deltas(response.iter_lines())
        except httpx.HTTPError as exc:
            url = self.state.url
            raise AnswerFailed(f"Lost the connection to localserve at {url}: {exc}") from exc


# -- the terminal ------------------------------------------------------------------------------
class LineEditor:
    """``input()`` with readline's editing and a history kept between chats, where Python has
    readline (POSIX); plain ``input()`` elsewhere."""

    def __init__(self, history: Path) -> None:
        self.history: Path | None = None
        try:
            import readline
        except ImportError:
            return
        self.history = history
        readline.set_history_length(HISTORY_LINES)
        with contextlib.suppress(OSError):
            readline.read_history_file(history)

    def read(self, prompt: str) -> str:
        return input(prompt)

    def save(self) -> None:
        if self.history is None:
            return
        import readline

        with contextlib.suppress(OSError):
            readline.write_history_file(self.history)
            self.history.chmod(0o600)  # what was typed is the user's alone


def colors_on(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def mapped_names(paths: AppPaths) -> list[str]:
    return list(ProviderStore(paths).load()[1])


@click.command()
@click.argument("model", required=False)
@click.option("--system", metavar="TEXT", help="A system prompt (in the chat: /system TEXT).")
@click.option(
    "--temperature",
    type=click.FloatRange(0.0, 2.0),
    help="Sampling temperature, 0 to 2 (in the chat: /set temperature X).",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    help="The longest answer, in tokens (in the chat: /set max_tokens N).",
)
def chat(
    model: str | None, system: str | None, temperature: float | None, max_tokens: int | None
) -> None:
    """Talk to a model in the terminal, like `ollama run`.

    MODEL is an installed model or a cloud provider's provider/model (the daemon's default
    model without one). Starts localserve if it is not running and loads the model. With
    stdin not a terminal (echo "question" | localserve chat MODEL) it answers once, to
    stdout, and exits. Type /? in the chat for its commands.
    """
    paths = app_paths().ensure()
    question = None
    if not sys.stdin.isatty():
        question = sys.stdin.read()
        if not question.strip():
            raise LocalserveError(
                "Nothing to ask: stdin was empty. Pipe a question in, or run this in a terminal."
            )
    progress = ProgressLine(sys.stderr)
    state = ensure_daemon(paths, progress)
    key = KeyStore(paths).admin_key()
    with DaemonClient(state, key, timeout=LOAD_TIMEOUT_S) as client:
        name = model or client.status().default_model
        if preloads(name, mapped_names(paths)):
            load_model(client, name, progress)
    settings = ChatSettings(temperature, max_tokens)
    daemon_chat = DaemonChat(state, key, name)
    try:
        if question is not None:
            answer_once(daemon_chat.ask, question, settings, system)
            return
        editor = LineEditor(paths.data_dir / "chat-history")
        click.echo("Type /? for help, /bye or Ctrl-D to leave.")
        loop = ChatLoop(
            daemon_chat.ask,
            editor.read,
            sys.stdout,
            colors_on(sys.stdout),
            settings,
            Conversation(system),
        )
        try:
            loop.run()
        finally:
            editor.save()
    finally:
        daemon_chat.close()
