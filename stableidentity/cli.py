"""Command line: ``python -m stableidentity learn|generate ...``.

Bad input (missing file, not an image, no face, incompatible identity file,
out-of-range values) prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .errors import StableIdentityError
from .presets import PRESET_NAMES

EXIT_BAD_INPUT = 2


def _model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESET_NAMES, default="sd21", help="model preset (tiny = offline demo, images are noise)")
    parser.add_argument("--base", help="Stable Diffusion 2.x repo id or folder (env STABLEIDENTITY_BASE)")
    parser.add_argument("--face-encoder", help="face-recognition ViT repo id or folder (env STABLEIDENTITY_FACE_ENCODER)")
    parser.add_argument("--face-parser", help="SegFormer face parser repo id or folder (env STABLEIDENTITY_FACE_PARSER)")
    parser.add_argument("--insightface", help="insightface pack name or folder, 'none' for the offline detector (env STABLEIDENTITY_INSIGHTFACE)")
    parser.add_argument("--controlnet", help="OpenPose ControlNet repo id or folder (env STABLEIDENTITY_CONTROLNET)")
    parser.add_argument("--openpose", help="OpenPose annotator repo id or folder (env STABLEIDENTITY_OPENPOSE)")
    parser.add_argument("--video", help="ModelScope text-to-video repo id or folder (env STABLEIDENTITY_VIDEO)")
    parser.add_argument("--device", help="torch device (default: cuda, then mps, then cpu)")


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line and exit 2, like every other bad input."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m stableidentity", description="StableIdentity: put a person from one photo into generated images.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    learn = sub.add_parser("learn", help="learn an identity file from one face photo")
    learn.add_argument("photo", type=Path, help="a photo with a clearly visible face")
    learn.add_argument("-o", "--output", type=Path, default=Path("identity.safetensors"), help="identity file to write")
    learn.add_argument("--steps", type=int, default=450, help="training steps (default 450)")
    learn.add_argument("--seed", type=int, default=0, help="random seed (same seed, same identity)")
    _model_flags(learn)

    gen = sub.add_parser("generate", help="generate images of a learned identity")
    _generation_flags(gen)

    pose = sub.add_parser("pose", help="generate images of a learned identity in a given pose")
    _generation_flags(pose)
    pose.add_argument("--pose", required=True, help="built-in pose name, keypoint FILE.json, SKELETON.png or PHOTO.jpg")
    pose.add_argument("--pose-source", choices=["auto", "skeleton", "photo"], default="auto",
                      help="how to read an image given to --pose (auto: a mostly black image is a skeleton)")
    pose.add_argument("--controlnet-scale", type=float, default=1.0, help="ControlNet conditioning scale (default 1.0)")
    pose.add_argument("--guidance-end", type=float, default=1.0, help="fraction of steps the pose guides (default 1.0)")

    video = sub.add_parser("video", help="make a short video of a learned identity")
    video.add_argument("identity", type=Path, help="identity .safetensors file from 'learn'")
    video.add_argument("prompt", help="prompt; write <id> where the person goes, e.g. '<id> walking on a beach'")
    video.add_argument("--frames", type=int, default=16, help="number of frames (8-32, default 16)")
    video.add_argument("--fps", type=int, default=8, help="frames per second (default 8)")
    video.add_argument("-o", "--output", type=Path, default=Path("video.mp4"), help="output .mp4 (H.264) or .gif")
    video.add_argument("--seed", type=int, default=None, help="random seed (default: random; printed)")
    video.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    video.add_argument("--guidance", type=float, default=9.0, help="classifier-free guidance (default 9)")
    video.add_argument("--negative", default=None, help="negative prompt")
    video.add_argument("--width", type=int, default=256, help="width (default 256, as the model was trained)")
    video.add_argument("--height", type=int, default=256)
    video.add_argument("--offload", action="store_true", help="model CPU offload for small GPUs (slower)")
    _model_flags(video)

    threed = sub.add_parser("threed", help="make a 3D Gaussian-splatting head of a learned identity")
    threed.add_argument("identity", type=Path, help="identity .safetensors file from 'learn'")
    threed.add_argument("prompt", help="prompt; write <id> where the person goes, e.g. 'a DSLR photo of <id>'")
    threed.add_argument("--preset-3d", default="preview", help="3D preset: preview, standard or quality (presets/threed.json)")
    threed.add_argument("--iterations", type=int, default=None, help="override the preset's iteration count")
    threed.add_argument("-o", "--output-dir", type=Path, default=Path("outputs/3d"), help="folder for .ply files and the MP4")
    threed.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    threed.add_argument("--negative", default="", help="negative prompt")
    _model_flags(threed)
    return parser


def _generation_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("identity", type=Path, help="identity .safetensors file from 'learn'")
    parser.add_argument("prompt", help="prompt; write <id> where the person goes, e.g. '<id> as an astronaut'")
    parser.add_argument("-n", "--num-images", type=int, default=1, help="images to generate (1-4)")
    parser.add_argument("-o", "--output-dir", type=Path, default=Path("outputs"), help="folder for the PNGs")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random; printed)")
    parser.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    parser.add_argument("--guidance", type=float, default=8.5, help="classifier-free guidance (default 8.5)")
    parser.add_argument("--negative", default=None, help="negative prompt (default: a general-quality one)")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    _model_flags(parser)


def _manager(args):
    from .manager import ModelManager
    from .presets import get_preset

    from .presets import ENV_OVERRIDES

    preset = get_preset(args.preset, **{field: getattr(args, field) for field in ENV_OVERRIDES})
    if preset.is_tiny:
        print("note: tiny preset: small random models, outputs are noise (plumbing check only)", file=sys.stderr)
    return ModelManager(preset, device=args.device)


def cmd_learn(args) -> int:
    from tqdm import tqdm

    from .errors import InvalidInputError

    if args.output.suffix != ".safetensors":
        raise InvalidInputError(f"the output must end in .safetensors, got {args.output}")
    manager = _manager(args)
    face = manager.face_preparer()(args.photo)
    print(f"found {face.num_faces} face(s); using the largest ({face.detector} detector)", file=sys.stderr)
    learner = manager.learner()
    start = time.perf_counter()
    with tqdm(total=args.steps, desc="learning", unit="step") as bar:

        def on_step(step: int, total: int, loss: float) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")

        identity = learner(face, steps=args.steps, seed=args.seed, callback=on_step)
    path = identity.save(args.output)
    elapsed = time.perf_counter() - start
    print(f"saved {path} ({args.steps} steps in {elapsed:.1f} s, final loss {identity.metadata['final_loss']})")
    return 0


def _identity_and_manager(args, group: str = "base"):
    """The identity file, checked against the token width of the model group that will use it."""
    from .identity import Identity

    Identity.load(args.identity)  # fail fast on a bad file, before loading models
    manager = _manager(args)
    return Identity.load(args.identity, token_width=manager.group(group).token_width), manager


def _settings(args) -> dict:
    from .generate import DEFAULT_NEGATIVE

    return dict(
        negative_prompt=DEFAULT_NEGATIVE if args.negative is None else args.negative,
        num_images=args.num_images, steps=args.steps, guidance=args.guidance,
        width=args.width, height=args.height, seed=args.seed,
    )


def _save_images(args, result, extra=()) -> None:
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, image in extra:
        image.save(args.output_dir / name)
        print(args.output_dir / name)
    for image, seed in zip(result.images, result.seeds):
        path = args.output_dir / f"{args.identity.stem}-seed{seed}.png"
        image.save(path)
        print(f"{path}  (seed {seed})")
    print(f"prompt: {result.prompt}")


def cmd_generate(args) -> int:
    identity, manager = _identity_and_manager(args)
    _save_images(args, manager.text_to_image()(identity, args.prompt, **_settings(args)))
    return 0


def cmd_pose(args) -> int:
    from .pose import guess_source, pose_skeleton

    source = guess_source(args.pose)
    if source in ("skeleton", "photo") and args.pose_source != "auto":
        source = args.pose_source
    identity, manager = _identity_and_manager(args)
    skeleton, note = pose_skeleton(source, args.pose, args.width, args.height, manager.openpose)
    print(f"pose: {note}", file=sys.stderr)
    result = manager.pose_to_image()(
        identity, args.prompt, skeleton, controlnet_scale=args.controlnet_scale, guidance_end=args.guidance_end,
        **_settings(args),
    )
    _save_images(args, result, extra=[(f"{args.identity.stem}-pose.png", skeleton)])
    return 0


def cmd_video(args) -> int:
    from tqdm import tqdm

    from .errors import InvalidInputError
    from .video import check_video_settings

    if args.output.suffix.lower() not in (".mp4", ".gif"):
        raise InvalidInputError(f"the output must end in .mp4 or .gif, got {args.output}")
    check_video_settings(args.frames, args.fps)  # before loading any model
    identity, manager = _identity_and_manager(args, group="video")
    manager.video_offload = args.offload
    with tqdm(total=args.steps, desc="denoising", unit="step") as bar:
        result = manager.text_to_video()(
            identity, args.prompt, frames=args.frames, fps=args.fps, steps=args.steps, guidance=args.guidance,
            width=args.width, height=args.height, seed=args.seed,
            negative_prompt="" if args.negative is None else args.negative,
            callback=lambda step, total: bar.update(1),
        )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    with tqdm(total=args.frames, desc="encoding", unit="frame") as bar:
        path = result.save(args.output, fps=args.fps, on_frame=lambda i, n: bar.update(1))
    print(f"{path}  ({args.frames} frames at {args.fps} fps, seed {result.seed})")
    print(f"prompt: {result.prompt}")
    return 0


def cmd_threed(args) -> int:
    from tqdm import tqdm

    from .threed.pipeline import make_3d
    from .threed.trainer import get_preset as get_3d_preset

    preset = get_3d_preset(args.preset_3d, args.iterations)  # before loading any model
    identity, manager = _identity_and_manager(args)
    with tqdm(total=preset.iterations, desc="3D", unit="it") as bar:

        def on_iteration(iteration, total, loss, preview):
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            if preview is not None:
                preview.save(args.output_dir / "preview.png")

        args.output_dir.mkdir(parents=True, exist_ok=True)
        with manager.job("making 3D"):
            result = make_3d(manager, identity, args.prompt, preset, args.output_dir, seed=args.seed,
                             negative_prompt=args.negative, callback=on_iteration)
    for path in (result.gaussians, result.point_cloud, result.turntable):
        print(path)
    print(f"{result.num_gaussians} Gaussians after {preset.iterations} iterations ({preset.name}); prompt: {result.prompt}")
    return 0


def _quiet_libraries() -> None:
    """Library chatter (load reports, download bars) would bury our one-line messages."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or bad arguments (already printed as one line)
        return int(exit_.code or 0)
    try:
        _quiet_libraries()
        return {"learn": cmd_learn, "generate": cmd_generate, "pose": cmd_pose, "video": cmd_video, "threed": cmd_threed}[args.command](args)
    except StableIdentityError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
