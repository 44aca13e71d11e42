"""``GET /metrics``: the telemetry snapshot in Prometheus' text exposition format."""

from __future__ import annotations

from localserve.api.control import StatsSnapshot


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def metric(
        self, name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
            self.lines.append(f"{name}{{{label_text}}} {value}" if labels else f"{name} {value}")


def prometheus_text(snapshot: StatsSnapshot) -> str:
    out = _Writer()
    by_model = snapshot.totals.by_model
    out.metric(
        "localserve_requests_total",
        "counter",
        "Finished generations, by model.",
        [({"model": name}, t.requests) for name, t in by_model.items()],
    )
    out.metric(
        "localserve_prompt_tokens_total",
        "counter",
        "Prompt tokens of finished generations, by model.",
        [({"model": name}, t.prompt_tokens) for name, t in by_model.items()],
    )
    out.metric(
        "localserve_completion_tokens_total",
        "counter",
        "Generated tokens of finished generations, by model.",
        [({"model": name}, t.completion_tokens) for name, t in by_model.items()],
    )
    live = snapshot.live
    out.metric(
        "localserve_generation_tokens_per_second",
        "gauge",
        f"Tokens generated per second of decode-step time over the last {live.window_s:.0f} s.",
        [({}, live.generation_tps)],
    )
    out.metric(
        "localserve_prompt_tokens_per_second",
        "gauge",
        f"Prompt tokens per second of prefill-step time over the last {live.window_s:.0f} s.",
        [({}, live.prompt_tps)],
    )
    active = live.active_requests
    out.metric("localserve_active_requests", "gauge", "Requests in flight.", [({}, active)])
    recent = snapshot.recent
    if recent.ttft_p50_s is not None:
        out.metric(
            "localserve_time_to_first_token_p50_seconds",
            "gauge",
            f"Median time to first token over the last {recent.window_s:.0f} s.",
            [({}, recent.ttft_p50_s)],
        )
    memory = snapshot.memory
    out.metric(
        "localserve_ram_used_bytes", "gauge", "System RAM in use.", [({}, memory.ram_used_bytes)]
    )
    out.metric("localserve_ram_total_bytes", "gauge", "System RAM.", [({}, memory.ram_total_bytes)])
    out.metric(
        "localserve_runner_rss_bytes",
        "gauge",
        "Resident memory of each model's runner process.",
        [({"model": name}, rss) for name, rss in memory.runner_rss_bytes.items()],
    )
    out.metric(
        "localserve_kv_cache_bytes",
        "gauge",
        "Each model's KV cache: bytes its requests hold (used) and bytes it set aside (reserved).",
        [
            ({"model": name, "state": state}, value)
            for name, kv in memory.kv_cache.items()
            for state, value in (("used", kv.used_bytes), ("reserved", kv.reserved_bytes))
        ],
    )
    out.metric(
        "localserve_vram_used_bytes",
        "gauge",
        "VRAM in use, per NVIDIA GPU (NVML).",
        [({"gpu": str(g.index), "name": g.name}, g.used_bytes) for g in memory.gpus],
    )
    out.metric(
        "localserve_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
        [({}, snapshot.uptime_s)],
    )
    return "\n".join(out.lines) + "\n"
