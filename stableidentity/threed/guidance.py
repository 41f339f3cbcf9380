"""Interval Score Matching (ISM) guidance from SD2.1 with the identity in the prompt (DESIGN §2.3).

Given renders of the Gaussians, ISM asks the frozen diffusion model how the
renders should change: it DDIM-inverts the clean latent to ``x_s`` and one step
further to ``x_t`` (``s = t − δ``), and compares the classifier-free prediction at
``(x_t, t)`` with the unconditional prediction that carried ``x_s`` to ``x_t``.
Their difference, weighted, is the gradient on the latents; it reaches the
renders through the VAE encoder. Nothing of the diffusion model trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..identity import Identity
from ..prompt import encode_prompts, with_placeholder

VIEWS = ("front view", "side view", "back view")


@dataclass(frozen=True)
class ISMConfig:
    """ISM numbers (LucidDreamer's identity config)."""

    guidance_scale: float = 7.5
    t_min: int = 20
    t_max_start: int = 980  # the upper bound falls from here to t_max_end during warm-up
    t_max_end: int = 500
    warmup_iterations: int = 1500
    delta_start: int = 100  # interval δ, annealed over the warm-up
    delta_end: int = 150
    inversion_stride: int = 200  # DDIM inversion to x_s in steps of this many timesteps (≤ 5 steps)
    grad_scale: float = 0.1
    disparity_probability: float = 0.2  # encode a disparity image instead of RGB (geometry regulariser)
    resolution: int = 512  # renders are resized to this before encoding
    perp_neg: bool = False  # Perp-Neg: push away from the other views' prompts


def warmup(iteration: int, config: ISMConfig) -> float:
    """``w = 1 − min(iteration / warm-up, 1)``: 1 at the start, 0 after the warm-up."""
    return 1.0 - min(iteration / config.warmup_iterations, 1.0)


def timestep_range(iteration: int, config: ISMConfig = ISMConfig()) -> tuple[int, int]:
    """``t ~ U[20, 500 + 480·w)``: large steps early (shape), small ones later (detail)."""
    high = config.t_max_end + (config.t_max_start - config.t_max_end) * warmup(iteration, config)
    return config.t_min, int(round(high))


def interval(iteration: int, config: ISMConfig = ISMConfig()) -> int:
    """The interval δ between ``s`` and ``t``, annealed from 100 to 150 over the warm-up."""
    progress = 1.0 - warmup(iteration, config)
    return int(round(config.delta_start + (config.delta_end - config.delta_start) * progress))


def view_weights(azimuth_deg: float) -> torch.Tensor:
    """Blend of (front, side, back) prompts for an azimuth: front↔side below 90°, side↔back above."""
    a = min(abs(azimuth_deg), 180.0)
    if a < 90.0:
        return torch.tensor([1.0 - a / 90.0, a / 90.0, 0.0])
    return torch.tensor([0.0, 1.0 - (a - 90.0) / 90.0, (a - 90.0) / 90.0])


class ISMGuidance:
    """ISM on the shared SD2.1 components, with one identity written into the view prompts."""

    def __init__(self, base, identity: Identity, prompt: str, negative_prompt: str = "",
                 config: ISMConfig = ISMConfig()):
        from diffusers import DDIMScheduler

        identity.check_compatible(base.token_width)
        self.base, self.config = base, config
        self.scheduler = DDIMScheduler.from_config(base.scheduler_config)
        self.alphas = self.scheduler.alphas_cumprod.to(base.unet.device, torch.float32)
        self.prompt, self.placeholder_added = with_placeholder(prompt)
        tok, enc = base.tokenizer, base.text_encoder
        # Computed once: the view prompts with the identity, the negative and the empty prompt.
        self.views = encode_prompts(tok, enc, [f"{self.prompt}, {v}" for v in VIEWS], identity.embeddings)
        self.negative = encode_prompts(tok, enc, [negative_prompt or ""])
        self.empty = encode_prompts(tok, enc, [""])

    # --- pieces ---

    def view_embeddings(self, azimuths: torch.Tensor) -> torch.Tensor:
        """Per-view prompt embeddings, interpolated by azimuth (degrees)."""
        weights = torch.stack([view_weights(float(a)) for a in azimuths]).to(self.views)
        return torch.einsum("bv,vld->bld", weights, self.views)

    def encode(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Renders in [0, 1] -> a scaled latent sample (differentiable through the VAE encoder)."""
        vae = self.base.vae
        size = self.config.resolution
        if images.shape[-1] != size or images.shape[-2] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        posterior = vae.encode((images * 2 - 1).to(vae.dtype)).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean)
        return (posterior.mean + posterior.std * noise).float() * vae.config.scaling_factor

    def eps(self, x: torch.Tensor, t: int, embeddings: torch.Tensor) -> torch.Tensor:
        unet = self.base.unet
        timesteps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        return unet(x.to(unet.dtype), timesteps, encoder_hidden_states=embeddings.to(unet.dtype)).sample.float()

    def ddim_step(self, x: torch.Tensor, t_from: int, t_to: int, eps: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM (η = 0) from ``t_from`` to ``t_to``; ``t_from = −1`` is the clean latent."""
        a_from = self.alphas[t_from] if t_from >= 0 else torch.ones((), device=x.device)
        a_to = self.alphas[t_to]
        x0 = (x - (1 - a_from).sqrt() * eps) / a_from.sqrt()
        return a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps

    @torch.no_grad()
    def invert(self, latents: torch.Tensor, s: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """DDIM-invert the clean latents to ``x_s`` (≤ 5 strides) and on to ``x_t``; returns (x_t, ε(x_s, s, ∅))."""
        empty = self.empty.expand(latents.shape[0], -1, -1)
        x, current = latents, -1
        for target in list(range(0, s, self.config.inversion_stride))[1:] + [s]:
            eps = self.eps(x, max(current, 0), empty)
            x, current = self.ddim_step(x, current, target, eps), target
        eps_s = self.eps(x, s, empty)
        return self.ddim_step(x, s, t, eps_s), eps_s

    # --- the loss ---

    def loss(
        self,
        images: torch.Tensor,
        azimuths: torch.Tensor,
        iteration: int,
        generator: torch.Generator,
        disparity: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """A loss whose gradient w.r.t. the renders is ISM's, and facts of the step (t, s, disparity, residual).

        ``images`` (B, 3, H, W) in [0, 1]; ``disparity`` (B, 1, H, W) in [0, 1] or None.
        """
        cfg = self.config
        use_disparity = disparity is not None and torch.rand((), generator=generator) < cfg.disparity_probability
        if use_disparity:
            images = disparity.expand(-1, 3, -1, -1)
        latents = self.encode(images, generator)

        low, high = timestep_range(iteration, cfg)
        t = int(torch.randint(low, high, (), generator=generator))  # one t for the whole batch
        s = max(t - interval(iteration, cfg), 0)
        x_t, target = self.invert(latents.detach(), s, t)

        batch = latents.shape[0]
        with torch.no_grad():
            conditional = self.view_embeddings(azimuths)
            negative = self.negative.expand(batch, -1, -1)
            eps_u, eps_c = self.eps(torch.cat([x_t, x_t]), t, torch.cat([negative, conditional])).chunk(2)
            prediction = eps_u + cfg.guidance_scale * (eps_c - eps_u)
            if cfg.perp_neg:
                prediction = prediction - cfg.guidance_scale * self._perp_neg(x_t, t, azimuths, eps_u, eps_c)
            a = self.alphas[t]
            grad = cfg.grad_scale * ((1 - a) / a).sqrt() * (prediction - target)
            grad = torch.nan_to_num(grad)
        # d(loss)/d(latents) = grad: the gradient flows on through the VAE encoder to the renders.
        loss = (grad * latents).sum() / batch
        # The surrogate loss has no meaning of its own; the residual is what shrinks as views agree.
        residual = float((prediction - target).pow(2).mean())
        return loss, {"t": t, "s": s, "disparity": bool(use_disparity), "residual": residual}

    def _perp_neg(self, x_t, t, azimuths, eps_u, eps_c) -> torch.Tensor:
        """Perp-Neg: the parts of the other views' directions perpendicular to this view's direction."""
        correction = torch.zeros_like(eps_c)
        direction = (eps_c - eps_u).flatten(1)
        for i, view in enumerate(self.views):
            others = view[None].expand(x_t.shape[0], -1, -1)
            eps_o = self.eps(x_t, t, others)
            weight = 1.0 - torch.stack([view_weights(float(a))[i] for a in azimuths]).to(eps_c)
            other = (eps_o - eps_u).flatten(1)
            parallel = (other * direction).sum(1, keepdim=True) / direction.pow(2).sum(1, keepdim=True).clamp_min(1e-8)
            perpendicular = other - parallel * direction
            correction += (weight.view(-1, 1) * perpendicular).view_as(eps_c) / len(self.views)
        return correction
