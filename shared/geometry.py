"""ROI geometry: image -> upright square crop, and crop points back to image pixels.

A `Roi` is a rotated square in image pixels: centre, side and angle (radians,
counter-clockwise as seen on screen, i.e. the hand's "up" direction rotated by
`angle` from the image's up). The crop model always sees an upright hand, so the
crop's affine map undoes the rotation. All functions are pure and batched where
it pays.

`warp_roi` is the crop the inference pipeline feeds its networks: MediaPipe's own
(ImageToTensorCalculator on CPU: OpenCV 3.4's warpPerspective of the ROI's corners onto
the output's corners, bilinear in fixed point), computed bit-exactly and the same with
any OpenCV or NumPy version (see `fixed_point_map`). `warp_crop` (cv2.warpAffine) stays
for training crops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from shared.jit import compiled


@dataclass(frozen=True)
class Roi:
    cx: float
    cy: float
    size: float  # side of the square, pixels
    angle: float = 0.0  # radians

    def as_array(self) -> np.ndarray:
        return np.array([self.cx, self.cy, self.size, self.angle], dtype=np.float64)

    def corners(self) -> np.ndarray:
        """[4, 2] corners (top-left, top-right, bottom-right, bottom-left of the crop)."""
        half = self.size / 2
        local = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
        c, s = math.cos(self.angle), math.sin(self.angle)
        # Screen coordinates have y down: a counter-clockwise on-screen rotation by
        # `angle` maps (x, y) -> (x c + y s, -x s + y c).
        rot = np.array([[c, s], [-s, c]])
        return local @ rot.T + [self.cx, self.cy]

    def bounding_xyxy(self) -> np.ndarray:
        pts = self.corners()
        return np.concatenate([pts.min(0), pts.max(0)])


def roi_from_box(xyxy: np.ndarray, expand_ratio: float = 0.3, angle: float = 0.0) -> Roi:
    """Square ROI around a box: the longer side grown by `expand_ratio` (0.3 = +30%)."""
    x1, y1, x2, y2 = [float(v) for v in xyxy]
    side = max(x2 - x1, y2 - y1) * (1.0 + expand_ratio)
    return Roi((x1 + x2) / 2, (y1 + y2) / 2, max(side, 1.0), angle)


def hand_angle(wrist: np.ndarray, middle_mcp: np.ndarray) -> float:
    """Rotation that makes the wrist -> middle-finger-base direction point up.

    0 when the finger base is straight above the wrist; positive when the hand
    leans left on screen (counter-clockwise), as MediaPipe computes it.
    """
    dx = float(middle_mcp[0] - wrist[0])
    dy = float(middle_mcp[1] - wrist[1])
    return math.atan2(-dx, -dy)


def roi_from_keypoints(keypoints: np.ndarray, expand_ratio: float = 0.3, rotate: bool = True,
                       min_visibility: float = 0.0) -> Roi:
    """ROI for the next frame from a hand's keypoints ([21, 2+] pixels), MediaPipe-style:
    rotated so the hand is upright, a square around the rotated points, expanded."""
    kp = np.asarray(keypoints, dtype=np.float64)
    pts = kp[:, :2]
    if kp.shape[1] > 2:
        keep = kp[:, 2] > min_visibility
        if keep.sum() >= 2:
            pts = pts[keep]
    angle = hand_angle(kp[0, :2], kp[9, :2]) if rotate else 0.0
    c, s = math.cos(angle), math.sin(angle)
    # Undo the rotation (inverse of the Roi.corners map), measure extents there.
    inv = np.array([[c, -s], [s, c]])
    local = pts @ inv.T
    lo, hi = local.min(0), local.max(0)
    centre_local = (lo + hi) / 2
    side = float(max(hi - lo)) * (1.0 + expand_ratio)
    centre = centre_local @ np.array([[c, s], [-s, c]]).T
    return Roi(float(centre[0]), float(centre[1]), max(side, 1.0), angle)


def crop_matrix(roi: Roi, out_size: int) -> np.ndarray:
    """[2, 3] affine map from image pixels to crop pixels (for cv2.warpAffine)."""
    src = roi.corners()[:3].astype(np.float32)
    dst = np.array([[0, 0], [out_size, 0], [out_size, out_size]], dtype=np.float32)
    return cv2.getAffineTransform(src, dst).astype(np.float64)


def invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def warp_crop(image: np.ndarray, roi: Roi, out_size: int, border_value: int = 0) -> np.ndarray:
    """The upright `out_size` x `out_size` crop of `image` under `roi`."""
    m = crop_matrix(roi, out_size)
    return cv2.warpAffine(image, m, (out_size, out_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(border_value,) * 3)


# --------------------------------------------------------------------------- MediaPipe's crop warp
#
# MediaPipe's ImageToTensorCalculator (CPU) cuts a ROI out as OpenCV 3.4 does it: the ROI's
# corners (cv::RotatedRect::points, float32) and the output's corners give a perspective
# matrix (cv::getPerspectiveTransform: an 8x8 linear system solved by LU with partial
# pivoting), cv::warpPerspective inverts it (3x3 adjugate / determinant), evaluates it per
# output pixel in float64, rounds each source position to 1/32 pixel (round half to even)
# and blends the four neighbours with integer weights (32 - fx)(32 - fy) ... that sum to
# 2^10. The pixels are an exact function of that map, and the map's rounding ties (frequent:
# an odd image side puts the letterbox at half pixels) depend on the last bits of the
# matrix, so the matrix is computed here with the same operations in the same order. The
# blend is done by cv2.remap on the fixed-point map: bit-exact with OpenCV 3.4, 4.x and 5.x
# (checked once per process against the NumPy blend below, used instead where it differs),
# while cv2.warpPerspective/warpAffine themselves compute in floating point from OpenCV 5
# on and give other pixels.

SUBPIXEL_BITS = 5  # OpenCV's INTER_BITS: source positions in 1/32 pixel
SUBPIXEL = 1 << SUBPIXEL_BITS
BORDERS = ("replicate", "zero")  # ImageToTensor's BORDER_REPLICATE (its default) and BORDER_ZERO
_F32 = np.float32


def roi_crop_to_image(roi: Roi, out_size: int) -> np.ndarray:
    """[2, 3] affine from crop pixels to image pixels (float64): the crop's corner (0, 0) is
    the ROI's top-left corner and (out_size, out_size) its bottom-right one; pixel (u, v) of
    the crop is sampled at the image point this maps (u, v) to (MediaPipe's convention; its
    landmark projection is the same map)."""
    tl, tr, _, bl = roi.corners()
    return np.stack([(tr - tl) / out_size, (bl - tl) / out_size, tl], axis=1)  # columns: d/du, d/dv, offset


def _rotated_rect_points(roi: Roi) -> np.ndarray:
    """cv::RotatedRect(centre, (side, side), degrees).points() in float32, as ImageToTensor
    builds it from MediaPipe's float ROI: [4, 2] bottom-left, top-left, top-right, bottom-right."""
    cx, cy, side = _F32(roi.cx), _F32(roi.cy), _F32(roi.size)
    rotation = _F32(-roi.angle)  # MediaPipe's rotation turns the other way
    degrees = float(_F32(float(rotation * _F32(180.0)) / math.pi))
    b = _F32(_F32(math.cos(degrees * math.pi / 180.0)) * _F32(0.5))
    a = _F32(_F32(math.sin(degrees * math.pi / 180.0)) * _F32(0.5))
    p0 = (cx - a * side - b * side, cy + b * side - a * side)
    p1 = (cx + a * side - b * side, cy - b * side - a * side)
    two = _F32(2.0)
    return np.array([p0, p1, (two * cx - p0[0], two * cy - p0[1]), (two * cx - p1[0], two * cy - p1[1])], _F32)


def _solve_lu(a: list[list[float]], b: list[float]) -> list[float]:
    """a x = b by Gaussian elimination with partial pivoting, OpenCV's LU step by step (the
    same float64 operations in the same order, on Python floats: the result is bit-identical)."""
    a, b = [row[:] for row in a], b[:]
    n = len(a)
    for i in range(n):
        k = i
        for j in range(i + 1, n):  # the first of equal maxima, as OpenCV's strict '>'
            if abs(a[j][i]) > abs(a[k][i]):
                k = j
        if k != i:
            a[i], a[k] = a[k], a[i]  # OpenCV swaps columns >= i only; those < i are never read again
            b[i], b[k] = b[k], b[i]
        d = -1.0 / a[i][i]
        row_i = a[i]
        for j in range(i + 1, n):
            row_j = a[j]
            alpha = row_j[i] * d
            for c in range(i + 1, n):
                row_j[c] += alpha * row_i[c]
            b[j] += alpha * b[i]
    for i in range(n - 1, -1, -1):
        acc = b[i]
        for c in range(i + 1, n):
            acc -= a[i][c] * b[c]
        b[i] = acc / a[i][i]
    return b


def _perspective_transform(src: np.ndarray, dst: np.ndarray) -> list[float]:
    """cv::getPerspectiveTransform(src, dst) for float32 [4, 2] points: the 3x3 float64
    matrix, row-major."""
    # a[i][6:] are float32 products in OpenCV (Point2f * Point2f), then widened.
    products = np.concatenate([-src * dst[:, :1], -src * dst[:, 1:]], axis=1).astype(np.float64).tolist()
    a, b = [], []
    for i in range(4):
        sx, sy = float(src[i, 0]), float(src[i, 1])
        a.append([sx, sy, 1.0, 0.0, 0.0, 0.0, products[i][0], products[i][1]])
        b.append(float(dst[i, 0]))
    for i in range(4):
        sx, sy = float(src[i, 0]), float(src[i, 1])
        a.append([0.0, 0.0, 0.0, sx, sy, 1.0, products[i][2], products[i][3]])
        b.append(float(dst[i, 1]))
    return _solve_lu(a, b) + [1.0]


def _invert_3x3(m: list[float]) -> list[float]:
    """cv::invert of a 3x3 float64 matrix (row-major; adjugate x 1/determinant in OpenCV's
    order of operations)."""
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m
    det = m00 * (m11 * m22 - m12 * m21) - m01 * (m10 * m22 - m12 * m20) + m02 * (m10 * m21 - m11 * m20)
    d = 1.0 / det
    return [(m11 * m22 - m12 * m21) * d, (m02 * m21 - m01 * m22) * d, (m01 * m12 - m02 * m11) * d,
            (m12 * m20 - m10 * m22) * d, (m00 * m22 - m02 * m20) * d, (m02 * m10 - m00 * m12) * d,
            (m10 * m21 - m11 * m20) * d, (m01 * m20 - m00 * m21) * d, (m00 * m11 - m01 * m10) * d]


def _output_to_image(roi: Roi, out_w: int, out_h: int) -> list[float]:
    """The 3x3 (row-major float64) map from crop pixels to image pixels that cv::warpPerspective
    inverts from ImageToTensor's ROI corners."""
    src = _rotated_rect_points(roi)
    dst = np.array([[0, out_h], [0, 0], [out_w, 0], [out_w, out_h]], _F32)
    return _invert_3x3(_perspective_transform(src, dst))


def fixed_point_map(roi: Roi, out_w: int, out_h: int) -> tuple[np.ndarray, np.ndarray]:
    """Source positions of every output pixel of MediaPipe's crop of `roi`, in 1/32 pixel
    (X, Y int32 [out_h, out_w]), exactly as cv::warpPerspective (OpenCV 3.4) computes them."""
    m = _output_to_image(roi, out_w, out_h)  # output -> image
    # warpPerspective works in blocks of bw columns: each row of a block starts from the
    # block's first column x0 and adds the offset x1 (the same float64 sums as OpenCV's).
    bh = min(16, out_h)
    bw = min(1024 // bh, out_w)
    u = np.arange(out_w)
    x0 = ((u // bw) * bw).astype(np.float64)[None, :]
    x1 = (u % bw).astype(np.float64)[None, :]
    y = np.arange(out_h, dtype=np.float64)[:, None]
    if m[6] == 0.0 and m[7] == 0.0:  # affine (the usual case): one scale for every pixel
        w = SUBPIXEL / m[8] if m[8] != 0.0 else 0.0
    else:
        w = (m[6] * x0 + m[7] * y + m[8]) + m[6] * x1
        w = np.where(w != 0, SUBPIXEL / np.where(w != 0, w, 1.0), 0.0)
    out = []
    for a, b, c in ((m[0], m[1], m[2]), (m[3], m[4], m[5])):
        t = np.add(a * x0, b * y)  # ((a x0 + b y) + c) + a x1, then x w: OpenCV's order, in place
        t += c
        t += a * x1
        t *= w
        limit = float(1 << 30)  # saturation as OpenCV's casts; never reached by a sane ROI
        if not (-limit < t.min() and t.max() < limit):
            np.clip(t, -limit, limit, out=t)
        out.append(np.rint(t, out=t).astype(np.int32))  # rint: half to even, as cvRound
    return out[0], out[1]


def sample_fixed_point_numpy(image: np.ndarray, x: np.ndarray, y: np.ndarray, border: str = "replicate"
                             ) -> np.ndarray:
    """The reference blend: uint8 [H', W', C] at fixed-point positions (`fixed_point_map`).
    'replicate': outside neighbours take the nearest edge pixel; 'zero': they count as 0."""
    h, w = image.shape[:2]
    img = image.reshape(h * w, -1)
    x0, y0 = x >> SUBPIXEL_BITS, y >> SUBPIXEL_BITS  # floor
    fx, fy = x & (SUBPIXEL - 1), y & (SUBPIXEL - 1)
    xs, ys = np.stack([x0, x0 + 1]), np.stack([y0, y0 + 1])  # [2, H', W']
    wx, wy = np.stack([SUBPIXEL - fx, fx]), np.stack([SUBPIXEL - fy, fy])
    if border == "zero":
        wx, wy = wx * ((xs >= 0) & (xs < w)), wy * ((ys >= 0) & (ys < h))
    xs, ys = np.clip(xs, 0, w - 1), np.clip(ys, 0, h - 1)
    idx = ys[:, None] * w + xs[None, :]  # [2 (y), 2 (x), H', W']
    weights = (wy[:, None] * wx[None, :]).reshape(4, -1, 1)  # sum: 2^10 per pixel
    acc = (img[idx.reshape(-1)].reshape(4, -1, img.shape[1]).astype(np.int32) * weights).sum(0)
    return ((acc + (1 << (2 * SUBPIXEL_BITS - 1))) >> (2 * SUBPIXEL_BITS)).astype(np.uint8).reshape(
        *x.shape, img.shape[1])


def _sample_fixed_point_cv2(image: np.ndarray, x: np.ndarray, y: np.ndarray, border: str) -> np.ndarray:
    xi, yi = x >> SUBPIXEL_BITS, y >> SUBPIXEL_BITS
    if xi.size and (min(xi.min(), yi.min()) < -32768 or max(xi.max(), yi.max()) > 32767):  # int16 map
        return sample_fixed_point_numpy(image, x, y, border)  # never for a sane ROI
    xy = np.empty((*x.shape, 2), np.int16)
    xy[..., 0], xy[..., 1] = xi, yi
    frac = ((y & (SUBPIXEL - 1)) << SUBPIXEL_BITS | (x & (SUBPIXEL - 1))).astype(np.uint16)
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    out = cv2.remap(image, xy.astype(np.int16), frac, cv2.INTER_LINEAR, borderMode=mode, borderValue=0)
    return out.reshape(*x.shape, -1)


@lru_cache(maxsize=1)
def _cv2_remap_is_exact() -> bool:
    """Whether this OpenCV's fixed-point remap gives the reference blend (once per process,
    on a random image, positions inside, on and outside the border)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    x = rng.integers(-3 * SUBPIXEL, 34 * SUBPIXEL, (17, 19), dtype=np.int32)
    y = rng.integers(-3 * SUBPIXEL, 26 * SUBPIXEL, (17, 19), dtype=np.int32)
    return all(np.array_equal(_sample_fixed_point_cv2(image, x, y, b), sample_fixed_point_numpy(image, x, y, b))
               for b in BORDERS)


def sample_fixed_point(image: np.ndarray, x: np.ndarray, y: np.ndarray, border: str = "replicate") -> np.ndarray:
    """`sample_fixed_point_numpy`'s pixels, by cv2.remap where that is bit-exact (20-40x faster)."""
    if border not in BORDERS:
        raise ValueError(f"border {border!r} is not one of {BORDERS}")
    if _cv2_remap_is_exact():
        return _sample_fixed_point_cv2(image, x, y, border)
    return sample_fixed_point_numpy(image, x, y, border)


@compiled
def _fixed_point_map_compiled(m: np.ndarray, out_w: int, out_h: int) -> tuple[np.ndarray, np.ndarray]:
    """`fixed_point_map`'s X, Y, compiled: per pixel the same float64 operations in the same order
    (numba leaves IEEE order alone: no fused multiply-add), affine or perspective, so the same
    positions; tests hold it to the numpy version bit for bit. ~40x faster."""
    xs = np.empty((out_h, out_w), np.int32)
    ys = np.empty((out_h, out_w), np.int32)
    bh = min(16, out_h)
    bw = min(1024 // bh, out_w)
    affine = m[6] == 0.0 and m[7] == 0.0
    scale = 32.0 / m[8] if m[8] != 0.0 else 0.0  # SUBPIXEL / m[8]
    limit = float(1 << 30)
    # the per-column products (block start x0, offset x1) once; each is the same float64 product
    ax0, ax1, dx0, dx1 = np.empty(out_w), np.empty(out_w), np.empty(out_w), np.empty(out_w)
    gx0, gx1 = np.empty(out_w), np.empty(out_w)
    for u in range(out_w):
        x0 = float((u // bw) * bw)
        x1 = float(u % bw)
        ax0[u], ax1[u], dx0[u], dx1[u] = m[0] * x0, m[0] * x1, m[3] * x0, m[3] * x1
        gx0[u], gx1[u] = m[6] * x0, m[6] * x1
    for v in range(out_h):
        y = float(v)
        by, ey, hy = m[1] * y, m[4] * y, m[7] * y
        for u in range(out_w):
            w = scale
            if not affine:  # ((g x0 + h y) + i) + g x1, then SUBPIXEL / w (0 where w is 0)
                w = gx0[u] + hy
                w += m[8]
                w += gx1[u]
                w = 32.0 / w if w != 0.0 else 0.0
            tx = ax0[u] + by  # ((a x0 + b y) + c) + a x1, then x w: OpenCV's order
            tx += m[2]
            tx += ax1[u]
            tx *= w
            ty = dx0[u] + ey
            ty += m[5]
            ty += dx1[u]
            ty *= w
            xs[v, u] = np.int32(np.rint(min(max(tx, -limit), limit)))
            ys[v, u] = np.int32(np.rint(min(max(ty, -limit), limit)))
    return xs, ys


def warp_roi(image: np.ndarray, roi: Roi, out_size: int, border: str = "replicate") -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's crop of `roi`, bit for bit: (uint8 [S, S, C], its crop->image [2, 3] affine)."""
    m = np.array(_output_to_image(roi, out_size, out_size), np.float64)
    xy = _fixed_point_map_compiled(m, out_size, out_size)
    return sample_fixed_point(image, *xy, border=border), roi_crop_to_image(roi, out_size)


def warp_roi_exact(image: np.ndarray, roi: Roi, out_size: int, border: str = "replicate"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The crop of `roi` at the same source positions as `warp_roi`, without its 1/32-px steps and
    its rounding to uint8: (float32 [S, S, C] in 0..255, crop->image [2, 3] affine). Continuous in
    the ROI, so a 1e-4 px ROI difference moves the crop by ~1e-4 of a grey level (with `warp_roi`
    it moves some pixels by a whole grey level); not MediaPipe's crop (up to ~1.5 grey levels apart)."""
    if border not in BORDERS:
        raise ValueError(f"border {border!r} is not one of {BORDERS}")
    m = np.array(_output_to_image(roi, out_size, out_size), np.float64)
    src = np.ascontiguousarray(image if image.ndim == 3 else image[..., None])
    out = _bilinear_exact_compiled(src, m, out_size, out_size, border == "replicate")
    return (out if image.ndim == 3 else out[..., 0]), roi_crop_to_image(roi, out_size)


@compiled
def _bilinear_exact_compiled(image: np.ndarray, m: np.ndarray, out_w: int, out_h: int,
                             replicate: bool) -> np.ndarray:
    """float32 [out_h, out_w, C]: each output pixel (u, v) blends the source pixels around
    (x, y) = the 3x3 map `m` of (u, v), bilinearly in float64, with pixel centres at integers;
    neighbours outside the image take the edge pixel (`replicate`) or 0."""
    h, w, c = image.shape
    out = np.zeros((out_h, out_w, c), np.float32)
    for v in range(out_h):
        for u in range(out_w):
            d = m[6] * u + m[7] * v + m[8]
            if d == 0.0:
                continue
            x = (m[0] * u + m[1] * v + m[2]) / d
            y = (m[3] * u + m[4] * v + m[5]) / d
            if not (-1e9 < x < 1e9 and -1e9 < y < 1e9):
                continue
            x0, y0 = math.floor(x), math.floor(y)
            fx, fy = x - x0, y - y0
            for k in range(c):
                acc = 0.0
                for dy in range(2):
                    wy = fy if dy else 1.0 - fy
                    yi = y0 + dy
                    if yi < 0 or yi >= h:
                        if not replicate:
                            continue
                        yi = 0 if yi < 0 else h - 1
                    for dx in range(2):
                        wx = fx if dx else 1.0 - fx
                        xi = x0 + dx
                        if xi < 0 or xi >= w:
                            if not replicate:
                                continue
                            xi = 0 if xi < 0 else w - 1
                        acc += wy * wx * image[int(yi), int(xi), k]
                out[v, u, k] = acc
    return out


def apply_affine(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Map [..., 2+] points with a [2, 3] affine; extra columns (z, v) pass through."""
    pts = np.asarray(points, dtype=np.float64)
    out = pts.copy()
    out[..., :2] = pts[..., :2] @ m[:, :2].T + m[:, 2]
    return out


def image_to_crop(points: np.ndarray, roi: Roi, out_size: int) -> np.ndarray:
    return apply_affine(points, crop_matrix(roi, out_size))


def crop_to_image(points: np.ndarray, roi: Roi, out_size: int) -> np.ndarray:
    return apply_affine(points, invert_affine(crop_matrix(roi, out_size)))


def box_from_keypoints(keypoints: np.ndarray, min_visibility: float = 0.0, pad: float = 0.0) -> np.ndarray | None:
    """Axis-aligned [4] xyxy around the labelled keypoints, or None with fewer than 2."""
    kp = np.asarray(keypoints, dtype=np.float64)
    keep = kp[:, 2] > min_visibility if kp.shape[1] > 2 else np.ones(len(kp), bool)
    if keep.sum() < 2:
        return None
    lo, hi = kp[keep, :2].min(0), kp[keep, :2].max(0)
    margin = (hi - lo) * pad
    return np.concatenate([lo - margin, hi + margin])


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[N, M] IoU between xyxy boxes."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
