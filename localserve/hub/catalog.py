"""What the Hugging Face Hub offers: GGUF repos by search, and the GGUF files of one repo.

Calls go through ``huggingface_hub`` (so ``HF_ENDPOINT``, ``HF_TOKEN`` and proxies work as users
expect); its errors become our typed ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from huggingface_hub import HfApi
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from localserve.errors import HubError, RepoNotFoundError
from localserve.hub.library import SHARD_PATTERN, safe_file_name
from localserve.hub.token import hub_token

QUANT_PATTERN = re.compile(
    r"(?<![A-Z0-9])(I?Q\d(?:_[A-Z0-9]+)*|F16|BF16|F32|MXFP4(?:_MOE)?)(?![A-Z0-9])", re.I
)


@dataclass(frozen=True)
class RepoSummary:
    repo_id: str
    downloads: int
    likes: int
    updated: datetime | None


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str | None

    @property
    def basename(self) -> str:
        """The name without the repo folder it may sit in (``Q4/model.gguf``)."""
        return self.name.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class RemoteModel:
    """One downloadable model in a repo: a GGUF file, or all the shards of a split one."""

    repo_id: str
    revision: str
    files: tuple[RemoteFile, ...]

    @property
    def first_file(self) -> str:
        return self.files[0].name

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def quant(self) -> str:
        found = QUANT_PATTERN.findall(self.files[0].basename)
        return found[-1].upper() if found else "?"


@contextmanager
def hub_errors(repo_id: str | None = None) -> Iterator[None]:
    try:
        yield
    except GatedRepoError as exc:
        raise HubError(
            f"{repo_id} is gated: accept its terms on huggingface.co, then run "
            "`localserve hub login`."
        ) from exc
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise RepoNotFoundError(
            f"The repo '{repo_id}' was not found on the Hub (if it is private: "
            "`localserve hub login`)."
        ) from exc
    except EntryNotFoundError as exc:
        raise RepoNotFoundError(f"A file was not found in '{repo_id}'.") from exc
    except HfHubHTTPError as exc:
        raise HubError(f"The Hub answered with an error: {exc}".splitlines()[0]) from exc
    except OSError as exc:  # connection refused, DNS, timeouts
        raise HubError(f"Cannot reach the Hugging Face Hub: {exc}") from exc


def search_repos(query: str, limit: int = 20) -> list[RepoSummary]:
    with hub_errors():
        found = HfApi(token=hub_token()).list_models(
            search=query, filter="gguf", sort="downloads", limit=limit
        )
        return [RepoSummary(m.id, m.downloads or 0, m.likes or 0, m.last_modified) for m in found]


def repo_models(repo_id: str, revision: str | None = None) -> list[RemoteModel]:
    """The GGUF models in a repo, shards grouped, smallest first."""
    with hub_errors(repo_id):
        info = HfApi(token=hub_token()).model_info(repo_id, revision=revision, files_metadata=True)
    commit = info.sha or revision or "main"
    singles: list[RemoteModel] = []
    shards: dict[str, list[RemoteFile]] = {}
    for sibling in info.siblings or []:
        name = sibling.rfilename
        if not name.lower().endswith(".gguf"):
            continue
        for part in name.split("/"):
            safe_file_name(part)  # refuse "..", absolute paths and separators from the Hub
        sha = sibling.lfs.sha256 if sibling.lfs else None
        remote = RemoteFile(name, sibling.size or 0, sha)
        shard = SHARD_PATTERN.match(name)
        if shard:
            shards.setdefault(f"{shard['stem']}/{shard['total']}", []).append(remote)
        else:
            singles.append(RemoteModel(repo_id, commit, (remote,)))
    for parts in shards.values():
        singles.append(RemoteModel(repo_id, commit, tuple(sorted(parts, key=lambda f: f.name))))
    # mmproj files are vision projectors, not models one can serve on their own.
    models = [m for m in singles if "mmproj" not in m.first_file.lower()]
    return sorted(models, key=lambda m: m.size)


def choose_model(repo_id: str, selector: str | None, models: list[RemoteModel]) -> RemoteModel:
    """Pick by file name or quant (``Q4_K_M``); with neither, the only one or a Q4_K_M."""
    if not models:
        raise RepoNotFoundError(f"'{repo_id}' has no GGUF files.")
    if selector:
        wanted = selector.lower()
        by_file = [m for m in models if wanted in {f.name.lower() for f in m.files}]
        by_quant = [m for m in models if m.quant.lower() == wanted]
        matches = by_file or by_quant
        if not matches:
            raise RepoNotFoundError(
                f"'{repo_id}' has no file or quant '{selector}'. Available: "
                + ", ".join(sorted({m.quant for m in models}))
            )
        return matches[0]
    if len(models) == 1:
        return models[0]
    preferred = [m for m in models if m.quant == "Q4_K_M"]
    if preferred:
        return preferred[0]
    raise RepoNotFoundError(
        f"'{repo_id}' has several quants; pick one with {repo_id}:QUANT. Available: "
        + ", ".join(m.quant for m in models)
    )


def parse_pull_spec(spec: str) -> tuple[str, str | None]:
    """``owner/repo[:QUANT|:FILE]`` -> (repo, selector)."""
    repo, _, selector = spec.strip().partition(":")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise RepoNotFoundError(
            f"'{spec}' is not a Hub repo; use OWNER/REPO[:QUANT|:FILE], e.g. "
            "bartowski/Qwen2.5-7B-Instruct-GGUF:Q4_K_M."
        )
    return repo, selector or None
