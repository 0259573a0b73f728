"""Tracker, Kalman filter, smoothing and the MOT evaluation (shared/tracking)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from shared.config import add_config_args, load_config
from shared.errors import UserError
from shared.geometry import iou_matrix
from shared.results import HandResults
from shared.tracking import (
    GestureSmoother,
    HandTracker,
    OneEuroFilter,
    TrackerConfig,
    TrackState,
    evaluate_tracking,
    kalman,
    linear_assignment,
    noisy_detections,
    one_euro_step,
    run_tracker,
    synthetic_tracks,
)
from shared.tracking.mot_eval import FrameBoxes, gt_from_sequence


def hands(*boxes: list[float], score: float = 0.9) -> HandResults:
    """HandResults with the given xyxy boxes and one score."""
    return HandResults(xyxy=np.array(boxes, dtype=np.float32).reshape(-1, 4), score=np.full(len(boxes), score))


def box_at(cx: float, cy: float, size: float = 60.0) -> list[float]:
    return [cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]


# ---------------------------------------------------------------------------------------------
# IoU and assignment
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),  # identical boxes
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),  # disjoint
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching edges share no area
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),  # half shifted: 50 / (100 + 100 - 50)
        ([0, 0, 10, 10], [2, 2, 7, 7], 25 / 100),  # contained: small area / big area
        ([0, 0, 10, 10], [5, 5, 5, 5], 0.0),  # zero-area box
        ([0, 0, 4, 10], [0, 0, 10, 4], 16 / 64),  # crossing bars: 4x4 overlap of 40 + 40 - 16
    ],
)
def test_iou_values(a, b, expected):
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected)


@pytest.mark.parametrize(
    "iou, threshold, matches, free_rows, free_cols",
    [
        ([[0.9, 0.1], [0.1, 0.8]], 0.3, [(0, 0), (1, 1)], [], []),  # diagonal
        ([[0.1, 0.9], [0.8, 0.1]], 0.3, [(0, 1), (1, 0)], [], []),  # swapped order of detections
        ([[0.2, 0.0], [0.0, 0.8]], 0.3, [(1, 1)], [0], [0]),  # a pair under the threshold is not matched
        ([[0.6, 0.7], [0.0, 0.65]], 0.3, [(0, 0), (1, 1)], [], []),  # global optimum, not greedy (0-1 first)
        ([[0.5, 0.9, 0.2]], 0.3, [(0, 1)], [], [0, 2]),  # more detections than tracks
        ([[0.5], [0.7], [0.1]], 0.3, [(1, 0)], [0, 2], []),  # more tracks than detections
        (np.zeros((0, 3)), 0.3, [], [], [0, 1, 2]),  # no tracks
        (np.zeros((2, 0)), 0.3, [], [0, 1], []),  # no detections
    ],
)
def test_linear_assignment(iou, threshold, matches, free_rows, free_cols):
    m, um_rows, um_cols = linear_assignment(np.array(iou, dtype=np.float64), threshold)
    assert sorted(map(tuple, m.tolist())) == matches
    assert um_rows.tolist() == free_rows
    assert um_cols.tolist() == free_cols


def test_assignment_prefers_more_valid_matches():
    # Track 0 fits det 0 best, but giving it det 1 lets track 1 match det 0 as well:
    # two valid matches beat one better one.
    iou = np.array([[0.9, 0.5], [0.4, 0.0]])
    m, _, _ = linear_assignment(iou, 0.3)
    assert sorted(map(tuple, m.tolist())) == [(0, 1), (1, 0)]


# ---------------------------------------------------------------------------------------------
# Kalman filter (std_position = 1/20, std_velocity = 1/40 written out by hand below)
# ---------------------------------------------------------------------------------------------

P, V = 1 / 20, 1 / 40
H = 40.0  # box height of the test measurement


@pytest.mark.parametrize(
    "index, expected",
    [
        (0, (2 * P * H) ** 2),  # x: (2 * 1/20 * 40)^2 = 16
        (2, 1e-2 ** 2),  # aspect: fixed 1e-2 std
        (3, (2 * P * H) ** 2),  # height like x
        (4, (10 * V * H) ** 2),  # vx: (10 * 1/40 * 40)^2 = 100
        (6, 1e-5 ** 2),  # aspect velocity: fixed 1e-5 std
    ],
)
def test_kalman_initiate(index, expected):
    mean, cov = kalman.initiate(np.array([10.0, 20.0, 0.5, H]), P, V)
    assert mean.tolist() == [10.0, 20.0, 0.5, H, 0, 0, 0, 0]
    assert cov[index, index] == pytest.approx(expected)
    assert np.count_nonzero(cov - np.diag(np.diag(cov))) == 0  # diagonal


def test_kalman_predict_by_hand():
    mean = np.array([10.0, 20.0, 0.5, H, 2.0, -1.0, 0.0, 0.5])
    cov = np.diag([16.0, 16.0, 1e-4, 16.0, 100.0, 100.0, 1e-10, 100.0])
    new_mean, new_cov = kalman.predict(mean, cov, P, V)
    # Position moves by one frame of velocity.
    assert new_mean.tolist() == pytest.approx([12.0, 19.0, 0.5, 40.5, 2.0, -1.0, 0.0, 0.5])
    q_pos, q_vel = (P * H) ** 2, (V * H) ** 2  # 4, 1 (from the *old* height, 40)
    # var(x') = var(x) + var(vx) + q = 16 + 100 + 4; cov(x', vx') = var(vx) = 100.
    assert new_cov[0, 0] == pytest.approx(16 + 100 + q_pos)
    assert new_cov[0, 4] == pytest.approx(100.0)
    assert new_cov[4, 0] == pytest.approx(100.0)
    assert new_cov[4, 4] == pytest.approx(100 + q_vel)
    assert new_cov[0, 1] == 0.0  # x and y stay independent
    assert mean[0] == 10.0 and cov[0, 0] == 16.0  # inputs untouched


def test_kalman_update_by_hand():
    mean = np.array([10.0, 20.0, 0.5, H, 0.0, 0.0, 0.0, 0.0])
    cov = np.diag([12.0, 12.0, 1e-4, 12.0, 3.0, 3.0, 1e-10, 3.0])
    cov[0, 4] = cov[4, 0] = 2.0  # x and vx correlated
    z = np.array([14.0, 20.0, 0.5, H])
    new_mean, new_cov = kalman.update(mean, cov, z, P)
    r = (P * H) ** 2  # measurement variance of x: 4
    s = 12.0 + r  # innovation variance 16
    k_x, k_vx = 12.0 / s, 2.0 / s  # gains 0.75 and 0.125
    assert new_mean[0] == pytest.approx(10.0 + k_x * 4.0)  # 13
    assert new_mean[4] == pytest.approx(k_vx * 4.0)  # 0.5: the velocity learns from the position error
    assert new_mean[1] == pytest.approx(20.0)  # no innovation in y
    assert new_cov[0, 0] == pytest.approx(12.0 - 12.0 * 12.0 / s)  # 3
    assert new_cov[4, 4] == pytest.approx(3.0 - 2.0 * 2.0 / s)  # 2.75
    assert new_cov[0, 4] == pytest.approx(2.0 - 12.0 * 2.0 / s)  # 0.5


def test_kalman_batched_equals_single():
    rng = np.random.default_rng(0)
    z0 = np.column_stack([rng.uniform(0, 300, (5, 2)), rng.uniform(0.5, 1.5, 5), rng.uniform(20, 90, 5)])
    means, covs = kalman.initiate(z0)
    means, covs = kalman.predict(means, covs)
    z1 = z0 + rng.normal(0, 2, z0.shape)
    batch_mean, batch_cov = kalman.update(means, covs, z1)
    for i in range(5):
        m, c = kalman.update(means[i], covs[i], z1[i])
        np.testing.assert_allclose(batch_mean[i], m)
        np.testing.assert_allclose(batch_cov[i], c)


def test_kalman_update_equals_the_general_solve_over_a_long_chain():
    """update() divides by S's diagonal; that is exact because initiate/predict/update keep the
    four measured values uncorrelated. Check both against the textbook solve, 200 frames."""
    rng = np.random.default_rng(0)
    z = np.column_stack([rng.uniform(50, 300, (5, 2)), rng.uniform(0.5, 1.5, 5), rng.uniform(40, 120, 5)])
    mean, cov = kalman.initiate(z, P, 1 / 40)
    for step in range(200):
        mean, cov = kalman.predict(mean, cov, P, 1 / 40)
        if step % 3 == 0:
            continue  # some frames without a measurement
        meas = mean[:, :4] + rng.normal(0, 3, (5, 4))
        meas[:, 2] = np.abs(meas[:, 2])
        projected_mean, projected_cov = kalman.project(mean, cov, P)
        gain_t = np.linalg.solve(projected_cov, cov[:, :4, :])
        ref_mean = mean + ((meas - projected_mean)[:, None, :] @ gain_t)[:, 0]
        ref_cov = cov - np.swapaxes(cov[:, :4, :], -1, -2) @ gain_t
        mean, cov = kalman.update(mean, cov, meas, P)
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(cov, ref_cov, rtol=1e-9, atol=1e-9)
        off_diagonal = cov[:, :4, :4] * (1 - np.eye(4))
        assert not off_diagonal.any()


@pytest.mark.parametrize(
    "xyxy",
    [
        [10, 20, 70, 100],  # portrait box
        [0, 0, 50, 25],  # landscape box
        [-5, -5, 5, 5],  # partly outside the image
    ],
)
def test_xyah_round_trip(xyxy):
    np.testing.assert_allclose(kalman.xyah_to_xyxy(kalman.xyxy_to_xyah(np.array(xyxy, float))), xyxy)


@pytest.mark.parametrize("lost", [[], [1], [0, 2]])
def test_kalman_kernels_equal_the_numpy_filter(lost):
    """The compiled Kalman steps the tracker replays (kernels.py) compute what kalman.predict
    and kalman.update do, rows and lost tracks included, over a chain of frames."""
    from shared.tracking.kernels import kalman_predict_rows, kalman_update_rows

    rng = np.random.default_rng(len(lost))
    boxes = np.array([box_at(100, 100, 50), box_at(300, 200, 80), box_at(500, 90, 30)])  # [3, 4]
    means, covs = kalman.initiate(kalman.xyxy_to_xyah(boxes), P, V)
    means[:, 4:] = rng.normal(0, 2, (3, 4))
    k_means, k_covs = means.copy(), covs.copy()
    _, process_var, measure_var = kalman._weights(P, V)
    rows = np.array([2, 0], dtype=np.int64)  # not every track is measured, and not in order
    for frame in range(25):
        means[lost, 7] = 0.0
        means, covs = kalman.predict(means, covs, P, V)
        kalman_predict_rows(k_means, k_covs, np.array(lost, dtype=np.int64), process_var, kalman._PROCESS_VAR_CONST)
        z = boxes[rows] + rng.normal(0, 3, (2, 4)) + frame * np.array([2.0, 1.0, 2.0, 1.0])
        means[rows], covs[rows] = kalman.update(means[rows], covs[rows], kalman.xyxy_to_xyah(z), P)
        kalman_update_rows(k_means, k_covs, rows, z, measure_var, kalman._MEASURE_VAR_CONST)
        np.testing.assert_allclose(k_means, means, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(k_covs, covs, rtol=1e-9, atol=1e-9)


def test_kalman_converges_on_constant_velocity():
    mean, cov = kalman.initiate(kalman.xyxy_to_xyah(np.array(box_at(100, 100))))
    for t in range(1, 20):
        mean, cov = kalman.predict(mean, cov)
        mean, cov = kalman.update(mean, cov, kalman.xyxy_to_xyah(np.array(box_at(100 + 5 * t, 100))))
    assert mean[4] == pytest.approx(5.0, abs=0.3)  # learned vx
    assert mean[5] == pytest.approx(0.0, abs=0.3)


# ---------------------------------------------------------------------------------------------
# Tracker sequences
# ---------------------------------------------------------------------------------------------

def test_two_frame_sequence():
    tracker = HandTracker()
    out1 = tracker.update(hands(box_at(100, 100), box_at(300, 100)))
    assert out1.track_id.tolist() == [1, 2]  # first frame: confirmed at once
    # Both hands move a little and come back in the opposite order.
    out2 = tracker.update(hands(box_at(305, 104), box_at(106, 98)))
    assert out2.track_id.tolist() == [2, 1]
    assert len(tracker.tracks) == 2 and all(t.state == TrackState.CONFIRMED for t in tracker.tracks)


@pytest.mark.parametrize(
    "speed, dy, size_b, jitter",
    [
        (8.0, 0.0, 60.0, 0.0),  # same height, same size: boxes coincide at the crossing
        (15.0, 10.0, 60.0, 0.0),  # fast, slightly offset
        (4.0, 20.0, 60.0, 0.0),  # slow: many frames of heavy overlap
        (8.0, 0.0, 45.0, 0.0),  # different sizes
        (8.0, 5.0, 60.0, 1.5),  # noisy boxes (1.5 px jitter per corner)
    ],
)
def test_crossing_hands_keep_ids(speed, dy, size_b, jitter):
    rng = np.random.default_rng(1)
    tracker = HandTracker()
    id_a, id_b = set(), set()
    for t in range(int(400 / speed) + 10):
        a = box_at(100 + speed * t, 200)  # left -> right
        b = box_at(500 - speed * t, 200 + dy, size_b)  # right -> left
        boxes = np.array([a, b]) + rng.normal(0, jitter, (2, 4))
        order = rng.permutation(2)  # detection order carries no identity
        out = tracker.update(hands(*boxes[order]))
        if iou_matrix(boxes[:1], boxes[1:])[0, 0] > 0.9:
            continue  # the boxes coincide: which is which is not observable
        ids = dict(zip(order.tolist(), out.track_id.tolist()))
        id_a.add(ids[0])
        id_b.add(ids[1])
    assert len(id_a) == 1 and len(id_b) == 1 and id_a != id_b and -1 not in id_a | id_b


def test_track_hints_carry_identity_without_iou():
    """Tracking mode: a hand whose ROI came from track k continues k even where IoU could not
    tell (the hands swapped places in one frame); unknown hints fall back to matching."""
    tracker = HandTracker()
    tracker.update(hands(box_at(100, 100), box_at(300, 100)))
    # By IoU the swapped hands would keep the ids of the places; the hints say who is who.
    out = tracker.update(hands(box_at(300, 100), box_at(100, 100)), track_hints=np.array([1, 2]))
    assert out.track_id.tolist() == [1, 2]
    # Hint -1 (a detector's hand) and a hint for an id that never existed: matched by IoU.
    out = tracker.update(hands(box_at(302, 101), box_at(99, 100)), track_hints=np.array([-1, 77]))
    assert out.track_id.tolist() == [1, 2]
    # Two hands claiming one track: the first gets it, the other is matched by IoU.
    out = tracker.update(hands(box_at(304, 102), box_at(98, 100)), track_hints=np.array([1, 1]))
    assert out.track_id.tolist() == [1, 2]
    with pytest.raises(ValueError, match="track_hints"):
        tracker.update(hands(box_at(304, 102)), track_hints=np.array([1, 2]))


def test_lazy_kalman_equals_stepping_every_frame():
    """The tracker logs Kalman steps and applies them only when matching needs them (or a
    track's state is read): the states, ids and boxes are those of stepping every frame.
    Tracker `a` is only fed ROI-hinted hands (no matching, so its log fills and is flushed
    by size); `b` has its state read after every frame, which applies each step at once."""
    from shared.tracking.tracker import KALMAN_LOG_FRAMES

    rng = np.random.default_rng(3)
    a, b = HandTracker(), HandTracker()
    n_frames = 3 * KALMAN_LOG_FRAMES + 7
    for frame in range(n_frames):
        boxes = [box_at(100 + 4 * frame + rng.normal(0, 1), 100), box_at(300 - 3 * frame, 120 + rng.normal(0, 1))]
        hints = None if frame < 2 else np.array([1, 2])
        if frame % 7 == 3:
            boxes, hints = boxes[:1], (None if hints is None else hints[:1])  # a missed hand now and then
        out_a = a.update(hands(*boxes), track_hints=hints)
        out_b = b.update(hands(*boxes), track_hints=hints)
        assert out_a.track_id.tolist() == out_b.track_id.tolist()
        _ = [t.mean for t in b.tracks]  # reading the state applies the logged steps
        assert len(b._kalman_log) == 0
        assert len(a._kalman_log) <= 2 * KALMAN_LOG_FRAMES + 2  # bounded: flushed when full
    assert len(a._kalman_log) > 0  # a's last steps are still pending ...
    for ta, tb in zip(a.tracks, b.tracks):  # ... and reading applies them
        np.testing.assert_allclose(ta.mean, tb.mean)
        np.testing.assert_allclose(ta.cov, tb.cov)
        np.testing.assert_allclose(ta.xyxy, tb.xyxy)
        assert (ta.age, ta.time_since_update, ta.hits) == (tb.age, tb.time_since_update, tb.hits)
    # The hinted hands moved by 4 and -3 px per frame: the velocity was learnt meanwhile.
    np.testing.assert_allclose(a.tracks[0].velocity[0], 4.0, atol=0.5)
    np.testing.assert_allclose(a.tracks[1].velocity[0], -3.0, atol=0.5)


@pytest.mark.parametrize(
    "max_age, gap, same_id",
    [
        (3, 3, True),  # hidden for exactly max_age frames: the id survives
        (3, 4, False),  # one frame longer: removed, a new id
        (1, 1, True),  # short memory
        (1, 2, False),
        (6, 5, True),  # a longer memory bridges a longer occlusion
    ],
)
def test_leave_and_reenter(max_age, gap, same_id):
    tracker = HandTracker(TrackerConfig(track_max_age=max_age, track_min_hits=1))
    for t in range(5):
        tracker.update(hands(box_at(100 + 2 * t, 100)))
    for _ in range(gap):
        assert tracker.update(HandResults.empty()).track_id.tolist() == []
    out = tracker.update(hands(box_at(110 + 2 * gap, 100)))
    assert (out.track_id[0] == 1) == same_id
    assert out.track_id[0] in (1, 2)


def test_no_detections_ages_tracks():
    tracker = HandTracker(TrackerConfig(track_max_age=2))
    tracker.update(hands(box_at(100, 100)))
    out = tracker.update(HandResults.empty())
    assert len(out) == 0
    (track,) = tracker.tracks
    assert track.state == TrackState.LOST and track.time_since_update == 1 and track.age == 2
    tracker.update(HandResults.empty())
    assert tracker.tracks[0].time_since_update == 2
    tracker.update(HandResults.empty())
    assert tracker.tracks == []  # removed after max_age missed frames
    assert track.state == TrackState.REMOVED
    np.testing.assert_allclose(track.xyxy, box_at(100, 100), atol=1e-6)  # keeps its last state (no velocity)


def test_reset_restarts_ids():
    tracker = HandTracker()
    tracker.update(hands(box_at(100, 100), box_at(300, 100)))
    tracker.update(hands(box_at(500, 300)))  # a third hand: tentative id 3
    tracker.reset()
    assert tracker.tracks == [] and tracker.frame_count == 0
    assert tracker.update(hands(box_at(100, 100))).track_id.tolist() == [1]
    # Ids belong to the instance: another tracker counts on its own.
    assert HandTracker().update(hands(box_at(0, 0))).track_id.tolist() == [1]


@pytest.mark.parametrize(
    "min_hits, output_tentative, expected_ids",
    [
        (2, False, [-1, 2, 2, 2]),  # second hand, born mid-stream: no id until its second match
        (3, False, [-1, -1, 2, 2]),
        (1, False, [2, 2, 2, 2]),  # confirmed at once
        (3, True, [2, 2, 2, 2]),  # tentative ids requested
    ],
)
def test_min_hits(min_hits, output_tentative, expected_ids):
    tracker = HandTracker(TrackerConfig(track_min_hits=min_hits, output_tentative=output_tentative))
    tracker.update(hands(box_at(100, 100)))
    got = [int(tracker.update(hands(box_at(100, 100), box_at(300 + t, 300))).track_id[1]) for t in range(4)]
    assert got == expected_ids


def test_single_frame_false_positive_never_gets_an_id():
    tracker = HandTracker()
    tracker.update(hands(box_at(100, 100)))
    out = tracker.update(hands(box_at(101, 100), box_at(400, 400)))
    assert out.track_id.tolist() == [1, -1]
    tracker.update(hands(box_at(102, 100)))
    assert [t.track_id for t in tracker.tracks] == [1]  # the tentative track died at its first miss


@pytest.mark.parametrize(
    "high, low, low_score, expected",
    [
        (0.5, 0.1, 0.3, 1),  # ByteTrack: a low-score detection continues the track
        (0.5, 0.1, 0.05, -1),  # below low_score_threshold: ignored
        (0.5, 0.5, 0.3, -1),  # second pass disabled (low == high)
    ],
)
def test_low_score_second_pass(high, low, low_score, expected):
    tracker = HandTracker(TrackerConfig(high_score_threshold=high, low_score_threshold=low))
    tracker.update(hands(box_at(100, 100)))
    out = tracker.update(hands(box_at(102, 100), score=low_score))
    assert out.track_id.tolist() == [expected]


def test_low_score_detection_does_not_start_a_track():
    tracker = HandTracker(TrackerConfig(track_min_hits=1))
    for _ in range(3):
        assert tracker.update(hands(box_at(100, 100), score=0.3)).track_id.tolist() == [-1]
    assert tracker.tracks == []


def test_hand_that_turns_back_is_recovered():
    # Fast hand (half its size per frame) that reverses and misses one detection: the
    # constant-velocity prediction overshoots, the last observation still matches.
    tracker = HandTracker()
    xs = [100, 130, 160, 190, 220, None, 200, 170, 140]
    ids = []
    for x in xs:
        out = tracker.update(hands(box_at(x, 100)) if x is not None else HandResults.empty())
        ids += out.track_id.tolist()
    assert set(ids) == {1}


def test_update_does_not_modify_input_and_keeps_order():
    tracker = HandTracker()
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 100, (2, 21, 3)).astype(np.float32)
    kp[..., 2] = 1.0
    dets = HandResults(xyxy=[box_at(100, 100), box_at(300, 100)], keypoints=kp, gesture=[1, 2],
                       gesture_score=[0.9, 0.8], handedness=[0, 1])
    before = {k: getattr(dets, k).copy() for k in ("xyxy", "keypoints", "gesture", "track_id")}
    for _ in range(3):
        out = tracker.update(dets)
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(dets, k), v)
    np.testing.assert_array_equal(out.xyxy, dets.xyxy)
    assert out.gesture.tolist() == [1, 2] and out.handedness.tolist() == [0, 1]


def test_tracks_expose_what_tracking_mode_needs():
    tracker = HandTracker()
    kp = np.zeros((1, 21, 3), np.float32)
    kp[0, :, :2] = np.linspace(80, 120, 42).reshape(21, 2)
    kp[0, :, 2] = 1.0
    for t in range(6):
        moved = kp.copy()
        moved[0, :, 0] += 4 * t
        tracker.update(HandResults(xyxy=[box_at(100 + 4 * t, 100)], score=[0.9], keypoints=moved, gesture=[3],
                                   gesture_score=[0.9], handedness=[1]))
    (track,) = tracker.confirmed_tracks()
    before = track.mean.copy()
    predicted = track.predicted_xyxy()
    np.testing.assert_array_equal(track.mean, before)  # asking does not move the track
    assert predicted[0] > track.xyxy[0]  # the prediction keeps moving right
    np.testing.assert_allclose(track.velocity, [4.0, 0.0], atol=0.5)
    assert track.keypoints.shape == (21, 3) and track.smoothed_keypoints.shape == (21, 3)
    assert track.gesture == 3 and track.handedness == 1 and len(track.gesture_history) == 5
    assert track.score == pytest.approx(0.9)
    # Lost tracks are not offered for landmark following.
    tracker.update(HandResults.empty())
    assert tracker.confirmed_tracks() == [] and len(tracker.active_tracks()) == 1


def test_track_rows_stay_consistent_through_births_and_deaths():
    # Random misses, births and removals reshuffle the per-track arrays; every output id
    # must still point at the track that holds this very detection and its keypoints.
    gt = synthetic_tracks(seed=3, num_frames=80, num_hands=4, gap_rate=0.05, max_gap=6)
    dets = noisy_detections(gt, seed=3, miss_rate=0.2, false_positives_per_frame=0.3)
    tracker = HandTracker(TrackerConfig(track_min_hits=1, smooth_keypoints=False))
    for frame in dets:
        kp = np.zeros((len(frame), 21, 3), np.float32)
        kp[:, :, :2] = frame.xyxy[:, None, :2]  # keypoints that identify their detection
        kp[:, :, 2] = 1.0
        frame = HandResults(xyxy=frame.xyxy, score=frame.score, keypoints=kp)
        out = tracker.update(frame)
        by_id = {t.track_id: t for t in tracker.tracks}
        assert len(by_id) == len(tracker.tracks)
        for i in np.flatnonzero(out.track_id >= 0):
            track = by_id[int(out.track_id[i])]
            np.testing.assert_allclose(track.last_xyxy, frame.xyxy[i], rtol=1e-6)
            np.testing.assert_allclose(track.keypoints, kp[i], rtol=1e-6)
            assert track.time_since_update == 0
        np.testing.assert_array_equal(out.keypoints, kp)  # smoothing off: keypoints untouched


def test_tracker_smooths_keypoints_and_gestures():
    rng = np.random.default_rng(0)
    truth = rng.uniform(100, 200, (21, 2))
    tracker = HandTracker(TrackerConfig(smooth_keypoints=True))
    raw_err, out_err, gestures = [], [], []
    for t in range(60):
        kp = np.concatenate([truth + rng.normal(0, 1.5, (21, 2)), np.ones((21, 1))], axis=1)[None]
        flicker = 4 if t % 7 == 3 else 2  # a one-frame wrong gesture every 7 frames
        out = tracker.update(HandResults(xyxy=[[90, 90, 210, 210]], keypoints=kp, gesture=[flicker],
                                         gesture_score=[0.9]))
        gestures.append(int(out.gesture[0]))
        if t >= 10:
            raw_err.append(np.abs(kp[0, :, :2] - truth).mean())
            out_err.append(np.abs(out.keypoints[0, :, :2] - truth).mean())
    assert np.mean(out_err) < 0.7 * np.mean(raw_err)
    assert set(gestures[5:]) == {2}


def test_absent_keypoints_are_not_smoothed():
    # Keypoint 8 leaves the frame (v=0 at 0, 0) for a few frames and comes back elsewhere:
    # it must be passed through while absent and restart without lag.
    tracker = HandTracker()
    kp = np.zeros((1, 21, 3), np.float32)
    kp[0, :, :2] = 150.0
    kp[0, :, 2] = 2.0
    for t in range(12):
        frame = kp.copy()
        if 5 <= t < 8:
            frame[0, 8] = 0.0
        if t >= 8:
            frame[0, 8, :2] = 190.0
        out = tracker.update(HandResults(xyxy=[[100, 100, 200, 200]], keypoints=frame))
        np.testing.assert_allclose(out.keypoints[0, 8], frame[0, 8], atol=1e-4)
        np.testing.assert_allclose(out.keypoints[0, 0], [150.0, 150.0, 2.0], atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Smoothing
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "min_cutoff, beta, max_ratio",
    [
        (1.0, 10.0, 0.6),  # defaults: jitter at most 60% of the raw
        (0.3, 5.0, 0.5),  # smoother setting
        (5.0, 10.0, 0.85),  # light smoothing still helps
    ],
)
def test_one_euro_reduces_jitter(min_cutoff, beta, max_ratio):
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=min_cutoff, beta=beta)
    raw = 50.0 + rng.normal(0, 1.0, (120, 21, 2))  # a still hand of size 100 with 1 px noise
    out = np.stack([f(x, scale=100.0) for x in raw])
    assert out[20:].std() < max_ratio * raw[20:].std()
    assert abs(out[20:].mean() - 50.0) < 0.2


@pytest.mark.parametrize(
    "step, frames",
    [
        (10.0, 4),  # 0.1 hand size: within 5% after 4 frames
        (50.0, 3),  # half a hand size
        (100.0, 2),  # a whole hand size
    ],
)
def test_one_euro_follows_a_step(step, frames):
    f = OneEuroFilter()
    for _ in range(30):
        f(np.zeros((21, 2)), scale=100.0)
    for _ in range(frames):
        y = f(np.full((21, 2), step), scale=100.0)
    assert np.abs(y - step).max() < 0.05 * step


def test_one_euro_uses_timestamps():
    # The same samples at 60 fps are smoothed harder per sample than at 15 fps.
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 1.0, (100, 21, 2))
    spread = {}
    for fps in (15.0, 60.0):
        f = OneEuroFilter()
        spread[fps] = np.stack([f(x, timestamp=i / fps, scale=100.0) for i, x in enumerate(raw)])[20:].std()
    assert spread[60.0] < spread[15.0]


def test_one_euro_kernel_equals_the_numpy_step():
    """The tracker's compiled One-Euro step (kernels.one_euro_rows) computes what
    one_euro_step does, with the tracker's rules for absent points (passed through now,
    restarted after an absence), per-track time steps and rows matched out of order."""
    from shared.tracking.kernels import one_euro_rows

    rng = np.random.default_rng(0)
    n_tracks, n_hands = 5, 4
    kp = rng.uniform(0, 400, (n_hands, 21, 3)).astype(np.float32)
    kp[..., 2] = (rng.random((n_hands, 21)) > 0.2).astype(np.float32)  # some points absent now
    xyxy = np.array([[10, 20, 110, 140], [200, 200, 260, 250], [0, 0, 0.5, 0.5], [50, 60, 350, 400]], np.float32)
    smoothed = rng.uniform(0, 400, (n_tracks, 21, 3))
    smoothed[..., 2] = rng.random((n_tracks, 21)) > 0.2  # ... and some were absent before
    velocity = rng.normal(0, 1, (n_tracks, 21, 2))
    last_raw = np.zeros((n_tracks, 21, 3))
    kp_time = np.array([0.9, 0.95, 0.96, 0.9, 0.5])
    rows, dets, now = np.array([4, 0, 2], np.int64), np.array([1, 3, 0], np.int64), 1.0
    settings = dict(min_cutoff=0.7, beta=8.0, d_cutoff=1.3)

    # The numpy reference, as the tracker applied it before the kernel.
    box = xyxy[dets].astype(np.float64)
    scale = np.sqrt(np.maximum((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]), 1.0))
    x_hat, dx_hat = one_euro_step(kp[dets, :, :2].astype(np.float64), smoothed[rows, :, :2], velocity[rows],
                                  dt=now - kp_time[rows], scale=scale, **settings)
    both = ((kp[dets, :, 2] > 0) & (smoothed[rows, :, 2] > 0))[..., None]
    expected_xy = np.where(both, x_hat, kp[dets, :, :2])
    expected_velocity = np.where(both, dx_hat, 0.0)
    untouched = np.setdiff1d(np.arange(n_tracks), rows)
    before = (smoothed.copy(), velocity.copy(), kp_time.copy())

    out = kp.copy()
    one_euro_rows(kp, xyxy, rows, dets, now, kp_time, smoothed, velocity, last_raw,
                  settings["min_cutoff"], settings["beta"], settings["d_cutoff"], out)
    np.testing.assert_allclose(smoothed[rows, :, :2], expected_xy, rtol=1e-6)
    np.testing.assert_allclose(smoothed[rows, :, 2], kp[dets, :, 2])
    np.testing.assert_allclose(velocity[rows], expected_velocity, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(out[dets, :, :2], expected_xy, rtol=1e-6)
    np.testing.assert_array_equal(out[2], kp[2])  # a hand not in `dets` keeps its points
    np.testing.assert_array_equal(last_raw[rows], kp[dets])
    assert (kp_time[rows] == now).all()
    np.testing.assert_array_equal(smoothed[untouched], before[0][untouched])
    np.testing.assert_array_equal(velocity[untouched], before[1][untouched])
    np.testing.assert_array_equal(kp_time[untouched], before[2][untouched])


def test_kernels_work_where_no_numba_cache_dir_is_writable():
    """A read-only install with no writable cache dir: numba cannot cache the machine code and
    raises at decoration; the kernels then compile per process instead of failing the import.
    (Simulated by leaving numba only the NUMBA_CACHE_DIR locator, with that variable unset.)"""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["NUMBA_CACHE_LOCATOR_CLASSES"] = "UserProvidedCacheLocator"
    code = ("from shared.tracking import HandTracker, kernels; from shared.results import HandResults; "
            "t = HandTracker(); out = t.update(HandResults(xyxy=[[0, 0, 50, 50]])); "
            "print(type(kernels.one_euro_rows._cache).__name__, out.track_id.tolist())")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["NullCache", "[1]"]


@pytest.mark.parametrize(
    "sequence, window, expected",
    [
        ([(1, 0.9)] * 3 + [(4, 0.9)], 5, (1, 0.675)),  # one-frame flicker is outvoted
        ([(1, 0.9)] * 2 + [(4, 0.9)] * 3, 5, (4, 0.54)),  # a sustained change wins
        ([(1, 0.9), (4, 0.9)], 1, (4, 0.9)),  # window 1 = no smoothing
        ([(1, 0.3), (1, 0.3), (2, 0.9)], 3, (2, 0.3)),  # score-weighted: 0.9 > 0.3 + 0.3
        ([(1, 0.9), (-1, 0.0)], 5, (1, 0.9)),  # unknown gesture frames are skipped
    ],
)
def test_gesture_smoother(sequence, window, expected):
    smoother = GestureSmoother(window)
    for gesture, score in sequence:
        result = smoother.update(gesture, score)
    assert result[0] == expected[0]
    assert result[1] == pytest.approx(expected[1])


def test_gesture_smoother_with_probabilities():
    smoother = GestureSmoother(window=3)
    smoother.update(-1, 0.0, probs=[0.1, 0.5, 0.4, 0.0, 0.0])
    gesture, score = smoother.update(-1, 0.0, probs=[0.1, 0.3, 0.6, 0.0, 0.0])
    assert gesture == 2 and score == pytest.approx(0.5)  # mean probs [0.1, 0.4, 0.5, 0, 0]


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------

def test_tracker_config_flags():
    parser = argparse.ArgumentParser()
    add_config_args(parser, TrackerConfig)
    args = parser.parse_args(["--track_max_age", "5", "--track_iou_threshold", "0.4", "--no-smooth_keypoints"])
    cfg = load_config(TrackerConfig, overrides=args)
    assert (cfg.track_max_age, cfg.track_iou_threshold, cfg.smooth_keypoints) == (5, 0.4, False)
    assert cfg.track_min_hits == TrackerConfig().track_min_hits
    assert TrackerConfig().track_max_age == 3 and TrackerConfig().track_iou_threshold == 0.3  # seed defaults


@pytest.mark.parametrize(
    "kwargs",
    [
        {"track_iou_threshold": 1.5},  # IoU is at most 1
        {"track_min_hits": 0},  # a track needs at least one hit
        {"low_score_threshold": 0.6, "high_score_threshold": 0.5},  # low above high
    ],
)
def test_tracker_config_rejects_bad_values(kwargs):
    with pytest.raises(UserError, match=next(iter(kwargs))):
        TrackerConfig(**kwargs)


def test_gesture_probs_must_match_hands():
    with pytest.raises(ValueError, match="gesture_probs"):
        HandTracker().update(hands(box_at(100, 100)), gesture_probs=np.zeros((2, 5)))


# ---------------------------------------------------------------------------------------------
# MOT evaluation
# ---------------------------------------------------------------------------------------------

def test_evaluate_tracking_perfect_and_switched():
    # Two hands far apart, moving right.
    gt = [FrameBoxes(ids=[1, 2], xyxy=[box_at(100 + 3 * t, 100), box_at(100 + 3 * t, 300)]) for t in range(40)]
    perfect = evaluate_tracking([gt], [gt])["overall"]
    assert perfect["idf1"] == pytest.approx(1.0) and perfect["mota"] == pytest.approx(1.0)
    assert perfect["id_switches"] == 0 and perfect["gt_track_frames"] == 80
    # The tracker swaps the two ids half-way: 2 switches, identity halved.
    swapped = [FrameBoxes(ids=f.ids[::-1] if i >= 20 else f.ids, xyxy=f.xyxy) for i, f in enumerate(gt)]
    result = evaluate_tracking([gt], [swapped])["overall"]
    assert result["id_switches"] == 2 and result["idf1"] == pytest.approx(0.5)
    assert result["mota"] == pytest.approx(1 - 2 / 80)


def test_tracker_on_noisy_moving_boxes():
    gts = [synthetic_tracks(seed=s, num_frames=100, num_hands=3) for s in range(3)]
    hyps = [run_tracker(HandTracker(), noisy_detections(g, seed=10 + s)) for s, g in enumerate(gts)]
    result = evaluate_tracking(gts, hyps)["overall"]
    assert result["idf1"] >= 0.85
    assert result["id_switches_per_100"] <= 1.0


def test_tracker_on_rendered_sequences():
    synthetic = pytest.importorskip("shared.data.synthetic")
    cfg = synthetic.SyntheticConfig(image_size=160, max_hands=3)
    gts = [gt_from_sequence(synthetic.render_sequence(seed=0, index=i, num_frames=40, cfg=cfg)) for i in range(2)]
    assert sum(len(f.ids) for gt in gts for f in gt) > 0
    hyps = [run_tracker(HandTracker(), noisy_detections(gt, seed=i, miss_rate=0.05, low_score_rate=0.05,
                                                        image_size=(160, 160)))
            for i, gt in enumerate(gts)]
    result = evaluate_tracking(gts, hyps)["overall"]
    assert result["idf1"] >= 0.85
    assert result["id_switches_per_100"] <= 2.0
