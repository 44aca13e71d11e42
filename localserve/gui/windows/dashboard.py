"""Dashboard: live charts of the last five minutes, totals since start, and the loaded models."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from PySide6.QtWidgets import QGridLayout, QGroupBox, QLabel, QVBoxLayout, QWidget

from localserve.gui.charts import LineChart
from localserve.gui.icons import icon
from localserve.hub.library import format_bytes

if TYPE_CHECKING:
    from localserve.gui.tray import TrayController


def rate(value: float) -> str:
    return f"{value:.1f} tok/s"


def seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms"


def describe_offload(layers: int | None) -> str:
    if not layers:
        return "CPU only"
    return "all layers on the GPU" if layers < 0 else f"{layers} layers on the GPU"


class DashboardWindow(QWidget):
    def __init__(self, controller: TrayController) -> None:
        super().__init__()
        self.controller = controller
        self.setWindowTitle("localserve: dashboard")
        self.setWindowIcon(icon("localserve"))
        self.resize(900, 620)
        self.charts = {
            "generation": LineChart("Generation", "#7c3aed", rate),
            "prompt": LineChart("Prompt processing", "#2563eb", rate),
            "ttft": LineChart("Time to first token (last request)", "#ea580c", seconds),
            "active": LineChart("Active requests", "#16a34a", lambda v: f"{v:.0f}"),
            "ram": LineChart("RAM in use", "#0891b2", format_bytes),
            "vram": LineChart("VRAM in use", "#db2777", format_bytes),
        }
        grid = QGridLayout()
        for index, chart in enumerate(self.charts.values()):
            grid.addWidget(chart, index // 2, index % 2)
        self.models_label = QLabel("")
        self.totals_label = QLabel("")
        for label in (self.models_label, self.totals_label):
            label.setWordWrap(True)
        info = QGroupBox("Serving")
        info_layout = QVBoxLayout(info)
        info_layout.addWidget(self.models_label)
        info_layout.addWidget(self.totals_label)
        layout = QVBoxLayout(self)
        layout.addWidget(info)
        layout.addLayout(grid, 1)
        self._last_time = 0.0
        controller.stats_received.connect(self.add_snapshot)
        controller.call(lambda c: c.get("/stats", params={"history": "true"}), self.load_history)

    def load_history(self, snapshot: dict[str, Any]) -> None:
        for point in snapshot.get("history", []):
            self._add_point(
                point["time"],
                point["generation_tps"],
                point["prompt_tps"],
                point["active_requests"],
                point["ram_used_bytes"],
                point["vram_used_bytes"],
                None,
            )
        self.add_snapshot(snapshot)

    def add_snapshot(self, snapshot: dict[str, Any]) -> None:
        live, memory = snapshot["live"], snapshot["memory"]
        last = snapshot.get("last_request") or {}
        if not memory["gpus"]:
            self.charts["vram"].placeholder = (
                "Apple GPU: shares the RAM above"
                if memory.get("unified_memory")
                else "No NVIDIA GPU found: models run from RAM"
            )
        self._add_point(
            snapshot["time"],
            live["generation_tps"],
            live["prompt_tps"],
            live["active_requests"],
            memory["ram_used_bytes"],
            sum(gpu["used_bytes"] for gpu in memory["gpus"]),
            last.get("ttft_s"),
        )
        self.show_text(snapshot)

    def _add_point(
        self,
        at: float,
        generation: float,
        prompt: float,
        active: int,
        ram: int,
        vram: int,
        ttft: float | None,
    ) -> None:
        if at <= self._last_time:
            return
        self._last_time = at
        self.charts["generation"].add(at, generation)
        self.charts["prompt"].add(at, prompt)
        self.charts["active"].add(at, active)
        self.charts["ram"].add(at, ram)
        self.charts["vram"].add(at, vram)
        if ttft is not None:
            self.charts["ttft"].add(at, ttft)

    def show_text(self, snapshot: dict[str, Any]) -> None:
        status = self.controller.status or {}
        lines = []
        for model in status.get("models", []):
            info = model.get("info") or {}
            layers = info.get("gpu_layers")
            offload = (
                "CPU only"
                if not layers
                else ("all layers on GPU" if layers < 0 else f"{layers} GPU layers")
            )
            lines.append(
                f"<b>{model['model_id']}</b>: {model['state']}, context {info.get('n_ctx', '?')}, "
                f"{offload}"
            )
            if info.get("backend"):
                # Which llama.cpp kernels run it, and why (the engine check's verdict).
                lines.append(
                    f"&nbsp;&nbsp;on {html.escape(info['backend'])}: "
                    f"{html.escape(info.get('engine_note') or '')}"
                )
        self.models_label.setText("<br>".join(lines) or "No model loaded.")
        totals = snapshot["totals"]
        memory = snapshot["memory"]
        uptime = int(snapshot["uptime_s"])
        shared = (
            " GPU memory is shared with RAM on this Mac." if memory.get("unified_memory") else ""
        )
        self.totals_label.setText(
            f"Since start ({uptime // 3600}h {uptime % 3600 // 60}m): "
            f"{totals['requests']} requests, {totals['prompt_tokens']:,} prompt and "
            f"{totals['completion_tokens']:,} generated tokens. Models use "
            f"{format_bytes(memory['runners_rss_bytes'])} of RAM.{shared}"
        )
