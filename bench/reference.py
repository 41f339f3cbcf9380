"""The reference training step: the per-step work done the way the method's original code does it.

It is the yardstick for :class:`stableidentity.training.IdentityLearner`: it
optimises the same loss on the same batches, but like the original training
script it keeps every network in fp32, runs the face ViT on the (mirrored) crop
and the VAE encoder on the augmented view at every step, tokenises the caption at
every step, uses the classic attention that materialises the attention matrix
(diffusers' ``AttnProcessor``, transformers' eager attention) and reads the loss
back to the host after every step. It is written independently of our loss code,
with the two phases as a plain branch, so the equivalence test means something.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from stableidentity.identity import CelebSpace, IdentityEncoder
from stableidentity.prompt import identity_injected, tokenize
from stableidentity.training import SUBJECT, TEMPLATES, Batch, FaceInputs, TrainingConfig, draw_batch


def use_classic_attention(base, face_encoder) -> None:
    """Switch the models to non-fused attention, as they ran before PyTorch had SDPA."""
    from diffusers.models.attention_processor import AttnProcessor

    base.unet.set_attn_processor(AttnProcessor())
    if base.vae.attn_processors:
        base.vae.set_attn_processor(AttnProcessor())
    base.text_encoder.set_attn_implementation("eager")
    face_encoder.model.set_attn_implementation("eager")


class ReferenceStep:
    """One training step as the original implementation does it; ``base`` and ``face_encoder``
    must be fp32 copies of their own (attention is switched on them)."""

    def __init__(self, base, face_encoder, celeb: CelebSpace, config: TrainingConfig = TrainingConfig()):
        from diffusers import DDPMScheduler

        for model in (base.unet, base.vae, base.text_encoder, face_encoder.model):
            if model.dtype != torch.float32:
                raise ValueError(f"the reference step runs in fp32; got a {type(model).__name__} in {model.dtype}")
        use_classic_attention(base, face_encoder)
        self.base, self.face_encoder, self.celeb, self.config = base, face_encoder, celeb, config
        self.noise_scheduler = DDPMScheduler.from_config(base.scheduler_config)
        self.device = base.unet.device
        self.latent_size = config.resolution // (2 ** (len(base.vae.config.block_out_channels) - 1))

    def sample_batch(self, inputs: FaceInputs, generator: torch.Generator) -> Batch:
        """The same draw as the learner's, so both sides see the same batches."""
        return draw_batch(
            inputs,
            generator,
            latent_size=self.latent_size,
            latent_channels=self.base.vae.config.latent_channels,
            num_train_timesteps=self.noise_scheduler.config.num_train_timesteps,
        )

    @torch.no_grad()
    def face_features(self, crop: Image.Image, flipped: bool) -> torch.Tensor:
        """CLS token of the face ViT for this step's crop (mirrored with the view)."""
        if flipped:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        encoder = self.face_encoder
        pixels = encoder.processor(images=[crop], return_tensors="pt").pixel_values.to(self.device)
        return encoder.model(pixel_values=pixels).last_hidden_state[:, 0]

    def loss(self, encoder: IdentityEncoder, vit_crop: Image.Image, batch: Batch) -> torch.Tensor:
        """The masked two-phase loss (DESIGN §1.3), step by step."""
        base, cfg = self.base, self.config
        scaling = base.vae.config.scaling_factor
        vectors = encoder(self.face_features(vit_crop, batch.flipped))

        with torch.no_grad():
            posterior = base.vae.encode(batch.view.to(self.device)).latent_dist
            latents = (posterior.mean + posterior.std * batch.vae_noise) * scaling
        timesteps = batch.timestep
        noisy = self.noise_scheduler.add_noise(latents, batch.noise, timesteps)

        caption = TEMPLATES[batch.caption].format(SUBJECT)
        ids, mask = tokenize(base.tokenizer, [caption], vectors.shape[1])
        with identity_injected(base.text_encoder, mask, vectors):
            hidden = base.text_encoder(ids.to(self.device))[0]
        model_pred = base.unet(noisy, timesteps, encoder_hidden_states=hidden).sample

        alpha_bar = self.noise_scheduler.alphas_cumprod.to(self.device)[timesteps].view(-1, 1, 1, 1)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            model_pred = alpha_bar.sqrt() * model_pred + (1 - alpha_bar).sqrt() * noisy

        if timesteps.item() > cfg.detail_threshold:  # noisy phase: noise error
            prediction, target = model_pred, batch.noise
        else:  # detail phase: clean-latent error, in unscaled latent units
            pred_x0 = (noisy - (1 - alpha_bar).sqrt() * model_pred) / alpha_bar.sqrt()
            prediction, target = pred_x0 / scaling, latents / scaling
        face_loss = F.mse_loss(prediction * batch.face_mask, target * batch.face_mask)
        hair_loss = F.mse_loss(prediction * batch.hair_mask, target * batch.hair_mask)
        return face_loss + cfg.hair_weight * hair_loss

    def new_optimizer(self, encoder: IdentityEncoder) -> torch.optim.Optimizer:
        cfg = self.config
        return torch.optim.AdamW(
            encoder.parameters(), lr=cfg.learning_rate, betas=cfg.betas, weight_decay=cfg.weight_decay, eps=cfg.eps
        )

    def train_step(
        self, encoder: IdentityEncoder, optimizer: torch.optim.Optimizer, vit_crop: Image.Image, batch: Batch
    ) -> float:
        loss = self.loss(encoder, vit_crop, batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), self.config.max_grad_norm)
        optimizer.step()
        return loss.item()  # read back every step, for the progress bar

    def fit(
        self,
        inputs: FaceInputs,
        vit_crop: Image.Image,
        encoder: IdentityEncoder,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        steps: int,
        callback: Callable[[int, int, float], None] | None = None,
    ) -> list[float]:
        """``steps`` steps on the learner's batches (only ``inputs``' image and masks are used)."""
        losses = []
        for step in range(1, steps + 1):
            losses.append(self.train_step(encoder, optimizer, vit_crop, self.sample_batch(inputs, generator)))
            if callback is not None:
                callback(step, steps, losses[-1])
        return losses
