"""MediaPipe Hands (legacy `mp.solutions.hands`, 0.10.21) as the peer we measure against.

Runs INSIDE `.venv-mediapipe` (mediapipe needs numpy<2), so it imports nothing from the
project: only mediapipe, numpy and OpenCV. The project side (`benchmarks/mediapipe_peer.py`)
creates that venv, writes the inputs and reads the JSON this script prints.

    detect:  every image independent (static_image_mode=True); per image the hands found,
             boxes around their landmarks in pixels, handedness and its score.
    latency: one sequence of frames ([F, H, W, 3] RGB uint8 .npy), either tracking
             (static_image_mode=False, MediaPipe's default for video) or static; per frame
             the wall time of `Hands.process` in ms and the number of hands.
    hands:   full-precision landmarks for parity tests: image files (`--images`), the frames
             of a sequence (`--frames f.npy`) or RGB arrays of any sizes (`--frames f.npz`, in the
             archive's order: the caller decodes, so both sides see the same pixels), static
             (`--static 1`) or video mode in the given order; per image the hands in MediaPipe's
             output order, 21 [x, y, z] landmarks in pixels (z in MediaPipe's units x image
             width), handedness label and score; `--debug 1` adds the palm detections and
             the hand ROIs the graph used (pixels, radians).

    .venv-mediapipe/bin/python benchmarks/mediapipe_worker.py detect --images list.txt --out out.json
    .venv-mediapipe/bin/python benchmarks/mediapipe_worker.py latency --frames f.npy --max_hands 4 --out out.json
    .venv-mediapipe/bin/python benchmarks/mediapipe_worker.py hands --images list.txt --static 1 --out out.json
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


_HANDS_GRAPH = "mediapipe/modules/hand_landmark/hand_landmark_tracking_cpu.binarypb"
_DEBUG_STREAMS = ["palm_detections", "hand_rects_from_palm_detections", "hand_rects_from_landmarks"]


def _hands_debug(static: bool, max_hands: int, complexity: int, min_detection: float, min_tracking: float):
    """`mp.solutions.hands.Hands` with the same graph, side packets and options, observing
    the graph's palm detections and hand ROIs as well (SolutionBase exposes any output stream)."""
    from mediapipe.python.solution_base import SolutionBase

    return SolutionBase(
        binary_graph_path=_HANDS_GRAPH,
        side_inputs={"model_complexity": complexity, "num_hands": max_hands, "use_prev_landmarks": not static},
        calculator_params={"palmdetectioncpu__TensorsToDetectionsCalculator.min_score_thresh": min_detection,
                           "handlandmarkcpu__ThresholdingCalculator.threshold": min_tracking},
        outputs=["multi_hand_landmarks", "multi_handedness", *_DEBUG_STREAMS])


def _rect(r, width: int, height: int) -> list[float]:
    """NormalizedRect -> [cx, cy, w, h] pixels + rotation (radians, MediaPipe's sign)."""
    return [r.x_center * width, r.y_center * height, r.width * width, r.height * height, r.rotation]


def _hands_payload(result, width: int, height: int, debug: bool) -> dict:
    hands = []
    for i, lms in enumerate(result.multi_hand_landmarks or []):
        cls = result.multi_handedness[i].classification[0] if result.multi_handedness else None
        hands.append({
            "landmarks": [[p.x * width, p.y * height, p.z * width] for p in lms.landmark],
            "label": cls.label if cls else None,  # "Left" on an unmirrored photo = a right hand
            "label_score": float(cls.score) if cls else None,
        })
    out = {"width": width, "height": height, "hands": hands}
    if debug:
        palms = []
        for d in getattr(result, "palm_detections", None) or []:
            box = d.location_data.relative_bounding_box
            palms.append({"score": float(d.score[0]),
                          "xyxy": [box.xmin * width, box.ymin * height, (box.xmin + box.width) * width,
                                   (box.ymin + box.height) * height],
                          "keypoints": [[k.x * width, k.y * height] for k in d.location_data.relative_keypoints]})
        out["palms"] = palms
        for name in ("hand_rects_from_palm_detections", "hand_rects_from_landmarks"):
            out[name] = [_rect(r, width, height) for r in getattr(result, name, None) or []]
    return out


def hands(args: argparse.Namespace) -> dict:
    """Landmarks at full precision, for the parity tests (see the module docstring)."""
    import cv2
    import numpy as np

    if args.frames and args.frames.endswith(".npz"):  # images of any sizes, decoded by the caller
        with np.load(args.frames) as archive:
            items = [(key, archive[key]) for key in archive.files]
    elif args.frames:
        frames = np.load(args.frames)  # [F, H, W, 3] RGB uint8
        items = [(f"frame{i}", frame) for i, frame in enumerate(frames)]
    else:
        items = [(line.strip(), None) for line in open(args.images) if line.strip()]
    make = _hands_debug if args.debug else _hands
    out = []
    with make(bool(args.static), args.max_hands, args.complexity, args.min_detection, args.min_tracking) as solution:
        for name, image in items:
            if image is None:
                bgr = cv2.imread(name, cv2.IMREAD_COLOR)
                if bgr is None:
                    out.append({"image": name, "error": "cannot decode"})
                    continue
                image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            h, w = image.shape[:2]
            result = solution.process(np.ascontiguousarray(image)) if not args.debug else \
                solution.process({"image": np.ascontiguousarray(image)})
            out.append({"image": name, **_hands_payload(result, w, h, bool(args.debug))})
    import mediapipe as mp

    return {"mediapipe": mp.__version__, "images": out}


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
    times, cpu, counts = [], [], []
    with _hands(args.static, args.max_hands, args.complexity, args.min_detection, args.min_tracking) as hands:
        # Warm-up on the sequence's own first frames, then restart the graph's tracking state
        # by creating a fresh solution (warm-up caches stay warm in the process).
        for frame in frames[: args.warmup]:
            hands.process(frame)
    with _hands(args.static, args.max_hands, args.complexity, args.min_detection, args.min_tracking) as hands:
        for frame in frames:
            start, start_cpu = time.perf_counter(), time.process_time()
            result = hands.process(frame)
            times.append((time.perf_counter() - start) * 1000.0)
            cpu.append((time.process_time() - start_cpu) * 1000.0)  # every thread of the process
            counts.append(len(result.multi_hand_landmarks or []))
    return {"ms": [round(t, 4) for t in times], "cpu_ms": [round(t, 4) for t in cpu], "hands": counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["detect", "latency", "hands", "version"])
    parser.add_argument("--images", help="detect: text file, one image path per line")
    parser.add_argument("--frames", help="latency, hands: .npy [F, H, W, 3] RGB uint8; hands: or .npz of RGB arrays")
    parser.add_argument("--out", help="write the JSON here (default: stdout)")
    parser.add_argument("--max_hands", type=int, default=4)
    parser.add_argument("--static", type=int, default=0, help="latency, hands: 1 = static_image_mode")
    parser.add_argument("--debug", type=int, default=0, help="hands: 1 = also the palm detections and hand ROIs")
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
    elif args.mode == "hands":
        payload = hands(args)
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
