"""The remote brute-force limiter, on a fake clock."""

from __future__ import annotations

from localserve.server.remote import MAX_FAILURE_DELAY_S, AuthThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_are_slowed_then_locked_out_then_forgiven() -> None:
    clock = Clock()
    throttle = AuthThrottle(failures=3, window_s=60, lockout_s=300, clock=clock)
    delays = [throttle.failure("10.0.0.9") for _ in range(2)]
    assert delays == sorted(delays) and 0 < delays[0] <= MAX_FAILURE_DELAY_S
    assert throttle.retry_after("10.0.0.9") is None
    throttle.failure("10.0.0.9")
    assert throttle.retry_after("10.0.0.9") == 300
    assert throttle.retry_after("10.0.0.10") is None  # other addresses are not affected
    clock.now += 301
    assert throttle.retry_after("10.0.0.9") is None


def test_failures_outside_the_window_do_not_count() -> None:
    clock = Clock()
    throttle = AuthThrottle(failures=3, window_s=60, lockout_s=300, clock=clock)
    for _ in range(2):
        throttle.failure("10.0.0.9")
        clock.now += 61
    throttle.failure("10.0.0.9")
    assert throttle.retry_after("10.0.0.9") is None


def test_a_success_clears_the_count() -> None:
    throttle = AuthThrottle(failures=2, window_s=60, lockout_s=300, clock=Clock())
    throttle.failure("10.0.0.9")
    throttle.success("10.0.0.9")
    throttle.failure("10.0.0.9")
    assert throttle.retry_after("10.0.0.9") is None


def test_the_table_stays_bounded_under_a_flood_of_addresses() -> None:
    throttle = AuthThrottle(failures=5, window_s=60, lockout_s=300, max_addresses=100)
    for n in range(10_000):
        throttle.failure(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(throttle) == 100
