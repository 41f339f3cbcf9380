"""The placeholder and the identity's way into the text encoder."""

from __future__ import annotations

import pytest
import torch

from stableidentity.errors import InvalidInputError
from stableidentity.identity import Identity
from stableidentity.prompt import encode_prompts, tokenize, with_placeholder


def test_prompt_without_placeholder_gets_the_default_prefix():
    assert with_placeholder("<id> on the moon") == ("<id> on the moon", False)
    assert with_placeholder("  on   the moon ") == ("a photo of <id>, on the moon", True)
    with pytest.raises(InvalidInputError, match="empty"):
        with_placeholder("   ")


def test_tokenize_reserves_identity_positions(manager):
    tok = manager.base().tokenizer
    ids, mask = tokenize(tok, ["a photo of <id> person"], num_tokens=2)
    plain = tok("a photo of person", padding="max_length", max_length=77).input_ids
    assert ids.shape == mask.shape == (1, 77)
    positions = mask[0].nonzero().flatten().tolist()
    assert positions == [4, 5]  # BOS a photo of | <id> <id>_1 | person
    kept = [i for j, i in enumerate(ids[0].tolist()) if j not in positions]
    assert kept[: len(plain) - 2] == plain[: len(plain) - 2]


def test_placeholder_beyond_the_token_limit_is_refused(manager):
    tok = manager.base().tokenizer
    with pytest.raises(InvalidInputError, match="too long"):
        tokenize(tok, ["word " * 80 + "<id>"], num_tokens=2)


def test_stock_textual_inversion_gives_our_prompt_embeddings(manager, tmp_path):
    """The identity file loads with stock diffusers and means the same thing there."""
    from diffusers import StableDiffusionPipeline

    base = manager.base()
    torch.manual_seed(0)
    identity = Identity(torch.randn(2, base.token_width) * 0.02)
    path = identity.save(tmp_path / "me.safetensors")

    pipe = StableDiffusionPipeline.from_pretrained(manager.preset.base, safety_checker=None)
    pipe.load_textual_inversion(str(path), token="<id>")
    prompt = "a close-up photo of <id> person wearing a hat"
    stock, _ = pipe.encode_prompt(prompt, "cpu", 1, False)

    ours = encode_prompts(base.tokenizer, base.text_encoder, [prompt], identity.embeddings)
    torch.testing.assert_close(ours, stock, atol=1e-5, rtol=1e-5)
    # And the identity matters: another one gives other embeddings.
    other = encode_prompts(base.tokenizer, base.text_encoder, [prompt], torch.randn(2, base.token_width))
    assert not torch.allclose(other, stock, atol=1e-3)


def test_text_before_the_placeholder_is_untouched(manager):
    base = manager.base()
    prompt = "a photo of <id> person"
    a = encode_prompts(base.tokenizer, base.text_encoder, [prompt], torch.randn(2, base.token_width))
    b = encode_prompts(base.tokenizer, base.text_encoder, [prompt], torch.randn(2, base.token_width))
    torch.testing.assert_close(a[:, :4], b[:, :4])  # causal text encoder: BOS a photo of
    assert not torch.allclose(a[:, 4:], b[:, 4:])
