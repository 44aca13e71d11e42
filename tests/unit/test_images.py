"""Untrusted images: decoded within limits, fetched only from where the policy allows.

Images are made with Pillow in memory; http(s) URLs are served by a real server on loopback.
Every refusal is checked by its exact code, so a test fails if its check goes missing.
"""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, ip_address
from typing import Any, ClassVar
from urllib.parse import parse_qs, quote_from_bytes, urlsplit

import pytest
from PIL import Image

from localserve.errors import ImageRejectedError, ImageRejection
from localserve.media import (
    DecodedImage,
    ImagePolicy,
    content_hash,
    decode_data_url,
    decode_image,
    is_forbidden_address,
    load_image_bytes,
)
from localserve.media.policy import IPAddress
from tests.helpers.fake_http import JsonHandler, LoopbackServer

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (4, 4)) -> Image.Image:
    return Image.new("RGB", size, colour)


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def pixel(image: DecodedImage, x: int, y: int) -> tuple[int, ...]:
    start = (y * image.width + x) * 3
    return tuple(image.rgb[start : start + 3])


def near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 40) -> bool:
    """JPEG is lossy: a colour comes back close, not equal."""
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def refused(code: ImageRejection, action: Callable[[], object]) -> ImageRejectedError:
    with pytest.raises(ImageRejectedError) as caught:
        action()
    assert caught.value.code == code, str(caught.value)
    return caught.value


def load(url: str, policy: ImagePolicy) -> bytes:
    return asyncio.run(load_image_bytes(url, policy))


PNG = encode(solid(RED), "PNG")
DEFAULT = ImagePolicy()


# Decoding


def test_png_decodes_to_rgb_pixels_row_by_row() -> None:
    image = Image.new("RGB", (3, 2))
    image.putdata([RED, GREEN, BLUE, WHITE, (1, 2, 3), (250, 251, 252)])

    decoded = decode_image(encode(image, "PNG"), DEFAULT)

    assert (decoded.width, decoded.height) == (3, 2)
    assert len(decoded.rgb) == 3 * 2 * 3
    assert [pixel(decoded, x, y) for y in range(2) for x in range(3)] == [
        RED, GREEN, BLUE, WHITE, (1, 2, 3), (250, 251, 252),
    ]  # fmt: skip


def test_webp_decodes() -> None:
    decoded = decode_image(encode(solid(BLUE, (5, 3)), "WEBP", lossless=True), DEFAULT)

    assert (decoded.width, decoded.height) == (5, 3)
    assert pixel(decoded, 4, 2) == BLUE


def test_jpeg_is_turned_upright_by_its_exif_orientation() -> None:
    # Stored 40 wide, left half red; orientation 6 says "rotate 90 degrees clockwise to view",
    # so it shows 20 wide and 40 tall with red on top.
    stored = Image.new("RGB", (40, 20), BLUE)
    stored.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6

    decoded = decode_image(encode(stored, "JPEG", exif=exif, quality=95), DEFAULT)

    assert (decoded.width, decoded.height) == (20, 40)
    assert near(pixel(decoded, 10, 5), RED)
    assert near(pixel(decoded, 10, 35), BLUE)


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [solid(RED).convert("P"), solid(GREEN).convert("P")]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(io.BytesIO(gif)) as animated:
        assert animated.n_frames == 2
        animated.seek(1)
        assert animated.convert("RGB").getpixel((0, 0)) == GREEN

    decoded = decode_image(gif, DEFAULT)

    assert set(zip(*[iter(decoded.rgb)] * 3, strict=True)) == {RED}


def test_transparency_is_flattened_onto_white() -> None:
    image = Image.new("RGBA", (3, 1))
    image.putdata([(0, 0, 0, 0), (0, 0, 255, 255), (255, 0, 0, 128)])

    decoded = decode_image(encode(image, "PNG"), DEFAULT)

    assert pixel(decoded, 0, 0) == WHITE
    assert pixel(decoded, 1, 0) == BLUE
    assert near(pixel(decoded, 2, 0), (255, 127, 127), tolerance=2)


def noisy_png() -> bytes:
    """Random pixels: a PNG whose data cannot be compressed away, to cut in half."""
    return encode(Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48), "PNG")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"this is not an image at all", id="text"),
        pytest.param(PNG[:8] + b"\x00" * 64, id="png-signature-then-garbage"),
        pytest.param(noisy_png()[: len(noisy_png()) // 2], id="truncated-png"),
        pytest.param(encode(solid(RED), "BMP"), id="bmp-not-accepted"),
        pytest.param(encode(solid(RED), "TIFF"), id="tiff-not-accepted"),
    ],
)
def test_unreadable_or_unaccepted_files_are_refused(data: bytes) -> None:
    error = refused("invalid_image", lambda: decode_image(data, DEFAULT))

    assert "PNG, JPEG, WebP or GIF" in str(error)


def test_decompression_bomb_is_refused_from_its_header() -> None:
    # 8000 x 8000 one-bit pixels compress to a few KB and would decode to 192 MB of RGB; under
    # Pillow's own limit, so only our check stands in the way.
    bomb = encode(Image.new("1", (8000, 8000)), "PNG")
    assert len(bomb) < 20_000

    error = refused("image_too_large", lambda: decode_image(bomb, DEFAULT))

    assert str(error) == (
        "The image is 8000x8000 pixels (64.0 megapixels); at most 33.2 megapixels are accepted."
    )


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: all a bomb check may read."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def test_pillows_own_bomb_limit_is_a_clear_refusal_too() -> None:
    lenient = ImagePolicy(max_pixels=10**12)

    refused("image_too_large", lambda: decode_image(png_header(30_000, 30_000), lenient))


def test_the_pixel_limit_is_the_policys() -> None:
    image = encode(solid(RED, (100, 100)), "PNG")

    assert decode_image(image, ImagePolicy(max_pixels=10_000)).width == 100
    refused("image_too_large", lambda: decode_image(image, ImagePolicy(max_pixels=9_999)))


def test_content_hash_follows_the_pixels_not_the_file() -> None:
    picture = Image.new("RGB", (6, 1))
    picture.putdata([RED, GREEN, BLUE, WHITE, RED, GREEN])
    as_png = decode_image(encode(picture, "PNG"), DEFAULT)
    as_webp = decode_image(encode(picture, "WEBP", lossless=True), DEFAULT)
    transposed = DecodedImage(1, 6, as_png.rgb)
    changed = DecodedImage(6, 1, b"\x00" + as_png.rgb[1:])

    assert content_hash(as_png) == content_hash(as_webp)
    assert len(content_hash(as_png)) == 64
    assert content_hash(transposed) != content_hash(as_png)
    assert content_hash(changed) != content_hash(as_png)


# Data URLs and schemes


def test_data_urls_in_base64_and_percent_encoding() -> None:
    # Line breaks every 76 characters, as MIME writes it, and the padding left out.
    wrapped = base64.encodebytes(PNG).decode().replace("=", "")
    assert "\n" in wrapped.strip()

    assert load(data_url(PNG), DEFAULT) == PNG
    assert load(f"data:image/png;base64,{wrapped}", DEFAULT) == PNG
    assert load(f"DATA:Image/PNG;charset=binary;base64,{wrapped}", DEFAULT) == PNG
    assert load(f"data:image/png,{quote_from_bytes(PNG)}", DEFAULT) == PNG
    assert decode_data_url(data_url(PNG), DEFAULT) == decode_image(PNG, DEFAULT)


@pytest.mark.parametrize(
    "url",
    [
        data_url(b"hello", "text/plain"),
        data_url(PNG, "application/octet-stream"),
        "data:,hello",
        f"data:;base64,{base64.b64encode(PNG).decode()}",
    ],
)
def test_data_urls_must_say_they_hold_an_image(url: str) -> None:
    error = refused("invalid_image", lambda: load(url, DEFAULT))

    assert "not an image" in str(error)


def test_malformed_data_urls_are_refused() -> None:
    refused("invalid_image", lambda: load("data:image/png;base64,iVBOR*w0KGgo=", DEFAULT))
    refused("invalid_image", lambda: load("data:image/png;base64", DEFAULT))


def test_data_url_over_max_bytes_is_refused() -> None:
    small = ImagePolicy(max_bytes=len(PNG) - 1)

    assert load(data_url(PNG), ImagePolicy(max_bytes=len(PNG))) == PNG
    error = refused("image_too_large", lambda: load(data_url(PNG), small))
    assert "the most accepted" in str(error)
    # Far over the limit: refused before any decoding.
    refused("image_too_large", lambda: load(data_url(PNG * 100), small))
    refused("image_too_large", lambda: decode_data_url(data_url(PNG), small))


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/cat.png", "javascript:alert(1)", "c:\\a.png"]
)
def test_urls_other_than_data_and_http_are_forbidden(url: str) -> None:
    error = refused("image_url_forbidden", lambda: load(url, DEFAULT))

    assert str(error).startswith("Image URLs must be data: or http(s) URLs;")


@pytest.mark.parametrize("url", ["", "images/cat.png", "/etc/passwd", "//example.com/cat.png"])
def test_urls_without_a_scheme_are_invalid(url: str) -> None:
    refused("invalid_image_url", lambda: load(url, DEFAULT))


@pytest.mark.parametrize("url", ["http://example.com/cat.png", "file:///etc/passwd"])
def test_decode_data_url_takes_nothing_but_data_urls(url: str) -> None:
    refused("image_url_forbidden", lambda: decode_data_url(url, DEFAULT))


# Which addresses an image URL may reach


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.9.9.9", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
        "100.64.0.1", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
        "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "ff0e::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::7f00:1",
        "2002:7f00:1::1", "64:ff9b::a00:1", "64:ff9b:1::1", "2001:db8::1",
    ],
)  # fmt: skip
def test_local_private_and_special_addresses_are_forbidden(address: str) -> None:
    assert is_forbidden_address(ip_address(address))
    assert ImagePolicy().forbids(ip_address(address))
    assert not ImagePolicy(allow_private_addresses=True).forbids(ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not is_forbidden_address(ip_address(address))


# http(s), from a real server on loopback


class ImageServer(JsonHandler):
    """/image.png, /hops/N (N redirects, then the image), /redirect?to=URL, /slow (trickles),
    /endless (no Content-Length), /declared-huge, and 404 for the rest."""

    hosts: ClassVar[list[str]] = []  # the Host header of every request that arrived

    def do_GET(self) -> None:
        self.hosts.append(self.headers.get("Host", ""))
        path = urlsplit(self.path)
        if path.path == "/image.png":
            self.send_bytes(PNG)
        elif path.path.startswith("/hops/"):
            left = int(path.path.removeprefix("/hops/"))
            self.redirect(f"/hops/{left - 1}") if left else self.send_bytes(PNG)
        elif path.path == "/redirect":
            self.redirect(parse_qs(path.query)["to"][0])
        elif path.path == "/slow":
            self.trickle()
        elif path.path == "/endless":
            self.endless()
        elif path.path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            self.wfile.write(PNG)
        else:
            self.send_json(404, {"error": "no such image"})

    def send_bytes(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def trickle(self) -> None:
        """A byte every 0.1 s: each read is quick, the whole body would take 100 s."""
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        for _ in range(50):
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.1)

    def endless(self) -> None:
        """64 KiB chunks with no Content-Length, until the client hangs up (or 8 MiB)."""
        self.close_connection = True
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        for _ in range(128):
            try:
                self.wfile.write(b"\x00" * 65536)
            except OSError:
                return


@pytest.fixture(scope="module")
def server() -> Iterator[LoopbackServer]:
    running = LoopbackServer(ImageServer)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def hosts() -> list[str]:
    ImageServer.hosts.clear()
    return ImageServer.hosts


LOOPBACK = ImagePolicy(allow_private_addresses=True, fetch_timeout_s=5)


def test_http_image_is_fetched_when_loopback_is_allowed(
    server: LoopbackServer, hosts: list[str]
) -> None:
    data = load(f"{server.url}/image.png", LOOPBACK)

    assert decode_image(data, DEFAULT) == decode_image(PNG, DEFAULT)
    assert hosts == [server.url.removeprefix("http://")]


def test_a_host_name_is_resolved_once_and_kept_in_the_host_header(
    server: LoopbackServer, hosts: list[str]
) -> None:
    port = server.url.rsplit(":", 1)[1]

    assert load(f"http://localhost:{port}/image.png", LOOPBACK) == PNG
    assert hosts == [f"localhost:{port}"]


def test_loopback_is_refused_by_default_before_any_request(
    server: LoopbackServer, hosts: list[str]
) -> None:
    port = server.url.rsplit(":", 1)[1]
    strict = ImagePolicy(fetch_timeout_s=5)

    error = refused("image_url_forbidden", lambda: load(f"{server.url}/image.png", strict))
    assert str(error) == (
        "The image URL's host 127.0.0.1 is at 127.0.0.1, a private or local address; "
        "image URLs may only reach public addresses."
    )
    refused("image_url_forbidden", lambda: load(f"http://localhost:{port}/image.png", strict))
    assert hosts == []


def test_redirects_are_followed_up_to_the_limit(server: LoopbackServer) -> None:
    assert load(f"{server.url}/hops/3", LOOPBACK) == PNG

    error = refused("image_fetch_failed", lambda: load(f"{server.url}/hops/4", LOOPBACK))
    assert str(error) == "The image URL redirected more than 3 times."


def only_this_loopback_address_is_public(address: IPAddress) -> bool:
    """The test's address rule: 127.0.0.1 (the test server) passes, the rest as by default."""
    return address != IPv4Address("127.0.0.1") and is_forbidden_address(address)


def test_every_redirect_is_checked_again(server: LoopbackServer, hosts: list[str]) -> None:
    policy = ImagePolicy(
        fetch_timeout_s=5, is_forbidden_address=only_this_loopback_address_is_public
    )
    port = server.url.rsplit(":", 1)[1]
    to_private = f"{server.url}/redirect?to=http://127.0.0.2:{port}/image.png"
    to_file = f"{server.url}/redirect?to=file:///etc/passwd"

    assert load(f"{server.url}/hops/1", policy) == PNG
    error = refused("image_url_forbidden", lambda: load(to_private, policy))
    assert "127.0.0.2, a private or local address" in str(error)
    error = refused("image_url_forbidden", lambda: load(to_file, policy))
    assert str(error) == "The image URL redirected to a file: URL; only http(s) is followed."
    assert "127.0.0.2" not in " ".join(hosts)


def test_the_whole_fetch_has_one_deadline(server: LoopbackServer) -> None:
    impatient = ImagePolicy(fetch_timeout_s=0.5, allow_private_addresses=True)
    started = time.monotonic()

    error = refused("image_fetch_failed", lambda: load(f"{server.url}/slow", impatient))

    assert time.monotonic() - started < 3
    assert str(error) == "The image URL took longer than 0.5 s to fetch."


def test_bodies_stop_at_max_bytes(server: LoopbackServer) -> None:
    small = ImagePolicy(max_bytes=100_000, fetch_timeout_s=5, allow_private_addresses=True)

    error = refused("image_too_large", lambda: load(f"{server.url}/endless", small))
    assert str(error) == "The image is larger than 97.7 KiB, the most accepted."
    refused("image_too_large", lambda: load(f"{server.url}/declared-huge", small))


def test_error_statuses_and_dead_ports_are_fetch_failures(server: LoopbackServer) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]

    error = refused("image_fetch_failed", lambda: load(f"{server.url}/missing.png", LOOPBACK))
    assert str(error) == "The image URL answered HTTP 404 instead of the image."
    refused("image_fetch_failed", lambda: load(f"http://127.0.0.1:{dead_port}/a.png", LOOPBACK))
