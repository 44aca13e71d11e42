"""The Hugging Face token for gated and private repos: ``localserve hub login`` keeps it in the
system keyring (or a 0600 file where there is none).

Precedence: ``HF_TOKEN`` in the environment, then the token stored here, then whatever
``huggingface_hub`` finds on its own (``huggingface-cli login``).
"""

from __future__ import annotations

import os

from localserve.paths import AppPaths, app_paths
from localserve.security.secret_store import StoredSecret

KEYRING_HF_USER = "hf-token"


def stored_token(paths: AppPaths | None = None) -> StoredSecret:
    paths = paths or app_paths()
    return StoredSecret(KEYRING_HF_USER, paths.config_dir / "hf.token", "the Hugging Face token")


def hub_token() -> str | None:
    """The token to send to the Hub; None lets ``huggingface_hub`` use its own lookup."""
    return os.environ.get("HF_TOKEN") or stored_token().get()
