"""The tiny vision model pair (``tests/helpers/vision_model.py``): written the same on every run,
loaded by llama.cpp, and accepted by libmtmd as a projector that sees."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
from gguf import GGUFReader

from localserve.daemon.engine_path import VerdictStore, prepare_in_process
from localserve.hub.gguf_header import read_gguf_header
from tests.helpers.model_files import starter_path
from tests.helpers.vision_model import IMAGE_SIZE, IMAGE_TOKENS, N_EMBD, make_vision_pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_vision_pair(tmp_path_factory.mktemp("vision"))


def test_the_pair_is_written_the_same_every_time(pair: tuple[Path, Path], tmp_path: Path) -> None:
    text, mmproj = pair
    assert mmproj.name.startswith("mmproj-") and text.parent == mmproj.parent
    again = make_vision_pair(tmp_path)
    assert [p.read_bytes() for p in again] == [text.read_bytes(), mmproj.read_bytes()]

    model = read_gguf_header(text)  # localserve's own header check passes both files
    starter = read_gguf_header(starter_path())
    assert model.metadata["general.architecture"] == "llama"
    assert model.metadata["llama.embedding_length"] == N_EMBD
    for key in ("tokenizer.chat_template", "tokenizer.ggml.eos_token_id"):
        assert model.metadata[key] == starter.metadata[key]
    assert model.array_lengths["tokenizer.ggml.tokens"] == 49152
    projector = read_gguf_header(mmproj).metadata
    assert projector["general.architecture"] == "clip"
    assert projector["clip.projector_type"] == "mlp"
    assert projector["clip.has_vision_encoder"] is True
    assert projector["clip.vision.image_size"] == IMAGE_SIZE
    mm2 = next(t for t in GGUFReader(mmproj).tensors if t.name == "mm.2.weight")
    assert mm2.shape[1] == N_EMBD  # ggml ne[1]: the projector's output is the text model's width


def test_llama_cpp_loads_the_model_and_libmtmd_the_projector(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    text, mmproj = pair
    path = prepare_in_process(text, VerdictStore(tmp_path / "engine-checks.json"))
    import llama_cpp
    from llama_cpp import mtmd_cpp as mtmd

    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0
    params.use_extra_bufts = path.extra_buffers
    model = llama_cpp.llama_model_load_from_file(str(text).encode(), params)
    assert model
    mctx = chunks = bitmap = None
    try:
        assert llama_cpp.llama_model_n_embd_inp(model) == N_EMBD
        options = mtmd.mtmd_context_params_default()
        options.use_gpu = False
        options.print_timings = False
        options.n_threads = 1
        mctx = mtmd.mtmd_init_from_file(str(mmproj).encode(), model, options)
        assert mctx, "libmtmd refused the projector"
        assert mtmd.mtmd_support_vision(mctx)
        assert not mtmd.mtmd_support_audio(mctx)
        assert not mtmd.mtmd_decode_use_mrope(mctx)

        # One image, given as raw RGB, becomes one chunk of IMAGE_TOKENS embeddings.
        rgb = bytes(i % 251 for i in range(30 * 20 * 3))
        bitmap = mtmd.mtmd_bitmap_init(30, 20, (ctypes.c_uint8 * len(rgb)).from_buffer_copy(rgb))
        prompt = f"<|im_start|>user\n{mtmd.mtmd_default_marker().decode()}?<|im_end|>\n".encode()
        text_in = mtmd.mtmd_input_text(prompt, len(prompt), True, True)
        chunks = mtmd.mtmd_input_chunks_init()
        bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
        assert mtmd.mtmd_tokenize(mctx, chunks, ctypes.byref(text_in), bitmaps, 1) == 0
        kinds = [
            mtmd.mtmd_input_chunk_get_type(mtmd.mtmd_input_chunks_get(chunks, i))
            for i in range(mtmd.mtmd_input_chunks_size(chunks))
        ]
        text_kind, image_kind = mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT, mtmd.MTMD_INPUT_CHUNK_TYPE_IMAGE
        assert kinds == [text_kind, image_kind, text_kind]
        image = mtmd.mtmd_input_chunks_get(chunks, 1)
        assert mtmd.mtmd_input_chunk_get_n_tokens(image) == IMAGE_TOKENS
        assert mtmd.mtmd_input_chunk_get_n_pos(image) == IMAGE_TOKENS
        assert mtmd.mtmd_encode_chunk(mctx, image) == 0
        embeddings = mtmd.mtmd_get_output_embd(mctx)
        values = [embeddings[i] for i in range(IMAGE_TOKENS * N_EMBD)]
        assert all(abs(v) < 1e3 for v in values) and len(set(values)) > N_EMBD
    finally:
        if chunks:
            mtmd.mtmd_input_chunks_free(chunks)
        if bitmap:
            mtmd.mtmd_bitmap_free(bitmap)
        if mctx:
            mtmd.mtmd_free(mctx)
        llama_cpp.llama_model_free(model)
