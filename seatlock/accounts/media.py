"""Where uploaded files live: a small backend interface and the local-directory default.

Names are random and chosen here, never by the client, so a name can not climb out of the
directory and two uploads never overwrite each other. A name starts with its owner's user id
(``42.<random>.png``): only the owner's own picture changes may delete it (``owner_of``), and a
user may point their profile at no one else's file. Names from before owners were recorded
have no prefix and no owner: they are never deleted by a profile change.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Protocol

# What an image's first bytes must be, and the suffix it is stored under.
IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
)
MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
NAME_PATTERN = re.compile(r"^(?:([1-9][0-9]{0,18})\.)?[A-Za-z0-9_-]{16,64}\.(png|jpg|gif|webp)$")


def sniff_image(data: bytes) -> str | None:
    """The suffix of a PNG, JPEG, GIF or WebP image judged by its magic bytes, else None."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    for magic, suffix in IMAGE_SIGNATURES:
        if data.startswith(magic):
            return suffix
    return None


def media_type(name: str) -> str:
    return MEDIA_TYPES.get(Path(name).suffix, "application/octet-stream")


def valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def owner_of(name: str) -> int | None:
    """The user id a stored name belongs to; None for a name without one (or not ours)."""
    match = NAME_PATTERN.fullmatch(name)
    return int(match[1]) if match and match[1] else None


class Storage(Protocol):
    """A flat namespace of immutable blobs."""

    async def save(self, data: bytes, suffix: str, owner: int) -> str:
        """Store ``data`` under a new random name of ``owner`` ending in ``suffix``; return it."""
        ...

    async def load(self, name: str) -> bytes | None:
        """The blob's bytes, or None when there is no such (valid) name."""
        ...

    async def delete(self, name: str) -> None:
        """Remove the blob; a missing one is not an error."""
        ...


class LocalStorage:
    """Files in one directory. Writes go to a temporary file first and are renamed into place,
    so a reader never sees half a file."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def save(self, data: bytes, suffix: str, owner: int) -> str:
        name = f"{owner}.{secrets.token_urlsafe(24)}{suffix}"
        await asyncio.to_thread(self._write, name, data)
        return name

    async def load(self, name: str) -> bytes | None:
        if not valid_name(name):
            return None
        return await asyncio.to_thread(self._read, name)

    async def delete(self, name: str) -> None:
        if valid_name(name):
            await asyncio.to_thread(self._unlink, name)

    def _write(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.root / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _read(self, name: str) -> bytes | None:
        try:
            return (self.root / name).read_bytes()
        except FileNotFoundError:
            return None

    def _unlink(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)
