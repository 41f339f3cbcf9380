"""Identity-driven 3D: Gaussian splatting guided by the identity (DESIGN §2).

Modules:

- :mod:`.gaussians` — Gaussian parameters, head-and-shoulders prior, per-parameter Adam,
  densification, pruning and opacity reset.
- :mod:`.renderer` — differentiable tiled PyTorch rasteriser (EWA projection, depth-sorted
  alpha compositing; RGB, alpha, depth), optional gsplat backend, throughput measurement.
- :mod:`.cameras` — look-at, intrinsics from field of view, orbit sampling with progressive
  azimuth widening, turntable cameras.
- :mod:`.export` — standard 3DGS ``.ply`` (y-up), coloured point cloud, turntable MP4.
"""
