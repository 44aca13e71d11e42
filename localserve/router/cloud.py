"""Backends for cloud providers: any OpenAI-compatible API, relayed as it streams.

What goes upstream is the client's JSON body with the model renamed to the provider's own name,
the provider's key, and nothing else from the client: no local API key, no client headers.
A 429 with a short ``Retry-After`` is retried (at most ``MAX_RETRIES`` times, waiting at most
``MAX_RETRY_WAIT_S`` in all) before anything reaches the client; a longer one, and the
provider's 4xx answers, pass through with their status and OpenAI error body. What is the
network's or the provider's fault becomes one error naming the provider (``localserve.network``
sorts it): unreachable or failing (5xx) is a 502, silent past the timeout a 504, and a web page
where JSON belongs (a captive portal, a proxy's login page) a 502 that says so. Usage is read
from what streams by (the upstream is asked to include it) and recorded in the ledger.

Nothing here calls out before a client asks: the providers' model lists are fetched the first
time a client lists models, then kept fresh in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from localserve.cloud.ledger import UsageLedger
from localserve.cloud.providers import Provider, ProviderStore, is_loopback_host
from localserve.errors import BackendTimeoutError, BackendUnavailableError, UpstreamError
from localserve.network import (
    FaultKind,
    NetworkFault,
    fault_from_exception,
    fault_from_response,
    retry_after_seconds,
)
from localserve.router.backend import ModelCard, Payload

log = logging.getLogger(__name__)

MAX_RETRIES = 2
MAX_RETRY_WAIT_S = 10.0
MODELS_REFRESH_S = 300.0
FIRST_LISTING_WAIT_S = 3.0  # how long the first model listing waits for the providers' lists
PASSED_HEADERS = ("retry-after", "x-request-id")
ERROR_BODY_BYTES = 4096


def provider_label(provider: str) -> str:
    return f"the provider '{provider}'"


def provider_fault(
    provider: str, fault: NetworkFault, body: bytes = b""
) -> BackendUnavailableError:
    """The error a client sees for ``fault``: a timeout is a BackendTimeoutError (504), the
    rest an UpstreamError (502). A failing provider's (5xx) own message, read from ``body``
    where it sent one, is quoted."""
    message = provider_message(body) if fault.kind is FaultKind.SERVER else ""
    if message:
        fault = dataclasses.replace(fault, detail=message)
    text = fault.describe(provider_label(provider))
    if fault.kind is FaultKind.TIMEOUT:
        return BackendTimeoutError(text)
    return UpstreamError(text, fault)


def upstream_error(
    provider: str, exc: httpx.HTTPError, timeout_s: float | None = None
) -> BackendUnavailableError:
    url = exc.request.url if isinstance(exc, httpx.RequestError) else ""
    return provider_fault(provider, fault_from_exception(exc, url, timeout_s))


def provider_message(body: bytes) -> str:
    """The ``error.message`` of an OpenAI-shaped error body, or "" when it is not one."""
    try:
        error = json.loads(body)["error"]
        return str(error.get("message") or "")[:300] if isinstance(error, dict) else str(error)
    except (ValueError, KeyError, TypeError):
        return ""


LOCAL_FIELDS = frozenset(
    {"keep_alive", "enable_thinking", "thinking_budget_tokens", "reasoning_format"}
)
RESPONSES_PATH = "/v1/responses"  # relayed as it is to providers that speak it


class UsageTap:
    """Reads usage from a response as it passes, and drops the usage chunk we asked for."""

    def __init__(self, hide_usage_chunk: bool) -> None:
        self.hide_usage_chunk = hide_usage_chunk
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self._pending = b""

    def take_usage(self, usage: Any) -> None:
        """Chat completions' usage, or the Responses API's (``input_tokens``...)."""
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
            self.completion_tokens = int(
                usage.get("completion_tokens") or usage.get("output_tokens") or 0
            )

    def feed(self, chunk: bytes) -> bytes:
        """Complete SSE events from ``chunk`` (plus what was pending), usage chunk removed."""
        self._pending += chunk
        *events, self._pending = self._pending.split(b"\n\n")
        kept = []
        for event in events:
            if self._is_usage_only(event) and self.hide_usage_chunk:
                continue
            kept.append(event + b"\n\n")
        return b"".join(kept)

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest

    def _is_usage_only(self, event: bytes) -> bool:
        if event.startswith(b"event: response.") and b'"usage"' in event:
            self._take_response_usage(event)
            return False
        if not event.startswith(b"data: {") or b'"usage"' not in event:
            return False
        try:
            data = json.loads(event[len(b"data: ") :])
        except ValueError:
            return False
        if not isinstance(data, dict):
            return False
        self.take_usage(data.get("usage"))
        return not data.get("choices") and data.get("usage") is not None

    def _take_response_usage(self, event: bytes) -> None:
        """A relayed Responses stream reports usage in its last event's response object."""
        for line in event.split(b"\n"):
            if line.startswith(b"data: {"):
                try:
                    data = json.loads(line[len(b"data: ") :])
                except ValueError:
                    return
                response = data.get("response") if isinstance(data, dict) else None
                if isinstance(response, dict):
                    self.take_usage(response.get("usage"))


@dataclass
class CloudUpstream:
    response: httpx.Response
    provider: str
    tap: UsageTap
    on_close: Callable[[UsageTap], None]
    timeout_s: float | None = None

    @property
    def status_code(self) -> int:
        return self.response.status_code

    @property
    def content_type(self) -> str:
        return str(self.response.headers.get("content-type", "application/json"))

    @property
    def client_headers(self) -> dict[str, str]:
        return {
            name: self.response.headers[name]
            for name in PASSED_HEADERS
            if name in self.response.headers
        }

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.aiter_raw():
                events = self.tap.feed(chunk)
                if events:
                    yield events
            rest = self.tap.flush()
            if rest:
                yield rest
        except httpx.HTTPError as exc:
            raise upstream_error(self.provider, exc, self.timeout_s) from exc

    async def aread(self) -> bytes:
        try:
            body = await self.response.aread()
        except httpx.HTTPError as exc:
            raise upstream_error(self.provider, exc, self.timeout_s) from exc
        if self.response.status_code == 200:
            with contextlib.suppress(ValueError, AttributeError):
                self.tap.take_usage(json.loads(body).get("usage"))
        return body

    async def aclose(self) -> None:
        await self.response.aclose()
        on_close, self.on_close = self.on_close, lambda tap: None
        if self.response.status_code == 200:
            on_close(self.tap)


class CloudBackend:
    def __init__(
        self,
        provider: Provider,
        key: str | None,
        client: httpx.AsyncClient,
        ledger: UsageLedger,
        own_port: int,
    ) -> None:
        self.provider = provider
        self.name = provider.name
        self._key = key
        self._client = client
        self._ledger = ledger
        self._own_port = own_port
        self.cards: list[ModelCard] = []

    def models(self) -> list[ModelCard]:
        return self.cards

    def serves(self, model: str) -> bool:
        return model.startswith(f"{self.name}/")

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self._key:
            headers["authorization"] = f"Bearer {self._key}"
        return headers

    def _url(self, path: str) -> str:
        # Base URLs end in /v1 (or their own version prefix); our paths start with /v1.
        return self.provider.base_url.rstrip("/") + path.removeprefix("/v1")

    def _check_not_self(self) -> None:
        parts = urlsplit(self.provider.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if parts.hostname and is_loopback_host(parts.hostname) and port == self._own_port:
            raise UpstreamError(
                f"The provider '{self.name}' points at this localserve itself; refusing to loop."
            )

    async def send(self, path: str, payload: Payload) -> CloudUpstream:
        self._check_not_self()
        upstream_model = str(payload["model"]).removeprefix(f"{self.name}/")
        # localserve's own fields (keep_alive, the thinking controls of the local engine):
        # providers reject them.
        body = {k: v for k, v in payload.items() if k not in LOCAL_FIELDS}
        body["model"] = upstream_model
        stream = bool(payload.get("stream"))
        wants_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        # Responses streams report usage in their last event, unasked.
        if path == RESPONSES_PATH:
            wants_usage = True
        elif stream and path != "/v1/embeddings":
            body["stream_options"] = {
                **(payload.get("stream_options") or {}),
                "include_usage": True,
            }
        content = json.dumps(body).encode("utf-8")
        waited = 0.0
        for attempt in range(MAX_RETRIES + 1):
            request = self._client.build_request(
                "POST", self._url(path), content=content, headers=self._headers()
            )
            try:
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise upstream_error(self.name, exc, self._read_timeout()) from exc
            wait = retry_after_seconds(response) if response.status_code == 429 else None
            if wait is None or attempt == MAX_RETRIES or waited + wait > MAX_RETRY_WAIT_S:
                break
            await response.aclose()
            log.info("%s answered 429; retrying in %.1f s", self.name, wait)
            await asyncio.sleep(wait)
            waited += wait
        await self._raise_fault(response)

        def record(tap: UsageTap) -> None:
            self._ledger.record(
                self.name,
                upstream_model,
                tap.prompt_tokens,
                tap.completion_tokens,
                self.provider.prices.get(upstream_model),
            )

        tap = UsageTap(hide_usage_chunk=stream and not wants_usage)
        return CloudUpstream(response, self.name, tap, record, self._read_timeout())

    def _read_timeout(self) -> float | None:
        return self._client.timeout.read

    async def _raise_fault(self, response: httpx.Response) -> None:
        """Close ``response`` and raise when it is the provider's or the network's fault rather
        than an answer to relay: 5xx, a web page, a redirect. 429 passes through as is."""
        fault = fault_from_response(response)
        if fault is None or fault.kind is FaultKind.RATE_LIMITED:
            return
        try:
            body = b""
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) >= ERROR_BODY_BYTES:
                    break
        except httpx.HTTPError:
            body = b""
        finally:
            await response.aclose()
        log.warning("%s: %s (HTTP %d)", self.name, fault.reason, response.status_code)
        raise provider_fault(self.name, fault, body)

    async def refresh_models(self) -> None:
        """Fetch the provider's model list (for /v1/models); keep the old one on failure."""
        url = self._url("/v1/models")
        try:
            response = await self._client.get(url, headers=self._headers(), timeout=15.0)
        except httpx.HTTPError as exc:
            reason = fault_from_exception(exc, url, 15.0).reason
            log.warning("Cannot list the models of %s: %s", self.name, reason)
            return
        answer_fault = fault_from_response(response)
        if answer_fault is not None:
            log.warning("Cannot list the models of %s: %s", self.name, answer_fault.reason)
            return
        try:
            response.raise_for_status()
            data = response.json().get("data") or []
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            log.warning("Cannot list the models of %s: %s", self.name, exc)
            return
        now = int(time.time())
        self.cards = [
            ModelCard(
                id=f"{self.name}/{item['id']}",
                owned_by=self.name,
                created=int(item.get("created") or now),
            )
            for item in data
            if isinstance(item, dict) and item.get("id")
        ]


class CloudBackends:
    """The providers of ``providers.json`` as backends, rebuilt when the file changes."""

    def __init__(
        self,
        store: ProviderStore,
        client: Callable[[], httpx.AsyncClient],
        ledger: UsageLedger,
        own_port: int,
    ) -> None:
        """``client`` makes the HTTP client for providers, when the first one is configured:
        loading the certificate authorities takes 17 ms, which a cold start without providers
        need not spend."""
        self.store = store
        self._make_client = client
        self._client: httpx.AsyncClient | None = None
        self._ledger = ledger
        self._own_port = own_port
        self._stamp: tuple[int, int] | None = None
        self._loaded = False
        self._lists_stale = True
        self._listed = False  # no client has listed models yet: contact no provider
        self._refreshed_at = 0.0
        self._refresh: asyncio.Future[None] | None = None
        self.backends: dict[str, CloudBackend] = {}
        self.mappings: dict[str, str] = {}
        self.reload()

    def reload(self) -> bool:
        """Re-read the providers if the file changed; True when it did."""
        stamp = self.store.stamp()
        if self._loaded and stamp == self._stamp:
            return False
        self._stamp, self._loaded = stamp, True
        self._lists_stale = True
        providers, self.mappings = self.store.load()
        old = self.backends
        self.backends = {}
        for name, provider in providers.items():
            backend = CloudBackend(
                provider, self.store.key(name).get(), self.client, self._ledger, self._own_port
            )
            if name in old and old[name].provider.base_url == provider.base_url:
                backend.cards = old[name].cards
            self.backends[name] = backend
        return True

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def list_models_soon(self, wait_s: float = FIRST_LISTING_WAIT_S) -> None:
        """A client lists models: fetch the lists that are stale now, waiting ``wait_s`` at
        most (a slow provider's list then arrives for the next listing), and keep them fresh
        from now on. Until a client asks, no provider is contacted."""
        self.reload()
        self._listed = True
        if self._lists_stale and self.backends:
            self._lists_stale, self._refreshed_at = False, time.monotonic()
            self._refresh = asyncio.ensure_future(self._refresh_all())
        if self._refresh is not None and not self._refresh.done():
            await asyncio.wait({self._refresh}, timeout=wait_s)

    async def _refresh_all(self) -> None:
        await asyncio.gather(*(b.refresh_models() for b in self.backends.values()))

    async def keep_model_lists_fresh(self) -> None:
        """Once a client has listed models: refresh every provider's model list when providers
        change, and every 5 minutes."""
        while True:
            self.reload()  # requests reload too: staleness is a flag, not this call's answer
            due = time.monotonic() - self._refreshed_at > MODELS_REFRESH_S
            if self._listed and (self._lists_stale or due):
                self._lists_stale, self._refreshed_at = False, time.monotonic()
                await self._refresh_all()
            await asyncio.sleep(2.0)
