"""Shared helpers of the benchmark scripts: timing, machine contention, environment, JSON output.

Not part of the package. Every script measures its baseline in the same process as the thing it compares,
interleaving the runs, and reports medians; ``Contention`` records how much CPU other processes used while
a measurement ran, so that numbers from a busy machine can be recognised as such.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BASELINE_TIMING = REPO.parent / "shared" / "conformance" / "baseline_timing.json"
DEFAULT_WEIGHTS = REPO / "weights" / "default"

# Our default model size (what weights/default is trained with); used when weights/default/config.json
# does not exist yet. Random weights are fine for throughput.
DEFAULT_SIZE = dict(encoder_hidden=128, magma_modulo=128, fp_sizes=[256, 512, 1024, 2048], cond_dim=2048,
                    decoder_layers=4, dx=64, de=32, dy=128, hidden_mlp_X=128, hidden_mlp_E=64, hidden_mlp_y=256,
                    dim_ffX=128, dim_ffE=64, dim_ffy=128,
                    atom_types=["C", "O", "P", "N", "S", "Cl", "F", "H", "Br", "I"],
                    reference_padding=False, max_n_nodes=60, name="default-size (random weights)")

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def default_config():
    """DiffMSConfig of weights/default if it exists, else ``DEFAULT_SIZE``; and where it came from."""
    from matchms_diffms.model.config import DiffMSConfig

    path = DEFAULT_WEIGHTS / "config.json"
    if path.is_file():
        meta = json.loads(path.read_text())
        return DiffMSConfig.from_dict(meta["config"]), str(path)
    return DiffMSConfig(**DEFAULT_SIZE), "benchmarks/_common.py DEFAULT_SIZE"


def _busy_jiffies() -> int | None:
    """CPU time used by the whole machine so far (jiffies), from /proc/stat; None where unavailable."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return user + nice + system + irq + softirq + steal


def _own_jiffies(pid: int | str = "self", children: bool = True) -> int | None:
    """CPU time used by one process (all its threads, and its reaped children unless ``children`` is False),
    from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return sum(int(v) for v in fields[11:15 if children else 13])   # utime, stime[, cutime, cstime]


class Contention:
    """Average share of the machine's CPUs used by *other* processes between start() and stop().

    ``others_share`` = CPU seconds of all processes except ``pid`` (and its children) / (wall seconds x
    number of CPUs); 0 on an idle machine, 1 when other work kept every core busy. Linux only (None else).
    """

    def __init__(self, pid: int | str = "self"):
        self.pid = pid
        self.others_share = None

    def start(self):
        self._t, self._all, self._own = time.perf_counter(), _busy_jiffies(), _own_jiffies(self.pid)
        return self

    def stop(self) -> float | None:
        wall = time.perf_counter() - self._t
        busy, own = _busy_jiffies(), _own_jiffies(self.pid)
        if None in (busy, own, self._all, self._own) or wall <= 0:
            return None
        others = max(0, (busy - self._all) - (own - self._own)) / _TICK
        self.others_share = round(others / (wall * (os.cpu_count() or 1)), 3)
        return self.others_share


def timed(fn) -> tuple[float, float]:
    """Run ``fn()`` once; (wall seconds, CPU seconds of this process)."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def environment(threads: int | None = None) -> dict:
    import torch

    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu,
            "cpu_count": os.cpu_count(), "torch_threads": threads or torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def write_json(data: dict, path: Path) -> Path:
    """Write ``data`` as JSON, atomically (``matchms_diffms.files.atomic_write_text``: fsync, then rename)."""
    from matchms_diffms.files import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, json.dumps(data, indent=1) + "\n")
