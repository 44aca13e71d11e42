"""Hostile GGUF headers: whatever the bytes, reading one gives a header or a clear
``InvalidModelFileError``, never another exception, a hang or a huge allocation."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localserve.errors import InvalidModelFileError
from localserve.hub.gguf_header import HeaderIncomplete, read_gguf_header_prefix
from localserve.hub.library import ModelRecord
from tests.helpers.model_files import starter_path

UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64 = 4, 5, 6, 7, 8, 9, 10


def gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def gguf_value(kind: int, value: Any) -> bytes:
    if kind == STRING:
        return gguf_string(value)
    if kind == ARRAY:
        item_kind, items = value
        body = b"".join(gguf_value(item_kind, item) for item in items)
        return struct.pack("<IQ", item_kind, len(items)) + body
    fmt = {UINT32: "<I", INT32: "<i", FLOAT32: "<f", BOOL: "<?", UINT64: "<Q"}[kind]
    return struct.pack(fmt, value)


def gguf_file(metadata: list[tuple[str, int, Any]], tensors: list[tuple[str, list[int]]]) -> bytes:
    """A small GGUF v3 file: header, tensor infos, aligned (zero) tensor data."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata))
    for key, kind, value in metadata:
        out += gguf_string(key) + struct.pack("<I", kind) + gguf_value(kind, value)
    offset = 0
    for name, dims in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 0, offset)
        size = 4
        for d in dims:
            size *= d
        offset += -(-size // 32) * 32
    out += b"\0" * (-len(out) % 32)
    return out + b"\0" * offset


VALID = gguf_file(
    [
        ("general.architecture", STRING, "llama"),
        ("general.alignment", UINT32, 32),
        ("llama.context_length", UINT32, 2048),
        ("llama.block_count", UINT32, 2),
        ("llama.embedding_length", UINT32, 8),
        ("llama.attention.head_count", UINT32, 2),
        ("tokenizer.ggml.tokens", ARRAY, (STRING, ["a", "b", "c"])),
        ("tokenizer.chat_template", STRING, "{% for m in messages %}{{ m.content }}{% endfor %}"),
    ],
    [("token_embd.weight", [8, 3]), ("output.weight", [8, 3])],
)


def read(data: bytes) -> None:
    """What the library does with a new file: read its header, describe the model."""
    try:
        header = read_gguf_header_prefix(data, len(data), "fuzzed.gguf")
        ModelRecord.from_header("fuzzed", ["fuzzed.gguf"], header, len(data))
    except InvalidModelFileError:
        pass


def test_the_valid_file_reads() -> None:
    header = read_gguf_header_prefix(VALID, len(VALID), "valid.gguf")
    record = ModelRecord.from_header("valid", ["valid.gguf"], header, len(VALID))
    assert record.parameter_count == 48 and record.context_length == 2048


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_bytes(data: st.DataObject) -> None:
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(4, len(raw)))
    read(bytes(raw[:cut]))


# Huge counts and lengths where the format has them (big-endian-ish garbage too).
HUGE = st.sampled_from([2**64 - 1, 2**63, 2**40, 2**32 + 7, 10**12, 0])


@settings(max_examples=500, deadline=None)
@given(position=st.integers(0, len(VALID) - 8), value=HUGE)
def test_huge_numbers_anywhere(position: int, value: int) -> None:
    raw = bytearray(VALID)
    raw[position : position + 8] = struct.pack("<Q", value)
    read(bytes(raw))


KEYS = st.sampled_from(
    [
        "general.architecture",
        "general.alignment",
        "general.file_type",
        "llama.context_length",
        "llama.block_count",
        "llama.attention.head_count",
        "llama.attention.head_count_kv",
        "tokenizer.chat_template",
        "tokenizer.ggml.tokens",
    ]
)
VALUES = st.one_of(
    st.tuples(st.just(UINT32), st.integers(0, 2**32 - 1)),
    st.tuples(st.just(INT32), st.integers(-(2**31), 2**31 - 1)),
    st.tuples(st.just(FLOAT32), st.floats(width=32, allow_nan=True)),
    st.tuples(st.just(BOOL), st.booleans()),
    st.tuples(st.just(STRING), st.text(max_size=40)),
    st.tuples(st.just(UINT64), st.integers(0, 2**64 - 1)),
    st.tuples(st.just(ARRAY), st.tuples(st.just(UINT32), st.lists(st.integers(0, 9), max_size=5))),
)


@settings(max_examples=1000, deadline=None)
@given(
    entries=st.lists(st.tuples(KEYS, VALUES), max_size=10),
    dims=st.lists(st.integers(0, 2**40), min_size=1, max_size=5),
)
def test_values_of_the_wrong_type(
    entries: list[tuple[str, tuple[int, Any]]], dims: list[int]
) -> None:
    metadata = [(key, kind, value) for key, (kind, value) in entries]
    header_only = gguf_file(metadata, [])
    read(header_only)
    # A tensor with wild dimensions (its data is not written: the header must catch it).
    raw = b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + gguf_string("t") + struct.pack("<I", len(dims))
    raw += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 0, 0) + b"\0" * 64
    read(raw)


def test_a_real_header_cut_short_asks_for_more_and_is_never_called_invalid() -> None:
    size = starter_path().stat().st_size
    data = starter_path().read_bytes()[: 4 * 2**20]
    outcomes = []
    for cut in [*range(1024, 2**20, 4096), len(data)]:
        try:
            read_gguf_header_prefix(data[:cut], size, "starter.gguf")
            outcomes.append("read")
        except HeaderIncomplete:
            outcomes.append("incomplete")
    assert outcomes[-1] == "read" and outcomes[0] == "incomplete"
