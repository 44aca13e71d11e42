"""Chat templates come from model files, which anyone can publish: they render sandboxed."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.helpers.daemon_process import DaemonProcess
from tests.helpers.model_files import starter_copy

# A classic template-injection payload: walk from a string to every class in the interpreter.
HOSTILE_TEMPLATE = (
    "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    "{% for m in messages %}{{ m['content'] }}{% endfor %}"
)


def test_hostile_chat_template_is_refused_not_executed(tmp_path: Path) -> None:
    model = starter_copy(tmp_path / "hostile.gguf", "--chat-template", HOSTILE_TEMPLATE)
    with DaemonProcess(tmp_path / "home", "--model", str(model)) as daemon:
        daemon.wait_until_model("ready")
        response = httpx.post(
            f"{daemon.base_url}/chat/completions",
            headers=daemon.headers(),
            json={"model": "hostile", "messages": [{"role": "user", "content": "hi"}]},
            timeout=60,
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "messages"
        assert "chat template" in error["message"]
        assert "unsafe" in error["message"]
        # The model still serves plain completions, and the daemon is unharmed.
        plain = httpx.post(
            f"{daemon.base_url}/completions",
            headers=daemon.headers(),
            json={"model": "hostile", "prompt": "Hello", "max_tokens": 2},
            timeout=60,
        )
        assert plain.status_code == 200


RUNAWAY_TEMPLATES = {
    "nested loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    ),
    "huge repetition": (
        "{{ 'x' * 1000000000 }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    ),
    "endless output": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ 'many words ' }}"
        "{% endfor %}{% endfor %}"
    ),
}


def test_runaway_chat_templates_fail_their_request_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    daemon = DaemonProcess(home)
    home.mkdir(parents=True)
    for index, template in enumerate(RUNAWAY_TEMPLATES.values()):
        model = starter_copy(tmp_path / f"runaway{index}.gguf", "--chat-template", template)
        assert daemon.cli("models", "import", str(model)).returncode == 0
    with daemon:
        daemon.wait_until_model("ready")
        for index, kind in enumerate(RUNAWAY_TEMPLATES):
            started = time.monotonic()
            response = httpx.post(
                f"{daemon.base_url}/chat/completions",
                headers=daemon.headers(),
                json={"model": f"runaway{index}", "messages": [{"role": "user", "content": "hi"}]},
                timeout=60,
            )
            assert response.status_code == 400, (kind, response.text)
            assert "chat template" in response.json()["error"]["message"], kind
            assert time.monotonic() - started < 15, kind
            # The same runner goes on serving.
            plain = httpx.post(
                f"{daemon.base_url}/completions",
                headers=daemon.headers(),
                json={"model": f"runaway{index}", "prompt": "Hello", "max_tokens": 2},
                timeout=60,
            )
            assert plain.status_code == 200, kind
