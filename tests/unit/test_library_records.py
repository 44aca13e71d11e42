"""Library records keep up with what newer versions read from a model's template."""

from __future__ import annotations

import json
from pathlib import Path

from localserve.hub.library import RECORD_NAME, Library
from tests.helpers.model_files import templated_starter


def test_an_old_record_learns_that_its_model_thinks(tmp_path: Path) -> None:
    model = templated_starter(tmp_path, "r1", "deepseek-r1-distill-qwen.jinja")
    library = Library(tmp_path / "models")
    record = library.import_file(model, name="r1", copy=False)
    assert record.thinks and "thinking" in record.capabilities()
    record_file = library.folder("r1") / RECORD_NAME
    old = json.loads(record_file.read_text())
    del old["thinks"]  # as written before the field existed
    record_file.write_text(json.dumps(old))

    found = library.find("r1")
    assert found is not None and found.thinks
    assert json.loads(record_file.read_text())["thinks"] is True  # saved again, once
    assert [r.thinks for r in library.records() if r.name == "r1"] == [True]
