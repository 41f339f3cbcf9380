"""Loading the method's models with ``from_pretrained``, for real and tiny presets alike.

Each loader takes a source (hub repo id or local folder) and turns every failure
into a :class:`ModelLoadError` that names the model and how to fix it.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import ModelLoadError, StableIdentityError
from .hub import hub_reachable, offline_requested
from .presets import ENV_OVERRIDES, SD21_BASE_MIRRORS


@dataclass
class BaseModels:
    """The frozen Stable Diffusion 2.x components every pipeline shares."""

    source: str
    tokenizer: Any  # transformers CLIPTokenizer
    text_encoder: Any  # transformers CLIPTextModel
    unet: Any  # diffusers UNet2DConditionModel
    vae: Any  # diffusers AutoencoderKL
    scheduler_config: dict

    @property
    def token_width(self) -> int:
        return self.text_encoder.get_input_embeddings().embedding_dim


@dataclass
class FaceEncoder:
    """Face-recognition ViT and its image processor; features = CLS token."""

    source: str
    model: Any  # transformers ViTModel
    processor: Any  # transformers ViTImageProcessor

    @property
    def feature_dim(self) -> int:
        return self.model.config.hidden_size


@dataclass
class FaceParser:
    """Semantic face parser (SegFormer) and its image processor."""

    source: str
    model: Any  # transformers SegformerForSemanticSegmentation
    processor: Any  # transformers SegformerImageProcessor


def _local_only(source: str) -> bool:
    """Load from disk/cache only when the source is a folder or the hub is out of reach."""
    return Path(source).expanduser().is_dir() or not hub_reachable()


def _why(error: Exception) -> str:
    text = str(error).strip().splitlines()
    reason = text[0] if text else type(error).__name__
    return reason if len(reason) <= 240 else reason[:237] + "..."


@contextmanager
def _loading(what: str, source: str, field: str, hint: str = "") -> Iterator[None]:
    """Turn any failure inside the block into a ModelLoadError naming the model and the fix."""
    try:
        yield
    except StableIdentityError:
        raise
    except Exception as error:  # noqa: BLE001 - every loader failure becomes a user-facing message
        where = "a local folder" if Path(source).expanduser().is_dir() else "the hub"
        if where == "the hub" and offline_requested():
            cause = "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
        elif where == "the hub" and not hub_reachable():
            cause = "the hub is unreachable and it is not in the local Hugging Face cache"
        else:
            cause = _why(error)
        raise ModelLoadError(
            f"could not load the {what} from '{source}' ({where}): {cause}. "
            f"Set {ENV_OVERRIDES[field]} (or the matching --flag) to a local folder or another repo id"
            f"{hint}, or use --preset tiny for the offline demo."
        ) from error


def _load_diffusion_parts(source: str, unet_class, what: str, field: str, hint: str, device, dtype) -> BaseModels:
    """Tokenizer, text encoder, UNet, VAE and scheduler config of a diffusers pipeline folder or repo."""
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    with _loading(what, source, field, hint):
        kw = dict(local_files_only=_local_only(source))
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kw)
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype, **kw)
        unet = unet_class.from_pretrained(source, subfolder="unet", torch_dtype=dtype, **kw)
        vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **kw)
        scheduler_config = DDPMScheduler.load_config(source, subfolder="scheduler", **kw)
    for model in (text_encoder, unet, vae):
        model.requires_grad_(False).eval().to(device)
    return BaseModels(source, tokenizer, text_encoder, unet, vae, dict(scheduler_config))


def load_base(source: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> BaseModels:
    """Load Stable Diffusion 2.x tokenizer, text encoder, UNet, VAE and scheduler config."""
    from diffusers import UNet2DConditionModel

    mirrors = " (mirrors of SD2.1-base: " + ", ".join(SD21_BASE_MIRRORS) + ")"
    return _load_diffusion_parts(source, UNet2DConditionModel, "Stable Diffusion base model", "base", mirrors, device, dtype)


def load_video(source: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> BaseModels:
    """Load ModelScope text-to-video: its own text encoder (OpenCLIP family), 3D UNet and VAE."""
    from diffusers import UNet3DConditionModel

    return _load_diffusion_parts(source, UNet3DConditionModel, "text-to-video model", "video", "", device, dtype)


def load_face_encoder(source: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> FaceEncoder:
    """Load the face-recognition ViT (a classifier checkpoint loads into the bare ViTModel)."""
    from transformers import ViTImageProcessor, ViTModel

    with _loading("face-recognition ViT", source, "face_encoder"):
        kw = dict(local_files_only=_local_only(source))
        processor = ViTImageProcessor.from_pretrained(source, **kw)
        model = ViTModel.from_pretrained(source, add_pooling_layer=False, dtype=dtype, **kw)
    model.requires_grad_(False).eval().to(device)
    return FaceEncoder(source, model, processor)


def load_face_parser(source: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> FaceParser:
    """Load the SegFormer face parser."""
    from transformers import SegformerForSemanticSegmentation, SegformerImageProcessor

    with _loading("face parser", source, "face_parser"):
        kw = dict(local_files_only=_local_only(source))
        processor = SegformerImageProcessor.from_pretrained(source, **kw)
        model = SegformerForSemanticSegmentation.from_pretrained(source, dtype=dtype, **kw)
    model.requires_grad_(False).eval().to(device)
    return FaceParser(source, model, processor)


def load_controlnet(source: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """Load the OpenPose ControlNet for SD2.1 (diffusers ``ControlNetModel``)."""
    from diffusers import ControlNetModel

    with _loading("pose ControlNet", source, "controlnet"):
        model = ControlNetModel.from_pretrained(source, torch_dtype=dtype, local_files_only=_local_only(source))
    return model.requires_grad_(False).eval().to(device)


@dataclass
class OpenPose:
    """controlnet_aux's OpenPose detector; body always, hands and face when their files exist.

    The networks are also fields, so the model manager can see and move them.
    """

    source: str
    detector: Any  # controlnet_aux OpenposeDetector
    body: torch.nn.Module
    hand: torch.nn.Module | None = None
    face: torch.nn.Module | None = None


def load_openpose(source: str, device: torch.device | str = "cpu") -> OpenPose:
    """Load the OpenPose annotator weights (lllyasviel/Annotators layout) into controlnet_aux."""
    from .pose import openpose_api

    op = openpose_api()
    with _loading("OpenPose annotator", source, "openpose"):
        body = op.Body(_annotator_file(source, "body_pose_model.pth"))
    extras = []
    for name, cls in (("hand_pose_model.pth", op.Hand), ("facenet.pth", op.Face)):
        try:
            extras.append(cls(_annotator_file(source, name)))
        except Exception:  # noqa: BLE001 - hands and face are extras; the body is enough
            extras.append(None)
    hand, face = extras
    networks = [n.model.requires_grad_(False).eval().to(device) if n is not None else None for n in (body, hand, face)]
    return OpenPose(source, op.OpenposeDetector(body, hand, face), *networks)


def _annotator_file(source: str, filename: str) -> str:
    """A file of an annotator repo: from the folder, the local cache or the hub."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        path = folder / filename
        if not path.is_file():
            raise FileNotFoundError(f"{filename} is not in {folder}")
        return str(path)
    from huggingface_hub import hf_hub_download

    return hf_hub_download(source, filename, local_files_only=_local_only(source))
