"""Fixtures the integration modules share."""

from __future__ import annotations

import openai
import pytest

from tests.helpers.daemon_process import DaemonProcess


@pytest.fixture(scope="module")
def client(daemon: DaemonProcess) -> openai.OpenAI:
    """The official OpenAI SDK on the module's own ``daemon`` (closed when it stops)."""
    sdk: openai.OpenAI = daemon.openai()
    return sdk
