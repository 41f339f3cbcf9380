"""The identity library: learned identities with a name and a thumbnail, stored per owner.

On a local machine everything belongs to one owner (``local``) and lives in a data
folder that survives restarts. In a public app (share link, Spaces) each browser
session is its own owner: it lists, picks and downloads only its own identities,
and its folder is deleted when the session ends. Every lookup checks the owner,
so an id sent through the API cannot reach another visitor's files.
"""

from __future__ import annotations

import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .errors import IdentityFileError, InvalidInputError
from .identity import Identity

LOCAL_OWNER = "local"
THUMBNAIL_SIZE = 128
_SAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class LibraryEntry:
    id: str
    name: str
    path: Path  # the identity .safetensors file
    thumbnail: Path | None
    created: str

    @property
    def label(self) -> str:
        return f"{self.name} ({self.id[:6]})"


class IdentityLibrary:
    """Identities on disk: ``root/<owner>/<id>/<name>.safetensors`` and ``thumbnail.png``."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)

    def _owner_dir(self, owner: str) -> Path:
        safe = _SAFE.sub("", owner or "")
        if not safe:
            raise InvalidInputError("no session: reload the page")
        return self.root / safe

    def add(self, owner: str, identity: Identity, name: str, thumbnail: Image.Image | None = None) -> LibraryEntry:
        """Store ``identity`` under ``name`` (the file name is derived from it) and return the entry."""
        name = " ".join((name or "").split())[:60] or "person"
        entry_id = uuid.uuid4().hex  # unguessable, so ids are safe to show in a public app
        folder = self._owner_dir(owner) / entry_id
        folder.mkdir(parents=True)
        stem = _SAFE.sub("_", name).strip("_") or "identity"
        identity.metadata["name"] = name
        identity.save(folder / f"{stem}.safetensors")
        if thumbnail is not None:
            thumb = thumbnail.convert("RGB").copy()
            thumb.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            thumb.save(folder / "thumbnail.png")
        return self._entry(folder)

    def _entry(self, folder: Path) -> LibraryEntry:
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise IdentityFileError(f"library entry {folder.name} has no identity file")
        meta = Identity.load(files[0]).metadata
        thumb = folder / "thumbnail.png"
        return LibraryEntry(folder.name, meta.get("name", files[0].stem), files[0], thumb if thumb.exists() else None, meta.get("created", ""))

    def list(self, owner: str) -> list[LibraryEntry]:
        """The owner's identities, newest first (unreadable entries are skipped)."""
        folder = self._owner_dir(owner)
        entries = []
        for sub in folder.iterdir() if folder.is_dir() else []:
            try:
                entries.append(self._entry(sub))
            except IdentityFileError:
                continue
        return sorted(entries, key=lambda e: e.created, reverse=True)

    def get(self, owner: str, entry_id: str) -> LibraryEntry:
        """The owner's entry ``entry_id``; anyone else's id is simply not found."""
        safe = _SAFE.sub("", entry_id or "")
        folder = self._owner_dir(owner) / safe
        if not safe or not folder.is_dir():
            raise InvalidInputError("that identity is not in your library: learn one or upload an identity file")
        return self._entry(folder)

    def load(self, owner: str, entry_id: str, token_width: int | None = None) -> Identity:
        return Identity.load(self.get(owner, entry_id).path, token_width=token_width)

    def forget_owner(self, owner: str) -> None:
        """Delete everything an owner stored (a public session that ended)."""
        shutil.rmtree(self._owner_dir(owner), ignore_errors=True)
