"""The chat window's conversations on disk: one JSON file each under ``<data_dir>/chats``.

A file is written whole to a temporary file and renamed over the old one (``write_json_atomic``),
so a crash mid-write leaves the previous version, never half a conversation. File names are
conversation ids this module made (``20261128-042210-3fa9c1``); anything else in the folder is
ignored, and an id that is not of that shape is refused, so no name can point outside it.

Images a person attached stay in their question as data URLs (``ChatMessage.images``), so a
reopened conversation shows them and sends them again with its history (the daemon caches image
embeddings by content, so sending them again is cheap).

Pure Python (no Qt): the window calls it from a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localserve.hub.library import write_json_atomic
from localserve.media import ImagePolicy, sniff_media_type
from localserve.paths import AppPaths
from localserve.units import format_bytes

log = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{6}$")
TITLE_LENGTH = 60
FORMAT_VERSION = 1
MAX_IMAGE_BYTES = ImagePolicy().max_bytes  # what the daemon takes (20 MiB)
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


@dataclass
class AnswerStats:
    """What one answer cost, measured by the window (times) and the daemon (tokens)."""

    ttft_s: float | None = None  # from sending the request to the first token (thought or text)
    tokens_per_s: float | None = None  # generated tokens after the first, over their time
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    estimated: bool = False  # no usage from the daemon (a stopped answer): tokens are counted


@dataclass
class ChatMessage:
    role: str  # "user" or "assistant"
    content: str = ""
    images: list[str] = field(default_factory=list)  # a question's images, as data URLs
    reasoning: str = ""  # the model's thoughts (delta.reasoning_content), kept apart
    model: str | None = None  # for an answer: the model that gave it
    stats: AnswerStats | None = None
    error: str | None = None  # for an answer that failed: what went wrong and what to do
    stopped: bool = False  # the person pressed Stop


@dataclass
class Conversation:
    id: str
    created: float
    updated: float
    model: str = ""
    system_prompt: str = ""
    temperature: float = 0.7
    max_tokens: int = 1024
    messages: list[ChatMessage] = field(default_factory=list)

    @property
    def title(self) -> str:
        """The first question's first line, shortened; "New chat" before there is one."""
        for message in self.messages:
            if message.role == "user" and message.content.strip():
                line = message.content.strip().splitlines()[0]
                return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1] + "…"
            if message.role == "user" and message.images:
                return "Image" if len(message.images) == 1 else f"{len(message.images)} images"
        return "New chat"

    def request_messages(self) -> list[dict[str, Any]]:
        """The OpenAI ``messages`` for the next request: the system prompt, then every question
        (with its images) and its answer. A question whose answer failed with nothing said is
        left out with it, so a retry does not send the same question twice; thoughts are never
        sent back."""
        result: list[dict[str, Any]] = []
        if self.system_prompt.strip():
            result.append({"role": "system", "content": self.system_prompt})
        for message in self.messages:
            if message.role == "assistant":
                if message.content:
                    result.append({"role": "assistant", "content": message.content})
                elif result and result[-1]["role"] == "user":
                    result.pop()  # no answer: drop its question too
            else:
                content = user_content(message.content, message.images)
                result.append({"role": message.role, "content": content})
        return result

    def to_json(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Conversation:
        messages = []
        for item in data.get("messages") or []:
            stats = item.get("stats")
            messages.append(
                ChatMessage(
                    role=str(item["role"]),
                    content=str(item.get("content") or ""),
                    images=[str(url) for url in item.get("images") or [] if url],
                    reasoning=str(item.get("reasoning") or ""),
                    model=item.get("model"),
                    stats=AnswerStats(**stats) if isinstance(stats, dict) else None,
                    error=item.get("error"),
                    stopped=bool(item.get("stopped")),
                )
            )
        return cls(
            id=str(data["id"]),
            created=float(data["created"]),
            updated=float(data["updated"]),
            model=str(data.get("model") or ""),
            system_prompt=str(data.get("system_prompt") or ""),
            temperature=float(data.get("temperature", 0.7)),
            max_tokens=int(data.get("max_tokens", 1024)),
            messages=messages,
        )


def user_content(text: str, images: list[str]) -> str | list[dict[str, Any]]:
    """A question as OpenAI ``content``: the text alone, or with images the image parts first,
    then the text (left out when there is none)."""
    if not images:
        return text
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": url}} for url in images
    ]
    if text:
        parts.append({"type": "text", "text": text})
    return parts


class ImageFileError(ValueError):
    """An image file that cannot be attached; its message is one line to show."""


def image_data_url(data: bytes, name: str = "The file") -> str:
    """An image file's bytes as ``data:<media type>;base64,...``, the type read from the bytes
    (PNG, JPEG, WebP or GIF); anything else, or more than the daemon takes, is refused."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageFileError(too_large(name, len(data)))
    media_type = sniff_media_type(data)
    if media_type not in IMAGE_TYPES:
        raise ImageFileError(f"{name} is not a PNG, JPEG, WebP or GIF image.")
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def too_large(name: str, size: int) -> str:
    most = format_bytes(MAX_IMAGE_BYTES, binary=True)
    return f"{name} is {format_bytes(size, binary=True)}; images up to {most} can be sent."


def data_url_bytes(url: str) -> bytes:
    """The bytes of a base64 data URL this module made; empty for anything else."""
    header, comma, payload = url.partition(",")
    if not comma or not header.startswith("data:") or not header.endswith(";base64"):
        return b""
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return b""


@dataclass(frozen=True)
class ConversationSummary:
    """One line of the sidebar."""

    id: str
    title: str
    updated: float
    model: str


def new_conversation(model: str = "", now: float | None = None) -> Conversation:
    at = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(at))
    return Conversation(id=f"{stamp}-{secrets.token_hex(3)}", created=at, updated=at, model=model)


class ChatStore:
    """Conversations as files in one folder. Blocking file IO: call it off the GUI thread."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def for_paths(cls, paths: AppPaths) -> ChatStore:
        return cls(paths.data_dir / "chats")

    def path(self, conversation_id: str) -> Path:
        if not ID_PATTERN.match(conversation_id):
            raise ValueError(f"Not a conversation id: {conversation_id!r}")
        return self.folder / f"{conversation_id}.json"

    def save(self, conversation: Conversation) -> Path:
        path = self.path(conversation.id)
        write_json_atomic(path, conversation.to_json())
        return path

    def load(self, conversation_id: str) -> Conversation:
        data = json.loads(self.path(conversation_id).read_text(encoding="utf-8"))
        return Conversation.from_json(data)

    def delete(self, conversation_id: str) -> None:
        self.path(conversation_id).unlink(missing_ok=True)

    def summaries(self) -> list[ConversationSummary]:
        """Every readable conversation, the most recently updated first."""
        found = []
        for path in self.folder.glob("*.json") if self.folder.is_dir() else []:
            if not ID_PATTERN.match(path.stem):
                continue
            try:
                conversation = self.load(path.stem)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("Skipping the unreadable conversation %s: %s", path, exc)
                continue
            found.append(
                ConversationSummary(
                    conversation.id, conversation.title, conversation.updated, conversation.model
                )
            )
        found.sort(key=lambda summary: summary.updated, reverse=True)
        return found
