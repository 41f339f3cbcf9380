"""Tab "Pose": the identity drawn in a chosen pose (OpenPose ControlNet)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ..errors import InvalidInputError
from ..pose import builtin_poses, pose_skeleton
from ..spaces import estimate_seconds, gpu_task
from .common import AppContext, check_range, user_errors
from .controls import describe, gallery_items, generation_controls, identity_picker, load_identity, read_settings, step_progress

SOURCE_CHOICES = [("Built-in pose", "builtin"), ("Reference photo", "photo"), ("Skeleton image", "skeleton")]


@dataclass
class PoseTab:
    picker: gr.Dropdown


def _pose_seconds(identity_id, prompt, source, builtin, image, scale, end, negative, num_images, steps, *args, **kwargs) -> int:
    """ZeroGPU duration: a ControlNet step costs about 1.5 text-to-image steps."""
    return estimate_seconds(50, 0.12, steps, num_images)


def build(ctx: AppContext) -> PoseTab:
    manager = ctx.manager
    poses = list(builtin_poses())

    def skeleton_for(source, builtin, image, width, height):
        if source == "builtin":
            if not builtin:
                raise InvalidInputError("pick a built-in pose")
            return pose_skeleton("builtin", builtin, width, height)
        if image is None:
            raise InvalidInputError("upload a reference photo or a skeleton image for the pose")
        return pose_skeleton(source, image, width, height, manager.openpose)

    @user_errors
    def preview(source, builtin, image, width, height):
        width, height = check_range("width", width, 256, 1024), check_range("height", height, 256, 1024)
        with manager.job("finding the pose"):
            skeleton, note = skeleton_for(source, builtin, image, width, height)
        return skeleton, note

    @gpu_task(_pose_seconds)
    @user_errors
    def generate(identity_id, prompt, source, builtin, image, scale, end,
                 negative, num_images, steps, guidance, width, height, seed, randomize,
                 request: gr.Request, progress=gr.Progress()):
        settings = read_settings(negative, num_images, steps, guidance, width, height, seed, randomize)
        scale = check_range("ControlNet scale", scale, 0.0, 2.0, integer=False)
        end = check_range("guidance end", end, 0.05, 1.0, integer=False)
        identity = load_identity(ctx, identity_id, request)
        progress(0, desc="pose")
        with manager.job("generating posed images"):
            skeleton, note = skeleton_for(source, builtin, image, settings["width"], settings["height"])
            result = manager.pose_to_image()(
                identity, prompt or "", skeleton, controlnet_scale=scale, guidance_end=end,
                callback=step_progress(progress), **settings,
            )
        items = [(skeleton, f"pose: {note}")] + gallery_items(result)
        return items, describe(result), settings["seed"]

    with gr.Tab("Pose", id="pose") as tab:
        picker = identity_picker(ctx, "pose-identity-picker")
        with gr.Row():
            with gr.Column():
                source = gr.Radio(SOURCE_CHOICES, value="builtin", label="Pose from")
                builtin = gr.Dropdown(poses, value="standing-front", label="Built-in pose")
                image = gr.Image(type="filepath", label="Reference photo or skeleton image", height=240)
                preview_btn = gr.Button("Show skeleton")
            skeleton = gr.Image(label="Skeleton", interactive=False, height=360, format="png")
        pose_note = gr.Markdown()
        with gr.Row():
            scale = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="ControlNet conditioning scale")
            end = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Pose guidance ends at (fraction of steps)")
        controls = generation_controls("<id> dancing on a stage, best quality", "pose-prompt")
        gen_btn = gr.Button("Generate in pose", variant="primary", elem_id="pose-generate-button")
        gallery = gr.Gallery(label="Skeleton and images", columns=5, height=420, format="png", elem_id="pose-gallery")
        info = gr.Markdown(elem_id="pose-info")

    pose_inputs = [source, builtin, image, controls.width, controls.height]
    preview_btn.click(preview, pose_inputs, [skeleton, pose_note], api_name="pose_skeleton", concurrency_id="gpu")
    gen_btn.click(
        generate, [picker.dropdown, controls.prompt, source, builtin, image, scale, end, *controls.settings],
        [gallery, info, controls.seed], api_name="generate_pose", concurrency_id="gpu",
    )
    picker.refresh_on(tab.select)
    return PoseTab(picker=picker.dropdown)
