"""3D Gaussians: parameters, initialisation, per-parameter Adam, densification and pruning.

Each Gaussian has a position, an SH-degree-0 colour ``f_dc`` (``rgb = 0.5 + C0 · f_dc``),
a log-scale per axis, a rotation quaternion (wxyz, normalised on use) and a logit
opacity. Raw parameters are unconstrained so Adam can move them freely; the properties
(:attr:`GaussianModel.colors`, :attr:`~GaussianModel.scales`, …) apply the activations.

Densification follows 3DGS as configured by LucidDreamer (DESIGN §2.1): the norm of each
visible Gaussian's screen-space position gradient (in NDC units, as 3DGS measures it) is
averaged over the views that saw it; above the threshold, small Gaussians are cloned and
large ones split into two smaller ones sampled from the original; transparent and huge
ones are pruned, and opacities are reset now and then so that useless Gaussians can fade
and be pruned. Adam's state follows every row operation: new rows start with zero
moments, removed rows lose theirs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch import Tensor, nn

from .renderer import covariance_3d, quaternion_to_matrix

SH_C0 = 0.28209479177387814
PARAM_NAMES = ("means", "f_dc", "log_scales", "quats", "opacity_logits")
DEFAULT_EXTENT = 3.5  # scene extent of the reference setup (DESIGN §2.1)


def inverse_sigmoid(x: Tensor) -> Tensor:
    return torch.log(x / (1 - x))


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """SH degree-0 coefficient giving colour ``rgb``."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(f_dc: Tensor) -> Tensor:
    return 0.5 + SH_C0 * f_dc


@dataclass
class LearningRates:
    """Adam learning rates, (start, end) pairs decayed log-linearly over ``max_steps``.

    Position rates are multiplied by the scene extent. Defaults are DESIGN §2.1's.
    """

    position: tuple[float, float] = (1.6e-4, 1.6e-6)
    color: tuple[float, float] = (5e-3, 3e-3)
    opacity: tuple[float, float] = (5e-2, 5e-2)
    scale: tuple[float, float] = (5e-3, 1e-3)
    rotation: tuple[float, float] = (1e-3, 2e-4)
    max_steps: int = 5000

    def at(self, step: int, extent: float = DEFAULT_EXTENT) -> dict[str, float]:
        """Learning rate of every parameter group at ``step``."""
        t = min(max(step / max(self.max_steps, 1), 0.0), 1.0)

        def log_lerp(pair: tuple[float, float]) -> float:
            return math.exp((1 - t) * math.log(pair[0]) + t * math.log(pair[1]))

        return {
            "means": log_lerp(self.position) * extent,
            "f_dc": log_lerp(self.color),
            "opacity_logits": log_lerp(self.opacity),
            "log_scales": log_lerp(self.scale),
            "quats": log_lerp(self.rotation),
        }


@dataclass
class DensifyConfig:
    """When and how to densify, prune and reset (DESIGN §2.1 / LucidDreamer defaults).

    Densification runs at iterations ``> start`` that are multiples of ``interval`` and
    ``< stop``; the large-Gaussian prune joins in after ``prune_large_after``; opacities are
    reset at multiples of ``opacity_reset_interval`` before ``stop``.
    """

    start: int = 100
    stop: int = 3000
    interval: int = 100
    grad_threshold: float = 7.5e-4  # mean screen-space (NDC) gradient norm
    percent_dense: float = 0.003  # clone if max scale <= this × extent, else split
    split_count: int = 2
    split_scale_divisor: float = 1.6  # 0.8 × split_count in 3DGS
    min_opacity: float = 0.005
    prune_large_after: int = 300
    max_world_scale: float = 0.1  # × extent: larger Gaussians are pruned (after prune_large_after)
    # Screen-radius prune (pixels). The reference's value (20) never fires there because its
    # radii are reset before the test; None keeps that effective behaviour.
    max_screen_radius: float | None = None
    opacity_reset_interval: int = 300
    opacity_reset_value: float = 0.01
    max_gaussians: int | None = None  # stop adding Gaussians beyond this count


def knn_mean_distance(points: Tensor | np.ndarray, k: int = 3) -> Tensor:
    """Mean distance from each point to its ``k`` nearest neighbours (KD-tree, exact)."""
    from scipy.spatial import cKDTree

    pts = np.asarray(torch.as_tensor(points).detach().cpu(), dtype=np.float64)
    if len(pts) < 2:
        return torch.full((len(pts),), 0.01, dtype=torch.float32)
    kk = min(k, len(pts) - 1)
    dist, _ = cKDTree(pts).query(pts, k=kk + 1)
    return torch.from_numpy(dist[:, 1:].mean(axis=1)).float()


class GaussianModel(nn.Module):
    """A set of 3D Gaussians with their optimiser and densification statistics."""

    def __init__(
        self,
        means: Tensor,
        f_dc: Tensor | None = None,
        log_scales: Tensor | None = None,
        quats: Tensor | None = None,
        opacity_logits: Tensor | None = None,
    ) -> None:
        super().__init__()
        n = means.shape[0]
        like = dict(device=means.device, dtype=means.dtype)
        if f_dc is None:
            f_dc = torch.zeros(n, 3, **like)
        if log_scales is None:
            log_scales = torch.log(knn_mean_distance(means).clamp_min(1e-7)).to(**like)[:, None].repeat(1, 3)
        if quats is None:
            quats = torch.zeros(n, 4, **like)
            quats[:, 0] = 1.0
        if opacity_logits is None:
            opacity_logits = inverse_sigmoid(torch.full((n,), 0.1, **like))
        for name, value in zip(PARAM_NAMES, (means, f_dc, log_scales, quats, opacity_logits)):
            setattr(self, name, nn.Parameter(value.detach().clone().to(**like)))
        self.register_buffer("grad_accum", torch.zeros(n, **like), persistent=False)
        self.register_buffer("grad_count", torch.zeros(n, **like), persistent=False)
        self.register_buffer("max_radii2d", torch.zeros(n, **like), persistent=False)
        self.optimizer: torch.optim.Adam | None = None
        self.learning_rates = LearningRates()
        self.extent = DEFAULT_EXTENT

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_points(
        cls,
        points: Tensor | np.ndarray,
        colors: Tensor | np.ndarray | None = None,
        opacity: float = 0.1,
        device: torch.device | str | None = None,
    ) -> "GaussianModel":
        """Gaussians at ``points`` (N, 3): kNN scales, identity rotation, ``opacity``, and
        ``colors`` in [0, 1] (grey when omitted)."""
        pts = torch.as_tensor(np.asarray(points), dtype=torch.float32)
        n = pts.shape[0]
        rgb = torch.full((n, 3), 0.5) if colors is None else torch.as_tensor(np.asarray(colors), dtype=torch.float32)
        model = cls(
            pts,
            f_dc=rgb_to_sh(rgb),
            opacity_logits=inverse_sigmoid(torch.full((n,), float(opacity))),
        )
        return model.to(device) if device is not None else model

    @classmethod
    def from_head_prior(
        cls, num_points: int = 4096, seed: int = 0, device: torch.device | str | None = None
    ) -> "GaussianModel":
        """Gaussians on the surface of the composed-ellipsoid bust (:func:`head_prior_points`)."""
        return cls.from_points(head_prior_points(num_points, seed), device=device)

    # ------------------------------------------------------------------ activations

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]

    @property
    def colors(self) -> Tensor:
        return (SH_C0 * self.f_dc + 0.5).clamp_min(0.0)

    @property
    def scales(self) -> Tensor:
        return torch.exp(self.log_scales)

    @property
    def rotations(self) -> Tensor:
        return torch.nn.functional.normalize(self.quats, dim=-1)

    @property
    def opacities(self) -> Tensor:
        return torch.sigmoid(self.opacity_logits)

    def covariances(self) -> Tensor:
        """World-space covariances (N, 3, 3)."""
        return covariance_3d(self.scales, self.quats)

    def parameter_dict(self) -> dict[str, nn.Parameter]:
        return {name: getattr(self, name) for name in PARAM_NAMES}

    # ------------------------------------------------------------------ optimiser

    def setup_optimizer(
        self, learning_rates: LearningRates | None = None, extent: float = DEFAULT_EXTENT
    ) -> torch.optim.Adam:
        """Adam with one group per parameter (named), at the step-0 learning rates."""
        self.learning_rates = learning_rates or LearningRates()
        self.extent = float(extent)
        lrs = self.learning_rates.at(0, self.extent)
        groups = [{"params": [getattr(self, n)], "lr": lrs[n], "name": n} for n in PARAM_NAMES]
        self.optimizer = torch.optim.Adam(groups, lr=0.0, eps=1e-15)
        return self.optimizer

    def update_learning_rate(self, step: int) -> dict[str, float]:
        """Set every group's learning rate for ``step``; returns them."""
        lrs = self.learning_rates.at(step, self.extent)
        if self.optimizer is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lrs[group["name"]]
        return lrs

    def _swap_param(self, name: str, value: Tensor, state_fn) -> None:
        """Replace parameter ``name`` by ``value``; ``state_fn`` maps each per-row Adam state tensor."""
        old = getattr(self, name)
        new = nn.Parameter(value.detach().contiguous())
        setattr(self, name, new)
        if self.optimizer is None:
            return
        for group in self.optimizer.param_groups:
            if group["params"][0] is old:
                group["params"][0] = new
                state = self.optimizer.state.pop(old, None)
                if state is not None:
                    self.optimizer.state[new] = {
                        k: state_fn(v) if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == old.shape[0] else v
                        for k, v in state.items()
                    }

    def keep_rows(self, keep: Tensor) -> None:
        """Keep only the Gaussians where ``keep`` is True (parameters, Adam state, statistics)."""
        for name in PARAM_NAMES:
            self._swap_param(name, getattr(self, name)[keep], lambda v: v[keep])
        for buf in ("grad_accum", "grad_count", "max_radii2d"):
            setattr(self, buf, getattr(self, buf)[keep])

    def prune(self, remove: Tensor) -> None:
        """Remove the Gaussians where ``remove`` is True."""
        self.keep_rows(~remove)

    def append(self, rows: dict[str, Tensor]) -> None:
        """Add Gaussians given raw parameters by name; their Adam moments start at zero."""
        for name in PARAM_NAMES:
            extra = rows[name].detach().to(getattr(self, name))
            self._swap_param(
                name,
                torch.cat([getattr(self, name), extra]),
                lambda v, e=extra: torch.cat([v, v.new_zeros((e.shape[0],) + v.shape[1:])]),
            )
        n_new = rows["means"].shape[0]
        for buf in ("grad_accum", "grad_count", "max_radii2d"):
            old = getattr(self, buf)
            setattr(self, buf, torch.cat([old, old.new_zeros(n_new)]))

    # ------------------------------------------------------------------ densification

    @torch.no_grad()
    def add_densification_stats(self, means2d_grad: Tensor, radii: Tensor, width: int, height: int) -> None:
        """Accumulate one view's screen-space gradient norms for the Gaussians it saw.

        ``means2d_grad`` is the gradient w.r.t. pixel positions, (N, 2) or (1, N, 2); it is
        converted to NDC units (× W/2, × H/2) because that is what 3DGS's threshold is
        expressed in.
        """
        radii = radii.reshape(-1)
        visible = radii > 0
        grad = means2d_grad.reshape(-1, 2)[visible].to(self.grad_accum) * torch.tensor(
            [0.5 * width, 0.5 * height], dtype=self.grad_accum.dtype, device=self.grad_accum.device
        )
        self.grad_accum[visible] += grad.norm(dim=-1)
        self.grad_count[visible] += 1
        self.max_radii2d[visible] = torch.maximum(self.max_radii2d[visible], radii[visible].to(self.max_radii2d))

    def _reset_stats(self) -> None:
        self.grad_accum.zero_()
        self.grad_count.zero_()
        self.max_radii2d.zero_()

    @torch.no_grad()
    def densify_and_prune(
        self,
        grad_threshold: float,
        min_opacity: float,
        extent: float | None = None,
        prune_large: bool = False,
        config: DensifyConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, int]:
        """One densification round: clone small and split large high-gradient Gaussians,
        then prune transparent (and, with ``prune_large``, huge) ones. Returns the counts."""
        cfg = config or DensifyConfig()
        extent = self.extent if extent is None else extent
        grads = torch.nan_to_num(self.grad_accum / self.grad_count, nan=0.0)
        high = grads >= grad_threshold
        max_scale = self.scales.max(dim=1).values
        small = max_scale <= cfg.percent_dense * extent
        clone, split = high & small, high & ~small
        if cfg.max_gaussians is not None:
            room = cfg.max_gaussians - self.num_gaussians
            if int(clone.sum()) + int(split.sum()) * (cfg.split_count - 1) > room:
                clone[:] = False
                split[:] = False
        n_clone, n_split = int(clone.sum()), int(split.sum())

        new_rows = {name: [getattr(self, name)[clone]] for name in PARAM_NAMES}
        if n_split:
            k = cfg.split_count
            std = self.scales[split].repeat(k, 1)
            noise = torch.randn(std.shape, generator=generator, dtype=std.dtype, device="cpu").to(std.device) * std
            rot = quaternion_to_matrix(self.quats[split]).repeat(k, 1, 1)
            new_rows["means"].append((rot @ noise[..., None])[..., 0] + self.means[split].repeat(k, 1))
            new_rows["log_scales"].append(torch.log(std / cfg.split_scale_divisor))
            for name in ("f_dc", "quats", "opacity_logits"):
                reps = (k,) + (1,) * (getattr(self, name).dim() - 1)
                new_rows[name].append(getattr(self, name)[split].repeat(*reps))
        n_before = self.num_gaussians
        self.append({name: torch.cat(parts) for name, parts in new_rows.items()})
        # Split originals go: they are replaced by their children.
        drop = torch.cat([split, split.new_zeros(self.num_gaussians - n_before)])

        prune = self.opacities < min_opacity
        if prune_large:
            prune |= self.scales.max(dim=1).values > cfg.max_world_scale * extent
            if cfg.max_screen_radius is not None:
                prune |= self.max_radii2d > cfg.max_screen_radius
        remove = drop | prune
        self.prune(remove)
        self._reset_stats()
        return {"cloned": n_clone, "split": n_split, "pruned": int((prune & ~drop).sum()), "total": self.num_gaussians}

    @torch.no_grad()
    def reset_opacity(self, value: float = 0.01) -> None:
        """Cap every opacity at ``value`` and zero its Adam moments (3DGS's opacity reset)."""
        capped = inverse_sigmoid(torch.clamp(self.opacities, max=value))
        self._swap_param("opacity_logits", capped, torch.zeros_like)

    def densification_step(
        self, iteration: int, config: DensifyConfig | None = None, generator: torch.Generator | None = None
    ) -> dict[str, int] | None:
        """Run whatever the schedule asks at ``iteration`` (call after the stats were added,
        before ``optimizer.step()``). Returns the densification counts when it densified."""
        cfg = config or DensifyConfig()
        if iteration >= cfg.stop:
            return None
        result = None
        if iteration > cfg.start and iteration % cfg.interval == 0:
            result = self.densify_and_prune(
                cfg.grad_threshold, cfg.min_opacity, self.extent, iteration > cfg.prune_large_after, cfg, generator
            )
        if iteration > 0 and iteration % cfg.opacity_reset_interval == 0:
            self.reset_opacity(cfg.opacity_reset_value)
        return result


# ---------------------------------------------------------------------- head prior

# (centre, radii) of the ellipsoids composing the bust; z up, the face looks toward −y.
HEAD_ELLIPSOIDS: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((0.0, 0.03, 0.10), (0.44, 0.50, 0.56)),  # cranium
    ((0.0, -0.10, -0.16), (0.34, 0.38, 0.36)),  # face and jaw
    ((0.0, -0.47, -0.04), (0.07, 0.10, 0.13)),  # nose
    ((0.44, 0.03, -0.02), (0.06, 0.11, 0.15)),  # ears
    ((-0.44, 0.03, -0.02), (0.06, 0.11, 0.15)),
    ((0.0, 0.05, -0.60), (0.19, 0.19, 0.30)),  # neck
    ((0.0, 0.07, -1.00), (0.85, 0.36, 0.30)),  # shoulders
)
HEAD_PRIOR_BOTTOM = -1.15  # the bust is cut flat here


def head_prior_points(
    num_points: int = 4096,
    seed: int = 0,
    ellipsoids: Iterable[tuple[Iterable[float], Iterable[float]]] = HEAD_ELLIPSOIDS,
) -> np.ndarray:
    """Points (N, 3) on the outer surface of a head-and-shoulders bust of composed ellipsoids.

    Each ellipsoid is a scaled trimesh icosphere; the union's surface is sampled uniformly
    by area (points inside another ellipsoid or below the cut are dropped, so the
    ``num_points`` land on the visible skin). Stands in for the text-to-point-cloud init of
    the reference without another model.
    """
    import trimesh

    ells = [(np.asarray(c, dtype=np.float64), np.asarray(r, dtype=np.float64)) for c, r in ellipsoids]
    meshes = []
    for centre, radii in ells:
        mesh = trimesh.creation.icosphere(subdivisions=4)
        mesh.apply_scale(radii)
        mesh.apply_translation(centre)
        meshes.append(mesh)
    union = trimesh.util.concatenate(meshes)
    rng = np.random.default_rng(seed)

    def outside_all_others(pts: np.ndarray, owner: np.ndarray) -> np.ndarray:
        ok = pts[:, 2] >= HEAD_PRIOR_BOTTOM
        for i, (centre, radii) in enumerate(ells):
            inside = (((pts - centre) / radii) ** 2).sum(axis=1) < 0.999
            ok &= ~(inside & (owner != i))
        return ok

    face_owner = np.concatenate([np.full(len(m.faces), i) for i, m in enumerate(meshes)])
    kept: list[np.ndarray] = []
    total = 0
    while total < num_points:
        pts, faces = trimesh.sample.sample_surface(union, 2 * num_points, seed=int(rng.integers(2**31)))
        pts = np.asarray(pts)[outside_all_others(np.asarray(pts), face_owner[faces])]
        kept.append(pts)
        total += len(pts)
    return np.concatenate(kept)[:num_points].astype(np.float32)
