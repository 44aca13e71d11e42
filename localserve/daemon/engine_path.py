"""Which way runners use llama.cpp here: decided by the engine check, once, and kept.

Before a runner serves, ``choose_engine_path`` makes sure this llama.cpp build decodes this kind
of model on this CPU (``runner/engine_check.py`` in a short-lived child). It tries, in order:

1. the best CPU variant for this CPU (a portable build; a native build has one) with extra
   buffer types on (AMX tiles, repacked weights: llama.cpp's defaults);
2. the same variant with extra buffer types off (``llama-server --no-repack``);
3. the next lower variants, with them off (at most ``MAX_VARIANTS`` in all).

The first path whose child decodes is used. A child that dies of a signal condemns its path; a
child that fails otherwise (a bad file) or runs out of time says nothing about the CPU, and the
runner's own load reports the problem. Verdicts are kept in ``engine-checks.json``, keyed by
build, CPU features, quant type and GPU layers, so the check runs once, not at every load. A
runner that dies of a signal before its first decode charges the path it ran (``record_crash``),
so its restart is checked again without it. Settings ``weight_repack`` (auto/on/off) and
``cpu_variant`` (auto or a name) narrow the candidates.

The first start with no verdict (a fresh home, a new build or CPU) runs no child at all: its
runner gets the first candidate as a trial (``choose_engine_path(trial=True)``), runs the same
decodes once its model is loaded, and its pass becomes the verdict (``record_trial``). A child
costs 0.3 s of CPU and a second load of the model, on the way to the first answer. When that
runner crashes in its check, its restart is a trial of the next candidate, and so on
(``_trial_candidate``); children check only after a runner crashed on a checked path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localserve.api.engine import WeightRepack
from localserve.api.runner import EnginePath
from localserve.errors import ModelLoadError
from localserve.runner import llama_backends
from localserve.runner.engine_check import (
    CRASH_ENV,
    EVENT_FAILED,
    EVENT_OK,
    EVENT_VARIANTS,
    CheckPlan,
)
from localserve.security.secret_store import write_private_file

if TYPE_CHECKING:
    from filelock import FileLock

log = logging.getLogger(__name__)

MAX_VARIANTS = 4
CHECK_TIMEOUT_S = 180.0
CRASH_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGILL, signal.SIGBUS, signal.SIGFPE, signal.SIGABRT}
)


@dataclass(frozen=True)
class EngineChoice:
    """What the user allows (settings) and what the runner will load."""

    weight_repack: WeightRepack = "auto"
    cpu_variant: str = "auto"
    gpu_layers: int = 0  # llama.cpp's n_gpu_layers, resolved
    threads: int = 2


@dataclass
class CheckOutcome:
    path: tuple[str | None, bool]  # (variant, extra buffers) as run
    passed: bool = False
    crash: str | None = None  # the signal's name when the child died of one
    where: str = "the engine check"  # or a runner's own check (a trial path)
    problem: str | None = None  # any other failure, in words
    ranked: list[str] | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    log_tail: str = ""


def crash_signal(returncode: int | None) -> str | None:
    """The crash signal (SIGSEGV, SIGILL...) a child process died of, by name; None if it
    exited, or was stopped on purpose (SIGTERM, SIGKILL)."""
    if returncode is None or returncode >= 0:
        return None
    with contextlib.suppress(ValueError):
        if signal.Signals(-returncode) in CRASH_SIGNALS:
            return signal.Signals(-returncode).name
    return None


@functools.cache
def cpu_signature() -> str:
    """What distinguishes this CPU for llama.cpp's kernels: its model and feature flags."""
    if sys.platform.startswith("linux"):
        try:
            info = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            info = ""
        wanted = ("model name", "flags", "Features", "CPU implementer", "CPU part")
        lines = {}
        for line in info.splitlines():
            name, _, value = line.partition(":")
            if name.strip() in wanted and name.strip() not in lines:
                lines[name.strip()] = " ".join(sorted(value.split()))
        if lines:
            return "\n".join(f"{name}: {value}" for name, value in sorted(lines.items()))
    return f"{platform.machine()} {platform.processor()}"


def has_amx() -> bool:
    return "amx_tile" in cpu_signature()


def check_key(quant_type: str, choice: EngineChoice) -> str:
    """The identity of a verdict: the build, the CPU, the weights' type, how the model is split
    between GPU and CPU, the settings that narrow the choice, and the crash simulation (so a
    test's simulated verdict is never taken for a real one)."""
    parts = [
        llama_backends.build_id(),
        cpu_signature(),
        quant_type,
        str(choice.gpu_layers),
        choice.weight_repack,
        choice.cpu_variant,
        os.environ.get(CRASH_ENV, ""),
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:20]


def kernel_names(path: tuple[str | None, bool]) -> str:
    variant, extra = path
    if variant == "best":  # a portable build's variant, before a check ranks them
        kernels = "the best CPU kernels of this build"
    else:
        kernels = f"{variant} CPU kernels" if variant else "its CPU kernels"
    if extra:
        kernels += " with extra buffer types (AMX or repacked weights)"
    return kernels


class VerdictStore:
    """``engine-checks.json``: a verdict and the paths seen crashing, per check key."""

    def __init__(self, file: Path) -> None:
        self.file = file

    @functools.cached_property
    def lock(self) -> FileLock:
        """Held while checks run and verdicts are written (imported here: a cold start that
        only reads a verdict need not import filelock)."""
        from filelock import FileLock

        return FileLock(str(self.file) + ".lock")

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def entry(self, key: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        entry = (self.read() if data is None else data).get(key)
        return entry if isinstance(entry, dict) else {}

    def update(self, key: str, **values: Any) -> None:
        data = self.read()
        data[key] = {**self.entry(key, data), **values}
        self.file.parent.mkdir(parents=True, exist_ok=True)
        write_private_file(self.file, json.dumps(data, indent=1, sort_keys=True))

    def ranked(self, key: str) -> list[str] | None:
        """The CPU variants, best first, as a check child or a runner ranked them."""
        known = self.entry(key).get("ranked")
        return [str(name) for name in known] if isinstance(known, list) else None

    def crashed(self, key: str) -> set[tuple[str | None, bool]]:
        return {(variant, bool(extra)) for variant, extra in self.entry(key).get("crashed", [])}

    def record_crash(
        self,
        path: EnginePath,
        signal_name: str | None = None,
        ranked: list[str] | None = None,
    ) -> None:
        """A runner died of a signal before its first decode on ``path``: never use it again
        for that key, and check the next start anew. ``signal_name``: it died in its own
        engine check (a trial path), of that signal, which the next verdict's note says;
        ``ranked``: the CPU variants as that runner ranked them, for the next candidate."""
        if not path.check_key:
            return
        with self.lock:
            crashed = self.crashed(path.check_key) | {(path.cpu_variant, path.extra_buffers)}
            values: dict[str, Any] = {"crashed": sorted(crashed, key=str), "verdict": None}
            if signal_name is not None:
                causes = dict(self.entry(path.check_key).get("trial_crashes") or {})
                causes[_path_name((path.cpu_variant, path.extra_buffers))] = signal_name
                values["trial_crashes"] = causes
            if ranked:
                values["ranked"] = ranked
            self.update(path.check_key, **values)

    def trial_crashes(self, key: str) -> list[CheckOutcome]:
        """The crashes of runners checking a trial path, as check outcomes."""
        causes = self.entry(key).get("trial_crashes") or {}
        return [
            CheckOutcome(path=path, crash=str(causes[name]), where="a runner's own check")
            for path in sorted(self.crashed(key), key=str)
            if (name := _path_name(path)) in causes
        ]


def _path_name(path: tuple[str | None, bool]) -> str:
    variant, extra = path
    return f"{variant or 'native'}/{'extra' if extra else 'plain'}"


def run_check(plan: CheckPlan, timeout: float) -> CheckOutcome:
    """One engine check child, to its end."""
    outcome = CheckOutcome(path=(plan.cpu_variant, plan.extra_buffers))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "localserve.runner.engine_check"],
            input=plan.to_line(),
            capture_output=True,
            timeout=timeout,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # its last words survive a crash
        )
    except subprocess.TimeoutExpired:
        outcome.problem = f"the engine check did not finish within {timeout:.0f} s"
        return outcome
    stderr = result.stderr.decode("utf-8", errors="replace").splitlines()
    outcome.log_tail = "\n".join([line for line in stderr if line.strip()][-5:])
    for line in result.stdout.decode("utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("event") == EVENT_VARIANTS:
            outcome.ranked = [str(name) for name in event.get("ranked") or []]
        elif event.get("event") == EVENT_OK:
            outcome.facts = event
        elif event.get("event") == EVENT_FAILED:
            outcome.problem = str(event.get("message") or "the engine check failed")
    outcome.crash = crash_signal(result.returncode)
    if outcome.crash is None and result.returncode == 0 and outcome.facts:
        outcome.passed = True
        outcome.path = (outcome.facts.get("cpu_variant"), plan.extra_buffers)
    elif outcome.crash is None and outcome.problem is None:
        outcome.problem = f"the engine check ended with exit code {result.returncode}"
    return outcome


def _candidates(
    choice: EngineChoice, ranked: list[str] | None
) -> Iterator[tuple[str | None, bool]]:
    """Paths in the order they are tried (the module docstring)."""
    extras = {"auto": [True, False], "on": [True], "off": [False]}[choice.weight_repack]
    if not llama_backends.is_portable_build():
        variants: list[str | None] = [None]
    elif choice.cpu_variant != "auto":
        variants = [choice.cpu_variant]
    else:
        variants = list((ranked or ["best"])[:MAX_VARIANTS])
    for variant in variants:
        for extra in extras:
            yield variant, extra


def choose_engine_path(
    model_path: Path,
    quant_type: str,
    choice: EngineChoice,
    store: VerdictStore,
    timeout: float = CHECK_TIMEOUT_S,
    on_check: Callable[[], None] | None = None,
    trial: bool = False,
) -> EnginePath:
    """The path a runner for ``model_path`` should use; ModelLoadError when every candidate
    crashes. ``on_check`` is called when no verdict is known, before checks run.

    ``trial``: the caller's runner can check a path itself (``EnginePath.trial``). Then, for
    a key with no verdict, the first candidate not seen crashing comes back unchecked and no
    child runs (``_trial_candidate``): the usual first start is checked by its own runner,
    without a check child's 0.3 s of CPU and second load of the model. Should that runner
    crash, ``record_crash`` charges the path and the next call offers the next candidate."""
    key = check_key(quant_type, choice)
    known = _verdict(store, key)  # the usual case, read without waiting for the lock
    if known is not None:
        return known
    # A CPU variant named in the settings is checked in a child, which first asks whether this
    # CPU has its instructions: a runner would die of SIGILL.
    candidate = _trial_candidate(store, key, choice) if trial else None
    if candidate is not None:
        note = f"{kernel_names(candidate)}: checked by the runner as it loads"
        return EnginePath(*candidate, note, checked=False, check_key=key, trial=True)
    if on_check is not None:
        on_check()
    with store.lock:
        return _verdict(store, key) or _check_candidates(
            model_path, quant_type, choice, store, key, timeout
        )


def _trial_candidate(
    store: VerdictStore, key: str, choice: EngineChoice
) -> tuple[str | None, bool] | None:
    """The path a runner may check itself, or None when children must check.

    The first start tries the first candidate. After runners died in their own checks (AMX
    kernels on a Sapphire Rapids class Xeon kill every first start there), the next one gets
    the next candidate they did not crash on, as a check child would have, but without the
    child's second load of the model: a runner's death costs no more than a child's. That
    needs a portable build's variants as the runner ranked them (``record_crash``): "best"
    names none. Any other crash (a runner dying on a checked path) is checked in children."""
    if choice.cpu_variant != "auto":
        return None
    ranked = store.ranked(key)
    crashed = store.crashed(key)
    if crashed:
        trial_crashes = {outcome.path for outcome in store.trial_crashes(key)}
        unranked = ranked is None and llama_backends.is_portable_build()
        if unranked or crashed != trial_crashes:
            return None
    return next((path for path in _candidates(choice, ranked) if path not in crashed), None)


def record_trial(
    store: VerdictStore,
    path: EnginePath,
    quant_type: str,
    choice: EngineChoice,
    ranked: list[str] | None,
) -> EnginePath:
    """A runner on the trial ``path`` (its variant resolved, ``ranked`` as it reported them)
    passed its own check: that is the verdict, kept with the ranking as a check child's
    would be."""
    outcome = CheckOutcome(path=(path.cpu_variant, path.extra_buffers), passed=True)
    ranked = ranked or store.ranked(path.check_key)  # a runner told its variant ranks none
    note = _note(outcome, store.trial_crashes(path.check_key), ranked, choice, quant_type)
    verdict = EnginePath(path.cpu_variant, path.extra_buffers, note, checked=True)
    with store.lock:
        store.update(
            path.check_key,
            verdict=dataclasses.asdict(verdict),
            checked_at=time.time(),
            quant_type=quant_type,
            **({"ranked": ranked} if ranked else {}),
        )
    log.info("Engine check passed in the runner: %s", verdict.note)
    return dataclasses.replace(verdict, check_key=path.check_key)


def _verdict(store: VerdictStore, key: str) -> EnginePath | None:
    verdict = store.entry(key).get("verdict")
    if isinstance(verdict, dict):
        return dataclasses.replace(EnginePath(**verdict), check_key=key)
    return None


def _check_candidates(
    model_path: Path,
    quant_type: str,
    choice: EngineChoice,
    store: VerdictStore,
    key: str,
    timeout: float,
) -> EnginePath:
    crashed = store.crashed(key)
    ranked = store.ranked(key)
    tried: list[CheckOutcome] = store.trial_crashes(key)  # for the note: why not those
    started = time.monotonic()
    pending = list(_candidates(choice, ranked))
    while pending:
        path = pending.pop(0)
        if path in crashed:
            continue
        plan = CheckPlan(
            model_path=str(model_path),
            cpu_variant=path[0],
            extra_buffers=path[1],
            gpu_layers=choice.gpu_layers,
            threads=choice.threads,
        )
        outcome = run_check(plan, timeout)
        if ranked is None and outcome.ranked is not None:
            ranked = outcome.ranked
            if path[0] == "best" and ranked:
                outcome.path = path = (ranked[0], path[1])
            done = {candidate.path for candidate in tried} | {path}
            pending = [p for p in _candidates(choice, ranked) if p not in done]
            store.update(key, ranked=ranked)
            if path in crashed:
                continue  # "best" turned out to be a path a runner crashed on
        tried.append(outcome)
        if outcome.crash:
            crashed.add(path)
            log.warning(
                "Engine check: llama.cpp died of %s with %s on this CPU (%s weights); trying a "
                "safer path.%s",
                outcome.crash,
                kernel_names(path),
                quant_type,
                f" Its output ended:\n{outcome.log_tail}" if outcome.log_tail else "",
            )
            continue
        if not outcome.passed:
            # Not a verdict on the CPU: use the first candidate unverified, keep nothing.
            log.warning("Engine check inconclusive: %s", outcome.problem)
            return EnginePath(
                path[0] if path[0] != "best" else None,  # a native build's is None already
                path[1],
                f"not verified: {outcome.problem}",
                checked=False,
                check_key=key,
            )
        engine_path = EnginePath(
            cpu_variant=outcome.path[0],
            extra_buffers=outcome.path[1],
            note=_note(outcome, tried, ranked, choice, quant_type),
            checked=True,
        )
        store.update(
            key,
            verdict=dataclasses.asdict(engine_path),
            crashed=sorted(crashed, key=str),
            checked_at=time.time(),
            quant_type=quant_type,
        )
        log.info("Engine check passed in %.1f s: %s", time.monotonic() - started, engine_path.note)
        return dataclasses.replace(engine_path, check_key=key)
    store.update(key, crashed=sorted(crashed, key=str), verdict=None)
    crashes = "; ".join(f"{kernel_names(o.path)}: {o.crash}" for o in tried if o.crash)
    raise ModelLoadError(
        f"llama.cpp crashes on this CPU with this model's {quant_type} weights on every path "
        f"it was allowed ({crashes or 'each seen crashing before'}). " + _settings_hint(choice)
    )


def _settings_hint(choice: EngineChoice) -> str:
    if choice.weight_repack != "auto" or choice.cpu_variant != "auto":
        return "Set weight_repack and cpu_variant to 'auto' to let localserve try the others."
    return "Try another quant type of this model, or report the CPU model and this message."


def _note(
    outcome: CheckOutcome,
    tried: list[CheckOutcome],
    ranked: list[str] | None,
    choice: EngineChoice,
    quant_type: str,
) -> str:
    """Why this path, in a sentence."""
    variant, extra = outcome.path
    parts = []
    if variant:
        parts.append(f"{variant} CPU kernels")
        if ranked and variant == ranked[0]:
            parts[-1] += " (the best of this build for this CPU)"
    else:
        parts.append("built-in CPU kernels")
    crashed = [o for o in tried if o.crash]
    extra_crashed = any(o.path[1] for o in crashed)
    amx_here = has_amx()
    if not extra:
        amx = "AMX kernels" if amx_here else "repacked-weight kernels"
        if extra_crashed:
            parts.append(
                f"{amx} off: llama.cpp crashes with them on this CPU "
                f"({crashed[0].crash} in {crashed[0].where} with {quant_type} weights)"
            )
        elif choice.weight_repack == "off":
            parts.append(f"{amx} off (weight_repack = off)")
    else:
        parts.append("extra buffer types on" + (" (AMX kernels)" if amx_here else ""))
    variant_crashes = sorted(
        {str(o.path[0]) for o in crashed if o.path[0] and o.path[0] != variant}
    )
    if variant_crashes:
        parts.append(f"{', '.join(variant_crashes)} crashed on this CPU")
    return "; ".join(parts)


def prepare_in_process(model_path: Path, store: VerdictStore, threads: int = 2) -> EnginePath:
    """Ready this process to load ``model_path`` as a runner would (benchmarks, tests): the
    engine check's path, with its backends loaded. Load inside
    ``llama_backends.extra_buffer_types(path.extra_buffers)``."""
    from localserve.hub.gguf_header import read_gguf_header

    path = choose_engine_path(
        model_path, read_gguf_header(model_path).quant_type, EngineChoice(threads=threads), store
    )
    llama_backends.load_backends(path.cpu_variant)
    return path
