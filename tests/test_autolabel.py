"""The MediaPipe teacher labels real photos (components.autolabel), and the landmark gesture
model that ships by default (shared.inference.gestures, components.gesture_model).

Real files from ../shared/data: hagrid_train (folder-labelled), hagrid_sample and
roboflow_gestures_v6 (other people, annotated) as the test set.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from components.autolabel import AutolabelConfig, autolabel, gesture_hand, tile_windows
from components.gesture_model import GestureModelConfig, build_gesture_model
from shared.data.labels import read_labels
from shared.data.realsets import read_gesture_test_set, read_hand_boxes
from shared.errors import UserError
from shared.hand import GESTURE_TO_ID, GESTURE_UNKNOWN, LABEL_NAMES, UNKNOWN_HAND_ID
from shared.inference.gesture_eval import evaluate_gestures, match_hands
from shared.inference.gestures import LandmarkGestureClassifier, TwoHandsRule, landmark_features
from shared.inference.pipeline import HandPipeline, PipelineConfig
from shared.models.blazepalm_post import iou_one_to_many
from shared.results import HandResults

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TRAIN = DATA / "hagrid_train" / "images"
SAMPLE = DATA / "hagrid_sample"
ROBOFLOW = DATA / "roboflow_gestures_v6"
pytestmark = pytest.mark.skipif(not TRAIN.is_dir() or not SAMPLE.is_dir(), reason="needs ../shared/data (real photos)")


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """A small folder of gesture folders: mapped (fist, one), dropped (call), unmapped
    (`wave`), a corrupt file and a photo with no hand."""
    root = tmp_path_factory.mktemp("photos")
    for folder, n in (("fist", 4), ("one", 4), ("call", 3)):
        (root / folder).mkdir()
        for p in sorted((TRAIN / folder).glob("*.jpg"))[:n]:
            shutil.copyfile(p, root / folder / p.name)
    (root / "wave").mkdir()
    shutil.copyfile(sorted((TRAIN / "palm").glob("*.jpg"))[0], root / "wave" / "w0.jpg")
    (root / "fist" / "broken.jpg").write_bytes((TRAIN / "fist").glob("*.jpg").__next__().read_bytes()[:2000])
    cv2.imwrite(str(root / "one" / "empty.jpg"), np.full((240, 320, 3), 127, np.uint8))
    return root


@pytest.fixture(scope="module")
def labelled(photo_folder, tmp_path_factory):
    before = _tree_hash(photo_folder)
    out = tmp_path_factory.mktemp("al") / "ds"
    result = autolabel(AutolabelConfig(input_dir=str(photo_folder), output_dir=str(out), splits=[1.0, 0.0, 0.0]))
    assert _tree_hash(photo_folder) == before, "autolabel modified its input"
    return result, out


def test_autolabel_writes_a_yolo_pose_dataset(labelled):
    result, out = labelled
    info = yaml.safe_load((out / "data.yaml").read_text())
    assert info["kpt_shape"] == [21, 3] and list(info["names"].values()) == list(LABEL_NAMES)
    classes = {}
    for label in (out / "train" / "labels").glob("*.txt"):
        labels, issues = read_labels(label, num_classes=len(LABEL_NAMES))
        assert not issues
        classes[label.stem] = [lb.cls for lb in labels]
        assert all(lb.has_keypoints for lb in labels)
    # Mapped folders: exactly one hand carries the folder's gesture, any other is "hand".
    fist = [c for k, c in classes.items() if k.startswith("fist_")]
    assert fist and all(c.count(GESTURE_TO_ID["fist"]) == 1 and set(c) <= {GESTURE_TO_ID["fist"], UNKNOWN_HAND_ID}
                        for c in fist)
    assert any(c.count(GESTURE_TO_ID["pointer"]) == 1 for k, c in classes.items() if k.startswith("one_"))
    # Dropped (call) and unmapped (wave) folders: hands kept, gesture unknown, never normal_hand.
    others = [c for k, c in classes.items() if k.startswith(("call_", "wave_"))]
    assert others and all(set(c) == {UNKNOWN_HAND_ID} for c in others)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["unmapped_names"].get("wave") and manifest["dropped_names"].get("call")
    assert Path(result.contact_sheet).is_file() and cv2.imread(result.contact_sheet) is not None


def test_autolabel_rejects_with_reasons_never_silently(labelled):
    _, out = labelled
    manifest = json.loads((out / "manifest.json").read_text())
    reasons = {Path(r["file"]).name: r["reason"] for r in manifest["rejected"]}
    assert "unreadable" in reasons["broken.jpg"] or "truncated" in reasons["broken.jpg"]
    assert reasons["empty.jpg"] == "teacher found no hand"
    copied = {json.loads(line)["item"] for line in (out / "rejected" / "reasons.jsonl").read_text().splitlines()}
    assert len(copied) == len(manifest["rejected"])
    assert len(list((out / "rejected").glob("*.jpg"))) == len(manifest["rejected"])


@pytest.mark.parametrize("case, make, message", [
    ("missing folder", lambda t: t / "nope", "does not exist"),
    ("folder with no images", lambda t: (t / "empty").mkdir() or t / "empty", "holds no images"),
])
def test_autolabel_bad_input(tmp_path, case, make, message):
    with pytest.raises(UserError, match=message):
        autolabel(AutolabelConfig(input_dir=str(make(tmp_path)), output_dir=str(tmp_path / "out")))


def test_tile_windows_cover_the_image_with_overlap():
    assert tile_windows(640, 480, 0) == [] and tile_windows(640, 480, 1) == []
    wins = tile_windows(640, 480, 2)
    assert len(wins) == 4 and wins[0][:2] == (0, 0) and wins[-1][2:] == (640, 480)
    assert wins[0][2] - wins[1][0] == round(640 * 0.6) - (640 - round(640 * 0.6))  # neighbours overlap
    covered = np.zeros((480, 640), bool)
    for x0, y0, x1, y1 in tile_windows(640, 480, 3):
        covered[y0:y1, x0:x1] = True
    assert covered.all()


def test_tiles_find_small_hands_and_never_take_the_gesture(tmp_path):
    """Two real hagrid_sample photos (people never trained on): in one the whole-photo teacher
    (MediaPipe's answer) finds 1 of the 2 annotated hands, in the other none. With --tiles 2 the
    tiles find the others (each matching an annotated hand); the gesture stays on the whole
    photo's hand, tile hands are `hand`; without tiles the hand-less photo is rejected."""
    truth = dict(read_hand_boxes(SAMPLE))
    small = SAMPLE / "images" / "like" / "27e67b42-6e4e-4ff2-8c93-5daeb70a7d60.jpg"
    none = SAMPLE / "images" / "rock" / "1ebed3c8-e731-497a-82fe-c3dfd330adf4.jpg"
    photos = tmp_path / "photos"
    (photos / "fist").mkdir(parents=True)
    shutil.copyfile(small, photos / "fist" / "small.jpg")
    shutil.copyfile(none, photos / "fist" / "none.jpg")
    runs = {}
    for tiles in (0, 2):
        out = tmp_path / f"t{tiles}"
        autolabel(AutolabelConfig(input_dir=str(photos), output_dir=str(out), splits=[1.0, 0.0, 0.0], tiles=tiles))
        runs[tiles] = ({p.stem: read_labels(p, num_classes=len(LABEL_NAMES))[0]
                        for p in (out / "train" / "labels").glob("*.txt")},
                       json.loads((out / "manifest.json").read_text()))
    labels0, manifest0 = runs[0]
    labels2, manifest2 = runs[2]
    assert [r["reason"] for r in manifest0["rejected"]] == ["teacher found no hand"]
    assert len(labels0["fist_small"]) == 1 and labels0["fist_small"][0].cls == GESTURE_TO_ID["fist"]
    assert manifest2["rejected"] == [] and manifest2["gesture_photos_with_tile_hands_only"] == 1
    for stem, src in (("fist_small", small), ("fist_none", none)):
        h, w = cv2.imread(str(src)).shape[:2]
        boxes = np.array([lb.box for lb in labels2[stem]]) * [w, h, w, h]
        xyxy = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
        annotated = truth[src] * [w, h, w, h]
        assert len(xyxy) == 2 and all(iou_one_to_many(b, annotated).max() > 0.5 for b in xyxy)
    assert sorted(lb.cls for lb in labels2["fist_small"]) == sorted([GESTURE_TO_ID["fist"], UNKNOWN_HAND_ID])
    assert labels2["fist_small"][0].cls == GESTURE_TO_ID["fist"]  # the whole photo's hand comes first, unchanged
    assert np.allclose(labels2["fist_small"][0].box, labels0["fist_small"][0].box)
    assert all(lb.cls == UNKNOWN_HAND_ID for lb in labels2["fist_none"])


def test_gesture_map_naming_an_unknown_class_is_an_error(tmp_path, photo_folder):
    bad = tmp_path / "map.yaml"
    bad.write_text("hagrid:\n  names: {fist: punch}\n  drop: []\n")
    with pytest.raises(UserError, match="unknown gesture"):
        autolabel(AutolabelConfig(input_dir=str(photo_folder), output_dir=str(tmp_path / "o"), gesture_map=str(bad)))


def test_raised_hand_rule_on_annotated_two_hand_photos():
    """hagrid_sample says which hand shows the gesture; the highest wrist must be that hand."""
    pipe = HandPipeline(PipelineConfig(static=True, max_hands=2, gesture_model="none"))
    checked = 0
    for ann_file in sorted((SAMPLE / "annotations").glob("*/*.json")):
        for uuid, ann in json.loads(ann_file.read_text()).items():
            gesture = [i for i, name in enumerate(ann["labels"]) if name != "no_gesture"]
            path = SAMPLE / "images" / ann_file.stem / f"{uuid}.jpg"
            if len(ann["bboxes"]) != 2 or len(gesture) != 1 or not path.is_file():
                continue
            rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            h, w = rgb.shape[:2]
            hands = pipe.process(rgb)
            if len(hands) != 2:
                continue
            boxes = np.array([[x, y, x + bw, y + bh] for x, y, bw, bh in ann["bboxes"]]) * [w, h, w, h]
            match = match_hands(boxes, hands.xyxy)
            if match[gesture[0]] < 0:
                continue
            which, _ = gesture_hand(hands.keypoints, 0.25)
            assert which == match[gesture[0]], f"{path.name}: the raised-hand rule picked the idle hand"
            checked += 1
    assert checked >= 10


def test_default_pipeline_gives_every_hand_a_gesture_on_real_photos():
    """No flags: the shipped landmark model answers for every hand found on photos of other people."""
    samples = read_gesture_test_set(SAMPLE) + (read_gesture_test_set(ROBOFLOW) if ROBOFLOW.is_dir() else [])
    report = evaluate_gestures(HandPipeline(PipelineConfig(static=True)), samples)
    found = report.targets - report.missed
    print(f"\nreal gesture accuracy {report.accuracy} ({report.targets} hands, {report.missed} missed)\n"
          f"{report.table()}")
    assert report.correct / found >= 0.9, report.errors
    assert report.unknown <= 2


def test_low_confidence_is_unknown_with_its_score():
    rgb = cv2.cvtColor(cv2.imread(str(sorted((SAMPLE / "images" / "palm").glob("*.jpg"))[0])), cv2.COLOR_BGR2RGB)
    hands = HandPipeline(PipelineConfig(static=True, gesture_threshold=1.01)).process(rgb)
    assert len(hands) and (hands.gesture == GESTURE_UNKNOWN).all() and (hands.gesture_score > 0).all()
    as_json = hands.to_json()
    assert {h["gesture"] for h in as_json} == {"unknown"}
    assert (HandResults.from_json(as_json).gesture == GESTURE_UNKNOWN).all()
    none = HandPipeline(PipelineConfig(static=True, gesture_model="none")).process(rgb)
    assert {h["gesture"] for h in none.to_json()} == {None}


def test_landmark_features_ignore_position_size_rotation():
    rng = np.random.default_rng(0)
    xy = rng.normal(size=(4, 21, 2)) * 40 + 200
    a = np.deg2rad(70)
    moved = (xy - 200) @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T * 2.5 + 31
    np.testing.assert_allclose(landmark_features(xy), landmark_features(moved), atol=1e-4)


@pytest.mark.parametrize("boxes, pairs", [
    ([[0, 0, 10, 10], [11, 0, 21, 10]], [(0, 1)]),  # side by side, 1 px apart: one 2_hands sign
    ([[0, 0, 10, 10], [30, 0, 40, 10]], []),  # a hand's width apart: two hands
    ([[0, 0, 10, 10], [10, 0, 14, 4]], []),  # touching but far smaller (a hand behind): not a pair
])
def test_two_hands_rule(boxes, pairs):
    assert TwoHandsRule(max_gap=0.1).pairs(np.array(boxes, np.float64)) == pairs


def test_gesture_model_is_deterministic_and_loads(labelled, tmp_path):
    _, data = labelled
    results = []
    for run in ("a", "b"):
        cfg = GestureModelConfig(data=str(data), output_dir=str(tmp_path / run), epochs=60, synthetic_per_class=20)
        results.append(build_gesture_model(cfg))
    wa, wb = (np.load(tmp_path / run / "weights.npz") for run in ("a", "b"))
    assert all(np.array_equal(wa[k], wb[k]) for k in wa.files)
    clf = LandmarkGestureClassifier.load(tmp_path / "a")
    assert set(clf.classes) >= {"fist", "pointer", "pinch"}
    card = json.loads((tmp_path / "a" / "card.json").read_text())
    assert card["recipe"]["seed"] == 0 and (tmp_path / "a" / "MODEL_CARD.md").is_file()


def test_shipped_gesture_model_has_a_card():
    clf = LandmarkGestureClassifier.load()
    assert clf.card["metrics"]["real_test"]["accuracy"] > 0
    assert set(clf.classes) == {"fist", "normal_hand", "pinch", "pointer"}
