"""Differentiable Gaussian-splatting renderer in plain PyTorch (CPU and GPU).

The pipeline follows 3DGS (Kerbl et al. 2023) in three small steps:

1. :func:`covariance_3d` builds Σ = R S Sᵀ Rᵀ from scales and unit quaternions (wxyz).
2. :func:`project_gaussians` does the EWA projection: Σ' = J W Σ Wᵀ Jᵀ + 0.3·I (the 0.3
   low-pass dilation keeps every splat at least about a pixel wide), near-plane culling,
   a conservative 3-sigma screen radius and the inverse 2D covariance ("conic").
3. :func:`rasterize` composites the depth-sorted splats front to back,
   ``alpha = min(0.99, opacity · exp(-½ dᵀ Σ'⁻¹ d))`` (dropped below 1/255 or outside the
   3-sigma ellipse), ``C = Σ c_i α_i T_i`` with transmittance ``T_i = Π_{j<i} (1 − α_j)``.

Memory stays bounded: the image is cut into square tiles, every tile only sees the
splats whose 3-sigma box touches it, and tiles are evaluated in batches of at most
``chunk`` (pixel, splat) pairs, splitting a crowded tile's splat list into depth-ordered
pieces that carry transmittance. The compositing backward pass is written by hand: it
keeps the per-tile splat lists, recomputes alphas piece by piece and walks them back to
front, so autograd never holds the Gaussians × pixels product. Every pixel's arithmetic
depends only on its own coordinates, so results do not depend on tile size or chunk (up
to summation-order rounding).

Conventions (shared with gsplat): world-to-camera 4×4 ``viewmat``, OpenCV camera axes
(x right, y down, z forward), pixel ``(i, j)`` has its centre at ``(j + 0.5, i + 0.5)``,
so ``cx = W/2`` is the image centre. :func:`render` can hand the same inputs to
``gsplat.rasterization`` (``backend="gsplat"``) when CUDA and gsplat are available.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from .cameras import Camera
    from .gaussians import GaussianModel

ALPHA_MIN = 1.0 / 255.0  # contributions below this are skipped, as in 3DGS
ALPHA_MAX = 0.99  # keeps transmittance (and its log) finite
LOW_PASS = 0.3  # screen-space dilation added to the 2D covariance (pixels²)
SIGMA_CUTOFF = 3.0  # splats end at their 3-sigma ellipse
DEFAULT_TILE = 8
# (pixel, splat) pairs evaluated at once: small enough to stay in cache on CPU and to bound
# GPU memory, large enough to amortise Python overhead.
DEFAULT_CHUNK = 1 << 18


@dataclass
class RenderOutput:
    """What one view's render gives back.

    ``rgb`` (3, H, W), ``alpha`` (1, H, W) and ``depth`` (1, H, W, expected camera-space z of
    the visible surface, 0 where alpha is 0) are images. ``means2d`` (N, 2, pixels; (1, N, 2)
    from gsplat) keeps its gradient after ``backward()`` for densification, ``radii`` (N,)
    are integer screen radii (0 = culled), ``visible`` is ``radii > 0`` and ``depths`` (N,)
    the camera-space z.
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    means2d: Tensor
    radii: Tensor
    visible: Tensor
    depths: Tensor
    width: int
    height: int


# --------------------------------------------------------------------------- geometry


def quaternion_to_matrix(quats: Tensor) -> Tensor:
    """Rotation matrices (N, 3, 3) from quaternions (N, 4) in wxyz order, normalised here."""
    q = F.normalize(quats, dim=-1)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(q.shape[:-1] + (3, 3))


def covariance_3d(scales: Tensor, quats: Tensor) -> Tensor:
    """World covariances Σ = (R S)(R S)ᵀ, (N, 3, 3), from scales (N, 3) and quaternions (N, 4)."""
    m = quaternion_to_matrix(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: Tensor,
    covs: Tensor,
    viewmat: Tensor,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    width: int,
    height: int,
    near: float = 0.01,
    low_pass: float = LOW_PASS,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EWA-project 3D Gaussians to the image.

    Returns ``means2d`` (N, 2) in pixels, ``conics`` (N, 3) = the upper triangle (a, b, c) of
    the inverse 2D covariance, camera-space ``depths`` (N,) and integer ``radii`` (N,), 0 for
    Gaussians behind the near plane or off screen.
    """
    viewmat = viewmat.to(means)
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    p = means @ rot.T + trans
    x, y, z = p.unbind(-1)
    in_front = z > near
    zs = torch.where(in_front, z, torch.ones_like(z))  # keeps culled rows finite

    # The Jacobian is evaluated with x/z clamped a little outside the frustum (as 3DGS and
    # gsplat do) so that splats far off screen cannot blow up.
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_x, cx / fx + 0.3 * tan_x
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_y, cy / fy + 0.3 * tan_y
    tx = zs * torch.clamp(x / zs, -lim_x_neg, lim_x_pos)
    ty = zs * torch.clamp(y / zs, -lim_y_neg, lim_y_pos)
    zero = torch.zeros_like(zs)
    jac = torch.stack(
        [fx / zs, zero, -fx * tx / (zs * zs), zero, fy / zs, -fy * ty / (zs * zs)], dim=-1
    ).reshape(-1, 2, 3)
    t = jac @ rot.to(covs)
    cov2d = t @ covs @ t.transpose(-1, -2)
    a = cov2d[:, 0, 0] + low_pass
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + low_pass
    det = (a * c - b * b).clamp_min(1e-12)
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)

    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)

    with torch.no_grad():
        mid = 0.5 * (a + c)
        lam = mid + torch.sqrt((mid * mid - det).clamp_min(0.01))
        radii = torch.ceil(SIGMA_CUTOFF * torch.sqrt(lam))
        u, v = means2d.unbind(-1)
        on_screen = (u + radii > 0) & (u - radii < width) & (v + radii > 0) & (v - radii < height)
        keep = in_front & on_screen & torch.isfinite(radii) & (radii > 0)
        radii = torch.where(keep, radii, torch.zeros_like(radii)).to(torch.int32)
    return means2d, conics, z, radii


# ------------------------------------------------------------------------ rasterisation


def _tile_pairs(
    means2d: Tensor, radii: Tensor, tile_size: int, tiles_x: int, tiles_y: int
) -> tuple[Tensor, Tensor]:
    """(tile id, splat index) pairs for every tile a splat's 3-sigma box touches.

    The input splats must already be in front-to-back order; pairs come back sorted by tile,
    then by that order, so each tile's splat list is a contiguous, depth-sorted slice.
    """
    u, v = means2d.detach().unbind(-1)
    r = radii.to(u.dtype)
    x0 = torch.floor((u - r) / tile_size).clamp(0, tiles_x).long()
    x1 = (torch.floor((u + r) / tile_size) + 1).clamp(0, tiles_x).long()
    y0 = torch.floor((v - r) / tile_size).clamp(0, tiles_y).long()
    y1 = (torch.floor((v + r) / tile_size) + 1).clamp(0, tiles_y).long()
    wx = (x1 - x0).clamp_min(0)
    counts = wx * (y1 - y0).clamp_min(0)
    num = means2d.shape[0]
    ids = torch.repeat_interleave(torch.arange(num, device=u.device), counts)
    if ids.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=u.device)
        return empty, empty
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(ids.numel(), device=u.device) - starts[ids]
    w = wx[ids]
    tile = (y0[ids] + local // w) * tiles_x + x0[ids] + local % w
    order = torch.argsort(tile * num + ids)  # unique keys: tile-major, depth order within
    return tile[order], ids[order]


LOG2_E = 1.0 / math.log(2.0)


def _splat_alpha(xs: Tensor, ys: Tensor, means: Tensor, conics: Tensor, opac: Tensor) -> tuple[Tensor, ...]:
    """Per-pixel alpha of a depth-ordered piece of splats over a batch of tiles.

    The pixel grid is separable (tile columns ``xs`` (B, X), rows ``ys`` (B, Y)), so the
    quadratic form is assembled from per-column and per-row terms: two full-size passes.
    The exponent is kept in base 2 (``exp2`` is several times faster than ``exp`` on CPU)
    and shifted by the splat's alpha threshold — max(1/255, opacity·e^-4.5), i.e. the 1/255
    skip and the 3-sigma ellipse in one test — so one scalar threshold drops the rest. Each
    pixel's arithmetic depends only on its own coordinates, never on the tiling.

    Returns dx (B, 1, X, k), dy (B, Y, 1, k), the thresholded alpha before the 0.99 clamp
    and the clamped alpha, both (B, Y·X, k).
    """
    b, k = means.shape[0], means.shape[1]
    dx = xs[:, None, :, None] - means[:, None, None, :, 0]
    dy = ys[:, :, None, None] - means[:, None, None, :, 1]
    qa, qb, qc = (conics[:, None, None, :, i] for i in range(3))
    opac = opac.clamp_min(1e-30)
    threshold = torch.clamp_min(opac * math.exp(-0.5 * SIGMA_CUTOFF**2), ALPHA_MIN)
    shift = torch.log2(opac / threshold)[:, None, None, :]
    col = (qa * (-0.5 * LOG2_E)) * dx * dx + shift
    row = (qc * (-0.5 * LOG2_E)) * dy * dy
    u = torch.addcmul(col + row, qb * (-LOG2_E) * dx, dy)  # log2(alpha / threshold)
    alpha_raw = torch.exp2(F.threshold(u, 0.0, -math.inf)).reshape(b, -1, k) * threshold[:, None, :]
    return dx, dy, alpha_raw, alpha_raw.clamp(max=ALPHA_MAX)


def _transmittance(alpha: Tensor, start: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(1 − α, transmittance in front of each splat, blending weights α·T, transmittance
    behind the piece), given the transmittance ``start`` (B, P) in front of it (None = 1)."""
    one_minus = 1.0 - alpha
    t_after = torch.cumprod(one_minus, dim=-1)
    t_before = torch.cat([torch.ones_like(t_after[..., :1]), t_after[..., :-1]], dim=-1)
    t_end = t_after[..., -1]
    if start is not None:
        t_before = t_before * start[..., None]
        t_end = t_end * start
    return one_minus, t_before, alpha * t_before, t_end


class _Composite(torch.autograd.Function):
    """Front-to-back compositing of a batch of tiles with a hand-written backward.

    Inputs: tile columns ``xs`` (B, X) and rows ``ys`` (B, Y) of pixel centres; depth-sorted
    splat lists ``means`` (B, K, 2), ``conics`` (B, K, 3), ``opac`` (B, K), ``feats``
    (B, K, C) (padding rows have opacity 0). Output (B, C + 1, Y·X): blended features and
    final transmittance. Splats are taken ``k_chunk`` at a time, carrying transmittance.
    Only the inputs and one (B, P) transmittance per piece are kept for the backward pass,
    which recomputes alphas and walks the pieces back to front (as the CUDA rasterisers
    do), so memory stays at one piece whatever the number of splats.
    """

    @staticmethod
    def forward(ctx, xs, ys, means, conics, opac, feats, k_chunk):  # type: ignore[override]
        b, k_total = means.shape[0], means.shape[1]
        p = xs.shape[1] * ys.shape[1]
        trans = None  # transmittance in front of the current piece; None = 1
        acc = xs.new_zeros(b, feats.shape[2], p)
        starts = []
        for k0 in range(0, k_total, k_chunk):
            sl = slice(k0, k0 + k_chunk)
            starts.append(xs.new_ones(b, p) if trans is None else trans)
            alpha = _splat_alpha(xs, ys, means[:, sl], conics[:, sl], opac[:, sl])[-1]
            _, _, weights, trans = _transmittance(alpha, trans)
            acc = torch.baddbmm(acc, feats[:, sl].transpose(1, 2), weights.transpose(1, 2))
        if trans is None:
            trans = xs.new_ones(b, p)
        ctx.k_chunk = k_chunk
        ctx.save_for_backward(xs, ys, means, conics, opac, feats, torch.stack(starts), trans)
        return torch.cat([acc, trans[:, None]], dim=1)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        xs, ys, means, conics, opac, feats, starts, trans_final = ctx.saved_tensors
        k_chunk, c = ctx.k_chunk, feats.shape[2]
        grad_f, grad_t = grad[:, :c], grad[:, c]  # (B, C, P), (B, P)
        d_means, d_conics = torch.zeros_like(means), torch.zeros_like(conics)
        d_opac, d_feats = torch.zeros_like(opac), torch.zeros_like(feats)
        # carry = G_T · T_final + Σ w·g over the splats behind the current piece
        carry = grad_t * trans_final
        pieces = list(range(0, means.shape[1], k_chunk))
        for i in reversed(range(len(pieces))):
            sl = slice(pieces[i], pieces[i] + k_chunk)
            m, q, o, f = means[:, sl], conics[:, sl], opac[:, sl], feats[:, sl]
            dx, dy, alpha_raw, alpha = _splat_alpha(xs, ys, m, q, o)
            one_minus, t_before, weights, _ = _transmittance(alpha, starts[i] if i else None)
            g = grad_f.transpose(1, 2) @ f.transpose(1, 2)  # ∂L/∂(blended features)·f_k, (B, P, k)
            d_feats[:, sl] = (grad_f @ weights).transpose(1, 2)
            cum_wg = torch.cumsum(weights * g, dim=-1)
            total = cum_wg[..., -1:] + carry[..., None]
            behind = total - cum_wg
            carry = total[..., 0]
            # α_k scales its own weight (T_k) and every transmittance behind it (÷(1 − α_k)):
            # ∂L/∂α_k = T_k g_k − behind_k / (1 − α_k). Through α = o·exp(logit) this is ×α,
            # zero where the 0.99 clamp is active. Both factors are computed negated.
            minus_d_alpha = behind / one_minus - t_before * g
            minus_alpha_active = F.threshold(-alpha_raw, -ALPHA_MAX, 0.0)
            d_logit = minus_d_alpha * minus_alpha_active
            d_logit = d_logit.reshape(dy.shape[0], dy.shape[1], dx.shape[2], -1)
            col = d_logit.sum(dim=1)  # (B, X, k)
            row = d_logit.sum(dim=2)  # (B, Y, k)
            cross = (d_logit * dy).sum(dim=1)  # (B, X, k)
            dx1, dy1 = dx[:, 0], dy[:, :, 0]
            s_x, s_y = (col * dx1).sum(1), (row * dy1).sum(1)
            s_xx, s_yy, s_xy = (col * dx1 * dx1).sum(1), (row * dy1 * dy1).sum(1), (cross * dx1).sum(1)
            qa, qb, qc = q.unbind(-1)
            # ln alpha = ln o - ½ a dx² - b dx dy - ½ c dy², with dx = x - μx, dy = y - μy
            d_means[:, sl, 0] = qa * s_x + qb * s_y
            d_means[:, sl, 1] = qc * s_y + qb * s_x
            d_conics[:, sl] = torch.stack([-0.5 * s_xx, -s_xy, -0.5 * s_yy], dim=-1)
            d_opac[:, sl] = col.sum(1) / o.clamp_min(1e-30)
        return None, None, d_means, d_conics, d_opac, d_feats, None


def _tile_batches(counts: Tensor, pixels_per_tile: int, chunk: int) -> list[Tensor]:
    """Group non-empty tiles (largest first) so that each batch holds about ``chunk`` pairs."""
    nonempty = torch.nonzero(counts > 0).flatten()
    if nonempty.numel() == 0:
        return []
    order = nonempty[torch.argsort(counts[nonempty], descending=True, stable=True)]
    sizes = counts[order].tolist()
    batches, start = [], 0
    while start < len(sizes):
        kmax = sizes[start]
        n = max(1, chunk // max(1, pixels_per_tile * kmax))
        batches.append(order[start : start + n])
        start += n
    return batches


def rasterize(
    means2d: Tensor,
    conics: Tensor,
    opacities: Tensor,
    colors: Tensor,
    depths: Tensor,
    radii: Tensor,
    width: int,
    height: int,
    background: Tensor | Sequence[float] | float | None = None,
    tile_size: int = DEFAULT_TILE,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite projected splats into (rgb (3,H,W), alpha (1,H,W), expected depth (1,H,W)).

    Only splats with ``radii > 0`` are drawn. ``chunk`` bounds the (pixel, splat) pairs
    evaluated at once; ``tile_size`` the square tiles used for culling.
    """
    device, dtype = means2d.device, means2d.dtype
    visible = torch.nonzero(radii > 0).flatten()
    visible = visible[torch.argsort(depths.detach()[visible], stable=True)]
    feats = torch.cat([colors, depths[:, None]], dim=-1)[visible]
    m2d, con, opa = means2d[visible], conics[visible], opacities[visible]
    num_feats = feats.shape[1]

    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    num_tiles, ppt = tiles_x * tiles_y, tile_size * tile_size
    pair_tile, pair_splat = _tile_pairs(m2d, radii[visible], tile_size, tiles_x, tiles_y)
    counts = torch.bincount(pair_tile, minlength=num_tiles)
    offsets = torch.cumsum(counts, 0) - counts

    # Sentinel row (opacity 0) pads short splat lists inside a batch.
    pad = m2d.shape[0]
    m2d = torch.cat([m2d, m2d.new_zeros(1, 2)])
    con = torch.cat([con, con.new_tensor([[1.0, 0.0, 1.0]])])
    opa = torch.cat([opa, opa.new_zeros(1)])
    feats = torch.cat([feats, feats.new_zeros(1, num_feats)])
    pair_splat = torch.cat([pair_splat, pair_splat.new_tensor([pad])])

    local = torch.arange(tile_size, device=device, dtype=dtype) + 0.5  # pixel centres

    pieces, tile_ids = [], []
    batches = _tile_batches(counts, ppt, chunk)
    for tiles in batches:
        kmax = int(counts[tiles[0]])
        slot = torch.arange(kmax, device=device)
        pair_idx = offsets[tiles, None] + slot
        pair_idx = torch.where(slot < counts[tiles, None], pair_idx, torch.full_like(pair_idx, pair_splat.numel() - 1))
        idx = pair_splat[pair_idx]  # (B, K) splat rows, depth-sorted, padded
        xs = (tiles % tiles_x).to(dtype)[:, None] * tile_size + local
        ys = (tiles // tiles_x).to(dtype)[:, None] * tile_size + local
        k_chunk = max(1, chunk // (ppt * tiles.numel()))
        pieces.append(_Composite.apply(xs, ys, m2d[idx], con[idx], opa[idx], feats[idx], k_chunk))
        tile_ids.append(tiles)

    empty = torch.nonzero(counts == 0).flatten()
    if empty.numel():
        blank = means2d.new_zeros(empty.numel(), num_feats + 1, ppt)
        blank[:, -1] = 1.0
        pieces.append(blank)
        tile_ids.append(empty)
    per_tile = torch.cat(pieces)[torch.argsort(torch.cat(tile_ids))]  # (tiles, C + 1, P)
    if not batches:  # nothing drawn: keep the outputs attached to the inputs (zero gradients)
        per_tile = per_tile + sum(t.sum() for t in (means2d, conics, opacities, colors, depths)) * 0.0
    image = (
        per_tile.reshape(tiles_y, tiles_x, num_feats + 1, tile_size, tile_size)
        .permute(2, 0, 3, 1, 4)
        .reshape(num_feats + 1, tiles_y * tile_size, tiles_x * tile_size)[:, :height, :width]
    )
    trans = image[-1:]
    alpha = 1.0 - trans
    rgb = image[:3] + trans * _background(background, 3, device, dtype)[:, None, None]
    covered = alpha > 1e-6
    safe_alpha = torch.where(covered, alpha, torch.ones_like(alpha))
    depth = torch.where(covered, image[3:4] / safe_alpha, torch.zeros_like(alpha))
    return rgb, alpha, depth


def _background(background, channels: int, device, dtype) -> Tensor:
    if background is None:
        return torch.zeros(channels, device=device, dtype=dtype)
    bg = torch.as_tensor(background, device=device, dtype=dtype).flatten()
    return bg.expand(channels) if bg.numel() == 1 else bg


# ------------------------------------------------------------------------ entry points


def rasterize_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    camera: "Camera",
    background: Tensor | Sequence[float] | float | None = None,
    tile_size: int = DEFAULT_TILE,
    chunk: int = DEFAULT_CHUNK,
    near: float = 0.01,
    backend: str = "torch",
) -> RenderOutput:
    """Render activated Gaussian parameters (means, wxyz quats, scales, opacities in [0, 1],
    RGB colours) from ``camera``. ``backend="gsplat"`` uses gsplat's CUDA rasteriser."""
    if backend == "gsplat":
        return _render_gsplat(means, quats, scales, opacities, colors, camera, background, near)
    if backend != "torch":
        raise ValueError(f"unknown renderer backend {backend!r} (use 'torch' or 'gsplat')")
    covs = covariance_3d(scales, quats)
    means2d, conics, depths, radii = project_gaussians(
        means, covs, camera.viewmat, camera.fx, camera.fy, camera.cx, camera.cy, camera.width, camera.height, near
    )
    if means2d.requires_grad:
        means2d.retain_grad()
    rgb, alpha, depth = rasterize(
        means2d, conics, opacities, colors, depths, radii, camera.width, camera.height, background, tile_size, chunk
    )
    return RenderOutput(rgb, alpha, depth, means2d, radii, radii > 0, depths, camera.width, camera.height)


def render(
    model: "GaussianModel",
    camera: "Camera",
    background: Tensor | Sequence[float] | float | None = None,
    scale_modifier: float = 1.0,
    tile_size: int = DEFAULT_TILE,
    chunk: int = DEFAULT_CHUNK,
    backend: str = "torch",
) -> RenderOutput:
    """Render a :class:`GaussianModel` (``scale_modifier`` multiplies every scale, e.g. for
    the scale-noise augmentation)."""
    return rasterize_gaussians(
        model.means,
        model.rotations,
        model.scales * scale_modifier,
        model.opacities,
        model.colors,
        camera,
        background,
        tile_size=tile_size,
        chunk=chunk,
        backend=backend,
    )


def gsplat_available() -> bool:
    """True when CUDA is up and the optional ``gsplat`` package imports."""
    if not torch.cuda.is_available():
        return False
    try:
        import gsplat  # noqa: F401
    except Exception:
        return False
    return True


def _render_gsplat(means, quats, scales, opacities, colors, camera, background, near) -> RenderOutput:
    """gsplat's CUDA rasteriser with the same conventions (wxyz quats, world-to-camera, OpenCV)."""
    from gsplat import rasterization  # optional dependency, imported lazily

    dev, dt = means.device, means.dtype
    k = torch.tensor([[camera.fx, 0, camera.cx], [0, camera.fy, camera.cy], [0, 0, 1]], device=dev, dtype=dt)
    view = camera.viewmat.to(dev, dt)
    bg = _background(background, 3, dev, dt)
    colors_out, alphas, meta = rasterization(
        means, quats, scales, opacities, colors,
        view[None], k[None], camera.width, camera.height,
        near_plane=near, render_mode="RGB+ED", backgrounds=torch.cat([bg, bg.new_zeros(1)])[None], packed=False,
    )  # fmt: skip
    means2d = meta["means2d"]  # (1, N, 2): kept whole, a slice of it would get no gradient
    if means2d.requires_grad:
        means2d.retain_grad()
    radii = meta["radii"][0]
    if radii.dim() == 2:  # newer gsplat returns per-axis radii
        radii = radii.max(dim=-1).values
    alpha = alphas[0].permute(2, 0, 1)
    depth = colors_out[0, ..., 3:4].permute(2, 0, 1)
    return RenderOutput(
        colors_out[0, ..., :3].permute(2, 0, 1), alpha, depth, means2d,
        radii.int(), radii > 0, (means @ view[:3, :3].T + view[:3, 3])[:, 2].detach(), camera.width, camera.height,
    )  # fmt: skip


# ------------------------------------------------------------------------ benchmarking


def measure_throughput(
    num_gaussians: int = 20_000,
    size: int = 256,
    device: str | torch.device = "cpu",
    repeats: int = 3,
    backward: bool = False,
    tile_size: int = DEFAULT_TILE,
    chunk: int = DEFAULT_CHUNK,
    backend: str = "torch",
    seed: int = 0,
) -> dict[str, float]:
    """Time renders of a random head-sized scene; report Gaussians × pixels per second.

    The scene: ``num_gaussians`` splats uniform in a ball of radius 0.9 (about the bust
    prior's size), scales log-normal around 0.03, opacity 0.5, seen from 5.3 units with a
    0.45 rad field of view.
    """
    from .cameras import orbit_camera

    gen = torch.Generator().manual_seed(seed)
    n = num_gaussians
    direction = F.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    means = direction * 0.9 * torch.rand(n, 1, generator=gen) ** (1 / 3)
    scales = 0.03 * torch.exp(0.3 * torch.randn(n, 3, generator=gen))
    quats = torch.randn(n, 4, generator=gen)
    opac = torch.full((n,), 0.5)
    colors = torch.rand(n, 3, generator=gen)
    tensors = [t.to(device) for t in (means, quats, scales, opac, colors)]
    if backward:
        for t in tensors:
            t.requires_grad_(True)
    cam = orbit_camera(20.0, 10.0, 5.3, 0.45, size, size).to(device)

    def once() -> None:
        with torch.set_grad_enabled(backward):
            out = rasterize_gaussians(*tensors, cam, 1.0, tile_size=tile_size, chunk=chunk, backend=backend)
            if backward:
                (out.rgb.sum() + out.depth.mean()).backward()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()

    once()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]  # median: robust to a busy machine
    return {
        "num_gaussians": float(n),
        "pixels": float(size * size),
        "seconds_per_frame": seconds,
        "gaussians_pixels_per_second": n * size * size / seconds,
    }
