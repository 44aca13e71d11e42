"""Untrusted images, from a URL to RGB pixels, refusing whatever could hurt us on the way.

llama-cpp-python's own image loader opens any URL (``file://`` included) with no time or size
limit, so images never reach it: ``load_image_bytes`` takes a ``data:`` or http(s) URL (fetch.py
fetches the latter) and returns at most ``max_bytes`` of file; ``decode_image`` turns a file into
RGB pixels with Pillow. Only PNG, JPEG, WebP and GIF (its first frame) are opened, and the pixel
count the header declares is checked before a pixel is decoded (``Image.open`` reads only the
header), so a small file that would expand to gigabytes (a decompression bomb) is refused
cheaply. Pillow's global ``MAX_IMAGE_PIXELS`` is not relied on; its own bomb error still counts as
too large. The media type a data URL declares must be ``image/*`` but the format is read from
the bytes.

The gateway fetches http(s) images; a runner is only ever sent data URLs, which
``decode_data_url`` takes and nothing else. Every refusal is an ``ImageRejectedError``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from localserve.api.media_types import image_media_type
from localserve.errors import ImageRejectedError
from localserve.media.policy import ImagePolicy, over_max_bytes

if TYPE_CHECKING:  # Pillow is imported at the first decode: the gateway never decodes
    from PIL import Image

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
WHITE = (255, 255, 255, 255)


@dataclass(frozen=True)
class DecodedImage:
    """RGB pixels, 3 bytes each, row by row from the top left: what a vision projector takes."""

    width: int
    height: int
    rgb: bytes = field(repr=False)


async def load_image_bytes(url: str, policy: ImagePolicy) -> bytes:
    """The image file behind a ``data:`` or http(s) URL; any other URL is refused."""
    scheme = url_scheme(url)
    if scheme == "data":
        return read_data_url(url, policy)
    if scheme in ("http", "https"):
        from localserve.media.fetch import fetch_image  # httpx: the gateway's, not a runner's

        return await fetch_image(url, policy)
    raise ImageRejectedError(
        f"Image URLs must be data: or http(s) URLs; {scheme[:20]}: URLs are refused.",
        "image_url_forbidden",
    )


def sniff_media_type(data: bytes) -> str:
    """The image type the bytes start like (PNG, JPEG, GIF, WebP); octet-stream, which the
    decoder refuses, for anything else. Never trusts a server's Content-Type."""
    return image_media_type(data) or "application/octet-stream"


async def fetched_as_data_url(url: str, policy: ImagePolicy) -> str:
    """An http(s) image URL as a data: URL of the bytes fetched within ``policy`` (a data:
    URL comes back as it is, after its size check): what the gateway hands a local runner."""
    if url_scheme(url) == "data":
        read_data_url(url, policy)
        return url
    data = await load_image_bytes(url, policy)
    return f"data:{sniff_media_type(data)};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_url(url: str, policy: ImagePolicy) -> DecodedImage:
    """The runner's entry: the gateway has already turned http(s) images into data URLs."""
    if url_scheme(url) != "data":
        raise ImageRejectedError(
            "Only data: URLs are decoded here; http(s) images must be fetched first.",
            "image_url_forbidden",
        )
    return decode_image(read_data_url(url, policy), policy)


def url_scheme(url: str) -> str:
    if not url:
        raise ImageRejectedError("The image URL is empty.", "invalid_image_url")
    scheme, colon, _ = url.partition(":")
    if not colon or not SCHEME.fullmatch(scheme):
        raise ImageRejectedError(
            "The image URL has no scheme; send a data: URL or an http(s) URL.",
            "invalid_image_url",
        )
    return scheme.lower()


def read_data_url(url: str, policy: ImagePolicy) -> bytes:
    """The bytes of ``data:image/...[;base64],DATA``, base64 or percent-encoded."""
    header, comma, payload = url[len("data:") :].partition(",")
    if not comma:
        raise ImageRejectedError("The data URL has no ',' before its data.", "invalid_image")
    media_type, *parameters = (part.strip().lower() for part in header.split(";"))
    if not media_type.startswith("image/"):
        raise ImageRejectedError(
            f"The data URL holds {media_type or 'text/plain'}, not an image "
            "(image/png, image/jpeg, image/webp or image/gif).",
            "invalid_image",
        )
    is_base64 = "base64" in parameters
    # Decoded, base64 is 3/4 of its length (whitespace aside) and percent-encoding at least 1/3.
    if len(payload) > (2 if is_base64 else 3) * policy.max_bytes:
        raise over_max_bytes(policy)
    data = decode_base64(payload) if is_base64 else unquote_to_bytes(payload)
    if len(data) > policy.max_bytes:
        raise over_max_bytes(policy)
    return data


def decode_base64(payload: str) -> bytes:
    """Lenient where clients differ (line breaks, missing padding), strict about the alphabet."""
    compact = "".join(payload.split())
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageRejectedError("The data URL's base64 is malformed.", "invalid_image") from exc


def decode_image(data: bytes, policy: ImagePolicy) -> DecodedImage:
    """RGB pixels of a PNG, JPEG, WebP or GIF (first frame), upright as its EXIF orientation
    says. CPU-bound (tens of ms for a photo): async callers run it in a thread."""
    from PIL import Image, ImageOps

    with pillow_errors(policy):
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    with image:
        check_pixels(image.size, policy)
        with pillow_errors(policy):
            ImageOps.exif_transpose(image, in_place=True)
            rgb = flatten_to_rgb(image)
    return DecodedImage(rgb.width, rgb.height, rgb.tobytes())


def check_pixels(size: tuple[int, int], policy: ImagePolicy) -> None:
    width, height = size
    if width * height > policy.max_pixels:
        raise ImageRejectedError(
            f"The image is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels); "
            f"at most {policy.max_pixels / 1e6:.1f} megapixels are accepted.",
            "image_too_large",
        )


def flatten_to_rgb(image: Image.Image) -> Image.Image:
    """Transparent pixels become white, as on a white page: dropping alpha instead would show
    whatever colour they happen to hold, often black, and hide dark content drawn on them."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        background = Image.new("RGBA", image.size, WHITE)
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


@contextlib.contextmanager
def pillow_errors(policy: ImagePolicy) -> Iterator[None]:
    """Pillow's many ways of failing on a hostile file, as the two refusals a client can act on."""
    from PIL import Image

    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own limit, hit before ours could look (the warning counts where warnings
        # are errors, as in the tests).
        raise ImageRejectedError(
            "The image declares more pixels than accepted "
            f"(at most {policy.max_pixels / 1e6:.1f} megapixels).",
            "image_too_large",
        ) from exc
    except Exception as exc:
        # Corrupt and truncated files raise OSError, SyntaxError, ValueError, EOFError,
        # struct.error... depending on the format and where they break.
        raise ImageRejectedError(
            "The image cannot be read: it is not a PNG, JPEG, WebP or GIF file, or it is corrupt "
            "or truncated.",
            "invalid_image",
        ) from exc


def content_hash(image: DecodedImage) -> str:
    """A key for cached image embeddings: the same pixels give the same key, however they were
    encoded or sent."""
    digest = hashlib.sha256(f"{image.width}x{image.height}:".encode())
    digest.update(image.rgb)
    return digest.hexdigest()
