"""Which commands get a runner started before the CLI is imported, and what it is told of the
last launch's first model (daemon/head_start.py, api/anticipation.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from localserve.api.anticipation import (
    GUESS_FIRST,
    STARTER,
    anticipation_line,
    first_launch_guess,
    parse_anticipation,
)
from localserve.daemon.head_start import (
    ANTICIPATION_MAX_BYTES,
    FirstRunnerMemory,
    start_first_runner,
)


@pytest.mark.parametrize(
    "argv",
    [[], ["status"], ["models", "list"], ["serve", "--help"], ["serve", "-h"], ["tray"]],
)
def test_only_serve_gets_a_head_start(argv: list[str], isolated_home: Path) -> None:
    assert start_first_runner(argv) is None
    assert not (isolated_home / "logs").exists()


def test_serve_starts_a_runner_waiting_for_its_handshake(isolated_home: Path) -> None:
    runner = start_first_runner(["serve", "--port", "0"])
    assert runner is not None and runner.stdin is not None
    try:
        assert runner.poll() is None
        assert (isolated_home / "logs" / "spare-runner.log").exists()
    finally:
        runner.stdin.close()  # no handshake: end of input, and it exits by itself
        assert runner.wait(60) == 0
        assert runner.stdout is not None
        runner.stdout.close()


def kept_model(tmp_path: Path) -> tuple[FirstRunnerMemory, Path]:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    return FirstRunnerMemory(tmp_path / "data" / "first-runner.json"), model


def handshake_of(model: Path, **fields: object) -> dict[str, object]:
    return {"model_path": str(model), "model_id": "m", **fields}


def test_the_first_runner_is_recalled_for_the_same_arguments_and_files(tmp_path: Path) -> None:
    memory, model = kept_model(tmp_path)
    args = ["serve", "--port", "0"]
    assert memory.recall(args) is None  # nothing kept yet
    memory.remember(args, handshake_of(model), "build-1", [str(model)])
    line = memory.recall(args)
    assert line is not None and line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_anticipation(line) == (handshake_of(model), "build-1")
    assert memory.recall(["serve", "--port", "0", "--ctx", "2048"]) is None


def test_a_changed_or_missing_file_is_not_anticipated(tmp_path: Path) -> None:
    memory, model = kept_model(tmp_path)
    args = ["serve"]
    memory.remember(args, handshake_of(model), "b", [str(model)])
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert memory.recall(args) is None
    memory.remember(args, handshake_of(model), "b", [str(model)])
    assert memory.recall(args) is not None
    model.write_bytes(b"GGUF" + bytes(61))  # same time, perhaps, another size
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert memory.recall(args) is None
    model.unlink()
    assert memory.recall(args) is None


def test_a_guess_too_long_for_a_pipe_or_malformed_is_not_sent(tmp_path: Path) -> None:
    memory, model = kept_model(tmp_path)
    long_template = "x" * ANTICIPATION_MAX_BYTES
    memory.remember(["serve"], handshake_of(model, chat_template=long_template), "b", [])
    assert memory.recall(["serve"]) is None
    for text in ("{", "[]", '{"args": ["serve"]}', '{"args": ["serve"], "files": 3}'):
        memory.path.write_text(text)
        assert memory.recall(["serve"]) is None
    memory.forget()
    assert not memory.path.exists()
    memory.forget()  # nothing to forget: no error


def test_remembering_the_same_again_leaves_the_file_alone(tmp_path: Path) -> None:
    memory, model = kept_model(tmp_path)
    memory.remember(["serve"], handshake_of(model), "b", [str(model)])
    before = memory.path.stat().st_mtime_ns
    inode = memory.path.stat().st_ino
    memory.remember(["serve"], handshake_of(model), "b", [str(model)])
    assert (memory.path.stat().st_mtime_ns, memory.path.stat().st_ino) == (before, inode)
    assert memory.path.stat().st_mode & 0o077 == 0  # written as the other private files


def test_only_anticipation_lines_parse_as_guesses() -> None:
    line = anticipation_line({"model_path": "/m.gguf"}, "b1")
    assert parse_anticipation(line) == ({"model_path": "/m.gguf"}, "b1")
    handshake = json.dumps({"model_path": "/m.gguf", "token": "t"}).encode() + b"\n"
    for other in (handshake, b"", b"not json\n", b"[1]\n", b'{"anticipate": 3}\n'):
        assert parse_anticipation(other) is None
    assert parse_anticipation(b'{"anticipate": "other"}\n') is None
    assert parse_anticipation(anticipation_line(STARTER)) == (STARTER, "")


STARTER_GUESS = anticipation_line(STARTER)


@pytest.mark.parametrize(
    ("args", "environment", "guess"),
    [
        ([], {}, STARTER_GUESS),
        (["--port", "0", "--threads", "2", "--ctx", "2048"], {}, STARTER_GUESS),
        ([], {"LOCALSERVE_PORT": "0", "LOCALSERVE_CTX": "2048"}, STARTER_GUESS),
        (["--model", "qwen"], {}, None),
        (["--model=qwen"], {}, None),
        (["-m", "qwen"], {}, None),
        (["-mqwen"], {}, None),
        (["--gpu-layers", "0"], {}, None),
        ([], {"LOCALSERVE_MODEL": "qwen"}, None),
        ([], {"localserve_weight_repack": "off"}, None),  # the variables' names in any case
        ([], {"LOCALSERVE_CPU_VARIANT": "haswell"}, None),
        ([], {"LOCALSERVE_LOAD_AHEAD": "false"}, None),
    ],
)
def test_a_first_launch_guesses_the_starter_unless_told_otherwise(
    args: list[str], environment: dict[str, str], guess: bytes | None
) -> None:
    assert first_launch_guess(args, environment) == guess


def test_only_a_home_without_settings_or_verdicts_gets_the_starter_guess(
    isolated_home: Path,
) -> None:
    """A first launch's runner is told to expect the starter (its ``GUESS_FIRST`` argument);
    not where a config file may name another model, or where an engine check has been kept
    (a launch after the first, whose handshake is recalled when its arguments match)."""

    def guessed() -> bool:
        runner = start_first_runner(["serve", "--port", "0"])
        assert runner is not None and runner.stdin is not None and runner.stdout is not None
        runner.stdin.close()
        assert runner.wait(60) == 0
        runner.stdout.close()
        return GUESS_FIRST in runner.args

    assert guessed()
    config = isolated_home / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("port = 0\n")
    assert not guessed()
    config.unlink()
    checks = isolated_home / "data" / "engine-checks.json"
    checks.parent.mkdir(parents=True, exist_ok=True)
    checks.write_text("{}")
    assert not guessed()
