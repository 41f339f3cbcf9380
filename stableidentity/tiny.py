"""Writes the offline ``tiny`` preset: small random-weight models in the real repos' layouts.

No weights can be downloaded on our machines, so tests and the offline demo run on
models built here, seeded, and saved exactly where and how the real ones are laid
out (a diffusers pipeline folder with ``model_index.json``; a ViT and a SegFormer
folder with their processor configs). They are then loaded by the same
``from_pretrained`` code as the real preset. Their outputs are noise: they prove
plumbing, never quality.

Shapes follow the real architectures in kind: an SD2-style UNet (linear attention
projections, cross-attention width = text width), a VAE that downsamples by 8, and
a CLIP text encoder with the real CLIP BPE vocabulary (taken from the merges file
that ``open_clip_torch`` ships) and SD2's padding token ``!``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

# Bump when the layout or shapes change, so stale caches are rebuilt.
TINY_VERSION = "4"
SEED = 0
TEXT_WIDTH = 32  # token-embedding width d (1024 in SD2.1)
VOCAB_SIZE = 49408

# The real jonathandinu/face-parsing label names (CelebAMask-HQ classes).
FACE_PARSER_LABELS = [
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear",
    "r_ear", "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
]


def cache_dir() -> Path:
    """Root folder for files this project builds (``STABLEIDENTITY_CACHE`` overrides)."""
    root = os.environ.get("STABLEIDENTITY_CACHE") or Path.home() / ".cache" / "stableidentity"
    return Path(root)


def ensure_tiny_models(root: Path | None = None) -> dict[str, Path]:
    """Build the tiny models once (atomically) and return their folders."""
    target = (root or cache_dir()) / f"tiny-v{TINY_VERSION}"
    paths = {
        "base": target / "stable-diffusion-2-1-base",
        "face_encoder": target / "face-recognition-vit",
        "face_parser": target / "face-parsing",
        "controlnet": target / "controlnet-sd21-openpose",
        "openpose": target / "openpose-annotators",
        "video": target / "text-to-video-ms-1.7b",
    }
    if (target / ".complete").exists():
        return paths

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=target.parent))
    try:
        write_tiny_sd21(staging / paths["base"].name)
        write_tiny_face_encoder(staging / paths["face_encoder"].name)
        write_tiny_face_parser(staging / paths["face_parser"].name)
        write_tiny_controlnet(staging / paths["controlnet"].name, staging / paths["base"].name / "unet")
        write_tiny_openpose(staging / paths["openpose"].name)
        write_tiny_text_to_video(staging / paths["video"].name, staging / paths["base"].name)
        (staging / ".complete").write_text(TINY_VERSION)
        try:
            staging.rename(target)
        except OSError:
            # Another process finished first (or a broken old copy exists): keep a complete one.
            if not (target / ".complete").exists():
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


# --- CLIP tokenizer from open_clip's BPE merges ---------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table used by byte-level BPE vocabularies.

    The order matters: printable bytes first, then the remapped ones; it fixes token ids.
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def write_clip_tokenizer(out: Path) -> None:
    """Write SD2's tokenizer files (vocab.json, merges.txt, configs) from the real CLIP BPE."""
    spec = importlib.util.find_spec("open_clip")  # locate without importing torch-heavy code
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is needed to build the tiny tokenizer (pip install open_clip_torch)")
    bpe_file = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe_file, "rt", encoding="utf-8").read().split("\n")
    # Same slice as CLIP: 49408 = 256 bytes + 256 end-of-word bytes + merges + 2 specials.
    merges = [tuple(line.split()) for line in lines[1 : VOCAB_SIZE - 2 * 256 - 2 + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == VOCAB_SIZE

    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    specials = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "!",  # SD2 (OpenCLIP) pads with "!", id 0
    }
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **specials,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def save_pipeline(pipe, out: Path) -> None:
    """``save_pretrained``, then put back the real repos' four tokenizer files (it writes others)."""
    pipe.save_pretrained(out, safe_serialization=True)
    for extra in ("tokenizer.json", "chat_template.jinja"):
        (out / "tokenizer" / extra).unlink(missing_ok=True)
    write_clip_tokenizer(out / "tokenizer")


# --- Stable Diffusion 2.1-base -----------------------------------------------------------


def write_tiny_sd21(out: Path) -> None:
    """A StableDiffusionPipeline folder laid out like stable-diffusion-2-1-base."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(SEED)
    write_clip_tokenizer(out / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")

    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=TEXT_WIDTH,
            intermediate_size=2 * TEXT_WIDTH,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="gelu",  # SD2's OpenCLIP text tower uses exact GELU
            projection_dim=TEXT_WIDTH,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=0,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        # Attention only at the lower resolution keeps CPU training fast.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        attention_head_dim=(2, 4),
        cross_attention_dim=TEXT_WIDTH,
        use_linear_projection=True,  # as in SD2
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,  # three downsamplings: x8
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        # Mid-block attention over 64x64 latents costs seconds per call on CPU; tiny skips it.
        mid_block_add_attention=False,
        sample_size=512,
        scaling_factor=0.18215,
    )
    scheduler = PNDMScheduler(  # the real repo's scheduler config
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
        prediction_type="epsilon",
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224}),
        requires_safety_checker=False,
    )
    save_pipeline(pipe, out)


# --- face models ----------------------------------------------------------------------------


def write_tiny_face_encoder(out: Path) -> None:
    """A ViT image classifier folder laid out like the face-recognition ViT repo."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(SEED + 1)
    labels = {i: f"person_{i}" for i in range(8)}
    model = ViTForImageClassification(
        ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=224,
            patch_size=16,
            id2label=labels,
            label2id={v: k for k, v in labels.items()},
        )
    )
    model.save_pretrained(out, safe_serialization=True)
    ViTImageProcessor(
        do_resize=True, size={"height": 224, "width": 224}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(out)


def write_tiny_face_parser(out: Path) -> None:
    """A SegFormer segmentation folder laid out like jonathandinu/face-parsing."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    torch.manual_seed(SEED + 2)
    id2label = dict(enumerate(FACE_PARSER_LABELS))
    model = SegformerForSemanticSegmentation(
        SegformerConfig(
            num_channels=3,
            num_encoder_blocks=4,
            depths=[1, 1, 1, 1],
            sr_ratios=[8, 4, 2, 1],
            hidden_sizes=[8, 16, 32, 32],
            num_attention_heads=[1, 1, 2, 2],
            decoder_hidden_size=32,
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
        )
    )
    model.save_pretrained(out, safe_serialization=True)
    SegformerImageProcessor(size={"height": 512, "width": 512}, do_reduce_labels=False).save_pretrained(out)


# --- pose ---------------------------------------------------------------------------------------


def write_tiny_controlnet(out: Path, unet_dir: Path) -> None:
    """A ControlNet folder laid out like thibaud/controlnet-sd21-openpose-diffusers.

    Built from the tiny UNet, as ControlNets are; its conditioning embedding has
    three stride-2 convolutions, so a pose image is downsampled by 8 like the VAE.
    """
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(SEED + 3)
    unet = UNet2DConditionModel.from_pretrained(unet_dir)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 16, 32, 32))
    controlnet.save_pretrained(out, safe_serialization=True)


def write_tiny_openpose(out: Path) -> None:
    """``body_pose_model.pth`` with random weights, in the lllyasviel/Annotators layout.

    controlnet_aux hard-codes the OpenPose body network, so this file has the real
    size; it is stored in float16 (controlnet_aux loads it into float32). The hand
    and face networks are optional and left out.
    """
    from .pose import openpose_api

    torch.manual_seed(SEED + 4)
    model = openpose_api().bodypose_model()
    # The annotator files name weights without their block prefix ("model0.conv1_1.weight" -> "conv1_1.weight").
    weights = {name.split(".", 1)[1]: value.half() for name, value in model.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    torch.save(weights, out / "body_pose_model.pth")


# --- text-to-video ------------------------------------------------------------------------------


def write_tiny_text_to_video(out: Path, base_dir: Path) -> None:
    """A TextToVideoSDPipeline folder laid out like ali-vilab/text-to-video-ms-1.7b.

    ModelScope's text encoder is an OpenCLIP ViT-H text tower like SD2.1's, and its
    VAE is SD's; the tiny set mirrors that by reusing the tiny base's text encoder,
    tokenizer and VAE next to a tiny 3D UNet.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    torch.manual_seed(SEED + 5)
    unet = UNet3DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
        up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(32, 64),
        layers_per_block=1,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    scheduler = DDIMScheduler(  # the real repo's scheduler config
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
    )
    pipe = TextToVideoSDPipeline(
        vae=AutoencoderKL.from_pretrained(base_dir / "vae"),
        text_encoder=CLIPTextModel.from_pretrained(base_dir / "text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(base_dir / "tokenizer"),
        unet=unet,
        scheduler=scheduler,
    )
    save_pipeline(pipe, out)
