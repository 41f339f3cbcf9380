"""StableIdentity app: learn a person from one photo, then put them into generated images.

    python app.py [--preset auto|sd21|tiny] [--share] [--host H] [--port P]

``auto`` uses the real models when their weights are in the local Hugging Face
cache or the hub answers within seconds, and otherwise the tiny offline preset
(small random models: the app works end to end, but images are noise).
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

from stableidentity.hub import hub_reachable
from stableidentity.presets import get_preset

log = logging.getLogger("stableidentity")
DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"
QUEUE_SIZE = 20  # waiting jobs beyond this are turned away with a "queue full" message


def on_spaces() -> bool:
    return bool(os.environ.get("SPACE_ID"))


def real_weights_available() -> bool:
    """The real base model is a local folder, in the local HF cache, or the hub is reachable."""
    from huggingface_hub import try_to_load_from_cache

    base = get_preset("sd21").base
    if Path(base).expanduser().is_dir():
        return True
    if isinstance(try_to_load_from_cache(base, "unet/config.json"), str):
        return True
    return hub_reachable()


def choose_preset(name: str) -> str:
    if name != "auto":
        return name
    if real_weights_available():
        return "sd21"
    log.warning("offline demo mode: real weights not found and the hub is unreachable; using the tiny preset")
    return "tiny"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="StableIdentity: one photo, any image.")
    parser.add_argument("--preset", choices=["auto", "sd21", "tiny"], default="auto", help="models to use (default auto)")
    parser.add_argument("--share", action="store_true", help="also create a public share link (implies --public)")
    parser.add_argument("--public", action="store_true", help="each browser session sees only its own identities")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("STABLEIDENTITY_DATA", DEFAULT_DATA_DIR)),
                        help="where the identity library lives in local use")
    parser.add_argument("--device", help="torch device (default: cuda, then mps, then cpu)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request would bury ours
    args = parse_args(argv)
    from stableidentity.library import IdentityLibrary
    from stableidentity.manager import ModelManager
    from stableidentity.ui import AppContext, build_app

    public = args.public or args.share or on_spaces()
    preset = choose_preset(args.preset)
    manager = ModelManager(get_preset(preset), device=args.device)
    # A public app keeps nothing beyond a visitor's session: its library is temporary.
    data_dir = Path(tempfile.mkdtemp(prefix="stableidentity-")) if public else args.data_dir
    ctx = AppContext(manager, IdentityLibrary(data_dir / "identities"), public)
    log.info("preset %s on %s; %s library in %s", preset, manager.device, "public" if public else "local", data_dir)
    demo = build_app(ctx)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, ssr_mode=False)


if __name__ == "__main__":
    main()
