"""The Gradio app: one Blocks page with a tab per task, all on one in-process model manager.

Each tab is its own module with a ``build(ctx)`` function; this module lays out the
page, wires the tabs together (a new identity refreshes every identity picker)
and adds the API-only endpoints.
"""

from __future__ import annotations

import gradio as gr

from . import generate_tab, learn_tab, pose_tab, threed_tab, video_tab
from .common import AppContext

__all__ = ["AppContext", "build_app"]

OFFLINE_BANNER = (
    "⚠️ **Offline demo mode: small random models, images are noise — run with real weights for real results.**"
)
HOW_TO = (
    "1. **Learn identity**: upload one photo of a face, press *Learn* (about 450 steps). "
    "2. **Generate**: pick the identity and write `<id>` in the prompt where the person goes. "
    "3. **Pose**: the same, in a pose from a built-in skeleton, a reference photo or a skeleton image. "
    "4. **Video**: a short clip of the person from a motion prompt. "
    "5. **3D**: a Gaussian-splatting head of the person, with a turntable video."
)


def build_app(ctx: AppContext) -> gr.Blocks:
    """The whole page for ``ctx`` (model manager, identity library, public or local mode)."""
    with gr.Blocks(title="StableIdentity") as demo:
        gr.Markdown("# StableIdentity — one photo, any image\n" + HOW_TO)
        if ctx.manager.preset.is_tiny:
            gr.Markdown(OFFLINE_BANNER, elem_id="offline-banner")
        mode = "public: you see only your own identities" if ctx.public else "local"
        gr.Markdown(f"Preset **{ctx.manager.preset.name}** · device **{ctx.manager.device}** · {mode}")

        with gr.Tabs():
            learn = learn_tab.build(ctx)
            generate = generate_tab.build(ctx)
            pose = pose_tab.build(ctx)
            video = video_tab.build(ctx)
            threed = threed_tab.build(ctx)

        with gr.Accordion("Models and memory", open=False):
            status = gr.Markdown(ctx.manager.status())
            gr.Button("Refresh").click(ctx.manager.status, None, status, api_name="status", concurrency_limit=None)

        pickers = [generate.picker, pose.picker, video.picker, threed.picker]

        def refresh_pickers(*current, request: gr.Request):
            owner = ctx.owner(request)
            updates = [ctx.picker_update(owner, value) for value in current]
            return updates[0] if len(updates) == 1 else updates

        for event in learn.library_changed:
            event.success(refresh_pickers, pickers, pickers, api_name=False, concurrency_limit=None)
        demo.load(refresh_pickers, pickers, pickers, api_name=False, concurrency_limit=None)

        if ctx.public:  # a visitor's identities leave with their session

            def forget_session(request: gr.Request):
                ctx.library.forget_owner(ctx.owner(request))

            demo.unload(forget_session)

        @gr.api(api_name="list_identities", concurrency_limit=None)
        def list_identities(request: gr.Request) -> list[dict]:
            """The caller's identities: id, name, creation time."""
            return [{"id": e.id, "name": e.name, "created": e.created} for e in ctx.library.list(ctx.owner(request))]

    return demo
