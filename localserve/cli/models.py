"""``localserve models ...``: the model library from the command line (thin over ``hub/``)."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import click

from localserve.api.control import PullSnapshot, PullState, feature_words
from localserve.api.presets import fit_inputs, parse_assignments
from localserve.config import load_settings
from localserve.config.preset_store import PresetStore
from localserve.daemon.client import DaemonClient
from localserve.errors import LocalserveError
from localserve.hardware.memory import MemorySnapshot, sample_memory
from localserve.hub.client import HubOptions
from localserve.hub.fit import IMAGE_ENCODING_BYTES, FitEstimate, estimate_fit
from localserve.hub.library import (
    Library,
    ModelRecord,
    describe_file,
    model_name_for,
    refuse_projector_as_model,
)
from localserve.hub.starter import STARTER_MODEL_ID
from localserve.paths import app_paths
from localserve.runner.llama_backends import gpu_offload_supported
from localserve.units import format_bytes

CANCELLED_LINE = "Cancelled; the partial file is kept: run the same command to resume."


def hub_settings() -> HubOptions:
    limits = load_settings(app_paths().ensure().config_file).limits
    return HubOptions(limits.hub_timeout, limits.pull_network_wait)


def library() -> Library:
    paths = app_paths().ensure()
    return Library(paths.models_dir, paths.starter_record_file)


def fit_of(
    record: ModelRecord,
    memory: MemorySnapshot,
    ctx: int | None,
    parallel: int = 1,
    kv_scale: float = 1.0,
) -> FitEstimate:
    return estimate_fit(record, memory, ctx, parallel, gpu_offload_supported(), kv_scale)


def preset_fit(record: ModelRecord, memory: MemorySnapshot, presets: PresetStore) -> FitEstimate:
    """The fit verdict with the model's own context and KV-cache types, if it has them."""
    ctx, kv_scale = fit_inputs(presets.get(record.name))
    return fit_of(record, memory, ctx, kv_scale=kv_scale)


@click.group()
def models() -> None:
    """Find, download, import, list and remove GGUF models."""


def features(record: ModelRecord) -> str:
    """``sees, tools, thinks``; "-" for a model that only chats."""
    return feature_words(record.capabilities()) or "-"


@models.command("list")
def models_list() -> None:
    """Installed models with size, quant, context length, fit on this machine and features
    (sees, tools, thinks)."""
    memory = sample_memory()
    paths = app_paths().ensure()
    presets = PresetStore(None, load_settings(paths.config_file).models)
    rows = [
        (
            r.name,
            format_bytes(r.size_bytes + r.mmproj_size_bytes),
            r.quant_type,
            str(r.context_length),
            preset_fit(r, memory, presets).verdict.value,
            features(r),
        )
        for r in library().records()
    ]
    print_table(("NAME", "SIZE", "QUANT", "CTX", "FIT", "FEATURES"), rows)


@models.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="Name in the library (default: from the file name).")
@click.option("--link", is_flag=True, help="Reference the files where they are instead of copying.")
@click.option(
    "--mmproj",
    type=click.Path(path_type=Path),
    help="The model's vision projector (an mmproj-*.gguf, a clip GGUF), copied or referenced "
    "like the model; the model then takes images.",
)
def models_import(path: Path, name: str | None, link: bool, mmproj: Path | None) -> None:
    """Add an existing GGUF file (or the first shard of a split one) to the library, with its
    vision projector if it has one (--mmproj)."""
    record = library().import_file(path, name=name, copy=not link, mmproj=mmproj)
    how = "referenced" if link else "copied"
    size = format_bytes(record.size_bytes + record.mmproj_size_bytes)
    sees = f", sees images through {Path(record.mmproj).name}" if record.mmproj else ""
    click.echo(f"Imported {record.name} ({size}, {how}{sees}).")


@models.command("rm")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def models_rm(name: str, yes: bool) -> None:
    """Remove a model from the library, its vision projector with it (referenced files
    themselves are kept)."""
    lib = library()
    record = lib.get(name)
    if not yes:
        click.confirm(f"Remove {record.name} ({format_bytes(record.size_bytes)})?", abort=True)
    client = DaemonClient.connect_if_running(app_paths())
    if client is not None:  # the daemon unloads it first if it is loaded
        with client:
            client.remove_model(record.name)
    else:
        lib.remove(record.name)
    click.echo(f"Removed {record.name}.")


@models.command("fit")
@click.argument("model")
@click.option("--ctx", type=int, help="Context length to plan for (default: up to 4096).")
@click.option("--parallel", type=int, default=1, show_default=True, help="Request slots.")
def models_fit(model: str, ctx: int | None, parallel: int) -> None:
    """Memory a model needs here (weights + KV cache + compute) and the verdict."""
    lib = library()
    path = Path(model).expanduser()
    if path.is_file():
        header, _, size = describe_file(path)
        refuse_projector_as_model(header, path.name)
        record = ModelRecord.from_header(model_name_for(path.name), [str(path)], header, size)
    else:
        record = lib.get(model)
    memory = sample_memory()
    fit = fit_of(record, memory, ctx, parallel)
    click.echo(f"{record.name}: {record.architecture}, {record.quant_type}, {record.layers} layers")
    click.echo(f"  weights     {format_bytes(fit.weights_bytes)}")
    click.echo(
        f"  KV cache    {format_bytes(fit.kv_cache_bytes)}"
        f"  ({fit.context_length} tokens x {fit.parallel} slot(s), f16)"
    )
    click.echo(f"  compute     {format_bytes(fit.compute_bytes)}")
    if fit.projector_bytes:
        click.echo(
            f"  projector   {format_bytes(fit.projector_bytes)}"
            f"  ({format_bytes(record.mmproj_size_bytes)} file + "
            f"{format_bytes(IMAGE_ENCODING_BYTES)} to encode images)"
        )
    click.echo(f"  total       {format_bytes(fit.total_bytes)}")
    click.echo(f"  free RAM    {format_bytes(memory.ram_free_bytes)}")
    for gpu in memory.gpus:
        click.echo(f"  GPU {gpu.index}       {gpu.name}: {format_bytes(gpu.free_bytes)} free")
    click.echo(f"Verdict: {fit.describe()}")


@models.command("search")
@click.argument("query")
@click.option("--limit", type=int, default=20, show_default=True)
def models_search(query: str, limit: int) -> None:
    """Search the Hugging Face Hub for GGUF repos."""
    from localserve.hub.catalog import search_repos

    rows = [
        (
            r.repo_id,
            str(r.downloads),
            str(r.likes),
            r.updated.date().isoformat() if r.updated else "-",
        )
        for r in search_repos(query, limit, hub_settings().timeout_s)
    ]
    if not rows:
        click.echo(f"No GGUF repos match '{query}'.")
        return
    print_table(("REPO", "DOWNLOADS", "LIKES", "UPDATED"), rows)


@models.command("files")
@click.argument("repo")
@click.option("--ctx", type=int, help="Context length to plan for (default: up to 4096).")
def models_files(repo: str, ctx: int | None) -> None:
    """A repo's GGUF quants with their size and fit on this machine.

    The fit is estimated from the model's real shape: the GGUF header is read from the start
    of the smallest file (a few MB), not the whole download. For a vision model, the MMPROJ
    column names the projector a pull brings with each quant (counted in SIZE and NEEDS).
    """
    from localserve.hub.quants import quant_choices

    timeout = hub_settings().timeout_s
    choices = quant_choices(repo, sample_memory(), gpu_offload_supported(), ctx, timeout)
    if not choices:
        click.echo(f"'{repo}' has no GGUF files.")
        return
    vision = any(choice.model.mmproj for choice in choices)
    rows = []
    for choice in choices:
        model, fit = choice.model, choice.fit
        shards = f" ({len(model.files)} shards)" if len(model.files) > 1 else ""
        needs = format_bytes(fit.total_bytes) if fit else "?"
        verdict = fit.describe() if fit else "unknown"
        row = [model.quant, model.first_file + shards, format_bytes(model.size), needs, verdict]
        if vision:
            row.append(model.mmproj.basename if model.mmproj else "-")
        rows.append(row)
    print_table(("QUANT", "FILE", "SIZE", "NEEDS", "FIT", *(["MMPROJ"] if vision else [])), rows)
    if choices[0].problem:
        click.echo(f"No fit estimate: {choices[0].problem}", err=True)


@models.command("pull")
@click.argument("spec", metavar="REPO[:QUANT|:FILE]")
@click.option("--name", help="Name in the library (default: from the file name).")
@click.option(
    "--no-mmproj",
    is_flag=True,
    help="Skip the vision projector of a vision model's repo (the model then takes no images).",
)
def models_pull(spec: str, name: str | None, no_mmproj: bool) -> None:
    """Download a model from the Hub: resumable, sha256-verified.

    When the repo holds vision projectors (mmproj-*.gguf), the one matching the model comes
    too: the model's own precision, else F16, BF16, F32, Q8_0, whichever fits memory first.

    With the daemon running, the download runs there (it survives this terminal, and a second
    pull of the same file joins it); otherwise, and with --no-mmproj, in this process.
    """
    client = None if no_mmproj else DaemonClient.connect_if_running(app_paths())
    if client is not None:
        with client:
            pull_through_daemon(client, spec, name)
        return
    from localserve.hub.catalog import choose_model, parse_pull_spec, repo_models
    from localserve.hub.client import HUB
    from localserve.hub.download import PullCancelled, PullProgress, pull

    options = hub_settings()
    repo, selector = parse_pull_spec(spec)
    models_found = repo_models(repo, timeout_s=options.timeout_s)
    remote = choose_model(repo, selector, models_found, mmproj=not no_mmproj)
    projector = f" and its projector {remote.mmproj.basename}" if remote.mmproj else ""
    click.echo(f"Pulling {remote.first_file}{projector} ({format_bytes(remote.size)}) from {repo}")
    bar = ProgressLine()

    def show(progress: PullProgress) -> None:
        waiting = progress.waiting.describe(HUB) if progress.waiting else None
        bar.show(
            progress.done_bytes, progress.total_bytes, progress.rate, progress.eta_seconds, waiting
        )

    try:
        record = pull(
            remote,
            library(),
            name=name,
            on_progress=show,
            cancel=threading.Event(),
            network_wait_s=options.network_wait_s,
        )
    except (KeyboardInterrupt, PullCancelled):
        click.echo(f"\n{CANCELLED_LINE}", err=True)
        raise SystemExit(130) from None
    except LocalserveError:
        bar.end()
        raise
    bar.end()
    sees = ", sees images" if record.sees else ""
    click.echo(f"Installed {record.name} (sha256 verified{sees}).")


def pull_through_daemon(client: DaemonClient, spec: str, name: str | None) -> None:
    started = client.start_pull(spec, name)
    joined = " (joining the download already running)" if started.joined else ""
    click.echo(
        f"Pulling {started.files[0]} ({format_bytes(started.total_bytes)}) from "
        f"{started.repo_id} in the daemon{joined}"
    )
    bar = ProgressLine()
    job: PullSnapshot = started
    try:
        for job in client.pull_events(started.id):
            bar.show(
                job.done_bytes,
                job.total_bytes,
                job.bytes_per_second,
                job.eta_seconds,
                job.waiting_reason,
            )
    except KeyboardInterrupt:
        client.cancel_pull(started.id)
        click.echo(f"\n{CANCELLED_LINE}", err=True)
        raise SystemExit(130) from None
    bar.end()
    if job.state is PullState.DONE:
        click.echo(f"Installed {job.model} (sha256 verified).")
    elif job.state is PullState.CANCELLED:
        click.echo("The download was cancelled; pull again to resume.", err=True)
        raise SystemExit(130)
    else:
        raise LocalserveError(job.error or "The download failed.")


class ProgressLine:
    """One self-rewriting terminal line: bytes done, rate, ETA (at most 4 updates a second),
    or why the download waits for the network."""

    def __init__(self) -> None:
        self._last = 0.0
        self._waiting: str | None = None
        self._drawn = False

    def show(
        self, done: int, total: int, rate: float, eta: float | None, waiting: str | None = None
    ) -> None:
        now = time.monotonic()
        if waiting != self._waiting:  # the network went or came back: say so at once
            self._waiting, self._last = waiting, 0.0
        if now - self._last < 0.25 and done < total:
            return
        self._last, self._drawn = now, True
        amount = f"{format_bytes(done)} / {format_bytes(total)}"
        if waiting is not None:
            line = f"  {amount}  waiting for the network: {waiting} Ctrl-C stops (kept)."
        else:
            line = (
                f"  {amount}  {format_bytes(rate)}/s"
                f"  ETA {f'{eta:.0f} s' if eta is not None else '-'}"
            )
        click.echo(f"\r\x1b[K{line}" if sys.stdout.isatty() else f"\r{line}   ", nl=False)

    def end(self) -> None:
        """Close the line before anything else is printed."""
        if self._drawn:
            click.echo("")
            self._drawn = False


@models.command("set")
@click.argument("name")
@click.argument("assignments", nargs=-1, metavar="[KEY=VALUE]...")
def models_set(name: str, assignments: tuple[str, ...]) -> None:
    """Show or change a model's own settings (its preset): ctx, gpu_layers, threads, parallel,
    flash_attention, cache_type_k, cache_type_v, chat_template (a template, or @FILE),
    keep_alive, temperature, top_p, top_k, min_p, repeat_penalty, stop (comma-separated),
    system. KEY= removes a key. They override the global settings for this model; a
    request's own fields override them. Written to config.toml as [models."NAME"]."""
    values = parse_assignments(list(assignments))
    template = values.get("chat_template")
    if isinstance(template, str) and template.startswith("@"):
        values["chat_template"] = read_template(Path(template[1:]))
    paths = app_paths()
    client = DaemonClient.connect_if_running(paths)
    if client is not None:  # the daemon writes config.toml and applies it
        with client:
            answer = client.change_preset(name, values) if values else client.model_preset(name)
        shown, changed, applies = answer.values, answer.changed, answer.applies
    else:
        model = library().get(name).name if name != STARTER_MODEL_ID else name
        settings = load_settings(paths.config_file)
        store = PresetStore(paths.config_file, settings.models)
        preset, keys = store.update(model, values) if values else (store.get(model), set())
        shown = preset.values() if preset else {}
        changed, applies = sorted(keys), "The next time it loads, it uses them."
    if not shown:
        click.echo(f"{name} has no settings of its own; it uses the global ones.")
    for key, value in shown.items():
        text = f"{len(value)} characters" if key == "chat_template" else json.dumps(value)
        click.echo(f"{key} = {text}")
    if changed:
        click.echo(f"Changed: {', '.join(changed)}. {applies}")


def read_template(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LocalserveError(f"Cannot read the template {path}: {exc.strerror or exc}") from exc


@models.command("load")
@click.argument("name")
def models_load(name: str) -> None:
    """Load a model in the running daemon now (requests naming it also load it)."""
    with DaemonClient.connect(app_paths(), timeout=600.0) as client:
        status = client.load_model(name)
    click.echo(f"{status.model_id} is {status.state}.")


@models.command("unload")
@click.argument("name")
def models_unload(name: str) -> None:
    """Unload a model from the running daemon, giving its memory back."""
    with DaemonClient.connect(app_paths()) as client:
        result = client.unload_model(name)
    click.echo(f"Unloaded {name}." if result.unloaded else f"{name} was not loaded.")


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo(
            "  ".join(
                str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )
