"""Data layer on real files: YOLO-pose labels, ingest of the real samples, bad input, augment."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from components.augment import AugmentConfig, augment, augment_one, build_transform
from components.ingest import IngestConfig, ingest
from components.ingest import main as ingest_main
from shared.data.labels import HandLabel, LabelIssue, format_line, parse_line, read_labels, write_labels
from shared.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
ROBOFLOW = SHARED_DATA / "roboflow_gestures_v6"
HAGRID = SHARED_DATA / "hagrid_sample"
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not present")


def _kp_line(cls: int = 1) -> str:
    kps = " ".join(f"{0.3 + 0.01 * i:.4f} {0.4 + 0.01 * i:.4f} 2" for i in range(21))
    return f"{cls} 0.5 0.5 0.4 0.4 {kps}"


# ----------------------------------------------------------------------------- labels
@pytest.mark.parametrize(
    "line, reason",
    [
        ("1 0.5 0.5 0.2", "wrong token count 4"),  # too few values
        ("1 0.5 0.5 0.2 0.2 0.1", "wrong token count 6"),  # neither box nor pose
        ("1 0.5 abc 0.2 0.2", "non-numeric value 'abc'"),  # text in a number field
        ("7 0.5 0.5 0.2 0.2", "class id 7 outside"),  # class not in the five names
        ("1.5 0.5 0.5 0.2 0.2", "class id 1.5 outside"),  # fractional class
        ("1 1.5 0.5 0.2 0.2", "out of range"),  # centre beyond the image
        ("1 0.5 0.5 0 0.2", "zero or negative size"),  # empty box
        (_kp_line().replace("0.3000 0.4000 2", "1.3000 0.4000 2"), "keypoint 0 coordinates out of range"),
        (_kp_line().replace("0.3000 0.4000 2", "0.3000 0.4000 5"), "visibility must be 0, 1 or 2"),
        ("1 nan 0.5 0.2 0.2", "non-finite"),  # NaN slipped in
    ],
)
def test_parse_line_rejects(line: str, reason: str) -> None:
    parsed = parse_line(line, "x.txt", 3)
    assert isinstance(parsed, LabelIssue)
    assert reason in parsed.reason
    assert str(parsed).startswith("x.txt:3:")


def test_label_round_trip_and_detection_lines(tmp_path: Path) -> None:
    pose = parse_line(_kp_line(4), "a", 1)
    det = parse_line("2 0.25 0.75 0.1 0.2", "a", 2)
    assert isinstance(pose, HandLabel) and isinstance(det, HandLabel)
    assert pose.has_keypoints and not det.has_keypoints
    assert (det.keypoints == 0).all()  # plain YOLO line: keypoints absent, v=0
    write_labels(tmp_path / "l.txt", [pose, det])
    again, issues = read_labels(tmp_path / "l.txt")
    assert not issues
    assert [format_line(x) for x in again] == [format_line(pose), format_line(det)]
    np.testing.assert_allclose(again[0].keypoints, pose.keypoints, atol=1e-6)


# ----------------------------------------------------------------------------- ingest of real samples
@needs_shared
def test_ingest_roboflow_boxes_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "rf"
    result = ingest(IngestConfig(source="folder", input_dir=str(ROBOFLOW), output_dir=str(out)))
    manifest = json.loads(Path(result.manifest).read_text())
    src_names = ["five", "four", "one", "three", "two"]
    ours = {"five": 2, "one": 4}  # configs/gesture_map.yaml: five->normal_hand, one->pointer
    written = list(out.glob("*/labels/*.txt"))
    assert len(written) == manifest["total_images"] > 30
    for label_file in written:
        src = ROBOFLOW / "labels" / label_file.name
        src_rows = [list(map(float, ln.split())) for ln in src.read_text().splitlines() if ln.strip()]
        got, issues = read_labels(label_file)
        assert not issues and len(got) == len(src_rows)
        for row, lab in zip(src_rows, got):
            assert lab.cls == ours[src_names[int(row[0])]]
            np.testing.assert_allclose(lab.box, row[1:5], atol=1e-6)
    # Everything not written is accounted for, with a reason naming the class.
    n_src = len(list((ROBOFLOW / "images").iterdir()))
    assert manifest["total_images"] + len(manifest["rejected"]) == n_src
    assert all("class" in r["reason"] for r in manifest["rejected"])
    assert set(manifest["dropped_names"]) == {"two", "three", "four"}


@needs_shared
def test_ingest_hagrid_boxes_round_trip_grouped_by_user(tmp_path: Path) -> None:
    out = tmp_path / "hg"
    ingest(IngestConfig(source="hagrid", input_dir=str(HAGRID), output_dir=str(out)))
    ann = {}
    for f in (HAGRID / "annotations").glob("*/*.json"):
        for uuid, a in json.loads(f.read_text()).items():
            ann[f"{f.stem}_{uuid}"] = a
    users: dict[str, set[str]] = {}
    written = list(out.glob("*/labels/*.txt"))
    assert len(written) == 16  # 4 each of fist, one, palm, stop; everything else is dropped by the map
    for label_file in written:
        a = ann[label_file.stem]
        got, _ = read_labels(label_file)
        expected = sorted((x + w / 2, y + h / 2, w, h) for x, y, w, h in a["bboxes"])
        np.testing.assert_allclose(sorted(tuple(g.box) for g in got), expected, atol=1e-6)
        users.setdefault(a["user_id"], set()).add(label_file.parts[-3])
    assert all(len(splits) == 1 for splits in users.values())  # no person in two splits


# ----------------------------------------------------------------------------- bad input
def _write_jpeg(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    img = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(path), img)


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_ingest_reports_bad_items_and_keeps_good_ones(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "labels").mkdir()
    for i in range(6):
        _write_jpeg(src / "images" / f"good{i}.jpg", i)
        (src / "labels" / f"good{i}.txt").write_text(_kp_line(i % 5) + "\n")
    _write_jpeg(src / "images" / "nolabel.jpg", 9)  # allowed: an image without hands
    _write_jpeg(src / "images" / "malformed.jpg", 10)
    (src / "labels" / "malformed.txt").write_text(_kp_line(1) + "\n1 0.5 0.5 0.2\n")
    _write_jpeg(src / "images" / "truncated.jpg", 11)
    data = (src / "images" / "truncated.jpg").read_bytes()
    (src / "images" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (src / "labels" / "truncated.txt").write_text(_kp_line(2) + "\n")
    (src / "labels" / "orphan.txt").write_text(_kp_line(3) + "\n")
    before = _tree_hashes(src)

    out = tmp_path / "out"
    assert ingest_main(["--source", "folder", "--input_dir", str(src), "--output_dir", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    reasons = {Path(r["item"]).name: r["reason"] for r in manifest["rejected"]}
    assert set(reasons) == {"malformed.txt", "truncated.jpg", "orphan.txt"}
    assert "malformed.txt:2: wrong token count 4" in reasons["malformed.txt"]
    assert "unreadable" in reasons["truncated.jpg"]
    assert reasons["orphan.txt"] == "label without image"
    written = {p.stem for p in out.glob("*/images/*.jpg")}
    assert written == {f"good{i}" for i in range(6)} | {"nolabel"}
    assert sum(c["images_without_hands"] for c in manifest["counts"].values()) == 1
    rejected_files = {p.name.split("_", 1)[1] for p in (out / "rejected").iterdir() if p.suffix != ".jsonl"}
    assert {"malformed.txt", "malformed.jpg", "truncated.jpg", "orphan.txt"} <= rejected_files
    assert _tree_hashes(src) == before  # inputs untouched


def test_ingest_fails_only_when_nothing_usable(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(UserError, match="nothing usable remains"):  # run_cli: one error line, exit 2
        ingest_main(["--source", "folder", "--input_dir", str(src), "--output_dir", str(tmp_path / "o")])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "folder", "--input_dir", "/nonexistent/x"], "input folder not found"),  # wrong path
        (["--source", "hagrid"], "needs --input_dir"),  # missing argument
        (["--source", "roboflow"], "API key"),  # no key, no network use at all
    ],
)
def test_ingest_clear_errors(tmp_path: Path, args: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        ingest_main(args + ["--output_dir", str(tmp_path / "o")])


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("source: synthetic\nnum_imgs: 3\n")
    with pytest.raises(UserError, match="unknown config key.*num_imgs"):
        ingest_main(["--config", str(cfg), "--output_dir", str(tmp_path / "o")])


# ----------------------------------------------------------------------------- augment
def _pose_dataset(root: Path, n: int = 4) -> None:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = (rng.random((240, 320, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(root / "images" / f"im{i}.png"), img)
        hands = []
        for j in range(2):
            cx, cy = 0.3 + 0.4 * j, 0.5
            kp = np.zeros((21, 3))
            kp[:, 0] = cx + rng.uniform(-0.08, 0.08, 21)
            kp[:, 1] = cy + rng.uniform(-0.12, 0.12, 21)
            kp[:, 2] = 2
            kp[3, 2] = 1
            lo, hi = kp[:, :2].min(0) - 0.01, kp[:, :2].max(0) + 0.01
            hands.append(HandLabel(j + 1, np.r_[(lo + hi) / 2, hi - lo], kp))
        write_labels(root / "labels" / f"im{i}.txt", hands)


@pytest.mark.parametrize("aug_type", ["light", "standard", "heavy"])
def test_augment_keeps_keypoints_in_image_and_box(tmp_path: Path, aug_type: str) -> None:
    _pose_dataset(tmp_path / "in")
    before = _tree_hashes(tmp_path / "in")
    r = augment(AugmentConfig(images_dir=str(tmp_path / "in/images"), labels_dir=str(tmp_path / "in/labels"),
                              output_dir=str(tmp_path / "out"), num_augmentations=6, aug_type=aug_type, seed=1))
    assert r.images_out == 24 and not r.rejected
    margin = 0.02
    checked = 0
    for label_file in (tmp_path / "out/labels").glob("*.txt"):
        labels, issues = read_labels(label_file)
        assert not issues
        for lab in labels:
            x1, y1, x2, y2 = lab.xyxy()
            vis = lab.keypoints[lab.keypoints[:, 2] > 0]
            assert ((vis[:, :2] >= 0) & (vis[:, :2] <= 1)).all()
            assert (vis[:, 0] >= x1 - margin).all() and (vis[:, 0] <= x2 + margin).all()
            assert (vis[:, 1] >= y1 - margin).all() and (vis[:, 1] <= y2 + margin).all()
            checked += len(vis)
    assert checked > 100
    assert _tree_hashes(tmp_path / "in") == before


def test_augment_identity_reproduces_labels(tmp_path: Path) -> None:
    _pose_dataset(tmp_path / "in", n=2)
    transform = build_transform("none")
    for label_file in (tmp_path / "in/labels").glob("*.txt"):
        labels, _ = read_labels(label_file)
        image = cv2.imread(str(tmp_path / "in/images" / f"{label_file.stem}.png"))
        out_img, out_labels, dropped, hidden = augment_one(transform, image, labels)
        assert dropped == hidden == 0
        assert np.array_equal(out_img, image)
        assert [format_line(x) for x in out_labels] == [format_line(x) for x in labels]


def test_augment_drops_hand_that_leaves(tmp_path: Path) -> None:
    import albumentations as A

    image = np.zeros((100, 100, 3), np.uint8)
    kp = np.zeros((21, 3))
    kp[:, :2] = [0.9, 0.5]
    kp[:, 2] = 2
    inside = HandLabel(1, np.array([0.5, 0.5, 0.2, 0.2]), np.c_[np.full((21, 2), 0.5), np.full(21, 2)])
    edge = HandLabel(2, np.array([0.9, 0.5, 0.1, 0.1]), kp)
    shift = A.Compose([A.Affine(translate_px={"x": 30, "y": 0}, p=1.0)],
                      bbox_params=A.BboxParams(format="pascal_voc", label_fields=["hand_ids"], clip=True,
                                               min_visibility=0.1, min_area=1.0),
                      keypoint_params=A.KeypointParams(format="xy", label_fields=["kp_ids"], remove_invisible=False))
    _, labels, dropped, hidden = augment_one(shift, image, [inside, edge])
    assert dropped == 1 and hidden == 0 and len(labels) == 1  # the dropped hand takes its keypoints along
    np.testing.assert_allclose(labels[0].box[0], 0.8, atol=1e-6)


def test_ingest_synthetic_is_deterministic_with_sequences(tmp_path: Path) -> None:
    a = ingest(IngestConfig(source="synthetic", output_dir=str(tmp_path / "a"), num_images=12, sequences=1,
                            frames=8, seed=3, workers=1))
    b = ingest(IngestConfig(source="synthetic", output_dir=str(tmp_path / "b"), num_images=12, seed=3, workers=1))
    assert a.content_hash == b.content_hash  # same seed -> byte-identical images and labels
    assert sum(c["images"] for c in a.counts.values()) == 12
    gt = (tmp_path / "a/sequences/seq_000/gt/gt.txt").read_text().splitlines()
    assert gt and all(len(line.split(",")) == 10 for line in gt)
    assert len(list((tmp_path / "a/sequences/seq_000/images").glob("*.jpg"))) == 8
    data_yaml = (tmp_path / "a/data.yaml").read_text()
    assert "kpt_shape:\n- 21\n- 3" in data_yaml and "2_hands" in data_yaml
