"""The model pool's policies on plain data, in milliseconds: admission and the queue limit,
eviction's choice, idle expiry and the fit check (thread sharing: test_cpu_share.py)."""

from __future__ import annotations

import pytest

from localserve.daemon.admission import ModelUse
from localserve.daemon.eviction import choose_eviction, make_room
from localserve.daemon.fit_check import check_fit
from localserve.daemon.idle import expired, idle_expired
from localserve.errors import BackendUnavailableError, ModelTooLargeError, QueueFullError
from localserve.hardware.memory import MemorySnapshot
from localserve.hub.library import ModelRecord

GB = 10**9


# -- admission ---------------------------------------------------------------------------------
def test_a_model_takes_its_slots_plus_the_queue_then_refuses() -> None:
    use = ModelUse(keep_alive=300.0)
    for now in range(5):  # 2 slots + 3 waiting
        use.admit("tiny", slots=2, max_queue=3, now=float(now), keep_alive=None)
    with pytest.raises(QueueFullError, match=r"2 requests are being answered and 3 are waiting"):
        use.admit("tiny", slots=2, max_queue=3, now=9.0, keep_alive=None)
    assert (use.in_flight, use.last_used) == (5, 4.0)  # the refused one changed nothing
    use.leave(now=10.0)
    use.admit("tiny", slots=2, max_queue=3, now=11.0, keep_alive=None)  # room again
    assert use.in_flight == 5


def test_without_a_queue_only_the_slots_are_taken() -> None:
    use = ModelUse(keep_alive=-1.0)
    use.admit("tiny", slots=1, max_queue=0, now=0.0, keep_alive=None)
    with pytest.raises(QueueFullError):
        use.admit("tiny", slots=1, max_queue=0, now=0.0, keep_alive=None)


def test_a_request_keep_alive_replaces_the_models() -> None:
    use = ModelUse(keep_alive=300.0)
    use.admit("tiny", slots=1, max_queue=0, now=0.0, keep_alive=None)
    assert use.keep_alive == 300.0
    use.leave(now=1.0)
    use.admit("tiny", slots=1, max_queue=0, now=2.0, keep_alive=0.0)
    assert use.keep_alive == 0.0


def test_leaving_says_when_the_model_became_idle_and_never_counts_below_zero() -> None:
    use = ModelUse(keep_alive=300.0)
    use.admit("tiny", slots=2, max_queue=0, now=0.0, keep_alive=None)
    use.admit("tiny", slots=2, max_queue=0, now=1.0, keep_alive=None)
    assert use.leave(now=2.0) is False
    assert use.leave(now=3.0) is True
    assert use.leave(now=4.0) is True  # a release too many
    assert (use.in_flight, use.last_used) == (0, 4.0)


# -- eviction ----------------------------------------------------------------------------------
def test_the_least_recently_used_idle_model_is_evicted() -> None:
    loaded = {
        "busy-oldest": ModelUse(-1.0, in_flight=1, last_used=1.0),
        "idle-old": ModelUse(-1.0, last_used=2.0),
        "idle-new": ModelUse(-1.0, last_used=3.0),
    }
    assert choose_eviction(loaded) == "idle-old"


def test_no_eviction_when_every_model_is_busy_or_none_is_loaded() -> None:
    assert (
        choose_eviction({"a": ModelUse(-1.0, in_flight=2), "b": ModelUse(-1.0, in_flight=1)})
        is None
    )
    assert choose_eviction({}) is None


def test_equal_last_use_is_broken_by_name() -> None:
    loaded = {"b": ModelUse(-1.0, last_used=1.0), "a": ModelUse(-1.0, last_used=1.0)}
    assert choose_eviction(loaded) == "a"


def test_room_is_made_only_at_the_limit() -> None:
    loaded = {"a": ModelUse(-1.0, last_used=1.0)}
    assert make_room(loaded, max_loaded=2) == []
    assert make_room(loaded, max_loaded=1) == ["a"]
    assert make_room({}, max_loaded=1) == []


def test_room_past_the_limit_evicts_oldest_first() -> None:
    loaded = {name: ModelUse(-1.0, last_used=t) for name, t in [("c", 3.0), ("a", 1.0), ("b", 2.0)]}
    assert make_room(loaded, max_loaded=2) == ["a", "b"]
    assert len(loaded) == 3  # a plan: the caller unloads


def test_busy_models_at_the_limit_give_a_503_and_nothing_is_evicted() -> None:
    loaded = {"idle": ModelUse(-1.0, last_used=1.0), "busy": ModelUse(-1.0, in_flight=1)}
    with pytest.raises(BackendUnavailableError, match=r"max_loaded_models is 1"):
        make_room(loaded, max_loaded=1)  # would need both gone


# -- idle unload ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("use", "now", "gone"),
    [
        (ModelUse(keep_alive=5.0, last_used=10.0), 14.9, False),
        (ModelUse(keep_alive=5.0, last_used=10.0), 15.0, True),
        (ModelUse(keep_alive=0.0, last_used=10.0), 10.0, True),  # unload at once
        (ModelUse(keep_alive=-1.0, last_used=0.0), 1e9, False),  # never
        (ModelUse(keep_alive=5.0, in_flight=1, last_used=0.0), 100.0, False),  # a stream is open
    ],
)
def test_a_model_expires_keep_alive_seconds_after_its_last_request(
    use: ModelUse, now: float, gone: bool
) -> None:
    assert idle_expired(use, now) is gone


def test_expired_names_every_idle_model_past_its_keep_alive() -> None:
    ready = {
        "short": ModelUse(keep_alive=1.0, last_used=0.0),
        "long": ModelUse(keep_alive=60.0, last_used=0.0),
        "forever": ModelUse(keep_alive=-1.0, last_used=0.0),
        "asked-zero": ModelUse(keep_alive=0.0, last_used=9.0),
    }
    assert expired(ready, now=10.0) == ["short", "asked-zero"]


# -- fit check ---------------------------------------------------------------------------------
def record(size_bytes: int) -> ModelRecord:
    return ModelRecord(
        name="tiny",
        files=["tiny.gguf"],
        size_bytes=size_bytes,
        architecture="llama",
        parameter_count=1_000_000,
        context_length=2048,
        quant_type="Q8_0",
        layers=4,
        embedding_length=256,
        head_count=4,
        head_count_kv=4,
        key_length=64,
        value_length=64,
        vocab_size=32000,
        has_chat_template=True,
        supports_fim=False,
    )


def memory(ram_free: int) -> MemorySnapshot:
    return MemorySnapshot(ram_total_bytes=64 * GB, ram_free_bytes=ram_free)


def test_a_model_that_fits_passes() -> None:
    check_fit(record(GB), memory(8 * GB), None, 1, gpu_offload=False)


def test_a_model_too_large_is_refused_with_the_numbers() -> None:
    with pytest.raises(ModelTooLargeError, match=r"tiny needs about .* but only 1.0 GB of RAM"):
        check_fit(record(4 * GB), memory(GB), None, 1, gpu_offload=False)
