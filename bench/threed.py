"""3D speed: iterations per second of each preset at its real sizes, and raw renderer throughput.

A few iterations of each preset are timed from the start of one iteration to the
end of the run (``should_stop`` is the clock: the trainer calls it before every
iteration, and no preview is rendered without a callback). Early iterations have
the preset's initial Gaussians only; densification adds up to ``max_gaussians``
later, so a projected full run is optimistic where rendering dominates.
"""

from __future__ import annotations

import time

import torch

from stableidentity.threed.renderer import measure_throughput
from stableidentity.threed.trainer import IdentityTo3D, load_presets

from .inference import some_identity
from .machine import synchronize
from .report import Measured, Skip

PROMPT = "<id>, a bust portrait, highly detailed"
RENDER_GAUSSIANS, RENDER_SIZE = 20_000, 256


def measure_threed(manager, warmup: int, timed: int, presets: list[str] | None = None) -> Measured:
    identity = some_identity(manager)
    out = Measured(info={"warmup_iterations": warmup, "renderer": "torch (the trainer's default)"})
    for name, preset in load_presets().items():
        if presets is not None and name not in presets:
            for metric in ("iterations_per_s", "projected_run_s", "gaussians", "timed_iterations"):
                out.reasons[f"{name}.{metric}"] = "preset not selected (--3d-presets)"
            continue
        run = preset.with_iterations(warmup + timed)
        with manager.use("base") as (base,):
            trainer = IdentityTo3D(base, identity, PROMPT, run)
            starts: list[float] = []

            def clock() -> bool:
                synchronize(manager.device)
                starts.append(time.perf_counter())
                return False

            model = trainer(seed=0, should_stop=clock)
            synchronize(manager.device)
            seconds = time.perf_counter() - starts[warmup]
        rate = timed / seconds
        out.values.update({
            f"{name}.iterations_per_s": rate,
            f"{name}.projected_run_s": preset.iterations / rate,
            f"{name}.gaussians": preset.points,
            f"{name}.timed_iterations": timed,
        })
        out.info[name] = {"views": preset.views, "resolution": preset.resolution,
                          "max_gaussians": preset.max_gaussians, "gaussians_at_end": model.num_gaussians}
    return out


def measure_renderer(device: torch.device, repeats: int) -> Measured:
    if device.type not in ("cpu", "cuda"):
        raise Skip(f"renderer timing is for CPU and CUDA, not {device.type}")
    forward = measure_throughput(RENDER_GAUSSIANS, RENDER_SIZE, device, repeats=repeats)
    both = measure_throughput(RENDER_GAUSSIANS, RENDER_SIZE, device, repeats=repeats, backward=True)
    return Measured(
        values={
            "forward_gaussian_pixels_per_s": forward["gaussians_pixels_per_second"],
            "forward_backward_gaussian_pixels_per_s": both["gaussians_pixels_per_second"],
            "forward_frame_s": forward["seconds_per_frame"],
            "forward_backward_frame_s": both["seconds_per_frame"],
        },
        info={"gaussians": RENDER_GAUSSIANS, "size": RENDER_SIZE, "repeats": repeats, "backend": "torch"},
    )
