"""A small synchronous client of the running daemon's control API (for the CLI and the tray).

It finds the daemon through the state file, authenticates with the admin key, and turns the
API's OpenAI-shaped errors back into one-line ``LocalserveError`` messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from localserve.daemon.state import DaemonState, read_state
from localserve.errors import DaemonNotRunningError, LocalserveError
from localserve.paths import AppPaths
from localserve.security.keys import KeyStore

CONTROL_PREFIX = "/localserve/v1"


class ControlAPIError(LocalserveError):
    def __init__(self, status_code: int, message: str, code: str | None = None) -> None:
        self.status_code = status_code
        self.code = code
        super().__init__(message)


class DaemonClient:
    def __init__(self, state: DaemonState, admin_key: str, timeout: float = 30.0) -> None:
        self.state = state
        self._http = httpx.Client(
            base_url=state.url + CONTROL_PREFIX,
            headers={"authorization": f"Bearer {admin_key}"},
            timeout=timeout,
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

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise LocalserveError(f"Cannot reach localserve at {self.state.url}: {exc}") from exc
        if response.status_code >= 400:
            raise error_from(response)
        return response.json()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def events(self, path: str) -> Iterator[dict[str, Any]]:
        """The JSON payloads of a server-sent event stream, until it ends."""
        try:
            with self._http.stream("GET", path, timeout=httpx.Timeout(30.0, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise error_from(resp)
                for line in resp.iter_lines():
                    if line.startswith("data: "):
                        yield json.loads(line[len("data: ") :])
        except httpx.HTTPError as exc:
            raise LocalserveError(f"Lost the connection to localserve: {exc}") from exc


def error_from(response: httpx.Response) -> ControlAPIError:
    try:
        error = response.json()["error"]
        return ControlAPIError(response.status_code, str(error["message"]), error.get("code"))
    except (ValueError, KeyError, TypeError):
        return ControlAPIError(
            response.status_code, f"localserve answered {response.status_code}: {response.text}"
        )
