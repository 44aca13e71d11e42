"""An image file's media type from its first bytes, for the four formats localserve decodes
(PNG, JPEG, GIF, WebP). Never from a name or a server's Content-Type: the bytes decide."""

from __future__ import annotations


def image_media_type(head: bytes) -> str | None:
    """The media type of an image file from its first 12 bytes; None for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None
