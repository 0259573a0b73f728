"""A timm image classifier (gesture relabelling), taking RGB in [0, 1] like every model here.

`create_timm_classifier("mobilenetv3_small_100", num_classes=5)` builds the timm
network and wraps it with its own mean/std normalisation, so training,
inference and the exported ONNX graph all feed [0, 1] images. `pretrained=True`
uses timm's ImageNet weights only when they are already on disk (Hugging Face
cache or torch hub cache); nothing here downloads.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from shared.errors import UserError
from shared.hand import NUM_GESTURES

DEFAULT_CLASSIFIER = "mobilenetv3_small_100"


class TimmClassifier(nn.Module):
    """`model` (a timm classifier) behind a fixed input normalisation."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...], img_size: int) -> None:
        super().__init__()
        self.model = model
        self.img_size = img_size
        self.num_classes = model.num_classes
        # Not persistent: they follow from the architecture's pretrained config.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @property
    def pretrained_cfg(self) -> dict:
        return dict(getattr(self.model, "pretrained_cfg", {}))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features((x - self.mean) / self.std)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 3, H, W] RGB in [0, 1] -> logits [B, num_classes]."""
        return self.forward_head(self.forward_features(x))


class ClassifierExport(nn.Module):
    """Deployment view: class probabilities (`gesture_probs` in shared.models.specs) of an RGB crop
    in [0, 1]. `mean`/`std`: the input normalisation the model expects when it has none built in
    (a G-MAE classifier, fine-tuned on ImageNet-normalised crops); a TimmClassifier has its own."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.model = model
        self.normalize = mean is not None
        if self.normalize:
            self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - self.mean) / self.std if self.normalize else image
        return torch.softmax(self.model(x), dim=-1)


def _pretrained_cfg(name: str) -> object | None:
    import timm

    try:
        return timm.models.get_pretrained_cfg(name)
    except Exception:  # older/newer timm raise different errors for untagged names
        return None


def find_local_pretrained(name: str, hf_cache_dir: str | Path | None = None) -> Path | None:
    """timm's pretrained weights for `name` if already on disk, else None (never downloads)."""
    cfg = _pretrained_cfg(name)
    if cfg is None:
        return None
    file = getattr(cfg, "file", None)
    if file and Path(file).is_file():
        return Path(file)
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, filename, cache_dir=str(hf_cache_dir) if hf_cache_dir else None)
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    url = getattr(cfg, "url", None)
    if url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        if candidate.is_file():
            return candidate
    return None


def create_timm_classifier(name: str = DEFAULT_CLASSIFIER, num_classes: int = NUM_GESTURES, pretrained: bool = False,
                           drop_rate: float = 0.0, drop_path_rate: float | None = None,
                           pretrained_weights: str | None = None, hf_cache_dir: str | None = None) -> TimmClassifier:
    """A timm classifier with `num_classes` outputs and [0, 1] input.

    pretrained: start from timm's ImageNet weights, which must already be in the
    local Hugging Face / torch hub cache (the classifier layer is re-initialised).
    pretrained_weights: one of our `.pth` files (e.g. a trained relabeller).
    """
    import timm

    if not timm.is_model(name.split(".")[0]):
        raise UserError(f"unknown timm model {name!r}; see timm.list_models(), e.g. {DEFAULT_CLASSIFIER}")
    extra = {"drop_path_rate": drop_path_rate} if drop_path_rate is not None else {}
    if pretrained:
        local = find_local_pretrained(name, hf_cache_dir)
        if local is None:
            cfg = _pretrained_cfg(name)
            where = getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None) or name
            raise UserError(f"timm weights for {name} are not in the local cache ({where}); we never download at "
                            "run time: put them in the Hugging Face cache (huggingface-cli download "
                            f"{where}) during set-up, or drop --pretrained")
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, drop_rate=drop_rate,
                                  pretrained_cfg_overlay={"file": str(local)}, **extra)
    else:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, drop_rate=drop_rate, **extra)
    cfg = model.pretrained_cfg
    wrapped = TimmClassifier(model, tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                             tuple(cfg.get("std", (0.229, 0.224, 0.225))), int(cfg.get("input_size", (3, 224))[-1]))
    if pretrained_weights:
        from shared.models.mediapipe_import import load_pretrained

        wrapped.load_report = load_pretrained(wrapped, pretrained_weights)
    return wrapped
