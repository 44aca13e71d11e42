"""The model library from the CLI and the core, against a fake Hub on loopback.

The fake speaks the Hub's HTTP protocol (tests/helpers/fake_hub.py); the client side is our real Hub
client and downloader, in a real ``localserve`` subprocess where it can be.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from localserve.errors import DiskSpaceError, DownloadError
from localserve.hardware.memory import MemorySnapshot
from localserve.hub.catalog import choose_model, repo_models
from localserve.hub.download import LOCK_NAME, PullCancelled, PullProgress, pull
from localserve.hub.fit import estimate_fit
from localserve.hub.gguf_header import read_gguf_header
from localserve.hub.library import Library
from localserve.hub.quants import FIRST_FETCH, fetch_remote_header, quant_choices
from tests.helpers.daemon_process import DaemonProcess, run_cli
from tests.helpers.fake_hub import FakeHub
from tests.helpers.model_files import starter_path

REPO = "example/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"
NAME = "smollm2-135m-instruct-q4_1"
MEMORY = MemorySnapshot(ram_total_bytes=16 * 2**30, ram_free_bytes=8 * 2**30)


@pytest.fixture(scope="module")
def starter_bytes() -> bytes:
    return starter_path().read_bytes()


@pytest.fixture
def hub(starter_bytes: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_repo(REPO, {FILE: starter_bytes}, extra_files={"README.md": b"# card"})
        fake.add_repo("other/tiny-coder-GGUF", {"tiny-coder-Q8_0.gguf": starter_bytes[:4096]})
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        # In this process huggingface_hub read HF_ENDPOINT at import: point it at the fake too.
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", fake.url)
        monkeypatch.setattr(
            "huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE",
            fake.url + "/{repo_id}/resolve/{revision}/{filename}",
        )
        yield fake


def cli(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, input=input)


def library(home: Path) -> Library:
    return Library(home / "data" / "models")


def test_search_and_files_list_what_the_hub_has(hub: FakeHub) -> None:
    found = cli("models", "search", "smollm2")
    assert found.returncode == 0, found.stderr
    assert REPO in found.stdout and "1000" in found.stdout
    assert "tiny-coder" not in found.stdout
    hub.requests.clear()
    files = cli("models", "files", REPO)
    assert files.returncode == 0, files.stderr
    assert "Q4_1" in files.stdout and FILE in files.stdout and "98.4 MB" in files.stdout
    assert "README" not in files.stdout
    # The verdict comes from the real header, read from the first bytes of the file only.
    assert "NEEDS" in files.stdout and "CPU only" in files.stdout
    fetched = [r for m, p, r in hub.requests if m == "GET" and FILE in p]
    assert fetched == [f"bytes=0-{FIRST_FETCH - 1}"]


def test_the_remote_header_is_read_from_a_prefix_fetched_in_steps(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header longer than the first fetch (big vocabularies) is read with a larger one."""
    monkeypatch.setattr("localserve.hub.quants.FIRST_FETCH", 4096)
    remote = choose_model(REPO, None, repo_models(REPO))
    hub.requests.clear()
    header = fetch_remote_header(remote)
    local = read_gguf_header(starter_path())
    assert header.metadata == local.metadata and header.tensor_count == local.tensor_count
    assert header.parameter_count == local.parameter_count
    ranges = [r for m, p, r in hub.requests if m == "GET" and FILE in p]
    assert len(ranges) >= 2 and ranges[0] == "bytes=0-4095"


def test_files_estimate_matches_the_installed_models_estimate(
    hub: FakeHub, isolated_home: Path
) -> None:
    """Before and after download, the same file gets the same estimate."""
    before = {c.model.quant: c.fit for c in quant_choices(REPO, MEMORY, False, 2048)}
    assert cli("models", "pull", REPO).returncode == 0
    record = library(isolated_home).get(NAME)
    after = estimate_fit(record, MEMORY, 2048, 1, False)
    assert before["Q4_1"] == after


def test_gated_repos_need_a_hub_login(
    hub: FakeHub, isolated_home: Path, starter_bytes: bytes
) -> None:
    hub.add_repo("gated/SmolLM2-GGUF", {FILE: starter_bytes}, gated=True)
    hub.tokens["hf_good_token"] = "tester"
    refused = cli("models", "pull", "gated/SmolLM2-GGUF")
    assert refused.returncode == 1
    assert "gated" in refused.stderr and "localserve hub login" in refused.stderr
    bad = cli("hub", "login", "--token-from-stdin", input="hf_wrong\n")
    assert bad.returncode == 1 and "rejected" in bad.stderr
    assert "Not logged in" in cli("hub", "status").stdout
    good = cli("hub", "login", "--token-from-stdin", input="hf_good_token\n")
    assert good.returncode == 0, good.stderr
    assert "as tester" in good.stdout
    token_file = isolated_home / "config" / "hf.token"  # the test keyring has no backend
    assert token_file.read_text().strip() == "hf_good_token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert "account tester" in cli("hub", "status").stdout
    pulled = cli("models", "pull", "gated/SmolLM2-GGUF")
    assert pulled.returncode == 0, pulled.stderr
    assert "hf_good_token" not in pulled.stdout + pulled.stderr
    assert "removed" in cli("hub", "logout").stdout
    assert not token_file.exists()


def test_a_folder_being_downloaded_by_another_process_is_refused(
    hub: FakeHub, isolated_home: Path
) -> None:
    lib = library(isolated_home)
    remote = choose_model(REPO, None, repo_models(REPO))
    lib.folder(NAME).mkdir(parents=True)
    with FileLock(lib.folder(NAME) / LOCK_NAME), pytest.raises(DownloadError, match="already"):
        pull(remote, lib)


def test_pull_installs_a_verified_model_that_serves(
    hub: FakeHub, isolated_home: Path, starter_bytes: bytes
) -> None:
    result = cli("models", "pull", f"{REPO}:Q4_1")
    assert result.returncode == 0, result.stderr
    assert "sha256 verified" in result.stdout
    record = library(isolated_home).get(NAME)
    assert record.source_repo == REPO and record.quant_type == "Q4_1"
    assert record.architecture == "llama" and record.layers == 30
    assert record.has_chat_template and record.parameter_count == 134_515_008
    installed = library(isolated_home).paths(record)[0]
    assert installed.read_bytes() == starter_bytes
    assert not list(installed.parent.glob("*.part"))
    listing = cli("models", "list")
    assert NAME in listing.stdout and "smollm2-135m-instruct" in listing.stdout
    with DaemonProcess(isolated_home, "--model", NAME) as daemon:
        assert daemon.wait_until_model("ready").model_id == NAME


def test_a_dropped_connection_resumes_and_ends_byte_identical(
    hub: FakeHub, isolated_home: Path, starter_bytes: bytes
) -> None:
    hub.drop_after = 10_000_000
    result = cli("models", "pull", REPO)
    assert result.returncode == 0, result.stderr
    ranges = [r for method, path, r in hub.requests if method == "GET" and FILE in path]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    record = library(isolated_home).get(NAME)
    assert library(isolated_home).paths(record)[0].read_bytes() == starter_bytes


def test_a_corrupt_download_is_discarded_and_never_installed(
    hub: FakeHub, isolated_home: Path
) -> None:
    hub.corrupt = True
    result = cli("models", "pull", REPO)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and "corrupt" in result.stderr
    assert "Traceback" not in result.stderr
    folder = isolated_home / "data" / "models" / NAME
    assert not list(folder.glob("*.gguf*"))
    assert NAME not in cli("models", "list").stdout


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nobody/missing-GGUF", "was not found"),
        (f"{REPO}:Q9_9", "no file or quant 'Q9_9'"),
    ],
)
def test_unknown_repos_and_files_are_one_clear_line(hub: FakeHub, spec: str, message: str) -> None:
    result = cli("models", "pull", spec)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_file_names_that_leave_the_folder_are_refused(hub: FakeHub, starter_bytes: bytes) -> None:
    hub.add_repo("evil/escape-GGUF", {"../../escape.gguf": starter_bytes[:100]})
    result = cli("models", "files", "evil/escape-GGUF")
    assert result.returncode == 1
    assert "not a plain name" in result.stderr


def test_cancel_keeps_the_part_file_and_a_later_pull_resumes(
    hub: FakeHub, isolated_home: Path, starter_bytes: bytes
) -> None:
    lib = library(isolated_home)
    remote = choose_model(REPO, None, repo_models(REPO))
    cancel = threading.Event()

    def cancel_midway(progress: PullProgress) -> None:
        if progress.done_bytes > 30_000_000:
            cancel.set()

    with pytest.raises(PullCancelled):
        pull(remote, lib, on_progress=cancel_midway, cancel=cancel)
    part = lib.folder(NAME) / (FILE + ".part")
    kept = part.stat().st_size
    assert 30_000_000 < kept < len(starter_bytes)
    hub.requests.clear()
    record = pull(remote, lib)
    assert (lib.folder(NAME) / FILE).read_bytes() == starter_bytes
    assert record.sha256[FILE] == remote.files[0].sha256
    assert [r for m, _, r in hub.requests if m == "GET"] == [f"bytes={kept}-"]


def test_not_enough_disk_is_refused_before_downloading(
    hub: FakeHub, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = choose_model(REPO, None, repo_models(REPO))
    full = shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000)  # type: ignore[attr-defined]
    monkeypatch.setattr("localserve.hub.library.shutil.disk_usage", lambda path: full)
    with pytest.raises(DiskSpaceError, match="Not enough disk space"):
        pull(remote, library(isolated_home))
    assert not any(m == "GET" and FILE in p for m, p, _ in hub.requests)


def test_a_write_error_mid_download_keeps_the_part(
    hub: FakeHub, isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full while writing: a clear error, and what was written stays for a resume."""
    real_open = Path.open

    class FillingFile:
        def __init__(self, handle: Any) -> None:
            self.handle = handle
            self.written = 0

        def __enter__(self) -> FillingFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def seek(self, offset: int) -> None:
            self.handle.seek(offset)

        def write(self, data: bytes) -> int:
            if self.written > 20_000_000:
                raise OSError(28, "No space left on device")
            self.written += len(data)
            return int(self.handle.write(data))

    def open_filling(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(path, mode, *args, **kwargs)
        return (
            FillingFile(handle)
            if path.name.endswith(".part") and "b" in mode and mode != "rb"
            else handle
        )

    monkeypatch.setattr(Path, "open", open_filling)
    remote = choose_model(REPO, None, repo_models(REPO))
    lib = library(isolated_home)
    with pytest.raises(DownloadError, match="No space left on device"):
        pull(remote, lib)
    monkeypatch.undo()
    assert (lib.folder(NAME) / (FILE + ".part")).stat().st_size > 10_000_000


def test_import_copies_or_links_and_rm_removes(isolated_home: Path, tmp_path: Path) -> None:
    source = tmp_path / "My-Model.Q4_1.gguf"
    shutil.copyfile(starter_path(), source)
    copied = cli("models", "import", str(source))
    assert copied.returncode == 0, copied.stderr
    linked = cli("models", "import", str(source), "--name", "linked", "--link")
    assert linked.returncode == 0, linked.stderr
    lib = library(isolated_home)
    assert lib.paths(lib.get("my-model.q4_1"))[0].parent == lib.folder("my-model.q4_1")
    assert lib.paths(lib.get("linked"))[0] == source.resolve()
    again = cli("models", "import", str(source))
    assert again.returncode == 1 and "already installed" in again.stderr
    assert cli("models", "rm", "linked", "--yes").returncode == 0
    assert source.exists()  # a referenced file is the user's: never deleted
    refused = cli("models", "rm", "my-model.q4_1", input="n\n")
    assert refused.returncode == 1 and lib.folder("my-model.q4_1").exists()
    assert cli("models", "rm", "my-model.q4_1", "--yes").returncode == 0
    assert not lib.folder("my-model.q4_1").exists()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is not a model at all" * 10, "does not start with the GGUF magic"),
        (None, "ends inside its header"),
    ],
)
def test_import_rejects_non_gguf_and_truncated_files(
    tmp_path: Path, content: bytes | None, reason: str
) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(content if content is not None else starter_path().read_bytes()[:300_000])
    result = cli("models", "import", str(path))
    assert result.returncode == 1
    assert reason in result.stderr and "Traceback" not in result.stderr


def test_fit_prints_the_breakdown(isolated_home: Path) -> None:
    result = cli("models", "fit", "starter", "--ctx", "2048")
    assert result.returncode == 0, result.stderr
    for word in ("weights", "KV cache", "2048 tokens", "compute", "free RAM", "Verdict: CPU only"):
        assert word in result.stdout
