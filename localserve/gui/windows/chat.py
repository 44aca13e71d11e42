"""Chat: talk to any model the daemon serves, local or cloud, to try it where it was installed.

Answers stream over Qt's asynchronous network stack (``gui/chat_stream.py``) and are shown as
Markdown while they arrive, the model's thoughts apart and folded above them, and a line of
figures under each (tok/s, time to first token, tokens). Stop closes the connection, which makes
the daemon cancel the generation. Conversations are files under ``<data_dir>/chats``
(``gui/chat_store.py``), read and written in order on one worker thread; finding the daemon
(state file, keyring) happens on the tray's worker threads. The GUI thread never waits.

Images: for a model that sees (its /v1/models entry lists "vision", or any cloud model), "Attach
image..." adds PNG, JPEG, WebP or GIF files (up to 20 MiB each) as chips above the question; they
go first in the question's OpenAI content parts, as data URLs, and stay with the conversation
on disk. A file over 1 MiB is read (and its thumbnail made) on a worker thread.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt, QTimer
from PySide6.QtGui import (
    QFontDatabase,
    QGuiApplication,
    QImage,
    QImageReader,
    QKeySequence,
    QPixmap,
    QShortcut,
)
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from localserve.gui.chat_code import chat_request, request_snippets
from localserve.gui.chat_store import (
    MAX_IMAGE_BYTES,
    AnswerStats,
    ChatMessage,
    ChatStore,
    Conversation,
    ConversationSummary,
    ImageFileError,
    data_url_bytes,
    image_data_url,
    new_conversation,
    too_large,
    user_content,
)
from localserve.gui.chat_stream import (
    NOT_RUNNING,
    ChatError,
    ChatStream,
    Endpoint,
    ModelChoice,
    ModelListRequest,
    StreamOutcome,
    StreamState,
    locate_daemon,
    network_manager,
)
from localserve.gui.icons import icon
from localserve.gui.markdown import MarkdownView
from localserve.units import format_bytes

if TYPE_CHECKING:
    from localserve.gui.tray import TrayController

T = TypeVar("T")

RENDER_INTERVAL_MS = 50  # Markdown is rendered again at most this often while an answer streams
DEFAULT_URL = "http://127.0.0.1:11435"  # in "View code" while localserve is not running
LARGE_FILE_BYTES = 1024 * 1024  # an image file larger than this is read on a worker thread
THUMBNAIL_PX = 128  # the longer side of an image in the transcript
CHIP_PX = 40  # ... and in its chip above the question
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.gif);;All files (*)"
CODE_URL_CHARS = 4096  # "View code" shortens longer data URLs
STYLE = """
QFrame#question { background: #e8f0fe; border-radius: 8px; }
QFrame#chip { background: #f3f4f6; border: 1px solid #d1d5db; border-radius: 6px; }
QLabel#attachnote { color: #991b1b; }
QFrame#answer { background: #ffffff; border: 1px solid #e5e7eb; border-radius: 8px; }
QLabel#who { color: #4b5563; font-weight: bold; }
QLabel#figures { color: #6b7280; }
QLabel#problem { background: #fef2f2; color: #991b1b; border: 1px solid #fecaca;
                 border-radius: 6px; padding: 6px; }
QWidget#transcript { background: #f9fafb; }
"""


def describe_stats(stats: AnswerStats | None, stopped: bool, finish_reason: str | None) -> str:
    """The figures line under an answer: "41.3 tok/s · first token 0.18 s · 96 tokens (31 in
    the prompt)"; "≈" marks tokens counted here when the daemon sent no usage (a stopped
    answer)."""
    parts = []
    if stats is not None:
        if stats.tokens_per_s is not None:
            parts.append(f"{stats.tokens_per_s:.1f} tok/s")
        if stats.ttft_s is not None:
            parts.append(f"first token {stats.ttft_s:.2f} s")
        if stats.completion_tokens is not None:
            about = "≈" if stats.estimated else ""
            tokens = f"{about}{stats.completion_tokens} tokens"
            if stats.prompt_tokens is not None:
                tokens += f" ({stats.prompt_tokens} in the prompt)"
            parts.append(tokens)
    if stopped:
        parts.append("stopped")
    elif finish_reason == "length":
        parts.append("cut at max tokens")
    return " · ".join(parts)


def thumbnail(data: bytes, size: int = THUMBNAIL_PX) -> QImage:
    """An image file's bytes as a small image (null if Qt cannot read them). Only what the
    thumbnail needs is decoded where the format allows (JPEG); safe on a worker thread."""
    if not data:
        return QImage()
    buffer = QBuffer()
    buffer.setData(QByteArray(data))
    buffer.open(QIODevice.OpenModeFlag.ReadOnly)
    reader = QImageReader(buffer)
    reader.setAutoTransform(True)
    full = reader.size()
    if full.isValid() and max(full.width(), full.height()) > size:
        reader.setScaledSize(full.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio))
    image = reader.read()
    buffer.close()
    return image


def image_label(image: QImage, size: int, tip: str = "") -> QLabel:
    label = QLabel()
    if image.isNull():
        label.setText("[image]")
    else:
        pixmap = QPixmap.fromImage(image)
        if max(pixmap.width(), pixmap.height()) > size:
            pixmap = pixmap.scaled(
                size,
                size,
                Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
        label.setPixmap(pixmap)
    label.setToolTip(tip)
    return label


@dataclass
class Attachment:
    """An image waiting to go with the next question."""

    name: str
    data_url: str
    image: QImage  # its thumbnail


def load_attachment(path: Path) -> Attachment:
    """The image file at ``path``, read whole (blocking file IO), with its thumbnail."""
    data = path.read_bytes()
    return Attachment(path.name, image_data_url(data, path.name), thumbnail(data))


def try_load_attachment(path: Path) -> Attachment | str:
    """``load_attachment``, or the one line that says why not."""
    try:
        return load_attachment(path)
    except ImageFileError as exc:
        return str(exc)
    except OSError as exc:
        return f"{path.name} cannot be read: {exc.strerror or exc}."


def shorten_images(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with long data URLs cut short, for "View code" (megabytes of base64 help no
    one reading the code)."""
    shortened = copy.deepcopy(body)
    for message in shortened.get("messages") or []:
        for part in message["content"] if isinstance(message.get("content"), list) else []:
            image = part.get("image_url") if isinstance(part, dict) else None
            if not isinstance(image, dict):
                continue
            url = image.get("url")
            if isinstance(url, str) and len(url) > CODE_URL_CHARS:
                header = url.partition(",")[0]
                image["url"] = f"{header},<{len(url) // 1024} KB of base64, left out here>"
    return shortened


class AttachmentChip(QFrame):
    """One attached image above the question: its thumbnail, its name and a remove button."""

    def __init__(self, attachment: Attachment, remove: Callable[[Attachment], None]) -> None:
        super().__init__()
        self.setObjectName("chip")
        self.attachment = attachment
        name = QLabel(attachment.name if len(attachment.name) <= 24 else attachment.name[:23] + "…")
        name.setToolTip(attachment.name)
        self.remove_button = QToolButton()
        self.remove_button.setText("\u00d7")  # a multiplication sign
        self.remove_button.setAutoRaise(True)
        self.remove_button.setToolTip(f"Remove {attachment.name}")
        self.remove_button.clicked.connect(lambda: remove(attachment))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 2, 2, 2)
        layout.addWidget(image_label(attachment.image, CHIP_PX, attachment.name))
        layout.addWidget(name)
        layout.addWidget(self.remove_button)


class QuestionView(QFrame):
    def __init__(self, text: str, images: list[QImage] | None = None) -> None:
        super().__init__()
        self.setObjectName("question")
        who = QLabel("You")
        who.setObjectName("who")
        self.thumbnails = [image_label(image, THUMBNAIL_PX) for image in images or []]
        self.body = MarkdownView()
        self.body.set_plain(text)
        self.body.setVisible(bool(text) or not self.thumbnails)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.addWidget(who)
        if self.thumbnails:
            row = QHBoxLayout()
            for label in self.thumbnails:
                row.addWidget(label)
            row.addStretch(1)
            layout.addLayout(row)
        layout.addWidget(self.body)


class AnswerView(QFrame):
    """One answer: the thoughts (folded), the answer as Markdown, its figures or its error."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self.setObjectName("answer")
        self.thought_text = ""
        self.answer_text = ""
        who = QLabel(model)
        who.setObjectName("who")
        self.thoughts_button = QToolButton()
        self.thoughts_button.setCheckable(True)
        self.thoughts_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.thoughts_button.setAutoRaise(True)
        self.thoughts_button.toggled.connect(self.show_thoughts)
        self.thoughts_button.hide()
        self.thoughts = MarkdownView(style="color: #6b7280; font-style: italic;")
        self.thoughts.hide()
        self.body = MarkdownView()
        self.figures = QLabel("")
        self.figures.setObjectName("figures")
        self.problem = QLabel("")
        self.problem.setObjectName("problem")
        self.problem.setWordWrap(True)
        self.problem.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.problem.hide()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 6, 10, 6)
        layout.addWidget(who)
        layout.addWidget(self.thoughts_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.thoughts)
        layout.addWidget(self.body)
        layout.addWidget(self.problem)
        layout.addWidget(self.figures)
        self._render_timer = QTimer(self)
        self._render_timer.setSingleShot(True)
        self._render_timer.setInterval(RENDER_INTERVAL_MS)
        self._render_timer.timeout.connect(self.render_now)
        self._label_thoughts(thinking=False)

    # -- while it streams ------------------------------------------------------------------------
    def waiting(self) -> None:
        self.figures.setText("Waiting for the model (it may be loading)...")

    def add_thought(self, piece: str) -> None:
        self.thought_text += piece
        self.thoughts_button.show()
        self._label_thoughts(thinking=not self.answer_text)
        self.figures.setText("Thinking...")
        self._render_soon()

    def add_text(self, piece: str) -> None:
        self.answer_text += piece
        if self.thought_text:
            self._label_thoughts(thinking=False)
        self.figures.setText("Answering...")
        self._render_soon()

    def _render_soon(self) -> None:
        if not self._render_timer.isActive():
            self._render_timer.start()

    def render_now(self) -> None:
        self._render_timer.stop()
        if self.thoughts.isVisible() and self.thoughts.source_text() != self.thought_text:
            self.thoughts.set_plain(self.thought_text)
        if self.body.source_text() != self.answer_text:
            self.body.set_markdown(self.answer_text)

    # -- when it ends ----------------------------------------------------------------------------
    def finish(
        self,
        stats: AnswerStats | None,
        stopped: bool,
        finish_reason: str | None = None,
        error: str | None = None,
    ) -> None:
        self._label_thoughts(thinking=False)
        self.render_now()
        self.body.setVisible(bool(self.answer_text) or not error)
        self.figures.setText(describe_stats(stats, stopped, finish_reason))
        self.figures.setVisible(bool(self.figures.text()))
        if error:
            self.problem.setText(error)
            self.problem.show()

    def show_thoughts(self, shown: bool) -> None:
        self.thoughts.setVisible(shown)
        self.thoughts_button.setArrowType(
            Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow
        )
        if shown:
            self.thoughts.set_plain(self.thought_text)

    def _label_thoughts(self, thinking: bool) -> None:
        words = len(self.thought_text.split())
        self.thoughts_button.setText("Thinking..." if thinking else f"Thoughts ({words} words)")
        self.thoughts_button.setArrowType(
            Qt.ArrowType.DownArrow if self.thoughts_button.isChecked() else Qt.ArrowType.RightArrow
        )


class CodeDialog(QDialog):
    """The request as curl, Python and JavaScript, to copy."""

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setWindowTitle("localserve: the same request as code")
        self.resize(760, 560)
        self.snippets: dict[str, str] = {}
        self.tabs = QTabWidget()
        note = QLabel(
            "Set LOCALSERVE_API_KEY first: a key from <i>New API key for an app...</i> in the "
            "tray menu, or <code>localserve key add NAME</code>."
        )
        note.setWordWrap(True)
        copy_button = QPushButton("Copy")
        copy_button.clicked.connect(self.copy_current)
        layout = QVBoxLayout(self)
        layout.addWidget(note)
        layout.addWidget(self.tabs, 1)
        layout.addWidget(copy_button, 0, Qt.AlignmentFlag.AlignRight)

    def show_snippets(self, snippets: dict[str, str]) -> None:
        self.snippets = snippets
        current = self.tabs.currentIndex()
        self.tabs.clear()
        font = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        for title, code in snippets.items():
            editor = QPlainTextEdit(code)
            editor.setReadOnly(True)
            editor.setFont(font)
            editor.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
            self.tabs.addTab(editor, title)
        self.tabs.setCurrentIndex(max(current, 0))

    def copy_current(self) -> None:
        title = self.tabs.tabText(self.tabs.currentIndex())
        QGuiApplication.clipboard().setText(self.snippets.get(title, ""))


class ChatWindow(QWidget):
    def __init__(
        self,
        controller: TrayController,
        locate: Callable[[], Endpoint | None] | None = None,
    ) -> None:
        """``locate``: finds the daemon (blocking; it runs on a worker thread). By default the
        state file and the admin key; tests point it at a fake server."""
        super().__init__()
        self.controller = controller
        self.store = ChatStore.for_paths(controller.paths)
        self._locate = locate or (lambda: locate_daemon(controller.paths))
        self._network = network_manager(self)
        self._files = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chat-files")
        self.conversation = new_conversation()
        self.summaries: list[ConversationSummary] = []
        self.models: list[ModelChoice] = []
        self.stream: ChatStream | None = None
        self.answer: ChatMessage | None = None  # the one streaming
        self.answer_view: AnswerView | None = None
        self.code_dialog: CodeDialog | None = None
        self._sending: object | None = None  # the send waiting for the daemon's address
        self.attachments: list[Attachment] = []  # images for the next question
        self._sent: tuple[str, list[Attachment]] | None = None  # the question being answered
        self._reading = 0  # image files being read on a worker thread
        self._follow = True  # keep the newest text in view
        self._listing = False

        self.setWindowTitle("localserve: chat")
        self.setWindowIcon(icon("localserve"))
        self.resize(1040, 740)
        self.setStyleSheet(STYLE)

        # The conversations.
        self.new_button = QPushButton("New chat")
        self.new_button.clicked.connect(self.new_chat)
        self.sidebar = QListWidget()
        self.sidebar.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.sidebar.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.sidebar.itemClicked.connect(self._on_item_clicked)
        self.delete_button = QPushButton("Delete")
        self.delete_button.clicked.connect(self.delete_selected)
        side = QWidget()
        side_layout = QVBoxLayout(side)
        side_layout.setContentsMargins(0, 0, 0, 0)
        side_layout.addWidget(self.new_button)
        side_layout.addWidget(self.sidebar, 1)
        side_layout.addWidget(self.delete_button)

        # The model and the request's options.
        self.model_box = QComboBox()
        self.model_box.setEditable(True)
        self.model_box.setMinimumWidth(280)
        self.model_box.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.model_box.setToolTip("Local models first, then cloud providers' (provider/model)")
        self.model_box.currentTextChanged.connect(self._update_attach_button)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("List the models again")
        self.refresh_button.clicked.connect(self.refresh_models)
        self.code_button = QPushButton("View code")
        self.code_button.setToolTip("This request as curl, Python and JavaScript")
        self.code_button.clicked.connect(self.show_code)
        top = QHBoxLayout()
        top.addWidget(QLabel("Model"))
        top.addWidget(self.model_box, 1)
        top.addWidget(self.refresh_button)
        top.addWidget(self.code_button)
        self.system_prompt = QPlainTextEdit()
        self.system_prompt.setPlaceholderText("System prompt (optional)")
        self.system_prompt.setMaximumHeight(56)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(0.7)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 131_072)
        self.max_tokens.setSingleStep(256)
        self.max_tokens.setValue(1024)
        options = QFormLayout()
        numbers = QHBoxLayout()
        numbers.addWidget(self.temperature)
        numbers.addSpacing(16)
        numbers.addWidget(QLabel("Max tokens"))
        numbers.addWidget(self.max_tokens)
        numbers.addStretch(1)
        options.addRow("System", self.system_prompt)
        options.addRow("Temperature", numbers)

        # The transcript.
        self.transcript = QWidget()
        self.transcript.setObjectName("transcript")
        self.messages_layout = QVBoxLayout(self.transcript)
        self.messages_layout.addStretch(1)
        self.scroller = QScrollArea()
        self.scroller.setWidgetResizable(True)
        self.scroller.setWidget(self.transcript)
        bar = self.scroller.verticalScrollBar()
        bar.rangeChanged.connect(self._keep_following)
        bar.valueChanged.connect(self._on_scrolled)
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.status_label.hide()

        # The question.
        self.input = QPlainTextEdit()
        self.input.setPlaceholderText("Ask something (Ctrl+Enter sends)")
        self.input.setMaximumHeight(80)
        self.send_button = QPushButton("Send")
        self.send_button.setDefault(True)
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.attach_button = QPushButton("Attach image...")
        self.attach_button.clicked.connect(self.choose_images)
        self.attach_bar = QWidget()
        self.chips_layout = QHBoxLayout(self.attach_bar)
        self.chips_layout.setContentsMargins(0, 0, 0, 0)
        self.attach_note = QLabel("")
        self.attach_note.setObjectName("attachnote")
        self.chips_layout.addWidget(self.attach_note)
        self.chips_layout.addStretch(1)
        self.attach_bar.hide()
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            shortcut = QShortcut(QKeySequence(keys), self.input)
            shortcut.setContext(Qt.ShortcutContext.WidgetShortcut)
            shortcut.activated.connect(self.send)
        buttons = QVBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.attach_button)
        buttons.addWidget(self.stop_button)
        buttons.addStretch(1)
        ask = QHBoxLayout()
        ask.addWidget(self.input, 1)
        ask.addLayout(buttons)

        main = QWidget()
        main_layout = QVBoxLayout(main)
        main_layout.setContentsMargins(0, 0, 0, 0)
        main_layout.addLayout(top)
        main_layout.addLayout(options)
        main_layout.addWidget(self.scroller, 1)
        main_layout.addWidget(self.status_label)
        main_layout.addWidget(self.attach_bar)
        main_layout.addLayout(ask)
        splitter = QSplitter()
        splitter.addWidget(side)
        splitter.addWidget(main)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([240, 800])
        layout = QVBoxLayout(self)
        layout.addWidget(splitter)

        self._model_list = ModelListRequest(self._network, self)
        self._model_list.listed.connect(self.show_models)
        self._model_list.failed.connect(self._on_models_failed)
        controller.models_changed.connect(self.refresh_models)
        controller.state_changed.connect(self._on_tray_state)
        self._update_attach_button()
        self.refresh_models()
        self.refresh_list()

    # -- threads -----------------------------------------------------------------------------------
    def _on_files(
        self,
        work: Callable[[], T],
        done: Callable[[T], None] | None = None,
    ) -> None:
        """``work`` on the one file thread (so saves and listings keep their order), then
        ``done(result)`` on the GUI thread; a failure is shown under the transcript."""
        dispatcher = self.controller.background.dispatcher

        def job() -> None:
            try:
                value = work()
            except Exception as exc:
                dispatcher.deliver(self._show_status, f"Conversations: {exc}")
            else:
                if done is not None:
                    dispatcher.deliver(done, value)

        self._files.submit(job)

    def _find_daemon(
        self, then: Callable[[Endpoint | None], None], failed: Callable[[str], None]
    ) -> None:
        self.controller.background.run(self._locate, then, failed)

    def _show_status(self, text: str) -> None:
        self.status_label.setText(text)
        self.status_label.setVisible(bool(text))

    # -- models ------------------------------------------------------------------------------------
    def refresh_models(self) -> None:
        def listed(endpoint: Endpoint | None) -> None:
            if endpoint is None:
                self._show_status(NOT_RUNNING.text())
            else:
                self._model_list.start(endpoint)

        self._find_daemon(listed, self._show_status)

    def show_models(self, models: list[ModelChoice]) -> None:
        self._show_status("")
        self.models = models
        chosen = self.model_box.currentText().strip()
        self.model_box.blockSignals(True)
        self.model_box.clear()
        local = [m for m in models if not m.cloud]
        for index, model in enumerate(models):
            if model.cloud and index == len(local) and local:
                self.model_box.insertSeparator(self.model_box.count())
            self.model_box.addItem(model.id)
            where = f"cloud: {model.id.partition('/')[0]}" if model.cloud else "on this machine"
            self.model_box.setItemData(
                self.model_box.count() - 1, where, Qt.ItemDataRole.ToolTipRole
            )
        self.model_box.setCurrentText(chosen or self._default_model())
        self.model_box.blockSignals(False)
        self._update_attach_button()

    def _default_model(self) -> str:
        status = self.controller.status
        if status is not None and status.default_model:
            return status.default_model
        local = [m.id for m in self.models if not m.cloud]
        return local[0] if local else ""

    def _on_models_failed(self, error: ChatError) -> None:
        self._show_status(error.text())

    def _on_tray_state(self, state: str) -> None:
        if state in ("serving", "remote") and not self.models:
            self.refresh_models()

    def model_sees(self, model: str) -> bool:
        """Whether images may go to ``model``: a listed model that sees (``ModelChoice.sees``),
        or an unlisted ``provider/model``, whose provider decides."""
        for choice in self.models:
            if choice.id == model:
                return choice.sees
        return "/" in model

    def _update_attach_button(self) -> None:
        model = self.model_box.currentText().strip()
        sees = self.model_sees(model)
        self.attach_button.setEnabled(sees)
        most = format_bytes(MAX_IMAGE_BYTES, binary=True)
        self.attach_button.setToolTip(
            f"PNG, JPEG, WebP or GIF images for the next question, up to {most} each"
            if sees
            else f"{model or 'This model'} does not see images (it has no vision projector)"
        )

    def use_model(self, model: str) -> None:
        """Chat with ``model`` (the Models window's Chat button): a new chat unless this one is
        still empty or an answer is streaming."""
        if self.conversation.messages and not self.busy:
            self.new_chat()
        self.model_box.setCurrentText(model)

    # -- asking ------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._sending is not None or (self.stream is not None and self.stream.state.active)

    def request_body(
        self, question: str | None = None, images: list[str] | None = None
    ) -> dict[str, Any]:
        """The body of the next request: this conversation, plus ``question`` and ``images``
        (data URLs) if given."""
        messages = self.conversation.request_messages()
        if question or images:
            content = user_content(question or "", list(images or []))
            messages.append({"role": "user", "content": content})
        return chat_request(
            self.model_box.currentText().strip(),
            messages,
            self.temperature.value(),
            self.max_tokens.value(),
        )

    def send(self) -> None:
        question = self.input.toPlainText().strip()
        model = self.model_box.currentText().strip()
        attached = list(self.attachments)
        if not (question or attached) or self.busy:
            return
        if not model:
            self._show_status("Pick a model first.")
            return
        if self._reading:
            self._note_attachments("An image is still being read; send once it shows here.")
            return
        self._show_status("")
        conversation = self.conversation
        conversation.model = model
        conversation.system_prompt = self.system_prompt.toPlainText()
        conversation.temperature = self.temperature.value()
        conversation.max_tokens = self.max_tokens.value()
        images = [attachment.data_url for attachment in attached]
        body = self.request_body(question, images)
        self._sent = (question, attached)  # put back in the input should the answer fail
        self.input.clear()
        self.clear_attachments()
        conversation.messages.append(ChatMessage("user", question, images=images))
        self._add_view(QuestionView(question, [attachment.image for attachment in attached]))
        self.answer = ChatMessage("assistant", model=model)
        conversation.messages.append(self.answer)
        self.answer_view = AnswerView(model)
        self.answer_view.waiting()
        self._add_view(self.answer_view)
        self._follow = True
        self._set_busy(True)
        self.save()

        token = object()
        self._sending = token

        def found(endpoint: Endpoint | None) -> None:
            if self._sending is not token:
                return  # stopped (or moved to another chat) before the daemon was found
            self._sending = None
            if self.stream is not None:
                self.stream.deleteLater()  # the previous answer's
                self.stream = None
            if endpoint is None:
                self._finish_answer(
                    StreamOutcome(StreamState.FAILED, AnswerStats(), None, NOT_RUNNING)
                )
                return
            self.stream = ChatStream(self._network, self)
            self.stream.thought.connect(self._on_thought)
            self.stream.text.connect(self._on_text)
            self.stream.finished.connect(self._finish_answer)
            self.stream.start(endpoint, body)

        def failed(message: str) -> None:
            if self._sending is token:
                self._sending = None
                error = ChatError("Cannot find localserve", message, "Check the tray.")
                self._finish_answer(StreamOutcome(StreamState.FAILED, AnswerStats(), None, error))

        self._find_daemon(found, failed)

    def stop(self) -> None:
        """Stop the answer now; what it said so far stays."""
        if self._sending is not None:
            self._sending = None
            self._finish_answer(StreamOutcome(StreamState.STOPPED, AnswerStats()))
        elif self.stream is not None:
            self.stream.stop()  # emits finished at once

    def _on_thought(self, piece: str) -> None:
        if self.answer is not None and self.answer_view is not None:
            self.answer.reasoning += piece
            self.answer_view.add_thought(piece)

    def _on_text(self, piece: str) -> None:
        if self.answer is not None and self.answer_view is not None:
            self.answer.content += piece
            self.answer_view.add_text(piece)

    def _finish_answer(self, outcome: StreamOutcome) -> None:
        answer, view = self.answer, self.answer_view
        self.answer = self.answer_view = None
        self._set_busy(False)
        if answer is None or view is None:
            return
        answer.stats = outcome.stats if outcome.stats.completion_tokens else None
        answer.stopped = outcome.state is StreamState.STOPPED
        answer.error = outcome.error.text() if outcome.error is not None else None
        view.finish(answer.stats, answer.stopped, outcome.finish_reason, answer.error)
        sent, self._sent = self._sent, None
        if outcome.state is StreamState.FAILED and sent is not None:
            self._put_back(*sent)
        self.conversation.updated = time.time()
        self.save()

    def _put_back(self, question: str, attached: list[Attachment]) -> None:
        """A failed question and its images, back in the input to send again, unless something
        new was typed or attached meanwhile."""
        if self.input.toPlainText().strip() or self.attachments:
            return
        self.input.setPlainText(question)
        self.attachments = list(attached)
        self._show_attachments()

    def _set_busy(self, busy: bool) -> None:
        self.send_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)

    # -- images -----------------------------------------------------------------------------------
    def choose_images(self) -> None:
        """ "Attach image...": pick files, then ``attach_files``."""
        names, _ = QFileDialog.getOpenFileNames(self, "Attach images", "", IMAGE_FILTER)
        self.attach_files(names)

    def attach_files(self, files: Iterable[str | Path]) -> None:
        """Attach these image files to the next question. A file over 20 MiB, or one that is not
        a PNG, JPEG, WebP or GIF, is refused with one line above the question; one over 1 MiB
        is read on a worker thread and shows once read."""
        self._note_attachments("")
        for name in files:
            path = Path(name)
            try:
                size = path.stat().st_size
            except OSError as exc:
                self._note_attachments(f"{path.name} cannot be read: {exc.strerror or exc}.")
                continue
            if size > MAX_IMAGE_BYTES:
                self._note_attachments(too_large(path.name, size))
            elif size > LARGE_FILE_BYTES:
                self._reading += 1
                self.controller.background.run(
                    functools.partial(try_load_attachment, path),
                    self._on_read,
                    lambda message: self._on_read(str(message)),
                )
            else:
                self._add_attachment(try_load_attachment(path))

    def _on_read(self, loaded: Attachment | str) -> None:
        self._reading -= 1
        self._add_attachment(loaded)

    def _add_attachment(self, loaded: Attachment | str) -> None:
        if isinstance(loaded, str):
            self._note_attachments(loaded)
            return
        self.attachments.append(loaded)
        self._show_attachments()

    def remove_attachment(self, attachment: Attachment) -> None:
        self.attachments = [kept for kept in self.attachments if kept is not attachment]
        self._show_attachments()

    def clear_attachments(self) -> None:
        self.attachments = []
        self._note_attachments("")
        self._show_attachments()

    def attachment_chips(self) -> list[AttachmentChip]:
        found = []
        for index in range(self.chips_layout.count()):
            item = self.chips_layout.itemAt(index)
            widget = item.widget() if item is not None else None
            if isinstance(widget, AttachmentChip):
                found.append(widget)
        return found

    def _show_attachments(self) -> None:
        for chip in self.attachment_chips():
            self.chips_layout.removeWidget(chip)
            chip.deleteLater()
        for index, attachment in enumerate(self.attachments):
            self.chips_layout.insertWidget(
                index, AttachmentChip(attachment, self.remove_attachment)
            )
        self.attach_bar.setVisible(bool(self.attachments or self.attach_note.text()))

    def _note_attachments(self, text: str) -> None:
        """One line beside the chips: why a file was not attached."""
        self.attach_note.setText(text)
        self.attach_note.setVisible(bool(text))
        self.attach_bar.setVisible(bool(self.attachments or text))

    # -- the transcript ----------------------------------------------------------------------------
    def _add_view(self, view: QWidget) -> None:
        self.messages_layout.insertWidget(self.messages_layout.count() - 1, view)

    def answer_views(self) -> list[AnswerView]:
        """The answers shown, oldest first."""
        found = []
        for index in range(self.messages_layout.count()):
            item = self.messages_layout.itemAt(index)
            widget = item.widget() if item is not None else None
            if isinstance(widget, AnswerView):
                found.append(widget)
        return found

    def _clear_views(self) -> None:
        while self.messages_layout.count() > 1:
            item = self.messages_layout.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()

    def _keep_following(self, _low: int, high: int) -> None:
        if self._follow:
            self.scroller.verticalScrollBar().setValue(high)

    def _on_scrolled(self, value: int) -> None:
        self._follow = value >= self.scroller.verticalScrollBar().maximum() - 24

    def show_conversation(
        self, conversation: Conversation, thumbnails: dict[str, QImage] | None = None
    ) -> None:
        """Show ``conversation``; ``thumbnails`` by data URL, those made already (the rest are
        made here)."""
        self.conversation = conversation
        self._clear_views()
        if conversation.model:
            self.model_box.setCurrentText(conversation.model)
        self.system_prompt.setPlainText(conversation.system_prompt)
        self.temperature.setValue(conversation.temperature)
        self.max_tokens.setValue(conversation.max_tokens)
        for message in conversation.messages:
            if message.role == "user":
                made = thumbnails or {}
                images = [
                    made[url] if url in made else thumbnail(data_url_bytes(url))
                    for url in message.images
                ]
                self._add_view(QuestionView(message.content, images))
                continue
            view = AnswerView(message.model or conversation.model)
            view.thought_text, view.answer_text = message.reasoning, message.content
            if message.reasoning:
                view.thoughts_button.show()
            view.finish(message.stats, message.stopped, None, message.error)
            self._add_view(view)
        self._follow = True
        self._select_current()

    # -- conversations -----------------------------------------------------------------------------
    def save(self) -> None:
        """Write this conversation (a snapshot taken now), then list the folder again."""
        if not self.conversation.messages:
            return
        snapshot = copy.deepcopy(self.conversation)
        self._on_files(lambda: self.store.save(snapshot))
        self.refresh_list()

    def refresh_list(self) -> None:
        self._on_files(self.store.summaries, self.show_list)

    def show_list(self, summaries: list[ConversationSummary]) -> None:
        self.summaries = summaries
        self.sidebar.clear()
        for summary in summaries:
            when = time.strftime("%d %b %H:%M", time.localtime(summary.updated))
            item = QListWidgetItem(f"{summary.title}\n{when} · {summary.model}")
            item.setData(Qt.ItemDataRole.UserRole, summary.id)
            item.setToolTip(summary.title)
            self.sidebar.addItem(item)
        self._select_current()

    def _select_current(self) -> None:
        for row in range(self.sidebar.count()):
            item = self.sidebar.item(row)
            if item.data(Qt.ItemDataRole.UserRole) == self.conversation.id:
                self.sidebar.setCurrentItem(item)
                return
        self.sidebar.clearSelection()

    def _on_item_clicked(self, item: QListWidgetItem) -> None:
        self.open_conversation(str(item.data(Qt.ItemDataRole.UserRole)))

    def open_conversation(self, conversation_id: str) -> None:
        if conversation_id == self.conversation.id:
            return
        self.stop()

        def load() -> tuple[Conversation, dict[str, QImage]]:
            conversation = self.store.load(conversation_id)
            made = {
                url: thumbnail(data_url_bytes(url))
                for message in conversation.messages
                for url in message.images
            }
            return conversation, made

        self._on_files(load, lambda loaded: self.show_conversation(*loaded))

    def new_chat(self) -> None:
        self.stop()
        model = self.model_box.currentText().strip()
        self.show_conversation(new_conversation(model))

    def delete_selected(self) -> None:
        selected = self.sidebar.selectedItems()
        if not selected:
            return
        item = selected[0]
        conversation_id = str(item.data(Qt.ItemDataRole.UserRole))
        title = item.text().splitlines()[0]
        answer = QMessageBox.question(
            self, "Delete conversation", f"Delete '{title}'? This cannot be undone."
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        if conversation_id == self.conversation.id:
            self.new_chat()
        self._on_files(lambda: self.store.delete(conversation_id))
        self.refresh_list()

    # -- view code ---------------------------------------------------------------------------------
    def show_code(self) -> None:
        images = [attachment.data_url for attachment in self.attachments]
        question = self.input.toPlainText().strip() or ("" if images else "Hello!")
        body = shorten_images(self.request_body(question, images))

        def found(endpoint: Endpoint | None) -> None:
            base_url = endpoint.base_url if endpoint is not None else f"{DEFAULT_URL}/v1"
            if self.code_dialog is None:
                self.code_dialog = CodeDialog(self)
            self.code_dialog.show_snippets(request_snippets(base_url, body))
            self.code_dialog.show()
            self.code_dialog.raise_()

        self._find_daemon(found, self._show_status)
