"""Fetching an image from an http(s) URL that someone else chose.

Each hop (the URL, then every redirect) is checked before anything is sent to it: http or https
only, and every address its host resolves to must pass ``ImagePolicy.forbids``. The request then
goes to the checked address itself: the URL's host is swapped for that address, while the Host
header, TLS SNI and the certificate check keep the name. So a DNS answer that changes between the
check and the connection (DNS rebinding) cannot send the request anywhere else. Redirects are
followed here, never by httpx, so that each one is checked the same way.

The whole fetch (DNS, redirects, body) has one deadline, and the body is read as it arrives, up
to ``max_bytes`` and not a byte more; compressed bodies are not asked for (nor decompressed), so
a small gzip body cannot expand past the cap. No proxy is used, from the environment or
otherwise: through a proxy, the address we check is not the one the request reaches. Each fetch
has its own client: pooled connections are keyed by address, and one made with another host's
name (SNI) must not be reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from ipaddress import ip_address

import httpx

from localserve.errors import ImageRejectedError
from localserve.media.policy import ImagePolicy, IPAddress, over_max_bytes

HTTP_SCHEMES = ("http", "https")
REQUEST_HEADERS = {
    "User-Agent": "localserve",
    "Accept": "image/*",
    "Accept-Encoding": "identity",
}


async def fetch_image(url: str, policy: ImagePolicy) -> bytes:
    """The body of an http(s) image URL, or ``ImageRejectedError`` saying why not."""
    target = parse_http_url(url)
    try:
        with network_errors(policy):
            return await asyncio.wait_for(follow(target, policy), policy.fetch_timeout_s)
    except asyncio.TimeoutError:
        raise too_slow(policy) from None


def parse_http_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ImageRejectedError(
            f"The image URL is not valid: {exc}.", "invalid_image_url"
        ) from exc
    if parsed.scheme not in HTTP_SCHEMES:
        raise ImageRejectedError(
            f"Only http(s) image URLs are fetched, not {parsed.scheme or 'relative'} ones.",
            "image_url_forbidden",
        )
    if not parsed.raw_host:
        raise ImageRejectedError("The image URL has no host name.", "invalid_image_url")
    return parsed


async def follow(url: httpx.URL, policy: ImagePolicy) -> bytes:
    """Up to ``max_redirects`` redirects, each checked as the first URL was, then the body."""
    async with httpx.AsyncClient(
        headers=REQUEST_HEADERS, timeout=policy.fetch_timeout_s, trust_env=False
    ) as client:
        for _hop in range(policy.max_redirects + 1):
            response = await send_pinned(client, url, policy)
            try:
                if not response.is_redirect:
                    return await read_body(response, policy)
                url = redirect_target(url, response.headers["Location"])
            finally:
                await response.aclose()
    raise ImageRejectedError(
        f"The image URL redirected more than {policy.max_redirects} times.", "image_fetch_failed"
    )


def redirect_target(url: httpx.URL, location: str) -> httpx.URL:
    try:
        target = url.join(location)
    except httpx.InvalidURL as exc:
        raise ImageRejectedError(
            f"The image URL redirected to an invalid URL: {exc}.", "image_fetch_failed"
        ) from exc
    if target.scheme not in HTTP_SCHEMES:
        raise ImageRejectedError(
            f"The image URL redirected to a {target.scheme}: URL; only http(s) is followed.",
            "image_url_forbidden",
        )
    return parse_http_url(str(target))


async def send_pinned(
    client: httpx.AsyncClient, url: httpx.URL, policy: ImagePolicy
) -> httpx.Response:
    """GET ``url`` from an address we checked, not from whatever its name resolves to next;
    when one cannot be reached (IPv6 without a route), the next, as a browser would."""
    addresses = await checked_addresses(url, policy)
    for address in addresses[:-1]:
        with contextlib.suppress(httpx.ConnectError):
            return await send_to(client, url, address)
    return await send_to(client, url, addresses[-1])


async def send_to(client: httpx.AsyncClient, url: httpx.URL, address: IPAddress) -> httpx.Response:
    pinned = url.copy_with(host=str(address), username=None, password=None)
    name = url.raw_host.decode("ascii")
    extensions = {"sni_hostname": name} if url.scheme == "https" else {}
    request = client.build_request(
        "GET", pinned, headers={"Host": url.netloc.decode("ascii")}, extensions=extensions
    )
    return await client.send(request, stream=True, follow_redirects=False)


async def checked_addresses(url: httpx.URL, policy: ImagePolicy) -> list[IPAddress]:
    """The addresses of the URL's host, once all of them pass the policy: refusing a host with
    any forbidden address keeps the verdict the same whichever one we end up connecting to."""
    addresses = await resolve(url)
    for address in addresses:
        if policy.forbids(address):
            raise ImageRejectedError(
                f"The image URL's host {url.host} is at {address}, a private or local address; "
                "image URLs may only reach public addresses.",
                "image_url_forbidden",
            )
    return addresses


async def resolve(url: httpx.URL) -> list[IPAddress]:
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        infos = []
    if not infos:
        raise ImageRejectedError(
            f"The image URL's host {url.host} does not resolve.", "image_fetch_failed"
        )
    return list(dict.fromkeys(ip_address(info[4][0]) for info in infos))


async def read_body(response: httpx.Response, policy: ImagePolicy) -> bytes:
    if response.status_code != httpx.codes.OK:
        raise ImageRejectedError(
            f"The image URL answered HTTP {response.status_code} instead of the image.",
            "image_fetch_failed",
        )
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > policy.max_bytes:
        raise over_max_bytes(policy)
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > policy.max_bytes:
            raise over_max_bytes(policy)
    return bytes(body)


@contextlib.contextmanager
def network_errors(policy: ImagePolicy) -> Iterator[None]:
    """httpx's failures as the one refusal a client can act on."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise too_slow(policy) from exc
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        reason = str(exc) or type(exc).__name__
        raise ImageRejectedError(
            f"The image URL could not be fetched: {reason}.", "image_fetch_failed"
        ) from exc


def too_slow(policy: ImagePolicy) -> ImageRejectedError:
    return ImageRejectedError(
        f"The image URL took longer than {policy.fetch_timeout_s:g} s to fetch.",
        "image_fetch_failed",
    )
