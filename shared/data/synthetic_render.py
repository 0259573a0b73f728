"""Synthetic hands, the drawing half: a kinematic 21-joint hand, its projection, and cheap cv2 drawing.

The hand lives in a local frame measured in *palm units* (wrist -> middle-finger MCP = 1):
x across the palm (thumb side positive for a right hand), y along the fingers, z out of
the palm side. Fingers are chains of three segments that flex about their knuckles
towards +z; the thumb is either posed by forward kinematics (open hand) or reaches a
target by a small analytic IK (pinch: the index tip; fist/pointer: across the curled
fingers). A `View` rotates that frame in 3D (roll, pitch, yaw, mirror for a left hand),
projects it with a mild perspective and places it in pixels.

Drawing is painter's algorithm on cv2 primitives, so no per-pixel Python: every finger
segment is a tapered capsule (one convex polygon) drawn three times, dark edge -> mid tone ->
highlight shifted towards the light, into a per-hand patch that is then Gaussian-blurred, which
turns the bands into smooth cylindrical shading, and alpha-composited onto the image. The same
polygons are drawn without anti-aliasing into a part-id map, from which keypoint visibility is
read: a keypoint is visible when the part on top at its pixel is one of its own parts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from shared.hand import NUM_KEYPOINTS, VIS_ABSENT, VIS_OCCLUDED, VIS_VISIBLE

# ---------------------------------------------------------------------------------------------
# Hand model constants (palm units, right hand, palm facing +z)
# ---------------------------------------------------------------------------------------------

# Tapered capsules, (start joint, end joint): thumb, index, middle, ring, pinky.
SEGMENTS: tuple[tuple[int, int], ...] = (
    (1, 2), (2, 3), (3, 4),
    (5, 6), (6, 7), (7, 8),
    (9, 10), (10, 11), (11, 12),
    (13, 14), (14, 15), (15, 16),
    (17, 18), (18, 19), (19, 20),
)
_SEG_A = np.array([a for a, _ in SEGMENTS])
_SEG_B = np.array([b for _, b in SEGMENTS])
_DISTAL = np.array([2, 5, 8, 11, 14])  # SEGMENTS index of each finger's last segment (thumb first)
_DISTAL_FINGER = {int(s): f for f, s in enumerate(_DISTAL)}

# Part ids inside one hand; the id in the part map is hand_index * PARTS_PER_HAND + part.
PART_PALM = 1
PART_ARM = 2
PART_SEG0 = 3
PARTS_PER_HAND = 32
OCCLUDER_ID = 65535

# Index, middle, ring, pinky MCP; thumb CMC.
_MCP = np.array([[0.34, 0.93, 0.0], [0.11, 1.0, 0.0], [-0.11, 0.95, 0.0], [-0.31, 0.84, 0.0]])
_CMC = np.array([0.24, 0.17, 0.04])
# Segment lengths: thumb (metacarpal, proximal, distal), fingers (proximal, middle, distal).
_LENGTHS = np.array([[0.42, 0.33, 0.27], [0.46, 0.27, 0.21], [0.50, 0.31, 0.22],
                     [0.47, 0.30, 0.22], [0.37, 0.22, 0.20]])
# Half-thickness at each joint; the thumb's CMC radius is large because the thumb metacarpal
# capsule doubles as the thenar eminence.
_RADII = np.array([0.30,
                   0.165, 0.118, 0.100, 0.086,
                   0.098, 0.088, 0.078, 0.068,
                   0.101, 0.091, 0.080, 0.070,
                   0.095, 0.085, 0.076, 0.066,
                   0.083, 0.074, 0.066, 0.058])
# Palm outline, counter-clockwise from the ulnar side of the wrist.
_PALM = np.array([[-0.29, -0.03], [0.0, -0.06], [0.26, -0.03], [0.36, 0.32], [0.44, 0.78], [0.41, 0.97],
                  [0.22, 1.03], [0.05, 1.06], [-0.13, 1.01], [-0.31, 0.92], [-0.41, 0.78],
                  [-0.42, 0.50], [-0.37, 0.20]])
# Palm creases (heart, head, life lines), drawn faintly when the palm faces the camera.
_CREASES = (np.array([[-0.40, 0.72], [-0.18, 0.78], [0.05, 0.80], [0.25, 0.88]]),
            np.array([[0.40, 0.62], [0.15, 0.60], [-0.10, 0.55], [-0.30, 0.46]]),
            np.array([[0.40, 0.64], [0.24, 0.50], [0.15, 0.30], [0.12, 0.08]]))
_NORMAL = np.array([0.0, 0.0, 1.0])

# Skin tones (RGB, from light to dark); a hand blends two neighbours and jitters.
_SKIN_RGB = np.array([[255, 224, 196], [241, 194, 167], [236, 188, 160], [224, 172, 135], [210, 160, 120],
                      [198, 134, 103], [161, 102, 72], [125, 80, 56], [90, 58, 40]], dtype=np.float64)
_PALM_TINT = np.array([200, 200, 240.0])  # BGR, the pinkish light tone of palms and nails

# Thumb modes: forward kinematics, or IK to a target defined relative to the fingers.
THUMB_FK, THUMB_PINCH, THUMB_WRAP, THUMB_SIDE = 0, 1, 2, 3


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


# ---------------------------------------------------------------------------------------------
# Shape and pose
# ---------------------------------------------------------------------------------------------

@dataclass
class HandShape:
    """One person's hand proportions (palm units)."""

    mcp: np.ndarray  # [4, 3] index..pinky knuckles
    cmc: np.ndarray  # [3] thumb base
    lengths: np.ndarray  # [5, 3] segment lengths, thumb first
    radii: np.ndarray  # [21] half-thickness per joint
    palm: np.ndarray  # [P, 3] palm outline
    creases: tuple[np.ndarray, ...]  # [M, 3] each


def sample_shape(rng: np.random.Generator) -> HandShape:
    """Random proportions: palm width, finger length and thickness vary by about +-10%."""
    width = rng.uniform(0.9, 1.1)
    finger = rng.uniform(0.92, 1.1) * (1.0 + rng.normal(0.0, 0.025, size=(5, 1)))
    thick = rng.uniform(0.88, 1.12)
    sx = np.array([width, 1.0, 1.0])
    palm = np.concatenate([_PALM, np.zeros((len(_PALM), 1))], axis=1) * sx
    creases = tuple(np.concatenate([c, np.zeros((len(c), 1))], axis=1) * sx for c in _CREASES)
    radii = _RADII * thick
    radii[0] = _RADII[0] * width
    return HandShape(mcp=_MCP * sx, cmc=_CMC * sx, lengths=_LENGTHS * finger, radii=radii, palm=palm,
                     creases=creases)


@dataclass
class Pose:
    """Joint angles of one hand (degrees)."""

    fingers: np.ndarray  # [4, 4] abduction, flex MCP, PIP, DIP for index, middle, ring, pinky
    thumb: np.ndarray  # [5] abduction, opposition, flex CMC, MCP, IP (used by THUMB_FK, and as IK rest)
    thumb_mode: int = THUMB_FK
    thumb_args: np.ndarray = field(default_factory=lambda: np.zeros(4))  # mode parameters


# Spread of open fingers (degrees, + towards the thumb) and curled ones.
_SPREAD = np.array([10.0, 1.0, -8.0, -17.0])
_CURL_SPREAD = np.array([4.0, 0.0, -4.0, -8.0])


def _open_fingers(rng: np.random.Generator, n: int = 4) -> np.ndarray:
    spread = _SPREAD[:n] * rng.uniform(0.6, 1.5) + rng.normal(0.0, 2.5, size=n)
    flex = np.stack([rng.uniform(-6, 12, n), rng.uniform(0, 14, n), rng.uniform(0, 12, n)], axis=1)
    return np.concatenate([spread[:, None], flex], axis=1)


def _curled_fingers(rng: np.random.Generator, n: int = 4) -> np.ndarray:
    spread = _CURL_SPREAD[:n] * rng.uniform(0.5, 1.2) + rng.normal(0.0, 1.5, size=n)
    flex = np.stack([rng.uniform(72, 95, n), rng.uniform(88, 110, n), rng.uniform(35, 65, n)], axis=1)
    return np.concatenate([spread[:, None], flex], axis=1)


def _open_thumb(rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.uniform(35, 60), rng.uniform(10, 35), rng.uniform(0, 8), rng.uniform(0, 15),
                     rng.uniform(0, 20)])


def sample_pose(rng: np.random.Generator, gesture: str, shape: HandShape) -> Pose:
    """Joint angles for one single-hand gesture, randomised within what keeps it recognisable."""
    thumb = _open_thumb(rng)
    if gesture == "normal_hand":
        return Pose(_open_fingers(rng), thumb)
    if gesture == "fist":
        fingers = _curled_fingers(rng)
        if rng.random() < 0.75:  # thumb wrapped over the middle phalanges of index/middle
            return Pose(fingers, thumb, THUMB_WRAP, np.array([0.0, rng.uniform(0.0, 0.9), rng.uniform(0.15, 0.2), 0]))
        return Pose(fingers, thumb, THUMB_SIDE, np.array([rng.uniform(0.1, 0.15), rng.uniform(-0.12, 0.0),
                                                         rng.uniform(0.05, 0.12), 0]))
    if gesture == "pointer":
        fingers = _curled_fingers(rng)
        fingers[0] = _open_fingers(rng)[0]
        fingers[0, 0] = rng.uniform(-4, 10)
        # thumb over the middle (and ring) finger, the index is out of the way
        return Pose(fingers, thumb, THUMB_WRAP, np.array([1.0, rng.uniform(0.0, 0.6), rng.uniform(0.15, 0.2), 0]))
    if gesture == "pinch":
        fingers = _open_fingers(rng)
        fingers[1:, 1:] += rng.uniform(0, 1) * np.array([15.0, 20.0, 12.0]) * rng.uniform(0.3, 1.0, size=(3, 1))
        # index leans towards the thumb and curls so that the two tips meet in a ring
        fingers[0] = [rng.uniform(0, 12), rng.uniform(30, 50), rng.uniform(60, 85), rng.uniform(25, 45)]
        offset = _unit(rng.normal(size=3)) * rng.uniform(0.02, 0.08)
        pose = Pose(fingers, thumb, THUMB_PINCH, np.concatenate([offset, [0.0]]))
        # The thumb must reach the index tip: curl the index further until it does.
        reach = shape.lengths[0].sum() * 0.97
        for _ in range(8):
            tip = _finger_joints(shape, pose.fingers)[0, -1]
            if np.linalg.norm(tip + offset - shape.cmc) <= reach:
                break
            pose.fingers[0, 1:] += [6.0, 6.0, 3.0]
        return pose
    raise ValueError(f"unknown single-hand gesture {gesture!r}")


def _finger_joints(shape: HandShape, fingers: np.ndarray) -> np.ndarray:
    """[4, 3, 3] PIP, DIP, tip of index..pinky by forward kinematics."""
    beta = np.radians(fingers[:, 0])
    flex = np.cumsum(np.radians(fingers[:, 1:]), axis=1)  # [4, 3] cumulative flexion
    u = np.stack([np.sin(beta), np.cos(beta), np.zeros(4)], axis=1)  # [4, 3] in-palm finger direction
    dirs = np.cos(flex)[..., None] * u[:, None, :] + np.sin(flex)[..., None] * _NORMAL  # [4, 3, 3]
    steps = dirs * shape.lengths[1:, :, None]
    return shape.mcp[:, None, :] + np.cumsum(steps, axis=1)


def _thumb_rest_dir(thumb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Metacarpal direction of the open thumb and the direction it flexes towards."""
    a, o = np.radians(thumb[0]), np.radians(thumb[1])
    d0 = np.array([math.sin(a) * math.cos(o), math.cos(a) * math.cos(o), math.sin(o)])
    bend = np.array([-math.cos(a) * 0.5, math.sin(a) * 0.5, 0.85])
    bend = _unit(bend - bend.dot(d0) * d0)
    return d0, bend


def _thumb_fk(shape: HandShape, thumb: np.ndarray) -> np.ndarray:
    d0, bend = _thumb_rest_dir(thumb)
    flex = np.cumsum(np.radians(thumb[2:]))
    dirs = np.cos(flex)[:, None] * d0 + np.sin(flex)[:, None] * bend  # [3, 3]
    return shape.cmc + np.cumsum(dirs * shape.lengths[0][:, None], axis=0)


def _thumb_ik(shape: HandShape, thumb: np.ndarray, target: np.ndarray, rest_weight: float = 1.0,
              bulge: np.ndarray | None = None) -> np.ndarray:
    """[3, 3] thumb MCP, IP, tip with the tip on `target` (stretched slightly if out of reach).

    The metacarpal points between its rest direction (weight `rest_weight`) and the target;
    the IP joint bulges towards `bulge` (default: away from the palm centre)."""
    l1, l2, l3 = shape.lengths[0]
    d0, _ = _thumb_rest_dir(thumb)
    to_t = _unit(target - shape.cmc)
    mcp = shape.cmc + l1 * _unit(rest_weight * d0 + to_t)
    if np.linalg.norm(target - mcp) > l2 + l3:
        mcp = shape.cmc + l1 * to_t  # straight towards the target: the longest reach
    e = target - mcp
    d = float(np.linalg.norm(e))
    e_hat = e / max(d, 1e-9)
    pref = mcp - np.array([0.0, 0.55, -0.25]) if bulge is None else bulge
    pref = pref - pref.dot(e_hat) * e_hat
    pref = _unit(pref) if np.linalg.norm(pref) > 1e-6 else _unit(np.cross(e_hat, _NORMAL))
    if d >= l2 + l3:
        ip = mcp + e_hat * (l2 * d / (l2 + l3))
    else:
        d = max(d, abs(l2 - l3) + 1e-3)
        along = (l2 * l2 - l3 * l3 + d * d) / (2 * d)
        ip = mcp + e_hat * along + pref * math.sqrt(max(l2 * l2 - along * along, 0.0))
    return np.stack([mcp, ip, target])


def hand_joints(shape: HandShape, pose: Pose) -> np.ndarray:
    """[21, 3] joint positions in the local hand frame, MediaPipe order."""
    joints = np.zeros((NUM_KEYPOINTS, 3))
    fingers = _finger_joints(shape, pose.fingers)  # [4, 3, 3]
    for f in range(4):
        joints[5 + 4 * f] = shape.mcp[f]
        joints[6 + 4 * f: 9 + 4 * f] = fingers[f]
    joints[1] = shape.cmc
    args = pose.thumb_args
    if pose.thumb_mode == THUMB_FK:
        joints[2:5] = _thumb_fk(shape, pose.thumb)
        return joints
    if pose.thumb_mode == THUMB_PINCH:
        # The thumb swings out sideways and comes back to the index tip, so the two fingers
        # close a ring that is open to the camera from the palm side too (an OK sign).
        joints[2:5] = _thumb_ik(shape, pose.thumb, joints[8] + args[:3], rest_weight=1.6,
                                bulge=np.array([1.0, -0.3, -0.2]))
        return joints
    if pose.thumb_mode == THUMB_WRAP:
        # across the middle phalanges of finger i and i+1, in front of them
        i = int(args[0])
        mid_i = (joints[6 + 4 * i] + joints[7 + 4 * i]) / 2
        mid_j = (joints[10 + 4 * i] + joints[11 + 4 * i]) / 2
        target = mid_i + (mid_j - mid_i) * args[1] + _NORMAL * args[2]
    else:  # THUMB_SIDE: alongside the curled index
        target = joints[6] + args[:3]
    joints[2:5] = _thumb_ik(shape, pose.thumb, target)
    return joints


def blend_joints(shape: HandShape, a: Pose, b: Pose, t: float) -> np.ndarray:
    """Joints part-way between two poses: finger angles interpolate (so fingers keep their
    length while curling); the thumb, which may be IK-driven, interpolates positions."""
    if t <= 0.0:
        return hand_joints(shape, a)
    if t >= 1.0:
        return hand_joints(shape, b)
    fingers = a.fingers + (b.fingers - a.fingers) * t
    ja = hand_joints(shape, Pose(fingers, a.thumb, a.thumb_mode, a.thumb_args))
    jb = hand_joints(shape, Pose(fingers, b.thumb, b.thumb_mode, b.thumb_args))
    ja[2:5] = ja[2:5] + (jb[2:5] - ja[2:5]) * t
    return ja


# ---------------------------------------------------------------------------------------------
# View and projection
# ---------------------------------------------------------------------------------------------

def rotation(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """[3, 3] camera-from-hand rotation (radians): yaw about the finger axis, pitch about the
    palm's x axis, then roll in the image plane (counter-clockwise on screen)."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


@dataclass
class View:
    """Where and how one hand is seen. Camera frame: x right, y up, z towards the viewer."""

    rot: np.ndarray  # [3, 3] camera-from-hand rotation (without the mirror)
    scale: float  # pixels per palm unit
    center: np.ndarray  # [2] wrist position in pixels
    left: bool = False  # mirror x: a left hand
    aspect: float = 1.0  # image-axis stretch (x by sqrt(aspect), y by 1/sqrt(aspect))
    persp: float = 0.0  # perspective strength: points 1 palm unit closer look (1 + persp) x larger

    def to_camera(self, pts: np.ndarray) -> np.ndarray:
        if self.left:
            pts = pts * np.array([-1.0, 1.0, 1.0])
        return pts @ self.rot.T

    def to_image(self, cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Camera points [N, 3] -> pixels [N, 2] and per-point magnification [N]."""
        mag = 1.0 / np.clip(1.0 - self.persp * cam[:, 2], 0.6, None)
        ax = math.sqrt(self.aspect)
        xy = self.center + self.scale * mag[:, None] * cam[:, :2] * np.array([ax, -1.0 / ax])
        return xy, mag


@dataclass
class Appearance:
    """How one hand is coloured (BGR floats 0-255)."""

    skin: np.ndarray  # [3]
    gain: float = 1.0  # local light intensity
    sleeve: np.ndarray | None = None  # [3] cloth colour, None = bare arm
    arm: bool = True  # draw the forearm
    sleeve_start: float = 1.5  # where the sleeve begins, palm units from the wrist


def sample_skin(rng: np.random.Generator) -> np.ndarray:
    """A BGR skin tone between two neighbouring palette entries, jittered."""
    i = int(rng.integers(0, len(_SKIN_RGB) - 1))
    rgb = _SKIN_RGB[i] + (_SKIN_RGB[i + 1] - _SKIN_RGB[i]) * rng.random() + rng.normal(0, 5, 3)
    return np.clip(rgb[::-1], 20, 255)


def sample_appearance(rng: np.random.Generator, skin: np.ndarray | None = None, arm_prob: float = 0.85) -> Appearance:
    skin = sample_skin(rng) if skin is None else skin
    sleeve = None
    if rng.random() < 0.65:
        sleeve = rng.uniform(15, 235, 3) * rng.uniform(0.4, 1.0) + rng.uniform(0, 40)
    return Appearance(skin=skin, gain=float(rng.uniform(0.85, 1.12)), sleeve=sleeve,
                      arm=bool(rng.random() < arm_prob), sleeve_start=float(rng.uniform(0.9, 2.5)))


# ---------------------------------------------------------------------------------------------
# Geometry of one projected hand
# ---------------------------------------------------------------------------------------------

@dataclass
class HandGeometry:
    """Everything needed to draw and label one hand, in pixels (plus camera depth, palm units)."""

    kp: np.ndarray  # [21, 2] keypoints, pixels
    kz: np.ndarray  # [21] depth towards the viewer
    seg_a: np.ndarray  # [S, 2] capsule ends, pixels
    seg_b: np.ndarray  # [S, 2]
    seg_ra: np.ndarray  # [S] radii, pixels
    seg_rb: np.ndarray  # [S]
    seg_z: np.ndarray  # [S] mean depth, for the drawing order
    seg_front: np.ndarray  # [S] bool: drawn after (over) the palm
    nail_facing: np.ndarray  # [5] how much each distal segment's nail faces the camera (<= 0: hidden)
    nail_dir: np.ndarray  # [5, 2] image direction of the dorsal side (nail offset)
    palm: np.ndarray  # [P, 2]
    palm_z: float
    facing: float  # palm normal's z: > 0 the palm faces the camera
    creases: tuple[np.ndarray, ...]
    arm_a: np.ndarray  # [2] forearm capsule: wrist end
    arm_b: np.ndarray  # [2] far end (off-image)
    arm_r: tuple[float, float]
    sleeve_a: np.ndarray  # [2] where the sleeve starts
    box: np.ndarray = field(default_factory=lambda: np.zeros(4))  # [4] xyxy, hand only (no forearm)

    def shifted(self, d: np.ndarray) -> HandGeometry:
        d = np.asarray(d, dtype=np.float64)
        return HandGeometry(
            kp=self.kp + d, kz=self.kz, seg_a=self.seg_a + d, seg_b=self.seg_b + d, seg_ra=self.seg_ra,
            seg_rb=self.seg_rb, seg_z=self.seg_z, seg_front=self.seg_front, nail_facing=self.nail_facing,
            nail_dir=self.nail_dir, palm=self.palm + d, palm_z=self.palm_z, facing=self.facing,
            creases=tuple(c + d for c in self.creases), arm_a=self.arm_a + d, arm_b=self.arm_b + d,
            arm_r=self.arm_r, sleeve_a=self.sleeve_a + d, box=self.box + np.concatenate([d, d]))


def build_geometry(shape: HandShape, joints: np.ndarray, view: View, sleeve_start: float = 1.5) -> HandGeometry:
    """Project a posed hand: keypoints, capsules, palm, nails, forearm and the tight box."""
    cam = view.to_camera(joints)  # [21, 3]
    kp, mag = view.to_image(cam)
    # The distal capsule stops short of the tip joint so that the rounded fingertip ends at
    # the keypoint, as MediaPipe's tip landmark sits at the very end of the finger.
    seg_dir3 = _unit(joints[_SEG_B] - joints[_SEG_A])  # [S, 3]
    ends = joints[_SEG_B].copy()
    ends[_DISTAL] -= seg_dir3[_DISTAL] * shape.radii[_SEG_B[_DISTAL], None] * 0.65
    ends_cam = view.to_camera(ends)
    seg_b, mag_b = view.to_image(ends_cam)
    seg_a = kp[_SEG_A]
    seg_ra = shape.radii[_SEG_A] * view.scale * mag[_SEG_A]
    seg_rb = shape.radii[_SEG_B] * view.scale * mag_b
    seg_z = (cam[_SEG_A, 2] + ends_cam[:, 2]) / 2

    # Mirroring (left hand) keeps the palm side at +z, so the normal maps like any direction.
    normal_cam = view.to_camera(_NORMAL[None])[0]
    facing = float(normal_cam[2])
    side = 1.0 if facing >= 0 else -1.0
    # A segment on the palm side (+z locally) is in front of the palm when the palm faces us.
    local_mid_z = (joints[_SEG_A, 2] + ends[:, 2]) / 2
    seg_front = local_mid_z * side > -0.05

    # Nails sit on the dorsal side of the distal segments (the side away from the palm).
    # For a finger, direction x lateral axis (+x) is the back of the finger at any flexion.
    d_dist = seg_dir3[_DISTAL]  # [5, 3]
    dorsal = np.empty((5, 3))
    dorsal[1:] = _unit(np.cross(d_dist[1:], np.array([1.0, 0.0, 0.0])))
    thumb_back = np.array([0.6, 0.0, -0.8])
    dorsal[0] = _unit(thumb_back - thumb_back.dot(d_dist[0]) * d_dist[0])
    dorsal_cam = view.to_camera(dorsal)
    nail_facing = dorsal_cam[:, 2]
    ax = math.sqrt(view.aspect)
    nail_dir = dorsal_cam[:, :2] * np.array([ax, -1.0 / ax])

    palm_cam = view.to_camera(shape.palm)
    palm, _ = view.to_image(palm_cam)
    creases = tuple(view.to_image(view.to_camera(c))[0] for c in shape.creases)

    # Forearm: from just inside the palm, away from the fingers, far past any image border.
    wrist_w = shape.radii[0]
    arm_pts = view.to_camera(np.array([[0.0, 0.25, -0.02], [0.0, -1.0, -0.02]]))
    arm_xy, arm_mag = view.to_image(arm_pts)
    along = arm_xy[1] - arm_xy[0]
    far = arm_xy[0] + along * 50.0
    sleeve_a = arm_xy[0] + along * (sleeve_start + 0.25) / 1.25
    arm_r = (wrist_w * view.scale * float(arm_mag[0]), wrist_w * 1.25 * view.scale * float(arm_mag[0]))

    geo = HandGeometry(kp=kp, kz=cam[:, 2], seg_a=seg_a, seg_b=seg_b, seg_ra=seg_ra, seg_rb=seg_rb, seg_z=seg_z,
                       seg_front=seg_front, nail_facing=nail_facing, nail_dir=nail_dir, palm=palm,
                       palm_z=float(palm_cam[:, 2].mean()), facing=facing, creases=creases,
                       arm_a=arm_xy[0], arm_b=far, arm_r=arm_r, sleeve_a=sleeve_a)
    geo.box = hand_extent(geo)
    return geo


def hand_extent(geo: HandGeometry) -> np.ndarray:
    """[4] xyxy tight box of everything drawn for the hand itself (not the forearm)."""
    lo = np.minimum(np.min(np.minimum(geo.seg_a - geo.seg_ra[:, None], geo.seg_b - geo.seg_rb[:, None]), axis=0),
                    geo.palm.min(axis=0))
    hi = np.maximum(np.max(np.maximum(geo.seg_a + geo.seg_ra[:, None], geo.seg_b + geo.seg_rb[:, None]), axis=0),
                    geo.palm.max(axis=0))
    lo = np.minimum(lo, geo.kp.min(axis=0))
    hi = np.maximum(hi, geo.kp.max(axis=0))
    return np.concatenate([lo, hi])


# ---------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------

_SHIFT = 4  # cv2 fixed-point bits: sub-pixel accurate polygons
_ONE = 1 << _SHIFT
_ARC_K = 7  # points per half-circle of a capsule


def capsule_polygons(a: np.ndarray, b: np.ndarray, ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """[S, 2K, 2] convex outlines of tapered capsules (two circles joined by their tangents)."""
    d = b - a
    length = np.maximum(np.linalg.norm(d, axis=1), 1e-3)
    u = d / length[:, None]
    p = np.stack([-u[:, 1], u[:, 0]], axis=1)
    alpha = np.arcsin(np.clip((ra - rb) / length, -0.95, 0.95))  # tangent-line tilt of a taper
    s = np.linspace(0.0, 1.0, _ARC_K)[None]
    half = np.pi / 2 + alpha[:, None]
    t_b = half * (1 - 2 * s)  # front arc: +half -> -half through 0
    t_a = -half - s * (np.pi - 2 * alpha[:, None])  # back arc: -half -> -(3pi/2 - alpha) through -pi
    pb = b[:, None] + rb[:, None, None] * (np.cos(t_b)[..., None] * u[:, None] + np.sin(t_b)[..., None] * p[:, None])
    pa = a[:, None] + ra[:, None, None] * (np.cos(t_a)[..., None] * u[:, None] + np.sin(t_a)[..., None] * p[:, None])
    return np.concatenate([pb, pa], axis=1)


def _fix(pts: np.ndarray) -> np.ndarray:
    return np.round(pts * _ONE).astype(np.int32)


def _colour(c: np.ndarray) -> tuple[float, float, float]:
    c = np.clip(c, 0, 255)
    return float(c[0]), float(c[1]), float(c[2])


def _palm_tint(skin: np.ndarray, amount: float) -> np.ndarray:
    # Darker skin has relatively lighter palms.
    lum = float(skin.mean())
    k = amount * (0.5 + 0.8 * (1.0 - lum / 255.0))
    return skin + (_PALM_TINT * (0.55 + 0.45 * lum / 255.0) - skin) * min(k, 0.6)


def draw_hand(image: np.ndarray, parts: np.ndarray, hand_index: int, geo: HandGeometry, app: Appearance,
              light: np.ndarray) -> None:
    """Draw one hand (forearm, palm, fingers) onto `image` in place and its part ids onto `parts`.

    `light` is a unit 2D image direction towards the light; highlights shift that way.
    """
    h, w = image.shape[:2]
    base_id = int(hand_index * PARTS_PER_HAND)
    # Patch: the hand's box plus its forearm's visible part, padded for the blur, within the image.
    pad = 4.0 + 0.3 * float(geo.seg_ra.max())
    lo, hi = geo.box[:2] - pad, geo.box[2:] + pad
    if app.arm:
        arm_box = _clip_segment_box(geo.arm_a, geo.arm_b, geo.arm_r[1] + pad, w, h)
        if arm_box is not None:
            lo, hi = np.minimum(lo, arm_box[:2]), np.maximum(hi, arm_box[2:])
    x0, y0 = max(int(math.floor(lo[0])), 0), max(int(math.floor(lo[1])), 0)
    x1, y1 = min(int(math.ceil(hi[0])) + 1, w), min(int(math.ceil(hi[1])) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return
    origin = np.array([x0, y0], dtype=np.float64)
    fix_origin = _fix(origin)
    skin = app.skin * app.gain
    edge_col = skin * 0.58
    colour = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    colour[:] = np.clip(edge_col, 0, 255).astype(np.uint8)
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    aa = cv2.LINE_AA

    # The palm's dark rim goes in before the forearm, so that the forearm's body covers it at the
    # wrist and the arm flows into the palm instead of meeting it at a dark seam.
    palm_side = geo.facing > 0
    palm_skin = (_palm_tint(skin, 0.3) if palm_side else skin) * (0.82 + 0.18 * abs(geo.facing))
    centre = geo.palm.mean(axis=0)
    size = float(np.linalg.norm(geo.palm - centre, axis=1).mean())
    poly_edge = _fix(geo.palm)
    cv2.fillPoly(colour, [poly_edge - fix_origin], _colour(palm_skin * 0.62), aa, _SHIFT)
    cv2.fillPoly(mask, [poly_edge - fix_origin], 255, aa, _SHIFT)

    # Forearm (and sleeve) behind the hand: three nested capsules each, like the fingers.
    if app.arm:
        a, b = geo.arm_a, geo.arm_b
        r = geo.arm_r[0]
        p = _perp((b - a)[None])[0]
        off = p * float(light @ p) * r * 0.35
        k3 = np.array([0.0, 0.35, 1.0])[:, None]
        rs = np.array([1.0, 0.8, 0.45])
        arm_polys = _fix(capsule_polygons(a + off * k3, b + off * k3, r * rs, r * rs * 1.1))
        arm_cols = np.clip(_palm_tint(skin, 0.1)[None] * np.array([0.59, 0.84, 0.97])[:, None], 0, 255).tolist()
        polys = [arm_polys]
        cols = [arm_cols]
        if app.sleeve is not None:
            k3 = np.array([0.0, 0.65, 1.56])[:, None]
            rs = r * 1.35 * np.array([1.0, 0.75, 0.35])
            polys.append(_fix(capsule_polygons(geo.sleeve_a + off * k3, b + off * k3, rs, rs)))
            cols.append(np.clip((app.sleeve * app.gain)[None] * np.array([0.7, 0.92, 1.05])[:, None], 0, 255).tolist())
        for poly3, col3 in zip(polys, cols):
            cv2.fillConvexPoly(mask, poly3[0] - fix_origin, 255, aa, _SHIFT)
            cv2.fillConvexPoly(parts, poly3[0], base_id + PART_ARM, cv2.LINE_8, _SHIFT)
            for k in range(3):
                cv2.fillConvexPoly(colour, poly3[k] - fix_origin, col3[k], aa, _SHIFT)

    # Finger segments: three nested capsules (edge, body, highlight shifted towards the light).
    p = _perp(geo.seg_b - geo.seg_a)  # [S, 2]
    off = p * (p @ light)[:, None] * ((geo.seg_ra + geo.seg_rb) / 2 * 0.38)[:, None]
    shift = np.array([0.0, 0.3, 1.0])[:, None, None]  # [3, 1, 1] per layer
    shrink = np.array([1.0, 0.8, 0.42])[:, None]
    n_seg = len(geo.seg_a)
    layers = capsule_polygons((geo.seg_a + off * shift).reshape(-1, 2), (geo.seg_b + off * shift).reshape(-1, 2),
                              (geo.seg_ra * shrink).reshape(-1), (geo.seg_rb * shrink).reshape(-1))
    layers_fix = _fix(layers).reshape(3, n_seg, -1, 2)  # [3, S, 2K, 2]
    finger_skin = _palm_tint(skin, 0.12) if palm_side else skin
    # Parts nearer the camera catch a little more light: a cheap depth cue.
    seg_gain = np.clip(1.0 + 0.22 * (geo.seg_z - geo.palm_z), 0.8, 1.15)
    seg_cols = np.clip(finger_skin[None, None] * seg_gain[:, None, None] * np.array([0.62, 0.9, 1.06])[None, :, None],
                       0, 255).tolist()  # [S][3 layers][BGR]
    order = np.argsort(geo.seg_z, kind="stable").tolist()
    back = [s for s in order if not geo.seg_front[s]]
    front = [s for s in order if geo.seg_front[s]]

    nails: list[tuple[int, int]] = []

    def draw_segment(s: int) -> None:
        poly = layers_fix[0, s]
        cv2.fillConvexPoly(colour, poly - fix_origin, seg_cols[s][0], aa, _SHIFT)
        cv2.fillConvexPoly(mask, poly - fix_origin, 255, aa, _SHIFT)
        cv2.fillConvexPoly(parts, poly, base_id + PART_SEG0 + s, cv2.LINE_8, _SHIFT)
        cv2.fillConvexPoly(colour, layers_fix[1, s] - fix_origin, seg_cols[s][1], aa, _SHIFT)
        cv2.fillConvexPoly(colour, layers_fix[2, s] - fix_origin, seg_cols[s][2], aa, _SHIFT)
        f = _DISTAL_FINGER.get(s, -1)
        if f >= 0 and geo.nail_facing[f] > 0.2:
            nails.append((f, s))

    for s in back:
        draw_segment(s)
    # Palm: body and highlight (its dark rim went in first); creases when the palm faces the camera.
    cv2.fillPoly(parts, [poly_edge], int(base_id + PART_PALM), cv2.LINE_8, _SHIFT)
    for scale_k, shift_k, shade in ((0.88, 0.03, 0.9), (0.5, 0.14, 1.05)):
        poly = _fix(centre + (geo.palm - centre) * scale_k + light * size * shift_k)
        cv2.fillPoly(colour, [poly - fix_origin], _colour(palm_skin * shade), aa, _SHIFT)
    if palm_side and geo.facing > 0.35:
        thick = max(1, int(round(size * 0.035)))
        crease_col = _colour(palm_skin * 0.72)
        for c in geo.creases:
            cv2.polylines(colour, [_fix(c) - fix_origin], False, crease_col, thick, aa, _SHIFT)
    for s in front:
        draw_segment(s)
    if geo.facing < -0.2:
        _draw_knuckles(colour, geo, origin, skin, light)

    # Smooth the shading bands into gradients (the silhouette is already anti-aliased), composite.
    sigma = float(np.clip(0.28 * np.median(geo.seg_ra), 0.6, 4.0))
    colour = cv2.GaussianBlur(colour, (0, 0), sigma)
    # Nails are small and crisp: drawn after the blur, where their finger is still on top.
    for f, s in nails:
        centre = _nail_centre(geo, f, s)
        xi, yi = int(centre[0]), int(centre[1])
        if 0 <= xi < w and 0 <= yi < h and parts[yi, xi] == base_id + PART_SEG0 + s:
            _draw_nail(colour, geo, f, s, centre - origin, skin * seg_gain[s])
    alpha = mask.astype(np.float32) * np.float32(1.0 / 255.0)
    image[y0:y1, x0:x1] = cv2.blendLinear(colour, image[y0:y1, x0:x1], alpha, 1.0 - alpha)


def _perp(d: np.ndarray) -> np.ndarray:
    u = _unit(d)
    return np.stack([-u[:, 1], u[:, 0]], axis=1)


def _draw_knuckles(colour: np.ndarray, geo: HandGeometry, origin: np.ndarray, skin: np.ndarray,
                   light: np.ndarray) -> None:
    """Back of the hand: the four MCP knuckles as bumps (shadow below, highlight above), the
    strongest cue that separates a back view from the palm of the other hand."""
    mcp = geo.kp[[5, 9, 13, 17]] - origin  # [4, 2]
    r = geo.seg_ra[[3, 6, 9, 12]]  # proximal capsule radii at the knuckles
    line = mcp[-1] - mcp[0]
    angle = math.degrees(math.atan2(line[1], line[0]))
    up = geo.kp[9] - geo.kp[0]
    up = up / max(float(np.linalg.norm(up)), 1e-6)
    strength = min(-geo.facing, 1.0)
    bumps = ((-0.35, 1.0, skin * (1.0 - 0.2 * strength)), (0.15, 0.7, skin * (1.0 + 0.15 * strength)))
    for (x, y), rk in zip(mcp, r):
        if rk < 1.5:
            continue
        for shift, scale, col in bumps:
            c = _fix(np.array([x, y]) + up * rk * shift + light * rk * 0.15)
            axes = (int(rk * 0.85 * scale * _ONE), int(rk * 0.6 * scale * _ONE))
            cv2.ellipse(colour, (int(c[0]), int(c[1])), axes, angle, 0, 360, _colour(col), -1, cv2.LINE_AA, _SHIFT)


def _nail_centre(geo: HandGeometry, f: int, s: int) -> np.ndarray:
    # Near the tip, pushed towards the dorsal side as the nail turns away from the camera.
    a, b = geo.seg_a[s], geo.seg_b[s]
    return a + (b - a) * 0.72 + geo.nail_dir[f] * float(geo.seg_rb[s]) * 0.45


def _draw_nail(colour: np.ndarray, geo: HandGeometry, f: int, s: int, centre: np.ndarray, skin: np.ndarray) -> None:
    a, b = geo.seg_a[s], geo.seg_b[s]
    r = float(geo.seg_rb[s])
    facing = float(min(geo.nail_facing[f], 1.0))
    d = b - a
    length = float(np.linalg.norm(d))
    if length < 1e-3 or r < 1.5:
        return
    axes = (max(length * 0.32 + r * 0.25, 0.5), max(r * 0.7 * facing, 0.5))
    angle = math.degrees(math.atan2(d[1], d[0]))
    # A soft rim, then a lighter, pinker plate with a highlight.
    nail = skin + (_PALM_TINT * 1.05 - skin) * 0.35
    c = _fix(centre)
    c_pt = (int(c[0]), int(c[1]))
    for k, (sa, sb, col) in enumerate(((1.0, 1.0, skin * 0.8), (0.82, 0.78, nail), (0.4, 0.3, nail * 1.1))):
        shift = np.array([math.cos(math.radians(angle)), math.sin(math.radians(angle))]) * axes[0] * 0.25 * (k == 2)
        pt = c_pt if k < 2 else (int(c[0] + shift[0] * _ONE), int(c[1] + shift[1] * _ONE))
        cv2.ellipse(colour, pt, (int(axes[0] * sa * _ONE), int(axes[1] * sb * _ONE)), angle, 0, 360, _colour(col),
                    -1, cv2.LINE_AA, _SHIFT)


def _clip_segment_box(a: np.ndarray, b: np.ndarray, r: float, w: int, h: int) -> np.ndarray | None:
    """Box of the part of a thick segment a->b that lies in the image (Liang-Barsky clip)."""
    lo_img, hi_img = np.array([-r, -r]), np.array([w + r, h + r])
    d = b - a
    t0, t1 = 0.0, 1.0
    for k in range(2):
        if abs(d[k]) < 1e-9:
            if a[k] < lo_img[k] or a[k] > hi_img[k]:
                return None
            continue
        ta, tb = (lo_img[k] - a[k]) / d[k], (hi_img[k] - a[k]) / d[k]
        t0, t1 = max(t0, min(ta, tb)), min(t1, max(ta, tb))
    if t0 > t1:
        return None
    p0, p1 = a + d * t0, a + d * t1
    return np.concatenate([np.minimum(p0, p1) - r, np.maximum(p0, p1) + r])


# ---------------------------------------------------------------------------------------------
# Keypoint visibility
# ---------------------------------------------------------------------------------------------

def _own_parts() -> np.ndarray:
    own = np.zeros((NUM_KEYPOINTS, PARTS_PER_HAND), bool)
    own[0, [PART_PALM, PART_ARM]] = True
    for s, (a, b) in enumerate(SEGMENTS):
        own[a, PART_SEG0 + s] = True
        own[b, PART_SEG0 + s] = True
    own[[1, 5, 9, 13, 17], PART_PALM] = True
    return own


_OWN = _own_parts()


def keypoint_visibility(kp: np.ndarray, parts: np.ndarray, hand_index: int) -> np.ndarray:
    """[21] v per keypoint: 0 outside the image, 1 covered by anything that is not one of its
    own parts (another part of the hand in front, another hand, an occluder), else 2."""
    h, w = parts.shape
    inside = (kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h)
    xi = np.clip(kp[:, 0].astype(np.int64), 0, w - 1)
    yi = np.clip(kp[:, 1].astype(np.int64), 0, h - 1)
    top = parts[yi, xi].astype(np.int64)
    mine = (top // PARTS_PER_HAND == hand_index) & (top != OCCLUDER_ID)
    own = mine & _OWN[np.arange(NUM_KEYPOINTS), top % PARTS_PER_HAND]
    v = np.where(own, VIS_VISIBLE, VIS_OCCLUDED)
    return np.where(inside, v, VIS_ABSENT).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Backgrounds, occluders, camera effects
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _texture_tiles() -> tuple[np.ndarray, ...]:
    """Three 512x512 float32 textures in about [-1, 1], made once from a fixed seed:
    fractal noise (plaster, fabric), fine grain (paper, carpet) and streaks (wood)."""
    rs = np.random.default_rng(20240611)
    n = 512

    def octave(k: int, amp: float, shape: tuple[int, int] | None = None) -> np.ndarray:
        small = rs.normal(0.0, 1.0, size=shape or (k, k)).astype(np.float32)
        return cv2.resize(small, (n, n), interpolation=cv2.INTER_CUBIC) * amp

    fractal = sum(octave(k, 1.0 / (i + 1) ** 1.2) for i, k in enumerate((4, 8, 16, 32, 64, 128, 256)))
    grain = octave(128, 0.5) + octave(256, 1.0) + octave(512, 0.7)
    wood = octave(0, 1.0, (6, 96)) + octave(0, 0.4, (24, 256))
    tiles = []
    for t in (fractal, grain, wood):
        t = t - t.mean()
        tiles.append((t / (3.0 * t.std())).astype(np.float32))
    return tuple(tiles)


@lru_cache(maxsize=4)
def _noise_tile(h: int, w: int) -> np.ndarray:
    """Fixed Gaussian sensor-noise tile (int16, sigma 8), twice the image in each direction."""
    rs = np.random.default_rng(7)
    return np.round(rs.normal(0.0, 8.0, size=(2 * h, 2 * w, 3))).astype(np.int16)


@lru_cache(maxsize=4)
def _radial(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    return (r2 / 2.0).astype(np.float32)


def _texture_crop(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    tile = _texture_tiles()[int(rng.integers(0, 3))]
    size = int(rng.integers(96, 512))
    x, y = (int(v) for v in rng.integers(0, 512 - size + 1, size=2))
    crop = tile[y:y + size, x:x + size]
    if rng.random() < 0.5:
        crop = crop.T
    return cv2.resize(crop, (w, h), interpolation=cv2.INTER_LINEAR)


def render_background(rng: np.random.Generator, h: int, w: int, clutter_prob: float = 0.5) -> np.ndarray:
    """[h, w, 3] uint8: a smooth colour field, texture, sometimes a pattern, sometimes clutter.

    The smooth layers are made at half resolution and upsampled: they have no detail worth
    the cost, and camera noise adds the fine grain back later."""
    hh, hw = max(h // 2, 16), max(w // 2, 16)
    gh, gw = (int(v) for v in rng.integers(2, 6, size=2))
    base = rng.uniform(25, 235, size=3)
    grey = base.mean()
    base = grey + (base - grey) * rng.uniform(0.2, 1.0)  # indoor scenes are mostly muted
    field_small = (base + rng.normal(0.0, rng.uniform(10, 55), size=(gh, gw, 3))).astype(np.float32)
    img = cv2.resize(field_small, (hw, hh), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.85:
        tex = _texture_crop(rng, hh, hw)
        tint = rng.uniform(0.6, 1.0, size=3).astype(np.float32) * np.float32(rng.uniform(8, 60))
        img += tex[..., None] * tint
    if rng.random() < 0.25:
        img = _pattern(rng, img, hh, hw)
    img = np.clip(img, 0, 255).astype(np.uint8)
    sharp = rng.random() < 0.5
    if rng.random() < clutter_prob and not sharp:
        _clutter(rng, img)  # drawn small: upsampling leaves it out of focus
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < clutter_prob and sharp:
        _clutter(rng, img)
    return img


def _pattern(rng: np.random.Generator, img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Stripes or tiles (fabric, wallpaper, floor) blended over the colour field."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(6, 60)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    if rng.random() < 0.5:
        wave = np.sin(u * (2 * np.pi / period) + rng.uniform(0, 6.3))
        pat = (wave > rng.uniform(-0.5, 0.5)).astype(np.float32) if rng.random() < 0.5 else wave * 0.5 + 0.5
    else:
        v = -xx * math.sin(theta) + yy * math.cos(theta)
        pat = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    col = rng.uniform(0, 255, size=3).astype(np.float32)
    strength = rng.uniform(0.15, 0.6)
    return img + (col - img) * (pat[..., None] * strength)


def _random_colour(rng: np.random.Generator) -> tuple[float, float, float]:
    if rng.random() < 0.08:  # skin-coloured distractors: hard negatives for detectors
        return _colour(sample_skin(rng))
    c = rng.uniform(0, 255, size=3)
    return _colour(c.mean() + (c - c.mean()) * rng.uniform(0.3, 1.2))


def _clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Random furniture-like shapes: boxes, discs, ellipses, bars, polygons."""
    h, w = img.shape[:2]
    side = min(h, w)
    thick_max = max(2, int(side / 25))
    for _ in range(int(rng.integers(3, 16))):
        kind = int(rng.integers(0, 5))
        col = _random_colour(rng)
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        size = rng.uniform(0.05, 0.45) * side
        if kind == 0:
            box = cv2.boxPoints(((cx, cy), (size, size * rng.uniform(0.2, 1.5)), rng.uniform(0, 180)))
            cv2.fillConvexPoly(img, _fix(box), col, cv2.LINE_AA, _SHIFT)
        elif kind == 1:
            cv2.circle(img, (int(cx), int(cy)), int(size / 2), col, -1, cv2.LINE_AA)
        elif kind == 2:
            cv2.ellipse(img, (int(cx), int(cy)), (int(size / 2), int(size * rng.uniform(0.1, 0.5))),
                        rng.uniform(0, 180), 0, 360, col, -1, cv2.LINE_AA)
        elif kind == 3:
            p2 = (int(cx + rng.normal(0, side / 3)), int(cy + rng.normal(0, side / 3)))
            cv2.line(img, (int(cx), int(cy)), p2, col, int(rng.integers(1, thick_max)), cv2.LINE_AA)
        else:
            n = int(rng.integers(3, 7))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = size / 2 * rng.uniform(0.5, 1.0, n)
            poly = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], axis=1)
            cv2.fillPoly(img, [_fix(poly)], col, cv2.LINE_AA, _SHIFT)


def draw_occluder(rng: np.random.Generator, image: np.ndarray, parts: np.ndarray, box: np.ndarray) -> None:
    """A foreground object (bar, disc, block, polygon) over part of `box` (xyxy): drawn on the
    image with a little shading, and as OCCLUDER_ID on the part map."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    side = max(min(bw, bh), 4.0)
    centre = (box[:2] + box[2:]) / 2
    # Centre on the box's border region so the object covers a part of the hand, not all of it.
    ang = rng.uniform(0, 2 * np.pi)
    c = centre + np.array([math.cos(ang) * bw, math.sin(ang) * bh]) * rng.uniform(0.3, 0.5)
    kind = int(rng.integers(0, 4))
    if kind == 0:  # bar (pen, edge of a phone, a table edge)
        length, thick = rng.uniform(1.5, 3.0) * side, rng.uniform(0.12, 0.3) * side
        poly = cv2.boxPoints(((float(c[0]), float(c[1])), (length, thick), rng.uniform(0, 180)))
    elif kind == 1:  # block
        poly = cv2.boxPoints(((float(c[0]), float(c[1])), (rng.uniform(0.35, 0.6) * side,
                                                            rng.uniform(0.35, 0.6) * side), rng.uniform(0, 90)))
    elif kind == 2:  # disc / ellipse
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        ax, ay = rng.uniform(0.18, 0.32) * side, rng.uniform(0.18, 0.32) * side
        rot = rng.uniform(0, np.pi)
        x, y = ax * np.cos(t), ay * np.sin(t)
        poly = np.stack([c[0] + x * math.cos(rot) - y * math.sin(rot), c[1] + x * math.sin(rot) + y * math.cos(rot)], 1)
    else:  # irregular convex polygon
        n = int(rng.integers(4, 8))
        a = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = rng.uniform(0.2, 0.35) * side
        poly = np.stack([c[0] + r * np.cos(a), c[1] + r * np.sin(a)], axis=1)
    poly = cv2.convexHull(np.asarray(poly, np.float32)).reshape(-1, 2).astype(np.float64)
    col = rng.uniform(0, 255, size=3)
    col = col.mean() + (col - col.mean()) * 1.3
    fixed = _fix(poly)
    cv2.fillConvexPoly(image, fixed, _colour(col * 0.7), cv2.LINE_AA, _SHIFT)
    inner = poly.mean(axis=0) + (poly - poly.mean(axis=0)) * 0.85 + rng.normal(0, 0.03 * side, 2)
    cv2.fillConvexPoly(image, _fix(inner), _colour(col), cv2.LINE_AA, _SHIFT)
    cv2.fillConvexPoly(parts, fixed, OCCLUDER_ID, cv2.LINE_8, _SHIFT)


def apply_camera_effects(rng: np.random.Generator, img: np.ndarray, blur_prob: float, noise_prob: float,
                         noise_offset: np.ndarray | None = None) -> np.ndarray:
    """Exposure/white balance/gamma (one LUT), vignetting, blur (defocus or motion), sensor noise."""
    h, w = img.shape[:2]
    gain = rng.uniform(0.75, 1.2) * rng.uniform(0.9, 1.1, size=3)  # exposure x white balance
    gamma = rng.uniform(0.8, 1.25)
    x = np.arange(256, dtype=np.float64) / 255.0
    lut = np.clip(255.0 * (x[:, None] ** gamma) * gain[None] + rng.uniform(-10, 10), 0, 255)
    img = cv2.LUT(img, lut.astype(np.uint8).reshape(256, 1, 3))
    if rng.random() < 0.3:
        falloff = 1.0 - np.float32(rng.uniform(0.1, 0.45)) * _radial(h, w)
        img = cv2.multiply(img, cv2.merge([falloff, falloff, falloff]), dtype=cv2.CV_8U)
    if rng.random() < blur_prob:
        if rng.random() < 0.3:
            k = int(rng.integers(3, 10))
            kernel = np.zeros((k, k), np.float32)
            ang = rng.uniform(0, np.pi)
            c = (k - 1) / 2
            cv2.line(kernel, (int(round(c - math.cos(ang) * c)), int(round(c - math.sin(ang) * c))),
                     (int(round(c + math.cos(ang) * c)), int(round(c + math.sin(ang) * c))), 1.0, 1)
            img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1.0))
        else:
            img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.8)))
    if rng.random() < noise_prob:
        tile = _noise_tile(h, w)
        ox, oy = (int(v) for v in (noise_offset if noise_offset is not None else rng.integers(0, [w, h])))
        sigma = float(rng.uniform(0.2, 0.8))
        img = cv2.addWeighted(img, 1.0, tile[oy:oy + h, ox:ox + w], sigma, 0.0, dtype=cv2.CV_8U)
    return img
