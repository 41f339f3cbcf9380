"""The machine a benchmark ran on, its software, and how to read time and memory on it."""

from __future__ import annotations

import os
import platform
import re
import resource
import socket
import time
from contextlib import contextmanager
from typing import Iterator

import torch

MB = 1 << 20


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device) -> dict:
    """Facts about the machine: names a results file and says what the numbers mean."""
    cores = os.cpu_count() or 0
    memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    gpu, gpu_gb = None, None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu, gpu_gb = props.name, round(props.total_memory / 2**30, 1)
    text = f"{cpu_name()}, {cores} CPU cores, {memory_gb:g} GiB RAM"
    text = f"{gpu} ({gpu_gb:g} GiB), {text}" if gpu else f"{text}, no GPU"
    return {
        "slug": slug(gpu) if gpu else f"cpu-{slug(cpu_name())}-{cores}c",
        "description": text,
        "hostname": socket.gethostname(),
        "cpu": cpu_name(),
        "cpu_cores": cores,
        "memory_gib": memory_gb,
        "gpu": gpu,
        "gpu_memory_gib": gpu_gb,
    }


def versions() -> dict:
    import diffusers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Wall time of GPU-inclusive work: synchronises before reading."""

    def __init__(self, device: torch.device):
        self.device = device

    def now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()


class MemoryMeter:
    """Memory in use and its peak: CUDA allocated bytes on a GPU, the process's resident set on CPU.

    The CPU peak is reset through ``/proc/self/clear_refs`` (Linux); where that is
    not allowed it falls back to the lifetime peak, and :attr:`exact` says so.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "CUDA max allocated" if device.type == "cuda" else "process peak RSS"
        self.exact = device.type == "cuda" or _can_reset_rss_peak()

    def now(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return _proc_status_kb("VmRSS") * 1024

    def _reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.exact:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

    def _peak(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        if self.exact:
            return _proc_status_kb("VmHWM") * 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    @contextmanager
    def above_start(self) -> Iterator[list[int]]:
        """Yields a list that receives the block's peak minus the memory in use at its start."""
        synchronize(self.device)
        start = self.now()
        self._reset_peak()
        out: list[int] = []
        try:
            yield out
        finally:
            synchronize(self.device)
            out.append(max(0, self._peak() - start))


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _can_reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _proc_status_kb("VmHWM")
        return True
    except OSError:
        return False
