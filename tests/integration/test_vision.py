"""Images through the real daemon, in each protocol's own shape, with the official SDKs: OpenAI
chat and Responses, Anthropic and Ollama, on the tiny vision pair (``tests/helpers/
vision_model.py``) imported with its projector.

Its weights are noise, so the tests check the plumbing: the image's tokens are counted, the
answer depends on which image was sent (a dropped image would answer as the text-only prompt
does), a model without a projector refuses images naming the model that sees, and untrusted
URLs are refused with their reasons.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import anthropic
import numpy as np
import ollama
import openai
import pytest
from PIL import Image

from tests.helpers.daemon_process import STARTER_MODEL, DaemonProcess
from tests.helpers.fake_http import LoopbackServer
from tests.helpers.imported_models import ModelImport, daemon_with_models, import_models
from tests.helpers.vision_model import IMAGE_TOKENS, make_vision_pair

VISION = "tiny-llava"
QUESTION = "What is in this picture?"
TOKENS = 6


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(out, format="PNG")
    return out.getvalue()


PNG_A = png(np.random.default_rng(7).integers(0, 256, (60, 80, 3)))
PNG_B = png(np.dstack([*np.meshgrid(np.arange(80) * 3, np.arange(60) * 4), np.full((60, 80), 40)]))


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


class Images(BaseHTTPRequestHandler):
    """/a.png and /b.png, and /moved, a redirect to /a.png."""

    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/a.png")
            self.end_headers()
            return
        body = {"/a.png": PNG_A, "/b.png": PNG_B}.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def images() -> Iterator[LoopbackServer]:
    server = LoopbackServer(Images)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    text, mmproj = make_vision_pair(tmp_path_factory.mktemp("vision-files"))
    # The test's image server is on loopback: allowed here, refused by default (below).
    with daemon_with_models(
        tmp_path_factory.mktemp("vision-daemon"),
        [ModelImport(VISION, text, mmproj)],
        env={"LOCALSERVE_ALLOW_PRIVATE_IMAGE_URLS": "true"},
    ) as running:
        yield running


def ask(client: openai.OpenAI, url: str | None, model: str = VISION) -> tuple[str, int]:
    content: list[dict[str, object]] = [{"type": "text", "text": QUESTION}]
    if url is not None:
        content.insert(0, {"type": "image_url", "image_url": {"url": url}})
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": content}],  # type: ignore[list-item]
        max_tokens=TOKENS,
        temperature=0,
    )
    assert reply.usage is not None
    return reply.choices[0].message.content or "", reply.usage.prompt_tokens


@pytest.fixture(scope="module")
def expected(client: openai.OpenAI) -> dict[str, tuple[str, int]]:
    """The OpenAI chat answers for image A, image B and no image: what the other protocols
    must reproduce."""
    return {
        "a": ask(client, data_url(PNG_A)),
        "b": ask(client, data_url(PNG_B)),
        "none": ask(client, None),
    }


def test_openai_chat_sees_the_image(expected: dict[str, tuple[str, int]]) -> None:
    (a, a_tokens), (b, _), (plain, plain_tokens) = expected["a"], expected["b"], expected["none"]
    assert a_tokens == plain_tokens + IMAGE_TOKENS
    assert a != b and plain not in (a, b)


def test_an_http_image_is_fetched_by_the_gateway(
    client: openai.OpenAI, images: LoopbackServer, expected: dict[str, tuple[str, int]]
) -> None:
    assert ask(client, f"{images.url}/b.png") == expected["b"]
    assert ask(client, f"{images.url}/moved") == expected["a"]  # one redirect, followed


def test_the_models_list_says_which_model_sees(daemon: DaemonProcess) -> None:
    listed = {model["id"]: model for model in daemon.openai().models.list().model_dump()["data"]}
    assert "vision" in listed[VISION]["capabilities"]
    assert "vision" not in listed[STARTER_MODEL]["capabilities"]
    with ollama.Client(host=daemon.url, headers=daemon.headers()) as sdk:
        assert "vision" in (sdk.show(VISION).capabilities or [])


def test_anthropic_image_blocks(
    daemon: DaemonProcess, images: LoopbackServer, expected: dict[str, tuple[str, int]]
) -> None:
    with anthropic.Anthropic(base_url=daemon.url, api_key=daemon.admin_key, max_retries=0) as sdk:
        for source, key in [
            (
                {
                    "type": "base64",
                    "media_type": "image/png",
                    "data": base64.b64encode(PNG_A).decode(),
                },
                "a",
            ),
            ({"type": "url", "url": f"{images.url}/b.png"}, "b"),
        ]:
            message = sdk.messages.create(
                model=VISION,
                max_tokens=TOKENS,
                extra_body={"temperature": 0},
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "source": source},  # type: ignore[misc,list-item]
                            {"type": "text", "text": QUESTION},
                        ],
                    }
                ],
            )
            text = "".join(block.text for block in message.content if block.type == "text")
            assert (text, message.usage.input_tokens) == expected[key]


def test_ollama_images(daemon: DaemonProcess, expected: dict[str, tuple[str, int]]) -> None:
    with ollama.Client(host=daemon.url, headers=daemon.headers()) as sdk:
        reply = sdk.chat(
            model=VISION,
            messages=[{"role": "user", "content": QUESTION, "images": [PNG_B]}],
            options={"num_predict": TOKENS, "temperature": 0},
        )
        assert (reply.message.content, reply.prompt_eval_count) == expected["b"]


def test_responses_input_image(client: openai.OpenAI, expected: dict[str, tuple[str, int]]) -> None:
    response = client.responses.create(
        model=VISION,
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_image", "image_url": data_url(PNG_A), "detail": "auto"},
                    {"type": "input_text", "text": QUESTION},
                ],
            }
        ],
        max_output_tokens=TOKENS,
        temperature=0,
    )
    assert response.usage is not None
    assert (response.output_text, response.usage.input_tokens) == expected["a"]


def test_a_model_without_a_projector_names_the_one_that_sees(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, data_url(PNG_A), model=STARTER_MODEL)
    error = refused.value.body
    assert isinstance(error, dict) and error.get("code") == "image_not_supported"
    assert VISION in str(error.get("message"))


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("file:///etc/passwd", "image_url_forbidden"),
        ("data:image/png;base64," + base64.b64encode(b"not a png").decode(), "invalid_image"),
        ("data:text/plain;base64,aGVsbG8=", "invalid_image"),
    ],
)
def test_bad_images_get_their_400(client: openai.OpenAI, url: str, code: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        ask(client, url)
    error = refused.value.body
    assert isinstance(error, dict) and error.get("code") == code, error


def test_private_image_urls_are_refused_by_default(
    tmp_path_factory: pytest.TempPathFactory, images: LoopbackServer
) -> None:
    home = tmp_path_factory.mktemp("vision-default")
    text, mmproj = make_vision_pair(tmp_path_factory.mktemp("vision-files-2"))
    daemon = DaemonProcess(home)
    import_models(daemon, [ModelImport(VISION, text, mmproj)])
    with daemon:
        with pytest.raises(openai.BadRequestError) as refused:
            ask(daemon.openai(), f"{images.url}/a.png")
        error = refused.value.body
        assert isinstance(error, dict) and error.get("code") == "image_url_forbidden"
