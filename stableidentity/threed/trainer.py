"""The 3D trainer: Gaussians around a head prior, rendered from orbiting cameras, guided by ISM.

Each iteration samples a few cameras, renders the Gaussians (random backgrounds
and a little scale noise), asks :class:`~.guidance.ISMGuidance` for the gradient
on the renders, adds small regularisers, steps Adam and densifies on schedule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from ..errors import CancelledError, InvalidInputError
from ..identity import Identity
from .cameras import sample_orbit_cameras, turntable_cameras
from .gaussians import DensifyConfig, GaussianModel, LearningRates
from .guidance import ISMConfig, ISMGuidance
from .renderer import render

PRESETS_FILE = Path(__file__).resolve().parents[2] / "presets" / "threed.json"
MAX_ITERATIONS = 20000
TV_WEIGHT = 1e-4  # total variation on the renders: fewer speckles
SCALE_WEIGHT = 1e-2  # mean Gaussian scale: no giant blobs covering the head
IterationCallback = Callable[[int, int, float, "Image.Image | None"], None]


@dataclass(frozen=True)
class ThreeDPreset:
    """How long and how large a 3D run is."""

    name: str
    iterations: int
    views: int  # cameras per iteration
    resolution: int  # render size (square)
    guidance_resolution: int  # renders are resized to this for the VAE
    points: int  # initial Gaussians
    max_gaussians: int
    densify_until: int
    preview_every: int
    turntable_frames: int
    turntable_size: int

    def with_iterations(self, iterations: int | None) -> "ThreeDPreset":
        """The preset with another length; densification keeps its share of the run."""
        if iterations is None:
            return self
        if not 1 <= iterations <= MAX_ITERATIONS:
            raise InvalidInputError(f"iterations must be between 1 and {MAX_ITERATIONS}, got {iterations}")
        share = self.densify_until / self.iterations
        return replace(self, iterations=iterations, densify_until=int(iterations * share),
                       preview_every=max(1, min(self.preview_every, iterations)))


def load_presets(path: Path = PRESETS_FILE) -> dict[str, ThreeDPreset]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return {name: ThreeDPreset(name, **values) for name, values in data.items() if not name.startswith("_")}


def get_preset(name: str, iterations: int | None = None) -> ThreeDPreset:
    presets = load_presets()
    if name not in presets:
        raise InvalidInputError(f"unknown 3D preset '{name}': choose one of {', '.join(presets)}")
    return presets[name].with_iterations(iterations)


def random_background(generator: torch.Generator) -> torch.Tensor:
    """White; or, with probability 0.66, a random colour or black (half each)."""
    u = float(torch.rand((), generator=generator))
    if u < 0.34:
        return torch.ones(3)
    if u < 0.67:
        return torch.rand(3, generator=generator)
    return torch.zeros(3)


def disparity_image(depth: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Inverse depth normalised to [0, 1] over the rendered object (0 where nothing is)."""
    inverse = torch.where(alpha > 0.5, 1.0 / depth.clamp_min(1e-3), torch.zeros_like(depth))
    low = torch.where(alpha > 0.5, inverse, torch.full_like(inverse, float("inf"))).amin()
    high = inverse.amax()
    if not torch.isfinite(low) or high <= low:
        return torch.zeros_like(inverse)
    return torch.where(alpha > 0.5, (inverse - low) / (high - low), torch.zeros_like(inverse))


def total_variation(images: torch.Tensor) -> torch.Tensor:
    return (images[..., 1:, :] - images[..., :-1, :]).abs().mean() + (images[..., :, 1:] - images[..., :, :-1]).abs().mean()


def to_image(rgb: torch.Tensor) -> Image.Image:
    return Image.fromarray((rgb.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy())


class IdentityTo3D:
    """Identity + prompt -> 3D Gaussians, with ISM guidance on the shared SD2.1 components."""

    def __init__(self, base, identity: Identity, prompt: str, preset: ThreeDPreset,
                 negative_prompt: str = "", ism: ISMConfig | None = None):
        ism = ism or ISMConfig()
        self.preset = preset
        self.guidance = ISMGuidance(base, identity, prompt, negative_prompt,
                                    replace(ism, resolution=preset.guidance_resolution))
        self.device = base.unet.device

    @property
    def prompt(self) -> str:
        return self.guidance.prompt

    def __call__(self, seed: int = 0, callback: IterationCallback | None = None,
                 should_stop: Callable[[], bool] | None = None) -> GaussianModel:
        """Optimise and return the Gaussians.

        ``callback(iteration, total, residual, preview_or_None)`` after every iteration: the ISM
        residual ‖prediction − target‖² and, every ``preview_every`` iterations, a front render.
        """
        p = self.preset
        generator = torch.Generator().manual_seed(int(seed))
        model = GaussianModel.from_head_prior(p.points, seed=int(seed), device=self.device)
        model.learning_rates = LearningRates(max_steps=p.iterations)
        model.setup_optimizer(model.learning_rates, model.extent)
        densify = DensifyConfig(stop=p.densify_until, max_gaussians=p.max_gaussians)
        preview_camera = turntable_cameras(1, p.resolution, p.resolution)[0].to(self.device)

        for iteration in range(p.iterations):
            if should_stop is not None and should_stop():
                raise CancelledError(f"3D cancelled at iteration {iteration} of {p.iterations}")
            model.update_learning_rate(iteration)
            cameras = sample_orbit_cameras(p.views, iteration, p.resolution, p.resolution, generator)
            renders = []
            for camera in cameras:
                scale_noise = 1.0 + 0.1 * (float(torch.rand((), generator=generator)) - 0.5)
                renders.append(render(model, camera.to(self.device), random_background(generator).to(self.device),
                                      scale_modifier=scale_noise))
            images = torch.stack([r.rgb for r in renders])
            disparity = torch.stack([disparity_image(r.depth, r.alpha) for r in renders])
            azimuths = torch.tensor([c.azimuth for c in cameras])
            ism_loss, info = self.guidance.loss(images, azimuths, iteration, generator, disparity)
            loss = ism_loss + TV_WEIGHT * total_variation(images) + SCALE_WEIGHT * model.scales.mean()
            model.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for r in renders:
                if r.means2d.grad is not None:
                    model.add_densification_stats(r.means2d.grad, r.radii, r.width, r.height)
            model.densification_step(iteration, densify, generator)
            model.optimizer.step()

            done = iteration + 1
            if callback is not None:
                preview = None
                if done % p.preview_every == 0 or done == p.iterations:
                    with torch.no_grad():
                        preview = to_image(render(model, preview_camera, 1.0).rgb)
                callback(done, p.iterations, info["residual"], preview)
        return model
