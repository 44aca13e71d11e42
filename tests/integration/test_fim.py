"""Fill-in-the-middle through /v1/completions ``suffix`` on a real model that has FIM tokens.

The starter model has none, so the test writes a copy of it whose GGUF metadata names three of
its special tokens as the FIM prefix/suffix/middle tokens (with gguf's own metadata tool). The
weights are unchanged: what is checked is that the runner builds the FIM prompt from them.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.helpers.daemon_process import DaemonProcess
from tests.helpers.model_files import starter_copy, starter_path

PREFIX = "def add(a, b):\n    return"
SUFFIX = "\n\nprint(add(1, 2))\n"


@pytest.fixture(scope="module")
def fim_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    folder = tmp_path_factory.mktemp("fim")
    model = starter_copy(
        folder / "starter-fim.gguf",
        "--special-token-by-id", "fim_pre", "4",
        "--special-token-by-id", "fim_suf", "5",
        "--special-token-by-id", "fim_mid", "6",
    )  # fmt: skip
    with DaemonProcess(folder / "home", "--model", str(model)) as daemon:
        daemon.wait_until_model("ready")
        yield daemon


def count_tokens(text: str) -> int:
    import llama_cpp

    llama = llama_cpp.Llama(str(starter_path()), n_ctx=256, verbose=False, vocab_only=True)
    return len(llama.tokenize(text.encode(), add_bos=False, special=False))


def test_suffix_builds_a_fim_prompt(fim_daemon: DaemonProcess) -> None:
    status = fim_daemon.model_status()
    assert status.info is not None and status.info.supports_fim is True
    with openai.OpenAI(base_url=fim_daemon.base_url, api_key=fim_daemon.admin_key) as client:
        check_fim(client)


def check_fim(client: openai.OpenAI) -> None:
    result = client.completions.create(
        model="starter-fim", prompt=PREFIX, suffix=SUFFIX, max_tokens=8, temperature=0
    )
    assert result.usage is not None
    # prefix token + prefix + suffix token + suffix + middle token
    assert result.usage.prompt_tokens == count_tokens(PREFIX) + count_tokens(SUFFIX) + 3
    assert result.usage.completion_tokens >= 1
    streamed = client.completions.create(
        model="starter-fim", prompt=PREFIX, suffix=SUFFIX, max_tokens=8, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].text for chunk in streamed if chunk.choices)
    assert text == result.choices[0].text
