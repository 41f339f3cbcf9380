"""Tab "Learn identity": photo -> aligned face preview -> learning with progress -> library."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from ..errors import InvalidInputError
from ..identity import Identity
from ..spaces import estimate_seconds, gpu_task
from .common import AppContext, BackgroundJob, check_range, user_errors

MAX_STEPS = 1000  # the UI's bound; enforced on the server too
DEFAULT_STEPS = 450


@dataclass
class LearnTab:
    library_changed: list  # events after which identity pickers must refresh
    gallery: gr.Gallery


def _loss_frame(points: list[tuple[int, float]]) -> pd.DataFrame:
    return pd.DataFrame(points or [(0, 0.0)], columns=["step", "loss"])


def _learn_seconds(photo, name, steps, seed, *args, **kwargs) -> int:
    """ZeroGPU duration for a learning job: about 0.1 s a step on a big GPU, plus loading."""
    return estimate_seconds(60, 0.12, steps)


def build(ctx: AppContext) -> LearnTab:
    manager, library = ctx.manager, ctx.library

    @user_errors
    def preview(photo):
        if photo is None:
            return None, ""
        face = manager.face_preparer()(photo)
        more = f" — using the largest of {face.num_faces}" if face.num_faces > 1 else ""
        info = f"**{face.num_faces} face(s) found**{more} · detector: {face.detector} · masks: {face.mask_source}"
        return face.overlay(), info

    @gpu_task(_learn_seconds)
    @user_errors
    def learn(photo, name, steps, seed, request: gr.Request, progress=gr.Progress()):
        if photo is None:
            raise InvalidInputError("upload a photo with a clearly visible face first")
        steps = check_range("steps", steps, 1, MAX_STEPS)
        seed = check_range("seed", seed, 0, 2**32 - 1)
        owner = ctx.owner(request)
        face = manager.face_preparer()(photo)

        def work(report, should_stop):
            with manager.job("learning an identity"):
                return manager.learner()(
                    face, steps=steps, seed=seed, callback=lambda s, n, loss: report((s, loss)), should_stop=should_stop
                )

        job = BackgroundJob(work, ctx.stop_event(owner))
        start = time.perf_counter()
        points: list[tuple[int, float]] = []
        progress(0, desc="preparing")
        for news in job:
            points += news
            step, loss = points[-1]
            left = (time.perf_counter() - start) / step * (steps - step)
            progress((step, steps), desc=f"step {step}/{steps} · loss {loss:.4f} · ~{left:.0f} s left")
            yield _loss_frame(points), f"Learning… step {step}/{steps}", gr.skip(), gr.skip(), gr.skip()
        entry = library.add(owner, job.result, name or "person", face.image)
        elapsed = time.perf_counter() - start
        message = (
            f"Learned **{entry.name}** in {elapsed:.1f} s ({steps} steps, final loss "
            f"{job.result.metadata['final_loss']}). Use it in the Generate tab with `<id>` in the prompt."
        )
        yield _loss_frame(points), message, str(entry.path), entry.id, _gallery(owner)

    @user_errors
    def add_file(file, name, request: gr.Request):
        if file is None:
            raise InvalidInputError("choose an identity .safetensors file first")
        path = Path(file if isinstance(file, str) else file.name)
        identity = Identity.load(path, token_width=manager.base().token_width)
        label = name or identity.metadata.get("name") or path.stem
        entry = library.add(ctx.owner(request), identity, label)
        return f"Added **{entry.name}** to your library.", str(entry.path), entry.id, _gallery(ctx.owner(request))

    def _gallery(owner: str):
        return [(str(e.thumbnail), e.label) for e in library.list(owner) if e.thumbnail is not None]

    def show_library(request: gr.Request):
        return _gallery(ctx.owner(request))

    with gr.Tab("Learn identity", id="learn") as tab:
        gr.Markdown("Upload (or take with the webcam) **one photo** of a face, then press **Learn**.")
        with gr.Row():
            photo = gr.Image(sources=["upload", "webcam"], type="filepath", label="Face photo", height=360)
            overlay = gr.Image(label="Aligned face · green: face mask · blue: hair mask", interactive=False, height=360)
        faces_info = gr.Markdown()
        with gr.Row():
            name = gr.Textbox("person", label="Name", max_length=60)
            steps = gr.Slider(1, MAX_STEPS, value=DEFAULT_STEPS, step=1, label="Steps")
            seed = gr.Number(0, precision=0, minimum=0, label="Seed")
        with gr.Row():
            learn_btn = gr.Button("Learn", variant="primary", elem_id="learn-button")
            cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
        loss_plot = gr.LinePlot(_loss_frame([]), x="step", y="loss", label="Loss", height=220)
        result = gr.Markdown(elem_id="learn-result")
        with gr.Row():
            identity_file = gr.File(label="Identity file (download)", interactive=False)
            identity_id = gr.Textbox(label="Identity id (for the API)", interactive=False, elem_id="identity-id")
        with gr.Accordion("Use a saved identity file", open=False):
            with gr.Row():
                upload = gr.File(file_types=[".safetensors"], label="Identity .safetensors")
                upload_name = gr.Textbox(label="Name (optional)")
            add_btn = gr.Button("Add to library")
        gallery = gr.Gallery(label="Your identities", columns=6, height=200, allow_preview=False)

    photo.upload(preview, photo, [overlay, faces_info], api_name="prepare_face", concurrency_limit=None)
    learned = learn_btn.click(
        learn, [photo, name, steps, seed], [loss_plot, result, identity_file, identity_id, gallery],
        api_name="learn", concurrency_id="gpu",
    )
    cancel_btn.click(ctx.cancel, None, result, api_name="cancel", concurrency_limit=None)
    added = add_btn.click(
        add_file, [upload, upload_name], [result, identity_file, identity_id, gallery],
        api_name="upload_identity", concurrency_limit=None,
    )
    tab.select(show_library, None, gallery, api_name=False, concurrency_limit=None)
    return LearnTab(library_changed=[learned, added], gallery=gallery)
