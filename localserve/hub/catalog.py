"""What the Hugging Face Hub offers: GGUF repos by search, and the GGUF files of one repo.

The calls go through ``hub.client.HubClient``, so ``HF_ENDPOINT``, ``HF_TOKEN``, proxies and
``HF_HUB_OFFLINE`` work as users expect, and every failure is one ``HubError`` line.

A vision model's repo also holds projector files (``mmproj-*.gguf``). They are never models of
their own: a repo's models carry them as ``projectors``, and ``choose_model`` picks the one a
pull brings (``choose_projector`` states the rule).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from localserve.errors import RepoNotFoundError
from localserve.hardware.memory import MemorySnapshot, sample_memory
from localserve.hub.client import API_TIMEOUT_S, HubClient
from localserve.hub.fit import HEADROOM, IMAGE_ENCODING_BYTES
from localserve.hub.library import SHARD_PATTERN, is_projector_name, safe_file_name
from localserve.hub.token import hub_token

QUANT_PATTERN = re.compile(
    r"(?<![A-Z0-9])(I?Q\d(?:_[A-Z0-9]+)*|F16|BF16|F32|MXFP4(?:_MOE)?)(?![A-Z0-9])", re.I
)
# Projector precisions, most wanted first, when none matches the model's (llama.cpp's advice is
# an F16 projector: quantizing the image encoder costs more quality than it saves).
PROJECTOR_PREFERENCE = ("F16", "BF16", "F32", "Q8_0")


def quant_of(file_name: str) -> str:
    """The quant or precision a file name says (``...-Q4_K_M.gguf`` -> ``Q4_K_M``), or "?"."""
    found = QUANT_PATTERN.findall(file_name.rsplit("/", 1)[-1])
    return found[-1].upper() if found else "?"


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
    """One downloadable model in a repo: a GGUF file, or all the shards of a split one, and the
    vision projector a pull brings with it (``mmproj``, set by ``choose_model``)."""

    repo_id: str
    revision: str
    files: tuple[RemoteFile, ...]
    projectors: tuple[RemoteFile, ...] = ()  # every projector in the repo
    mmproj: RemoteFile | None = None

    @property
    def first_file(self) -> str:
        return self.files[0].name

    @property
    def weights_size(self) -> int:
        """The model's own files."""
        return sum(f.size for f in self.files)

    @property
    def size(self) -> int:
        """What a pull downloads: the model's files and its projector."""
        return self.weights_size + (self.mmproj.size if self.mmproj else 0)

    @property
    def quant(self) -> str:
        return quant_of(self.files[0].basename)

    @property
    def downloads(self) -> tuple[RemoteFile, ...]:
        """The files a pull fetches, in order: the model's, then its projector."""
        return self.files + ((self.mmproj,) if self.mmproj else ())


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
    singles: list[tuple[RemoteFile, ...]] = []
    shards: dict[str, list[RemoteFile]] = {}
    projectors: list[RemoteFile] = []
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
        if is_projector_name(name):  # a vision projector, never a model of its own
            projectors.append(remote)
        elif shard:
            shards.setdefault(f"{shard['stem']}/{shard['total']}", []).append(remote)
        else:
            singles.append((remote,))
    singles += [tuple(sorted(parts, key=lambda f: f.name)) for parts in shards.values()]
    found = tuple(sorted(projectors, key=lambda f: (f.size, f.name)))
    models = [RemoteModel(repo_id, commit, files, found) for files in singles]
    return sorted(models, key=lambda m: m.weights_size)


def choose_model(
    repo_id: str,
    selector: str | None,
    models: list[RemoteModel],
    *,
    mmproj: bool = True,
    memory: MemorySnapshot | None = None,
) -> RemoteModel:
    """Pick by file name or quant (``Q4_K_M``); with neither, the only one or a Q4_K_M.

    With ``mmproj`` (the default), the model comes with the repo's projector that
    ``choose_projector`` picks (``memory``, sampled when needed and not given, decides what
    fits)."""
    model = _choose_model_files(repo_id, selector, models)
    return with_projector(model, memory) if mmproj else model


def with_projector(model: RemoteModel, memory: MemorySnapshot | None = None) -> RemoteModel:
    """``model`` with the projector a pull would bring (``choose_projector``), if it has any."""
    if not model.projectors:
        return model
    return dataclasses.replace(model, mmproj=choose_projector(model, memory))


def _choose_model_files(
    repo_id: str, selector: str | None, models: list[RemoteModel]
) -> RemoteModel:
    if not models:
        raise RepoNotFoundError(f"'{repo_id}' has no GGUF files.")
    if selector:
        wanted = selector.lower()
        by_file = [m for m in models if wanted in {f.name.lower() for f in m.files}]
        by_quant = [m for m in models if m.quant.lower() == wanted]
        matches = by_file or by_quant
        if not matches:
            projectors = {f.name.lower() for f in models[0].projectors}
            if wanted in projectors or wanted in {name.rsplit("/", 1)[-1] for name in projectors}:
                raise RepoNotFoundError(
                    f"'{selector}' is a vision projector, not a model: pull a model of "
                    f"'{repo_id}' and its projector comes with it."
                )
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


def projector_fits(model: RemoteModel, projector: RemoteFile, memory: MemorySnapshot) -> bool:
    """Whether the model's files, the projector and its image-encoding allowance fit in 90% of
    the free RAM, or of the free VRAM of the GPU with the most (a rough check made before the
    model's header is read; ``models fit`` gives the full estimate once installed)."""
    free = max([memory.ram_free_bytes, *(gpu.free_bytes for gpu in memory.gpus)])
    return model.weights_size + projector.size + IMAGE_ENCODING_BYTES <= free * HEADROOM


def choose_projector(model: RemoteModel, memory: MemorySnapshot | None = None) -> RemoteFile:
    """The projector a pull of ``model`` brings, by precision:

    1. the one whose precision is the model's own (an F16 model gets ``mmproj-F16``, a Q8_0
       model ``mmproj-Q8_0``), if it fits;
    2. else the first of F16, BF16, F32, Q8_0 that fits, then any other that fits, smallest
       first;
    3. else (none fits) the smallest.

    "Fits" is ``projector_fits`` against ``memory`` (sampled now when not given and needed).
    """
    if not model.projectors:
        raise ValueError(f"{model.first_file} has no projectors to choose from.")
    own = model.quant

    def rank(projector: RemoteFile) -> tuple[int, int, str]:
        precision = quant_of(projector.name)
        if precision == own and own != "?":
            place = 0
        elif precision in PROJECTOR_PREFERENCE:
            place = 1 + PROJECTOR_PREFERENCE.index(precision)
        else:
            place = 1 + len(PROJECTOR_PREFERENCE)
        return place, projector.size, projector.name

    ranked = sorted(model.projectors, key=rank)
    if len(ranked) == 1:
        return ranked[0]
    memory = memory or sample_memory()
    fitting = [p for p in ranked if projector_fits(model, p, memory)]
    return fitting[0] if fitting else min(ranked, key=lambda p: (p.size, p.name))


def parse_pull_spec(spec: str) -> tuple[str, str | None]:
    """``owner/repo[:QUANT|:FILE]`` -> (repo, selector)."""
    repo, _, selector = spec.strip().partition(":")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise RepoNotFoundError(
            f"'{spec}' is not a Hub repo; use OWNER/REPO[:QUANT|:FILE], e.g. "
            "bartowski/Qwen2.5-7B-Instruct-GGUF:Q4_K_M."
        )
    return repo, selector or None
