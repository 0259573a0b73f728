"""Frames in, results out: image folders, videos and cameras; results.jsonl, tracks.txt, annotated media.

Sources yield `Frame`s with an RGB uint8 image, or with `image=None` and an `error` for a
frame that cannot be decoded, so the caller reports it and goes on. Writers:

- `ResultsWriter`: `results.jsonl`, one line per frame:
  `{"frame": i, "image": "<file name>", "hands": [HandResults.to_json() dicts]}`, pixels of
  the original image (`i` is the frame's 0-based position in the sequence);
- `MotWriter`: `tracks.txt` in MOTChallenge format, one line per tracked hand:
  `frame,id,x,y,w,h,conf,-1,-1,-1` (1-based frame, top-left x/y, width, height);
- `AnnotatedWriter`: annotated images (same relative names) or one annotated `.mp4`.
"""

from __future__ import annotations

import glob
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shared.data.images import check_image
from shared.data.labels import IMAGE_SUFFIXES, list_images
from shared.errors import UserError
from shared.results import HandResults


@dataclass
class Frame:
    index: int  # 0-based position in the sequence
    name: str  # image path relative to the folder, or the video's file name
    image: np.ndarray | None  # RGB uint8 [H, W, 3]; None when it could not be decoded
    error: str | None = None
    timestamp: float | None = None  # seconds from the start (videos), None for image folders


class ImageFolderSource:
    """Every image under a folder (recursively), one image file, or the images a glob pattern
    matches (`photos/*.jpg`, `data/**/*.png`), sorted by path: one sequence."""

    fps: float | None = None

    def __init__(self, folder: str | Path) -> None:
        spec = str(folder)
        if any(c in spec for c in "*?["):
            parts = Path(spec).parts
            fixed = next((i for i, part in enumerate(parts) if any(c in part for c in "*?[")), len(parts))
            self.root = Path(*parts[:fixed]) if fixed else Path(".")
            self.paths = sorted(Path(p) for p in glob.glob(spec, recursive=True)
                                if Path(p).suffix.lower() in IMAGE_SUFFIXES and Path(p).is_file())
            if not self.paths:
                raise UserError(f"--input_dir {spec}: the pattern matches no image (.jpg, .png, ...); check it")
        else:
            self.root = Path(spec)
            if not self.root.exists():
                raise UserError(f"--input_dir {self.root} does not exist; pass a folder of images, an image or a "
                                "glob pattern")
            if self.root.is_file():
                if self.root.suffix.lower() not in IMAGE_SUFFIXES:
                    raise UserError(f"--input_dir {self.root} is not an image (.jpg, .png, ...); for a video file "
                                    "use --video")
                self.paths, self.root = [self.root], self.root.parent
            else:
                self.paths = list_images(self.root)
                if not self.paths:
                    raise UserError(f"--input_dir {self.root} holds no images (.jpg, .png, ...); check the path")
        self.name = self.root.name

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Frame]:
        for i, path in enumerate(self.paths):
            name = path.relative_to(self.root).as_posix()
            # The same strict check as ingest: OpenCV decodes a truncated file without complaint.
            reason = check_image(path)
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR) if reason is None else None
            if bgr is None:
                yield Frame(i, name, None, f"{path}: {reason or 'cannot decode the image (corrupt or not an image)'}")
                continue
            yield Frame(i, name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


class VideoSource:
    """A video file, or a camera given by its index ("0")."""

    def __init__(self, spec: str) -> None:
        self.spec = str(spec)
        is_camera = self.spec.isdigit() and not Path(self.spec).exists()
        if not is_camera and not Path(self.spec).is_file():
            raise UserError(f"--video {self.spec}: no such file; pass a video file or a camera index (0, 1, ...)")
        self.capture = cv2.VideoCapture(int(self.spec) if is_camera else self.spec)
        if not self.capture.isOpened():
            what = f"camera {self.spec}" if is_camera else f"video {self.spec}"
            raise UserError(f"cannot open {what} with OpenCV; check the device / that the file is a video")
        fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps: float | None = fps if 0.0 < fps < 1000.0 else None
        count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._len = count if count > 0 and not is_camera else None
        self.name = f"camera{self.spec}" if is_camera else Path(self.spec).name

    def __len__(self) -> int:
        return self._len or 0

    def __iter__(self) -> Iterator[Frame]:
        i = 0
        fps = self.fps or 30.0
        try:
            while True:
                ok, bgr = self.capture.read()
                if not ok:
                    # OpenCV cannot seek past an undecodable packet reliably: a failed read
                    # before the known end is a corrupt tail, reported once.
                    if self._len is not None and i < self._len:
                        yield Frame(i, self.name, None, f"{self.spec}: frame {i} cannot be decoded; "
                                                        f"stopping at {i} of {self._len} frames")
                    break
                if bgr is None or bgr.ndim != 3:
                    yield Frame(i, self.name, None, f"{self.spec}: frame {i} is empty")
                else:
                    yield Frame(i, self.name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), timestamp=i / fps)
                i += 1
        finally:
            self.capture.release()


def open_source(input_dir: str = "", video: str = "") -> ImageFolderSource | VideoSource:
    if bool(input_dir) == bool(video):
        raise UserError("pass exactly one of --input_dir (a folder of images) or --video (a file or camera index)")
    return ImageFolderSource(input_dir) if input_dir else VideoSource(video)


# --------------------------------------------------------------------------- writers


def results_line(index: int, name: str, results: HandResults) -> str:
    """One `results.jsonl` line (no newline)."""
    return json.dumps({"frame": int(index), "image": name, "hands": results.to_json()})


class ResultsWriter:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.file = open(self.path, "w")

    def write(self, index: int, name: str, results: HandResults) -> None:
        self.file.write(results_line(index, name, results) + "\n")

    def close(self) -> None:
        self.file.close()


def mot_lines(index: int, results: HandResults) -> list[str]:
    """MOTChallenge lines for the tracked hands of frame `index` (0-based in, 1-based out)."""
    lines = []
    for i in np.flatnonzero(results.track_id >= 0):
        x1, y1, x2, y2 = (float(v) for v in results.xyxy[i])
        lines.append(f"{index + 1},{int(results.track_id[i])},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
                     f"{float(results.score[i]):.4f},-1,-1,-1")
    return lines


class MotWriter:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.file = open(self.path, "w")

    def write(self, index: int, results: HandResults) -> None:
        for line in mot_lines(index, results):
            self.file.write(line + "\n")

    def close(self) -> None:
        self.file.close()


class AnnotatedWriter:
    """Annotated frames as images under `folder` (same relative names) or as one `.mp4`.
    Takes BGR images (what the Annotator draws on)."""

    def __init__(self, target: str | Path, video: bool, fps: float = 30.0) -> None:
        self.target = Path(target)
        self.video = video
        self.fps = fps
        self._writer: Any = None
        if not video:
            self.target.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, bgr: np.ndarray) -> None:
        if self.video:
            if self._writer is None:
                h, w = bgr.shape[:2]
                self.target.parent.mkdir(parents=True, exist_ok=True)
                self._writer = cv2.VideoWriter(str(self.target), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
                self._size = (w, h)
            if (bgr.shape[1], bgr.shape[0]) != self._size:
                bgr = cv2.resize(bgr, self._size)
            self._writer.write(bgr)
            return
        path = self.target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), bgr):
            cv2.imwrite(str(path.with_suffix(".png")), bgr)  # an extension OpenCV cannot write

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


def report_outputs(result: Any) -> int:
    """The end of a frames CLI's report (infer, client): where the results went, and exit
    status 1 when not one frame could be processed."""
    print(f"results: {result.results_jsonl}")
    if result.annotated:
        print(f"annotated: {result.annotated}")
    if result.frames == 0:
        print("error: no frame could be processed (see the warnings above)", file=sys.stderr)
        return 1
    return 0


def write_json(path: str | Path, payload: dict[str, Any]) -> Path:
    path = Path(path)
    path.write_text(json.dumps(payload, indent=2))
    return path


def read_results(path: str | Path) -> list[tuple[int, str, HandResults]]:
    """Read a `results.jsonl` back: (frame, image, HandResults) per line."""
    out = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append((int(row["frame"]), str(row["image"]), HandResults.from_json(row["hands"])))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{path}:{lineno}: not a results line ({exc}); expected "
                            '{"frame": i, "image": name, "hands": [...]}') from None
    return out
