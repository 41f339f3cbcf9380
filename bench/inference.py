"""Generation speed through the app's own pipelines: 512² images at 25 steps, 16-frame 256² videos.

Timed end to end (prompt encoding, denoising with classifier-free guidance, VAE
decoding, conversion to images), after one short untimed call that builds the
pipeline and takes one-time costs out of the numbers.
"""

from __future__ import annotations

import statistics

import torch

from stableidentity.identity import Identity

from .machine import Clock
from .report import Measured

IMAGE_PROMPT = "<id> wearing a spacesuit, facing to camera, best quality"
VIDEO_PROMPT = "<id> walking on a beach, waves, sunny day"
STEPS, SIZE, VIDEO_SIZE, FRAMES = 25, 512, 256, 16


def some_identity(manager) -> Identity:
    """A valid identity for timing: the centre of the celebrity-name space (cost ignores its values)."""
    return Identity(manager.celeb_space().mean.clone(), {"note": "benchmark"})


def _median_time(clock: Clock, reps: int, call) -> float:
    times = []
    for _ in range(reps):
        start = clock.now()
        call()
        times.append(clock.now() - start)
    return statistics.median(times)


def measure_generate(manager, reps: int) -> Measured:
    clock, identity = Clock(manager.device), some_identity(manager)
    text_to_image = manager.text_to_image()
    settings = dict(steps=STEPS, width=SIZE, height=SIZE, seed=0)
    text_to_image(identity, IMAGE_PROMPT, **{**settings, "steps": 2})  # warm-up
    one = _median_time(clock, reps, lambda: text_to_image(identity, IMAGE_PROMPT, num_images=1, **settings))
    four = _median_time(clock, reps, lambda: text_to_image(identity, IMAGE_PROMPT, num_images=4, **settings))
    unet = manager.base().unet
    return Measured(
        values={"batch1_s_per_image": one, "batch4_s_per_image": four / 4, "batch4_s_per_call": four},
        info={
            "steps": STEPS, "size": SIZE, "scheduler": "DPM-Solver++", "guidance": "classifier-free (batch x2)",
            "repetitions": reps, "dtype": str(unet.dtype).removeprefix("torch."),
            "unet_channels_last": unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last),
        },
    )


def measure_video(manager, reps: int) -> Measured:
    clock, identity = Clock(manager.device), some_identity(manager)
    text_to_video = manager.text_to_video()
    settings = dict(steps=STEPS, width=VIDEO_SIZE, height=VIDEO_SIZE, seed=0)
    text_to_video(identity, VIDEO_PROMPT, **{**settings, "steps": 1, "frames": 8})  # warm-up
    seconds = _median_time(clock, reps, lambda: text_to_video(identity, VIDEO_PROMPT, frames=FRAMES, **settings))
    return Measured(
        values={"frames16_256px_s": seconds},
        info={"steps": STEPS, "frames": FRAMES, "size": VIDEO_SIZE, "repetitions": reps,
              "vae": "decoded frame by frame (slicing)"},
    )

