"""Tab "Video": the identity in a short ModelScope text-to-video clip."""

from __future__ import annotations

import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ..generate import DEFAULT_NEGATIVE, LIMITS, MAX_SEED
from ..spaces import estimate_seconds, gpu_task
from ..video import DEFAULTS, FPS_RANGE, FRAME_RANGE
from .common import AppContext, check_range, user_errors
from .controls import identity_picker, load_identity

PROMPTS_FILE = Path(__file__).resolve().parents[2] / "presets" / "video_prompts.json"


@dataclass
class VideoTab:
    picker: gr.Dropdown


def _video_seconds(identity_id, prompt, negative, frames, fps, steps, *args, **kwargs) -> int:
    """ZeroGPU duration: ~0.03 s per step per frame at 256² on a big GPU, plus loading."""
    return estimate_seconds(60, 0.03, steps, frames)


def build(ctx: AppContext) -> VideoTab:
    manager = ctx.manager
    prompts = json.loads(PROMPTS_FILE.read_text(encoding="utf-8"))["motion"]
    out_dir = Path(tempfile.mkdtemp(prefix="stableidentity-video-"))

    @gpu_task(_video_seconds)
    @user_errors
    def make_video(identity_id, prompt, negative, frames, fps, steps, guidance, width, height, seed, randomize,
                   fmt, request: gr.Request, progress=gr.Progress()):
        frames = check_range("frames", frames, *FRAME_RANGE)
        fps = check_range("fps", fps, *FPS_RANGE)
        steps = check_range("steps", steps, *LIMITS["steps"])
        guidance = check_range("guidance", guidance, *LIMITS["guidance"], integer=False)
        width = check_range("width", width, *LIMITS["size"])
        height = check_range("height", height, *LIMITS["size"])
        seed = random.randint(0, MAX_SEED) if randomize else check_range("seed", seed, 0, MAX_SEED)
        suffix = ".gif" if fmt == "gif" else ".mp4"
        with manager.job("making a video"):
            identity = load_identity(ctx, identity_id, request, token_width=manager.group("video").token_width)
            result = manager.text_to_video()(
                identity, prompt or "", negative_prompt=negative or "", frames=frames, fps=fps, steps=steps,
                guidance=guidance, width=width, height=height, seed=seed,
                callback=lambda s, n: progress((s, n), desc=f"denoising {s}/{n}"),
            )
        path = out_dir / f"{ctx.owner(request)}-{seed}{suffix}"
        result.save(path, fps=fps, on_frame=lambda i, n: progress((i, n), desc=f"encoding frame {i}/{n}"))
        info = f"**Prompt:** `{result.prompt}`\n\n**Seed:** {result.seed} · {frames} frames at {fps} fps"
        return (str(path) if suffix == ".mp4" else None), str(path), info, seed

    with gr.Tab("Video", id="video") as tab:
        picker = identity_picker(ctx, "video-identity-picker")
        preset = gr.Dropdown(prompts, label="Motion prompt presets", value=None)
        prompt = gr.Textbox(prompts[0], label="Prompt (write <id> for the person)", elem_id="video-prompt")
        negative = gr.Textbox(DEFAULT_NEGATIVE, label="Negative prompt")
        with gr.Row():
            frames = gr.Slider(*FRAME_RANGE, value=DEFAULTS["frames"], step=1, label="Frames")
            fps = gr.Slider(*FPS_RANGE, value=DEFAULTS["fps"], step=1, label="Frames per second")
            steps = gr.Slider(*LIMITS["steps"], value=DEFAULTS["steps"], step=1, label="Steps")
            guidance = gr.Slider(*LIMITS["guidance"], value=DEFAULTS["guidance"], step=0.5, label="Guidance")
        with gr.Row():
            width = gr.Slider(256, 1024, value=DEFAULTS["width"], step=64, label="Width (trained at 256)")
            height = gr.Slider(256, 1024, value=DEFAULTS["height"], step=64, label="Height")
            seed = gr.Number(0, precision=0, minimum=0, label="Seed")
            randomize = gr.Checkbox(True, label="Random seed")
            fmt = gr.Radio([("MP4 (H.264)", "mp4"), ("GIF", "gif")], value="mp4", label="Format")
        go = gr.Button("Make video", variant="primary", elem_id="video-button")
        with gr.Row():
            video = gr.Video(label="Video", elem_id="video-output", height=320)
            download = gr.File(label="Download", interactive=False)
        info = gr.Markdown(elem_id="video-info")

    preset.change(lambda p, cur: p or cur, [preset, prompt], prompt, api_name=False, concurrency_limit=None)
    go.click(
        make_video,
        [picker.dropdown, prompt, negative, frames, fps, steps, guidance, width, height, seed, randomize, fmt],
        [video, download, info, seed], api_name="generate_video", concurrency_id="gpu",
    )
    picker.refresh_on(tab.select)
    return VideoTab(picker=picker.dropdown)
