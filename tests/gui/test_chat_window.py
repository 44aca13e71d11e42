"""The chat window (pytest-qt, offscreen Qt): real answers from a real daemon serving the
starter model, and a small scripted OpenAI-compatible server for what a real model will not do
on demand (thoughts, Markdown, a full queue, local-only, a model that failed to load).

A Qt warning fails these tests (but the offscreen platform's own notes on what it cannot do).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QGuiApplication, QTextBlockFormat, QTextDocument
from PySide6.QtWidgets import QFileDialog, QMessageBox
from pytestqt.qtbot import QtBot

from localserve.gui.background import Background
from localserve.gui.chat_store import ChatStore
from localserve.gui.chat_stream import Endpoint, StreamState
from localserve.gui.tray import TrayController
from localserve.gui.windows.chat import AnswerView, ChatWindow, QuestionView
from localserve.paths import AppPaths, app_paths
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess
from tests.helpers.fake_http import JsonHandler, LoopbackServer
from tests.helpers.tray import started_tray

pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    # What the offscreen platform says of any window shown or raised, and of a tray icon.
    pytest.mark.qt_log_ignore(
        r"This plugin does not support (propagateSizeHints|raise)\(\)",
        r"No such signal QPlatformNativeInterface::systemTrayWindowChanged",
    ),
]

ANSWER_TIMEOUT_MS = 60_000
CANCELLED_LINE = re.compile(r"generated (\d+) \(cancelled\)")


# -- a scripted OpenAI-compatible server -------------------------------------------------------
def chunk(content: str | None = None, reasoning: str | None = None) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if reasoning is not None:
        delta["reasoning_content"] = reasoning
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def openai_error(message: str, code: str, error_type: str = "invalid_request_error") -> Any:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


@dataclass
class Reply:
    """One scripted answer: an error (``status`` over 200 with ``body``) or a stream."""

    status: int = 200
    events: list[dict[str, Any]] = field(default_factory=list)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


SIMPLE = Reply(events=[chunk("Hello"), chunk(" from"), chunk(" the fake."), usage(9, 3)])


class FakeOpenAI:
    """``GET /v1/models`` and a scripted ``POST /v1/chat/completions``; records the bodies."""

    def __init__(self) -> None:
        self.models = [("tiny-local", "local"), ("prov/big-model", "prov")]
        self.capabilities = {"tiny-local": ["completion", "vision"]}
        self.script: list[Reply] = []
        self.received: list[dict[str, Any]] = []
        self.keys: list[str | None] = []
        self._server = LoopbackServer(self._handler())

    @property
    def url(self) -> str:
        return self._server.url

    def _handler(self) -> type[JsonHandler]:
        fake = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:
                data = [
                    {"id": name, "object": "model", "created": 1, "owned_by": owner}
                    | (
                        {"capabilities": fake.capabilities[name]}
                        if name in fake.capabilities
                        else {}
                    )
                    for name, owner in fake.models
                ]
                self.send_json(200, {"object": "list", "data": data})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                fake.received.append(json.loads(self.rfile.read(length)))
                fake.keys.append(self.bearer())
                reply = fake.script.pop(0) if fake.script else SIMPLE
                if reply.status != 200:
                    self.send_json(reply.status, reply.body, reply.headers)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                for event in reply.events:
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(reply.delay)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        return Handler

    def __enter__(self) -> FakeOpenAI:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def paths(isolated_home: Path) -> AppPaths:
    return app_paths().ensure()


@pytest.fixture
def idle_controller(qapp: Any, paths: AppPaths) -> Iterator[TrayController]:
    """A tray controller that is never started: the window only uses its threads."""
    controller = TrayController(paths, Background())
    yield controller
    controller.tray.hide()


def settle(window: ChatWindow, qtbot: QtBot) -> None:
    """Wait until the window's file thread has done all it was given."""
    done: list[bool] = []
    window._on_files(lambda: None, lambda _: done.append(True))
    qtbot.waitUntil(lambda: bool(done), timeout=10_000)


@pytest.fixture
def fake_window(
    fake: FakeOpenAI, idle_controller: TrayController, qtbot: QtBot
) -> Iterator[ChatWindow]:
    fake.script.clear()
    fake.received.clear()
    window = ChatWindow(idle_controller, locate=lambda: Endpoint(fake.url, "test-key"))
    window.show()
    qtbot.waitUntil(lambda: window.model_box.count() > 0, timeout=10_000)
    yield window
    window.stop()
    settle(window, qtbot)
    window.close()


@pytest.fixture
def daemon_paths(daemon: DaemonProcess) -> AppPaths:
    """The shared daemon's folders, its conversations cleared for each test."""
    paths = app_paths({"LOCALSERVE_HOME": str(daemon.home)})
    shutil.rmtree(paths.data_dir / "chats", ignore_errors=True)
    return paths


@pytest.fixture
def tray(qapp: Any, daemon_paths: AppPaths) -> Iterator[TrayController]:
    """Here the tray follows the shared daemon (it finds it through the state file)."""
    with started_tray(qapp, daemon_paths, launch_daemon=False) as controller:
        yield controller


@pytest.fixture
def window(tray: TrayController, qtbot: QtBot) -> Iterator[ChatWindow]:
    tray.show_chat()
    window: ChatWindow = tray._open_windows["chat"]
    qtbot.waitUntil(lambda: window.model_box.findText(STARTER_MODEL) >= 0, timeout=10_000)
    yield window
    window.stop()
    settle(window, qtbot)


def ask(window: ChatWindow, qtbot: QtBot, question: str) -> AnswerView:
    window.input.setPlainText(question)
    qtbot.mouseClick(window.send_button, Qt.MouseButton.LeftButton)
    assert window.busy and window.answer_view is not None
    return window.answer_view


def wait_answered(window: ChatWindow, qtbot: QtBot) -> None:
    qtbot.waitUntil(lambda: not window.busy, timeout=ANSWER_TIMEOUT_MS)


def png_file(path: Path, width: int, height: int, seed: int = 1) -> tuple[Path, str]:
    """A PNG of noise made with Pillow, written to ``path``; the path and its data URL."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(out, format="PNG")
    path.write_bytes(out.getvalue())
    return path, "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def question_views(window: ChatWindow) -> list[QuestionView]:
    layout = window.messages_layout
    items = (layout.itemAt(index) for index in range(layout.count()))
    return [item.widget() for item in items if isinstance(item.widget(), QuestionView)]


def cancelled_generations(daemon: DaemonProcess) -> list[int]:
    return [int(n) for n in CANCELLED_LINE.findall(daemon.runner_log())]


# -- a real daemon -------------------------------------------------------------------------------
def test_an_answer_streams_from_the_starter_model_with_its_figures(
    window: ChatWindow, qtbot: QtBot, daemon: DaemonProcess, daemon_paths: AppPaths
) -> None:
    assert window.model_box.currentText() == STARTER_MODEL  # the daemon's default model
    window.temperature.setValue(0)
    window.max_tokens.setValue(48)
    view = ask(window, qtbot, "Tell me about cats.")
    assert not window.send_button.isEnabled() and window.stop_button.isEnabled()
    rendered_while_streaming: list[bool] = []
    view.body.textChanged.connect(lambda: rendered_while_streaming.append(window.busy))
    wait_answered(window, qtbot)

    assert window.stream is not None and window.stream.state is StreamState.DONE
    answer = window.conversation.messages[-1]
    assert answer.role == "assistant" and len(answer.content) > 20
    assert view.body.source_text() == answer.content
    assert True in rendered_while_streaming, "the answer appeared only once it was complete"
    figures = view.figures.text()
    assert re.search(r"\d+\.\d tok/s · first token \d+\.\d\d s · \d+ tokens", figures), figures
    assert answer.stats is not None and not answer.stats.estimated  # the daemon's usage
    assert answer.stats.completion_tokens is not None and 1 < answer.stats.completion_tokens <= 48
    assert f"{answer.stats.completion_tokens} tokens ({answer.stats.prompt_tokens} in" in figures
    assert window.send_button.isEnabled() and not window.stop_button.isEnabled()
    # Kept on disk, with its figures.
    settle(window, qtbot)
    saved = ChatStore.for_paths(daemon_paths).load(window.conversation.id)
    assert saved.messages[-1].content == answer.content
    assert saved.messages[-1].stats == answer.stats


def test_stop_ends_a_long_answer_at_once_and_the_daemon_cancels_it(
    window: ChatWindow, qtbot: QtBot, daemon: DaemonProcess
) -> None:
    window.temperature.setValue(0)
    window.max_tokens.setValue(3000)
    before = len(cancelled_generations(daemon))
    view = ask(window, qtbot, "Count from 1 to 1000, one number per line.")
    qtbot.waitUntil(lambda: len(view.answer_text) > 30, timeout=ANSWER_TIMEOUT_MS)
    assert window.busy, "the answer ended by itself before Stop"
    qtbot.mouseClick(window.stop_button, Qt.MouseButton.LeftButton)
    # At once: no waiting on the daemon.
    assert not window.busy and window.send_button.isEnabled()
    assert window.stream is not None and window.stream.state is StreamState.STOPPED
    answer = window.conversation.messages[-1]
    assert answer.stopped and answer.content == view.answer_text
    assert view.body.source_text() == answer.content  # what came is shown, not thrown away
    assert "stopped" in view.figures.text() and "≈" in view.figures.text()
    # The closed connection made the runner cancel the generation, long before 3000 tokens.
    deadline = time.monotonic() + 30
    while len(cancelled_generations(daemon)) <= before and time.monotonic() < deadline:
        qtbot.wait(100)
    counts = cancelled_generations(daemon)
    assert len(counts) > before, "the runner never logged a cancelled generation"
    assert counts[-1] < 1000, f"it went on for {counts[-1]} tokens"
    # And the model answers the next question.
    window.max_tokens.setValue(8)
    ask(window, qtbot, "Hi")
    wait_answered(window, qtbot)
    assert window.stream is not None and window.stream.state is StreamState.DONE


def test_an_unknown_model_is_said_in_place(window: ChatWindow, qtbot: QtBot) -> None:
    window.model_box.setCurrentText("no-such-model")
    view = ask(window, qtbot, "Hello?")
    wait_answered(window, qtbot)
    assert view.problem.isVisible()
    text = view.problem.text()
    assert text.startswith("No such model.") and "no-such-model" in text
    assert "Pick one from the model list" in text
    assert not view.body.isVisible()
    # A failed question is not sent again with the next one.
    assert window.conversation.request_messages() == []


def test_view_code_fills_in_the_endpoint_never_the_key(
    window: ChatWindow, qtbot: QtBot, daemon: DaemonProcess, tmp_path: Path
) -> None:
    window.system_prompt.setPlainText("Answer in one word.")
    window.temperature.setValue(0)
    window.max_tokens.setValue(4)
    window.input.setPlainText("Say 'it's ok'.")  # a quote, for the shell
    qtbot.mouseClick(window.code_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.code_dialog is not None, timeout=10_000)
    dialog = window.code_dialog
    assert dialog is not None and dialog.isVisible()
    snippets = dialog.snippets
    assert list(snippets) == ["curl", "Python", "JavaScript"]
    assert [dialog.tabs.tabText(i) for i in range(dialog.tabs.count())] == list(snippets)
    key = daemon.admin_key
    for code in snippets.values():
        assert daemon.base_url in code
        assert key not in code
    assert "Say 'it's ok'." in snippets["Python"] and "Say 'it's ok'." in snippets["JavaScript"]
    assert "Bearer $LOCALSERVE_API_KEY" in snippets["curl"]
    assert 'os.environ["LOCALSERVE_API_KEY"]' in snippets["Python"]
    assert "process.env.LOCALSERVE_API_KEY" in snippets["JavaScript"]
    # The code works as it is, given the key in the environment.
    env = {**os.environ, "LOCALSERVE_API_KEY": key, "NO_PROXY": "*", "no_proxy": "*"}
    python = subprocess.run(
        [sys.executable, "-c", snippets["Python"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert python.returncode == 0, python.stderr
    assert re.search(r"\d+ tokens", python.stdout)
    if shutil.which("curl"):
        curl = subprocess.run(
            ["bash", "-c", snippets["curl"]], env=env, capture_output=True, text=True, timeout=60
        )
        assert curl.returncode == 0 and '"usage"' in curl.stdout, curl.stdout + curl.stderr
    if shutil.which("node"):
        script = tmp_path / "chat.mjs"
        script.write_text(snippets["JavaScript"])
        checked = subprocess.run(
            ["node", "--check", str(script)], capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, checked.stderr
    dialog.copy_current()
    assert QGuiApplication.clipboard().text() == snippets["curl"]


def test_the_tray_menu_and_the_models_window_open_the_chat(
    tray: TrayController, qtbot: QtBot
) -> None:
    action = next(a for a in tray.menu.actions() if a.text() == "Chat...")
    action.trigger()
    window = tray._open_windows["chat"]
    assert isinstance(window, ChatWindow) and window.isVisible()
    window.model_box.setCurrentText("something-else")
    tray.show_models_window()
    models = tray._open_windows["models"]
    qtbot.waitUntil(lambda: models.installed_table.rowCount() > 0, timeout=10_000)
    assert not models.chat_button.isEnabled()
    models.installed_table.selectRow(0)
    assert models.chat_button.isEnabled()
    qtbot.mouseClick(models.chat_button, Qt.MouseButton.LeftButton)
    assert window.model_box.currentText() == models.installed_table.item(0, 0).text()
    assert window.model_box.currentText() == STARTER_MODEL
    settle(window, qtbot)


# -- a scripted server ---------------------------------------------------------------------------
def test_the_picker_lists_local_models_then_cloud_ones(fake_window: ChatWindow) -> None:
    box = fake_window.model_box
    assert [box.itemText(i) for i in range(box.count())] == ["tiny-local", "", "prov/big-model"]
    assert box.itemData(2, Qt.ItemDataRole.ToolTipRole) == "cloud: prov"
    assert box.itemData(0, Qt.ItemDataRole.ToolTipRole) == "on this machine"
    assert box.currentText() == "tiny-local"


def test_thoughts_are_folded_above_an_answer_rendered_as_markdown(
    fake_window: ChatWindow, fake: FakeOpenAI, qtbot: QtBot
) -> None:
    fake.script.append(
        Reply(
            events=[
                chunk(reasoning="The user wants code. "),
                chunk(reasoning="Keep it short."),
                chunk("Here **it is**:\n\n```python\n"),
                chunk("print('hi')\n```\n"),
                usage(21, 14),
            ],
            delay=0.02,
        )
    )
    fake_window.system_prompt.setPlainText("Be brief.")
    fake_window.temperature.setValue(0.2)
    fake_window.max_tokens.setValue(64)
    view = ask(fake_window, qtbot, "Print hi in Python")
    wait_answered(fake_window, qtbot)

    sent = fake.received[-1]
    assert sent["model"] == "tiny-local" and sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 64
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Print hi in Python"},
    ]
    assert fake.keys[-1] == "test-key"
    # Thoughts: apart, folded, and unfolded on click.
    answer = fake_window.conversation.messages[-1]
    assert answer.reasoning == "The user wants code. Keep it short."
    assert "The user wants" not in answer.content
    assert view.thoughts_button.isVisible() and not view.thoughts_button.isChecked()
    assert view.thoughts_button.text() == "Thoughts (7 words)"
    assert not view.thoughts.isVisible()
    qtbot.mouseClick(view.thoughts_button, Qt.MouseButton.LeftButton)
    assert view.thoughts.isVisible()
    assert view.thoughts.toPlainText() == answer.reasoning
    # Markdown: bold text, and the code as a code block (no fences left in the text).
    shown = view.body.toPlainText()
    assert "print('hi')" in shown and "```" not in shown and "**" not in shown
    fenced = []
    block = view.body.document().begin()
    while block.isValid():
        if block.blockFormat().hasProperty(QTextBlockFormat.Property.BlockCodeFence):
            fenced.append(block.text())
        block = block.next()
    assert fenced == ["print('hi')"]
    assert "14 tokens (21 in the prompt)" in view.figures.text()
    # A follow-up sends the answer back, without its thoughts.
    ask(fake_window, qtbot, "Thanks")
    wait_answered(fake_window, qtbot)
    assert fake.received[-1]["messages"][2] == {"role": "assistant", "content": answer.content}


def test_model_markdown_cannot_load_files_or_run_html(
    fake_window: ChatWindow, fake: FakeOpenAI, qtbot: QtBot, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not an image")
    fake.script.append(Reply(events=[chunk(f"<b>bold?</b> ![x]({secret.as_uri()})"), usage(1, 1)]))
    view = ask(fake_window, qtbot, "Show me")
    wait_answered(fake_window, qtbot)
    assert "<b>bold?</b>" in view.body.toPlainText()  # raw HTML is shown as text
    image = QTextDocument.ResourceType.ImageResource
    loaded = view.body.document().resource(image, QUrl(secret.as_uri()))
    assert loaded is None or loaded.isEmpty(), "the answer's image link read a local file"


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (
            Reply(
                429,
                body=openai_error(
                    "Too many requests wait for smollm2.", "queue_full", "rate_limit_error"
                ),
                headers={"Retry-After": "7"},
            ),
            "The model is busy. Too many requests wait for smollm2. Try again in 7 s.",
        ),
        (
            Reply(
                403,
                body=openai_error(
                    "Not forwarded: the request names prov/big-model, but local-only mode "
                    "forbids it.",
                    "forwarding_not_allowed",
                ),
            ),
            "Local only: not sent to a cloud provider. Not forwarded: the request names "
            "prov/big-model, but local-only mode forbids it. Turn off local-only in the Cloud "
            "window (or Settings), or pick a local model.",
        ),
        (
            Reply(
                503,
                body=openai_error(
                    "Model tiny-local failed to load: bad magic.",
                    "model_load_failed",
                    "server_error",
                ),
            ),
            "The model could not be loaded. Model tiny-local failed to load: bad magic. See "
            "its log (Open logs in the tray menu), or pick another model.",
        ),
        (
            Reply(events=[chunk("Half"), {"error": openai_error("Runner died.", "x")["error"]}]),
            "The answer was cut short. Runner died. Send again to retry.",
        ),
        (
            Reply(
                400,
                body=openai_error(
                    "The model 'tiny-local' does not see images: it has no vision projector.",
                    "image_not_supported",
                ),
            ),
            "This model does not see images. The model 'tiny-local' does not see images: it has "
            "no vision projector. Pick a model that does (one with a vision projector), then "
            "attach the images again.",
        ),
    ],
    ids=["queue-full", "local-only", "load-failed", "mid-stream", "image-not-supported"],
)
def test_errors_show_in_place_with_what_to_do(
    fake_window: ChatWindow, fake: FakeOpenAI, qtbot: QtBot, reply: Reply, expected: str
) -> None:
    fake.script.append(reply)
    view = ask(fake_window, qtbot, "Hello?")
    wait_answered(fake_window, qtbot)
    assert fake_window.stream is not None and fake_window.stream.state is StreamState.FAILED
    assert view.problem.isVisible() and view.problem.text() == expected
    assert fake_window.conversation.messages[-1].error == expected
    assert fake_window.send_button.isEnabled()
    assert fake_window.input.toPlainText() == "Hello?"  # back in the input, to send again


def test_a_daemon_that_is_not_running_is_said_in_place(
    idle_controller: TrayController, qtbot: QtBot
) -> None:
    # Nothing listens on a port just closed; and no state file at all.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    for locate in (lambda: Endpoint(url, "k"), lambda: None):
        window = ChatWindow(idle_controller, locate=locate)
        window.show()
        qtbot.waitUntil(lambda w=window: "not running" in w.status_label.text(), timeout=10_000)
        window.model_box.setCurrentText("any")
        view = ask(window, qtbot, "Anyone there?")
        wait_answered(window, qtbot)
        assert view.problem.text() == (
            "localserve is not running. Start serving from the tray menu (Start serving), "
            "then send again."
        )
        settle(window, qtbot)
        window.close()


def test_conversations_are_saved_listed_reopened_and_deleted(
    fake_window: ChatWindow,
    fake: FakeOpenAI,
    idle_controller: TrayController,
    paths: AppPaths,
    qtbot: QtBot,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = paths.data_dir / "chats"
    window = fake_window
    window.system_prompt.setPlainText("You are a cat.")
    ask(window, qtbot, "First question\nwith a second line")
    wait_answered(window, qtbot)
    first = window.conversation.id
    qtbot.mouseClick(window.new_button, Qt.MouseButton.LeftButton)
    assert window.answer_views() == []
    window.system_prompt.setPlainText("")
    window.model_box.setCurrentText("prov/big-model")
    ask(window, qtbot, "Second question")
    wait_answered(window, qtbot)
    second = window.conversation.id
    settle(window, qtbot)

    # One file each, whole JSON, no temporary files left behind.
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{first}.json", f"{second}.json"])
    saved = json.loads((folder / f"{first}.json").read_text())
    assert saved["system_prompt"] == "You are a cat."
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant"]
    assert saved["messages"][1]["content"] == "Hello from the fake."
    # Listed, newest first, titled by the first question's first line.
    titles = [window.sidebar.item(i).text().splitlines()[0] for i in range(window.sidebar.count())]
    assert titles == ["Second question", "First question"]
    assert window.sidebar.currentItem().data(Qt.ItemDataRole.UserRole) == second

    # Reopened on click, with its settings.
    item = window.sidebar.item(1)
    qtbot.mouseClick(
        window.sidebar.viewport(),
        Qt.MouseButton.LeftButton,
        pos=window.sidebar.visualItemRect(item).center(),
    )
    qtbot.waitUntil(lambda: window.conversation.id == first, timeout=5_000)
    assert window.system_prompt.toPlainText() == "You are a cat."
    assert window.model_box.currentText() == "tiny-local"
    views = window.answer_views()
    assert [v.body.source_text() for v in views] == ["Hello from the fake."]
    assert "3 tokens (9 in the prompt)" in views[0].figures.text()

    # A new window (the next session) lists them from disk.
    again = ChatWindow(idle_controller, locate=lambda: Endpoint(fake.url, "test-key"))
    qtbot.waitUntil(lambda: again.sidebar.count() == 2, timeout=5_000)
    settle(again, qtbot)

    # Deleting asks first; No keeps the file.
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    asked: list[str] = []

    def question(*args: Any) -> QMessageBox.StandardButton:
        asked.append(args[2])
        return answers.pop(0)

    monkeypatch.setattr(QMessageBox, "question", question)
    qtbot.mouseClick(window.delete_button, Qt.MouseButton.LeftButton)
    assert asked == ["Delete 'First question'? This cannot be undone."]
    settle(window, qtbot)
    assert (folder / f"{first}.json").exists()
    qtbot.mouseClick(window.delete_button, Qt.MouseButton.LeftButton)
    settle(window, qtbot)
    qtbot.waitUntil(lambda: window.sidebar.count() == 1, timeout=5_000)
    assert [p.name for p in folder.iterdir()] == [f"{second}.json"]
    assert window.conversation.id != first and window.conversation.messages == []
    assert window.sidebar.item(0).data(Qt.ItemDataRole.UserRole) == second


def test_attached_images_go_first_in_the_question_and_stay_with_the_conversation(
    fake_window: ChatWindow,
    fake: FakeOpenAI,
    idle_controller: TrayController,
    paths: AppPaths,
    qtbot: QtBot,
    tmp_path: Path,
) -> None:
    window = fake_window
    image, url = png_file(tmp_path / "noise.png", 24, 16)
    assert window.attach_button.isEnabled()  # tiny-local lists "vision"
    window.attach_files([image])
    assert [chip.attachment.name for chip in window.attachment_chips()] == ["noise.png"]
    assert window.attach_bar.isVisible()
    ask(window, qtbot, "What is in it?")
    wait_answered(window, qtbot)

    image_part = {"type": "image_url", "image_url": {"url": url}}
    assert fake.received[-1]["messages"] == [
        {"role": "user", "content": [image_part, {"type": "text", "text": "What is in it?"}]}
    ]
    # Sent: the chips are gone; the question shows the image.
    assert window.attachments == [] and window.attachment_chips() == []
    assert not window.attach_bar.isVisible()
    [question] = question_views(window)
    [shown] = question.thumbnails
    assert (shown.pixmap().width(), shown.pixmap().height()) == (24, 16)
    # The history sends it again.
    ask(window, qtbot, "And now?")
    wait_answered(window, qtbot)
    assert fake.received[-1]["messages"][0]["content"][0] == image_part
    assert fake.received[-1]["messages"][2] == {"role": "user", "content": "And now?"}
    # On disk as a data URL.
    settle(window, qtbot)
    saved = json.loads((paths.data_dir / "chats" / f"{window.conversation.id}.json").read_text())
    assert saved["messages"][0]["images"] == [url]
    assert saved["messages"][2]["images"] == []

    # Reopened (the next session): shown and sent again.
    again = ChatWindow(idle_controller, locate=lambda: Endpoint(fake.url, "test-key"))
    qtbot.waitUntil(lambda: again.sidebar.count() == 1, timeout=5_000)
    again.open_conversation(window.conversation.id)
    qtbot.waitUntil(lambda: again.conversation.id == window.conversation.id, timeout=5_000)
    first, second = question_views(again)
    assert len(first.thumbnails) == 1 and not first.thumbnails[0].pixmap().isNull()
    assert second.thumbnails == []
    assert again.request_body("More?")["messages"][0]["content"][0] == image_part
    settle(again, qtbot)
    again.close()


def test_a_failed_question_comes_back_with_its_images_unless_something_new_was_typed(
    fake_window: ChatWindow, fake: FakeOpenAI, qtbot: QtBot, tmp_path: Path
) -> None:
    window = fake_window
    image, _ = png_file(tmp_path / "noise.png", 8, 8)
    window.attach_files([image])
    refusal = openai_error("Model tiny-local failed to load: bad magic.", "model_load_failed")
    fake.script.append(Reply(503, body=refusal))
    ask(window, qtbot, "What is in it?")
    assert window.input.toPlainText() == "" and window.attachments == []  # sent
    wait_answered(window, qtbot)
    assert window.input.toPlainText() == "What is in it?"
    assert [chip.attachment.name for chip in window.attachment_chips()] == ["noise.png"]
    # An answer that comes puts nothing back.
    window.clear_attachments()
    ask(window, qtbot, "Hello?")
    wait_answered(window, qtbot)
    assert window.input.toPlainText() == "" and window.attachments == []
    # Something typed while a failing answer was awaited stays as typed.
    fake.script.append(Reply(503, body=refusal))
    ask(window, qtbot, "Again?")
    window.input.setPlainText("Something else")
    wait_answered(window, qtbot)
    assert window.input.toPlainText() == "Something else"
    settle(window, qtbot)


def test_the_attach_button_follows_the_model_and_files_are_checked(
    fake_window: ChatWindow,
    fake: FakeOpenAI,
    qtbot: QtBot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    window = fake_window
    for model, sees in [
        ("prov/big-model", True),  # a cloud model: its provider decides
        ("other-local", False),  # not listed as seeing
        ("prov2/unlisted", True),
        ("tiny-local", True),
    ]:
        window.model_box.setCurrentText(model)
        assert window.attach_button.isEnabled() is sees, model
    window.model_box.setCurrentText("other-local")
    assert "other-local does not see images" in window.attach_button.toolTip()
    window.model_box.setCurrentText("tiny-local")

    # The button opens the file dialog, then attaches what was picked.
    small, _ = png_file(tmp_path / "small.png", 8, 8)
    picked: list[str] = []

    def pick(parent: Any, caption: str, folder: str, filters: str) -> tuple[list[str], str]:
        picked.append(filters)
        return [str(small)], filters

    monkeypatch.setattr(QFileDialog, "getOpenFileNames", pick)
    qtbot.mouseClick(window.attach_button, Qt.MouseButton.LeftButton)
    assert "*.png *.jpg *.jpeg *.webp *.gif" in picked[0]
    [chip] = window.attachment_chips()
    qtbot.mouseClick(chip.remove_button, Qt.MouseButton.LeftButton)
    assert window.attachments == [] and window.attachment_chips() == []

    # Refused in place, with one line: not an image, over 20 MiB.
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    window.attach_files([text])
    assert window.attach_note.text() == "notes.png is not a PNG, JPEG, WebP or GIF image."
    huge = tmp_path / "huge.png"
    with huge.open("wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.truncate(21 * 1024 * 1024)
    window.attach_files([huge])
    assert window.attach_note.text() == "huge.png is 21.0 MiB; images up to 20.0 MiB can be sent."
    assert window.attachments == [] and window.attach_bar.isVisible()

    # Over 1 MB: read on a worker thread; sending waits for it.
    large, url = png_file(tmp_path / "large.png", 700, 700)
    assert large.stat().st_size > 1024 * 1024
    window.attach_files([large])
    assert window.attachments == [] and window.attach_note.text() == ""
    window.input.setPlainText("Is it read?")
    window.send()
    assert not window.busy and "still being read" in window.attach_note.text()
    qtbot.waitUntil(lambda: len(window.attachments) == 1, timeout=10_000)
    [attachment] = window.attachments
    assert attachment.data_url == url
    assert (attachment.image.width(), attachment.image.height()) == (128, 128)
    ask(window, qtbot, "Is it read?")
    wait_answered(window, qtbot)
    assert fake.received[-1]["messages"][0]["content"][0]["image_url"]["url"] == url
