"""What the Hugging Face Hub offers: GGUF repos by search, and the GGUF files of one repo.

The calls go through ``hub.client.HubClient``, so ``HF_ENDPOINT``, ``HF_TOKEN``, proxies and
``HF_HUB_OFFLINE`` work as users expect, and every failure is one ``HubError`` line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from localserve.errors import RepoNotFoundError
from localserve.hub.client import API_TIMEOUT_S, HubClient
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


def parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def search_repos(
    query: str, limit: int = 20, timeout_s: float = API_TIMEOUT_S
) -> list[RepoSummary]:
    with HubClient(hub_token(), timeout_s) as hub:
        found = hub.search_models(query, limit)
    return [
        RepoSummary(
            str(item.get("id") or item.get("modelId")),
            int(item.get("downloads") or 0),
            int(item.get("likes") or 0),
            parse_time(item.get("lastModified")),
        )
        for item in found
        if item.get("id") or item.get("modelId")
    ]


def repo_models(
    repo_id: str, revision: str | None = None, timeout_s: float = API_TIMEOUT_S
) -> list[RemoteModel]:
    """The GGUF models in a repo, shards grouped, smallest first."""
    with HubClient(hub_token(), timeout_s) as hub:
        info = hub.model_info(repo_id, revision)
    commit = str(info.get("sha") or revision or "main")
    singles: list[RemoteModel] = []
    shards: dict[str, list[RemoteFile]] = {}
    for sibling in info.get("siblings") or []:
        name = str(sibling.get("rfilename") or "") if isinstance(sibling, dict) else ""
        if not name.lower().endswith(".gguf"):
            continue
        for part in name.split("/"):
            safe_file_name(part)  # refuse "..", absolute paths and separators from the Hub
        lfs = sibling.get("lfs")
        sha = str(lfs["sha256"]) if isinstance(lfs, dict) and lfs.get("sha256") else None
        remote = RemoteFile(name, int(sibling.get("size") or 0), sha)
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
