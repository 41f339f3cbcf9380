"""Identity-driven text-to-video with ModelScope's text-to-video model, no finetuning.

ModelScope's text encoder is an OpenCLIP ViT-H text tower, like SD2.1's, so the
identity's two vectors mean the same person there: we write them into the video
model's prompt embeddings exactly as for images. Frames are decoded by the VAE
one at a time (slicing) to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InvalidInputError
from .generate import IdentityGenerator, dpm_solver
from .identity import Identity
from .media import write_video

DEFAULTS = dict(frames=16, fps=8, steps=25, guidance=9.0, width=256, height=256)
FRAME_RANGE = (8, 32)
FPS_RANGE = (1, 30)


@dataclass
class VideoResult:
    frames: np.ndarray  # (F, H, W, 3) uint8
    prompt: str
    seed: int
    notes: list[str] = field(default_factory=list)

    def save(self, path: str | Path, fps: int = DEFAULTS["fps"], on_frame=None) -> Path:
        """Write as MP4 (H.264, yuv420p) or GIF, by the file's suffix."""
        return write_video(self.frames, path, fps, on_frame)


def check_video_settings(frames: int, fps: int) -> None:
    lo, hi = FRAME_RANGE
    if not lo <= frames <= hi:
        raise InvalidInputError(f"frames must be between {lo} and {hi}, got {frames}")
    lo, hi = FPS_RANGE
    if not lo <= fps <= hi:
        raise InvalidInputError(f"fps must be between {lo} and {hi}, got {fps}")


class IdentityTextToVideo(IdentityGenerator):
    """Text-to-video with one identity, on the manager's ModelScope components."""

    def __init__(self, video, offload: bool = False):
        from diffusers import TextToVideoSDPipeline

        pipe = TextToVideoSDPipeline(
            vae=video.vae, text_encoder=video.text_encoder, tokenizer=video.tokenizer, unet=video.unet,
            scheduler=dpm_solver(video),
        )
        video.vae.enable_slicing()  # decode frame by frame: memory bounded by one frame
        if offload and video.unet.device.type == "cuda":
            pipe.enable_model_cpu_offload(device=video.unet.device)  # small GPUs: one model on the GPU at a time
        super().__init__(video, pipe)

    def progress_kwargs(self, callback, steps: int) -> dict:
        # This pipeline still reports steps through the older `callback(step, timestep, latents)`.
        if callback is None:
            return {}
        return {"callback": lambda step, timestep, latents: callback(step + 1, steps), "callback_steps": 1}

    def __call__(
        self,
        identity: Identity,
        prompt: str,
        *,
        frames: int = DEFAULTS["frames"],
        steps: int = DEFAULTS["steps"],
        guidance: float = DEFAULTS["guidance"],
        width: int = DEFAULTS["width"],
        height: int = DEFAULTS["height"],
        fps: int = DEFAULTS["fps"],
        **settings,
    ) -> VideoResult:
        """A video of the identity; ``settings``: negative_prompt, seed, callback (see ``run``)."""
        check_video_settings(frames, fps)
        output, prompt, seeds, notes = self.run(
            identity, prompt, num_images=1, steps=steps, guidance=guidance, width=width, height=height,
            num_frames=frames, output_type="np", **settings,
        )
        video = np.asarray(output.frames[0])  # (F, H, W, 3) in [0, 1]
        return VideoResult((np.clip(video, 0, 1) * 255).round().astype(np.uint8), prompt, seeds[0], notes)
