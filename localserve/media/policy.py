"""What an untrusted image may cost us, and which addresses an image URL may reach.

An image URL in a request is chosen by whoever sends the request, so fetching it must not become
a way into this machine's own services or the local network (SSRF): by default only public
(globally routable, unicast) addresses are fetched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, IPv6Network

from localserve.errors import ImageRejectedError
from localserve.units import format_bytes

IPAddress = IPv4Address | IPv6Address

# Prefixes whose last 32 bits are an IPv4 address: NAT64's well-known prefix (RFC 6052), which a
# gateway translates, and the deprecated IPv4-compatible form (::a.b.c.d).
IPV4_SUFFIX_PREFIXES = (IPv6Network("64:ff9b::/96"), IPv6Network("::/96"))
# NAT64 for local use (RFC 8215), where the IPv4 address may sit anywhere: a private network.
LOCAL_NAT64 = IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, 6to4, NAT64), if any: a
    connection to it ends up at that IPv4 address, so that is the one to judge."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in prefix for prefix in IPV4_SUFFIX_PREFIXES):
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_forbidden_address(address: IPAddress) -> bool:
    """True for loopback, private, link-local (cloud metadata at 169.254.169.254 included),
    shared (CGNAT), unspecified, multicast and reserved addresses, IPv4 and IPv6 alike."""
    if isinstance(address, IPv6Address):
        if address in LOCAL_NAT64:
            return True
        address = embedded_ipv4(address) or address
    # ``is_global`` alone lets some multicast ranges through, so multicast is named as well.
    return not address.is_global or address.is_multicast


@dataclass(frozen=True)
class ImagePolicy:
    """Limits for one untrusted image: the raw bytes fetched or decoded from a data URL, the
    pixels it may decode to, and where and how long an http(s) fetch may go."""

    max_bytes: int = 20 * 1024 * 1024
    # 8K UHD (7680 x 4320): beyond any photo a vision model needs; it decodes to ~100 MB of RGB.
    max_pixels: int = 33_177_600
    # For the whole fetch (DNS, every redirect, the body), not per read.
    fetch_timeout_s: float = 10.0
    max_redirects: int = 3
    # Lets image URLs reach loopback and LAN hosts (e.g. an image server on this machine).
    allow_private_addresses: bool = False
    # The address rule; replaceable so tests on loopback can let one address through.
    is_forbidden_address: Callable[[IPAddress], bool] = is_forbidden_address

    def forbids(self, address: IPAddress) -> bool:
        return not self.allow_private_addresses and self.is_forbidden_address(address)


def over_max_bytes(policy: ImagePolicy) -> ImageRejectedError:
    """The one refusal for too many bytes, whether they came in a data URL or over http(s)."""
    most = format_bytes(policy.max_bytes, binary=True)  # a power of two (20 MiB by default)
    return ImageRejectedError(
        f"The image is larger than {most}, the most accepted.", "image_too_large"
    )
