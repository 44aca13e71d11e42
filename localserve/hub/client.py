"""Calls to the Hugging Face Hub's HTTP API, with one policy for timeouts, retries and errors.

We speak the few endpoints we use (search, repo info, whoami) with httpx, as downloads do, so
every Hub call fails the same way: one ``HubError`` whose message says what to do. Network
faults become ``HubUnreachableError`` (see ``localserve.network``); the Hub's refusals become
``RepoNotFoundError`` or ``HubAccessError``. ``huggingface_hub`` still gives the endpoint
(``HF_ENDPOINT``), its stored token and file URLs, and ``HF_HUB_OFFLINE=1`` is honoured: no call
is made at all.

Retries: a call is tried at most ``RetryPolicy.attempts`` times, and only for faults that pass
in seconds (HTTP 5xx, 429 with a short ``Retry-After``, a connection dropped midway); the reason
is logged once. No network, a refused connection, a proxy or TLS failure and a timeout fail at
once: retrying them would only keep a person waiting. Downloads wait for the network instead
(``hub.download``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from localserve import __version__
from localserve.errors import HubAccessError, HubError, HubUnreachableError, RepoNotFoundError
from localserve.network import (
    FaultKind,
    NetworkFault,
    fault_from_exception,
    fault_from_response,
    host_of,
)

log = logging.getLogger(__name__)

HUB = "the Hugging Face Hub"
STILL_WORKS = " Installed models still work."
API_TIMEOUT_S = 20.0
DEFAULT_NETWORK_WAIT_S = 600.0
RETRIED = {FaultKind.SERVER, FaultKind.RATE_LIMITED, FaultKind.DROPPED}
LOGIN_HINT = "accept its terms on huggingface.co, then run `localserve hub login`"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3  # tries in all
    first_wait_s: float = 1.0  # doubled after each try
    max_wait_s: float = 8.0  # a longer Retry-After fails the call instead of waiting

    def wait_before(self, attempt: int, fault: NetworkFault) -> float | None:
        """Seconds to wait before try ``attempt + 1``, or None to give up now."""
        if fault.kind not in RETRIED or attempt >= self.attempts:
            return None
        wait = self.first_wait_s * 2 ** (attempt - 1)
        if fault.retry_after is not None:
            wait = fault.retry_after
        return wait if wait <= self.max_wait_s else None


@dataclass(frozen=True)
class HubOptions:
    """What the settings say about Hub calls (``hub_timeout``, ``pull_network_wait``)."""

    timeout_s: float = API_TIMEOUT_S
    network_wait_s: float = DEFAULT_NETWORK_WAIT_S


def hub_headers(token: str | None) -> dict[str, str]:
    """What every Hub request sends: the token (ours, else ``huggingface-cli login``'s) and
    our user agent. Not ``huggingface_hub``'s ``build_hf_headers``: to name an "agent" in the
    user agent it fetches a registry from the Hub, a call of its own that we do not want.

    ``huggingface_hub`` is imported where it is used, here and below: the daemon builds its
    Hub options at start-up, and that import (30 ms) would delay a cold start's first answer.
    """
    import huggingface_hub

    headers = {"user-agent": f"localserve/{__version__}; hf_hub/{huggingface_hub.__version__}"}
    token = token or huggingface_hub.get_token()
    if token:
        headers["authorization"] = f"Bearer {token}"
    return headers


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def file_url(repo_id: str, file_name: str, revision: str | None) -> str:
    """Where the Hub serves one file of a repo at ``revision`` (``HF_ENDPOINT`` honoured)."""
    from huggingface_hub import hf_hub_url

    return str(hf_hub_url(repo_id, file_name, revision=revision))


def hub_unreachable(fault: NetworkFault, hint: str = STILL_WORKS) -> HubUnreachableError:
    return HubUnreachableError(fault.describe(HUB) + hint, fault)


def check_online() -> None:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise HubUnreachableError(
            "HF_HUB_OFFLINE is set, so localserve does not contact the Hugging Face Hub; unset "
            "it to search or download." + STILL_WORKS,
            NetworkFault(FaultKind.UNREACHABLE, host_of(hub_endpoint()), "offline mode"),
        )


def refusal(response: httpx.Response, repo_id: str | None) -> HubError | None:
    """The Hub's 4xx answers as our errors. The Hub answers 401 (not 404) for a repo it does
    not show an anonymous caller, so a missing repo and a private one look the same."""
    status = response.status_code
    code = response.headers.get("x-error-code", "")
    what = f"'{repo_id}'" if repo_id else "this repo"
    if code == "GatedRepo":
        return HubAccessError(f"{what} is gated: {LOGIN_HINT}.")
    if code == "EntryNotFound":
        return RepoNotFoundError(f"A file was not found in {what}.")
    if code in ("RepoNotFound", "RevisionNotFound") or status == 404:
        return RepoNotFoundError(
            f"The repo {what} was not found on the Hub (if it is private: `localserve hub login`)."
        )
    if status == 401:
        return HubAccessError(
            "The Hub rejected the token (HTTP 401): run `localserve hub login` again, or unset "
            "HF_TOKEN."
        )
    if status == 403:
        return HubAccessError(
            f"The Hub refused access to {what} (HTTP 403): it is private or gated; {LOGIN_HINT} "
            "with an account that has access."
        )
    if 400 <= status < 500:
        return HubError(f"The Hub answered HTTP {status} ({server_message(response)}).")
    return None


def answer_fault(response: httpx.Response, repo_id: str | None) -> NetworkFault | None:
    """What is wrong with a Hub answer: a network fault to wait out or report (5xx, 429, a web
    page), returned; a refusal (gated, private, not found), raised; None when it is usable."""
    fault = fault_from_response(response)
    if fault is None:
        error = refusal(response, repo_id)
        if error is not None:
            raise error
    return fault


def server_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body.get("error") or body)[:200]
    except (ValueError, AttributeError):
        return response.text[:200] or response.reason_phrase


class HubClient:
    """A short-lived client of the Hub API; use as a context manager."""

    def __init__(
        self,
        token: str | None = None,
        timeout_s: float = API_TIMEOUT_S,
        retry: RetryPolicy | None = None,
    ) -> None:
        check_online()
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.headers = hub_headers(token)
        self.http = httpx.Client(follow_redirects=True, timeout=httpx.Timeout(timeout_s))

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def get_json(
        self, path: str, params: dict[str, Any] | None = None, repo_id: str | None = None
    ) -> Any:
        """GET ``path`` of the Hub API and return its JSON, retrying what passes in seconds."""
        url = hub_endpoint() + path
        attempt = 0
        while True:
            attempt += 1
            fault, body = self._try_get(url, params, repo_id)
            if fault is None:
                return body
            wait = self.retry.wait_before(attempt, fault)
            if wait is None:
                raise hub_unreachable(fault)
            if attempt == 1:  # the reason once, not a line per retry
                log.warning(
                    "The Hugging Face Hub: %s; retrying (up to %d more tries).",
                    fault.reason,
                    self.retry.attempts - 1,
                )
            time.sleep(wait)

    def _try_get(
        self, url: str, params: dict[str, Any] | None, repo_id: str | None
    ) -> tuple[NetworkFault | None, Any]:
        try:
            response = self.http.get(url, params=params, headers=self.headers)
        except httpx.HTTPError as exc:
            return fault_from_exception(exc, url, self.timeout_s), None
        fault = answer_fault(response, repo_id)
        if fault is not None:
            return fault, None
        try:
            return None, response.json()
        except ValueError:  # 200 with something that is not JSON: not the Hub we know
            return NetworkFault(FaultKind.WEB_PAGE, host_of(url), status=response.status_code), None

    # -- the endpoints we use ----------------------------------------------------------------
    def search_models(self, query: str, limit: int) -> list[dict[str, Any]]:
        params = {
            "search": query,
            "filter": "gguf",
            "sort": "downloads",
            "direction": "-1",
            "limit": str(limit),
        }
        found = self.get_json("/api/models", params)
        return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []

    def model_info(self, repo_id: str, revision: str | None = None) -> dict[str, Any]:
        path = f"/api/models/{repo_id}"
        if revision is not None:
            path += f"/revision/{quote(revision, safe='')}"
        info = self.get_json(path, {"blobs": "true"}, repo_id=repo_id)
        if not isinstance(info, dict):
            raise HubError(f"The Hub sent an unexpected answer for '{repo_id}'.")
        return info

    def whoami(self) -> dict[str, Any]:
        info = self.get_json("/api/whoami-v2")
        return info if isinstance(info, dict) else {}
