"""StableIdentity app: learn an identity from one photo, then generate images of that person.

Run ``python app.py`` and open the printed address. ``--preset tiny`` (chosen
automatically when the real weights can't be had) is the offline demo: its
models are small and random, so its images are noise.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import gradio as gr

from stableidentity.errors import StableIdentityError
from stableidentity.generate import DEFAULT_NEGATIVE
from stableidentity.hub import hub_reachable
from stableidentity.identity import Identity
from stableidentity.manager import ModelManager
from stableidentity.presets import get_preset

OFFLINE_BANNER = (
    "**Offline demo mode**: small random models, images are noise — run with real weights for real results."
)


def choose_preset(name: str) -> str:
    """``auto``: the real models when the hub answers within seconds, else the tiny offline set."""
    if name != "auto":
        return name
    return "sd21" if hub_reachable() else "tiny"


def build_app(manager: ModelManager) -> gr.Blocks:
    out_dir = Path(tempfile.mkdtemp(prefix="stableidentity-"))

    def learn(photo, steps, seed, progress=gr.Progress()):
        if photo is None:
            raise gr.Error("Upload a photo with a clearly visible face first.")
        try:
            face = manager.face_preparer()(photo)
            identity = manager.learner()(
                face,
                steps=int(steps),
                seed=int(seed),
                callback=lambda s, n, loss: progress((s, n), desc=f"step {s}/{n}, loss {loss:.4f}"),
            )
        except StableIdentityError as error:
            raise gr.Error(str(error)) from None
        path = identity.save(out_dir / f"identity-seed{int(seed)}.safetensors")
        return face.overlay(), str(path), str(path)

    def generate(identity_path, prompt, negative, num_images, steps, guidance, seed):
        if not identity_path:
            raise gr.Error("Learn an identity (or upload an identity file) first.")
        try:
            identity = Identity.load(identity_path, token_width=manager.base().token_width)
            result = manager.text_to_image()(
                identity, prompt, negative_prompt=negative, num_images=int(num_images),
                steps=int(steps), guidance=float(guidance), seed=int(seed),
            )
        except StableIdentityError as error:
            raise gr.Error(str(error)) from None
        captions = [(im, f"seed {s}: {result.prompt}") for im, s in zip(result.images, result.seeds)]
        return captions

    with gr.Blocks(title="StableIdentity") as demo:
        gr.Markdown("# StableIdentity\nLearn a person from **one photo**, then write `<id>` in a prompt.")
        if manager.preset.is_tiny:
            gr.Markdown(OFFLINE_BANNER)
        gr.Markdown(f"Preset: `{manager.preset.name}` · device: `{manager.device}`")
        identity_file = gr.State(None)
        with gr.Row():
            photo = gr.Image(type="filepath", label="Face photo")
            overlay = gr.Image(label="Aligned face (green: face mask, blue: hair)")
        with gr.Row():
            steps = gr.Slider(1, 1000, value=450, step=1, label="Steps")
            seed = gr.Number(0, precision=0, label="Seed")
        learn_btn = gr.Button("Learn", variant="primary")
        download = gr.File(label="Identity file")
        learn_btn.click(learn, [photo, steps, seed], [overlay, download, identity_file], api_name="learn")

        prompt = gr.Textbox("a photo of <id> as an astronaut, best quality", label="Prompt")
        negative = gr.Textbox(DEFAULT_NEGATIVE, label="Negative prompt")
        with gr.Row():
            n = gr.Slider(1, 4, value=1, step=1, label="Images")
            gsteps = gr.Slider(1, 150, value=25, step=1, label="Steps")
            guidance = gr.Slider(0, 30, value=8.5, step=0.5, label="Guidance")
            gseed = gr.Number(0, precision=0, label="Seed")
        gen_btn = gr.Button("Generate", variant="primary")
        gallery = gr.Gallery(label="Images")
        gen_btn.click(generate, [identity_file, prompt, negative, n, gsteps, guidance, gseed], gallery, api_name="generate")
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["auto", "sd21", "tiny"], default="auto")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args()
    preset = choose_preset(args.preset)
    if preset == "tiny":
        print("StableIdentity: offline demo mode (tiny random models; images are noise)")
    manager = ModelManager(get_preset(preset))
    build_app(manager).queue(max_size=16).launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
