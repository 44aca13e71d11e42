"""Turn what a user typed (``--model NAME|PATH``) into a model file and a stable model id."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from localserve.errors import ModelNotFoundError
from localserve.hub.library import Library, model_name_for
from localserve.hub.starter import STARTER_INSTALL_HINT, STARTER_MODEL_ID, starter_model_path

STARTER_ALIASES = {"starter", STARTER_MODEL_ID}


@dataclass(frozen=True)
class ResolvedModel:
    model_id: str
    path: Path
    mmproj: Path | None = None  # a vision model's projector (``Library.mmproj_path``)


def model_id_for(path: Path) -> str:
    """A URL- and CLI-friendly id from a file name, as the library names models.

    ``Qwen2.5-Coder.Q4_K_M.gguf`` -> ``qwen2.5-coder.q4_k_m``
    """
    return model_name_for(path.name)


def installed_models(models_dir: Path) -> dict[str, Path]:
    """Library models by name -> their (first) file; the starter is resolved on its own."""
    library = Library(models_dir)
    return {
        record.name: library.paths(record)[0]
        for record in library.records()
        if record.name != STARTER_MODEL_ID
    }


def starter_model() -> ResolvedModel:
    path = starter_model_path()
    if path is None:
        raise ModelNotFoundError(
            STARTER_MODEL_ID, hint=f"The starter model is not installed: {STARTER_INSTALL_HINT}"
        )
    return ResolvedModel(STARTER_MODEL_ID, path)


def resolve_model(spec: str | None, models_dir: Path) -> ResolvedModel:
    """Resolve a model name or path; None means the starter model."""
    if spec is None or spec.strip().lower() in STARTER_ALIASES:
        return starter_model()
    candidate = Path(spec).expanduser()
    if candidate.is_file():
        return ResolvedModel(model_id_for(candidate), candidate.resolve())
    library = Library(models_dir)
    wanted = spec.strip().lower()
    record = library.find(wanted)
    if record is not None and record.name != STARTER_MODEL_ID:
        return ResolvedModel(record.name, library.paths(record)[0], library.mmproj_path(record))
    installed = installed_models(models_dir)
    if wanted.endswith(".gguf") or "/" in spec or "\\" in spec:
        raise ModelNotFoundError(spec, hint="No such file.")
    available = sorted(installed) + ([STARTER_MODEL_ID] if starter_model_path() else [])
    raise ModelNotFoundError(spec, available)
