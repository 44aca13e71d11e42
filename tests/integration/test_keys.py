"""Keys through the CLI, checked against a running daemon: rotation and revocation apply at once."""

from __future__ import annotations

import json
import stat

import httpx

from tests.helpers.daemon_process import DaemonProcess


def models_status(daemon: DaemonProcess, key: str) -> int:
    return httpx.get(
        f"{daemon.base_url}/models", headers={"Authorization": f"Bearer {key}"}
    ).status_code


def test_key_show_prints_only_the_key(daemon: DaemonProcess) -> None:
    result = daemon.cli("key", "show")
    assert result.returncode == 0
    assert result.stdout == daemon.admin_key + "\n"
    assert models_status(daemon, result.stdout.strip()) == 200


def test_admin_key_fallback_file_is_private(daemon: DaemonProcess) -> None:
    key_file = daemon.home / "config" / "admin.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "No usable keyring backend" in daemon.output()


def test_rotate_replaces_the_admin_key_on_the_running_daemon(daemon: DaemonProcess) -> None:
    old = daemon.admin_key
    assert models_status(daemon, old) == 200
    result = daemon.cli("key", "rotate")
    assert result.returncode == 0, result.stderr
    new = daemon.admin_key
    assert new != old
    assert models_status(daemon, old) == 401
    assert models_status(daemon, new) == 200


def test_client_key_lifecycle(daemon: DaemonProcess) -> None:
    added = daemon.cli("key", "add", "zed-laptop")
    assert added.returncode == 0, added.stderr
    client_key = added.stdout.strip()
    assert client_key.startswith("lsk-") and len(client_key) > 40
    assert models_status(daemon, client_key) == 200

    listing = daemon.cli("key", "list").stdout
    assert "zed-laptop" in listing
    assert client_key not in listing

    stored = (daemon.home / "config" / "client_keys.json").read_text()
    assert client_key not in stored
    assert json.loads(stored)["client_keys"][0]["name"] == "zed-laptop"

    revoked = daemon.cli("key", "revoke", "zed-laptop")
    assert revoked.returncode == 0
    assert models_status(daemon, client_key) == 401
    assert "zed-laptop" not in daemon.cli("key", "list").stdout


def test_key_errors_are_one_line(daemon: DaemonProcess) -> None:
    daemon.cli("key", "add", "dup")
    duplicate = daemon.cli("key", "add", "dup")
    assert duplicate.returncode == 1
    assert duplicate.stderr == "Error: A client key named 'dup' already exists.\n"
    missing = daemon.cli("key", "revoke", "no-such-key")
    assert missing.returncode == 1
    assert missing.stderr == "Error: No client key named 'no-such-key'.\n"
    bad_name = daemon.cli("key", "add", "../etc")
    assert bad_name.returncode == 1
    assert bad_name.stderr.startswith("Error: Invalid key name")


def test_keys_never_reach_the_logs(daemon: DaemonProcess) -> None:
    client_key = daemon.cli("key", "add", "log-probe").stdout.strip()
    wrong_key = "lsk-this-is-not-a-valid-key-but-still-a-secret"
    for key in (daemon.admin_key, client_key, wrong_key):
        httpx.post(
            f"{daemon.base_url}/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": "smollm2-135m-instruct",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 2,
            },
            timeout=60,
        )
    logs = [daemon.output()] + [
        p.read_text(errors="replace") for p in (daemon.home / "logs").glob("*.log")
    ]
    assert len(logs) >= 3  # stdout, daemon.log, the runner's log
    for text in logs:
        for key in (daemon.admin_key, client_key, wrong_key):
            assert key not in text


def test_serve_prints_the_url_and_how_to_get_the_key(daemon: DaemonProcess) -> None:
    output = daemon.output()
    assert f"API base URL: {daemon.base_url}" in output
    assert "localserve key show" in output
