"""Images through the batching engine, in-process: libmtmd encodes them, the scheduler decodes
them into each request's own sequence, and their embeddings are cached by content.

The model is the tiny random-weight pair of ``tests/helpers/vision_model.py``: its words mean
nothing, so the tests check the plumbing. Two different images must lead the model to different
tokens, the same image to the same ones (whether encoded or taken from the cache, alone or
batched with other requests), and a request whose image were dropped would answer like the
text-only prompt, which the tests tell apart too.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from localserve.api.engine import EngineSettings
from localserve.api.requests import ChatCompletionRequest
from localserve.daemon.engine_path import VerdictStore, prepare_in_process
from localserve.errors import ImageRejectedError, UnsupportedFeatureError
from localserve.runner.chat_turn import chat_turn
from localserve.runner.engine import Engine
from localserve.runner.text import GenerationStats
from localserve.runner.weights import EngineConfig
from tests.helpers.vision_model import IMAGE_TOKENS, make_vision_pair

TOKENS = 8


class TextSink:
    """Keeps the text and stats of one generation and says when it is done."""

    def __init__(self, prompt_tokens: int) -> None:
        self.cancelled = threading.Event()
        self.stats = GenerationStats(prompt_tokens)
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.pieces: list[str] = []

    def emit(self, text: str) -> None:
        self.pieces.append(text)

    def close(self, error: BaseException | None = None) -> None:
        self.error = error
        self.done.set()

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def png_data_url(pixels: np.ndarray) -> str:
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")


RNG = np.random.default_rng(7)
IMAGE_A = png_data_url(RNG.integers(0, 256, (60, 80, 3)))
IMAGE_B = png_data_url(
    np.dstack([*np.meshgrid(np.arange(80) * 3, np.arange(60) * 4), np.full((60, 80), 40)])
)


def chat(
    *images: str, text: str = "What is in this picture?", before: str = ""
) -> ChatCompletionRequest:
    content: list[dict[str, object]] = [{"type": "text", "text": before}] if before else []
    content += [{"type": "image_url", "image_url": {"url": url}} for url in images]
    content.append({"type": "text", "text": text})
    return ChatCompletionRequest.model_validate(
        {
            "model": "tiny-llava",
            "messages": [{"role": "user", "content": content}],
            "max_tokens": TOKENS,
            "temperature": 0,
        }
    )


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_vision_pair(tmp_path_factory.mktemp("vision"))


@pytest.fixture(scope="module")
def engine(pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    text, mmproj = pair
    folder = tmp_path_factory.mktemp("engine")
    path = prepare_in_process(text, VerdictStore(folder / "engine-checks.json"))
    settings = EngineSettings(ctx=1024, gpu_layers=0, threads=2, batch_exact=True)
    engine = Engine(EngineConfig(text, "tiny-llava", settings, path, mmproj_path=mmproj))
    yield engine
    engine.close()


def start(engine: Engine, body: ChatCompletionRequest) -> TextSink:
    turn = chat_turn(engine, body)
    sink = TextSink(len(turn.prompt))
    generation = engine.prepare(
        turn.prompt, body.sampling(), turn.grammar, turn.thought, turn.images
    )
    engine.submit(generation, sink)
    return sink


def answer(engine: Engine, body: ChatCompletionRequest) -> TextSink:
    sink = start(engine, body)
    assert sink.done.wait(60), "the generation did not finish"
    assert sink.error is None, sink.error
    return sink


def test_image_tokens_are_prompt_tokens(engine: Engine) -> None:
    text_only = chat_turn(engine, chat()).prompt
    one = chat_turn(engine, chat(IMAGE_A))
    two = chat_turn(engine, chat(IMAGE_A, IMAGE_B))
    assert engine.info.vision
    assert one.images is not None and len(one.images.images) == 1
    assert len(one.prompt) == len(text_only) + IMAGE_TOKENS
    assert len(two.prompt) == len(text_only) + 2 * IMAGE_TOKENS
    # The image's positions hold placeholders, never a token: the same for the same image.
    image = one.images.images[0]
    assert all(token < 0 for token in one.prompt[image.start : image.end])
    assert one.prompt[image.start : image.end] == two.prompt[image.start : image.end]


def test_different_images_lead_to_different_tokens(engine: Engine) -> None:
    a, b, plain = (answer(engine, body) for body in (chat(IMAGE_A), chat(IMAGE_B), chat()))
    assert a.stats.images == b.stats.images == 1 and plain.stats.images == 0
    assert a.stats.prompt_tokens == plain.stats.prompt_tokens + IMAGE_TOKENS
    assert a.text != b.text
    assert plain.text not in (a.text, b.text)  # the image was not dropped


def test_the_same_image_again_comes_from_the_cache_and_answers_the_same(engine: Engine) -> None:
    first = answer(engine, chat(IMAGE_B, text="Describe it."))
    assert engine.projector is not None
    encoded = engine.projector.encoded
    # The same chat again: the slot's cached prefix reaches past the image.
    again = answer(engine, chat(IMAGE_B, text="Describe it."))
    assert again.stats.images == 0 and again.stats.cached_tokens > IMAGE_TOKENS
    assert again.text == first.text
    # Other words before it: the prefix ends before the image, whose embeddings are cached.
    other = answer(engine, chat(IMAGE_B, text="Describe it.", before="Look:"))
    assert (other.stats.images, other.stats.images_cached) == (1, 1)
    assert engine.projector.encoded == encoded  # encoded once, used three times


def test_images_of_concurrent_requests_reach_their_own_sequences(engine: Engine) -> None:
    alone = {url: answer(engine, chat(url, text="Batch?")).text for url in (IMAGE_A, IMAGE_B)}
    bodies = [chat(IMAGE_A, text="Batch?"), chat(IMAGE_B, text="Batch?"), chat(text="Batch?")]
    sinks = [start(engine, body) for body in bodies * 2]
    for sink in sinks:
        assert sink.done.wait(60) and sink.error is None
    texts = [sink.text for sink in sinks]
    assert texts[0] == texts[3] == alone[IMAGE_A]
    assert texts[1] == texts[4] == alone[IMAGE_B]
    assert texts[2] == texts[5] and texts[2] not in alone.values()


def test_bad_images_are_refused_before_anything_runs(engine: Engine) -> None:
    with pytest.raises(ImageRejectedError) as refused:
        chat_turn(engine, chat("data:image/png;base64," + base64.b64encode(b"nope").decode()))
    assert refused.value.code == "invalid_image"
    with pytest.raises(ImageRejectedError) as refused:
        chat_turn(engine, chat("http://example.com/cat.png"))  # the gateway fetches those
    assert refused.value.code == "image_url_forbidden"


def test_a_model_without_a_projector_refuses_images(
    pair: tuple[Path, Path], tmp_path: Path
) -> None:
    text, _ = pair
    path = prepare_in_process(text, VerdictStore(tmp_path / "engine-checks.json"))
    settings = EngineSettings(ctx=512, gpu_layers=0, threads=2, parallel=1)
    blind = Engine(EngineConfig(text, "tiny-text", settings, path))
    try:
        assert not blind.info.vision
        with pytest.raises(UnsupportedFeatureError) as refused:
            chat_turn(blind, chat(IMAGE_A))
        assert refused.value.code == "image_not_supported"
    finally:
        blind.close()


def test_the_shared_kv_cache_takes_images_too(pair: tuple[Path, Path], tmp_path: Path) -> None:
    """The default engine (one KV cache shared by 32 slots) with images in a batch."""
    text, mmproj = pair
    path = prepare_in_process(text, VerdictStore(tmp_path / "engine-checks.json"))
    settings = EngineSettings(ctx=1024, gpu_layers=0, threads=2)
    shared = Engine(EngineConfig(text, "tiny-llava", settings, path, mmproj_path=mmproj))
    try:
        bodies = [chat(IMAGE_A), chat(IMAGE_B), chat()] * 3
        sinks = [start(shared, body) for body in bodies]
        for sink in sinks:
            assert sink.done.wait(60) and sink.error is None
        texts = [sink.text for sink in sinks]
        assert len({texts[0], texts[1], texts[2]}) == 3
        assert texts[0::3] == [texts[0]] * 3 and texts[1::3] == [texts[1]] * 3
        assert sum(sink.stats.images for sink in sinks) >= 2
        assert shared.projector is not None and shared.projector.encoded == 2
    finally:
        shared.close()
