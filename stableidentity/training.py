"""The one-shot learner: one prepared face -> an :class:`Identity` (DESIGN §1.3).

Only the identity MLP trains; UNet, VAE, text encoder and face ViT stay frozen.
Each step augments the photo (masks follow the geometry), encodes it to latents,
noises it at a random timestep and asks the UNet to denoise it with the current
identity vectors in the prompt. The loss is masked to face and hair and has two
phases: noise error for very noisy steps (t > 600), clean-latent error for
detail steps (t <= 600).

Speed (bench/ measures it against the original way of doing each step): the face
ViT runs once per photo, not per step; frozen nets run in bf16/fp16 on CUDA with
PyTorch's fused attention (SDPA, the diffusers and transformers default) and
channels-last convolutions; nothing in the loop waits for the GPU except a loss
read-back every ``loss_readback_every`` steps.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from .errors import CancelledError, InvalidInputError
from .identity import CelebSpace, Identity, IdentityEncoder, face_features, photo_metadata
from .prompt import PLACEHOLDER, identity_injected, tokenize

# Captions used during learning; "{}" is the placeholder followed by "person".
TEMPLATES = [
    "a photo of {}",
    "a photo of the {}",
    "a close-up photo of {}",
    "a close-up photo of the {}",
    "a cropped photo of the {}",
    "a bright photo of the {}",
    "a dark photo of the {}",
    "a good photo of the {}",
    "a clean photo of the {}",
    "a nice photo of the {}",
    "a portrait of {}",
    "a portrait photo of the {}",
    "a headshot of {}",
    "a color photo of {}",
    "a professional photo of {}",
    "a high-quality photo of {}",
    "a picture of {}",
    "an image of {}",
    "a snapshot of the {}",
    "a rendition of the {}",
    "a photo of a face of {}",
    "a studio photo of {}",
    "{} looking at the camera",
    "a detailed photo of {}",
]
SUBJECT = f"{PLACEHOLDER} person"

MAX_STEPS = 5000
StepCallback = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrainingConfig:
    """The method's training numbers (DESIGN §1.3)."""

    steps: int = 450
    learning_rate: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 1e-2
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    detail_threshold: int = 600  # t <= this: clean-latent loss; above: noise loss
    hair_weight: float = 0.1
    resolution: int = 512
    # Speed only: none of these changes what is optimised.
    loss_readback_every: int = 10  # CUDA: copy losses to the host every N steps (CPU: every step, it is free)
    channels_last: bool = True  # CUDA: NHWC layout for the shared UNet and VAE (cuDNN's fast path)
    compile: bool = False  # torch.compile the UNet; off until a GPU run shows it pays for its compile time


# --- augmentation -------------------------------------------------------------------------------


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _randint(generator: torch.Generator, low: int, high: int) -> int:
    """Integer in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def augment(
    image: torch.Tensor, face_mask: torch.Tensor, hair_mask: torch.Tensor, generator: torch.Generator, latent_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """One random view of the photo with its masks moving along.

    ``image`` is (3, S, S) in [0, 1]; masks are (1, S, S) floats. Returns the image
    in [-1, 1] on a black canvas, masks at latent size binarised at 0.5, and
    whether the view is mirrored.
    """
    size = image.shape[-1]
    # Colour jitter: image only.
    image = TF.adjust_brightness(image, _uniform(generator, 0.8, 1.2))
    image = TF.adjust_contrast(image, _uniform(generator, 0.8, 1.2))
    image = TF.adjust_saturation(image, _uniform(generator, 0.8, 1.2))
    image = TF.adjust_hue(image, _uniform(generator, -0.01, 0.01))

    # Geometry: image and masks together, as one 5-channel stack.
    stack = torch.cat([image * 2 - 1, face_mask, hair_mask], dim=0)
    flipped = bool(torch.rand((), generator=generator) < 0.5)
    if flipped:
        stack = stack.flip(-1)
    crop = round(size * 0.75)
    top, left = _randint(generator, 0, size - crop), _randint(generator, 0, size - crop)
    stack = stack[:, top : top + crop, left : left + crop]
    stack = F.interpolate(stack[None], size=(size, size), mode="bilinear", align_corners=False)[0]

    scale, aspect = _uniform(generator, 0.5, 1.0), _uniform(generator, 0.9, 1.1)
    height = max(8, min(size, round(size * scale)))
    width = max(8, min(size, round(size * scale * aspect)))
    small = F.interpolate(stack[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    canvas = torch.zeros_like(stack)
    canvas[:3] = -1.0  # black
    top, left = _randint(generator, 0, size - height), _randint(generator, 0, size - width)
    canvas[:, top : top + height, left : left + width] = small

    masks = F.interpolate(canvas[None, 3:], size=(latent_size, latent_size), mode="area")[0]
    masks = (masks > 0.5).float()
    return canvas[:3].clamp(-1, 1), masks[:1], masks[1:], flipped


# --- loss ----------------------------------------------------------------------------------------


def epsilon_from_prediction(prediction: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, kind: str) -> torch.Tensor:
    """The UNet's noise estimate, whatever its prediction type."""
    if kind == "epsilon":
        return prediction
    if kind == "v_prediction":  # v = √ᾱ ε − √(1−ᾱ) x0  =>  ε = √ᾱ v + √(1−ᾱ) x_t
        return alpha_bar.sqrt() * prediction + (1 - alpha_bar).sqrt() * x_t
    raise InvalidInputError(f"unsupported prediction type '{kind}' (need epsilon or v_prediction)")


def two_phase_loss(
    eps_pred: torch.Tensor,
    eps: torch.Tensor,
    x_t: torch.Tensor,
    x0: torch.Tensor,
    timesteps: torch.Tensor,
    alpha_bar: torch.Tensor,
    face_mask: torch.Tensor,
    hair_mask: torch.Tensor,
    *,
    scaling_factor: float,
    threshold: int = 600,
    hair_weight: float = 0.1,
) -> torch.Tensor:
    """Masked two-phase loss (DESIGN §1.3).

    ``t > threshold``: ``MSE(M ⊙ ε̂, M ⊙ ε)``. ``t <= threshold``: ``MSE(M ⊙ x̂0, M ⊙ x0)``
    with ``x̂0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ`` and both latents divided by the VAE scaling
    factor. Each phase: ``L_face + hair_weight · L_hair``. Shapes: latents (B, C, h, w),
    ``timesteps`` and ``alpha_bar`` (B,), masks (B, 1, h, w).
    """
    alpha_bar = alpha_bar.view(-1, 1, 1, 1).float()
    eps_pred, eps, x_t, x0 = eps_pred.float(), eps.float(), x_t.float(), x0.float()
    x0_pred = (x_t - (1 - alpha_bar).sqrt() * eps_pred) / alpha_bar.sqrt()
    detail = (timesteps <= threshold).view(-1, 1, 1, 1)
    prediction = torch.where(detail, x0_pred / scaling_factor, eps_pred)
    target = torch.where(detail, x0 / scaling_factor, eps)

    def masked_mse(mask: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(prediction * mask, target * mask)

    return masked_mse(face_mask) + hair_weight * masked_mse(hair_mask)


# --- the learner ---------------------------------------------------------------------------------


@dataclass
class FaceInputs:
    """What learning needs of one face, computed once: ViT features, image and masks as tensors."""

    features: torch.Tensor  # (2, F): the crop and its mirror image
    image: torch.Tensor  # (3, S, S) in [0, 1]
    face_mask: torch.Tensor  # (1, S, S)
    hair_mask: torch.Tensor  # (1, S, S)


@dataclass
class Batch:
    """One training example: an augmented view, a timestep, noise and a caption."""

    view: torch.Tensor  # (1, 3, S, S) in [-1, 1]
    face_mask: torch.Tensor  # (1, 1, h, w)
    hair_mask: torch.Tensor  # (1, 1, h, w)
    flipped: bool
    timestep: torch.Tensor  # (1,)
    noise: torch.Tensor  # (1, C, h, w)
    vae_noise: torch.Tensor  # (1, C, h, w): the VAE posterior sample's noise
    caption: int  # index into TEMPLATES


def draw_batch(
    inputs: FaceInputs,
    generator: torch.Generator,
    *,
    latent_size: int,
    latent_channels: int,
    num_train_timesteps: int,
) -> Batch:
    """One example; every random number comes from ``generator`` (on the CPU), in a fixed order.

    A function of its own so the benchmark's reference step draws exactly the same batches.
    """
    view, face_mask, hair_mask, flipped = augment(
        inputs.image, inputs.face_mask, inputs.hair_mask, generator, latent_size
    )
    n = latent_size
    timestep = torch.randint(0, num_train_timesteps, (1,), generator=generator)
    noise = torch.randn((1, latent_channels, n, n), generator=generator)
    vae_noise = torch.randn((1, latent_channels, n, n), generator=generator)
    caption = _randint(generator, 0, len(TEMPLATES) - 1)
    device = inputs.image.device
    timestep, noise, vae_noise = (_to_device(x, device) for x in (timestep, noise, vae_noise))
    return Batch(view[None], face_mask[None], hair_mask[None], flipped, timestep, noise, vae_noise, caption)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device without waiting: a plain copy from pageable memory synchronises the stream."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


@contextmanager
def _cudnn_autotune(device: torch.device) -> Iterator[None]:
    """cuDNN picks the fastest convolution algorithms for our fixed shapes (CUDA only), then restores."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = previous or device.type == "cuda"
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


class IdentityLearner:
    """Learns an identity from a prepared face with frozen base and face models.

    Components are explicit, as in a diffusers pipeline: ``base`` (tokenizer, text
    encoder, UNet, VAE, scheduler config), ``face_encoder`` and ``celeb`` statistics.
    On CUDA with ``config.channels_last`` the shared UNet and VAE are switched to the
    channels-last layout (a layout change only: every user of them gets the faster path).
    """

    def __init__(self, base, face_encoder, celeb: CelebSpace, config: TrainingConfig = TrainingConfig()):
        from diffusers import DDPMScheduler

        self.base, self.face_encoder, self.celeb, self.config = base, face_encoder, celeb, config
        self.noise_scheduler = DDPMScheduler.from_config(base.scheduler_config)
        self.device = base.unet.device
        self.latent_size = config.resolution // (2 ** (len(base.vae.config.block_out_channels) - 1))
        # Same for every step and every photo: the captions' tokens and where the identity goes.
        captions = [t.format(SUBJECT) for t in TEMPLATES]
        ids, masks = tokenize(base.tokenizer, captions, celeb.mean.shape[0])
        self.caption_ids, self.caption_masks = ids.to(self.device), masks.to(self.device)
        alpha_bar = self.noise_scheduler.alphas_cumprod.to(self.device, torch.float32)
        self._alpha_bar, self._sqrt_alpha_bar = alpha_bar, alpha_bar.sqrt()
        self._sqrt_one_minus = (1 - alpha_bar).sqrt()

        self._memory_format = torch.contiguous_format
        if config.channels_last and self.device.type == "cuda":
            self._memory_format = torch.channels_last
            base.unet.to(memory_format=torch.channels_last)
            base.vae.to(memory_format=torch.channels_last)
        self._unet = torch.compile(base.unet, dynamic=False) if config.compile else base.unet

    def _autocast(self):
        """Mixed precision for the frozen nets on CUDA; plain fp32 elsewhere."""
        if self.device.type != "cuda":
            return torch.autocast("cpu", enabled=False)
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def prepare(self, face) -> FaceInputs:
        """Tensors of a :class:`~stableidentity.face.PreparedFace` that stay the same every step."""
        mirror = face.vit_crop.transpose(0)  # PIL FLIP_LEFT_RIGHT; the ViT input is never jittered
        features = face_features(self.face_encoder, [face.vit_crop, mirror]).to(self.device)
        size = self.config.resolution
        image = TF.to_dtype(TF.pil_to_tensor(face.image.convert("RGB")), torch.float32, scale=True)
        image = F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        face_mask, hair_mask = (_mask_tensor(m, size) for m in (face.face_mask, face.hair_mask))
        return FaceInputs(features, image.to(self.device), face_mask.to(self.device), hair_mask.to(self.device))

    def new_encoder(self, inputs: FaceInputs, seed: int) -> IdentityEncoder:
        """A freshly initialised identity encoder (fp32 master weights), seeded."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return IdentityEncoder(inputs.features.shape[1], self.celeb).to(self.device)

    def sample_batch(self, inputs: FaceInputs, generator: torch.Generator) -> Batch:
        """Draw one example; every random number comes from ``generator``."""
        return draw_batch(
            inputs,
            generator,
            latent_size=self.latent_size,
            latent_channels=self.base.vae.config.latent_channels,
            num_train_timesteps=self.noise_scheduler.config.num_train_timesteps,
        )

    def loss(self, encoder: IdentityEncoder, inputs: FaceInputs, batch: Batch) -> torch.Tensor:
        """The masked two-phase loss of one batch; differentiable w.r.t. the encoder only."""
        base, cfg = self.base, self.config
        scaling = base.vae.config.scaling_factor
        with torch.no_grad(), self._autocast():
            view = batch.view.to(self.device, base.vae.dtype).contiguous(memory_format=self._memory_format)
            posterior = base.vae.encode(view).latent_dist
            x0 = (posterior.mean + posterior.std * batch.vae_noise).float() * scaling
        t = batch.timestep
        # DDPM forward noising, from tables computed once (the scheduler's add_noise copies them every call).
        x_t = self._sqrt_alpha_bar[t].view(-1, 1, 1, 1) * x0 + self._sqrt_one_minus[t].view(-1, 1, 1, 1) * batch.noise

        vectors = encoder(inputs.features[1:2] if batch.flipped else inputs.features[0:1])
        ids = self.caption_ids[batch.caption : batch.caption + 1]
        mask = self.caption_masks[batch.caption : batch.caption + 1]
        with self._autocast(), identity_injected(base.text_encoder, mask, vectors):
            hidden = base.text_encoder(ids)[0]
            sample = x_t.to(base.unet.dtype).contiguous(memory_format=self._memory_format)
            prediction = self._unet(sample, t, encoder_hidden_states=hidden.to(base.unet.dtype)).sample

        alpha_bar = self._alpha_bar[t]
        kind = self.noise_scheduler.config.prediction_type
        eps_pred = epsilon_from_prediction(prediction.float(), x_t, alpha_bar.view(-1, 1, 1, 1), kind)
        return two_phase_loss(
            eps_pred, batch.noise, x_t, x0, t, alpha_bar, batch.face_mask, batch.hair_mask,
            scaling_factor=scaling, threshold=cfg.detail_threshold, hair_weight=cfg.hair_weight,
        )

    def new_optimizer(self, encoder: IdentityEncoder) -> torch.optim.Optimizer:
        cfg = self.config
        return torch.optim.AdamW(
            encoder.parameters(), lr=cfg.learning_rate, betas=cfg.betas, weight_decay=cfg.weight_decay, eps=cfg.eps,
            fused=self.device.type == "cuda",  # one kernel for the whole update
        )

    def train_step(
        self, encoder: IdentityEncoder, optimizer: torch.optim.Optimizer, inputs: FaceInputs, batch: Batch
    ) -> torch.Tensor:
        """One optimisation step; returns the loss detached and on the device (reading it would sync)."""
        loss = self.loss(encoder, inputs, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), self.config.max_grad_norm)
        optimizer.step()
        return loss.detach()

    def fit(
        self,
        inputs: FaceInputs,
        encoder: IdentityEncoder,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        steps: int,
        *,
        callback: StepCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[float]:
        """Run ``steps`` training steps; returns every step's loss.

        Losses stay on the device and are copied to the host at step 1, every
        ``config.loss_readback_every`` steps and at the end (every step on CPU).
        ``callback(step, total, loss)`` runs after every step with the latest loss
        read back, so on a GPU it may be up to N − 1 steps old.
        """
        every = 1 if self.device.type == "cpu" else max(1, self.config.loss_readback_every)
        pending = torch.empty(steps, device=self.device)
        losses: list[float] = []
        with _cudnn_autotune(self.device):
            for step in range(1, steps + 1):
                if should_stop is not None and should_stop():
                    raise CancelledError(f"learning cancelled at step {step - 1} of {steps}")
                pending[step - 1] = self.train_step(encoder, optimizer, inputs, self.sample_batch(inputs, generator))
                if step == 1 or step % every == 0 or step == steps:
                    losses += pending[len(losses) : step].tolist()
                if callback is not None:
                    callback(step, steps, losses[-1])
        return losses

    def __call__(
        self,
        face,
        *,
        steps: int | None = None,
        seed: int = 0,
        callback: StepCallback | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Identity:
        """Train on ``face`` (a :class:`~stableidentity.face.PreparedFace`) and return the identity.

        ``callback(step, total, loss)`` runs after every step (see :meth:`fit` for how
        fresh the loss is); ``should_stop()`` is checked before every step and ends
        learning with :class:`CancelledError`.
        """
        steps = self.config.steps if steps is None else int(steps)
        if not 1 <= steps <= MAX_STEPS:
            raise InvalidInputError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
        generator = torch.Generator().manual_seed(int(seed))
        inputs = self.prepare(face)
        encoder = self.new_encoder(inputs, seed)
        optimizer = self.new_optimizer(encoder)
        losses = self.fit(inputs, encoder, optimizer, generator, steps, callback=callback, should_stop=should_stop)

        with torch.no_grad():
            embeddings = encoder(inputs.features[0:1])[0].float().cpu()
        tail = losses[-min(len(losses), 50) :]
        final_loss = sum(tail) / len(tail)
        if not math.isfinite(final_loss) or not torch.isfinite(embeddings).all():
            raise InvalidInputError("learning diverged (non-finite loss); try another seed or photo")
        metadata = photo_metadata(
            face.photo_sha256, base_model=self.base.source, steps=steps, seed=int(seed), final_loss=f"{final_loss:.6f}"
        )
        return Identity(embeddings, metadata)


def _mask_tensor(mask: np.ndarray, size: int) -> torch.Tensor:
    """A (h, w) boolean mask as a (1, size, size) float tensor (nearest upsampling)."""
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None]
    return F.interpolate(m, size=(size, size), mode="nearest")[0]
