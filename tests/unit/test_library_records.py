"""Library records keep up with what newer versions read from a model's template, and record
a vision model's projector."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from localserve.errors import InvalidModelFileError
from localserve.hardware.memory import MemorySnapshot
from localserve.hub.fit import IMAGE_ENCODING_BYTES, estimate_fit
from localserve.hub.library import RECORD_NAME, Library
from localserve.hub.resolve import resolve_model
from tests.helpers.model_files import templated_starter, tiny_model, tiny_projector

MEMORY = MemorySnapshot(ram_total_bytes=16 * 2**30, ram_free_bytes=8 * 2**30)


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


def vision_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return (
        tiny_model(folder / "Tiny-VL-F16.gguf"),
        tiny_projector(folder / "mmproj-Tiny-VL-F16.gguf", projector_type="gemma3"),
    )


def test_an_old_record_without_a_projector_reads_as_before(tmp_path: Path) -> None:
    model, _ = vision_files(tmp_path / "src")
    library = Library(tmp_path / "models")
    library.import_file(model, name="old")
    record_file = library.folder("old") / RECORD_NAME
    old = json.loads(record_file.read_text())
    for key in [key for key in old if key.startswith("mmproj")]:
        del old[key]  # as written before vision models
    record_file.write_text(json.dumps(old))

    found = library.get("old")
    assert found.mmproj is None and not found.sees and "vision" not in found.capabilities()
    assert library.mmproj_path(found) is None
    assert resolve_model("old", library.models_dir).mmproj is None
    fit = estimate_fit(found, MEMORY)
    assert fit.projector_bytes == 0
    assert json.loads(record_file.read_text()) == old  # nothing to migrate: not rewritten


@pytest.mark.parametrize("copy", [True, False])
def test_an_imported_projector_is_recorded_found_and_removed(tmp_path: Path, copy: bool) -> None:
    model, projector = vision_files(tmp_path / "src")
    library = Library(tmp_path / "models")
    record = library.import_file(model, name="tiny-vl", copy=copy, mmproj=projector)

    found = library.get("tiny-vl")
    assert found == record
    assert found.mmproj_projector_type == "gemma3" and found.mmproj_vision_encoder
    assert found.mmproj_size_bytes == projector.stat().st_size
    assert found.capabilities()[-1] == "vision" and found.sees
    path = library.mmproj_path(found)
    assert path is not None and path.is_absolute()
    assert path.read_bytes() == projector.read_bytes()
    if copy:
        assert found.mmproj == projector.name and path.parent == library.folder("tiny-vl")
    else:
        assert found.mmproj == str(projector.resolve()) and path == projector.resolve()
    resolved = resolve_model("tiny-vl", library.models_dir)
    assert resolved.path == library.paths(found)[0] and resolved.mmproj == path

    # The fit counts the projector: its file and the image-encoding allowance.
    plain = dataclasses.replace(found, mmproj=None, mmproj_size_bytes=0)
    with_projector, without = estimate_fit(found, MEMORY), estimate_fit(plain, MEMORY)
    assert with_projector.projector_bytes == projector.stat().st_size + IMAGE_ENCODING_BYTES
    assert with_projector.total_bytes - without.total_bytes == with_projector.projector_bytes

    library.remove("tiny-vl")
    assert not library.folder("tiny-vl").exists() and library.find("tiny-vl") is None
    assert projector.exists() and model.exists()  # the user's own files are never deleted


def test_a_projector_without_a_vision_encoder_does_not_see(tmp_path: Path) -> None:
    model, _ = vision_files(tmp_path / "src")
    audio = tiny_projector(tmp_path / "src" / "mmproj-audio.gguf", vision_encoder=False)
    record = Library(tmp_path / "models").import_file(model, mmproj=audio)
    assert record.mmproj == audio.name and not record.sees
    assert "vision" not in record.capabilities()


def test_import_refuses_a_projector_that_is_not_one_and_a_model_that_is_one(
    tmp_path: Path,
) -> None:
    model, projector = vision_files(tmp_path / "src")
    library = Library(tmp_path / "models")
    with pytest.raises(
        InvalidModelFileError, match=r"general\.architecture is 'llama', not 'clip'"
    ):
        library.import_file(model, name="a", mmproj=tmp_path / "src" / "Tiny-VL-F16.gguf")
    with pytest.raises(InvalidModelFileError, match=r"is a vision projector .* not a model"):
        library.import_file(projector, name="b")
    assert [r.name for r in library.records() if r.name in {"a", "b"}] == []
    assert not library.folder("a").exists() and not library.folder("b").exists()


def test_a_projector_named_like_the_model_gets_a_name_of_its_own(tmp_path: Path) -> None:
    model, _ = vision_files(tmp_path / "src")
    (tmp_path / "other").mkdir()
    projector = tiny_projector(tmp_path / "other" / model.name)
    library = Library(tmp_path / "models")
    record = library.import_file(model, mmproj=projector)
    assert record.files == [model.name] and record.mmproj == f"mmproj-{model.name}"
    assert library.paths(record)[0].read_bytes() == model.read_bytes()
    mmproj = library.mmproj_path(record)
    assert mmproj is not None and mmproj.read_bytes() == projector.read_bytes()


def test_the_starter_record_is_kept_until_its_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from localserve.hub import library as library_module
    from tests.helpers.model_files import starter_path

    kept = tmp_path / "starter-model.json"
    starter = tmp_path / "starter.gguf"
    starter.symlink_to(starter_path())  # a path of its own: no other test's cached record
    monkeypatch.setattr(library_module, "starter_model_path", lambda: starter)
    made = Library(tmp_path / "models", kept).starter_record()
    assert made is not None and made.quant_type == "Q4_1" and made.reference
    assert json.loads(kept.read_text())["record"]["name"] == made.name

    # Another launch (a new process: the in-memory copy is gone) reads the kept record.
    library_module._starter_record_data.cache_clear()

    def header_read(path: Path) -> None:
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(library_module, "describe_file", header_read)
    again = Library(tmp_path / "models", kept).starter_record()
    assert again == made
    again.files.append("changed")  # a caller's copy: the kept record stays as it was
    assert Library(tmp_path / "models", kept).find("starter") == made

    # A different file (a new package version): the record is made again, not trusted.
    library_module._starter_record_data.cache_clear()
    data = json.loads(kept.read_text())
    data["identity"][1] += 1
    kept.write_text(json.dumps(data))
    with pytest.raises(AssertionError, match="read again"):
        Library(tmp_path / "models", kept).starter_record()
