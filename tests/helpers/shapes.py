"""Golden shape checks: an answer of ours against a protocol's own documented example. Every
key the example shows must be in ours with a value of the same JSON type; we may send more keys.
Used by the unit tests (translators over known chunks) and ``tests/integration`` (a real model).
"""

from __future__ import annotations

from typing import Any

# Ollama sends "images" only for messages that have some; we serve text models.
OPTIONAL_KEYS = {"images"}
# A tool's arguments are the caller's data, not the protocol's: only their type is compared.
FREE_FORM_KEYS = {"arguments", "input"}


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object", type(None): "null"}[type(value)]


def assert_shape(ours: Any, documented: Any, where: str = "$") -> None:
    assert json_type(ours) == json_type(documented), f"{where}: {ours!r} vs {documented!r}"
    if where.rsplit(".", 1)[-1] in FREE_FORM_KEYS:
        return
    if isinstance(documented, dict):
        for key, value in documented.items():
            if key in OPTIONAL_KEYS and key not in ours:
                continue
            assert key in ours, f"{where}.{key} is missing from {ours!r}"
            assert_shape(ours[key], value, f"{where}.{key}")
    elif isinstance(documented, list) and documented and ours:
        assert_shape(ours[0], documented[0], f"{where}[0]")
