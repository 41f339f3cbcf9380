"""Full-size architectures with random weights, written in the real repos' layouts.

Compute cost does not depend on weight values, so timing these is timing the real
models, without downloading anything. The configurations below are the published
ones (SD2.1-base, its OpenCLIP ViT-H/14 text tower, a ViT-base face encoder and
ModelScope's text-to-video 3D UNet); they are written out like
:mod:`stableidentity.tiny` writes the tiny set, so the project's own loaders load
them. Weights are stored in float16 to halve disk and write time; the loaders cast
them to whatever dtype the device uses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch

from stableidentity.presets import ModelPreset, get_preset
from stableidentity.tiny import VOCAB_SIZE, write_clip_tokenizer

SEED = 0
STORAGE_DTYPE = torch.float16

# stable-diffusion-2-1-base/unet/config.json
SD21_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024,
    use_linear_projection=True,
    norm_num_groups=32,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    act_fn="silu",
)

# stable-diffusion-2-1-base/vae/config.json (SD's KL-f8 autoencoder)
SD21_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    act_fn="silu",
    sample_size=512,
    scaling_factor=0.18215,
)

# OpenCLIP ViT-H/14 text tower as SD2.x ships it (the last of 24 layers dropped).
OPENCLIP_H_TEXT = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    max_position_embeddings=77,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    projection_dim=512,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=0,
)

# vit-base-patch16-224-in21k-face-recognition (a ViT-base classifier)
FACE_VIT = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    image_size=224,
    patch_size=16,
)
FACE_VIT_CLASSES = 100

# text-to-video-ms-1.7b/unet/config.json
MODELSCOPE_UNET3D = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=64,
    cross_attention_dim=1024,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
)

# Both repos' scheduler configs (PNDM for SD2.1-base, DDIM for ModelScope) share these numbers.
SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


def _drop_extra_tokenizer_files(folder: Path) -> None:
    """save_pretrained rewrites the tokenizer; keep the real repo's four files, as tiny.py does."""
    for extra in ("tokenizer.json", "chat_template.jinja"):
        (folder / extra).unlink(missing_ok=True)
    write_clip_tokenizer(folder)


def write_sd21(out: Path) -> None:
    """A StableDiffusionPipeline folder with SD2.1-base's architecture and random weights."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(SEED)
    write_clip_tokenizer(out / "tokenizer")
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**SD21_VAE).to(STORAGE_DTYPE),
        text_encoder=CLIPTextModel(CLIPTextConfig(**OPENCLIP_H_TEXT)).to(STORAGE_DTYPE),
        tokenizer=CLIPTokenizer.from_pretrained(out / "tokenizer"),
        unet=UNet2DConditionModel(**SD21_UNET).to(STORAGE_DTYPE),
        scheduler=PNDMScheduler(skip_prk_steps=True, **SCHEDULER),
        safety_checker=None,
        feature_extractor=CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224}),
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    _drop_extra_tokenizer_files(out / "tokenizer")


def write_face_encoder(out: Path) -> None:
    """A ViT-base image classifier folder like the face-recognition ViT repo."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(SEED + 1)
    labels = {i: f"person_{i}" for i in range(FACE_VIT_CLASSES)}
    config = ViTConfig(**FACE_VIT, id2label=labels, label2id={v: k for k, v in labels.items()})
    ViTForImageClassification(config).to(STORAGE_DTYPE).save_pretrained(out, safe_serialization=True)
    ViTImageProcessor(
        do_resize=True, size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(out)


def write_text_to_video(out: Path, base_dir: Path) -> None:
    """A TextToVideoSDPipeline folder with ModelScope's 3D UNet; text encoder and VAE as SD2.1's."""
    from diffusers import AutoencoderKL, DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(SEED + 5)
    pipe = TextToVideoSDPipeline(
        vae=AutoencoderKL.from_pretrained(base_dir / "vae", torch_dtype=STORAGE_DTYPE),
        text_encoder=CLIPTextModel.from_pretrained(base_dir / "text_encoder", dtype=STORAGE_DTYPE),
        tokenizer=CLIPTokenizer.from_pretrained(base_dir / "tokenizer"),
        unet=UNet3DConditionModel(**MODELSCOPE_UNET3D).to(STORAGE_DTYPE),
        scheduler=DDIMScheduler(clip_sample=False, **SCHEDULER),
    )
    pipe.save_pretrained(out, safe_serialization=True)
    _drop_extra_tokenizer_files(out / "tokenizer")


def _once(folder: Path, write: Callable[[], None]) -> None:
    """Write a folder unless a finished copy is there (``--models-dir`` keeps them between runs)."""
    marker = folder / ".bench-complete"
    if not marker.exists():
        write()
        marker.write_text("1")


def write_full_size(root: Path, video: bool = False) -> ModelPreset:
    """Write the full-size folders under ``root`` (the video model only if asked) and return a preset.

    The face parser, ControlNet and OpenPose entries point at the tiny set: no
    benchmark here loads them at full size.
    """
    base, face = root / "stable-diffusion-2-1-base", root / "face-recognition-vit"
    video_dir = root / "text-to-video-ms-1.7b"
    _once(base, lambda: write_sd21(base))
    _once(face, lambda: write_face_encoder(face))
    if video:
        _once(video_dir, lambda: write_text_to_video(video_dir, base))
    tiny = get_preset("tiny")
    return dataclasses.replace(
        tiny, name="full-size-random", base=str(base), face_encoder=str(face), video=str(video_dir)
    )
