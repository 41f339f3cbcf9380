"""Tab "3D": a Gaussian-splatting head of the identity, guided by ISM (LucidDreamer-style)."""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from ..errors import InvalidInputError
from ..spaces import gpu_task
from ..threed.pipeline import make_3d
from ..threed.trainer import MAX_ITERATIONS, get_preset, load_presets
from .common import AppContext, BackgroundJob, check_range, user_errors
from .controls import identity_picker, load_identity

DEFAULT_PROMPT = "a DSLR portrait photo of <id>, head and shoulders, highly detailed"


@dataclass
class ThreeDTab:
    picker: gr.Dropdown


def _threed_seconds(identity_id, prompt, negative, preset, iterations, *args, **kwargs) -> int:
    """ZeroGPU duration: ~0.3 s an iteration on a big GPU (more views, more time), plus export."""
    try:
        count = int(iterations) or get_preset(preset).iterations
        return int(120 + 0.3 * count)
    except Exception:  # noqa: BLE001 - a bad value is refused inside; any duration will do
        return 600


def build(ctx: AppContext) -> ThreeDTab:
    manager = ctx.manager
    presets = load_presets()
    out_root = Path(tempfile.mkdtemp(prefix="stableidentity-3d-"))

    @gpu_task(_threed_seconds)
    @user_errors
    def make(identity_id, prompt, negative, preset_name, iterations, seed, request: gr.Request, progress=gr.Progress()):
        if preset_name not in presets:
            raise InvalidInputError(f"unknown 3D preset '{preset_name}'")
        iterations = check_range("iterations", iterations, 0, MAX_ITERATIONS)
        preset = get_preset(preset_name, iterations or None)
        seed = check_range("seed", seed, 0, 2**32 - 1)
        owner = ctx.owner(request)
        identity = load_identity(ctx, identity_id, request)
        out_dir = out_root / owner / uuid.uuid4().hex[:12]

        def work(report, should_stop):
            with manager.job("making 3D"):
                return make_3d(
                    manager, identity, prompt or "", preset, out_dir, seed=seed, negative_prompt=negative or "",
                    callback=lambda i, n, residual, preview: report((i, n, residual, preview)),
                    should_stop=should_stop, on_export=lambda what: report((None, None, None, what)),
                )

        start = time.perf_counter()
        progress(0, desc="loading")
        job = BackgroundJob(work, ctx.stop_event(owner))
        for news in job:
            iteration, total, residual, extra = news[-1]
            if iteration is None:  # exporting
                progress(1.0, desc=extra)
                yield gr.skip(), f"{extra}…", gr.skip(), gr.skip(), gr.skip()
                continue
            left = (time.perf_counter() - start) / iteration * (total - iteration)
            progress((iteration, total), desc=f"iteration {iteration}/{total} · residual {residual:.4f} · ~{left:.0f} s left")
            previews = [item[3] for item in news if item[3] is not None]
            yield (previews[-1] if previews else gr.skip()), f"Optimising… {iteration}/{total}", gr.skip(), gr.skip(), gr.skip()
        result = job.result
        files = [str(result.gaussians), str(result.point_cloud), str(result.turntable)]
        info = (f"**{result.num_gaussians} Gaussians** after {preset.iterations} iterations ({preset.name}) in "
                f"{time.perf_counter() - start:.0f} s · prompt `{result.prompt}`")
        yield gr.skip(), info, str(result.gaussians), str(result.turntable), files

    with gr.Tab("3D", id="threed") as tab:
        picker = identity_picker(ctx, "threed-identity-picker")
        prompt = gr.Textbox(DEFAULT_PROMPT, label="Prompt (write <id> for the person)", elem_id="threed-prompt")
        negative = gr.Textbox("", label="Negative prompt")
        with gr.Row():
            preset = gr.Dropdown(list(presets), value="preview", label="Preset (preview: minutes on a big GPU; quality: the reference run)")
            iterations = gr.Number(0, precision=0, minimum=0, maximum=MAX_ITERATIONS, label="Iterations (0 = the preset's)")
            seed = gr.Number(0, precision=0, minimum=0, label="Seed")
        with gr.Row():
            go = gr.Button("Make 3D", variant="primary", elem_id="threed-button")
            cancel = gr.Button("Cancel", variant="stop")
        status = gr.Markdown(elem_id="threed-info")
        with gr.Row():
            preview = gr.Image(label="Front view while optimising", interactive=False, height=300)
            model3d = gr.Model3D(label="Gaussians (.ply)", height=300)
            turntable = gr.Video(label="Turntable", height=300)
        files = gr.File(label="Downloads: Gaussians .ply, point cloud .ply, turntable .mp4", file_count="multiple", interactive=False)

    go.click(make, [picker.dropdown, prompt, negative, preset, iterations, seed],
             [preview, status, model3d, turntable, files], api_name="generate_3d", concurrency_id="gpu")
    cancel.click(ctx.cancel, None, status, api_name=False, concurrency_limit=None)
    picker.refresh_on(tab.select)
    return ThreeDTab(picker=picker.dropdown)
