"""The identity: face features -> MLP -> two word embeddings in the celebrity-name space.

DESIGN §1.2. A face-recognition ViT gives an identity prior (its CLS token); a
small MLP maps it to ``2 × d`` numbers that are normalised (AdaIN's first half)
and then landed in the distribution of celebrity-name token embeddings
(AdaIN's second half: ``v = mean + r ⊙ std``). Landing there keeps the vectors
where the text encoder is used to seeing names, which keeps them editable.

Also here: the identity file (a textual-inversion safetensors file).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .errors import IdentityFileError

NUM_TOKENS = 2
ASSETS = Path(__file__).resolve().parent.parent / "assets"
CELEB_NAMES_FILE = ASSETS / "celeb_names.txt"
FORMAT = "stableidentity"
FORMAT_VERSION = "1"
TENSOR_KEY = "emb_params"  # a single tensor: diffusers' and Kohya's textual-inversion layout


# --- mapping network -----------------------------------------------------------------------


class EqualLinear(nn.Module):
    """Linear layer with an equalised learning rate: parameters are scaled by ``lr_mul`` in forward.

    Storing larger parameters and scaling them down makes Adam's effective step
    ``lr_mul`` times smaller for this layer without changing its initial output scale.
    """

    def __init__(self, in_dim: int, out_dim: int, lr_mul: float = 0.1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) * 0.02)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.lr_mul, self.bias * self.lr_mul)


class IdentityMLP(nn.Module):
    """Face features ``(B, F)`` -> normalised identity vectors ``(B, n, d)``."""

    def __init__(self, feature_dim: int, token_width: int, num_tokens: int = NUM_TOKENS):
        super().__init__()
        width = num_tokens * token_width
        self.num_tokens, self.token_width = num_tokens, token_width
        self.layer1 = nn.Sequential(EqualLinear(feature_dim, width), nn.LeakyReLU(0.2))
        self.layer2 = nn.Sequential(nn.LayerNorm(width), EqualLinear(width, width))
        # The "normalise" half of AdaIN: each token vector to zero mean, unit variance.
        self.norm = nn.LayerNorm(token_width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(features))
        return self.norm(x.view(-1, self.num_tokens, self.token_width))


# --- celebrity-name space ---------------------------------------------------------------------


def read_celeb_names(path: Path = CELEB_NAMES_FILE) -> list[str]:
    """Names from the curated list (one per line, ``#`` starts a comment)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class CelebSpace:
    """Per-position mean and std ``(n, d)`` of celebrity names' first token embeddings."""

    mean: torch.Tensor
    std: torch.Tensor
    names: list[str] = field(repr=False)

    @classmethod
    def from_text_encoder(
        cls, tokenizer, text_encoder, names: Sequence[str] | None = None, num_tokens: int = NUM_TOKENS
    ) -> "CelebSpace":
        """Statistics of the raw token-embedding rows (the input table, not encoder outputs)."""
        names = list(names) if names is not None else read_celeb_names()
        ids = [tokenizer(name, add_special_tokens=False).input_ids for name in names]
        short = [n for n, i in zip(names, ids) if len(i) < num_tokens]
        if short:
            raise ValueError(f"celebrity names must tokenise to >= {num_tokens} tokens: {short[:5]}")
        index = torch.tensor([i[:num_tokens] for i in ids])
        table = text_encoder.get_input_embeddings().weight.detach().float().cpu()
        rows = table[index]  # (N, n, d)
        return cls(rows.mean(dim=0), rows.std(dim=0), names)


class IdentityEncoder(nn.Module):
    """MLP + AdaIN landing: face features ``(B, F)`` -> identity embeddings ``(B, n, d)``."""

    def __init__(self, feature_dim: int, celeb: CelebSpace):
        super().__init__()
        num_tokens, token_width = celeb.mean.shape
        self.mlp = IdentityMLP(feature_dim, token_width, num_tokens)
        self.register_buffer("celeb_mean", celeb.mean.clone().float())
        self.register_buffer("celeb_std", celeb.std.clone().float())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return land(self.mlp(features.float()), self.celeb_mean, self.celeb_std)


def land(normalised: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """AdaIN's "denormalise" half: ``v = mean + r ⊙ std`` per position and dimension."""
    return mean + normalised * std


@torch.no_grad()
def face_features(face_encoder, images: Sequence[Image.Image]) -> torch.Tensor:
    """CLS token of the face ViT's last hidden state for each image, ``(B, F)`` float32."""
    model = face_encoder.model
    pixels = face_encoder.processor(images=list(images), return_tensors="pt").pixel_values
    out = model(pixel_values=pixels.to(model.device, model.dtype))
    return out.last_hidden_state[:, 0].float()


# --- the identity file -------------------------------------------------------------------------


@dataclass
class Identity:
    """Learned identity: ``embeddings`` (n, d) float32 plus string metadata."""

    embeddings: torch.Tensor
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def token_width(self) -> int:
        return self.embeddings.shape[-1]

    @property
    def num_tokens(self) -> int:
        return self.embeddings.shape[0]

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file that stock ``load_textual_inversion`` accepts."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "token_width": str(self.token_width),
            "num_tokens": str(self.num_tokens),
            **{k: str(v) for k, v in self.metadata.items()},
        }
        save_file({TENSOR_KEY: self.embeddings.detach().float().cpu().contiguous()}, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path, token_width: int | None = None) -> "Identity":
        """Read and validate an identity file (safetensors only: user files are never unpickled)."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise IdentityFileError(f"identity file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
                metadata = dict(f.metadata() or {})
                if len(keys) != 1:
                    raise IdentityFileError(
                        f"{path.name} is not an identity file: expected one embedding tensor, found {len(keys)}"
                    )
                tensor = f.get_tensor(keys[0])
        except IdentityFileError:
            raise
        except Exception as error:  # noqa: BLE001 - any parse failure means "not our format"
            raise IdentityFileError(
                f"{path.name} is not a readable identity file (expected a .safetensors embedding): {error}"
            ) from error
        if tensor.ndim != 2 or tensor.shape[0] < 1:
            raise IdentityFileError(f"{path.name}: expected an embedding of shape (tokens, width), got {tuple(tensor.shape)}")
        if not tensor.is_floating_point():
            raise IdentityFileError(f"{path.name}: the embedding must be floating point, got {tensor.dtype}")
        tensor = tensor.float()
        if not torch.isfinite(tensor).all():
            raise IdentityFileError(f"{path.name}: the embedding contains NaN or infinite values")
        identity = cls(tensor, metadata)
        if token_width is not None:
            identity.check_compatible(token_width, name=path.name)
        return identity

    def check_compatible(self, token_width: int, name: str = "this identity") -> None:
        """Refuse an identity whose token width differs from the model's text encoder."""
        if self.token_width != token_width:
            base = self.metadata.get("base_model", "another base model")
            raise IdentityFileError(
                f"{name} was made for {base} (token width {self.token_width}) but the loaded model's "
                f"text encoder has width {token_width}; learn the identity again with this model's preset"
            )


def photo_metadata(sha256: str, **fields: object) -> dict[str, str]:
    """Metadata written with a learned identity: never the photo, only its hash."""
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    return {"created": now, "photo_sha256": sha256, **{k: str(v) for k, v in fields.items()}}

