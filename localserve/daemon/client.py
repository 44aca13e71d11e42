"""A small synchronous client of the running daemon's control API (for the CLI and the tray).

It finds the daemon through the state file, authenticates with the admin key, parses every
answer into its model (``api/control.py``), and turns the API's OpenAI-shaped errors back into
one-line ``LocalserveError`` messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from localserve.api.control import (
    DaemonStatus,
    HubQuant,
    HubQuantList,
    HubRepo,
    HubRepoList,
    LibraryModel,
    LocalOnlyStatus,
    ModelList,
    ModelSettings,
    ModelStatus,
    PullList,
    PullSnapshot,
    RemoteStatus,
    RemovedModel,
    StartedPull,
    StatsSnapshot,
    UnloadResult,
)
from localserve.daemon.state import DaemonState, read_state
from localserve.errors import DaemonNotRunningError, LocalserveError
from localserve.paths import AppPaths
from localserve.security.keys import KeyStore

CONTROL_PREFIX = "/localserve/v1"

AnswerT = TypeVar("AnswerT", bound=BaseModel)


class ControlAPIError(LocalserveError):
    def __init__(self, status_code: int, message: str, code: str | None = None) -> None:
        self.status_code = status_code
        self.code = code
        super().__init__(message)


class DaemonClient:
    def __init__(
        self,
        state: DaemonState,
        admin_key: str,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport``: the network by default; tests pass the routes in-process."""
        self.state = state
        self._http = httpx.Client(
            base_url=state.url + CONTROL_PREFIX,
            headers={"authorization": f"Bearer {admin_key}"},
            timeout=timeout,
            transport=transport,
            trust_env=False,  # the daemon is on loopback: never through HTTP(S)_PROXY
        )

    @classmethod
    def connect(cls, paths: AppPaths, timeout: float = 30.0) -> DaemonClient:
        state = read_state(paths.state_file)
        if state is None:
            raise DaemonNotRunningError(
                "localserve is not running. Start it with `localserve serve`."
            )
        return cls(state, KeyStore(paths).admin_key(), timeout)

    @classmethod
    def connect_if_running(cls, paths: AppPaths) -> DaemonClient | None:
        try:
            return cls.connect(paths)
        except DaemonNotRunningError:
            return None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the daemon --------------------------------------------------------------------------
    def status(self) -> DaemonStatus:
        return self.request(DaemonStatus, "GET", "/status")

    def stats(self, history: bool = False) -> StatsSnapshot:
        params = {"history": "true"} if history else {}
        return self.request(StatsSnapshot, "GET", "/stats", params=params)

    def stats_events(self, interval: float | None = None) -> Iterator[StatsSnapshot]:
        """Live figures every ``interval`` seconds (the daemon's default: 1), until closed."""
        query = "" if interval is None else f"?interval={interval}"
        return self.events(StatsSnapshot, f"/stats/events{query}")

    def set_local_only(self, enabled: bool) -> LocalOnlyStatus:
        return self.request(LocalOnlyStatus, "POST", "/local-only", json={"enabled": enabled})

    def remote(self) -> RemoteStatus:
        return self.request(RemoteStatus, "GET", "/remote")

    def set_remote(
        self, enabled: bool, interface: str | None = None, port: int | None = None
    ) -> RemoteStatus:
        body = {"enabled": enabled, "interface": interface, "port": port}
        return self.request(RemoteStatus, "POST", "/remote", json=body)

    # -- models ------------------------------------------------------------------------------
    def models(self) -> list[LibraryModel]:
        return self.request(ModelList, "GET", "/models").data

    def load_model(self, name: str, wait: bool = True) -> ModelStatus:
        """Start ``name``'s runner; with ``wait``, answer once it serves (or failed)."""
        params = {"wait": "true" if wait else "false"}
        return self.request(ModelStatus, "POST", f"/models/{name}/load", params=params)

    def unload_model(self, name: str) -> UnloadResult:
        return self.request(UnloadResult, "POST", f"/models/{name}/unload")

    def model_preset(self, name: str) -> ModelSettings:
        return self.request(ModelSettings, "GET", f"/models/{name}/preset")

    def change_preset(self, name: str, values: dict[str, Any]) -> ModelSettings:
        """Set (or, with None, remove) keys of a model's own settings."""
        return self.request(ModelSettings, "PUT", f"/models/{name}/preset", json={"values": values})

    def remove_model(self, name: str) -> RemovedModel:
        return self.request(RemovedModel, "DELETE", f"/models/{name}")

    # -- the Hub -----------------------------------------------------------------------------
    def hub_search(self, query: str, limit: int = 20) -> list[HubRepo]:
        params: dict[str, str | int] = {"q": query, "limit": limit}
        return self.request(HubRepoList, "GET", "/hub/search", params=params).data

    def hub_files(self, repo: str, ctx: int | None = None) -> list[HubQuant]:
        params: dict[str, str | int] = {"repo": repo} if ctx is None else {"repo": repo, "ctx": ctx}
        return self.request(HubQuantList, "GET", "/hub/files", params=params).data

    # -- pulls -------------------------------------------------------------------------------
    def start_pull(self, model: str, name: str | None = None) -> StartedPull:
        """Start (or join) a download of ``OWNER/REPO[:QUANT|:FILE]`` in the daemon."""
        return self.request(StartedPull, "POST", "/pulls", json={"model": model, "name": name})

    def pulls(self) -> list[PullSnapshot]:
        return self.request(PullList, "GET", "/pulls").data

    def pull(self, pull_id: str) -> PullSnapshot:
        return self.request(PullSnapshot, "GET", f"/pulls/{pull_id}")

    def pull_events(self, pull_id: str) -> Iterator[PullSnapshot]:
        """The pull as it changes, its final state last."""
        return self.events(PullSnapshot, f"/pulls/{pull_id}/events")

    def cancel_pull(self, pull_id: str) -> PullSnapshot:
        return self.request(PullSnapshot, "DELETE", f"/pulls/{pull_id}")

    # -- transport ---------------------------------------------------------------------------
    def request(self, answer: type[AnswerT], method: str, path: str, **kwargs: Any) -> AnswerT:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise LocalserveError(f"Cannot reach localserve at {self.state.url}: {exc}") from exc
        if response.status_code >= 400:
            raise error_from(response)
        return parse(answer, response.content)

    def events(self, answer: type[AnswerT], path: str) -> Iterator[AnswerT]:
        """The payloads of a server-sent event stream, until it ends."""
        try:
            with self._http.stream("GET", path, timeout=httpx.Timeout(30.0, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise error_from(resp)
                for line in resp.iter_lines():
                    if line.startswith("data: "):
                        yield parse(answer, line[len("data: ") :])
        except httpx.HTTPError as exc:
            raise LocalserveError(f"Lost the connection to localserve: {exc}") from exc


def parse(answer: type[AnswerT], payload: str | bytes) -> AnswerT:
    """``payload`` as ``answer``; a daemon of another version may answer in another shape."""
    try:
        return answer.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "top level"
        raise LocalserveError(
            f"localserve answered in an unexpected shape ({answer.__name__}, {where}: "
            f"{first['msg']}). Is the running daemon another version? Restart it."
        ) from exc


def error_from(response: httpx.Response) -> ControlAPIError:
    try:
        error = response.json()["error"]
        return ControlAPIError(response.status_code, str(error["message"]), error.get("code"))
    except (ValueError, KeyError, TypeError):
        return ControlAPIError(
            response.status_code, f"localserve answered {response.status_code}: {response.text}"
        )
