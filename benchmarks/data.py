"""Data throughput: synthetic images/s (320x320, 1-4 hands) and augmented images/s per type.

    python -m benchmarks.data [--images 300] [--augmentations 300]

Single process, as a user's loop would run it. Aim on a 2-core machine:
>= 50 synthetic/s and >= 100 light augmentations/s.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import print_table, write_results


def bench_synthetic(n: int) -> dict:
    from shared.data.synthetic import SyntheticConfig, render_image

    cfg = SyntheticConfig(image_size=320, min_hands=1, max_hands=4)
    render_image(0, 0, cfg)  # warm-up (lazy tables)
    start = time.perf_counter()
    hands = 0
    for i in range(n):
        hands += len(render_image(1, i, cfg).labels)
    dt = time.perf_counter() - start
    return {"what": "synthetic 320x320, 1-4 hands", "items": n, "hands": hands, "seconds": dt, "per_s": n / dt}


def bench_augment(n: int, aug_type: str, images: list) -> dict:
    from components.augment import augment_one, build_transform

    transform = build_transform(aug_type)
    transform.set_random_seed(0)
    start = time.perf_counter()
    for i in range(n):
        image, labels = images[i % len(images)]
        augment_one(transform, image, labels)
    dt = time.perf_counter() - start
    return {"what": f"augment {aug_type} 320x320", "items": n, "hands": None, "seconds": dt, "per_s": n / dt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--augmentations", type=int, default=300)
    args = parser.parse_args()

    from shared.data.synthetic import SyntheticConfig, render_image

    rows = [bench_synthetic(args.images)]
    cfg = SyntheticConfig(image_size=320, min_hands=1, max_hands=4)
    samples = [(s.image, s.labels) for s in (render_image(7, i, cfg) for i in range(20))]
    for aug_type in ("light", "standard", "heavy"):
        rows.append(bench_augment(args.augmentations, aug_type, samples))
    print_table("Data throughput (one process)", rows)
    write_results("data", {"rows": rows, "targets": {"synthetic_per_s": 50, "light_per_s": 100}})


if __name__ == "__main__":
    main()
