"""``localserve models ...``: the model library from the command line (thin over ``hub/``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import click

from localserve.errors import DownloadError
from localserve.hardware.memory import MemorySnapshot, sample_memory
from localserve.hub.fit import HEADROOM, FitEstimate, estimate_fit
from localserve.hub.library import Library, ModelRecord, describe_file, format_bytes, model_name_for
from localserve.paths import app_paths


def library() -> Library:
    return Library(app_paths().ensure().models_dir)


def gpu_offload_supported() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def fit_of(
    record: ModelRecord, memory: MemorySnapshot, ctx: int | None, parallel: int = 1
) -> FitEstimate:
    return estimate_fit(record, memory, ctx, parallel, gpu_offload_supported())


@click.group()
def models() -> None:
    """Find, download, import, list and remove GGUF models."""


@models.command("list")
def models_list() -> None:
    """Installed models with size, quant, context length and fit on this machine."""
    memory = sample_memory()
    rows = [
        (
            r.name,
            format_bytes(r.size_bytes),
            r.quant_type,
            str(r.context_length),
            fit_of(r, memory, None).verdict.value,
        )
        for r in library().records()
    ]
    print_table(("NAME", "SIZE", "QUANT", "CTX", "FIT"), rows)


@models.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", help="Name in the library (default: from the file name).")
@click.option("--link", is_flag=True, help="Reference the file where it is instead of copying.")
def models_import(path: Path, name: str | None, link: bool) -> None:
    """Add an existing GGUF file (or the first shard of a split one) to the library."""
    record = library().import_file(path, name=name, copy=not link)
    how = "referenced" if link else "copied"
    click.echo(f"Imported {record.name} ({format_bytes(record.size_bytes)}, {how}).")


@models.command("rm")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def models_rm(name: str, yes: bool) -> None:
    """Remove a model from the library (a referenced file itself is kept)."""
    lib = library()
    record = lib.get(name)
    if not yes:
        click.confirm(f"Remove {record.name} ({format_bytes(record.size_bytes)})?", abort=True)
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
        for r in search_repos(query, limit)
    ]
    if not rows:
        click.echo(f"No GGUF repos match '{query}'.")
        return
    print_table(("REPO", "DOWNLOADS", "LIKES", "UPDATED"), rows)


@models.command("files")
@click.argument("repo")
def models_files(repo: str) -> None:
    """A repo's GGUF quants with their size and a rough fit verdict for this machine."""
    from localserve.hub.catalog import repo_models

    memory = sample_memory()
    budget = max([g.free_bytes for g in memory.gpus] + [memory.ram_free_bytes])
    rows = []
    for model in repo_models(repo):
        # Before download only sizes are known: weights plus ~20% for cache and buffers.
        need = model.size * 1.2
        verdict = "fits" if need <= budget * HEADROOM else "too large"
        shards = f" ({len(model.files)} shards)" if len(model.files) > 1 else ""
        rows.append((model.quant, model.first_file + shards, format_bytes(model.size), verdict))
    print_table(("QUANT", "FILE", "SIZE", "FIT (approx.)"), rows)


@models.command("pull")
@click.argument("spec", metavar="REPO[:QUANT|:FILE]")
@click.option("--name", help="Name in the library (default: from the file name).")
def models_pull(spec: str, name: str | None) -> None:
    """Download a model from the Hub: resumable, sha256-verified."""
    from localserve.hub.catalog import choose_model, repo_models
    from localserve.hub.download import PullCancelled, PullProgress, pull

    repo, _, selector = spec.partition(":")
    remote = choose_model(repo, selector or None, repo_models(repo))
    click.echo(f"Pulling {remote.first_file} ({format_bytes(remote.size)}) from {repo}")
    last = [0.0]

    def show(progress: PullProgress) -> None:
        now = time.monotonic()
        if now - last[0] < 0.25 and progress.done_bytes < progress.total_bytes:
            return
        last[0] = now
        eta = progress.eta_seconds
        click.echo(
            f"\r  {format_bytes(progress.done_bytes)} / {format_bytes(progress.total_bytes)}"
            f"  {format_bytes(progress.rate)}/s"
            f"  ETA {f'{eta:.0f} s' if eta is not None else '-'}   ",
            nl=False,
        )

    cancel = threading.Event()
    try:
        record = pull(remote, library(), name=name, on_progress=show, cancel=cancel)
    except (KeyboardInterrupt, PullCancelled):
        click.echo("\nCancelled. Run the same command again to resume.", err=True)
        raise SystemExit(130) from None
    except DownloadError:
        click.echo("")
        raise
    click.echo(f"\nInstalled {record.name} (sha256 verified).")


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo(
            "  ".join(
                str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )
