"""3D foundation: renderer (gradients, occlusion, tiling invariance, reconstruction), cameras,
Gaussians (learning rates, densification, pruning) — all on CPU."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stableidentity.threed import renderer as R
from stableidentity.threed.cameras import (
    Camera,
    OrbitConfig,
    azimuth_half_range,
    intrinsics_from_fov,
    look_at,
    orbit_camera,
    sample_orbit_cameras,
    turntable_cameras,
)
from stableidentity.threed.gaussians import (
    DensifyConfig,
    GaussianModel,
    LearningRates,
    head_prior_points,
    inverse_sigmoid,
    knn_mean_distance,
    rgb_to_sh,
)
from stableidentity.threed.renderer import measure_throughput, rasterize_gaussians, render


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small tensor ops: on a shared 2-core box a second OpenMP thread that gets descheduled
    makes every op wait for it (tens of times slower), so these tests use one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_scene(n: int, seed: int, radius: float = 0.9, scale=(0.04, 0.14), opacity=(0.5, 0.95)) -> GaussianModel:
    """``n`` Gaussians uniform in a ball: random colours, anisotropic scales, rotations, opacities."""
    g = torch.Generator().manual_seed(seed)
    uniform = lambda *shape: torch.rand(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    direction = F.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    return GaussianModel(
        (direction * uniform(n, 1) ** (1 / 3) * radius).float(),
        f_dc=rgb_to_sh(uniform(n, 3)).float(),
        log_scales=torch.log(scale[0] + (scale[1] - scale[0]) * uniform(n, 3)).float(),
        quats=torch.randn(n, 4, generator=g, dtype=torch.float64).float(),
        opacity_logits=inverse_sigmoid(opacity[0] + (opacity[1] - opacity[0]) * uniform(n)).float(),
    )


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10.0 * math.log10(F.mse_loss(a, b).item())


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of two (C, H, W) images, 11×11 Gaussian window (σ 1.5)."""
    c = x.shape[0]
    g = torch.exp(-((torch.arange(11, dtype=x.dtype) - 5.0) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).expand(c, 1, 11, 11)
    blur = lambda t: F.conv2d(t[None], w, padding=5, groups=c)[0]  # noqa: E731
    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))).mean()


# ---------------------------------------------------------------------------- renderer


def test_gradients_match_finite_differences():
    """Hand-written compositing backward + autograd projection agree with central differences."""
    torch.manual_seed(0)
    dt = torch.float64
    n = 4
    params = {
        "means": torch.randn(n, 3, dtype=dt) * 0.3,
        "log_scales": math.log(0.25) + 0.3 * torch.randn(n, 3, dtype=dt),
        "quats": torch.randn(n, 4, dtype=dt),
        "colors": torch.rand(n, 3, dtype=dt),
        "opacity_logits": torch.randn(n, dtype=dt),
    }
    for p in params.values():
        p.requires_grad_(True)
    cam = orbit_camera(30.0, 20.0, 4.0, 0.6, 20, 16)
    w_rgb, w_alpha, w_depth = (torch.randn(c, 16, 20, dtype=dt) for c in (3, 1, 1))

    def loss(tile_size: int, chunk: int) -> torch.Tensor:
        out = rasterize_gaussians(
            params["means"], params["quats"], torch.exp(params["log_scales"]), torch.sigmoid(params["opacity_logits"]),
            params["colors"], cam, (0.2, 0.5, 0.9), tile_size=tile_size, chunk=chunk,
        )  # fmt: skip
        return (out.rgb * w_rgb).sum() + (out.alpha * w_alpha).sum() + (out.depth * w_depth).sum()

    for tile_size, chunk in [(16, 1 << 20), (4, 7)]:  # one batch; one splat per piece
        for p in params.values():
            p.grad = None
        loss(tile_size, chunk).backward()
        for name, p in params.items():
            fd = torch.zeros_like(p)
            with torch.no_grad():
                for i in range(p.numel()):
                    old = p.view(-1)[i].item()
                    p.view(-1)[i] = old + 1e-6
                    up = loss(tile_size, chunk).item()
                    p.view(-1)[i] = old - 1e-6
                    down = loss(tile_size, chunk).item()
                    p.view(-1)[i] = old
                    fd.view(-1)[i] = (up - down) / 2e-6
            assert fd.abs().max() > 1e-3, name  # the check has something to compare
            torch.testing.assert_close(p.grad, fd, rtol=1e-4, atol=1e-5 * fd.abs().max().item(), msg=name)


def two_gaussian_scene(front_color, back_color, swap: bool = False) -> tuple[GaussianModel, Camera]:
    cam = orbit_camera(0.0, 0.0, 4.0, 0.5, 32, 32)  # at (0, -4, 0) looking along +y
    near, far = (1.0, -1.0) if swap else (-1.0, 1.0)
    means = torch.tensor([[0.0, near, 0.0], [0.0, far, 0.0]])
    model = GaussianModel(
        means,
        f_dc=rgb_to_sh(torch.tensor([front_color, back_color], dtype=torch.float32)),
        log_scales=torch.full((2, 3), math.log(0.15)),
        opacity_logits=inverse_sigmoid(torch.tensor([0.95, 0.95])),
    )
    return model, cam


def test_front_gaussian_occludes_back_and_alpha_is_zero_on_empty_pixels():
    red, blue = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
    model, cam = two_gaussian_scene(red, blue)
    with torch.no_grad():
        out = render(model, cam, background=(0.0, 1.0, 0.0))
        centre = out.rgb[:, 16, 16]
        assert centre[0] > 0.9 and centre[2] < 0.1, centre  # red is in front
        # swap the depths: now blue is the nearer one
        swapped = render(two_gaussian_scene(red, blue, swap=True)[0], cam, background=(0.0, 1.0, 0.0)).rgb[:, 16, 16]
        assert swapped[2] > 0.9 and swapped[0] < 0.1, swapped
        # front-to-back by hand at pixel centre (16.5, 16.5), half a pixel off both splat
        # centres: σ² = (f·0.15/z)² + 0.3 (EWA + low-pass), α = 0.95·exp(-½·0.5/σ²)
        alpha_f, alpha_b = (0.95 * math.exp(-0.25 / ((cam.fx * 0.15 / z) ** 2 + 0.3)) for z in (3.0, 5.0))
        expected = torch.tensor([alpha_f, (1 - alpha_f) * (1 - alpha_b), (1 - alpha_f) * alpha_b])
        torch.testing.assert_close(centre, expected, atol=1e-5, rtol=0)
        # expected depth at the centre is the front splat's (distance 3), with a touch of the back one
        assert out.depth[0, 16, 16] == pytest.approx(3.0, abs=0.15)
        # nothing at the corners: alpha exactly 0, colour = background, depth 0
        assert out.alpha[0, 0, 0] == 0 and out.alpha[0, -1, -1] == 0
        assert torch.equal(out.rgb[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]))
        assert out.depth[0, 0, 0] == 0
        assert out.radii.tolist() == [int(r) for r in out.radii] and (out.radii > 0).all()


def test_culling_behind_camera_and_off_screen():
    cam = orbit_camera(0.0, 0.0, 4.0, 0.5, 32, 32)
    means = torch.tensor([[0.0, 0.0, 0.0], [0.0, -6.0, 0.0], [30.0, 0.0, 0.0]])  # visible, behind, far off to the side
    model = GaussianModel(means, log_scales=torch.full((3, 3), math.log(0.1)))
    out = render(model, cam)
    assert out.visible.tolist() == [True, False, False]


def test_chunked_rendering_equals_unchunked():
    model = random_scene(300, seed=3, scale=(0.02, 0.2))
    for p in model.parameters():
        p.requires_grad_(True)
    cam = orbit_camera(40.0, 15.0, 3.5, 0.7, 52, 44)  # not a multiple of any tile size
    outs, grads = [], []
    for tile_size, chunk in [(64, 1 << 30), (16, 1 << 16), (8, 3000), (4, 40)]:
        model.zero_grad()
        out = render(model, cam, background=(0.3, 0.3, 0.3), tile_size=tile_size, chunk=chunk)
        (out.rgb.square().sum() + out.alpha.sum() + 0.1 * out.depth.sum()).backward()
        outs.append((out.rgb.detach(), out.alpha.detach(), out.depth.detach()))
        grads.append([p.grad.clone() for p in model.parameters()])
    assert outs[0][1].max() > 0.9  # the scene is really there
    for other, other_grads in zip(outs[1:], grads[1:]):
        for a, b in zip(outs[0], other):
            assert (a - b).abs().max() <= 1e-5
        for a, b in zip(grads[0], other_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * a.abs().max().item())


def test_work_per_batch_is_bounded_by_chunk(monkeypatch):
    """No (pixels × splats) block larger than ``chunk`` is ever formed (one tile row excepted)."""
    model = random_scene(2000, seed=4, scale=(0.02, 0.3))
    cam = orbit_camera(0.0, 10.0, 3.5, 0.7, 96, 96)
    seen = []
    original = R._splat_alpha

    def spy(xs, ys, means, *rest):
        seen.append(xs.shape[0] * xs.shape[1] * ys.shape[1] * means.shape[1])
        return original(xs, ys, means, *rest)

    monkeypatch.setattr(R, "_splat_alpha", spy)
    chunk, tile = 5000, 8
    with torch.no_grad():
        ref = render(model, cam, tile_size=tile, chunk=1 << 30).rgb
        seen.clear()
        out = render(model, cam, tile_size=tile, chunk=chunk).rgb
    assert len(seen) > 10 and max(seen) <= chunk
    assert (out - ref).abs().max() <= 1e-5


def fit_random_scene(scene_seed: int = 0, init_seed: int = 1, iterations: int = 700) -> dict:
    """Fit 8 views (64²) of a random 200-Gaussian scene from a different random 500-Gaussian
    init with L1 + D-SSIM, densification and pruning; score 4 held-out views."""
    size, radius, fov = 64, 4.0, 0.65
    target = random_scene(200, seed=scene_seed)
    train_views = zip(range(0, 360, 45), [30, -15, 10, 40, -5, 20, -20, 5])
    test_views = [(22.5, 0), (112.5, 25), (202.5, -10), (292.5, 15)]  # between the training azimuths
    train_cams = [orbit_camera(az, el, radius, fov, size, size) for az, el in train_views]
    test_cams = [orbit_camera(az, el, radius, fov, size, size) for az, el in test_views]
    black = torch.zeros(3)
    with torch.no_grad():
        train_images = [render(target, c, black).rgb for c in train_cams]
        test_images = [render(target, c, black).rgb for c in test_cams]

    g = torch.Generator().manual_seed(init_seed)
    start = F.normalize(torch.randn(500, 3, generator=g), dim=-1) * torch.rand(500, 1, generator=g) ** (1 / 3) * 1.1
    model = GaussianModel.from_points(start)  # grey, opacity 0.1, kNN scales
    # The reference rates are for thousands of iterations; a short fit needs larger ones.
    model.setup_optimizer(
        LearningRates(position=(1e-2, 1e-4), color=(2.5e-2, 5e-3), opacity=(5e-2, 5e-2), scale=(1e-2, 2e-3),
                      rotation=(5e-3, 1e-3), max_steps=iterations),
        extent=1.0,
    )  # fmt: skip
    cfg = DensifyConfig(start=100, stop=500, interval=100, grad_threshold=2e-3, percent_dense=0.02, min_opacity=0.01,
                        prune_large_after=200, max_world_scale=0.5, opacity_reset_interval=300)  # fmt: skip

    def mean_psnr(cams, images) -> float:
        with torch.no_grad():
            return sum(psnr(render(model, c, black).rgb, im) for c, im in zip(cams, images)) / len(cams)

    before = mean_psnr(test_cams, test_images)
    t0 = time.perf_counter()
    stats = {"cloned": 0, "split": 0, "pruned": 0}
    order: list[int] = []
    for it in range(1, iterations + 1):
        model.update_learning_rate(it)
        if not order:
            order = torch.randperm(len(train_cams), generator=g).tolist()
        i = order.pop()
        out = render(model, train_cams[i], black)
        loss = 0.8 * (out.rgb - train_images[i]).abs().mean() + 0.2 * (1 - ssim(out.rgb, train_images[i]))
        loss.backward()
        with torch.no_grad():
            if it < cfg.stop:
                model.add_densification_stats(out.means2d.grad, out.radii, size, size)
            done = model.densification_step(it, cfg, generator=g)
            for k in stats:
                stats[k] += done[k] if done else 0
            model.optimizer.step()
            model.optimizer.zero_grad(set_to_none=True)
    return {
        "held_out": mean_psnr(test_cams, test_images),
        "train": mean_psnr(train_cams, train_images),
        "start": before,
        "gaussians": model.num_gaussians,
        "seconds": time.perf_counter() - t0,
        "iterations": iterations,
        **stats,
    }


def test_reconstruction_with_densification_reaches_25db():
    """Proves renderer gradients, Adam groups and densification work together for real."""
    r = fit_random_scene()
    print(
        f"\nreconstruction: held-out PSNR {r['held_out']:.2f} dB (start {r['start']:.2f} dB), "
        f"train {r['train']:.2f} dB, "
        f"{r['gaussians']} Gaussians (cloned {r['cloned']}, split {r['split']}, pruned {r['pruned']}), "
        f"{r['iterations']} iterations in {r['seconds']:.1f} s"
    )
    assert r["split"] + r["cloned"] > 0 and r["pruned"] > 0
    assert r["held_out"] >= 25.0


def test_throughput_measurement():
    fwd = measure_throughput(20_000, 256, repeats=3)
    both = measure_throughput(20_000, 256, repeats=2, backward=True)

    def rate(r: dict) -> str:
        return f"{r['seconds_per_frame'] * 1e3:.0f} ms = {r['gaussians_pixels_per_second']:.3g} Gaussian·px/s"

    print(
        f"\nrenderer on CPU ({torch.get_num_threads()} thread): 20k Gaussians at 256²: "
        f"forward {rate(fwd)}; forward+backward {rate(both)}"
    )
    assert fwd["gaussians_pixels_per_second"] > 0 and both["seconds_per_frame"] > fwd["seconds_per_frame"] * 0.5


@pytest.mark.skipif(not R.gsplat_available(), reason="needs CUDA and the gsplat package")
def test_gsplat_backend_matches_torch_renderer():
    model = random_scene(300, seed=5).to("cuda")
    cam = orbit_camera(30.0, 10.0, 4.0, 0.6, 64, 64)
    with torch.no_grad():
        ref = render(model, cam, background=1.0)
        fast = render(model, cam, background=1.0, backend="gsplat")
    assert fast.rgb.shape == ref.rgb.shape
    assert (fast.rgb - ref.rgb).abs().mean() < 0.02
    assert (fast.alpha - ref.alpha).abs().mean() < 0.02


# ----------------------------------------------------------------------------- cameras


def project(cam: Camera, point) -> tuple[float, float, float]:
    p = cam.viewmat.double() @ torch.tensor([*point, 1.0], dtype=torch.float64)
    return cam.fx * p[0].item() / p[2].item() + cam.cx, cam.fy * p[1].item() / p[2].item() + cam.cy, p[2].item()


def test_look_at_centres_the_target_and_keeps_z_up():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        eye = torch.randn(3, generator=g, dtype=torch.float64) * 4
        target = torch.randn(3, generator=g, dtype=torch.float64)
        fx, fy, cx, cy = intrinsics_from_fov(0.5, 64, 48)
        cam = Camera(look_at(eye, target, dtype=torch.float64), fx, fy, cx, cy, 64, 48)
        u, v, z = project(cam, target.tolist())
        assert u == pytest.approx(32.0, abs=1e-6) and v == pytest.approx(24.0, abs=1e-6) and z > 0
        torch.testing.assert_close(cam.position, eye)
        rot = cam.viewmat[:3, :3]
        torch.testing.assert_close(rot @ rot.T, torch.eye(3, dtype=torch.float64))
    front = orbit_camera(0.0, 0.0, 5.0, 0.5, 64, 64)  # at -y, the face's side
    torch.testing.assert_close(front.position, torch.tensor([0.0, -5.0, 0.0]), atol=1e-5, rtol=0)
    u, v, _ = project(front, (0.5, 0.0, 0.0))
    assert u > 32 and v == pytest.approx(32, abs=1e-4)  # +x is to the right
    u, v, _ = project(front, (0.0, 0.0, 0.5))
    assert v < 32 and u == pytest.approx(32, abs=1e-4)  # +z (up) is up in the image
    assert intrinsics_from_fov(0.5, 64, 48)[1] == pytest.approx(24 / math.tan(0.25))
    assert orbit_camera(10, 10, 5, 0.42, 64, 32).fov_y == pytest.approx(0.42)


def test_orbit_sampling_ranges_and_widening():
    cfg = OrbitConfig()
    assert [azimuth_half_range(i) for i in (0, 499, 500, 999, 1000, 5000)] == [80, 80, 120, 120, 180, 180]
    for iteration, half, previous in [(0, 80, 0), (700, 120, 80), (2000, 180, 120)]:
        cams = sample_orbit_cameras(300, iteration, 32, 32, torch.Generator().manual_seed(iteration))
        az = np.array([c.azimuth for c in cams])
        assert np.abs(az).max() <= half and np.abs(az).max() > previous + 0.5 * (half - previous)
        for c in cams:
            assert cfg.radius_range[0] <= c.radius <= cfg.radius_range[1]
            assert 0.0 <= c.elevation <= 45.0  # polar 45°–90°
            assert cfg.fov_range[0] - 1e-9 <= c.fov_y <= cfg.fov_range[1] + 1e-9
            # the camera really sits where its orbit coordinates say, up to the small jitter
            pos = c.position.double()
            assert pos.norm().item() == pytest.approx(c.radius, abs=0.3)
            assert math.degrees(math.asin(pos[2].item() / pos.norm().item())) == pytest.approx(c.elevation, abs=4)
            azimuth = math.degrees(math.atan2(pos[0].item(), -pos[1].item()))
            assert azimuth == pytest.approx(c.azimuth, abs=4) or abs(c.azimuth) > 170
            u, v, _ = project(c, (0.0, 0.0, 0.0))  # the head stays near the image centre
            assert abs(u - 16) < 5 and abs(v - 16) < 5
    a = sample_orbit_cameras(4, 0, 32, 32, torch.Generator().manual_seed(7))
    b = sample_orbit_cameras(4, 0, 32, 32, torch.Generator().manual_seed(7))
    assert all(torch.equal(x.viewmat, y.viewmat) for x, y in zip(a, b))


def test_turntable_cameras_are_evenly_spaced():
    cams = turntable_cameras(12, 32, 32, elevation=15.0, radius=5.0)
    az = [c.azimuth for c in cams]
    assert az[0] == 0 and len(set(round(a, 6) for a in az)) == 12
    steps = np.diff(np.unwrap(np.radians(az)))
    np.testing.assert_allclose(np.degrees(steps), 30.0, atol=1e-6)
    assert all(c.elevation == 15.0 and c.position.norm().item() == pytest.approx(5.0, rel=1e-5) for c in cams)


# ---------------------------------------------------------------------------- Gaussians


def test_head_prior_and_initialisation():
    pts = head_prior_points(3000, seed=0)
    assert pts.shape == (3000, 3)
    assert np.abs(pts).max() < 1.3 and pts[:, 2].min() >= -1.15 - 1e-6
    assert pts[:, 2].max() > 0.5  # top of the head above the origin, shoulders below
    width_at = lambda z: np.ptp(pts[np.abs(pts[:, 2] - z) < 0.05, 0])  # noqa: E731
    assert width_at(-1.0) > 1.5 * width_at(0.0)  # shoulders wider than the head
    nose = pts[np.argmin(pts[:, 1])]  # the face looks toward -y
    assert abs(nose[0]) < 0.1 and -0.3 < nose[2] < 0.2
    np.testing.assert_array_equal(head_prior_points(3000, seed=0), pts)  # reproducible

    model = GaussianModel.from_head_prior(3000)
    torch.testing.assert_close(model.opacities, torch.full((3000,), 0.1))
    torch.testing.assert_close(model.colors, torch.full((3000, 3), 0.5))
    torch.testing.assert_close(model.rotations, torch.tensor([[1.0, 0, 0, 0]]).expand(3000, 4))
    d = torch.cdist(model.means.detach().double(), model.means.detach().double())
    d.fill_diagonal_(float("inf"))
    expected = d.topk(3, largest=False).values.mean(dim=1)
    torch.testing.assert_close(model.scales[:, 0].double(), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(knn_mean_distance(model.means).double(), expected, rtol=1e-5, atol=1e-7)


def test_learning_rate_schedule():
    model = GaussianModel.from_points(torch.randn(50, 3))
    opt = model.setup_optimizer(LearningRates(max_steps=5000), extent=3.5)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"means", "f_dc", "log_scales", "quats", "opacity_logits"}
    assert groups["means"]["lr"] == pytest.approx(1.6e-4 * 3.5)
    lrs = model.update_learning_rate(2500)
    assert lrs["means"] == pytest.approx(math.sqrt(1.6e-4 * 1.6e-6) * 3.5)  # log-linear: geometric midpoint
    assert groups["log_scales"]["lr"] == pytest.approx(math.sqrt(5e-3 * 1e-3))
    model.update_learning_rate(5000)
    assert groups["means"]["lr"] == pytest.approx(1.6e-6 * 3.5)
    assert groups["f_dc"]["lr"] == pytest.approx(3e-3) and groups["quats"]["lr"] == pytest.approx(2e-4)
    assert groups["opacity_logits"]["lr"] == pytest.approx(5e-2) and groups["log_scales"]["lr"] == pytest.approx(1e-3)
    model.update_learning_rate(9000)
    assert groups["means"]["lr"] == pytest.approx(1.6e-6 * 3.5)


def trained_model(n: int = 40, seed: int = 0) -> GaussianModel:
    """A model whose Adam state is populated (two steps)."""
    g = torch.Generator().manual_seed(seed)
    model = GaussianModel.from_points(torch.randn(n, 3, generator=g))
    model.setup_optimizer(extent=1.0)
    for _ in range(2):
        loss = sum((p * torch.randn(p.shape, generator=g)).sum() for p in model.parameters())
        loss.backward()
        model.optimizer.step()
        model.optimizer.zero_grad()
    return model


def assert_consistent(model: GaussianModel) -> None:
    n = model.num_gaussians
    for group in model.optimizer.param_groups:
        param = group["params"][0]
        assert param is getattr(model, group["name"]) and param.shape[0] == n
        state = model.optimizer.state[param]
        assert state["exp_avg"].shape == param.shape and state["exp_avg_sq"].shape == param.shape
    assert model.grad_accum.shape == model.grad_count.shape == model.max_radii2d.shape == (n,)
    assert {id(p) for p in model.parameters()} == {id(g["params"][0]) for g in model.optimizer.param_groups}


def test_clone_small_and_split_large_gaussians_keep_adam_state_consistent():
    model = trained_model(40)
    cfg = DensifyConfig(percent_dense=0.01)
    with torch.no_grad():
        model.log_scales[:10] = math.log(0.001)  # small: <= 0.01 × extent 1
        model.log_scales[10:] = math.log(0.2)
        model.opacity_logits[:] = 0.0
    old_means = model.means.detach().clone()
    old_scales = model.scales.detach().clone()
    old_moments = model.optimizer.state[model.means]["exp_avg"].clone()
    # high screen-space gradient on Gaussians 0-4 (small) and 10-12 (large)
    grad = torch.zeros(40, 2)
    grad[[0, 1, 2, 3, 4, 10, 11, 12]] = 1e-3
    model.add_densification_stats(grad, torch.ones(40, dtype=torch.int32), 64, 64)  # NDC norm = 1e-3·32·√2
    gen = torch.Generator().manual_seed(0)
    counts = model.densify_and_prune(cfg.grad_threshold, 0.005, extent=1.0, config=cfg, generator=gen)
    assert counts == {"cloned": 5, "split": 3, "pruned": 0, "total": 40 + 5 + 3}
    assert_consistent(model)
    # survivors first, in order: 0-9, 13-39; then clones of 0-4, then 2 children of each of 10-12
    keep = [i for i in range(40) if i not in (10, 11, 12)]
    torch.testing.assert_close(model.means[:37], old_means[keep])
    torch.testing.assert_close(model.means[37:42], old_means[:5])
    state = model.optimizer.state[model.means]
    torch.testing.assert_close(state["exp_avg"][:37], old_moments[keep])
    assert (state["exp_avg"][37:] == 0).all() and (state["exp_avg_sq"][37:] == 0).all()
    children = model.means[42:].detach()
    torch.testing.assert_close(model.scales[42:], old_scales[[10, 11, 12, 10, 11, 12]] / 1.6)
    parents = old_means[[10, 11, 12, 10, 11, 12]]
    assert ((children - parents).norm(dim=1) < 4 * 0.2 * math.sqrt(3)).all() and not torch.equal(children, parents)
    assert (model.grad_accum == 0).all() and (model.grad_count == 0).all()
    # and the optimiser still steps with the new shapes
    model.means.sum().backward()
    model.optimizer.step()


def test_prune_transparent_and_huge_then_reset_opacity():
    model = trained_model(30)
    cfg = DensifyConfig()
    with torch.no_grad():
        model.opacity_logits[:] = inverse_sigmoid(torch.tensor(0.5))
        model.opacity_logits[[1, 5, 7]] = inverse_sigmoid(torch.tensor(0.001))  # transparent
        model.log_scales[:] = math.log(0.05)
        model.log_scales[[2, 3], 0] = math.log(0.5)  # > 0.1 × extent 3.5? no: 0.5 > 0.35, yes
    model.extent = 3.5
    counts = model.densify_and_prune(cfg.grad_threshold, cfg.min_opacity, prune_large=False, config=cfg)
    assert counts["pruned"] == 3 and model.num_gaussians == 27
    assert_consistent(model)
    counts = model.densify_and_prune(cfg.grad_threshold, cfg.min_opacity, prune_large=True, config=cfg)
    assert counts["pruned"] == 2 and model.num_gaussians == 25
    assert_consistent(model)
    # screen-size pruning when asked for
    model.add_densification_stats(torch.zeros(25, 2), torch.tensor([30] + [5] * 24, dtype=torch.int32), 64, 64)
    counts = model.densify_and_prune(1.0, cfg.min_opacity, prune_large=True, config=DensifyConfig(max_screen_radius=20))
    assert counts["pruned"] == 1 and model.num_gaussians == 24
    model.reset_opacity(0.01)
    assert model.opacities.max() <= 0.01 + 1e-6
    state = model.optimizer.state[model.opacity_logits]
    assert (state["exp_avg"] == 0).all() and (state["exp_avg_sq"] == 0).all()
    assert_consistent(model)


def test_densification_schedule():
    model = trained_model(20)
    cfg = DensifyConfig(start=100, stop=1000, interval=100, opacity_reset_interval=300)
    calls = []
    model.densify_and_prune = lambda *a, **k: calls.append(("densify", a[3])) or {}  # type: ignore[method-assign]
    model.reset_opacity = lambda value: calls.append(("reset", value))  # type: ignore[method-assign]
    for it in range(0, 1201):
        model.densification_step(it, cfg)
    densified = [c for c in calls if c[0] == "densify"]
    assert len(densified) == 8  # 200, 300, …, 900: after start, before stop
    assert [c[1] for c in densified] == [False, False, True, True, True, True, True, True]  # huge ones after 300
    assert [c for c in calls if c[0] == "reset"] == [("reset", 0.01)] * 3  # 300, 600, 900
