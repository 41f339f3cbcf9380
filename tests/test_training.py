"""The one-shot learner: augmentation, the two-phase loss and the training loop."""

from __future__ import annotations

import hashlib

import pytest
import torch

from stableidentity.errors import CancelledError, InvalidInputError
from stableidentity.training import augment, epsilon_from_prediction, two_phase_loss


def _loss(eps_pred, eps, x_t, x0, t, alpha_bar, face, hair):
    return two_phase_loss(
        eps_pred, eps, x_t, x0, torch.tensor([t]), torch.tensor([alpha_bar]), face, hair, scaling_factor=0.5
    )


def _case():
    g = torch.Generator().manual_seed(0)
    shape = (1, 1, 2, 2)
    eps_pred, eps, x_t, x0 = (torch.randn(shape, generator=g) for _ in range(4))
    face = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    hair = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])
    return eps_pred, eps, x_t, x0, face, hair


def test_noisy_phase_is_masked_noise_error():
    eps_pred, eps, x_t, x0, face, hair = _case()
    got = _loss(eps_pred, eps, x_t, x0, 601, 0.3, face, hair)
    e, p = eps.flatten().tolist(), eps_pred.flatten().tolist()
    # 4 elements per MSE; only the masked element differs from 0.
    expected = (p[0] - e[0]) ** 2 / 4 + 0.1 * (p[1] - e[1]) ** 2 / 4
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_detail_phase_is_masked_clean_latent_error():
    eps_pred, eps, x_t, x0, face, hair = _case()
    a = 0.64
    got = _loss(eps_pred, eps, x_t, x0, 600, a, face, hair)
    xt, p, x = x_t.flatten().tolist(), eps_pred.flatten().tolist(), x0.flatten().tolist()
    x0_hat = [(xt[i] - (1 - a) ** 0.5 * p[i]) / a**0.5 for i in range(4)]
    sq = [((x0_hat[i] - x[i]) / 0.5) ** 2 for i in range(4)]
    expected = sq[0] / 4 + 0.1 * sq[1] / 4
    assert got.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("t", [100, 900])
def test_pixels_outside_the_masks_change_nothing(t):
    eps_pred, eps, x_t, x0, face, hair = _case()
    before = _loss(eps_pred, eps, x_t, x0, t, 0.5, face, hair)
    outside = (face + hair) == 0
    changed = [v.clone() for v in (eps_pred, eps, x_t, x0)]
    for v in changed:
        v[outside] += 10.0
    after = _loss(*changed, t, 0.5, face, hair)
    assert after.item() == pytest.approx(before.item(), rel=1e-6)
    inside = eps_pred.clone()
    inside[face.bool()] += 1.0
    assert _loss(inside, eps, x_t, x0, t, 0.5, face, hair).item() != pytest.approx(before.item())


def test_v_prediction_converts_to_epsilon():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    a = torch.tensor([0.3, 0.9]).view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    torch.testing.assert_close(epsilon_from_prediction(v, x_t, a, "v_prediction"), eps, atol=1e-5, rtol=1e-5)
    assert epsilon_from_prediction(eps, x_t, a, "epsilon") is eps


def test_augmentation_moves_masks_with_the_image():
    """A red square with its own mask: after any augmentation the mask still covers red pixels."""
    size, latent = 256, 32
    image = torch.full((3, size, size), 0.5)
    mask = torch.zeros(1, size, size)
    image[:, 40:140, 100:220] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    mask[:, 40:140, 100:220] = 1
    g = torch.Generator().manual_seed(0)
    seen_flip, seen_black = set(), 0
    for _ in range(12):
        view, face, hair, flipped = augment(image, mask, torch.zeros_like(mask), g, latent)
        seen_flip.add(flipped)
        assert view.shape == (3, size, size) and face.shape == (1, latent, latent)
        assert set(face.unique().tolist()) <= {0.0, 1.0} and hair.sum() == 0
        small = torch.nn.functional.interpolate(view[None], size=(latent, latent), mode="area")[0]
        redness = small[0] - small[1]  # high on the square (R=1, G=0), 0 on grey, 0 on black
        if face.sum() > 4:
            assert redness[face[0].bool()].mean() > 1.0
            assert redness[~face[0].bool()].mean() < 0.3
        seen_black += int((view == -1).all(0).any())
    assert seen_flip == {True, False}
    assert seen_black > 0  # rescaled views sit on a black canvas


def _fingerprint(*modules) -> str:
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def test_only_the_mlp_learns(manager, prepared_face):
    base, vit = manager.base(), manager.face_encoder()
    learner = manager.learner()
    frozen = (base.unet, base.vae, base.text_encoder, vit.model)
    before = _fingerprint(*frozen)

    inputs = learner.prepare(prepared_face)
    encoder = learner.new_encoder(inputs, seed=0)
    loss = learner.loss(encoder, inputs, learner.sample_batch(inputs, torch.Generator().manual_seed(0)))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.mlp.parameters())
    assert all(p.grad is None for m in frozen for p in m.parameters())

    learner(prepared_face, steps=3, seed=0)
    assert _fingerprint(*frozen) == before


def test_optimising_a_fixed_batch_lowers_its_loss(manager, prepared_face):
    learner = manager.learner()
    inputs = learner.prepare(prepared_face)
    encoder = learner.new_encoder(inputs, seed=0)
    generator = torch.Generator().manual_seed(5)
    batch = learner.sample_batch(inputs, generator)
    while batch.face_mask.sum() < 50:  # a view that shows the face
        batch = learner.sample_batch(inputs, generator)
    first = learner.loss(encoder, inputs, batch).item()
    assert learner.loss(encoder, inputs, batch).item() == first  # deterministic: any change is real
    optimizer = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = learner.loss(encoder, inputs, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # The random tiny text encoder moves the UNet only a little, so the drop is small but steady.
    assert losses[-1] < losses[0] * (1 - 1e-4)
    assert sum(b > a for a, b in zip(losses, losses[1:])) <= 2


def test_same_seed_same_identity_other_seed_other_identity(manager, prepared_face):
    learner = manager.learner()
    a = learner(prepared_face, steps=3, seed=7)
    b = learner(prepared_face, steps=3, seed=7)
    c = learner(prepared_face, steps=3, seed=8)
    assert torch.equal(a.embeddings, b.embeddings)
    assert not torch.allclose(a.embeddings, c.embeddings)
    assert a.embeddings.shape == (2, manager.base().token_width)
    assert a.metadata["seed"] == "7" and a.metadata["steps"] == "3"
    assert a.metadata["photo_sha256"] == prepared_face.photo_sha256


def test_callback_every_step_and_cancel_within_one_step(manager, prepared_face):
    learner = manager.learner()
    calls = []
    learner(prepared_face, steps=4, seed=0, callback=lambda s, n, l: calls.append((s, n, l)))
    assert [c[:2] for c in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(isinstance(c[2], float) for c in calls)

    calls.clear()
    with pytest.raises(CancelledError):
        learner(prepared_face, steps=50, seed=0, callback=lambda s, n, l: calls.append(s), should_stop=lambda: len(calls) >= 2)
    assert calls == [1, 2]


@pytest.mark.parametrize("steps", [0, -3, 10**6])
def test_steps_out_of_range_are_refused(manager, prepared_face, steps):
    with pytest.raises(InvalidInputError, match="steps"):
        manager.learner()(prepared_face, steps=steps)
