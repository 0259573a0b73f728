"""Synthetic hands: determinism, gesture geometry, label consistency, sequences and MOT files."""

from __future__ import annotations

import numpy as np
import pytest

from shared.data.labels import format_line, parse_line
from shared.data.synthetic import (
    SyntheticConfig,
    read_mot,
    render_image,
    render_sequence,
    write_mot,
)
from shared.errors import UserError
from shared.hand import GESTURE_TO_ID, GESTURES, NUM_KEYPOINTS, VIS_OCCLUDED

SIZE = 320


def _only(gesture: str, **kwargs) -> SyntheticConfig:
    weights = [0.0] * len(GESTURES)
    weights[GESTURE_TO_ID[gesture]] = 1.0
    return SyntheticConfig(gesture_weights=weights, **kwargs)


@pytest.fixture(scope="module")
def batch() -> list:
    """60 default images (0-4 hands, every gesture, occluders, blur, truncation)."""
    return [render_image(11, i) for i in range(60)]


def test_same_seed_is_byte_identical_and_order_independent():
    a = render_image(3, 17)
    render_image(3, 18)  # other renders in between must not matter
    render_image(4, 17)
    b = render_image(3, 17)
    assert a.image.tobytes() == b.image.tobytes()
    assert [format_line(lb) for lb in a.labels] == [format_line(lb) for lb in b.labels]
    assert a.handedness == b.handedness


def test_different_index_or_seed_gives_different_images():
    images = [render_image(0, i).image for i in range(4)] + [render_image(1, 0).image]
    digests = {im.tobytes() for im in images}
    assert len(digests) == len(images)


def test_image_format_and_size_override():
    sample = render_image(0, 1, SyntheticConfig(width=200, height=120, min_hands=1))
    assert sample.image.shape == (120, 200, 3) and sample.image.dtype == np.uint8
    assert len(sample.handedness) == len(sample.labels)


def _ratios(kp: np.ndarray) -> dict[str, float]:
    """Distances in the image, relative to the 2D palm length (wrist -> middle MCP)."""
    palm = np.linalg.norm(kp[9, :2] - kp[0, :2])

    def d(a: int, b: int) -> float:
        return float(np.linalg.norm(kp[a, :2] - kp[b, :2]) / palm)

    return {
        "tips": float(np.mean([d(t, 0) for t in (8, 12, 16, 20)])),  # mean fingertip-to-wrist
        "index": d(8, 0),
        "others": max(d(t, 0) for t in (12, 16, 20)),  # farthest of middle, ring, pinky tips
        "pinch": d(4, 8),  # thumb tip to index tip
    }


# (gesture, feature, low, high): one line per design rule, checked on EVERY rendered hand.
GESTURE_RULES = [
    ("fist", "tips", 0.0, 0.95),  # all fingers curled: tips near the palm
    ("fist", "index", 0.0, 0.95),
    ("normal_hand", "tips", 1.5, 9.0),  # open palm: tips about two palm lengths away
    ("normal_hand", "pinch", 0.5, 9.0),  # thumb spread away from the index
    ("pointer", "index", 1.5, 9.0),  # index out ...
    ("pointer", "others", 0.0, 0.95),  # ... the other fingers curled
    ("pinch", "pinch", 0.0, 0.12),  # thumb tip on the index tip
    ("pinch", "others", 1.5, 9.0),  # other fingers relaxed / extended
]


@pytest.fixture(scope="module")
def single_hands() -> dict[str, list[np.ndarray]]:
    """Keypoints (pixels) of 25 single hands per gesture, all randomisation on."""
    out = {}
    for g in ("fist", "normal_hand", "pointer", "pinch"):
        cfg = _only(g, min_hands=1, max_hands=1, truncation_prob=0.0)
        out[g] = [render_image(5, i, cfg).labels[0].keypoints_px(SIZE, SIZE) for i in range(25)]
    return out


@pytest.mark.parametrize("gesture,feature,low,high", GESTURE_RULES)
def test_gestures_differ_as_designed(single_hands, gesture, feature, low, high):
    values = np.array([_ratios(kp)[feature] for kp in single_hands[gesture]])
    assert ((values >= low) & (values <= high)).all(), f"{gesture} {feature}: {np.round(values, 2)}"


def test_labels_are_consistent(batch):
    seen_classes, seen_v, hands = set(), set(), 0
    for sample in batch:
        assert len(sample.labels) == len(sample.handedness)
        for label, side in zip(sample.labels, sample.handedness):
            hands += 1
            assert side in (0, 1)
            seen_classes.add(label.cls)
            x1, y1, x2, y2 = label.xyxy()
            assert 0 <= x1 < x2 <= 1 + 1e-9 and 0 <= y1 < y2 <= 1 + 1e-9
            kp = label.keypoints
            v = kp[:, 2]
            seen_v.update(v.tolist())
            assert set(v.tolist()) <= {0, 1, 2}
            assert (kp[v == 0, :2] == 0).all(), "absent keypoints must have x=y=0"
            on = v > 0
            assert on.sum() >= 1
            px = kp[on, :2] * SIZE
            margin = 1.0  # pixels
            assert (px >= 0).all() and (px <= SIZE).all()
            assert (px[:, 0] >= x1 * SIZE - margin).all() and (px[:, 0] <= x2 * SIZE + margin).all()
            assert (px[:, 1] >= y1 * SIZE - margin).all() and (px[:, 1] <= y2 * SIZE + margin).all()
            # the label survives the YOLO-pose writer/reader unchanged (6 decimals)
            parsed = parse_line(format_line(label), "synthetic", 1)
            assert not hasattr(parsed, "reason"), str(parsed)
            assert np.allclose(parsed.keypoints, kp, atol=1e-6)
    assert hands >= 80
    assert seen_classes == set(range(len(GESTURES)))
    assert VIS_OCCLUDED in seen_v and 2 in seen_v


def test_hands_per_image_honours_the_range():
    cfg = SyntheticConfig(min_hands=2, max_hands=3)
    counts = [len(render_image(2, i, cfg).labels) for i in range(20)]
    assert set(counts) <= {2, 3} and set(counts) == {2, 3}
    assert all(len(render_image(2, i, SyntheticConfig(min_hands=0, max_hands=0)).labels) == 0 for i in range(3))


def test_both_sides_and_both_views_occur(batch):
    sides = {s for sample in batch for s in sample.handedness}
    assert sides == {0, 1}


def test_fist_seen_from_the_back_hides_fingertips():
    cfg = _only("fist", min_hands=1, max_hands=1, back_view_prob=1.0, occlusion_prob=0.0, truncation_prob=0.0)
    hidden = [render_image(1, i, cfg).labels[0].keypoints[[8, 12, 16, 20], 2] for i in range(10)]
    # curled fingertips behind the palm: most of them must be marked occluded (v=1)
    assert np.mean(np.concatenate(hidden) == VIS_OCCLUDED) > 0.5


def test_occluders_mark_keypoints_occluded():
    base = dict(min_hands=1, max_hands=1, back_view_prob=0.0, truncation_prob=0.0)
    occluded = [render_image(4, i, _only("normal_hand", occlusion_prob=1.0, **base)) for i in range(12)]
    clear = [render_image(4, i, _only("normal_hand", occlusion_prob=0.0, **base)) for i in range(12)]
    frac = lambda samples: np.mean([(s.labels[0].keypoints[:, 2] == 1).mean() for s in samples])  # noqa: E731
    assert frac(occluded) > frac(clear) + 0.05


def test_two_hands_label_covers_both_hands():
    cfg = _only("2_hands", min_hands=1, max_hands=1, truncation_prob=0.0, occlusion_prob=0.0)
    for i in range(8):
        label = render_image(6, i, cfg).labels[0]
        assert label.cls == GESTURE_TO_ID["2_hands"]
        kp = label.keypoints[label.keypoints[:, 2] > 0, :2]
        x1, _, x2, _ = label.xyxy()
        # the keypoints are the left hand's; the box also holds the second hand to its right
        assert x2 - kp[:, 0].max() > 0.3 * (kp[:, 0].max() - kp[:, 0].min())
        assert kp[:, 0].min() - x1 < x2 - kp[:, 0].max()


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError, match="gesture_weights"):
        SyntheticConfig(gesture_weights=[1.0, 1.0])
    with pytest.raises(UserError, match="min_hands"):
        SyntheticConfig(min_hands=3, max_hands=1)


# ---------------------------------------------------------------------------------------------
# Sequences
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sequence() -> list:
    return render_sequence(0, 1, 60, SyntheticConfig(max_hands=3))


def test_sequence_is_deterministic(sequence):
    again = render_sequence(0, 1, 60, SyntheticConfig(max_hands=3))
    assert all(a.image.tobytes() == b.image.tobytes() for a, b in zip(sequence, again))
    assert [f.track_ids for f in sequence] == [f.track_ids for f in again]


def test_sequence_tracks_are_stable(sequence):
    assert len(sequence) == 60
    side: dict[int, int] = {}
    last_centre: dict[int, tuple[int, np.ndarray]] = {}
    for t, frame in enumerate(sequence):
        assert len(frame.labels) == len(frame.track_ids) == len(frame.handedness)
        assert len(set(frame.track_ids)) == len(frame.track_ids), "one box per track per frame"
        for label, tid, hand in zip(frame.labels, frame.track_ids, frame.handedness):
            assert side.setdefault(tid, hand) == hand, "a track keeps its handedness"
            centre = label.box[:2] * SIZE
            if tid in last_centre and last_centre[tid][0] == t - 1:
                # smooth motion: the box centre moves a little per frame (its size can change at the border)
                assert np.linalg.norm(centre - last_centre[tid][1]) < 0.12 * SIZE
            last_centre[tid] = (t, centre)


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_long_sequences_have_a_hand_entering_or_leaving(index):
    frames = render_sequence(7, index, 40, SyntheticConfig(max_hands=2, blur_prob=0.0, noise_prob=0.0))
    presence = {tid for f in frames for tid in f.track_ids}
    changes = any(set(frames[t].track_ids) != set(frames[t + 1].track_ids) for t in range(len(frames) - 1))
    assert presence and changes


def test_mot_round_trip(sequence, tmp_path):
    path = tmp_path / "gt" / "gt.txt"
    write_mot(path, sequence, SIZE, SIZE)
    lines = path.read_text().splitlines()
    assert all(line.endswith(",1,-1,-1,-1") and len(line.split(",")) == 10 for line in lines)
    tracks = read_mot(path)
    for f, frame in enumerate(sequence, 1):
        expected = sorted((tid, lb.xyxy(SIZE, SIZE)) for tid, lb in zip(frame.track_ids, frame.labels))
        got = sorted(tracks.get(f, []), key=lambda p: p[0])
        assert [tid for tid, _ in got] == [tid for tid, _ in sorted(expected, key=lambda p: p[0])]
        for (_, a), (_, b) in zip(got, sorted(expected, key=lambda p: p[0])):
            assert np.allclose(a, b, atol=0.011)


def test_read_mot_names_the_bad_line(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("1,1,10,10,5,5,1,-1,-1,-1\n2,1,ten,10,5,5,1,-1,-1,-1\n")
    with pytest.raises(UserError, match=r"gt.txt:2: non-numeric"):
        read_mot(path)
    with pytest.raises(UserError, match="not found"):
        read_mot(tmp_path / "missing.txt")


def test_sequence_keypoints_are_consistent(sequence):
    for frame in sequence:
        for label in frame.labels:
            kp = label.keypoints
            assert kp.shape == (NUM_KEYPOINTS, 3)
            on = kp[:, 2] > 0
            x1, y1, x2, y2 = label.xyxy()
            eps = 1.0 / SIZE
            assert (kp[on, 0] >= x1 - eps).all() and (kp[on, 0] <= x2 + eps).all()
            assert (kp[on, 1] >= y1 - eps).all() and (kp[on, 1] <= y2 + eps).all()
