"""The identity library: per-owner storage that survives restarts."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from stableidentity.errors import InvalidInputError
from stableidentity.identity import Identity
from stableidentity.library import IdentityLibrary


def test_entries_persist_and_stay_with_their_owner(tmp_path):
    lib = IdentityLibrary(tmp_path)
    emb = torch.randn(2, 32)
    entry = lib.add("alice", Identity(emb.clone(), {"created": "2026-01-01T00:00:00"}), "Alice A.", Image.new("RGB", (512, 512), "red"))
    assert entry.name == "Alice A." and entry.path.name == "Alice_A.safetensors"
    assert entry.thumbnail is not None and Image.open(entry.thumbnail).size == (128, 128)

    reopened = IdentityLibrary(tmp_path)  # a restart
    assert [e.id for e in reopened.list("alice")] == [entry.id]
    torch.testing.assert_close(reopened.load("alice", entry.id, token_width=32).embeddings, emb)

    assert reopened.list("bob") == []
    with pytest.raises(InvalidInputError, match="not in your library"):
        reopened.get("bob", entry.id)
    with pytest.raises(InvalidInputError):
        reopened.get("bob", "../alice/" + entry.id)  # no path tricks

    reopened.forget_owner("alice")
    assert reopened.list("alice") == []


def test_newest_first_and_unreadable_entries_skipped(tmp_path):
    lib = IdentityLibrary(tmp_path)
    old = lib.add("me", Identity(torch.zeros(2, 8), {"created": "2026-01-01T00:00:00"}), "old")
    new = lib.add("me", Identity(torch.zeros(2, 8), {"created": "2026-02-01T00:00:00"}), "new")
    (tmp_path / "me" / "broken").mkdir()
    assert [e.id for e in lib.list("me")] == [new.id, old.id]
