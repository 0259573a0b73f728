"""Synthetic hands: the embedded default dataset and the test data of every later stage.

`render_image(seed, index)` draws one still image with 0-4 labelled hands; the same
(seed, index) always gives byte-identical pixels and labels, whatever else was rendered
before (each image has its own `SeedSequence([seed, stream, index])`).
`render_sequence(seed, index, num_frames)` draws a short video: hands move on smooth
paths, sometimes crossing, enter and leave the frame and change gesture, with ground-truth
track ids; `write_mot` / `read_mot` store those tracks in MOTChallenge format.

The hands are a kinematic 21-joint model posed per gesture and drawn with shading
(`shared.data.synthetic_render`). Label conventions:

- box: tight box around what is drawn of the hand (palm polygon + finger capsules; not the
  forearm), amodal (an occluder does not shrink it), clipped to the image.
- keypoints: v=2 visible; v=1 inside the image but covered (an occluder, another hand, or
  the hand itself, e.g. fingertips curled behind the palm of a fist seen from the back);
  v=0 outside the image, with x=y=0. Every v>0 keypoint lies inside the image and its box.
- 2_hands: two hands side by side (touching or slightly overlapping) labelled as ONE object
  whose box covers both; its 21 keypoints and handedness are those of the hand on the
  image's left (smaller palm-centroid x). A pair counts as one hand for min/max_hands.
- handedness: 0 left, 1 right (`shared.hand.HANDEDNESS`), the hand's anatomical side. Left
  hands are the mirror image of the right-hand model; the back of a hand is seen with
  probability `back_view_prob`, so side cannot be read from the silhouette alone.
- a hand whose box is less than `min_visible_fraction` inside the frame is drawn but not
  labelled (slivers at the border, hands entering or leaving a sequence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.config import option
from shared.data.labels import HandLabel
from shared.data.synthetic_render import (
    Appearance,
    HandGeometry,
    HandShape,
    Pose,
    View,
    apply_camera_effects,
    blend_joints,
    build_geometry,
    draw_hand,
    draw_occluder,
    hand_joints,
    keypoint_visibility,
    render_background,
    rotation,
    sample_appearance,
    sample_pose,
    sample_shape,
    sample_skin,
)
from shared.errors import UserError
from shared.hand import GESTURE_TO_ID, GESTURES

SINGLE_GESTURES = tuple(g for g in GESTURES if g != "2_hands")
PAIR_ID = GESTURE_TO_ID["2_hands"]
# Gestures of the two hands inside a 2_hands object (open palms are the common case).
_PAIR_MEMBER_GESTURES = ("normal_hand", "fist", "pointer", "pinch")
_PAIR_MEMBER_P = np.array([0.55, 0.15, 0.15, 0.15])
# Wrist -> tip of the extended middle finger of the default hand, palm units.
_HAND_LENGTH_UNITS = 2.03
# Random streams: a still image and a sequence with the same (seed, index) must differ.
_STILL, _SEQUENCE = 0, 1


@dataclass
class SyntheticConfig:
    """What the synthetic hand generator draws. Probabilities are per image (still) or per
    sequence/track (video) unless stated."""

    image_size: int = option(320, "square image side in pixels (width/height override it when > 0)")
    width: int = option(0, "image width in pixels; 0 = image_size")
    height: int = option(0, "image height in pixels; 0 = image_size")
    min_hands: int = option(0, "fewest labelled hands per still image (a 2_hands pair counts as one)")
    max_hands: int = option(4, "most labelled hands per still image; also the most tracks in a sequence")
    gesture_weights: list[float] = option([1.0, 1.0, 1.0, 1.0, 1.0],
                                          "sampling weights over the gestures 2_hands, fist, normal_hand, pinch, "
                                          "pointer")
    min_hand_size: float = option(0.15, "smallest hand length (wrist to middle fingertip of an open hand) as a "
                                        "fraction of the shorter image side")
    max_hand_size: float = option(0.55, "largest hand length, same unit; divided by sqrt(number of hands) so that "
                                        "several hands fit")
    upright_prob: float = option(0.5, "probability that a hand is roughly upright (roll within about +-35 deg)")
    max_roll: float = option(180.0, "in-plane rotation range (+- degrees) of the hands that are not upright")
    max_tilt: float = option(40.0, "out-of-plane rotation range (+- degrees) about the finger axis; pitch uses "
                                   "3/4 of it")
    back_view_prob: float = option(0.35, "probability of seeing the back of a hand rather than its palm")
    max_aspect: float = option(1.15, "largest image-axis stretch of a hand (aspect drawn in [1/x, x])")
    occlusion_prob: float = option(0.25, "probability that a labelled hand gets a foreground object over part of "
                                         "it (sequences: one static object in the scene)")
    blur_prob: float = option(0.3, "probability of defocus or motion blur on the whole image")
    noise_prob: float = option(0.5, "probability of sensor noise")
    clutter_prob: float = option(0.5, "probability of random clutter shapes in the background")
    arm_prob: float = option(0.85, "probability of drawing a forearm (bare or in a sleeve) behind a hand")
    truncation_prob: float = option(0.1, "still images: probability that a hand may be placed partly outside "
                                          "the frame")
    max_overlap: float = option(0.1, "still images: largest intersection / smaller box area between two "
                                     "labelled hands")
    min_visible_fraction: float = option(0.3, "a hand whose box lies less than this fraction inside the image is "
                                              "drawn but not labelled")
    enter_leave_prob: float = option(0.5, "sequences: probability that a track enters mid-sequence (and, "
                                          "separately, that it leaves)")
    gesture_change_rate: float = option(0.015, "sequences: chance per frame that a hand starts changing gesture")
    crossing_prob: float = option(0.5, "sequences: probability that a second track is steered across the first")

    def __post_init__(self) -> None:
        if self.image_size < 32 or self.width < 0 or self.height < 0 or 0 < self.width < 32 or 0 < self.height < 32:
            raise UserError(f"synthetic config: image size {self.width or self.image_size}x"
                            f"{self.height or self.image_size} is too small; use at least 32 pixels")
        if not 0 <= self.min_hands <= self.max_hands:
            raise UserError(f"synthetic config: need 0 <= min_hands <= max_hands, got {self.min_hands}, "
                            f"{self.max_hands}")
        weights = np.asarray(self.gesture_weights, dtype=np.float64)
        if weights.shape != (len(GESTURES),) or (weights < 0).any() or weights.sum() <= 0:
            raise UserError(f"synthetic config: gesture_weights must be {len(GESTURES)} non-negative numbers "
                            f"(for {', '.join(GESTURES)}) with a positive sum, got {self.gesture_weights}")
        if not 0 < self.min_hand_size <= self.max_hand_size <= 2:
            raise UserError(f"synthetic config: need 0 < min_hand_size <= max_hand_size <= 2, got "
                            f"{self.min_hand_size}, {self.max_hand_size}")
        for name in ("upright_prob", "back_view_prob", "occlusion_prob", "blur_prob", "noise_prob", "clutter_prob",
                     "arm_prob", "truncation_prob", "max_overlap", "min_visible_fraction", "enter_leave_prob",
                     "gesture_change_rate", "crossing_prob"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise UserError(f"synthetic config: {name} must be in [0, 1], got {value}")
        if self.max_aspect < 1:
            raise UserError(f"synthetic config: max_aspect must be >= 1, got {self.max_aspect}")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width or self.image_size, self.height or self.image_size


@dataclass
class SyntheticSample:
    image: np.ndarray  # [H, W, 3] uint8 BGR
    labels: list[HandLabel]  # normalised YOLO-pose
    handedness: list[int]  # per label: 0 left, 1 right


@dataclass
class SequenceFrame:
    image: np.ndarray  # [H, W, 3] uint8 BGR
    labels: list[HandLabel]
    track_ids: list[int]  # per label, stable over the sequence, 1-based
    handedness: list[int]


# ---------------------------------------------------------------------------------------------
# Hands and objects (one labelled object = one hand, or two for 2_hands)
# ---------------------------------------------------------------------------------------------

@dataclass
class _HandSpec:
    """One hand's identity and viewpoint; posing and placing it gives a HandGeometry."""

    shape: HandShape
    app: Appearance
    left: bool
    yaw: float  # radians, includes pi for a back view
    pitch: float
    aspect: float
    persp: float


def _sample_view_params(rng: np.random.Generator, cfg: SyntheticConfig, back: bool | None = None,
                        left: bool = False, gesture: str = "") -> tuple[float, float, float, float]:
    tilt = math.radians(cfg.max_tilt)
    if back is None:
        back = bool(rng.random() < cfg.back_view_prob)
    yaw = rng.uniform(-tilt, tilt)
    if gesture == "pinch":
        # Turn the thumb side towards the camera so the thumb-index ring shows, from palm or back.
        toward_thumb = -1.0 if left == back else 1.0
        yaw = toward_thumb * rng.uniform(0.2, 0.9) * tilt
    yaw += math.pi if back else 0.0
    # Pitch is asymmetric: tilting the fingertips away from the camera by much makes the folded
    # phalanges of a fist read as short raised fingers.
    pitch = rng.uniform(-0.3 * tilt, 0.75 * tilt)
    aspect = math.exp(rng.uniform(-1, 1) * math.log(cfg.max_aspect))
    return yaw, pitch, aspect, float(rng.uniform(0.0, 0.12))


def _sample_roll(rng: np.random.Generator, cfg: SyntheticConfig) -> float:
    if rng.random() < cfg.upright_prob:
        return float(np.clip(rng.normal(0.0, math.radians(18)), -math.radians(35), math.radians(35)))
    return float(rng.uniform(-1, 1) * math.radians(cfg.max_roll))


def _sample_hand_spec(rng: np.random.Generator, cfg: SyntheticConfig, left: bool | None = None,
                      back: bool | None = None, skin: np.ndarray | None = None,
                      shape: HandShape | None = None, gesture: str = "") -> _HandSpec:
    left = bool(rng.random() < 0.5) if left is None else left
    yaw, pitch, aspect, persp = _sample_view_params(rng, cfg, back, left, gesture)
    return _HandSpec(shape=shape if shape is not None else sample_shape(rng),
                     app=sample_appearance(rng, skin=skin, arm_prob=cfg.arm_prob),
                     left=left, yaw=yaw, pitch=pitch, aspect=aspect, persp=persp)


def _geometry(spec: _HandSpec, joints: np.ndarray, roll: float, scale: float, center: np.ndarray,
              d_yaw: float = 0.0, d_pitch: float = 0.0) -> HandGeometry:
    view = View(rot=rotation(roll, spec.pitch + d_pitch, spec.yaw + d_yaw), scale=scale,
                center=np.asarray(center, np.float64), left=spec.left, aspect=spec.aspect, persp=spec.persp)
    return build_geometry(spec.shape, joints, view, sleeve_start=spec.app.sleeve_start)


@dataclass
class _Object:
    """A labelled object placed in an image: its hands in drawing order and which one is labelled."""

    cls: int
    hands: list[tuple[HandGeometry, Appearance, bool]]  # (geometry, appearance, is_left)
    key: int = 0  # index into hands of the hand whose keypoints/handedness label the object
    track_id: int = 0
    depth: float = 0.0

    @property
    def box(self) -> np.ndarray:
        boxes = np.stack([g.box for g, _, _ in self.hands])
        return np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])

    def shifted(self, d: np.ndarray) -> _Object:
        return _Object(self.cls, [(g.shifted(d), a, lf) for g, a, lf in self.hands], self.key, self.track_id,
                       self.depth)


def _key_hand(hands: list[tuple[HandGeometry, Appearance, bool]]) -> int:
    """The hand on the image's left (smaller palm-centroid x) labels a 2_hands object."""
    palm_x = [g.kp[[0, 5, 9, 13, 17], 0].mean() for g, _, _ in hands]
    return int(np.argmin(palm_x))


def _pair_specs(rng: np.random.Generator, cfg: SyntheticConfig) -> list[_HandSpec]:
    """Two hands of one person: same shape and skin, opposite sides, both palms or both backs.
    A person facing the camera with palms out shows the right hand on the image's left."""
    shape, skin = sample_shape(rng), sample_skin(rng)
    back = bool(rng.random() < cfg.back_view_prob)
    right_first = not back
    if rng.random() < 0.15:
        right_first = not right_first
    specs = []
    for slot in range(2):
        is_left = (slot == 1) if right_first else (slot == 0)
        spec = _sample_hand_spec(rng, cfg, left=is_left, back=back, skin=skin, shape=shape)
        specs.append(spec)
    specs[1].app.sleeve = specs[0].app.sleeve
    return specs


def _place_pair(rng: np.random.Generator, a: HandGeometry, b: HandGeometry) -> HandGeometry:
    """Shift hand b (both anchored at the origin) to sit right of hand a, touching or overlapping a little."""
    wa, wb = a.box[2] - a.box[0], b.box[2] - b.box[0]
    ha, hb = a.box[3] - a.box[1], b.box[3] - b.box[1]
    gap = rng.uniform(-0.22, 0.06) * (wa + wb) / 2
    dx = a.box[2] - b.box[0] + gap
    dy = (a.box[1] + a.box[3]) / 2 - (b.box[1] + b.box[3]) / 2 + rng.uniform(-0.15, 0.15) * (ha + hb) / 2
    return b.shifted(np.array([dx, dy]))


def _pair_poses(rng: np.random.Generator, specs: list[_HandSpec]) -> list[Pose]:
    return [sample_pose(rng, str(rng.choice(_PAIR_MEMBER_GESTURES, p=_PAIR_MEMBER_P)), s.shape) for s in specs]


def _make_object(rng: np.random.Generator, cls: int, hand_len_px: float, cfg: SyntheticConfig) -> _Object:
    """One object anchored near the origin (its first hand's wrist at (0, 0))."""
    scale = hand_len_px / _HAND_LENGTH_UNITS
    if cls != PAIR_ID:
        spec = _sample_hand_spec(rng, cfg, gesture=GESTURES[cls])
        pose = sample_pose(rng, GESTURES[cls], spec.shape)
        geo = _geometry(spec, hand_joints(spec.shape, pose), _sample_roll(rng, cfg), scale, np.zeros(2))
        return _Object(cls, [(geo, spec.app, spec.left)])
    specs = _pair_specs(rng, cfg)
    poses = _pair_poses(rng, specs)
    base_roll = rng.normal(0.0, math.radians(10))
    geos = []
    for slot, (spec, pose) in enumerate(zip(specs, poses)):
        lean = rng.uniform(0, math.radians(22)) * (-1 if slot == 0 else 1)  # tops lean towards each other
        s = scale * rng.uniform(0.93, 1.07)
        geos.append(_geometry(spec, hand_joints(spec.shape, pose), base_roll + lean, s, np.zeros(2)))
    geos[1] = _place_pair(rng, geos[0], geos[1])
    hands = [(g, s.app, s.left) for g, s in zip(geos, specs)]
    return _Object(cls, hands, key=_key_hand(hands))


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box's area."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    area = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(iw * ih / max(area, 1e-9))


def _place_objects(rng: np.random.Generator, cfg: SyntheticConfig, classes: np.ndarray, w: int, h: int
                   ) -> list[_Object]:
    """Sample and place objects without much overlap, shrinking them when they do not fit."""
    side = min(w, h)
    n = len(classes)
    hi = max(cfg.min_hand_size, cfg.max_hand_size / math.sqrt(max(n, 1)))
    placed: list[_Object] = []
    for cls in classes:
        for level in range(6):
            shrink = 0.8 ** level
            frac = rng.uniform(cfg.min_hand_size, hi) * shrink
            if cls == PAIR_ID:
                frac *= 0.8  # a pair is about two hands wide
            obj = _make_object(rng, int(cls), frac * side, cfg)
            box = obj.box
            bw, bh = box[2] - box[0], box[3] - box[1]
            outside = rng.uniform(0.1, 0.4) if rng.random() < cfg.truncation_prob else 0.0
            lo = np.array([-box[0] - outside * bw, -box[1] - outside * bh])
            hi_t = np.array([w - box[2] + outside * bw, h - box[3] + outside * bh])
            if (hi_t < lo).any():
                continue
            for _ in range(12):
                t = rng.uniform(lo, hi_t)
                moved = box + np.concatenate([t, t])
                if all(_overlap(moved, p.box) <= cfg.max_overlap for p in placed):
                    placed.append(obj.shifted(t))
                    break
            else:
                continue
            break
    return placed


# ---------------------------------------------------------------------------------------------
# Drawing a scene and labelling it
# ---------------------------------------------------------------------------------------------

def _light(rng: np.random.Generator) -> np.ndarray:
    ang = rng.uniform(0, 2 * np.pi)
    return np.array([math.cos(ang), math.sin(ang)])


def _arm_crosses(geo: HandGeometry, box: np.ndarray, w: int, h: int) -> bool:
    """Whether a forearm (a thick segment running off the image) passes over `box` inside the image."""
    r = geo.arm_r[1]
    t = np.linspace(0.0, 1.0, 48)[:, None]
    pts = geo.arm_a + (geo.arm_b - geo.arm_a) * t * 0.2  # the first 10 palm lengths reach past any border
    pts = pts[(pts[:, 0] > -r) & (pts[:, 0] < w + r) & (pts[:, 1] > -r) & (pts[:, 1] < h + r)]
    if not len(pts):
        return False
    dx = np.maximum(np.maximum(box[0] - pts[:, 0], pts[:, 0] - box[2]), 0.0)
    dy = np.maximum(np.maximum(box[1] - pts[:, 1], pts[:, 1] - box[3]), 0.0)
    return bool((np.hypot(dx, dy) < r).any())


def _draw_order(objects: list[_Object], w: int, h: int) -> list[int]:
    """Back-to-front order: by depth, except that an object whose forearm runs across another
    object's hand goes behind it, so an arm never hides a whole labelled hand."""
    n = len(objects)
    before = [set() for _ in range(n)]  # before[j]: objects that must be drawn before j
    for i in range(n):
        for geo, app, _ in objects[i].hands:
            if not app.arm:
                continue
            for j in range(n):
                if j != i and _arm_crosses(geo, objects[j].box, w, h):
                    before[j].add(i)
    order: list[int] = []
    left = set(range(n))
    while left:
        ready = [k for k in left if not (before[k] & left)] or list(left)  # a cycle: fall back to depth
        k = min(ready, key=lambda m: (objects[m].depth, m))
        order.append(k)
        left.remove(k)
    return order


def _draw_objects(image: np.ndarray, parts: np.ndarray, objects: list[_Object], light: np.ndarray
                  ) -> list[list[int]]:
    """Draw objects back to front; returns each object's hand indices in the part map."""
    indices: list[list[int]] = [[] for _ in objects]
    hand_index = 0
    h, w = image.shape[:2]
    for i in _draw_order(objects, w, h):
        for geo, app, _ in objects[i].hands:
            draw_hand(image, parts, hand_index, geo, app, light)
            indices[i].append(hand_index)
            hand_index += 1
    return indices


def _label(obj: _Object, hand_index: int, parts: np.ndarray, cfg: SyntheticConfig) -> HandLabel | None:
    """The object's label, or None when too little of it is inside the image."""
    h, w = parts.shape
    box = obj.box
    area = (box[2] - box[0]) * (box[3] - box[1])
    clipped = np.clip(box, 0, [w, h, w, h])
    cw, ch = clipped[2] - clipped[0], clipped[3] - clipped[1]
    if cw < 2 or ch < 2 or cw * ch < cfg.min_visible_fraction * area:
        return None
    geo = obj.hands[obj.key][0]
    v = keypoint_visibility(geo.kp, parts, hand_index)
    kp = np.concatenate([geo.kp, v[:, None].astype(np.float64)], axis=1)  # [21, 3]
    return HandLabel.from_xyxy(obj.cls, clipped, w, h, keypoints_px=kp)


def _compose(background: np.ndarray, objects: list[_Object], light: np.ndarray, cfg: SyntheticConfig,
             occluders: list[tuple[np.random.Generator, np.ndarray]]
             ) -> tuple[np.ndarray, list[HandLabel], list[int], list[int]]:
    """Draw hands and occluders on a copy of `background`; label what is visible enough.

    Returns image, labels, handedness and the index into `objects` of each label."""
    image = background.copy()
    h, w = image.shape[:2]
    parts = np.zeros((h, w), np.uint16)
    hand_idx = _draw_objects(image, parts, objects, light)
    for occ in occluders:
        occ_rng, box = occ
        draw_occluder(occ_rng, image, parts, box)
    labels, handedness, which = [], [], []
    for i, obj in enumerate(objects):
        label = _label(obj, hand_idx[i][obj.key], parts, cfg)
        if label is None:
            continue
        labels.append(label)
        handedness.append(0 if obj.hands[obj.key][2] else 1)
        which.append(i)
    return image, labels, handedness, which


def _rng(seed: int, stream: int, index: int, *extra: int) -> np.random.Generator:
    # SeedSequence wants non-negative integers; wrap negatives deterministically.
    return np.random.default_rng([int(seed) % 2**63, stream, int(index) % 2**63, *extra])


def render_image(seed: int, index: int, cfg: SyntheticConfig | None = None) -> SyntheticSample:
    """One still image with `min_hands`..`max_hands` labelled hands, deterministic per (seed, index).

    Hands are placed without overlapping much (`max_overlap`), shrinking one that does not fit;
    with many hands on a small image a hand that still does not fit after five shrinks is left
    out (best effort; at 320x320 up to 4 hands always fit)."""
    cfg = cfg or SyntheticConfig()
    rng = _rng(seed, _STILL, index)
    w, h = cfg.size
    background = render_background(rng, h, w, cfg.clutter_prob)
    n = int(rng.integers(cfg.min_hands, cfg.max_hands + 1))
    weights = np.asarray(cfg.gesture_weights, np.float64)
    classes = rng.choice(len(GESTURES), size=n, p=weights / weights.sum())
    objects = _place_objects(rng, cfg, classes, w, h)
    for obj in objects:
        obj.depth = float(rng.random())
    occluders = []
    for obj in objects:
        if rng.random() < cfg.occlusion_prob:
            occluders.append((np.random.default_rng(rng.integers(2**63)), np.clip(obj.box, 0, [w, h, w, h])))
    image, labels, handedness, _ = _compose(background, objects, _light(rng), cfg, occluders)
    image = apply_camera_effects(rng, image, cfg.blur_prob, cfg.noise_prob)
    return SyntheticSample(image=image, labels=labels, handedness=handedness)


# ---------------------------------------------------------------------------------------------
# Sequences
# ---------------------------------------------------------------------------------------------

def _catmull_rom(times: np.ndarray, values: np.ndarray, t: float) -> np.ndarray:
    """Smooth (C1) interpolation through knots `values` [K, D] at increasing `times` [K]: a cubic
    Hermite spline whose tangents are finite differences in time (Catmull-Rom for uneven knots),
    so the speed does not jump at a knot when the knot spacing changes."""
    k = len(times)
    if k == 1 or t <= times[0]:
        return values[0]
    if t >= times[-1]:
        return values[-1]
    i = int(np.searchsorted(times, t, side="right") - 1)

    def tangent(j: int) -> np.ndarray:
        lo, hi = max(j - 1, 0), min(j + 1, k - 1)
        return (values[hi] - values[lo]) / max(times[hi] - times[lo], 1e-9)

    span = max(times[i + 1] - times[i], 1e-9)
    u = (t - times[i]) / span
    u2, u3 = u * u, u * u * u
    return ((2 * u3 - 3 * u2 + 1) * values[i] + (u3 - 2 * u2 + u) * span * tangent(i)
            + (-2 * u3 + 3 * u2) * values[i + 1] + (u3 - u2) * span * tangent(i + 1))


@dataclass
class _GestureSchedule:
    """Poses of one hand over time: switches at `times` with a short blend before each."""

    gestures: list[str]
    poses: list[Pose]
    times: list[int] = field(default_factory=list)  # frame of each switch (len = len(poses) - 1)
    blend: int = 4  # frames of transition

    def at(self, shape: HandShape, t: int) -> tuple[np.ndarray, str]:
        k = sum(1 for s in self.times if t >= s)  # poses fully reached
        if k < len(self.times) and t >= self.times[k] - self.blend:
            # blending towards the next pose; the label switches half-way
            frac = (t - (self.times[k] - self.blend)) / self.blend
            gesture = self.gestures[k + 1] if frac >= 0.5 else self.gestures[k]
            return blend_joints(shape, self.poses[k], self.poses[k + 1], frac), gesture
        return hand_joints(shape, self.poses[k]), self.gestures[k]


@dataclass
class _Track:
    track_id: int
    cls: int  # fixed for 2_hands; for single hands the current gesture decides
    specs: list[_HandSpec]
    schedules: list[_GestureSchedule]
    start: int
    end: int
    knot_t: np.ndarray  # [K]
    knot_xy: np.ndarray  # [K, 2] anchor position, pixels
    knot_roll: np.ndarray  # [K] radians
    knot_scale: np.ndarray  # [K] pixels per palm unit
    knot_tilt: np.ndarray  # [K, 2] yaw/pitch wobble, radians
    depth: float
    pair_offset: np.ndarray = field(default_factory=lambda: np.zeros(2))  # second hand, in palm units
    pair_roll: np.ndarray = field(default_factory=lambda: np.zeros(2))


def _sample_schedule(rng: np.random.Generator, gesture: str, shape: HandShape, start: int, end: int,
                     cfg: SyntheticConfig, choices: tuple[str, ...], p: np.ndarray) -> _GestureSchedule:
    gestures, poses, times = [gesture], [sample_pose(rng, gesture, shape)], []
    t = start + 8
    while t < end - 8:
        if rng.random() < cfg.gesture_change_rate and len(choices) > 1:
            q = np.where(np.array(choices) == gestures[-1], 0.0, p)
            if q.sum() > 0:
                g = str(rng.choice(choices, p=q / q.sum()))
                gestures.append(g)
                poses.append(sample_pose(rng, g, shape))
                times.append(t)
                t += 12  # hold a gesture for a while
        t += 1
    return _GestureSchedule(gestures, poses, times)


def _border_pair(rng: np.random.Generator, w: int, h: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """A point `margin` outside one image border and a point inside, near that border, facing it."""
    side = int(rng.integers(0, 4))
    along = rng.uniform(0.2, 0.8)
    depth = rng.uniform(0.15, 0.35)
    outside = [[-margin, along * h], [w + margin, along * h], [along * w, -margin], [along * w, h + margin]][side]
    inside = [[depth * w, along * h], [(1 - depth) * w, along * h], [along * w, depth * h],
              [along * w, (1 - depth) * h]][side]
    return np.array(outside, np.float64), np.array(inside, np.float64)


def _track_path(rng: np.random.Generator, w: int, h: int, num_frames: int, margin: float, enter: bool,
                leave: bool) -> tuple[int, int, np.ndarray, np.ndarray]:
    """(start, end, knot times [K], knot positions [K, 2]) of a smooth path at a steady speed.

    Knot times follow the distances, so the speed stays in a realistic range; an entering
    track starts `margin` outside the frame, a leaving one ends there (if the sequence is long
    enough for it to get out)."""
    side = min(w, h)
    # Fast enough that entering takes at most ~45% of the sequence.
    speed = max(rng.uniform(0.01, 0.025) * side, (margin + 0.35 * side) / max(0.45 * num_frames, 1.0))
    lo, hi = np.array([0.12 * w, 0.2 * h]), np.array([0.88 * w, 0.9 * h])
    start = int(rng.integers(0, max(1, num_frames // 2))) if enter else 0
    if enter:
        outside, first = _border_pair(rng, w, h, margin)
        pts, times = [outside, first], [float(start), start + np.linalg.norm(first - outside) / speed]
    else:
        pts, times = [rng.uniform(lo, hi)], [0.0]
    exit_out = exit_in = None
    last = float(num_frames - 1)
    if leave:
        exit_out, exit_in = _border_pair(rng, w, h, margin)
        exit_time = np.linalg.norm(exit_out - exit_in) / speed
        # start heading out at a random moment that still lets the hand get out in time
        last = rng.uniform(min(times[-1] + 8, num_frames - 1 - exit_time), num_frames - 1 - exit_time)
    while times[-1] < last - 1e-6 or len(pts) < 2:
        q = rng.uniform(lo, hi)
        if np.linalg.norm(q - pts[-1]) < 0.15 * side:
            q = pts[-1] + _unit2(q - pts[-1] + 1e-3) * 0.15 * side
            q = np.clip(q, lo, hi)
        dt = max(np.linalg.norm(q - pts[-1]) / speed, 2.0)
        if leave and times[-1] + dt > last:
            # stop part-way so the exit starts on time (and finishes inside the sequence)
            frac = max(last - times[-1], 0.0) / dt
            q, dt = pts[-1] + (q - pts[-1]) * frac, max(dt * frac, 2.0)
        times.append(times[-1] + dt)
        pts.append(q)
        if leave and times[-1] >= last - 1e-6:
            break
    end = num_frames - 1
    if leave:
        for q in (exit_in, exit_out):
            times.append(times[-1] + max(np.linalg.norm(q - pts[-1]) / speed, 2.0))
            pts.append(q)
        end = int(min(math.floor(times[-1]), num_frames - 1))
    return start, end, np.array(times), np.stack(pts)


def _unit2(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _sample_track(rng: np.random.Generator, cfg: SyntheticConfig, track_id: int, cls: int, num_frames: int,
                  w: int, h: int, n_tracks: int, enter: bool, leave: bool) -> _Track:
    side = min(w, h)
    hi = max(cfg.min_hand_size, cfg.max_hand_size / math.sqrt(n_tracks))
    hand_len = rng.uniform(cfg.min_hand_size, hi) * side * (0.8 if cls == PAIR_ID else 1.0)
    scale = hand_len / _HAND_LENGTH_UNITS
    # Far enough outside that the whole object (a pair is about twice as wide) is out of frame.
    margin = hand_len * (2.4 if cls == PAIR_ID else 1.2)
    start, end, knot_t, knot_xy = _track_path(rng, w, h, num_frames, margin, enter, leave)
    k = len(knot_t)
    base_roll = _sample_roll(rng, cfg)
    knot_roll = base_roll + rng.normal(0.0, math.radians(15), size=k)
    knot_scale = scale * rng.uniform(0.85, 1.15, size=k)
    knot_tilt = rng.normal(0.0, math.radians(8), size=(k, 2))
    single_w = np.asarray(cfg.gesture_weights, np.float64)[[GESTURE_TO_ID[g] for g in SINGLE_GESTURES]]
    if cls == PAIR_ID:
        specs = _pair_specs(rng, cfg)
        knot_roll = rng.normal(0.0, math.radians(10)) + rng.normal(0.0, math.radians(5), size=k)
        schedules = [_sample_schedule(rng, str(rng.choice(_PAIR_MEMBER_GESTURES, p=_PAIR_MEMBER_P)), s.shape,
                                      start, end, cfg, _PAIR_MEMBER_GESTURES, _PAIR_MEMBER_P) for s in specs]
        # Lay the pair out once, at unit scale, and keep that arrangement.
        geos = []
        leans = np.array([-1.0, 1.0]) * rng.uniform(0, math.radians(22), size=2)
        for spec, sched, lean in zip(specs, schedules, leans):
            joints, _ = sched.at(spec.shape, start)
            geos.append(_geometry(spec, joints, lean, 1.0, np.zeros(2)))
        moved = _place_pair(rng, geos[0], geos[1])
        track = _Track(track_id, cls, specs, schedules, start, end, knot_t, knot_xy, knot_roll, knot_scale,
                       knot_tilt, float(rng.random()))
        track.pair_offset = moved.kp[0] - geos[1].kp[0]
        track.pair_roll = leans
        return track
    spec = _sample_hand_spec(rng, cfg, gesture=GESTURES[cls])
    p = single_w if single_w.sum() > 0 else np.ones(len(SINGLE_GESTURES))
    schedule = _sample_schedule(rng, GESTURES[cls], spec.shape, start, end, cfg, SINGLE_GESTURES, p / p.sum())
    return _Track(track_id, cls, [spec], [schedule], start, end, knot_t, knot_xy, knot_roll, knot_scale, knot_tilt,
                  float(rng.random()))


def _track_object(track: _Track, t: int) -> _Object:
    xy = _catmull_rom(track.knot_t, track.knot_xy, t)
    roll = float(_catmull_rom(track.knot_t, track.knot_roll[:, None], t)[0])
    scale = float(_catmull_rom(track.knot_t, track.knot_scale[:, None], t)[0])
    tilt = _catmull_rom(track.knot_t, track.knot_tilt, t)
    hands = []
    cls = track.cls
    for slot, (spec, sched) in enumerate(zip(track.specs, track.schedules)):
        joints, gesture = sched.at(spec.shape, t)
        if track.cls != PAIR_ID:
            cls = GESTURE_TO_ID[gesture]
            geo = _geometry(spec, joints, roll, scale, xy, tilt[0], tilt[1])
        else:
            centre = xy + track.pair_offset * scale * slot
            geo = _geometry(spec, joints, roll + track.pair_roll[slot], scale, centre, tilt[0], tilt[1])
        hands.append((geo, spec.app, spec.left))
    key = _key_hand(hands) if track.cls == PAIR_ID else 0
    return _Object(cls, hands, key=key, track_id=track.track_id, depth=track.depth)


def render_sequence(seed: int, index: int, num_frames: int, cfg: SyntheticConfig | None = None
                    ) -> list[SequenceFrame]:
    """A video of `num_frames` frames: a static background, 1..max_hands tracks moving on smooth
    paths (sometimes crossing), entering/leaving the frame and changing gesture. Track ids are
    1-based and stable; a track is labelled in the frames where enough of it is visible."""
    cfg = cfg or SyntheticConfig()
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    rng = _rng(seed, _SEQUENCE, index)
    w, h = cfg.size
    background = render_background(rng, h, w, cfg.clutter_prob)
    light = _light(rng)
    lo, hi = max(1, cfg.min_hands), max(1, cfg.max_hands)
    n_tracks = int(rng.integers(lo, hi + 1))
    weights = np.asarray(cfg.gesture_weights, np.float64)
    classes = rng.choice(len(GESTURES), size=n_tracks, p=weights / weights.sum())
    enters = rng.random(n_tracks) < cfg.enter_leave_prob
    leaves = rng.random(n_tracks) < cfg.enter_leave_prob
    if num_frames >= 20 and not (enters.any() or leaves.any()):
        # a long sequence always shows at least one hand entering or leaving
        (enters if rng.random() < 0.5 else leaves)[int(rng.integers(0, n_tracks))] = True
    if num_frames < 20:
        enters[:] = False
        leaves[:] = False
    tracks = [_sample_track(rng, cfg, i + 1, int(c), num_frames, w, h, n_tracks, bool(e), bool(lv))
              for i, (c, e, lv) in enumerate(zip(classes, enters, leaves))]
    if len(tracks) >= 2 and rng.random() < cfg.crossing_prob:
        _steer_across(rng, tracks[0], tracks[1], max_speed=0.045 * min(w, h))
    # One static foreground object, and fixed camera settings, for the whole sequence.
    occluders = []
    if rng.random() < cfg.occlusion_prob:
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        size = rng.uniform(0.2, 0.4) * min(w, h)
        occluders.append((int(rng.integers(2**63)), np.array([cx - size, cy - size, cx + size, cy + size])))
    effects_seed = int(rng.integers(2**63))

    frames = []
    for t in range(num_frames):
        objects = [_track_object(tr, t) for tr in tracks if tr.start <= t <= tr.end]
        occ = [(np.random.default_rng(s), box) for s, box in occluders]
        image, labels, handedness, which = _compose(background, objects, light, cfg, occ)
        frame_rng = _rng(seed, _SEQUENCE, index, t + 1)
        noise_offset = frame_rng.integers(0, [w, h])
        image = apply_camera_effects(np.random.default_rng(effects_seed), image, cfg.blur_prob, cfg.noise_prob,
                                     noise_offset=noise_offset)
        frames.append(SequenceFrame(image=image, labels=labels, track_ids=[objects[i].track_id for i in which],
                                    handedness=handedness))
    return frames


def _steer_across(rng: np.random.Generator, a: _Track, b: _Track, max_speed: float) -> None:
    """Move one of track b's inner knots onto track a's position at that knot's time, so that
    the two hands cross; skipped when it would make b faster than `max_speed` px/frame."""
    inner = [i for i in range(1, len(b.knot_t) - 1) if a.start <= b.knot_t[i] <= a.end]
    if not inner:
        return
    i = inner[int(rng.integers(0, len(inner)))]
    target = _catmull_rom(a.knot_t, a.knot_xy, float(b.knot_t[i])) + rng.normal(0.0, 4.0, size=2)
    for j in (i - 1, i + 1):
        if np.linalg.norm(target - b.knot_xy[j]) / max(abs(b.knot_t[i] - b.knot_t[j]), 1e-9) > max_speed:
            return
    b.knot_xy[i] = target


# ---------------------------------------------------------------------------------------------
# MOTChallenge ground truth
# ---------------------------------------------------------------------------------------------

def write_mot(path: str | Path, frames: list[SequenceFrame], width: int, height: int) -> None:
    """MOTChallenge gt lines `frame,id,x,y,w,h,conf,-1,-1,-1` (frame 1-based, top-left + size in pixels)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for f, frame in enumerate(frames, 1):
        for label, tid in sorted(zip(frame.labels, frame.track_ids), key=lambda p: p[1]):
            x1, y1, x2, y2 = label.xyxy(width, height)
            lines.append(f"{f},{tid},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,-1,-1,-1\n")
    path.write_text("".join(lines))


def read_mot(path: str | Path) -> dict[int, list[tuple[int, np.ndarray]]]:
    """frame (1-based) -> [(track_id, xyxy pixels [4])]; frames without boxes are absent."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"MOT file not found: {path} (pass the gt.txt written by write_mot)")
    out: dict[int, list[tuple[int, np.ndarray]]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        tokens = [t.strip() for t in line.split(",")]
        if len(tokens) < 6:
            raise UserError(f"{path}:{lineno}: expected at least 6 comma-separated values "
                            f"(frame,id,x,y,w,h,...), got {len(tokens)}; fix or remove the line")
        try:
            frame, tid = int(float(tokens[0])), int(float(tokens[1]))
            x, y, bw, bh = (float(v) for v in tokens[2:6])
        except ValueError:
            raise UserError(f"{path}:{lineno}: non-numeric value in {line.strip()!r}; fix or remove the line") from None
        if frame < 1 or bw < 0 or bh < 0:
            raise UserError(f"{path}:{lineno}: frame must be >= 1 and w, h >= 0; fix the line")
        out.setdefault(frame, []).append((tid, np.array([x, y, x + bw, y + bh])))
    return out


__all__ = ["SyntheticConfig", "SyntheticSample", "SequenceFrame", "render_image", "render_sequence", "write_mot",
           "read_mot", "SINGLE_GESTURES"]
