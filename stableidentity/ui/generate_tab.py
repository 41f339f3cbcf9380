"""Tab "Generate": a learned identity in any prompt, with presets, seeds and a gallery."""

from __future__ import annotations

import html
import json
import random
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ..errors import InvalidInputError
from ..generate import DEFAULT_NEGATIVE, LIMITS, MAX_SEED
from ..spaces import gpu_task
from .common import AppContext, check_range, user_errors

PROMPTS_FILE = Path(__file__).resolve().parents[2] / "presets" / "prompts.json"


def load_prompt_presets(path: Path = PROMPTS_FILE) -> dict[str, list[str]]:
    """Prompt presets by group (decoration, action, attribute, background, style)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {group: prompts for group, prompts in data.items() if not group.startswith("_")}


@dataclass
class GenerateTab:
    picker: gr.Dropdown


def _generate_seconds(identity_id, prompt, negative, num_images, steps, *args, **kwargs) -> int:
    """ZeroGPU duration: ~0.06 s a step per image on a big GPU, plus loading."""
    try:
        return int(40 + 0.08 * float(steps) * float(num_images))
    except (TypeError, ValueError):
        return 90


def build(ctx: AppContext) -> GenerateTab:
    manager, library = ctx.manager, ctx.library
    presets = load_prompt_presets()

    @gpu_task(_generate_seconds)
    @user_errors
    def generate(identity_id, prompt, negative, num_images, steps, guidance, width, height, seed, randomize,
                 request: gr.Request, progress=gr.Progress()):
        if not identity_id:
            raise InvalidInputError("pick an identity (learn one first, or add an identity file)")
        lo, hi = LIMITS["size"]
        num_images = check_range("number of images", num_images, *LIMITS["num_images"])
        steps = check_range("steps", steps, *LIMITS["steps"])
        guidance = check_range("guidance", guidance, *LIMITS["guidance"], integer=False)
        width, height = check_range("width", width, lo, hi), check_range("height", height, lo, hi)
        seed = random.randint(0, MAX_SEED) if randomize else check_range("seed", seed, 0, MAX_SEED)
        identity = library.load(ctx.owner(request), identity_id, token_width=manager.base().token_width)
        progress(0, desc="generating")
        with manager.job("generating images"):
            result = manager.text_to_image()(
                identity, prompt or "", negative_prompt=negative or "", num_images=num_images, steps=steps,
                guidance=guidance, width=width, height=height, seed=seed,
                callback=lambda step, total: progress((step, total), desc=f"step {step}/{total}"),
            )
        captions = [(image, f"seed {s}") for image, s in zip(result.images, result.seeds)]
        # Code spans keep "<id>" visible (Markdown would take it for an HTML tag).
        lines = [f"**Prompt:** `{result.prompt}`", "**Seeds:** " + ", ".join(map(str, result.seeds))]
        lines += [f"Note: {html.escape(note)}" for note in result.notes]
        return captions, "\n\n".join(lines), seed

    def pick_group(group):
        return gr.update(choices=presets.get(group, []), value=None)

    def pick_prompt(prompt, current):
        return prompt or current

    def refresh(current, request: gr.Request):
        return ctx.picker_update(ctx.owner(request), current)

    with gr.Tab("Generate", id="generate") as tab:
        with gr.Row():
            picker = gr.Dropdown(
                label="Identity", choices=[], elem_id="identity-picker", scale=4,
                allow_custom_value=True,  # choices differ per session; the library checks every id
            )
            refresh_btn = gr.Button("↻", scale=0, min_width=40)
        with gr.Row():
            group = gr.Dropdown(list(presets), label="Preset group", value=None)
            preset = gr.Dropdown([], label="Preset prompt", value=None)
        prompt = gr.Textbox(
            "<id> wearing a spacesuit, facing to camera, best quality", label="Prompt (write <id> for the person)",
            elem_id="prompt",
        )
        negative = gr.Textbox(DEFAULT_NEGATIVE, label="Negative prompt")
        with gr.Row():
            num_images = gr.Slider(1, 4, value=1, step=1, label="Images")
            steps = gr.Slider(*LIMITS["steps"], value=25, step=1, label="Steps")
            guidance = gr.Slider(*LIMITS["guidance"], value=8.5, step=0.5, label="Guidance")
        with gr.Row():
            width = gr.Slider(256, 1024, value=512, step=64, label="Width")
            height = gr.Slider(256, 1024, value=512, step=64, label="Height")
            seed = gr.Number(0, precision=0, minimum=0, label="Seed")
            randomize = gr.Checkbox(True, label="Random seed")
        gen_btn = gr.Button("Generate", variant="primary", elem_id="generate-button")
        gallery = gr.Gallery(label="Images", columns=4, height=420, format="png", elem_id="gallery")
        info = gr.Markdown(elem_id="generate-info")

    group.change(pick_group, group, preset, api_name=False, concurrency_limit=None)
    preset.change(pick_prompt, [preset, prompt], prompt, api_name=False, concurrency_limit=None)
    gen_btn.click(
        generate, [picker, prompt, negative, num_images, steps, guidance, width, height, seed, randomize],
        [gallery, info, seed], api_name="generate", concurrency_id="gpu",
    )
    for event in (tab.select, refresh_btn.click):
        event(refresh, picker, picker, api_name=False, concurrency_limit=None)
    return GenerateTab(picker=picker)
