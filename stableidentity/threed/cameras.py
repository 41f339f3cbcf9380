"""Pinhole cameras around a z-up object: look-at, intrinsics from field of view, orbit sampling.

World: z up, the head's face looks toward −y, so azimuth 0 is the front view and
azimuth ±180° the back. Cameras are OpenCV-style (x right, y down, z forward) and hold a
world-to-camera matrix, the layout gsplat and :mod:`.renderer` take.

Orbit sampling follows DESIGN §2.2 (LucidDreamer's settings): radius 5.2–5.5, polar angle
45°–90° (elevation 0°–45°), field of view 0.32–0.60 rad, and an azimuth range that starts
at ±80° around the front and widens ×1.5 every 500 iterations up to ±180°, so the front is
shaped before the back is asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import Tensor


@dataclass
class Camera:
    """One view: world-to-camera ``viewmat`` (4, 4), intrinsics in pixels, image size, and
    the orbit coordinates it was made from (degrees, world units) for view-dependent prompts."""

    viewmat: Tensor
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    azimuth: float = 0.0
    elevation: float = 0.0
    radius: float = 0.0

    @property
    def K(self) -> Tensor:
        """3×3 intrinsic matrix."""
        rows = [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]]
        return torch.tensor(rows, dtype=self.viewmat.dtype)

    @property
    def fov_y(self) -> float:
        return 2.0 * math.atan(0.5 * self.height / self.fy)

    @property
    def fov_x(self) -> float:
        return 2.0 * math.atan(0.5 * self.width / self.fx)

    @property
    def position(self) -> Tensor:
        """Camera centre in world coordinates."""
        rot, trans = self.viewmat[:3, :3], self.viewmat[:3, 3]
        return -rot.T @ trans

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Camera":
        return replace(self, viewmat=self.viewmat.to(device=device, dtype=dtype))


def look_at(
    eye: Sequence[float] | Tensor,
    target: Sequence[float] | Tensor = (0.0, 0.0, 0.0),
    up: Sequence[float] | Tensor = (0.0, 0.0, 1.0),
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """World-to-camera 4×4 for a camera at ``eye`` looking at ``target`` (OpenCV axes).

    Rows of the rotation are the camera's right, down and forward axes in world coordinates.
    """
    eye, target, up = (torch.as_tensor(v, dtype=torch.float64) for v in (eye, target, up))
    forward = target - eye
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    if right.norm() < 1e-8:  # looking straight along `up`: pick any perpendicular
        right = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    rot = torch.stack([right, down, forward])
    mat = torch.eye(4, dtype=torch.float64)
    mat[:3, :3] = rot
    mat[:3, 3] = -rot @ eye
    return mat.to(dtype)


def intrinsics_from_fov(fov_y: float, width: int, height: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) for a vertical field of view in radians, square pixels, centred."""
    fy = 0.5 * height / math.tan(0.5 * fov_y)
    return fy, fy, 0.5 * width, 0.5 * height


def orbit_position(azimuth: float, elevation: float, radius: float) -> Tensor:
    """World position on the orbit sphere (degrees). Azimuth 0 is in front (−y), 90 at +x."""
    az, el = math.radians(azimuth), math.radians(elevation)
    return torch.tensor(
        [radius * math.cos(el) * math.sin(az), -radius * math.cos(el) * math.cos(az), radius * math.sin(el)],
        dtype=torch.float64,
    )


def orbit_camera(
    azimuth: float,
    elevation: float,
    radius: float,
    fov_y: float,
    width: int,
    height: int,
    target: Sequence[float] | Tensor = (0.0, 0.0, 0.0),
    up: Sequence[float] | Tensor = (0.0, 0.0, 1.0),
) -> Camera:
    """A camera on the orbit sphere looking at ``target``."""
    target = torch.as_tensor(target, dtype=torch.float64)
    eye = orbit_position(azimuth, elevation, radius) + target
    fx, fy, cx, cy = intrinsics_from_fov(fov_y, width, height)
    return Camera(look_at(eye, target, up), fx, fy, cx, cy, width, height, azimuth, elevation, radius)


@dataclass
class OrbitConfig:
    """Random orbit ranges (DESIGN §2.2). Angles in degrees, FoV in radians."""

    radius_range: tuple[float, float] = (5.2, 5.5)
    polar_range: tuple[float, float] = (45.0, 90.0)  # from +z; 90° = eye level
    azimuth_start: float = 80.0  # half range at iteration 0
    azimuth_growth: float = 1.5
    widen_every: int = 500
    azimuth_max: float = 180.0
    fov_range: tuple[float, float] = (0.32, 0.60)
    target_jitter: float = 0.05  # std of the look-at point, world units
    up_jitter: float = 0.02  # std added to the up vector


def azimuth_half_range(iteration: int, config: OrbitConfig | None = None) -> float:
    """Half-width of the azimuth range (degrees) at ``iteration``: 80, 120, 180, 180, …"""
    cfg = config or OrbitConfig()
    steps = max(0, iteration) // cfg.widen_every
    return min(cfg.azimuth_max, cfg.azimuth_start * cfg.azimuth_growth**steps)


def _uniform(lo: float, hi: float, gen: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))


def sample_orbit_cameras(
    num: int,
    iteration: int,
    width: int,
    height: int,
    generator: torch.Generator | None = None,
    config: OrbitConfig | None = None,
) -> list[Camera]:
    """``num`` random training cameras for ``iteration`` (reproducible with ``generator``)."""
    cfg = config or OrbitConfig()
    half = azimuth_half_range(iteration, cfg)
    cams = []
    for _ in range(num):
        radius = _uniform(*cfg.radius_range, generator)
        polar = _uniform(*cfg.polar_range, generator)
        azimuth = _uniform(-half, half, generator)
        fov = _uniform(*cfg.fov_range, generator)
        target = cfg.target_jitter * torch.randn(3, generator=generator, dtype=torch.float64)
        up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        up = up + cfg.up_jitter * torch.randn(3, generator=generator, dtype=torch.float64)
        cams.append(orbit_camera(azimuth, 90.0 - polar, radius, fov, width, height, target, up))
    return cams


def turntable_cameras(
    num: int,
    width: int,
    height: int,
    elevation: float = 15.0,
    radius: float = 5.3,
    fov_y: float = 0.45,
    start_azimuth: float = 0.0,
) -> list[Camera]:
    """``num`` evenly spaced cameras for a full turn (azimuths wrapped into [−180, 180))."""
    cams = []
    for i in range(num):
        az = (start_azimuth + 360.0 * i / num + 180.0) % 360.0 - 180.0
        cams.append(orbit_camera(az, elevation, radius, fov_y, width, height))
    return cams
