"""3D exports: standard 3DGS .ply (y-up), coloured point cloud, turntable MP4."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stableidentity.threed.export import (
    PLY_FIELDS,
    Z_UP_TO_Y_UP,
    load_ply,
    render_turntable_frames,
    save_ply,
    save_point_cloud,
    save_turntable,
)
from stableidentity.threed.gaussians import GaussianModel, inverse_sigmoid, rgb_to_sh
from stableidentity.threed.renderer import covariance_3d


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> GaussianModel:
    """The bust prior with random colours, opacities, anisotropic scales and rotations."""
    m = GaussianModel.from_head_prior(1500, seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        m.f_dc.copy_(rgb_to_sh(torch.rand(1500, 3, generator=g)))
        m.opacity_logits.copy_(inverse_sigmoid(0.3 + 0.69 * torch.rand(1500, generator=g)))
        m.log_scales.add_(0.5 * torch.randn(1500, 3, generator=g))
        m.quats.copy_(torch.randn(1500, 4, generator=g))
    return m


def test_ply_has_every_3dgs_field_and_is_y_up(model, tmp_path):
    from plyfile import PlyData

    path = save_ply(model, tmp_path / "splat.ply")
    ply = PlyData.read(str(path))
    assert not ply.text and ply.byte_order == "<"
    vertex = ply["vertex"]
    assert vertex.count == model.num_gaussians
    names = [p.name for p in vertex.properties]
    assert names == PLY_FIELDS
    assert names[:6] == ["x", "y", "z", "nx", "ny", "nz"] and {"f_dc_0", "f_dc_1", "f_dc_2", "opacity"} <= set(names)
    assert all(vertex.data.dtype[n] == np.dtype("<f4") for n in names)
    assert (path.read_bytes()[:200].find(b"format binary_little_endian 1.0")) > 0

    col = lambda *n: np.stack([vertex[k] for k in n], axis=1).astype(np.float64)  # noqa: E731
    xyz = col("x", "y", "z")
    means = model.means.detach().double().numpy()
    # z-up → y-up: (x, y, z) → (x, z, -y)
    np.testing.assert_allclose(xyz, np.stack([means[:, 0], means[:, 2], -means[:, 1]], axis=1), atol=1e-6)
    # the bust stands upright in a y-up viewer and faces +z (towards the default camera)
    assert xyz[:, 1].max() > 0.5 and xyz[:, 1].min() < -1.0
    nose = xyz[np.argmax(xyz[:, 2])]
    assert abs(nose[0]) < 0.1 and -0.3 < nose[1] < 0.2
    # raw values: logit opacity, log scales, SH DC
    np.testing.assert_allclose(vertex["opacity"], model.opacity_logits.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(col("scale_0", "scale_1", "scale_2"), model.log_scales.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(col("f_dc_0", "f_dc_1", "f_dc_2"), model.f_dc.detach().numpy(), atol=1e-6)
    np.testing.assert_array_equal(col("nx", "ny", "nz"), 0)
    # the rotation turns each covariance with the scene: Σ' = R Σ Rᵀ
    quats = torch.from_numpy(col("rot_0", "rot_1", "rot_2", "rot_3"))
    torch.testing.assert_close(quats.norm(dim=1), torch.ones(len(quats), dtype=torch.float64))
    cov_file = covariance_3d(torch.from_numpy(np.exp(col("scale_0", "scale_1", "scale_2"))), quats)
    rot = torch.from_numpy(Z_UP_TO_Y_UP)
    cov_expected = rot @ model.covariances().detach().double() @ rot.T
    torch.testing.assert_close(cov_file, cov_expected, rtol=1e-4, atol=1e-8)


def test_ply_opens_with_trimesh_and_round_trips(model, tmp_path):
    import trimesh

    path = save_ply(model, tmp_path / "splat.ply")
    loaded = trimesh.load(str(path))
    assert len(loaded.vertices) == model.num_gaussians
    back = load_ply(path)
    torch.testing.assert_close(back.means, model.means.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(back.covariances(), model.covariances().detach(), rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(back.colors, model.colors.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(back.opacities, model.opacities.detach(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("suffix", [".ply", ".glb"])
def test_point_cloud_loads_with_trimesh(model, tmp_path, suffix):
    import trimesh

    path = save_point_cloud(model, tmp_path / f"cloud{suffix}", min_opacity=0.5)
    keep = (model.opacities >= 0.5).numpy()
    assert 0 < keep.sum() < model.num_gaussians
    loaded = trimesh.load(str(path))
    cloud = loaded if isinstance(loaded, trimesh.PointCloud) else next(iter(loaded.geometry.values()))
    assert isinstance(cloud, trimesh.PointCloud) and len(cloud.vertices) == keep.sum()
    expected = model.means.detach().numpy()[keep] @ Z_UP_TO_Y_UP.T
    order = lambda a: a[np.lexsort(np.round(a, 4).T)]  # noqa: E731  (glTF may reorder nothing, but be safe)
    np.testing.assert_allclose(order(np.asarray(cloud.vertices)), order(expected), atol=1e-5)
    rgb = np.asarray(cloud.colors)[:, :3].astype(np.float64)
    assert rgb.std() > 30  # real colours, not a constant grey
    assert abs(rgb.mean() - 255 * model.colors.detach().numpy()[keep].mean()) < 2


def test_turntable_mp4(model, tmp_path):
    import imageio.v2 as imageio

    frames, width, height = 12, 64, 48
    path = save_turntable(model, tmp_path / "turn.mp4", num_frames=frames, width=width, height=height, fps=12)
    reader = imageio.get_reader(str(path))
    meta = reader.get_meta_data()
    video = [np.asarray(f) for f in reader]
    reader.close()
    assert len(video) == frames and video[0].shape == (height, width, 3)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    rendered = render_turntable_frames(model, frames, width, height)
    for got, want in zip(video, rendered):
        mse = np.mean((got.astype(np.float64) - want) ** 2) / 255.0**2
        assert -10 * math.log10(mse) > 25  # the video shows what the renderer drew
    assert np.abs(video[0].astype(int) - video[frames // 2].astype(int)).mean() > 5  # it turns
    with pytest.raises(ValueError):
        save_turntable(model, tmp_path / "odd.mp4", num_frames=2, width=63, height=48)
