"""Pose-conditioned generation: the identity drawn in a chosen pose with an OpenPose ControlNet.

A pose comes from one of three sources, all ending as an OpenPose skeleton image
of the output size:

- a built-in pose: OpenPose keypoint JSON in ``presets/poses/`` (works offline);
- a keypoint JSON file of your own, or a skeleton image used as it is;
- a reference photo, whose skeleton controlnet_aux's OpenPose detector finds.

Skeletons are drawn with controlnet_aux's own drawing helpers, so they look like
what the ControlNet was trained on. Keypoints are fitted into the output frame
keeping their aspect ratio, so any pose works at any output size.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from .errors import InvalidInputError
from .generate import GenerationResult, IdentityGenerator, dpm_solver
from .identity import Identity

POSES_DIR = Path(__file__).resolve().parent.parent / "presets" / "poses"
NUM_BODY_KEYPOINTS = 18  # OpenPose COCO-18
SOURCES = ("builtin", "json", "skeleton", "photo")


@functools.cache
def openpose_api() -> SimpleNamespace:
    """The parts of controlnet_aux's OpenPose we use (its package import warns about extras we skip)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from controlnet_aux.open_pose import Face, Hand, OpenposeDetector, PoseResult, draw_poses
        from controlnet_aux.open_pose.body import Body, BodyResult, Keypoint
        from controlnet_aux.open_pose.model import bodypose_model
    return SimpleNamespace(
        Body=Body, Hand=Hand, Face=Face, OpenposeDetector=OpenposeDetector, PoseResult=PoseResult,
        BodyResult=BodyResult, Keypoint=Keypoint, draw_poses=draw_poses, bodypose_model=bodypose_model,
    )


def builtin_poses() -> dict[str, Path]:
    """Built-in pose names (``waving``, ``sitting``...) and their keypoint files."""
    return {path.stem: path for path in sorted(POSES_DIR.glob("*.json"))}


# --- keypoints ----------------------------------------------------------------------------------


def read_pose_json(source: str | Path | dict) -> tuple[list[list[tuple[float, float] | None]], tuple[int, int]]:
    """People's body keypoints (pixels, None where missing) and the canvas size from OpenPose JSON."""
    try:
        data = source if isinstance(source, dict) else json.loads(Path(source).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"could not read the pose file {source}: {error}") from None
    people = data.get("people") if isinstance(data, dict) else None
    if not isinstance(people, list) or not people:
        raise InvalidInputError('a pose file needs a non-empty "people" list (OpenPose keypoint JSON)')
    width, height = data.get("canvas_width"), data.get("canvas_height")
    if not all(isinstance(v, (int, float)) and v > 0 for v in (width, height)):
        raise InvalidInputError('a pose file needs positive "canvas_width" and "canvas_height"')
    bodies = []
    for person in people:
        flat = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
        if not isinstance(flat, list) or len(flat) != 3 * NUM_BODY_KEYPOINTS:
            raise InvalidInputError(f'each person needs "pose_keypoints_2d" with {3 * NUM_BODY_KEYPOINTS} numbers (x, y, confidence for 18 points)')
        if not all(isinstance(v, (int, float)) for v in flat):
            raise InvalidInputError("pose keypoints must be numbers")
        triples = np.asarray(flat, dtype=float).reshape(-1, 3)
        bodies.append([(x, y) if c > 0 else None for x, y, c in triples])
    return bodies, (int(width), int(height))


def _fit(point: tuple[float, float], canvas: tuple[int, int], size: tuple[int, int]) -> tuple[float, float]:
    """A canvas pixel -> normalised output coordinates, fitting the canvas into the output (letterbox)."""
    (cw, ch), (w, h) = canvas, size
    scale = min(w / cw, h / ch)
    x = (w - cw * scale) / 2 + point[0] * scale
    y = (h - ch * scale) / 2 + point[1] * scale
    return x / w, y / h


def draw_skeleton(bodies: list[list[tuple[float, float] | None]], canvas: tuple[int, int], size: tuple[int, int]) -> Image.Image:
    """Draw body keypoints (canvas pixels) as an OpenPose skeleton of ``size`` with controlnet_aux."""
    op = openpose_api()
    poses = []
    for body in bodies:
        keypoints = [None if p is None else op.Keypoint(*_fit(p, canvas, size)) for p in body]
        poses.append(op.PoseResult(op.BodyResult(keypoints, total_score=0.0, total_parts=0), None, None, None))
    width, height = size
    return Image.fromarray(op.draw_poses(poses, height, width, draw_body=True, draw_hand=False, draw_face=False))


def check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if not 64 <= value <= 2048 or value % 8:
            raise InvalidInputError(f"{name} must be a multiple of 8 between 64 and 2048, got {value}")


def builtin_skeleton(name: str, width: int = 512, height: int = 512) -> Image.Image:
    poses = builtin_poses()
    if name not in poses:
        raise InvalidInputError(f"unknown pose '{name}': choose one of {', '.join(poses)} or give a file")
    check_size(width, height)
    bodies, canvas = read_pose_json(poses[name])
    return draw_skeleton(bodies, canvas, (width, height))


def looks_like_skeleton(image: Image.Image) -> bool:
    """OpenPose skeletons are mostly black with a few saturated strokes; photos are not."""
    rgb = np.asarray(image.convert("RGB").resize((128, 128)), dtype=np.int16)
    dark = (rgb.max(axis=2) < 30).mean()
    saturated = ((rgb.max(axis=2) - rgb.min(axis=2)) > 120).mean()
    return dark > 0.7 and saturated > 0.003


def skeleton_from_photo(openpose, photo: Image.Image, width: int, height: int) -> tuple[Image.Image, int]:
    """Detect people's body pose in a photo and draw it at the output size; returns (skeleton, people)."""
    check_size(width, height)
    scale = 512 / max(photo.size)  # detect at about 512 px, as controlnet_aux does
    size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
    small = np.asarray(photo.convert("RGB").resize(size))
    poses = openpose.detector.detect_poses(small)
    canvas = (small.shape[1], small.shape[0])
    bodies = [[None if k is None else (k.x * canvas[0], k.y * canvas[1]) for k in pose.body.keypoints] for pose in poses]
    return draw_skeleton(bodies, canvas, (width, height)), len(bodies)


def pose_skeleton(source: str, value: Any, width: int, height: int, openpose_factory=None) -> tuple[Image.Image, str]:
    """The skeleton for a pose ``source`` (one of :data:`SOURCES`); returns it and a note for the user.

    ``value`` is a built-in name, a JSON path, or an image (path or PIL). ``openpose_factory()``
    gives the loaded detector, only called for photos.
    """
    from .face import load_photo

    check_size(width, height)
    if source == "builtin":
        return builtin_skeleton(str(value), width, height), f"built-in pose '{value}'"
    if source == "json":
        bodies, canvas = read_pose_json(value)
        return draw_skeleton(bodies, canvas, (width, height)), f"{len(bodies)} person(s) from the pose file"
    image = load_photo(value)
    if source == "skeleton":
        return image.convert("RGB").resize((width, height)), "skeleton image used as it is"
    if source == "photo":
        skeleton, people = skeleton_from_photo(openpose_factory(), image, width, height)
        if people == 0:
            raise InvalidInputError("no person's pose was found in the reference photo: try a full-body photo, or a built-in pose")
        return skeleton, f"{people} person(s) detected in the reference photo"
    raise InvalidInputError(f"unknown pose source '{source}': choose one of {', '.join(SOURCES)}")


def guess_source(spec: str) -> str:
    """For the CLI's ``--pose``: a built-in name, a .json file, or an image (skeleton or photo)."""
    if spec in builtin_poses():
        return "builtin"
    path = Path(spec)
    if path.suffix.lower() == ".json":
        return "json"
    if not path.is_file():
        raise InvalidInputError(f"'{spec}' is neither a built-in pose ({', '.join(builtin_poses())}) nor a file")
    from .face import load_photo

    return "skeleton" if looks_like_skeleton(load_photo(path)) else "photo"


# --- the pipeline ------------------------------------------------------------------------------


class IdentityPoseToImage(IdentityGenerator):
    """Identity + pose skeleton -> images, with the OpenPose ControlNet on the shared base components."""

    def __init__(self, base, controlnet):
        from diffusers import StableDiffusionControlNetPipeline

        pipe = StableDiffusionControlNetPipeline(
            vae=base.vae,
            text_encoder=base.text_encoder,
            tokenizer=base.tokenizer,
            unet=base.unet,
            controlnet=controlnet,
            scheduler=dpm_solver(base),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        super().__init__(base, pipe)

    def __call__(
        self,
        identity: Identity,
        prompt: str,
        skeleton: Image.Image,
        *,
        controlnet_scale: float = 1.0,
        guidance_end: float = 1.0,
        **settings,
    ) -> GenerationResult:
        """Generate images of the identity in the skeleton's pose (resized to the output size)."""
        if not 0.0 <= controlnet_scale <= 2.0:
            raise InvalidInputError(f"ControlNet conditioning scale must be between 0 and 2, got {controlnet_scale}")
        if not 0.0 < guidance_end <= 1.0:
            raise InvalidInputError(f"guidance end must be in (0, 1], got {guidance_end}")
        width, height = settings.get("width", 512), settings.get("height", 512)
        control = skeleton.convert("RGB").resize((width, height))
        output, prompt, seeds, notes = self.run(
            identity, prompt, image=control, controlnet_conditioning_scale=controlnet_scale,
            control_guidance_end=guidance_end, **settings,
        )
        return GenerationResult(output.images, prompt, seeds, notes)
