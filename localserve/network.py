"""What went wrong on the network, in words a person can act on.

Every outbound call localserve makes (the Hugging Face Hub, cloud providers) fails in one of a
few ways. ``fault_from_exception`` and ``fault_from_response`` sort an httpx exception or an
unusable answer into a ``NetworkFault``; ``NetworkFault.describe`` says it in one line naming the
service. The callers decide what to do with it (retry, wait for the network, fail), by ``kind``,
never by matching message strings.

    kind          seen as                                              transient
    dns           the host name does not resolve (offline, DNS down)   yes
    unreachable   no route to the host (offline, wrong network)        yes
    refused       nothing listens there, or a firewall resets          yes
    timeout       no answer within the time allowed                    yes
    dropped       the connection closed in the middle of an answer     yes
    proxy         the configured proxy cannot be reached or refuses    yes
    tls           the certificate is not trusted (a captive portal?)   no
    server        HTTP 5xx                                             yes
    rate_limited  HTTP 429 (``retry_after`` when the server says)      yes
    web_page      HTML (or other non-JSON) where JSON was expected     no
"""

from __future__ import annotations

import errno
import socket
import ssl
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:  # imported where used: runners import this module, and never call out
    import httpx

# No route, or no usable address of that family (IPv6 switched off): this machine cannot get there.
UNREACHABLE_ERRNOS = {
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.ENETDOWN,
    errno.EHOSTDOWN,
    errno.EADDRNOTAVAIL,
    errno.EAFNOSUPPORT,
}


class FaultKind(str, Enum):
    DNS = "dns"
    UNREACHABLE = "unreachable"
    REFUSED = "refused"
    TIMEOUT = "timeout"
    DROPPED = "dropped"
    PROXY = "proxy"
    TLS = "tls"
    SERVER = "server"
    RATE_LIMITED = "rate_limited"
    WEB_PAGE = "web_page"


TRANSIENT = {
    FaultKind.DNS,
    FaultKind.UNREACHABLE,
    FaultKind.REFUSED,
    FaultKind.TIMEOUT,
    FaultKind.DROPPED,
    FaultKind.PROXY,
    FaultKind.SERVER,
    FaultKind.RATE_LIMITED,
}
REASONS = {
    FaultKind.DNS: "the name does not resolve",
    FaultKind.UNREACHABLE: "no route to the host",
    FaultKind.REFUSED: "connection refused",
    FaultKind.TIMEOUT: "no answer in time",
    FaultKind.DROPPED: "connection lost",
    FaultKind.PROXY: "the proxy failed",
    FaultKind.TLS: "certificate not trusted",
    FaultKind.SERVER: "server error",
    FaultKind.RATE_LIMITED: "rate limited",
    FaultKind.WEB_PAGE: "a web page instead of data",
}
# Faults that mean "this machine is offline or on the wrong network" rather than "the service
# has a problem": the messages say so.
OFFLINE = {FaultKind.DNS, FaultKind.UNREACHABLE}


@dataclass(frozen=True)
class NetworkFault:
    kind: FaultKind
    host: str
    detail: str = ""  # a few words from the OS or the server, for the curious
    status: int | None = None
    retry_after: float | None = None
    proxy: str | None = None
    timeout_s: float | None = None

    @property
    def transient(self) -> bool:
        """Worth retrying later: the same request may well work once the network is back."""
        return self.kind in TRANSIENT

    @property
    def offline(self) -> bool:
        return self.kind in OFFLINE

    @property
    def reason(self) -> str:
        """A few words for a progress line: "HTTP 503", "connection refused"."""
        if self.status is not None:
            return f"HTTP {self.status}"
        return REASONS[self.kind]

    def describe(self, service: str) -> str:
        """One line: what failed, in terms of ``service`` ("the Hugging Face Hub")."""
        kind = self.kind
        if kind is FaultKind.DNS:
            return f"Cannot reach {service}: {self.host} does not resolve (no network?)."
        if kind is FaultKind.UNREACHABLE:
            return f"Cannot reach {service}: no route to {self.host} (no network?)."
        if kind is FaultKind.REFUSED:
            return f"Cannot reach {service}: {self.host} refused the connection."
        if kind is FaultKind.TIMEOUT:
            within = f" within {self.timeout_s:g} s" if self.timeout_s else ""
            return f"{capitalized(service)} did not answer{within} (slow or no network)."
        if kind is FaultKind.DROPPED:
            return f"The connection to {service} was lost before its answer was complete."
        if kind is FaultKind.PROXY:
            reason = f" ({self.detail})" if self.detail else ""
            return (
                f"Cannot reach {service} through the proxy {self.proxy}{reason}; check the "
                "HTTPS_PROXY / HTTP_PROXY / NO_PROXY environment variables."
            )
        if kind is FaultKind.TLS:
            return (
                f"Cannot reach {service} securely: {self.host}'s certificate is not trusted "
                f"({self.detail}). A captive portal or an intercepting proxy may be in the way: "
                "sign in to the network in a browser."
            )
        if kind is FaultKind.SERVER:
            said = f": {self.detail.rstrip('.')}" if self.detail else ""
            return f"{capitalized(service)} is failing (HTTP {self.status}{said}); try again later."
        if kind is FaultKind.RATE_LIMITED:
            when = f"in {self.retry_after:g} s" if self.retry_after is not None else "later"
            return f"{capitalized(service)} is limiting requests (HTTP 429); try again {when}."
        return (
            f"{capitalized(service)} answered with a web page instead of data (HTTP "
            f"{self.status}): a captive portal or proxy login page? Sign in to the network in a "
            "browser, then try again."
        )


def capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def host_of(url: str | httpx.URL) -> str:
    return urlsplit(str(url)).hostname or str(url)


def proxy_for(url: str | httpx.URL) -> str | None:
    """The proxy the environment sets for ``url`` (HTTPS_PROXY, ALL_PROXY, NO_PROXY), if any."""
    import urllib.request

    parts = urlsplit(str(url))
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def root_causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from, outermost first (httpx wraps httpcore wraps OS)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def fault_from_exception(
    exc: httpx.HTTPError, url: str | httpx.URL, timeout_s: float | None = None
) -> NetworkFault:
    """Sort an httpx exception raised while calling ``url``."""
    import httpx

    host = host_of(url)
    proxy = proxy_for(url)
    if isinstance(exc, httpx.ProxyError):
        return NetworkFault(FaultKind.PROXY, host, str(exc), proxy=proxy or "in use")
    if isinstance(exc, httpx.TimeoutException):
        connecting = isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
        if connecting and proxy:
            return NetworkFault(FaultKind.PROXY, host, "no answer", proxy=proxy)
        return NetworkFault(FaultKind.TIMEOUT, host, timeout_s=timeout_s)
    if isinstance(exc, httpx.ConnectError):
        return connect_fault(exc, host, proxy)
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return NetworkFault(FaultKind.DROPPED, host, str(exc))
    return NetworkFault(FaultKind.DROPPED, host, str(exc) or type(exc).__name__)


def connect_fault(exc: httpx.ConnectError, host: str, proxy: str | None) -> NetworkFault:
    causes = root_causes(exc)
    tls = next((c for c in causes if isinstance(c, ssl.SSLError)), None)
    if tls is not None:
        reason = getattr(tls, "verify_message", None) or getattr(tls, "reason", None) or tls
        return NetworkFault(FaultKind.TLS, host, str(reason))
    if proxy:  # the connection that failed was the one to the proxy
        os_error = next((c for c in causes if isinstance(c, OSError)), None)
        detail = (os_error.strerror if os_error is not None else None) or str(exc)
        return NetworkFault(FaultKind.PROXY, host, detail.lower(), proxy=proxy)
    if any(isinstance(c, socket.gaierror) for c in causes):
        return NetworkFault(FaultKind.DNS, host)
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return NetworkFault(FaultKind.REFUSED, host)
    if any(isinstance(c, OSError) and c.errno in UNREACHABLE_ERRNOS for c in causes):
        return NetworkFault(FaultKind.UNREACHABLE, host)
    if any(isinstance(c, TimeoutError) for c in causes):
        return NetworkFault(FaultKind.TIMEOUT, host)
    return NetworkFault(FaultKind.REFUSED, host, str(exc))


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds; None when absent or an HTTP date (too far to wait anyway)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def is_web_page(response: httpx.Response) -> bool:
    """An HTML answer where an API answers JSON: a captive portal, a proxy's login or error
    page, or a web server at the wrong address."""
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type in ("text/html", "application/xhtml+xml")


def fault_from_response(response: httpx.Response) -> NetworkFault | None:
    """The fault an HTTP answer stands for, or None when it is for the caller to read.

    Redirects count as web pages: APIs do not redirect API calls, captive portals do.
    """
    host = host_of(response.request.url)
    status = response.status_code
    if status == 429:
        return NetworkFault(
            FaultKind.RATE_LIMITED, host, status=429, retry_after=retry_after_seconds(response)
        )
    if status >= 500 and status != 511:  # 511: "sign in to this network" (RFC 6585)
        return NetworkFault(FaultKind.SERVER, host, status=status)
    if is_web_page(response) or 300 <= status < 400 or status == 511:
        return NetworkFault(FaultKind.WEB_PAGE, host, status=status)
    return None
