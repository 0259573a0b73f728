"""What `close_up_steps` buys and costs: hands that fill the frame, which MediaPipe's palm detector
misses, found by the crop model looking at the whole frame.

    python -m benchmarks.close_ups [--steps 0 1 2 3]

For each setting, on real photos of people no model trained on (static mode, `components.infer`'s
defaults otherwise):

- gesture accuracy, misses counted as errors, on `hagrid_sample` + `roboflow_gestures_v6`, and
  without the Roboflow photos whose labels the review rejects (`benchmarks/review/`);
- hands found on every image of the MediaPipe parity sets (221 photos + 12 composites): each hand
  beyond the default's is a departure from MediaPipe's answer;
- false hands: hands found on strips of HaGRID photos cut beside every annotated hand (no hand
  inside them by the annotations; a strip can still hold a bit of arm or an unannotated hand);
- the time per photo without a hand (the strips).

Writes benchmarks/results/close_ups.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import yaml

from benchmarks.common import print_table, write_results

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
REVIEW = ROOT / "benchmarks" / "review" / "roboflow_gestures_v6.yaml"


def hand_free_strips(min_width: int = 120) -> list[np.ndarray]:
    """RGB strips of `hagrid_sample` photos left or right of every annotated hand (half a hand's
    width of margin), the wider side, at least `min_width` px wide."""
    from shared.data.hagrid import read_hagrid

    images, _ = read_hagrid(DATA / "hagrid_sample")
    strips = []
    for im in images:
        if not im.hands:
            continue
        bgr = cv2.imread(str(im.image_path))
        h, w = bgr.shape[:2]
        boxes = np.array([hand.bbox * [w, h, w, h] for hand in im.hands])  # x, y, width, height
        left = int(max(0, (boxes[:, 0] - 0.5 * boxes[:, 2]).min()))
        right = int(min(w, (boxes[:, 0] + 1.5 * boxes[:, 2]).max()))
        strip = bgr[:, :left] if left >= w - right else bgr[:, right:]
        if strip.shape[1] >= min_width:
            strips.append(cv2.cvtColor(strip, cv2.COLOR_BGR2RGB))
    return strips


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, nargs="+", default=[0, 1, 2, 3])
    args = p.parse_args(argv)

    from benchmarks import mediapipe_parity as parity
    from shared.data.realsets import read_gesture_test_set
    from shared.inference.gesture_eval import evaluate_gestures
    from shared.inference.pipeline import HandPipeline, PipelineConfig

    samples = [s for d in ("hagrid_sample", "roboflow_gestures_v6") for s in read_gesture_test_set(DATA / d)]
    excluded = set(yaml.safe_load(REVIEW.read_text()) or {})
    reviewed = [s for s in samples if s.path.stem not in excluded]
    sets = parity.static_sets()
    strips = hand_free_strips()
    rows, base = [], None
    for steps in args.steps:
        pipe = HandPipeline(PipelineConfig(static=True, close_up_steps=steps))
        every, clean = evaluate_gestures(pipe, samples), evaluate_gestures(pipe, reviewed)
        counts = [len(pipe(im)) for items in sets.values() for _, im in items]
        base = base or counts
        t = time.perf_counter()
        false_hands = sum(len(pipe(s)) for s in strips)
        ms = (time.perf_counter() - t) * 1e3 / max(len(strips), 1)
        rows.append({"close_up_steps": steps, "accuracy": every.accuracy, "missed": every.missed,
                     "reviewed_accuracy": clean.accuracy, "reviewed_missed": clean.missed,
                     "parity_hands": sum(counts), "parity_images_changed": sum(a != b for a, b in zip(counts, base)),
                     "strip_hands": false_hands, "strips": len(strips), "ms_per_strip": ms})
        print(f"close_up_steps {steps}: all hands\n{every.table()}\nreviewed\n{clean.table()}")
    print_table(f"close_up_steps on real photos ({len(samples)} labelled photos, {len(reviewed)} reviewed; "
                f"{len(counts)} parity images; {len(strips)} hand-free strips)", rows)
    write_results("close_ups", {"rows": rows, "review": str(REVIEW.relative_to(ROOT))})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
