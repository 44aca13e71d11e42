"""Dashboard: live charts of the last five minutes, totals since start, and the loaded models."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from PySide6.QtWidgets import QGridLayout, QGroupBox, QLabel, QVBoxLayout, QWidget

from localserve.api.control import StatsSnapshot
from localserve.gui.charts import LineChart
from localserve.gui.icons import icon
from localserve.units import format_bytes

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
        controller.call(lambda c: c.stats(history=True), self.load_history)

    def load_history(self, snapshot: StatsSnapshot) -> None:
        for point in snapshot.history or []:
            self._add_point(
                point.time,
                point.generation_tps,
                point.prompt_tps,
                point.active_requests,
                point.ram_used_bytes,
                point.vram_used_bytes,
                None,
            )
        self.add_snapshot(snapshot)

    def add_snapshot(self, snapshot: StatsSnapshot) -> None:
        live, memory = snapshot.live, snapshot.memory
        if not memory.gpus:
            self.charts["vram"].placeholder = (
                "Apple GPU: shares the RAM above"
                if memory.unified_memory
                else "No NVIDIA GPU found: models run from RAM"
            )
        self._add_point(
            snapshot.time,
            live.generation_tps,
            live.prompt_tps,
            live.active_requests,
            memory.ram_used_bytes,
            memory.vram_used_bytes,
            snapshot.last_request.ttft_s if snapshot.last_request else None,
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

    def show_text(self, snapshot: StatsSnapshot) -> None:
        status = self.controller.status
        lines = []
        for model in status.models if status is not None else []:
            info = model.info
            layers = info.gpu_layers if info else None
            offload = (
                "CPU only"
                if not layers
                else ("all layers on GPU" if layers < 0 else f"{layers} GPU layers")
            )
            lines.append(
                f"<b>{model.model_id}</b>: {model.state}, "
                f"context {info.n_ctx if info else '?'}, {offload}"
            )
            if info and info.backend:
                # Which llama.cpp kernels run it, and why (the engine check's verdict).
                lines.append(
                    f"&nbsp;&nbsp;on {html.escape(info.backend)}: {html.escape(info.engine_note)}"
                )
        self.models_label.setText("<br>".join(lines) or "No model loaded.")
        totals = snapshot.totals
        memory = snapshot.memory
        uptime = int(snapshot.uptime_s)
        shared = " GPU memory is shared with RAM on this Mac." if memory.unified_memory else ""
        self.totals_label.setText(
            f"Since start ({uptime // 3600}h {uptime % 3600 // 60}m): "
            f"{totals.requests} requests, {totals.prompt_tokens:,} prompt and "
            f"{totals.completion_tokens:,} generated tokens. Models use "
            f"{format_bytes(memory.runners_rss_bytes)} of RAM.{shared}"
        )
