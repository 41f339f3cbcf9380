"""Text-to-image with an identity: Stable Diffusion 2.1 + the identity in the prompt.

The identity's vectors go into the prompt embeddings through
:func:`~stableidentity.prompt.encode_prompts`; the stock diffusers pipeline does
the rest. The pipeline is assembled from the shared base components (no copies),
with DPM-Solver++ as the method's authors used.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from PIL import Image

from .errors import InvalidInputError
from .identity import Identity
from .prompt import encode_prompts, with_placeholder

DEFAULT_NEGATIVE = (
    "lowres, blurry, deformed, distorted face, bad anatomy, extra fingers, extra limbs, "
    "watermark, text, signature, jpeg artifacts, worst quality, low quality"
)
DEFAULTS = dict(steps=25, guidance=8.5, width=512, height=512, num_images=1)
LIMITS = dict(steps=(1, 150), guidance=(0.0, 30.0), size=(128, 1024), num_images=(1, 4))
MAX_SEED = 2**32 - 1


@dataclass
class GenerationResult:
    images: list[Image.Image]
    prompt: str  # the prompt as used (placeholder added if it was missing)
    seeds: list[int]  # one per image: image i is reproduced by seed i with num_images=1
    notes: list[str] = field(default_factory=list)  # things the user should be told


def check_settings(num_images: int, steps: int, guidance: float, width: int, height: int) -> None:
    """Validate generation settings with messages a user can act on."""
    lo, hi = LIMITS["num_images"]
    if not lo <= num_images <= hi:
        raise InvalidInputError(f"number of images must be between {lo} and {hi}, got {num_images}")
    lo, hi = LIMITS["steps"]
    if not lo <= steps <= hi:
        raise InvalidInputError(f"steps must be between {lo} and {hi}, got {steps}")
    lo, hi = LIMITS["guidance"]
    if not lo <= guidance <= hi:
        raise InvalidInputError(f"guidance must be between {lo} and {hi}, got {guidance}")
    lo, hi = LIMITS["size"]
    for name, value in (("width", width), ("height", height)):
        if not lo <= value <= hi or value % 8:
            raise InvalidInputError(f"{name} must be a multiple of 8 between {lo} and {hi}, got {value}")


def resolve_seed(seed: int | None) -> int:
    if seed is None or seed < 0:
        return random.randint(0, MAX_SEED)
    if seed > MAX_SEED:
        raise InvalidInputError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    return int(seed)


class IdentityGenerator:
    """What every identity pipeline shares: checks, the identity in the prompt, seeds, progress.

    Subclasses assemble a diffusers pipeline from the shared base components and
    call :meth:`run` with their own extra arguments (a pose image, a frame count...).
    """

    def __init__(self, base, pipe):
        self.base, self.pipe = base, pipe
        self.pipe.set_progress_bar_config(disable=True)

    def encode(self, prompt: str, negative_prompt: str, identity: Identity) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt and negative-prompt embeddings, the identity written at its placeholder."""
        tok, enc = self.base.tokenizer, self.base.text_encoder
        positive = encode_prompts(tok, enc, [prompt], identity.embeddings)
        negative = encode_prompts(tok, enc, [negative_prompt or ""])
        return positive, negative

    def run(
        self,
        identity: Identity,
        prompt: str,
        *,
        negative_prompt: str = DEFAULT_NEGATIVE,
        num_images: int = DEFAULTS["num_images"],
        steps: int = DEFAULTS["steps"],
        guidance: float = DEFAULTS["guidance"],
        width: int = DEFAULTS["width"],
        height: int = DEFAULTS["height"],
        seed: int | None = None,
        callback=None,
        **pipe_kwargs,
    ) -> tuple[object, str, list[int], list[str]]:
        """Run the pipeline; returns its output, the prompt as used, the seeds and notes for the user."""
        check_settings(num_images, steps, guidance, width, height)
        identity.check_compatible(self.base.token_width)
        prompt, added = with_placeholder(prompt)
        notes = [f"the prompt had no <id>, so it became: {prompt}"] if added else []
        seed = resolve_seed(seed)
        seeds = [(seed + i) % (MAX_SEED + 1) for i in range(num_images)]
        device = self.base.unet.device
        generators = [torch.Generator(device).manual_seed(s) for s in seeds]
        positive, negative = self.encode(prompt, negative_prompt, identity)
        output = self.pipe(
            prompt_embeds=positive.repeat(num_images, 1, 1),
            negative_prompt_embeds=negative.repeat(num_images, 1, 1),
            num_inference_steps=steps,
            guidance_scale=guidance,
            width=width,
            height=height,
            generator=generators,
            **self.progress_kwargs(callback, steps),
            **pipe_kwargs,
        )
        return output, prompt, seeds, notes

    def progress_kwargs(self, callback, steps: int) -> dict:
        """Pipeline arguments that report each finished step as ``callback(step, total)``."""
        if callback is None:
            return {}

        def on_step_end(pipe, step, timestep, tensors):
            callback(step + 1, steps)
            return tensors

        return {"callback_on_step_end": on_step_end}


def dpm_solver(base):
    """DPM-Solver++ multistep, as the method's authors used, from the base's scheduler config."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(base.scheduler_config, algorithm_type="dpmsolver++")


class IdentityTextToImage(IdentityGenerator):
    """Text-to-image with one identity, on the shared base components."""

    def __init__(self, base):
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=base.vae,
            text_encoder=base.text_encoder,
            tokenizer=base.tokenizer,
            unet=base.unet,
            scheduler=dpm_solver(base),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        super().__init__(base, pipe)

    def __call__(self, identity: Identity, prompt: str, **settings) -> GenerationResult:
        """Generate images of the identity; ``settings`` as in :meth:`IdentityGenerator.run`.

        ``callback(step, total)`` runs after each denoising step.
        """
        output, prompt, seeds, notes = self.run(identity, prompt, **settings)
        return GenerationResult(output.images, prompt, seeds, notes)
