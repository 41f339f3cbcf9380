"""Identity encoder, celebrity-name space and the identity file."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stableidentity.errors import IdentityFileError
from stableidentity.identity import (
    CelebSpace,
    EqualLinear,
    Identity,
    IdentityEncoder,
    IdentityMLP,
    land,
    read_celeb_names,
)


def test_celeb_names_list_is_curated_and_tokenises_to_two_tokens(manager):
    names = read_celeb_names()
    assert 300 <= len(names) <= 340
    assert len(set(names)) == len(names)
    tokenizer = manager.base().tokenizer
    assert all(len(tokenizer(n, add_special_tokens=False).input_ids) >= 2 for n in names)


def test_celeb_statistics_come_from_the_raw_token_embedding_rows(manager):
    base = manager.base()
    space = manager.celeb_space()
    d = base.token_width
    assert space.mean.shape == (2, d) and space.std.shape == (2, d)
    # Recompute independently from the real tokenisation of the names (ids after BOS).
    table = base.text_encoder.get_input_embeddings().weight.detach()
    rows = []
    for name in read_celeb_names():
        ids = base.tokenizer(name).input_ids  # with BOS/EOS
        rows.append(table[ids[1:3]])
    rows = torch.stack(rows)
    torch.testing.assert_close(space.mean, rows.mean(0))
    torch.testing.assert_close(space.std, rows.std(0))
    # "Tom Hanks" really is two word tokens: the stats differ per position.
    assert not torch.allclose(space.mean[0], space.mean[1])


def test_adain_landing_maps_standardised_outputs_onto_celeb_statistics():
    torch.manual_seed(0)
    mean, std = torch.randn(2, 16), torch.rand(2, 16) + 0.1
    r = torch.randn(20000, 2, 16)
    r = (r - r.mean(0)) / r.std(0)  # exactly zero mean, unit std per position and dimension
    landed = land(r, mean, std)
    torch.testing.assert_close(landed.mean(0), mean, atol=1e-4, rtol=0)
    torch.testing.assert_close(landed.std(0), std, atol=1e-4, rtol=1e-4)


def test_mlp_normalises_each_token_vector():
    torch.manual_seed(0)
    mlp = IdentityMLP(feature_dim=24, token_width=16)
    out = mlp(torch.randn(5, 24) * 7 + 3)
    assert out.shape == (5, 2, 16)
    torch.testing.assert_close(out.mean(-1), torch.zeros(5, 2), atol=1e-5, rtol=0)
    # Unit variance up to LayerNorm's eps (the MLP's outputs start small: 0.02 x lr_mul weights).
    var = out.var(-1, unbiased=False)
    assert ((var > 0.5) & (var <= 1.0 + 1e-4)).all()


def test_equal_linear_scales_parameters_by_lr_mul():
    torch.manual_seed(0)
    layer = EqualLinear(256, 512, lr_mul=0.1)
    assert abs(layer.weight.std().item() - 0.02) < 0.002 and layer.bias.abs().max() == 0
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 256)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight * 0.1, layer.bias * 0.1))


def test_encoder_output_lives_in_the_celeb_space():
    torch.manual_seed(0)
    celeb = CelebSpace(torch.randn(2, 16), torch.rand(2, 16) + 0.5, names=[])
    encoder = IdentityEncoder(24, celeb)
    out = encoder(torch.randn(3, 24))
    normalised = (out - celeb.mean) / celeb.std
    torch.testing.assert_close(normalised.mean(-1), torch.zeros(3, 2), atol=1e-5, rtol=0)


def test_identity_file_round_trip_and_stock_layout(tmp_path):
    from safetensors import safe_open

    emb = torch.randn(2, 32)
    path = Identity(emb, {"base_model": "tiny", "seed": "3"}).save(tmp_path / "me.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert list(f.keys()) == ["emb_params"]  # one tensor: what load_textual_inversion accepts
        meta = f.metadata()
    assert meta["format"] == "stableidentity" and meta["token_width"] == "32" and meta["seed"] == "3"
    loaded = Identity.load(path, token_width=32)
    torch.testing.assert_close(loaded.embeddings, emb)
    assert loaded.metadata["base_model"] == "tiny"


def _save(path, tensors):
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.safetensors", "not found"),
        (lambda p: (p / "notes.safetensors").write_text("hello") and p / "notes.safetensors", "not a readable identity"),
        (lambda p: _save(p / "cube.safetensors", {"e": torch.zeros(2, 3, 4)}), "shape"),
        (lambda p: _save(p / "ints.safetensors", {"e": torch.zeros(2, 32, dtype=torch.int32)}), "floating point"),
        (lambda p: _save(p / "nan.safetensors", {"e": torch.full((2, 32), float("nan"))}), "NaN"),
        (lambda p: _save(p / "two.safetensors", {"a": torch.zeros(2, 32), "b": torch.zeros(2, 32)}), "one embedding"),
        (lambda p: _save(p / "wide.safetensors", {"e": torch.zeros(2, 1024)}), "width"),
    ],
)
def test_bad_identity_files_are_refused_with_a_clear_message(tmp_path, make, message):
    with pytest.raises(IdentityFileError, match=message):
        Identity.load(make(tmp_path), token_width=32)


def test_pickled_files_are_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('pwned')" % str(tmp_path / "pwned"),))

    path = tmp_path / "evil.safetensors"
    torch.save({"emb": Boom()}, path)
    with pytest.raises(IdentityFileError):
        Identity.load(path)
    assert not (tmp_path / "pwned").exists()
