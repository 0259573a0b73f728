"""Pipeline parameters: one dataclass, presets in configs/pipeline/<name>.yaml, `--set key=value` overrides.

The resolved config is passed to every step as a plain dict, and is the pipeline's
parameter set in the ClearML UI (edit it there to rerun with other values).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared.config import build_config, check_gates, config_to_dict, option, read_yaml
from shared.errors import UserError
from shared.hand import GESTURES
from shared.paths import CONFIGS_DIR

PRESETS_DIR = CONFIGS_DIR / "pipeline"


@dataclass
class PipelineConfig:
    preset: str = option("demo", "preset name (configs/pipeline/<preset>.yaml)")
    output_dir: str = option("outputs/pipeline", "where every step writes", output="dir")
    project: str = option("handops", "ClearML project of the pipeline, its datasets (<project>/datasets) and models")
    # data
    source: str = option("synthetic", "synthetic | folder | hagrid | roboflow | teacher (real photos in gesture "
                                      "folders, labelled by the MediaPipe teacher: components.autolabel)",
                         choices=["synthetic", "folder", "hagrid", "roboflow", "teacher"])
    input_dir: str = option("", "folder / HaGRID root / photos in gesture folders, for those sources")
    test_dir: str = option("", "real test photos of OTHER people (HaGRID layout or a YOLO export; several: comma-"
                                "separated): gesture accuracy, confusion matrix and detector recall are measured there")
    teacher_tiles: int = option(0, "source teacher: also look at N x N overlapping tiles of each photo for small hands "
                                   "(components.autolabel --tiles; labels for a detector of far hands); 0 = off",
                                choices=[0, 2, 3, 4])
    roboflow_api_key: str = option("", "Roboflow key (or env ROBOFLOW_API_KEY)")
    roboflow_workspace: str = option("", "Roboflow workspace")
    roboflow_project: str = option("", "Roboflow project")
    roboflow_version: int = option(0, "Roboflow version", min=0)
    num_images: int = option(600, "synthetic images", min=1)
    sequences: int = option(2, "synthetic sequences (tracking evaluation)", min=0)
    frames: int = option(40, "frames per synthetic sequence", min=1)
    image_size: int = option(320, "synthetic image side", min=32)
    seed: int = option(0, "seed for everything")
    num_augmentations: int = option(1, "augmented copies per training image (0 = off)", min=0)
    aug_type: str = option("standard", "light | standard | heavy", choices=["light", "standard", "heavy", "none"])
    # G-MAE
    pretrain_epochs: int = option(2, "G-MAE pretraining epochs (0 = skip)", min=0)
    pretrain_batch_size: int = option(32, "G-MAE pretraining batch", min=1)
    gmae_model: str = option("gmae_tiny", "gmae_tiny | gmae_small | gmae_base",
                             choices=["gmae_tiny", "gmae_small", "gmae_base"])
    gmae_img_size: int = option(64, "G-MAE input size", min=16)
    # detector
    detector_epochs: int = option(1, "YOLO epochs (0 = skip; the pipeline then uses BlazePalm)", min=0)
    detector_model: str = option("yolo11n-pose.yaml", "YOLO model YAML or .pt")
    detector_imgsz: int = option(320, "YOLO image size", min=32)
    detector_batch_size: int = option(16, "YOLO batch", min=1)
    # gestures
    classifier_epochs: int = option(1, "gesture classifier epochs (0 = skip)", min=0)
    classifier_source: str = option("timm", "timm | gmae (fine-tune the pretrained G-MAE encoder) | landmarks (the "
                                            "MLP on MediaPipe's landmarks that ships by default: "
                                            "components.gesture_model)",
                                    choices=["timm", "gmae", "landmarks"])
    classifier_model: str = option("mobilenetv3_small_100", "timm model name")
    relabel: bool = option(False, "relabel training gestures with the classifier")
    relabel_min_confidence: float = option(0.9, "relabel only above this confidence", min=0.0, max=1.0)
    # hand model (BlazeHand multitask)
    hand_model: str = option("blazehand_full", "blazehand_full | blazehand_lite",
                             choices=["blazehand_full", "blazehand_lite"])
    hand_pretrained_weights: str = option("mediapipe", "mediapipe | a .pth | none")
    multitask_epochs: int = option(3, "multitask epochs (0 = keep MediaPipe's landmark weights unchanged)", min=0)
    batch_size: int = option(32, "crops per batch", min=1)
    lr: float = option(3e-4, "learning rate of the pretrained weights", min=0.0)
    head_lr: float = option(3e-3, "learning rate of the new gesture head", min=0.0)
    kps_weight: float = option(100.0, "weight of the keypoint loss (loss in percent of the crop side)", min=0.0)
    # evaluation, export, deploy
    gates: dict = option({"gestures/macro_f1": 0.5, "keypoints/pck@0.1": 0.5},
                         "quality gates: metric -> minimum; a failing gate stops export and deploy", check=check_gates)
    latency_frames: int = option(20, "frames for the latency measurement", min=0)
    triton_repo: str = option("outputs/pipeline/triton_repo", "Triton model repository to write", output="dir")
    deploy_backend: str = option("python", "python | onnxruntime | tensorrt",
                                 choices=["python", "onnxruntime", "tensorrt"])
    smoke_test: bool = option(True, "send one request through a local Triton when its venv exists")
    precision: str = option("fp32", "crop model exported and deployed as fp32, or int8 (ONNX Runtime QDQ calibrated "
                                     "on calibration_dir, verified on test_dir; refused when it misses a tolerance)",
                            choices=["fp32", "int8"])
    calibration_dir: str = option("", "precision int8: real photos of hands to calibrate on ('' = input_dir)")
    int8_qat_epochs: int = option(0, "precision int8: quantization-aware fine-tuning epochs (0 = post-training "
                                     "quantization only)", min=0)
    hand_over: str = option("auto", "how steps pass folders and weights: paths (one machine or a shared volume: "
                                    "offline, --local, Kubeflow without a server), clearml (datasets and models "
                                    "on the server, for agents on other machines), auto (paths offline, clearml "
                                    "with a server)", choices=["auto", "paths", "clearml"])
    queues: dict = option({"cpu": "cpu", "gpu": "gpu", "services": "services"},
                          "agent queues per step kind (data steps: cpu; training/export: gpu; controller: services)")

    def __post_init__(self) -> None:
        if self.calibration_dir and not Path(self.calibration_dir).is_dir():
            raise UserError(f"calibration_dir {self.calibration_dir!r} is not a folder; pass real photos of hands")
        if self.source in ("teacher", "folder", "hagrid") and not self.input_dir:
            raise UserError(f"source {self.source!r} needs input_dir: --set input_dir=PATH (a folder of photos"
                            + (" in gesture folders)" if self.source == "teacher" else ")"))
        for d in filter(None, (x.strip() for x in self.test_dir.split(","))):
            if not Path(d).is_dir():
                raise UserError(f"test_dir {d!r} is not a folder; pass real test photos of other people "
                                "(HaGRID layout or a YOLO export), several comma-separated")

    def as_step_dict(self) -> dict[str, Any]:
        d = config_to_dict(self)
        d["gesture_names"] = list(GESTURES)
        return d


def load_pipeline_config(preset: str, overrides: list[str] | None = None) -> PipelineConfig:
    path = Path(preset)
    if not path.suffix:
        path = PRESETS_DIR / f"{preset}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))
        raise UserError(f"unknown preset {preset!r}: no {path}; presets: {', '.join(names)}")
    data = read_yaml(path)
    data.setdefault("preset", path.stem)
    values: dict[str, Any] = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            values[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            values[key.strip()] = value  # not YAML: the field's own check names what it expects
    # One validation path (shared.config): unknown keys, types and ranges, file and --set alike.
    return build_config(PipelineConfig, [(str(path), data), ("--set", values)])
