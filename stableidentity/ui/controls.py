"""Controls shared by the generating tabs (Generate, Pose, ...): identity picker, settings, results."""

from __future__ import annotations

import html
import random
from dataclasses import dataclass
from typing import Callable

import gradio as gr

from ..errors import InvalidInputError
from ..generate import DEFAULT_NEGATIVE, LIMITS, MAX_SEED, GenerationResult
from .common import AppContext, check_range


@dataclass
class IdentityPicker:
    """A dropdown of the visitor's identities that refreshes on the events given to it."""

    dropdown: gr.Dropdown
    update: Callable

    def refresh_on(self, *events) -> None:
        for event in events:
            event(self.update, self.dropdown, self.dropdown, api_name=False, concurrency_limit=None)


def identity_picker(ctx: AppContext, elem_id: str) -> IdentityPicker:
    """The picker with a refresh button; the app also refreshes it when the library changes."""
    with gr.Row():
        dropdown = gr.Dropdown(
            label="Identity", choices=[], elem_id=elem_id, scale=4,
            allow_custom_value=True,  # choices differ per session; the library checks every id
        )
        refresh = gr.Button("↻", scale=0, min_width=40)

    def update(current, request: gr.Request):
        return ctx.picker_update(ctx.owner(request), current)

    picker = IdentityPicker(dropdown, update)
    picker.refresh_on(refresh.click)
    return picker


@dataclass
class GenerationControls:
    prompt: gr.Textbox
    negative: gr.Textbox
    num_images: gr.Slider
    steps: gr.Slider
    guidance: gr.Slider
    width: gr.Slider
    height: gr.Slider
    seed: gr.Number
    randomize: gr.Checkbox

    @property
    def settings(self) -> list:
        """The inputs :func:`read_settings` takes, in its order."""
        return [self.negative, self.num_images, self.steps, self.guidance, self.width, self.height, self.seed, self.randomize]


def generation_controls(default_prompt: str, prompt_id: str) -> GenerationControls:
    prompt = gr.Textbox(default_prompt, label="Prompt (write <id> for the person)", elem_id=prompt_id)
    negative = gr.Textbox(DEFAULT_NEGATIVE, label="Negative prompt")
    with gr.Row():
        num_images = gr.Slider(*LIMITS["num_images"], value=1, step=1, label="Images")
        steps = gr.Slider(*LIMITS["steps"], value=25, step=1, label="Steps")
        guidance = gr.Slider(*LIMITS["guidance"], value=8.5, step=0.5, label="Guidance")
    with gr.Row():
        width = gr.Slider(256, 1024, value=512, step=64, label="Width")
        height = gr.Slider(256, 1024, value=512, step=64, label="Height")
        seed = gr.Number(0, precision=0, minimum=0, label="Seed")
        randomize = gr.Checkbox(True, label="Random seed")
    return GenerationControls(prompt, negative, num_images, steps, guidance, width, height, seed, randomize)


def read_settings(negative, num_images, steps, guidance, width, height, seed, randomize) -> dict:
    """Validated generation settings (slider bounds hold on the server: API calls can send anything)."""
    lo, hi = LIMITS["size"]
    return dict(
        negative_prompt=negative or "",
        num_images=check_range("number of images", num_images, *LIMITS["num_images"]),
        steps=check_range("steps", steps, *LIMITS["steps"]),
        guidance=check_range("guidance", guidance, *LIMITS["guidance"], integer=False),
        width=check_range("width", width, lo, hi),
        height=check_range("height", height, lo, hi),
        seed=random.randint(0, MAX_SEED) if randomize else check_range("seed", seed, 0, MAX_SEED),
    )


def load_identity(ctx: AppContext, identity_id: str, request: gr.Request, token_width: int | None = None):
    """The visitor's identity, checked against ``token_width`` (default: the base model's)."""
    if not identity_id:
        raise InvalidInputError("pick an identity (learn one first, or add an identity file)")
    width = ctx.manager.base().token_width if token_width is None else token_width
    return ctx.library.load(ctx.owner(request), identity_id, token_width=width)


def step_progress(progress: gr.Progress):
    """A ``callback(step, total)`` that moves the progress bar."""
    return lambda step, total: progress((step, total), desc=f"step {step}/{total}")


def gallery_items(result: GenerationResult) -> list[tuple]:
    return [(image, f"seed {seed}") for image, seed in zip(result.images, result.seeds)]


def describe(result: GenerationResult) -> str:
    """The prompt as used and each image's seed, so any image can be made again."""
    # Code spans keep "<id>" visible (Markdown would take it for an HTML tag).
    lines = [f"**Prompt:** `{result.prompt}`", "**Seeds:** " + ", ".join(map(str, result.seeds))]
    lines += [f"Note: {html.escape(note)}" for note in result.notes]
    return "\n\n".join(lines)
