"""The model manager: the single owner of every model in the process.

Pipelines and the learner ask it for components; it loads each model once, on
first use, on the chosen device and dtype, and hands out the same objects to
everyone (text-to-image, the learner and later pipelines share one UNet, VAE
and text encoder).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import torch

from .presets import ModelPreset, get_preset


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA if present, then Apple MPS, else CPU (``requested`` overrides)."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """Half precision for frozen weights on accelerators; fp32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


class ModelManager:
    """Lazily loads and shares the models of one preset."""

    def __init__(self, preset: ModelPreset | str = "sd21", device: str | None = None):
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device)
        self._models: dict[str, Any] = {}
        self._lock = threading.RLock()

    def _get(self, key: str, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._models:
                self._models[key] = load()
            return self._models[key]

    # --- components ---

    def base(self):
        """Tokenizer, text encoder, UNet, VAE and scheduler config of the base model."""
        from .loaders import load_base

        return self._get("base", lambda: load_base(self.preset.base, self.device, self.dtype))

    def face_encoder(self):
        from .loaders import load_face_encoder

        return self._get("face_encoder", lambda: load_face_encoder(self.preset.face_encoder, self.device, self.dtype))

    def face_parser(self):
        from .loaders import load_face_parser

        return self._get("face_parser", lambda: load_face_parser(self.preset.face_parser, self.device, self.dtype))

    def celeb_space(self):
        """Celebrity-name statistics of this base model (computed once per base)."""
        from .identity import CelebSpace

        def compute():
            base = self.base()
            return CelebSpace.from_text_encoder(base.tokenizer, base.text_encoder)

        return self._get("celeb_space", compute)

    # --- ready-to-use workers ---

    def face_preparer(self):
        from .face import FacePreparer, make_detector

        return self._get("face_preparer", lambda: FacePreparer(self.face_parser(), make_detector(self.preset.insightface)))

    def learner(self):
        from .training import IdentityLearner

        return self._get("learner", lambda: IdentityLearner(self.base(), self.face_encoder(), self.celeb_space()))

    def text_to_image(self):
        from .generate import IdentityTextToImage

        return self._get("text_to_image", lambda: IdentityTextToImage(self.base()))

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted(self._models)
