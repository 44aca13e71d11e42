"""A repo's quants with a real fit estimate, before anything is downloaded.

The fit estimate needs the model's shape (layers, KV heads, head sizes, vocabulary), which lives
in the GGUF header at the start of the file. We fetch just that prefix with an HTTP Range request
(4 MiB first, more only if the header is longer: large vocabularies run to a few MiB). Every
quant of a repo shares the shape, so one header serves them all; each quant's weights are its
own size. A vision model's quants each come with the projector a pull would bring, counted in
their size and fit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import httpx

from localserve.errors import HubError, InvalidModelFileError
from localserve.hardware.memory import MemorySnapshot
from localserve.hub.catalog import RemoteModel, repo_models, with_projector
from localserve.hub.client import (
    API_TIMEOUT_S,
    answer_fault,
    file_url,
    hub_headers,
    hub_unreachable,
)
from localserve.hub.fit import FitEstimate, estimate_fit
from localserve.hub.gguf_header import GgufHeader, HeaderIncomplete, read_gguf_header_prefix
from localserve.hub.library import ModelRecord, model_name_for
from localserve.hub.token import hub_token
from localserve.network import fault_from_exception

log = logging.getLogger(__name__)

FIRST_FETCH = 4 * 2**20
MAX_FETCH = 64 * 2**20


@dataclass(frozen=True)
class QuantChoice:
    model: RemoteModel
    fit: FitEstimate | None  # None when the header could not be read
    problem: str | None = None  # why fit is None


def fetch_remote_header(remote: RemoteModel, timeout_s: float = API_TIMEOUT_S) -> GgufHeader:
    """The GGUF header of ``remote``'s first file, read from a prefix of it."""
    first = remote.files[0]
    url = file_url(remote.repo_id, first.name, remote.revision)
    headers = hub_headers(hub_token())
    fetch = FIRST_FETCH
    with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(timeout_s)) as client:
        while True:
            want = min(fetch, first.size) if first.size else fetch
            try:
                response = client.get(url, headers={**headers, "Range": f"bytes=0-{want - 1}"})
            except httpx.HTTPError as exc:
                raise hub_unreachable(fault_from_exception(exc, url, timeout_s)) from exc
            fault = answer_fault(response, remote.repo_id)
            if fault is not None:
                raise hub_unreachable(fault)
            if response.status_code not in (200, 206):
                raise HubError(f"The Hub answered {response.status_code} for {first.name}.")
            try:
                return read_gguf_header_prefix(
                    response.content[:want], first.size or len(response.content), first.basename
                )
            except HeaderIncomplete:
                if want >= MAX_FETCH or want >= first.size:
                    raise InvalidModelFileError(
                        f"{first.name}: its header is larger than {MAX_FETCH // 2**20} MiB."
                    ) from None
                fetch *= 4


def quant_choices(
    repo_id: str,
    memory: MemorySnapshot,
    gpu_offload: bool,
    context_length: int | None = None,
    timeout_s: float = API_TIMEOUT_S,
) -> list[QuantChoice]:
    """Every GGUF model in ``repo_id``, smallest first, with its fit on this machine (and the
    projector a pull would bring, for a vision model)."""
    models = [with_projector(m, memory) for m in repo_models(repo_id, timeout_s=timeout_s)]
    if not models:
        return []
    try:
        header: GgufHeader | None = fetch_remote_header(models[0], timeout_s)
        problem = None
    except (HubError, InvalidModelFileError) as exc:
        log.info("No fit estimate for %s: %s", repo_id, exc)  # callers show the problem
        header, problem = None, str(exc)
    choices = []
    for model in models:
        if header is None:
            choices.append(QuantChoice(model, None, problem))
            continue
        files = [f.name for f in model.files]
        record = ModelRecord.from_header(
            model_name_for(model.files[0].basename), files, header, model.weights_size
        )
        if model.mmproj is not None:
            record.mmproj, record.mmproj_size_bytes = model.mmproj.basename, model.mmproj.size
        fit = estimate_fit(record, memory, context_length, 1, gpu_offload)
        choices.append(QuantChoice(model, fit))
    return choices
