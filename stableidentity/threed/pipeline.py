"""Identity + prompt -> 3D outputs: the Gaussian ``.ply``, a coloured point cloud and a turntable MP4.

Used by the CLI and the app; the work itself is in :mod:`.trainer` and :mod:`.export`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..identity import Identity
from .export import save_ply, save_point_cloud, save_turntable
from .trainer import IdentityTo3D, IterationCallback, ThreeDPreset


@dataclass
class ThreeDResult:
    gaussians: Path  # standard 3DGS .ply (y-up)
    point_cloud: Path  # coloured points (.ply)
    turntable: Path  # 360° MP4
    prompt: str
    num_gaussians: int


def make_3d(
    manager,
    identity: Identity,
    prompt: str,
    preset: ThreeDPreset,
    out_dir: str | Path,
    *,
    seed: int = 0,
    negative_prompt: str = "",
    callback: IterationCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_export: Callable[[str], None] | None = None,
) -> ThreeDResult:
    """Optimise Gaussians for the identity and write every output into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with manager.use("base") as (base,):
        trainer = IdentityTo3D(base, identity, prompt, preset, negative_prompt)
        model = trainer(seed=seed, callback=callback, should_stop=should_stop)
    if on_export is not None:
        on_export("writing the Gaussians and the point cloud")
    gaussians = save_ply(model, out / "gaussians.ply")
    cloud = save_point_cloud(model, out / "point_cloud.ply")
    if on_export is not None:
        on_export("rendering the turntable video")
    size = preset.turntable_size - preset.turntable_size % 2
    video = save_turntable(model, out / "turntable.mp4", num_frames=preset.turntable_frames, width=size, height=size)
    return ThreeDResult(gaussians, cloud, video, trainer.prompt, model.num_gaussians)
