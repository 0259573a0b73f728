"""Relabel: exactly the lines the classifier disagrees on with enough confidence change, and only
their class token; everything else stays byte for byte.

The classifier is a real timm network whose last layer is scaled up so that it is
confident (and wrong about many hands); the expected changes are computed here
independently, from the geometry functions and the model, not from the relabeler.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import pytest
import torch

from components.relabel import RelabelConfig, main, relabel, replace_class
from shared.data.labels import parse_line
from shared.errors import UserError
from shared.geometry import roi_from_box, warp_crop
from shared.hand import GESTURES
from shared.models.classifier import create_timm_classifier
from shared.training.callbacks import CHECKPOINT_FORMAT, save_checkpoint
from tests.test_train import snapshot, write_dataset

IMG = 64
EXPAND = 0.3


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    torch.manual_seed(3)
    model = create_timm_classifier("mobilenetv3_small_050", num_classes=len(GESTURES))
    with torch.no_grad():  # sharpen the random head: confident predictions, many of them "wrong"
        model.model.classifier.weight.mul_(40.0)
    return model.eval()


@pytest.fixture()
def dataset(tmp_path) -> Path:
    root = write_dataset(tmp_path / "hands", {"train": 6})
    labels = root / "train" / "labels"
    # A malformed line in the middle of a file: kept as is, reported, numbering of the others intact.
    first = sorted(labels.glob("*.txt"))[0]
    lines = first.read_text().splitlines(keepends=True)
    first.write_text(lines[0] + "7 0.5 0.5\n" + "".join(lines[1:]))
    (labels / "classes.txt").write_text("not a label file\n")
    return root


@pytest.fixture()
def checkpoint(classifier, tmp_path) -> Path:
    state = {"format": CHECKPOINT_FORMAT, "task": "classifier", "model_name": "timm:mobilenetv3_small_050",
             "model_kwargs": {"num_classes": len(GESTURES)}, "img_size": IMG,
             "roi": {"expand_ratio": EXPAND, "rotate": False, "source": "box"},
             "state_dict": classifier.state_dict()}
    return save_checkpoint(state, tmp_path / "best.pt")


def expected_changes(classifier, images: Path, labels: Path, threshold: float) -> tuple[dict, list[float]]:
    """{(file, line): new class} and the confidences of every disagreement, computed from scratch."""
    changes, disagreements = {}, []
    for label_file in sorted(labels.glob("*.txt")):
        image_path = images / f"{label_file.stem}.png"
        if not image_path.is_file():
            continue
        image = cv2.imread(str(image_path))
        h, w = image.shape[:2]
        for lineno, text in enumerate(label_file.read_text().splitlines(), 1):
            label = parse_line(text, str(label_file), lineno)
            if not hasattr(label, "box"):
                continue
            crop = cv2.cvtColor(warp_crop(image, roi_from_box(label.xyxy(w, h), EXPAND), IMG), cv2.COLOR_BGR2RGB)
            x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
            with torch.no_grad():
                prob = classifier(x).softmax(-1)[0]
            conf, pred = float(prob.max()), int(prob.argmax())
            if pred != label.cls:
                disagreements.append(conf)
                if conf >= threshold:
                    changes[(label_file.name, lineno)] = pred
    return changes, disagreements


def check_output(original: dict[str, bytes], out_dir: Path, changes: dict) -> None:
    for name, data in original.items():
        new = (out_dir / name).read_bytes()
        old_lines = data.decode().splitlines(keepends=True)
        new_lines = new.decode().splitlines(keepends=True)
        assert len(old_lines) == len(new_lines), name
        for lineno, (a, b) in enumerate(zip(old_lines, new_lines), 1):
            if (name, lineno) in changes:
                assert b == replace_class(a, changes[(name, lineno)]) and a != b
                assert a.split(" ", 1)[1] == b.split(" ", 1)[1]  # box + keypoints byte for byte
            else:
                assert a == b, f"{name}:{lineno} changed"


def test_relabel_changes_exactly_the_confident_disagreements(classifier, dataset, checkpoint, tmp_path):
    images, labels = dataset / "train" / "images", dataset / "train" / "labels"
    _, confidences = expected_changes(classifier, images, labels, 0.0)
    assert len(confidences) >= 3, "the test needs disagreements"
    # Some disagreements are confident enough, some not; halfway between two of them, so that no
    # confidence sits on the threshold (batched and single-crop inference differ in the last bits).
    ordered = sorted(confidences)
    threshold = float(ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    changes, _ = expected_changes(classifier, images, labels, threshold)
    assert 0 < len(changes) < len(confidences)
    original = {p.name: p.read_bytes() for p in labels.iterdir()}

    result = relabel(RelabelConfig(images_dir=str(images), labels_dir=str(labels), model_weights=str(checkpoint),
                                   min_confidence=threshold, output_dir=str(tmp_path / "new"), device="cpu"))

    assert {(c.file, c.line): c.new for c in result.changes} == changes
    check_output(original, tmp_path / "new", changes)
    assert {p.name: p.read_bytes() for p in labels.iterdir()} == original  # input untouched
    report = json.loads(Path(result.report).read_text())
    expected_counts = Counter(f"{GESTURES[int(original_cls)]}->{GESTURES[new]}" for (name, line), new in
                              changes.items() for original_cls in
                              [original[name].decode().splitlines()[line - 1].split()[0]])
    assert report["counts"] == dict(expected_counts) and report["changed"] == len(changes)
    assert len(report["changes"]) == len(changes)
    assert any(":2:" in issue for issue in report["skipped_lines"])  # the malformed line, reported


def test_in_place_keeps_a_backup_and_bare_state_dicts_work(classifier, dataset, tmp_path):
    images, labels = dataset / "train" / "images", dataset / "train" / "labels"
    changes, _ = expected_changes(classifier, images, labels, 0.5)
    original = snapshot(labels)
    bare = tmp_path / "best_classifier.pth"  # the seed's format: a bare timm state dict
    torch.save(classifier.model.state_dict(), bare)
    argv = (f"--images_dir {images} --labels_dir {labels} --model_weights {bare} --model_type timm "
            f"--model_name mobilenetv3_small_050 --num_classes 5 --img_size {IMG} --expand_ratio {EXPAND} "
            f"--min_confidence 0.5 --in_place --backup_dir {tmp_path / 'backup'} --verbose").split()
    assert main(argv) == 0
    assert snapshot(tmp_path / "backup") == {**original, "relabel_report.json":
                                             (tmp_path / "backup" / "relabel_report.json").read_bytes()}
    check_output(original, labels, changes)


def test_blazehand_relabels_from_its_gesture_head(dataset, tmp_path):
    from shared.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("blazehand_lite", num_gestures=len(GESTURES))
    with torch.no_grad():
        model.gesture.weight.normal_(0, 1.0)
    weights = tmp_path / "crop_model.pth"
    torch.save(model.state_dict(), weights)
    labels = dataset / "train" / "labels"
    result = relabel(RelabelConfig(images_dir=str(dataset / "train" / "images"), labels_dir=str(labels),
                                   model_weights=str(weights), model_type="blazehand", model_name="blazehand_lite",
                                   min_confidence=0.0, output_dir=str(tmp_path / "new")))
    assert result.hands >= 6
    changes = {(c.file, c.line): c.new for c in result.changes}
    check_output({p.name: p.read_bytes() for p in labels.iterdir()}, tmp_path / "new", changes)


@pytest.mark.parametrize("kwargs, message", [
    ({"model_weights": "missing.pt"}, "file not found"),  # no weights file
    ({"min_confidence": 1.5}, r"\[0, 1\]"),  # not a probability
    ({"in_place": True, "output_dir": "x"}, "exclude each other"),  # two targets
])
def test_bad_input_is_one_clear_error(dataset, checkpoint, kwargs, message):
    cfg = {"images_dir": str(dataset / "train" / "images"), "labels_dir": str(dataset / "train" / "labels"),
           "model_weights": str(checkpoint), **kwargs}
    with pytest.raises(UserError, match=message):
        relabel(RelabelConfig(**cfg))


def test_existing_output_needs_overwrite(dataset, checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    cfg = RelabelConfig(images_dir=str(dataset / "train" / "images"), labels_dir=str(dataset / "train" / "labels"),
                        model_weights=str(checkpoint), output_dir=str(out))
    with pytest.raises(UserError, match="--overwrite"):
        relabel(cfg)
    cfg.overwrite = True
    assert relabel(cfg).hands > 0
    shutil.rmtree(out)
