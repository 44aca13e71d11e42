"""The pre-load header check: a child process with a time and an address-space limit."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from localserve.errors import InvalidModelFileError
from localserve.hub import gguf_check
from localserve.hub.gguf_check import check_model_file
from tests.helpers.model_files import starter_path

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux")


def gguf_with_template(path: Path, template_bytes: int) -> Path:
    """A tensor-less GGUF whose chat template is ``template_bytes`` long."""

    def text(value: bytes) -> bytes:
        return struct.pack("<Q", len(value)) + value

    path.write_bytes(
        b"GGUF"
        + struct.pack("<IQQ", 3, 0, 2)
        + text(b"general.architecture")
        + struct.pack("<I", 8)
        + text(b"llama")
        + text(b"tokenizer.chat_template")
        + struct.pack("<I", 8)
        + text(b"x" * template_bytes)
    )
    return path


def test_a_sound_file_passes_once_and_is_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    check_model_file(starter_path())

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("checked again")

    monkeypatch.setattr(gguf_check.subprocess, "run", no_child)
    check_model_file(starter_path())  # same size and mtime: no second child


def test_the_childs_reason_comes_back(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(InvalidModelFileError, match=r"bad\.gguf is not a valid GGUF file"):
        check_model_file(bad)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(starter_path().read_bytes()[:-1])
    with pytest.raises(InvalidModelFileError, match="runs 1 bytes past the end of the file"):
        check_model_file(cut)
    with pytest.raises(InvalidModelFileError, match="Cannot read"):
        check_model_file(tmp_path / "missing.gguf")


@linux_only
def test_a_header_that_needs_too_much_memory_is_refused(tmp_path: Path) -> None:
    # A 15 MiB template is within the reader's limits and fine with the default allowance;
    # held to 40 MiB of address space, the child runs out and says so.
    with pytest.raises(InvalidModelFileError, match="needs too much memory"):
        check_model_file(
            gguf_with_template(tmp_path / "big.gguf", 15 * 2**20), memory_bytes=40 << 20
        )
    check_model_file(gguf_with_template(tmp_path / "big2.gguf", 15 * 2**20))
    # A child that cannot even start is a refusal too, never a pass.
    with pytest.raises(InvalidModelFileError, match="ran out of memory or crashed"):
        check_model_file(gguf_with_template(tmp_path / "small.gguf", 10), memory_bytes=1 << 20)


def test_a_check_that_takes_too_long_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidModelFileError, match="took over"):
        check_model_file(gguf_with_template(tmp_path / "slow.gguf", 10), timeout=0.001)


def test_a_pass_is_kept_in_the_verdicts_file_for_later_launches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(starter_path().read_bytes())
    verdicts = tmp_path / "model-checks.json"
    check_model_file(model, verdicts_file=verdicts)
    assert len(json.loads(verdicts.read_text())["passed"]) == 1

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("checked again")

    monkeypatch.setattr(gguf_check, "_passed", set())  # a later launch: nothing in memory
    monkeypatch.setattr(gguf_check.subprocess, "run", no_child)
    check_model_file(model, verdicts_file=verdicts)

    # The same path with other bytes is a new file: checked again, and refused.
    monkeypatch.undo()
    model.write_bytes(b"GGUF" + b"\xff" * 64)
    with pytest.raises(InvalidModelFileError, match="not a valid GGUF file"):
        check_model_file(model, verdicts_file=verdicts)
    assert len(json.loads(verdicts.read_text())["passed"]) == 1


def test_a_failed_verdict_is_never_kept(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 64)
    verdicts = tmp_path / "model-checks.json"
    for _ in range(2):  # refused both times: no verdict was remembered
        with pytest.raises(InvalidModelFileError):
            check_model_file(bad, verdicts_file=verdicts)
    assert not verdicts.exists()


def test_a_header_read_in_this_process_needs_no_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first launch reads the starter's header itself, to make its library record; the
    check then passes without a child, and the verdict is kept for later launches."""
    from localserve.hub import library

    monkeypatch.setattr(gguf_check, "_passed", set())
    monkeypatch.setattr(gguf_check, "_read_in_process", set())
    library._starter_record_data.cache_clear()  # made afresh below, as on a first launch
    monkeypatch.setattr(library, "starter_model_path", starter_path)
    verdicts = tmp_path / "model-checks.json"

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("a child checked it")

    monkeypatch.setattr(gguf_check.subprocess, "run", no_child)
    with pytest.raises(AssertionError, match="a child checked it"):
        check_model_file(starter_path(), verdicts_file=verdicts)  # not read here yet

    assert library.Library(tmp_path / "models", tmp_path / "starter.json").starter_record()
    check_model_file(starter_path(), verdicts_file=verdicts)
    assert len(json.loads(verdicts.read_text())["passed"]) == 1
    library._starter_record_data.cache_clear()
