"""MediaPipe Hands (legacy `mp.solutions.hands`, 0.10.21) as the peer we measure against.

Runs INSIDE `.venv-mediapipe` (mediapipe needs numpy<2), so it imports nothing from the
project: only mediapipe, numpy and OpenCV. The project side (`benchmarks/mediapipe_peer.py`)
creates that venv, writes the inputs and reads the JSON this script prints.

    detect:  every image independent (static_image_mode=True); per image the hands found,
             boxes around their landmarks in pixels, handedness and its score.
    latency: one sequence of frames ([F, H, W, 3] RGB uint8 .npy), either tracking
             (static_image_mode=False, MediaPipe's default for video) or static; per frame
             the wall time of `Hands.process` in ms and the number of hands.

    .venv-mediapipe/bin/python benchmarks/mediapipe_worker.py detect --images list.txt --out out.json
    .venv-mediapipe/bin/python benchmarks/mediapipe_worker.py latency --frames f.npy --max_hands 4 --out out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def _hands(static: bool, max_hands: int, complexity: int, min_detection: float, min_tracking: float):
    import mediapipe as mp

    return mp.solutions.hands.Hands(static_image_mode=static, max_num_hands=max_hands,
                                    model_complexity=complexity, min_detection_confidence=min_detection,
                                    min_tracking_confidence=min_tracking)


def _parse(result, width: int, height: int) -> list[dict]:
    """MediaPipe's normalised landmarks -> boxes in pixels, plus handedness."""
    hands = []
    for i, lms in enumerate(result.multi_hand_landmarks or []):
        xs = [p.x * width for p in lms.landmark]
        ys = [p.y * height for p in lms.landmark]
        cls = result.multi_handedness[i].classification[0] if result.multi_handedness else None
        hands.append({
            "xyxy": [round(min(xs), 1), round(min(ys), 1), round(max(xs), 1), round(max(ys), 1)],
            "keypoints": [[round(x, 1), round(y, 1)] for x, y in zip(xs, ys)],
            # MediaPipe labels assume a mirrored selfie image; on a plain photo "Left" is a right hand.
            "label": cls.label if cls else None,
            "label_score": round(float(cls.score), 4) if cls else None,
        })
    return hands


def detect(args: argparse.Namespace) -> dict:
    import cv2

    paths = [line.strip() for line in open(args.images) if line.strip()]
    out = []
    with _hands(True, args.max_hands, args.complexity, args.min_detection, args.min_tracking) as hands:
        for path in paths:
            bgr = cv2.imread(path, cv2.IMREAD_COLOR)
            if bgr is None:
                out.append({"image": path, "error": "cannot decode"})
                continue
            h, w = bgr.shape[:2]
            result = hands.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            out.append({"image": path, "width": w, "height": h, "hands": _parse(result, w, h)})
    return {"images": out}


def latency(args: argparse.Namespace) -> dict:
    import numpy as np

    frames = np.load(args.frames)  # [F, H, W, 3] RGB uint8
    times, counts = [], []
    with _hands(args.static, args.max_hands, args.complexity, args.min_detection, args.min_tracking) as hands:
        # Warm-up on the sequence's own first frames, then restart the graph's tracking state
        # by creating a fresh solution (warm-up caches stay warm in the process).
        for frame in frames[: args.warmup]:
            hands.process(frame)
    with _hands(args.static, args.max_hands, args.complexity, args.min_detection, args.min_tracking) as hands:
        for frame in frames:
            start = time.perf_counter()
            result = hands.process(frame)
            times.append((time.perf_counter() - start) * 1000.0)
            counts.append(len(result.multi_hand_landmarks or []))
    return {"ms": [round(t, 4) for t in times], "hands": counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["detect", "latency", "version"])
    parser.add_argument("--images", help="detect: text file, one image path per line")
    parser.add_argument("--frames", help="latency: .npy [F, H, W, 3] RGB uint8")
    parser.add_argument("--out", help="write the JSON here (default: stdout)")
    parser.add_argument("--max_hands", type=int, default=4)
    parser.add_argument("--static", type=int, default=0, help="latency: 1 = static_image_mode")
    parser.add_argument("--complexity", type=int, default=1, help="0 = lite, 1 = full landmark model")
    parser.add_argument("--min_detection", type=float, default=0.5)
    parser.add_argument("--min_tracking", type=float, default=0.5)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args(argv)
    if args.mode == "version":
        import mediapipe as mp
        import numpy as np

        payload = {"mediapipe": mp.__version__, "numpy": np.__version__}
    elif args.mode == "detect":
        payload = detect(args)
    else:
        payload = latency(args)
    text = json.dumps(payload)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
