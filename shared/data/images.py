"""One strict image check for every reader: ingest, augment, the training datasets, infer, client.

OpenCV decodes a truncated JPEG or PNG without complaint (grey rows where the data ends), so
a file cut short in a copy would be trained on, or run through the pipeline, silently. PIL
raises on it. `check_image` decodes the whole file with PIL and returns why it is bad, or
None; `read_image` does the same check and returns OpenCV's BGR pixels (the pixels every
reader used before, unchanged). `split_images` sorts a list of files into good ones and
(file, reason) for the rest, so a dataset skips a bad file up front, names it and counts it,
instead of failing in a DataLoader worker an epoch later.

Results are cached per (path, size, mtime): a file checked once in a process is not decoded
twice for the check.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from shared.errors import UserError

_CHECKED: dict[tuple[str, int, int], str | None] = {}


@dataclass(frozen=True)
class BadImage:
    """A file a reader skipped, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def _key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return str(path), st.st_size, st.st_mtime_ns


def check_image(path: str | Path) -> str | None:
    """None if the image decodes completely, else the reason (missing, empty, truncated, corrupt, too small)."""
    path = Path(path)
    key = _key(path)
    if key is None:
        return "image missing" if not path.exists() else "image unreadable (cannot stat the file)"
    if key in _CHECKED:
        return _CHECKED[key]
    reason: str | None = None
    if key[1] == 0:
        reason = "image file is empty (0 bytes)"
    else:
        try:
            with Image.open(path) as im:
                im.load()  # decodes every byte: a truncated file raises here
                if im.width < 2 or im.height < 2:
                    reason = f"image too small ({im.width}x{im.height})"
        except FileNotFoundError:
            reason = "image missing"
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt data
            reason = f"image unreadable ({type(exc).__name__}: {exc})"
    _CHECKED[key] = reason
    return reason


def read_image(path: str | Path) -> np.ndarray:
    """BGR uint8 pixels of a fully decodable image, or one UserError naming the file and the reason."""
    import cv2  # here, not at import: readers that only check (ingest's sources) need no OpenCV

    path = Path(path)
    reason = check_image(path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR) if reason is None else None
    if image is None:
        reason = reason or "image unreadable (OpenCV cannot decode it)"
        raise UserError(f"{path}: {reason}; remove or replace the file")
    return image


def try_read_image(path: str | Path) -> tuple[np.ndarray | None, str | None]:
    """(BGR pixels, None) or (None, reason): `read_image` for readers that skip bad files."""
    try:
        return read_image(path), None
    except UserError as exc:
        return None, str(exc)


def split_images(paths: Iterable[str | Path]) -> tuple[list[Path], list[BadImage]]:
    """(the files that decode completely, a BadImage for each of the others), order kept."""
    good: list[Path] = []
    bad: list[BadImage] = []
    for path in paths:
        reason = check_image(path)
        if reason is None:
            good.append(Path(path))
        else:
            bad.append(BadImage(str(path), reason))
    return good, bad


def report_skipped(bad: list[BadImage], what: str = "image", limit: int = 5) -> None:
    """Print one warning line per skipped file (the first `limit`) and a count."""
    import sys

    if not bad:
        return
    for item in bad[:limit]:
        print(f"warning: skipped {what} {item}", file=sys.stderr)
    if len(bad) > limit:
        print(f"warning: ... and {len(bad) - limit} more bad {what} file(s) skipped", file=sys.stderr)
