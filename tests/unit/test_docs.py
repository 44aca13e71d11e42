from __future__ import annotations

from pathlib import Path

from localserve.config.settings import settings_reference

ROOT = Path(__file__).resolve().parents[2]


def test_settings_doc_is_generated_from_the_fields() -> None:
    assert (ROOT / "docs" / "settings.md").read_text() == settings_reference(), (
        "docs/settings.md is stale: regenerate it with "
        "python -c 'from localserve.config.settings import settings_reference as r; "
        'open("docs/settings.md", "w").write(r())\''
    )
