"""The hand model every stage agrees on: gesture names, keypoint order, skeleton.

Keypoint order is MediaPipe's: 0 wrist, 1-4 thumb, 5-8 index, 9-12 middle,
13-16 ring, 17-20 pinky (base to tip within each finger).
"""

from __future__ import annotations

GESTURES: tuple[str, ...] = ("2_hands", "fist", "normal_hand", "pinch", "pointer")
NUM_GESTURES = len(GESTURES)
GESTURE_TO_ID = {name: i for i, name in enumerate(GESTURES)}

# A dataset label that means "a hand, gesture unknown": written by the teacher (autolabel) for
# the second hand of a one-gesture photo and for hands of folders with no mapped gesture. It
# teaches the detector and the keypoints and is ignored by every gesture loss. It is a label
# id (the last), never a gesture a model predicts.
UNKNOWN_HAND = "hand"
UNKNOWN_HAND_ID = NUM_GESTURES
LABEL_NAMES: tuple[str, ...] = GESTURES + (UNKNOWN_HAND,)

# Gesture ids in results (HandResults.gesture) that are not a class:
GESTURE_NONE = -1  # no gesture model ran (JSON null)
GESTURE_UNKNOWN = -2  # the gesture model ran, its best score was below the threshold (JSON "unknown")

NUM_KEYPOINTS = 21
KEYPOINT_NAMES: tuple[str, ...] = (
    "wrist",
    "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip",
    "index_mcp", "index_pip", "index_dip", "index_tip",
    "middle_mcp", "middle_pip", "middle_dip", "middle_tip",
    "ring_mcp", "ring_pip", "ring_dip", "ring_tip",
    "pinky_mcp", "pinky_pip", "pinky_dip", "pinky_tip",
)
FINGERS: dict[str, tuple[int, ...]] = {
    "thumb": (1, 2, 3, 4),
    "index": (5, 6, 7, 8),
    "middle": (9, 10, 11, 12),
    "ring": (13, 14, 15, 16),
    "pinky": (17, 18, 19, 20),
}
FINGERTIPS: tuple[int, ...] = (4, 8, 12, 16, 20)

# Bones to draw: each finger from the wrist, plus the palm's knuckle line.
SKELETON: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (2, 3), (3, 4),
    (0, 5), (5, 6), (6, 7), (7, 8),
    (5, 9), (9, 10), (10, 11), (11, 12),
    (9, 13), (13, 14), (14, 15), (15, 16),
    (13, 17), (0, 17), (17, 18), (18, 19), (19, 20),
)

# Left/right symmetry does not permute hand keypoints: a mirrored hand keeps its order.
FLIP_IDX: tuple[int, ...] = tuple(range(NUM_KEYPOINTS))

HANDEDNESS: tuple[str, ...] = ("left", "right")

# Keypoint visibility flags, as in COCO / YOLO-pose.
VIS_ABSENT = 0  # not labelled or outside the image
VIS_OCCLUDED = 1  # labelled but hidden
VIS_VISIBLE = 2
