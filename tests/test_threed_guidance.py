"""ISM guidance, the 3D trainer and the `threed` command on the tiny preset."""

from __future__ import annotations

import imageio.v2 as imageio
import pytest
import torch
from plyfile import PlyData

from stableidentity.cli import main
from stableidentity.identity import Identity
from stableidentity.threed.cameras import sample_orbit_cameras
from stableidentity.threed.gaussians import GaussianModel
from stableidentity.threed.guidance import ISMConfig, ISMGuidance, interval, timestep_range, view_weights
from stableidentity.threed.renderer import render
from stableidentity.threed.trainer import IdentityTo3D, get_preset

PLY_FIELDS = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


@pytest.mark.parametrize("iteration, t_range, delta", [(0, (20, 980), 100), (750, (20, 740), 125),
                                                       (1500, (20, 500), 150), (4000, (20, 500), 150)])
def test_timestep_and_interval_schedules(iteration, t_range, delta):
    assert timestep_range(iteration) == t_range
    assert interval(iteration) == delta


def test_view_prompts_blend_by_azimuth():
    torch.testing.assert_close(view_weights(0), torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(view_weights(-45), torch.tensor([0.5, 0.5, 0.0]))
    torch.testing.assert_close(view_weights(90), torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(view_weights(135), torch.tensor([0.0, 0.5, 0.5]))
    torch.testing.assert_close(view_weights(180), torch.tensor([0.0, 0.0, 1.0]))


@pytest.fixture(scope="module")
def guidance(manager):
    torch.manual_seed(0)
    identity = Identity(torch.randn(2, manager.base().token_width) * 0.02)
    return ISMGuidance(manager.base(), identity, "a DSLR photo of <id>", config=ISMConfig(resolution=64))


def test_one_ism_iteration_reaches_every_gaussian_parameter(guidance):
    model = GaussianModel.from_head_prior(800, seed=1)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # isotropic Gaussians (the init) have no use for a rotation: make them anisotropic
        model.log_scales += 0.3 * torch.randn(model.log_scales.shape, generator=generator)
    cameras = sample_orbit_cameras(2, 0, 48, 48, generator)
    renders = [render(model, camera, 1.0) for camera in cameras]
    images = torch.stack([r.rgb for r in renders])
    loss, info = guidance.loss(images, torch.tensor([c.azimuth for c in cameras]), 0, generator)
    loss.backward()
    assert 20 <= info["t"] < 980 and info["s"] == max(info["t"] - 100, 0)
    for name, param in model.parameter_dict().items():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_ddim_steps_are_exactly_invertible(guidance):
    g = torch.Generator().manual_seed(0)
    x_s, eps = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    x_t = guidance.ddim_step(x_s, 300, 450, eps)
    torch.testing.assert_close(guidance.ddim_step(x_t, 450, 300, eps), x_s, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("s, inversion_steps", [(0, 1), (450, 3), (999, 5)])
def test_inversion_to_s_takes_at_most_five_strides(guidance, s, inversion_steps):
    calls = []
    handle = guidance.base.unet.register_forward_pre_hook(lambda module, args: calls.append(int(args[1][0])))
    try:
        x_t, eps_s = guidance.invert(torch.randn(1, 4, 8, 8), s=s, t=min(s + 100, 999))
    finally:
        handle.remove()
    # Each inversion step asks the UNet once at its start; then once more at s for the target.
    assert len(calls) == inversion_steps + 1 and calls[-1] == s
    assert calls == sorted(calls) and torch.isfinite(x_t).all()


def test_trainer_runs_and_previews(manager):
    identity = Identity(torch.randn(2, manager.base().token_width) * 0.02)
    preset = get_preset("smoke")
    calls = []
    model = IdentityTo3D(manager.base(), identity, "<id>", preset)(seed=0, callback=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == list(range(1, preset.iterations + 1))
    assert [c[3] is not None for c in calls] == [i % preset.preview_every == 0 for i in range(1, preset.iterations + 1)]
    assert model.num_gaussians > 0 and all(torch.isfinite(p).all() for p in model.parameter_dict().values())


def test_threed_cli_end_to_end(tmp_path, capsys):
    identity = Identity(torch.randn(2, 32) * 0.02).save(tmp_path / "me.safetensors")
    out = tmp_path / "3d"
    code = main(["threed", str(identity), "a DSLR photo of <id>", "--preset-3d", "smoke", "--iterations", "3",
                 "-o", str(out), "--seed", "1", "--preset", "tiny"])
    assert code == 0, capsys.readouterr().err
    ply = PlyData.read(str(out / "gaussians.ply"))
    vertex = ply["vertex"]
    assert [p.name for p in vertex.properties] == PLY_FIELDS and vertex.count > 0
    reader = imageio.get_reader(out / "turntable.mp4")
    assert reader.count_frames() == get_preset("smoke").turntable_frames
    assert (out / "point_cloud.ply").stat().st_size > 0

    def bad(*argv):
        assert main(["threed", str(identity), "<id>", "--preset", "tiny", *argv]) == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    assert "unknown 3D preset" in bad("--preset-3d", "ultra")
    assert "iterations" in bad("--iterations", "0")
