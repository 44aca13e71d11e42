"""Vision models in the library: a model and its projector (``mmproj``) pulled from a fake Hub,
or imported, recorded as a pair, and removed as one.

The repo holds two quants of a tiny model and two projectors of different precision (f16 and
f32), all small valid GGUFs (tests/helpers/model_files.py). The Hub side is
tests/helpers/fake_hub.py; the client side is our real downloader, in a ``localserve``
subprocess where it can be. Every test that pulls checks the projector's bytes on disk and the
request that fetched them, so a projector silently left behind fails it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from localserve.api.control import PullState
from localserve.daemon.pulls import PullManager
from localserve.hardware.memory import MemorySnapshot
from localserve.hub.catalog import choose_model, repo_models
from localserve.hub.download import CHUNK, pull
from localserve.hub.fit import estimate_fit
from localserve.hub.library import Library, ModelRecord
from localserve.hub.quants import quant_choices
from tests.helpers.daemon_process import run_cli as cli
from tests.helpers.fake_hub import FakeHub
from tests.helpers.model_files import tiny_model, tiny_projector

REPO = "example/Tiny-VL-GGUF"
Q8 = "Tiny-VL-Q8_0.gguf"
F32 = "Tiny-VL-F32.gguf"
MMPROJ_F16 = "mmproj-Tiny-VL-f16.gguf"
MMPROJ_F32 = "mmproj-Tiny-VL-f32.gguf"
Q8_NAME = "tiny-vl-q8_0"
PROJECTOR_WEIGHTS = 786_432  # per tensor: 3 MiB in f16 in all, past the 1 MiB write chunk
MEMORY = MemorySnapshot(ram_total_bytes=16 * 2**30, ram_free_bytes=8 * 2**30)


@pytest.fixture(scope="module")
def repo_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("tiny-vl")
    paths = [
        tiny_model(folder / Q8, "Q8_0"),
        tiny_model(folder / F32, "F32"),
        tiny_projector(folder / MMPROJ_F16, "F16", elements=PROJECTOR_WEIGHTS),
        tiny_projector(folder / MMPROJ_F32, "F32", elements=PROJECTOR_WEIGHTS),
    ]
    return {path.name: path.read_bytes() for path in paths}


@pytest.fixture
def hub(
    repo_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.add_repo(REPO, dict(repo_files), extra_files={"README.md": b"# card"})
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        # In this process huggingface_hub read HF_ENDPOINT at import: point it at the fake too.
        monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", fake.url)
        monkeypatch.setattr(
            "huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE",
            fake.url + "/{repo_id}/resolve/{revision}/{filename}",
        )
        yield fake


def library(home: Path) -> Library:
    return Library(home / "data" / "models")


def fetched(hub: FakeHub, file_name: str) -> list[str | None]:
    """The Range header of every GET of ``file_name`` (None: from the start)."""
    return [r for method, path, r in hub.requests if method == "GET" and path.endswith(file_name)]


def assert_pulled_with(
    lib: Library, record: ModelRecord, projector: str, repo_files: dict[str, bytes]
) -> None:
    data = repo_files[projector]
    assert record.mmproj == projector
    assert record.sha256[projector] == hashlib.sha256(data).hexdigest()
    assert record.mmproj_size_bytes == len(data)
    assert record.mmproj_projector_type == "mlp" and record.mmproj_vision_encoder
    assert "vision" in record.capabilities()
    path = lib.mmproj_path(record)
    assert path == lib.folder(record.name) / projector and path.read_bytes() == data
    assert not list(lib.folder(record.name).glob("*.part"))


def row_of(listing: str, name: str) -> str:
    return next(line for line in listing.splitlines() if line.startswith(name + " "))


def test_projectors_are_never_offered_as_models(hub: FakeHub) -> None:
    models = repo_models(REPO)
    assert [m.first_file for m in models] == [Q8, F32]  # smallest first, no mmproj
    assert {p.name for p in models[0].projectors} == {MMPROJ_F16, MMPROJ_F32}
    files = cli("models", "files", REPO)
    assert files.returncode == 0, files.stderr
    rows = files.stdout.splitlines()
    assert rows[0].split() == ["QUANT", "FILE", "SIZE", "NEEDS", "FIT", "MMPROJ"]
    assert [row.split()[0] for row in rows[1:]] == ["Q8_0", "F32"]
    assert rows[1].split()[-1] == MMPROJ_F16 and rows[2].split()[-1] == MMPROJ_F32
    refused = cli("models", "pull", f"{REPO}:{MMPROJ_F16}")
    assert refused.returncode == 1
    assert "is a vision projector, not a model" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_pull_brings_the_matching_projector_and_rm_removes_both(
    hub: FakeHub, isolated_home: Path, repo_files: dict[str, bytes]
) -> None:
    """A Q8_0 model has no Q8_0 projector in this repo: the F16 one comes with it."""
    result = cli("models", "pull", f"{REPO}:Q8_0")
    assert result.returncode == 0, result.stderr
    assert MMPROJ_F16 in result.stdout and "sees images" in result.stdout
    lib = library(isolated_home)
    record = lib.get(Q8_NAME)
    assert record.files == [Q8] and lib.paths(record)[0].read_bytes() == repo_files[Q8]
    assert_pulled_with(lib, record, MMPROJ_F16, repo_files)
    assert fetched(hub, MMPROJ_F16) == [None] and fetched(hub, MMPROJ_F32) == []

    assert "sees" in row_of(cli("models", "list").stdout, Q8_NAME)
    fit = cli("models", "fit", Q8_NAME)
    assert fit.returncode == 0, fit.stderr
    assert "projector" in fit.stdout and "to encode images" in fit.stdout

    removed = cli("models", "rm", Q8_NAME, "--yes")
    assert removed.returncode == 0, removed.stderr
    assert not lib.folder(Q8_NAME).exists()
    assert Q8_NAME not in cli("models", "list").stdout


def test_the_models_own_precision_wins(
    hub: FakeHub, isolated_home: Path, repo_files: dict[str, bytes]
) -> None:
    """An F32 model gets the F32 projector, though F16 is preferred otherwise (and smaller).
    In this process, with the memory given, so the machine's free memory cannot change it."""
    remote = choose_model(REPO, "F32", repo_models(REPO), memory=MEMORY)
    assert remote.mmproj is not None and remote.mmproj.name == MMPROJ_F32
    lib = library(isolated_home)
    record = pull(remote, lib)
    assert_pulled_with(lib, record, MMPROJ_F32, repo_files)
    # Before the download, the quant's fit already counted the projector it would bring.
    before = {c.model.quant: c for c in quant_choices(REPO, MEMORY, False, 2048)}
    assert before["F32"].model.mmproj == remote.mmproj
    after = estimate_fit(record, MEMORY, 2048, 1, False)
    assert before["F32"].fit == after and after.projector_bytes > len(repo_files[MMPROJ_F32])


def test_a_cut_projector_download_resumes_where_it_stopped(
    hub: FakeHub, isolated_home: Path, repo_files: dict[str, bytes]
) -> None:
    cut = 1_500_000  # past the first 1 MiB chunk written to the .part
    assert len(repo_files[Q8]) < cut < len(repo_files[MMPROJ_F16])  # the cut is in the projector
    hub.drop_after = cut
    result = cli("models", "pull", f"{REPO}:Q8_0")
    assert result.returncode == 0, result.stderr
    # The whole first chunk reached the .part before the cut; the next request asks for the rest.
    assert fetched(hub, MMPROJ_F16) == [None, f"bytes={CHUNK}-"]
    assert fetched(hub, Q8) == [None]
    lib = library(isolated_home)
    assert_pulled_with(lib, lib.get(Q8_NAME), MMPROJ_F16, repo_files)


def test_a_corrupt_projector_is_deleted_and_the_model_not_installed(
    hub: FakeHub, isolated_home: Path, repo_files: dict[str, bytes]
) -> None:
    hub.corrupt_files = {MMPROJ_F16}
    result = cli("models", "pull", f"{REPO}:Q8_0")
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and "corrupt" in result.stderr
    assert MMPROJ_F16 in result.stderr and len(result.stderr.strip().splitlines()) == 1
    lib = library(isolated_home)
    assert lib.find(Q8_NAME) is None and Q8_NAME not in cli("models", "list").stdout
    assert not list(lib.folder(Q8_NAME).glob("mmproj*"))  # the bad copy is gone
    # The model's own file was verified and stays: the next pull fetches only the projector.
    hub.corrupt_files = set()
    hub.requests.clear()
    again = cli("models", "pull", f"{REPO}:Q8_0")
    assert again.returncode == 0, again.stderr
    assert fetched(hub, Q8) == [] and fetched(hub, MMPROJ_F16) == [None]
    assert_pulled_with(lib, lib.get(Q8_NAME), MMPROJ_F16, repo_files)


def test_no_mmproj_skips_the_projector_and_a_later_pull_adds_it(
    hub: FakeHub, isolated_home: Path, repo_files: dict[str, bytes]
) -> None:
    result = cli("models", "pull", f"{REPO}:Q8_0", "--no-mmproj")
    assert result.returncode == 0, result.stderr
    lib = library(isolated_home)
    record = lib.get(Q8_NAME)
    assert record.mmproj is None and lib.mmproj_path(record) is None
    assert "vision" not in record.capabilities() and list(record.sha256) == [Q8]
    assert not list(lib.folder(Q8_NAME).glob("mmproj*"))
    assert fetched(hub, MMPROJ_F16) == [] and fetched(hub, MMPROJ_F32) == []
    assert "sees" not in row_of(cli("models", "list").stdout, Q8_NAME)

    added = cli("models", "pull", f"{REPO}:Q8_0")
    assert added.returncode == 0, added.stderr
    assert_pulled_with(lib, lib.get(Q8_NAME), MMPROJ_F16, repo_files)


def test_a_projector_that_is_not_one_is_refused_and_deleted(
    hub: FakeHub, isolated_home: Path, repo_files: dict[str, bytes]
) -> None:
    hub.add_repo(
        "example/Mislabelled-GGUF", {Q8: repo_files[Q8], "mmproj-F16.gguf": repo_files[Q8]}
    )
    result = cli("models", "pull", "example/Mislabelled-GGUF")
    assert result.returncode == 1
    assert "mmproj-F16.gguf is not a vision projector" in result.stderr
    assert "--no-mmproj" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    lib = library(isolated_home)
    assert lib.find(Q8_NAME) is None
    assert not (lib.folder(Q8_NAME) / "mmproj-F16.gguf").exists()


def test_a_pull_in_the_daemon_brings_the_projector(
    hub: FakeHub, isolated_home: Path, repo_files: dict[str, bytes]
) -> None:
    """The daemon's pull manager (what the tray and the control API use) takes the same path."""
    lib = library(isolated_home)

    async def run() -> tuple[int, int, PullState]:
        manager = PullManager(lib)
        job, joined = await manager.start(f"{REPO}:Q8_0")
        assert not joined
        async for snapshot in manager.follow(job):
            last = snapshot
        return job.total_bytes, last.done_bytes, last.state

    total, done, state = asyncio.run(run())
    assert state is PullState.DONE
    assert total == done == len(repo_files[Q8]) + len(repo_files[MMPROJ_F16])
    assert_pulled_with(lib, lib.get(Q8_NAME), MMPROJ_F16, repo_files)


def test_import_with_mmproj_copies_or_links_the_pair(
    isolated_home: Path, tmp_path: Path, repo_files: dict[str, bytes]
) -> None:
    model, projector = tmp_path / Q8, tmp_path / MMPROJ_F16
    model.write_bytes(repo_files[Q8])
    projector.write_bytes(repo_files[MMPROJ_F16])
    copied = cli("models", "import", str(model), "--mmproj", str(projector))
    assert copied.returncode == 0, copied.stderr
    assert f"sees images through {MMPROJ_F16}" in copied.stdout
    linked = cli(
        "models", "import", str(model), "--name", "linked", "--link", "--mmproj", str(projector)
    )
    assert linked.returncode == 0, linked.stderr
    lib = library(isolated_home)
    copy, link = lib.get(Q8_NAME), lib.get("linked")
    assert lib.mmproj_path(copy) == lib.folder(Q8_NAME) / MMPROJ_F16
    assert lib.mmproj_path(link) == projector.resolve()
    assert copy.sees and link.sees and copy.mmproj_projector_type == "mlp"
    listing = cli("models", "list").stdout
    assert "sees" in row_of(listing, Q8_NAME) and "sees" in row_of(listing, "linked")

    assert cli("models", "rm", Q8_NAME, "--yes").returncode == 0
    assert cli("models", "rm", "linked", "--yes").returncode == 0
    assert not lib.folder(Q8_NAME).exists() and not lib.folder("linked").exists()
    assert projector.exists() and model.exists()  # the user's files stay


def test_import_refuses_a_projector_that_is_not_clip_in_one_line(
    isolated_home: Path, tmp_path: Path, repo_files: dict[str, bytes]
) -> None:
    model = tmp_path / Q8
    model.write_bytes(repo_files[Q8])
    result = cli("models", "import", str(model), "--mmproj", str(model))
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"{Q8} is not a vision projector" in result.stderr and "'clip'" in result.stderr
    assert library(isolated_home).find(Q8_NAME) is None
