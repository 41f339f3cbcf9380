"""Text-to-image with an identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stableidentity.errors import IdentityFileError, InvalidInputError
from stableidentity.identity import Identity


@pytest.fixture(scope="module")
def identity(manager):
    torch.manual_seed(0)
    return Identity(torch.randn(2, manager.base().token_width) * 0.02)


def test_generates_reproducible_images_with_their_seeds(manager, identity):
    t2i = manager.text_to_image()
    result = t2i(identity, "<id> on the moon", num_images=2, steps=2, width=128, height=192, seed=11)
    assert [im.size for im in result.images] == [(128, 192)] * 2
    assert result.seeds == [11, 12] and result.notes == []
    again = t2i(identity, "<id> on the moon", num_images=1, steps=2, width=128, height=192, seed=12)
    np.testing.assert_allclose(np.asarray(again.images[0], float), np.asarray(result.images[1], float), atol=2)


def test_shared_components_no_copies(manager):
    base, pipe = manager.base(), manager.text_to_image().pipe
    assert pipe.unet is base.unet and pipe.vae is base.vae and pipe.text_encoder is base.text_encoder


def test_prompt_without_placeholder_is_prefixed_and_the_user_told(manager, identity):
    result = manager.text_to_image()(identity, "on a beach", steps=1, width=128, height=128, seed=0)
    assert result.prompt == "a photo of <id>, on a beach"
    assert "no <id>" in result.notes[0]


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(width=100), "width"),
        (dict(height=2048), "height"),
        (dict(num_images=5), "number of images"),
        (dict(steps=0), "steps"),
        (dict(guidance=-1.0), "guidance"),
        (dict(seed=2**40), "seed"),
    ],
)
def test_bad_settings_are_refused(manager, identity, kwargs, word):
    with pytest.raises(InvalidInputError, match=word):
        manager.text_to_image()(identity, "<id>", **kwargs)


def test_identity_of_another_width_is_refused(manager):
    with pytest.raises(IdentityFileError, match="width"):
        manager.text_to_image()(Identity(torch.zeros(2, 1024)), "<id>", steps=1)
