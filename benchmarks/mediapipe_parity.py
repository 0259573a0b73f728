"""Our hand pipeline against live MediaPipe Hands 0.10.21 on the same real images.

    python -m benchmarks.mediapipe_parity [--max_hands 2] [--backend onnxruntime] [--debug]

Static mode (MediaPipe's static_image_mode=True, our `PipelineConfig(static=True)`): every
real image in ../shared/data/hagrid_sample and roboflow_gestures_v6, plus multi-hand images
made of two real HaGRID photos side by side. Per image the hand counts must agree; per hand
(matched to MediaPipe's by landmark distance) the mean landmark distance in pixels is
reported. Tracking mode (static_image_mode=False against our tracking mode): a video-like
sequence panned and zoomed over one HaGRID photo (`pan_zoom_sequence`), with both our
MediaPipe-like defaults and our own non-default options, so the differences we keep on
purpose are measured, not guessed.

MediaPipe runs in its own venv (`benchmarks.mediapipe_peer`); images are decoded here and
handed over as arrays, so both sides see the same pixels (JPEG decoders differ between
OpenCV builds).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
HAGRID = DATA / "hagrid_sample" / "images"
ROBOFLOW = DATA / "roboflow_gestures_v6" / "images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

# The tests' thresholds (issue 14): per hand, the mean over its 21 landmarks; over hands, the median.
MAX_HAND_MEAN_PX = 0.5
MAX_MEDIAN_PX = 0.1


# --------------------------------------------------------------------------- images


def _read_rgb(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def real_images() -> dict[str, list[tuple[str, np.ndarray]]]:
    """{set name: [(relative path, RGB uint8)]}: every decodable image of the two real sets."""
    sets: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, folder in (("hagrid_sample", HAGRID), ("roboflow_gestures_v6", ROBOFLOW)):
        paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
        items = [(str(p.relative_to(DATA)), im) for p in paths if (im := _read_rgb(p)) is not None]
        if items:
            sets[name] = items
    return sets


def side_by_side(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two photos next to each other, the shorter one padded with black at the bottom."""
    h = max(a.shape[0], b.shape[0])
    pad = [np.pad(im, ((0, h - im.shape[0]), (0, 0), (0, 0))) for im in (a, b)]
    return np.ascontiguousarray(np.concatenate(pad, axis=1))


def multi_hand_images(hagrid: list[tuple[str, np.ndarray]], count: int = 12) -> list[tuple[str, np.ndarray]]:
    """`count` two-photo composites of HaGRID images of different gestures (deterministic):
    two or more real hands per image, at other positions and scales than in the photos."""
    by_gesture: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, image in hagrid:
        by_gesture.setdefault(Path(name).parent.name, []).append((name, image))
    gestures = sorted(by_gesture)
    out = []
    for i in range(min(count, len(gestures) * 2)):
        g1, g2 = gestures[i % len(gestures)], gestures[(i + 1 + i // len(gestures)) % len(gestures)]
        (n1, a), (n2, b) = by_gesture[g1][i // len(gestures) % len(by_gesture[g1])], by_gesture[g2][0]
        out.append((f"{Path(n1).stem[:8]}+{Path(n2).stem[:8]}", side_by_side(a, b)))
    return out


def pan_zoom_sequence(image: np.ndarray, frames: int = 45, long_side: int = 480,
                      zoom: tuple[float, float] = (0.8, 0.95), pan: float = 0.5, seed: int = 0) -> np.ndarray:
    """[F, H, W, 3] frames of a virtual camera panning and zooming over one photo.

    Each frame is a window of the photo with the photo's aspect ratio, `zoom` (smallest and
    largest) of its size, moving smoothly by up to `pan` of the free margin, resized to
    `long_side` pixels on its longer side: the same hands, moving and changing scale as
    in a hand-held video."""
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    out_w, out_h = round(w * scale), round(h * scale)
    t = np.linspace(0.0, 1.0, frames)
    phase = rng.uniform(0, 2 * np.pi, 3)
    z = zoom[0] + (zoom[1] - zoom[0]) * 0.5 * (1 + np.sin(2 * np.pi * t + phase[0]))
    seq = []
    for k in range(frames):
        win_w, win_h = w * z[k], h * z[k]
        cx = w / 2 + (w - win_w) / 2 * pan * np.sin(2 * np.pi * t[k] + phase[1])
        cy = h / 2 + (h - win_h) / 2 * pan * np.sin(2 * np.pi * 0.7 * t[k] + phase[2])
        s = out_w / win_w
        m = np.array([[s, 0, out_w / 2 - s * cx], [0, s, out_h / 2 - s * cy]])
        seq.append(cv2.warpAffine(image, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return np.stack(seq)


# --------------------------------------------------------------------------- the two sides


def run_mediapipe(images: list[np.ndarray], static: bool = True, max_hands: int = 2, min_detection: float = 0.5,
                  min_tracking: float = 0.5, complexity: int = 1, debug: bool = False) -> list[dict[str, Any]]:
    """MediaPipe Hands (legacy solution) on `images`, in order (one graph: video mode follows
    hands from image to image). Per image: {"hands": [{"landmarks": [[x, y, z] px], ...}]}."""
    from benchmarks.mediapipe_peer import run_worker

    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "images.npz"
        np.savez(archive, **{f"i{k:05d}": im for k, im in enumerate(images)})
        out = run_worker(["hands", "--frames", str(archive), "--static", str(int(static)), "--max_hands",
                          str(max_hands), "--complexity", str(complexity), "--min_detection", str(min_detection),
                          "--min_tracking", str(min_tracking), "--debug", str(int(debug))])
    return out["images"]


def run_ours(images: list[np.ndarray], cfg: Any, pipe: Any = None) -> list[Any]:
    """Our pipeline on `images` in order (static: independent; tracking: one stream)."""
    from shared.inference.pipeline import HandPipeline

    pipe = pipe or HandPipeline(cfg)
    pipe.reset()
    return [pipe.process(im) for im in images]


# --------------------------------------------------------------------------- comparison


@dataclass
class Comparison:
    """Ours vs MediaPipe over a set of images."""

    images: int = 0
    hands_ours: int = 0
    hands_mediapipe: int = 0
    count_mismatches: list[str] = field(default_factory=list)  # image names
    hand_mean_px: list[float] = field(default_factory=list)  # per matched hand: mean over its 21 landmarks
    hand_max_px: list[float] = field(default_factory=list)  # per matched hand: its worst landmark
    worst: list[tuple[float, str]] = field(default_factory=list)

    def row(self, name: str) -> dict[str, Any]:
        d = np.asarray(self.hand_mean_px) if self.hand_mean_px else np.zeros(1)
        return {"set": name, "images": self.images, "hands (ours)": self.hands_ours,
                "hands (MediaPipe)": self.hands_mediapipe, "count mismatches": len(self.count_mismatches),
                "hands matched": len(self.hand_mean_px), "median px": float(np.median(d)),
                "mean px": float(d.mean()), "worst hand px": float(d.max()),
                "worst landmark px": float(max(self.hand_max_px, default=0.0))}

    def passes(self) -> bool:
        return (not self.count_mismatches and max(self.hand_mean_px, default=0.0) <= MAX_HAND_MEAN_PX
                and float(np.median(self.hand_mean_px or [0.0])) <= MAX_MEDIAN_PX)


def match_hands(ours: np.ndarray, theirs: np.ndarray) -> list[tuple[int, int, float]]:
    """Greedy matching of [N, 21, 2] to [M, 21, 2] landmark sets by mean landmark distance:
    (i, j, mean px) pairs, closest first."""
    if not len(ours) or not len(theirs):
        return []
    dist = np.linalg.norm(ours[:, None] - theirs[None], axis=-1).mean(-1)  # [N, M]
    pairs, used_i, used_j = [], set(), set()
    for flat in np.argsort(dist, axis=None):
        i, j = divmod(int(flat), dist.shape[1])
        if i not in used_i and j not in used_j:
            pairs.append((i, j, float(dist[i, j])))
            used_i.add(i)
            used_j.add(j)
    return pairs


def compare(names: list[str], ours: list[Any], theirs: list[dict[str, Any]]) -> Comparison:
    """Per image: hand counts; per matched hand: landmark distances in pixels."""
    c = Comparison(images=len(names))
    for name, hands, ref in zip(names, ours, theirs):
        mine = np.asarray(hands.keypoints, np.float64)[..., :2].reshape(-1, 21, 2)
        other = np.asarray([h["landmarks"] for h in ref["hands"]], np.float64).reshape(-1, 21, 3)[..., :2]
        c.hands_ours += len(mine)
        c.hands_mediapipe += len(other)
        if len(mine) != len(other):
            c.count_mismatches.append(name)
        for i, j, mean in match_hands(mine, other):
            c.hand_mean_px.append(mean)
            c.hand_max_px.append(float(np.linalg.norm(mine[i] - other[j], axis=-1).max()))
            c.worst.append((mean, name))
    c.worst = sorted(c.worst, reverse=True)[:5]
    return c


# --------------------------------------------------------------------------- the benchmark

# Options that differ from MediaPipe on purpose (static mode), one at a time.
STATIC_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("defaults (MediaPipe's rules)", {}),
    ("palm_letterbox='area'", {"palm_letterbox": "area"}),
    ("duplicate_iou=0.5", {"duplicate_iou": 0.5}),
    ("roi_association_iou=-1 (off)", {"roi_association_iou": -1.0}),
    ("crop_sampling='exact'", {"crop_sampling": "exact"}),
]
# Tracking mode: the defaults (MediaPipe's video-mode rules), then our options one at a time.
TRACKING_VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("defaults = MediaPipe's rules (detect_interval=0, smooth_keypoints=False)", {}),
    ("+ smooth_keypoints=True (One-Euro)", {"smooth_keypoints": True}),
    ("+ detect_interval=30", {"detect_interval": 30}),
    ("+ crop_sampling='exact'", {"crop_sampling": "exact"}),
]


def static_sets(multi: int = 12) -> dict[str, list[tuple[str, np.ndarray]]]:
    sets = real_images()
    if "hagrid_sample" in sets:
        sets["two photos side by side"] = multi_hand_images(sets["hagrid_sample"], multi)
    return sets


def run_static(sets: dict[str, list[tuple[str, np.ndarray]]], cfg: Any, max_hands: int,
               theirs: dict[str, list[dict[str, Any]]] | None = None) -> tuple[dict[str, Comparison], dict]:
    """Both pipelines on every set; MediaPipe's answers are reused when given."""
    from shared.inference.pipeline import HandPipeline

    pipe = HandPipeline(cfg)
    theirs = dict(theirs or {})
    out = {}
    for name, items in sets.items():
        images = [im for _, im in items]
        if name not in theirs:
            theirs[name] = run_mediapipe(images, static=True, max_hands=max_hands,
                                         min_detection=cfg.detector_score_threshold, min_tracking=cfg.min_presence)
        out[name] = compare([n for n, _ in items], run_ours(images, cfg, pipe), theirs[name])
    return out, theirs


def tracking_photo(hagrid: list[tuple[str, np.ndarray]], cfg: Any) -> tuple[str, np.ndarray]:
    """The first HaGRID photo (sorted) in which our static pipeline finds two hands."""
    from shared.inference.pipeline import HandPipeline

    pipe = HandPipeline(dataclasses.replace(cfg, static=True))
    for name, image in hagrid:
        if len(pipe.process(image)) == 2:
            return name, image
    return hagrid[0]


def run_tracking(frames: np.ndarray, cfg: Any, variants: list[tuple[str, dict[str, Any]]] = TRACKING_VARIANTS,
                 theirs: list[dict[str, Any]] | None = None) -> tuple[dict[str, Comparison], list[dict[str, Any]]]:
    """MediaPipe's video mode against our tracking mode, one stream, per variant of ours."""
    images = list(frames)
    if theirs is None:
        theirs = run_mediapipe(images, static=False, max_hands=cfg.max_hands,
                               min_detection=cfg.detector_score_threshold, min_tracking=cfg.min_presence)
    names = [f"frame {k}" for k in range(len(images))]
    out = {}
    for label, overrides in variants:
        ours = run_ours(images, dataclasses.replace(cfg, static=False, **overrides))
        out[label] = compare(names, ours, theirs)
    return out, theirs


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import print_table, write_results
    from shared.inference.pipeline import PipelineConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max_hands", type=int, default=2, help="max_num_hands for both (MediaPipe's default: 2)")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--frames", type=int, default=45, help="tracking sequence length")
    args = parser.parse_args(argv)

    cfg = PipelineConfig(static=True, max_hands=args.max_hands, backend=args.backend)
    sets = static_sets()
    theirs: dict[str, list[dict[str, Any]]] = {}
    static_rows, variant_rows, passed = [], [], True
    for label, overrides in STATIC_VARIANTS:
        results, theirs = run_static(sets, dataclasses.replace(cfg, **overrides), args.max_hands, theirs)
        if not overrides:
            static_rows = [c.row(name) for name, c in results.items()]
            passed = all(c.passes() for c in results.values())
            for name, c in results.items():
                if c.count_mismatches:
                    print(f"  {name}: hand count differs on {c.count_mismatches[:5]}")
        total = Comparison()
        for c in results.values():
            total.images += c.images
            total.hands_ours += c.hands_ours
            total.hands_mediapipe += c.hands_mediapipe
            total.count_mismatches += c.count_mismatches
            total.hand_mean_px += c.hand_mean_px
            total.hand_max_px += c.hand_max_px
        variant_rows.append(total.row(label))
    print_table(f"Static mode: ours (defaults) vs MediaPipe Hands 0.10.21, max_hands {args.max_hands}", static_rows)
    print_table("Static mode, all images: what each non-default option changes", variant_rows)

    name, photo = tracking_photo(sets["hagrid_sample"], cfg)
    frames = pan_zoom_sequence(photo, args.frames)
    tracking, _ = run_tracking(frames, cfg)
    tracking_rows = [c.row(label) for label, c in tracking.items()]
    print_table(f"Tracking mode: {args.frames} frames panned and zoomed over {name}, vs MediaPipe's video mode",
                tracking_rows)
    write_results("mediapipe_parity", {"max_hands": args.max_hands, "backend": args.backend, "static": static_rows,
                                       "static_options": variant_rows, "tracking_photo": name,
                                       "tracking": tracking_rows})
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
