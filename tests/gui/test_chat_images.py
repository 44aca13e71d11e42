"""Images in the chat window, through a real daemon serving the tiny vision pair
(``tests/helpers/vision_model.py``, imported with its projector) beside the starter model.

The pair's weights are noise, so the tests check the plumbing: the answer streams, the image's
tokens are counted in the prompt (a dropped image would count as the text alone), the saved
conversation keeps the image, and a model without a projector is refused in place.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytestqt.qtbot import QtBot

from localserve.gui.background import Background
from localserve.gui.chat_store import ChatStore
from localserve.gui.chat_stream import StreamState
from localserve.gui.tray import TrayController
from localserve.gui.windows.chat import ChatWindow
from localserve.paths import AppPaths, app_paths
from tests.gui.test_chat_window import ask, png_file, question_views, settle, wait_answered
from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess
from tests.helpers.imported_models import ModelImport, daemon_with_models
from tests.helpers.vision_model import IMAGE_TOKENS, make_vision_pair

pytestmark = [
    pytest.mark.qt_log_level_fail("WARNING"),
    pytest.mark.qt_log_ignore(
        r"This plugin does not support (propagateSizeHints|raise)\(\)",
        r"No such signal QPlatformNativeInterface::systemTrayWindowChanged",
    ),
]

VISION = "tiny-llava"
QUESTION = "What is in this picture?"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """The starter model and the tiny vision pair, as ``models import --mmproj`` adds it."""
    home = tmp_path_factory.mktemp("chat-vision-daemon")
    text, mmproj = make_vision_pair(tmp_path_factory.mktemp("chat-vision-files"))
    with daemon_with_models(home, [ModelImport(VISION, text, mmproj)]) as running:
        yield running


@pytest.fixture
def daemon_paths(daemon: DaemonProcess) -> AppPaths:
    paths = app_paths({"LOCALSERVE_HOME": str(daemon.home)})
    shutil.rmtree(paths.data_dir / "chats", ignore_errors=True)
    return paths


@pytest.fixture
def window(qapp: Any, daemon_paths: AppPaths, qtbot: QtBot) -> Iterator[ChatWindow]:
    tray = TrayController(daemon_paths, Background(), poll_interval=0.25)
    tray.start(launch_daemon=False)
    tray.show_chat()
    window: ChatWindow = tray._open_windows["chat"]
    qtbot.waitUntil(lambda: window.model_box.findText(VISION) >= 0, timeout=10_000)
    yield window
    window.stop()
    settle(window, qtbot)
    tray.shutdown()


def test_an_image_reaches_a_model_that_sees_and_stays_in_the_saved_chat(
    window: ChatWindow,
    qtbot: QtBot,
    daemon_paths: AppPaths,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    window.model_box.setCurrentText(VISION)
    assert window.attach_button.isEnabled()  # /v1/models lists "vision" for it
    window.temperature.setValue(0)
    window.max_tokens.setValue(8)
    # The same question without the image first: its prompt tokens.
    ask(window, qtbot, QUESTION)
    wait_answered(window, qtbot)
    plain = window.conversation.messages[-1].stats
    assert plain is not None and plain.prompt_tokens is not None

    window.new_chat()
    image, url = png_file(tmp_path / "noise.png", 80, 60, seed=7)
    window.attach_files([image])
    window.input.setPlainText(QUESTION)
    window.send()
    view = window.answer_view
    assert view is not None and window.busy
    pieces: list[str] = []
    original = view.add_text
    monkeypatch.setattr(view, "add_text", lambda piece: (pieces.append(piece), original(piece)))
    wait_answered(window, qtbot)

    assert window.stream is not None and window.stream.state is StreamState.DONE
    answer = window.conversation.messages[-1]
    assert answer.error is None and answer.content
    assert len(pieces) > 1 and "".join(pieces) == answer.content  # it streamed
    assert answer.stats is not None and not answer.stats.estimated
    assert answer.stats.prompt_tokens == plain.prompt_tokens + IMAGE_TOKENS
    assert f"({answer.stats.prompt_tokens} in the prompt)" in view.figures.text()
    [question] = question_views(window)
    assert len(question.thumbnails) == 1
    # Saved with the image, as a data URL.
    settle(window, qtbot)
    file = ChatStore.for_paths(daemon_paths).path(window.conversation.id)
    saved = json.loads(file.read_text())
    assert saved["messages"][0]["images"] == [url]
    assert saved["messages"][0]["content"] == QUESTION


def test_a_model_without_a_projector_gets_no_button_and_refuses_images_in_place(
    window: ChatWindow, qtbot: QtBot, tmp_path: Path
) -> None:
    window.model_box.setCurrentText(STARTER_MODEL)
    assert not window.attach_button.isEnabled()
    assert "does not see images" in window.attach_button.toolTip()
    # Attached anyway (say, before switching models): the daemon refuses, and it says so.
    image, _ = png_file(tmp_path / "noise.png", 32, 32)
    window.attach_files([image])
    view = ask(window, qtbot, QUESTION)
    wait_answered(window, qtbot)
    assert view.problem.isVisible()
    text = view.problem.text()
    assert text.startswith("This model does not see images.") and VISION in text, text
    # A refused question is not sent again with the next one.
    assert window.conversation.request_messages() == []
