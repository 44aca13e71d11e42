"""Where localserve keeps its files.

Everything lives in the platform's usual folders (platformdirs) unless ``LOCALSERVE_HOME`` is set,
in which case config, data, logs and runtime state all move under that one folder. Tests and
tools rely on this to run isolated from the user's real install.
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "localserve"
HOME_ENV = "LOCALSERVE_HOME"


@dataclass(frozen=True)
class AppPaths:
    config_dir: Path
    data_dir: Path
    log_dir: Path
    runtime_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def state_file(self) -> Path:
        """Written by a running daemon so other commands (CLI, tray) can find it."""
        return self.runtime_dir / "daemon.json"

    @property
    def runner_pid_dir(self) -> Path:
        """One pid file per live runner, so a restarted daemon can stop strays (orphans.py)."""
        return self.runtime_dir / "runners"

    @property
    def client_keys_file(self) -> Path:
        return self.config_dir / "client_keys.json"

    @property
    def admin_key_file(self) -> Path:
        """Fallback store for the admin key where no keyring backend exists."""
        return self.config_dir / "admin.key"

    @property
    def cloud_usage_file(self) -> Path:
        """What was forwarded to each cloud provider (requests, tokens, estimated cost)."""
        return self.data_dir / "cloud-usage.json"

    @property
    def engine_checks_file(self) -> Path:
        """Verdicts of the engine check: which llama.cpp path decodes on this CPU
        (``daemon/engine_path.py``)."""
        return self.data_dir / "engine-checks.json"

    @property
    def model_checks_file(self) -> Path:
        """Model files whose GGUF header passed the check, by file identity
        (``hub/gguf_check.py``)."""
        return self.data_dir / "model-checks.json"

    @property
    def first_runner_file(self) -> Path:
        """What the last launch's first runner was told, for the next launch's head start
        (``daemon/head_start.py``)."""
        return self.data_dir / "first-runner.json"

    @property
    def starter_record_file(self) -> Path:
        """The starter model's library record, kept while its file is unchanged
        (``hub/library.py``)."""
        return self.data_dir / "starter-model.json"

    @property
    def daemon_log(self) -> Path:
        return self.log_dir / "daemon.log"

    def runner_log(self, model_id: str) -> Path:
        return self.log_dir / f"runner-{model_id}.log"

    def ensure(self) -> AppPaths:
        for folder in (self.config_dir, self.data_dir, self.log_dir, self.runtime_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if os.name == "posix":
            # Keys and the daemon's port live here: keep them to this user.
            self.config_dir.chmod(0o700)
            self.runtime_dir.chmod(0o700)
        return self


def app_paths(environ: dict[str, str] | None = None) -> AppPaths:
    """Resolve the folders from ``LOCALSERVE_HOME`` or the platform defaults."""
    env = os.environ if environ is None else environ
    home = env.get(HOME_ENV)
    if home:
        root = Path(home).expanduser().resolve()
        return AppPaths(
            config_dir=root / "config",
            data_dir=root / "data",
            log_dir=root / "logs",
            runtime_dir=root / "run",
        )
    dirs = platformdirs.PlatformDirs(APP_NAME, appauthor=False)
    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR (a headless box, a container) platformdirs warns and falls
        # back to a per-user folder under /tmp, which is what we want anyway.
        warnings.simplefilter("ignore")
        runtime = Path(dirs.user_runtime_dir)
    return AppPaths(
        config_dir=Path(dirs.user_config_dir),
        data_dir=Path(dirs.user_data_dir),
        log_dir=Path(dirs.user_log_dir),
        runtime_dir=runtime,
    )


def resources_dir() -> Path:
    """``resources/`` (icons, desktop files) next to the package in a checkout, or inside a
    frozen app's bundle."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "resources"
    return Path(__file__).resolve().parents[1] / "resources"
