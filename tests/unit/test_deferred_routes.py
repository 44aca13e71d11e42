"""The route groups a chat does not need are built at their first request (server/app.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.helpers.fake_backend import MODEL
from tests.helpers.gateway import build_gateway


def test_chats_need_no_later_routes_and_they_are_built_once(tmp_path: Path) -> None:
    gateway = build_gateway(tmp_path / "home")
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
    assert gateway.post("/v1/chat/completions", body).status_code == 200
    assert gateway.post("/v1/models", method="GET").status_code == 200
    assert gateway.later_builds == []

    async def at_once() -> list[int]:
        tags = [gateway.send("GET", "/api/tags", headers=gateway.auth()) for _ in range(5)]
        return [response.status_code for response in await asyncio.gather(*tags)]

    assert asyncio.run(at_once()) == [200] * 5
    assert gateway.later_builds == [1]
    assert gateway.post("/api/version", method="GET").status_code == 200
    assert gateway.later_builds == [1]


def test_later_routes_keep_their_keys_and_errors(tmp_path: Path) -> None:
    gateway = build_gateway(tmp_path / "home")
    assert gateway.post("/api/tags", method="GET", headers={}).status_code == 401
    missing = gateway.post("/api/no-such-thing", method="GET")
    assert missing.status_code == 404
    assert gateway.post("/v1/responses", {"model": MODEL, "input": "Hi"}).status_code == 200
