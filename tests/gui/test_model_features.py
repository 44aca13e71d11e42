"""The Models window says what an installed model can do beyond chat."""

from __future__ import annotations

from localserve.api.control import FitSummary, LibraryModel
from localserve.gui.windows.models import features


def installed(capabilities: list[str]) -> LibraryModel:
    fit = FitSummary.model_validate(
        {
            "verdict": "cpu",
            "description": "fits in RAM",
            "total_bytes": 1,
            "gpu_layers": 0,
            "context_length": 4096,
        }
    )
    return LibraryModel(
        name="m",
        size_bytes=1,
        architecture="qwen3",
        parameter_count=1,
        quant_type="Q4_K_M",
        context_length=4096,
        has_chat_template=True,
        supports_fim=False,
        capabilities=capabilities,
        source_repo=None,
        default=False,
        state="unloaded",
        fit=fit,
    )


def test_the_features_column_names_thinking_and_tools() -> None:
    assert features(installed(["completion", "tools", "thinking"])) == "tools, thinks"
    assert features(installed(["completion", "insert"])) == "code completion"
    assert features(installed(["completion"])) == ""
    assert features(installed(["completion", "vision", "tools"])) == "sees, tools"
