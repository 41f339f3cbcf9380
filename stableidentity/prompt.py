"""How an identity enters the text encoder.

A prompt names the identity with one placeholder (``<id>``). We tokenise the
text around it and reserve one token position per identity vector; a forward
hook on the text encoder's token-embedding table then writes the identity
vectors into those positions. This is the public extension point the
transformers module offers (``CLIPTextModel.forward`` takes no ``inputs_embeds``
in transformers 5), it is differentiable (training uses it) and it leaves the
shared tokenizer and text encoder untouched.

The result is the same as stock diffusers textual inversion, which adds tokens
``<id>``, ``<id>_1`` to the tokenizer and rows to the embedding table.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from .errors import InvalidInputError

PLACEHOLDER = "<id>"
DEFAULT_PREFIX = f"a photo of {PLACEHOLDER}, "


def with_placeholder(prompt: str) -> tuple[str, bool]:
    """Return the prompt with the placeholder, prepending ``a photo of <id>, `` if it lacks one."""
    prompt = " ".join(prompt.split())
    if not prompt:
        raise InvalidInputError(f"the prompt is empty: describe the image, e.g. '{PLACEHOLDER} as an astronaut'")
    if PLACEHOLDER in prompt:
        return prompt, False
    return DEFAULT_PREFIX + prompt, True


def tokenize(tokenizer, prompts: list[str], num_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``(B, L)`` and a boolean mask ``(B, L)`` of the identity's token positions.

    Each placeholder becomes ``num_tokens`` positions; text around it is tokenised
    as usual. Prompts without a placeholder are plain prompts (empty mask).
    """
    length = tokenizer.model_max_length
    all_ids, all_masks = [], []
    for prompt in prompts:
        ids, mask = [tokenizer.bos_token_id], [False]
        pieces = prompt.split(PLACEHOLDER)
        for i, piece in enumerate(pieces):
            if piece.strip():
                piece_ids = tokenizer(piece.strip(), add_special_tokens=False).input_ids
                ids += piece_ids
                mask += [False] * len(piece_ids)
            if i < len(pieces) - 1:
                # The row is overwritten by the hook; the pad id is a harmless stand-in.
                ids += [tokenizer.pad_token_id] * num_tokens
                mask += [True] * num_tokens
        if len(ids) + 1 > length:
            if any(mask[length - 1 :]):
                raise InvalidInputError(
                    f"the prompt is too long: the {PLACEHOLDER} placeholder falls beyond the "
                    f"model's {length - 2}-token limit; shorten the text before it"
                )
            ids, mask = ids[: length - 1], mask[: length - 1]  # truncate as diffusers does
        ids.append(tokenizer.eos_token_id)
        mask.append(False)
        pad = length - len(ids)
        all_ids.append(ids + [tokenizer.pad_token_id] * pad)
        all_masks.append(mask + [False] * pad)
    return torch.tensor(all_ids), torch.tensor(all_masks)


@contextmanager
def identity_injected(text_encoder, mask: torch.Tensor, vectors: torch.Tensor) -> Iterator[None]:
    """Inside the block, token positions ``mask`` (B, L) get ``vectors`` (B, n, d).

    Rows of ``vectors`` fill the masked positions of each prompt in order; gradients
    flow back into ``vectors``.
    """
    embedding = text_encoder.get_input_embeddings()

    def write_identity(module, inputs, output):
        # masked_scatter + where instead of boolean indexing, whose nonzero() makes the host wait for the GPU.
        where = mask.to(output.device)[..., None].expand_as(output)
        placed = torch.zeros_like(output).masked_scatter(where, vectors.reshape(-1, vectors.shape[-1]).to(output.dtype))
        return torch.where(where, placed, output)

    handle = embedding.register_forward_hook(write_identity)
    try:
        yield
    finally:
        handle.remove()


def encode_prompts(
    tokenizer, text_encoder, prompts: list[str], identity: torch.Tensor | None = None
) -> torch.Tensor:
    """Text-encoder hidden states ``(B, L, width)`` for prompts, with ``identity`` (n, d) at ``<id>``.

    This is what SD2.x pipelines use as ``prompt_embeds`` (last hidden state).
    """
    num_tokens = identity.shape[0] if identity is not None else 0
    if identity is None and any(PLACEHOLDER in p for p in prompts):
        raise InvalidInputError(f"the prompt uses {PLACEHOLDER} but no identity was given")
    ids, mask = tokenize(tokenizer, prompts, num_tokens)
    ids, mask = ids.to(text_encoder.device), mask.to(text_encoder.device)
    with torch.no_grad():
        if identity is None:
            return text_encoder(ids)[0]
        # Every placeholder occurrence, in every prompt, gets the same identity vectors.
        occurrences = int(mask.sum()) // num_tokens
        vectors = identity.to(text_encoder.device).repeat(occurrences, 1)
        with identity_injected(text_encoder, mask, vectors):
            return text_encoder(ids)[0]
