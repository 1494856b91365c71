"""Content digests: what makes an output "up to date" (shards, store, deposition zones) and file checksums."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def digest_json(parts: Any, length: int = 32) -> str:
    """Short sha256 of a JSON-serialisable description of inputs and settings (keys sorted)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Full sha256 of a file, read in chunks (weights files are ~500 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
