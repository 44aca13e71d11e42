"""Read a GGUF file's header (metadata and tensor list) without loading its weights.

A small reader of our own rather than the ``gguf`` package: that one decodes every array
(150,000 token strings) into numpy objects and takes seconds; this one skips arrays it does not
need and checks every count, length and offset against limits and the file's size, so a
hostile or truncated header gives a clear ``InvalidModelFileError`` instead of a huge allocation.
"""

from __future__ import annotations

import functools
import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from localserve.errors import InvalidModelFileError

MAGIC = b"GGUF"
MAX_KEY_BYTES = 65_536
MAX_STRING_BYTES = 16 * 2**20  # chat templates run to ~100 KB; nothing legitimate nears this
MAX_ARRAY_ITEMS = 16 * 2**20
MAX_KV_COUNT = 65_536
MAX_TENSORS = 1_000_000
MAX_DIMS = 4
MAX_ELEMENTS = 2**40  # per tensor: a trillion weights
MAX_GGML_TYPE = 64  # llama.cpp's tensor types are numbered below this
# ggml tensor types: (elements per block, bytes per block), from ggml-common.h. Types missing
# here (compute-only or removed ones) are not sized: only their start is checked.
TENSOR_TYPE_SIZES = {
    0: (1, 4),  # F32
    1: (1, 2),  # F16
    2: (32, 18),  # Q4_0
    3: (32, 20),  # Q4_1
    6: (32, 22),  # Q5_0
    7: (32, 24),  # Q5_1
    8: (32, 34),  # Q8_0
    10: (256, 84),  # Q2_K
    11: (256, 110),  # Q3_K
    12: (256, 144),  # Q4_K
    13: (256, 176),  # Q5_K
    14: (256, 210),  # Q6_K
    16: (256, 66),  # IQ2_XXS
    17: (256, 74),  # IQ2_XS
    18: (256, 98),  # IQ3_XXS
    19: (256, 50),  # IQ1_S
    20: (32, 18),  # IQ4_NL
    21: (256, 110),  # IQ3_S
    22: (256, 82),  # IQ2_S
    23: (256, 136),  # IQ4_XS
    24: (1, 1),  # I8
    25: (1, 2),  # I16
    26: (1, 4),  # I32
    27: (1, 8),  # I64
    28: (1, 8),  # F64
    29: (256, 56),  # IQ1_M
    30: (1, 2),  # BF16
    34: (256, 54),  # TQ1_0
    35: (256, 66),  # TQ2_0
    39: (32, 17),  # MXFP4
}

# Keys every reader of a model uses, and the kind of value each must hold.
_INTEGER_KEYS = ("general.alignment", "general.file_type")
_ARCH_INTEGER_KEYS = (
    "context_length",
    "block_count",
    "embedding_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "vocab_size",
)
_STRING_KEYS = ("general.architecture", "general.name", "tokenizer.chat_template")

_SCALARS: dict[int, str] = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_LENGTH = struct.Struct("<Q")  # a string's byte count
_SKIP_WINDOW = 256 * 1024  # read at a time while skipping an array of strings

# llama.cpp's llama_ftype values -> the names quantized files are known by.
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}


@dataclass(frozen=True)
class GgufHeader:
    version: int
    metadata: dict[str, Any]  # arrays are kept as their item count only
    tensor_count: int
    parameter_count: int
    file_size: int
    array_lengths: dict[str, int] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str:
        return str(self.get("general.architecture", "unknown"))

    def arch_value(self, name: str, default: Any = None) -> Any:
        """A per-architecture key such as ``llama.block_count``."""
        return self.get(f"{self.architecture}.{name}", default)

    @property
    def quant_type(self) -> str:
        file_type = self.get("general.file_type")
        if file_type is None:
            return "unknown"
        return FILE_TYPES.get(int(file_type), f"type {file_type}")


class HeaderIncomplete(InvalidModelFileError):
    """The header goes on past the bytes we have (a prefix fetched over HTTP): fetch more."""


class _Reader:
    def __init__(self, handle: BinaryIO, size: int, available: int, name: str) -> None:
        self._handle = handle
        self._size = size  # of the whole file
        self._available = available  # bytes readable through the handle (a prefix, maybe)
        self._name = name

    def fail(self, reason: str) -> InvalidModelFileError:
        return InvalidModelFileError(f"{self._name} is not a valid GGUF file: {reason}.")

    def _check_room(self, end: int) -> None:
        if end > self._size:
            raise self.fail("it ends inside its header (truncated download?)")
        if end > self._available:
            raise HeaderIncomplete(f"{self._name}: the header needs more than {end} bytes")

    def read(self, count: int) -> bytes:
        self._check_room(self._handle.tell() + count)
        data = self._handle.read(count)
        if len(data) != count:
            raise self.fail("it ends inside its header (truncated download?)")
        return data

    def skip(self, count: int) -> None:
        self._check_room(self._handle.tell() + count)
        self._handle.seek(count, 1)

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def count(self, limit: int, what: str) -> int:
        value = int(self.scalar("<Q"))
        if value > limit:
            raise self.fail(f"{what} is {value}, more than the limit of {limit}")
        return value

    def string(self, limit: int = MAX_STRING_BYTES) -> str:
        length = self.count(limit, "a string length")
        return self.read(length).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        raise self.fail(f"unknown value type {kind}")

    def skip_array(self, kind: int, items: int) -> None:
        if kind in _SCALARS:
            self.skip(items * struct.calcsize(_SCALARS[kind]))
        elif kind == _STRING:
            self._skip_strings(items)
        else:
            raise self.fail(f"array of unsupported type {kind}")

    def _skip_strings(self, items: int) -> None:
        """Skip ``items`` length-prefixed strings, reading their lengths from windows of the
        file: a vocabulary's 50,000 to 250,000 strings, skipped one seek at a time, took 0.1 s
        and more, on every cold start. The inner loop is kept to the least work per string."""
        position = self._handle.tell()
        unpack, step, limit = _LENGTH.unpack_from, _LENGTH.size, MAX_STRING_BYTES
        while items:
            self._check_room(position + step)
            self._handle.seek(position)
            window = self._handle.read(_SKIP_WINDOW)
            last = len(window) - step  # the last offset a whole length can be read at
            if last < 0:
                raise self.fail("it ends inside its header (truncated download?)")
            offset = 0
            while items and offset <= last:
                (length,) = unpack(window, offset)
                if length > limit:
                    raise self.fail(f"a string length is {length}, more than the limit of {limit}")
                offset += step + length
                items -= 1
            position += offset
        self._check_room(position)
        self._handle.seek(position)

    @property
    def position(self) -> int:
        return self._handle.tell()

    @property
    def file_size(self) -> int:
        return self._size


def read_gguf_header(path: Path) -> GgufHeader:
    """The header of the GGUF file at ``path``; read once per process while the file stays the
    same (a daemon's start asks for it from the library and the engine check alike)."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise InvalidModelFileError(f"Cannot read {path}: {exc.strerror or exc}") from exc
    return _read_header(path, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)


@functools.lru_cache(maxsize=16)
def _read_header(path: Path, size: int, mtime_ns: int, inode: int, device: int) -> GgufHeader:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InvalidModelFileError(f"Cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        return parse_gguf_header(_Reader(handle, size, size, path.name))


def read_gguf_header_prefix(data: bytes, file_size: int, name: str) -> GgufHeader:
    """The header from the first ``len(data)`` bytes of a ``file_size``-byte file (fetched with
    an HTTP Range request); HeaderIncomplete when the header runs past ``data``."""
    return parse_gguf_header(_Reader(io.BytesIO(data), file_size, len(data), name))


def parse_gguf_header(reader: _Reader) -> GgufHeader:
    if reader.read(4) != MAGIC:
        raise reader.fail("it does not start with the GGUF magic bytes")
    version = int(reader.scalar("<I"))
    if version not in (2, 3):
        raise reader.fail(f"format version {version} is not supported (2 or 3 are)")
    tensor_count = reader.count(MAX_TENSORS, "the tensor count")
    kv_count = reader.count(MAX_KV_COUNT, "the metadata count")
    metadata: dict[str, Any] = {}
    arrays: dict[str, int] = {}
    for _ in range(kv_count):
        key = reader.string(MAX_KEY_BYTES)
        kind = int(reader.scalar("<I"))
        if kind == _ARRAY:
            item_kind = int(reader.scalar("<I"))
            items = reader.count(MAX_ARRAY_ITEMS, f"the length of {key}")
            reader.skip_array(item_kind, items)
            arrays[key] = items
        else:
            metadata[key] = reader.value(kind)
    parameters = 0
    data_end = 0  # where the last tensor's data ends, from the start of the data section
    for _ in range(tensor_count):
        reader.string(MAX_KEY_BYTES)
        dims = int(reader.scalar("<I"))
        if not 1 <= dims <= MAX_DIMS:
            raise reader.fail(f"a tensor has {dims} dimensions")
        elements = 1
        for _ in range(dims):
            elements *= int(reader.scalar("<Q"))
            if elements > MAX_ELEMENTS:
                raise reader.fail(f"a tensor claims more than {MAX_ELEMENTS} elements")
        tensor_type = int(reader.scalar("<I"))
        if tensor_type >= MAX_GGML_TYPE:
            raise reader.fail("a tensor has an unknown type")
        offset = int(reader.scalar("<Q"))
        block, block_bytes = TENSOR_TYPE_SIZES.get(tensor_type, (1, 0))
        # At least one byte: a tensor may not start at or past the end, whatever its type.
        data_end = max(data_end, offset + max(1, -(-elements // block) * block_bytes))
        parameters += elements
    check_value_types(metadata, reader)
    alignment = int(metadata.get("general.alignment", 32)) or 32
    if alignment & (alignment - 1) or alignment > 2**20:
        raise reader.fail(f"alignment {alignment} is not a power of two up to 1 MiB")
    data_start = -(-reader.position // alignment) * alignment
    if tensor_count and data_start + data_end > reader.file_size:
        missing = data_start + data_end - reader.file_size
        raise reader.fail(
            f"its tensor data runs {missing:,} bytes past the end of the file (truncated?)"
        )
    return GgufHeader(version, metadata, tensor_count, parameters, reader.file_size, arrays)


def check_value_types(metadata: dict[str, Any], reader: _Reader) -> None:
    """Keys read elsewhere must hold the kind of value they are read as."""
    architecture = metadata.get("general.architecture", "")
    integer_keys = [*_INTEGER_KEYS, *(f"{architecture}.{key}" for key in _ARCH_INTEGER_KEYS)]
    for key in integer_keys:
        value = metadata.get(key)
        if value is not None and (isinstance(value, (bool, float, str)) or value < 0):
            raise reader.fail(f"{key} should be a non-negative integer, not {value!r}"[:200])
    for key in _STRING_KEYS:
        value = metadata.get(key)
        if value is not None and not isinstance(value, str):
            raise reader.fail(f"{key} should be text, not {type(value).__name__}")
