"""Untrusted media in requests: images, fetched and decoded within limits (``ImagePolicy``).

Free of the server and the runner, so both use it: the gateway turns image URLs into bytes
(``load_image_bytes``), a runner turns data URLs into pixels (``decode_data_url``).
"""

from localserve.media.images import (
    DecodedImage,
    content_hash,
    decode_data_url,
    decode_image,
    fetched_as_data_url,
    load_image_bytes,
    sniff_media_type,
)
from localserve.media.policy import ImagePolicy, is_forbidden_address

__all__ = [
    "DecodedImage",
    "ImagePolicy",
    "content_hash",
    "decode_data_url",
    "decode_image",
    "fetched_as_data_url",
    "is_forbidden_address",
    "load_image_bytes",
    "sniff_media_type",
]
