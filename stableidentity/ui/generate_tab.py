"""Tab "Generate": a learned identity in any prompt, with presets, seeds and a gallery."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ..spaces import estimate_seconds, gpu_task
from .common import AppContext, user_errors
from .controls import describe, gallery_items, generation_controls, identity_picker, load_identity, read_settings, step_progress

PROMPTS_FILE = Path(__file__).resolve().parents[2] / "presets" / "prompts.json"


def load_prompt_presets(path: Path = PROMPTS_FILE) -> dict[str, list[str]]:
    """Prompt presets by group (decoration, action, attribute, background, style)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {group: prompts for group, prompts in data.items() if not group.startswith("_")}


@dataclass
class GenerateTab:
    picker: gr.Dropdown


def _generate_seconds(identity_id, prompt, negative, num_images, steps, *args, **kwargs) -> int:
    """ZeroGPU duration: ~0.08 s a step per image on a big GPU, plus loading."""
    return estimate_seconds(40, 0.08, steps, num_images)


def build(ctx: AppContext) -> GenerateTab:
    manager = ctx.manager
    presets = load_prompt_presets()

    @gpu_task(_generate_seconds)
    @user_errors
    def generate(identity_id, prompt, negative, num_images, steps, guidance, width, height, seed, randomize,
                 request: gr.Request, progress=gr.Progress()):
        settings = read_settings(negative, num_images, steps, guidance, width, height, seed, randomize)
        identity = load_identity(ctx, identity_id, request)
        progress(0, desc="generating")
        with manager.job("generating images"):
            result = manager.text_to_image()(identity, prompt or "", callback=step_progress(progress), **settings)
        return gallery_items(result), describe(result), settings["seed"]

    def pick_group(group):
        return gr.update(choices=presets.get(group, []), value=None)

    def pick_prompt(prompt, current):
        return prompt or current

    with gr.Tab("Generate", id="generate") as tab:
        picker = identity_picker(ctx, "identity-picker")
        with gr.Row():
            group = gr.Dropdown(list(presets), label="Preset group", value=None)
            preset = gr.Dropdown([], label="Preset prompt", value=None)
        controls = generation_controls("<id> wearing a spacesuit, facing to camera, best quality", "prompt")
        gen_btn = gr.Button("Generate", variant="primary", elem_id="generate-button")
        gallery = gr.Gallery(label="Images", columns=4, height=420, format="png", elem_id="gallery")
        info = gr.Markdown(elem_id="generate-info")

    group.change(pick_group, group, preset, api_name=False, concurrency_limit=None)
    preset.change(pick_prompt, [preset, controls.prompt], controls.prompt, api_name=False, concurrency_limit=None)
    gen_btn.click(
        generate, [picker.dropdown, controls.prompt, *controls.settings], [gallery, info, controls.seed],
        api_name="generate", concurrency_id="gpu",
    )
    picker.refresh_on(tab.select)
    return GenerateTab(picker=picker.dropdown)
