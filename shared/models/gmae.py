"""G-MAE: a masked autoencoder with a GMST backbone, and the classifier fine-tuned from it.

After Ryumina, Ryumin, Ivanko, "G-MAE: Gesture-aware Masked Autoencoder for
Human-Machine Interaction" (ISPRS Archives XLVIII-2/W9-2025), structured like
facebookresearch/mae's models_mae.py: `random_masking`, `forward_encoder`,
`forward_decoder`, `forward_loss`, and `forward` only composes them.

No leaks. A public GMAE implementation runs the encoder on every patch and
masks afterwards, so the answer is already inside the features and the
pretext task is trivial. Here the hidden patches never reach the encoder:

1. the masked patches' pixels are zeroed in the input image, because the
   overlapping patch embedding reads `overlap` pixels of each neighbour;
2. only the visible tokens are kept after the embedding;
3. inside every block, convolutions see zeros at masked cells and attention
   runs over visible tokens only (see `shared/models/gmst.py`).

`tests/test_gmae.py` checks it: changing the pixels of masked patches leaves
the encoder's output for the visible tokens bit-identical.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from shared.errors import UserError
from shared.hand import NUM_GESTURES
from shared.models.gmst import (
    GMSTBlock,
    OverlapPatchEmbed,
    gather_tokens,
    init_weights,
    scatter_tokens,
    sincos_pos_embed_2d,
)

MASK_RATIO = 0.6  # the seed's default share of hidden patches (the paper: 0.5-0.7 work best); one home


# --------------------------------------------------------------------------- configs
@dataclass
class GMSTConfig:
    """The encoder (shared by the autoencoder and the classifier)."""

    img_size: int = 224  # the size it is trained at; any multiple of patch_size runs
    patch_size: int = 16
    patch_overlap: int = 4  # pixels of each neighbour a patch embedding also reads
    in_chans: int = 3
    embed_dim: int = 384
    depth: int = 8
    num_heads: int = 6
    mlp_ratio: float = 4.0
    use_msdc: bool = True
    use_mhsa: bool = True
    use_mscffn: bool = True
    dilations: tuple[int, ...] = (1, 3, 5)
    ffn_kernel_sizes: tuple[int, ...] = (3, 5, 7)
    drop_path_rate: float = 0.0

    def __post_init__(self) -> None:
        self.dilations = tuple(self.dilations)
        self.ffn_kernel_sizes = tuple(self.ffn_kernel_sizes)
        if self.img_size % self.patch_size:
            raise UserError(f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}")


@dataclass
class GMAEConfig:
    encoder: GMSTConfig = field(default_factory=GMSTConfig)
    decoder_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_ratio: float = 4.0
    mask_ratio: float = MASK_RATIO
    norm_pix_loss: bool = False  # MAE's option: targets are per-patch normalised pixels


@dataclass
class GMAEClassifierConfig:
    encoder: GMSTConfig = field(default_factory=GMSTConfig)
    num_classes: int = NUM_GESTURES
    head_drop: float = 0.0


# Fields whose change alters the encoder's parameters (a checkpoint only fits the same values).
STRUCTURAL_FIELDS = ("patch_size", "patch_overlap", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio",
                     "use_msdc", "use_mhsa", "use_mscffn", "dilations", "ffn_kernel_sizes")


# --------------------------------------------------------------------------- encoder
class GMSTEncoder(nn.Module):
    """Overlapping patch embedding + GMST blocks + LayerNorm; runs on all tokens or on visible ones."""

    def __init__(self, cfg: GMSTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = OverlapPatchEmbed(cfg.patch_size, cfg.patch_overlap, cfg.in_chans, cfg.embed_dim)
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()  # stochastic depth grows with depth
        self.blocks = nn.ModuleList(
            GMSTBlock(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, use_msdc=cfg.use_msdc, use_mhsa=cfg.use_mhsa,
                      use_mscffn=cfg.use_mscffn, dilations=cfg.dilations, ffn_kernel_sizes=cfg.ffn_kernel_sizes,
                      drop_path=dpr[i])
            for i in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim)

    def hide_masked_pixels(self, imgs: torch.Tensor, ids_keep: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """Zero every pixel of a masked patch, so the overlapping embedding cannot read across.

        `torch.where`, not a multiply: 0 * nan is nan, and even a NaN must not leak.
        """
        b = imgs.shape[0]
        h, w = grid_hw
        p = self.cfg.patch_size
        keep = torch.zeros(b, h * w, dtype=torch.bool, device=imgs.device).scatter(1, ids_keep, True)  # [B, L]
        keep = keep.view(b, 1, h, w).repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)  # [B, 1, H, W]
        return torch.where(keep, imgs, torch.zeros((), dtype=imgs.dtype, device=imgs.device))

    def forward(self, imgs: torch.Tensor, ids_keep: torch.Tensor | None = None) -> torch.Tensor:
        """imgs: [B, C, H, W]; ids_keep: [B, Lv] visible patches (None = all) -> [B, Lv, D]."""
        grid_hw = self.patch_embed.grid_size(imgs.shape[-2], imgs.shape[-1])
        if ids_keep is not None:
            imgs = self.hide_masked_pixels(imgs, ids_keep, grid_hw)
        x, grid_hw = self.patch_embed(imgs)  # [B, L, D]
        x = x + sincos_pos_embed_2d(x.shape[-1], grid_hw, x.device, x.dtype)
        if ids_keep is not None:
            x = gather_tokens(x, ids_keep)  # [B, Lv, D]
        for block in self.blocks:
            x = block(x, ids_keep, grid_hw)
        return self.norm(x)


def _init_model(model: nn.Module) -> None:
    model.apply(init_weights)
    # MAE: initialise the patch embedding like a linear layer, not a conv.
    for m in model.modules():
        if isinstance(m, OverlapPatchEmbed):
            w = m.proj.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))


# --------------------------------------------------------------------------- masked autoencoder
class GMAE(nn.Module):
    """Masked autoencoder: GMST encoder on the visible patches, a lighter GMST decoder on all of them."""

    def __init__(self, cfg: GMAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        enc = cfg.encoder
        self.encoder = GMSTEncoder(enc)
        self.decoder_embed = nn.Linear(enc.embed_dim, cfg.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList(
            GMSTBlock(cfg.decoder_embed_dim, cfg.decoder_num_heads, cfg.decoder_mlp_ratio, use_msdc=enc.use_msdc,
                      use_mhsa=enc.use_mhsa, use_mscffn=enc.use_mscffn, dilations=enc.dilations,
                      ffn_kernel_sizes=enc.ffn_kernel_sizes)
            for _ in range(cfg.decoder_depth))
        self.decoder_norm = nn.LayerNorm(cfg.decoder_embed_dim)
        self.decoder_pred = nn.Linear(cfg.decoder_embed_dim, enc.patch_size ** 2 * enc.in_chans)
        _init_model(self)
        nn.init.normal_(self.mask_token, std=0.02)

    # ---- pixels <-> patches
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, L, p*p*C] (raster order of the patch grid)."""
        p = self.cfg.encoder.patch_size
        b, c, hh, ww = imgs.shape
        h, w = hh // p, ww // p
        x = imgs.reshape(b, c, h, p, w, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(b, h * w, p * p * c)

    def unpatchify(self, x: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
        """[B, L, p*p*C] -> [B, C, H, W]."""
        p = self.cfg.encoder.patch_size
        c = self.cfg.encoder.in_chans
        h, w = grid_hw
        x = x.reshape(x.shape[0], h, w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, h * p, w * p)

    # ---- masking
    def random_masking(self, batch_size: int, num_patches: int, mask_ratio: float,
                       device: torch.device | None = None, noise: torch.Tensor | None = None,
                       ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Per-sample random masking by argsort of uniform noise (MAE).

        Returns ids_keep [B, Lv] (sorted grid indices of the visible patches; None
        when nothing is masked) and mask [B, L] (1 = hidden, 0 = visible).
        Every sample keeps the same number of patches so that the visible tokens
        stack into one dense [B, Lv, D] tensor.
        """
        len_keep = int(num_patches * (1 - mask_ratio))
        if len_keep >= num_patches:
            return None, torch.zeros(batch_size, num_patches, device=device)
        if len_keep < 1:
            raise ValueError(f"mask_ratio {mask_ratio} hides every one of the {num_patches} patches")
        if noise is None:
            noise = torch.rand(batch_size, num_patches, device=device)  # [B, L]
        ids_keep = torch.argsort(noise, dim=1)[:, :len_keep].sort(dim=1).values  # [B, Lv]
        mask = torch.ones(batch_size, num_patches, device=noise.device).scatter(1, ids_keep, 0.0)  # [B, L]
        return ids_keep, mask

    # ---- the three stages
    def forward_encoder(self, imgs: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, tuple[int, int]]:
        """-> latent [B, Lv, D], ids_keep [B, Lv] | None, mask [B, L], grid (h, w)."""
        grid_hw = self.encoder.patch_embed.grid_size(imgs.shape[-2], imgs.shape[-1])
        ids_keep, mask = self.random_masking(imgs.shape[0], grid_hw[0] * grid_hw[1], mask_ratio, imgs.device, noise)
        latent = self.encoder(imgs, ids_keep)  # [B, Lv, D]
        return latent, ids_keep, mask, grid_hw

    def forward_decoder(self, latent: torch.Tensor, ids_keep: torch.Tensor | None,
                        grid_hw: tuple[int, int]) -> torch.Tensor:
        """latent [B, Lv, D] -> predicted pixels [B, L, p*p*C] for every patch."""
        x = self.decoder_embed(latent)  # [B, Lv, Dd]
        b, _, dd = x.shape
        num_patches = grid_hw[0] * grid_hw[1]
        if ids_keep is not None:
            # Mask tokens at the hidden cells, the encoded tokens at their own cells.
            full = self.mask_token.to(x.dtype).expand(b, num_patches, dd)  # [B, L, Dd]
            x = scatter_tokens(full, x, ids_keep)  # [B, L, Dd]
        x = x + sincos_pos_embed_2d(dd, grid_hw, x.device, x.dtype)
        for block in self.decoder_blocks:
            x = block(x, None, grid_hw)
        return self.decoder_pred(self.decoder_norm(x))  # [B, L, p*p*C]

    def patch_targets(self, imgs: torch.Tensor) -> torch.Tensor:
        """[B, L, p*p*C] what the decoder should predict (per-patch normalised with norm_pix_loss)."""
        target = self.patchify(imgs)
        if self.cfg.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        return target

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MSE over the hidden patches only; over all patches when none is hidden (mask_ratio 0 baselines)."""
        loss = ((pred - self.patch_targets(imgs)) ** 2).mean(dim=-1)  # [B, L] per-patch MSE
        hidden = mask.sum()
        if hidden == 0:
            return loss.mean()
        return (loss * mask).sum() / hidden

    def forward(self, imgs: torch.Tensor, mask_ratio: float | None = None, noise: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """imgs [B, C, H, W] -> (loss, pred [B, L, p*p*C], mask [B, L])."""
        mask_ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        latent, ids_keep, mask, grid_hw = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_keep, grid_hw)
        return self.forward_loss(imgs, pred, mask), pred, mask


# --------------------------------------------------------------------------- classifier
class GMAEClassifier(nn.Module):
    """GMST encoder + mean-pooled tokens + LayerNorm + linear head (MAE's global-pool fine-tuning)."""

    def __init__(self, cfg: GMAEClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = GMSTEncoder(cfg.encoder)
        self.fc_norm = nn.LayerNorm(cfg.encoder.embed_dim)
        self.head_drop = nn.Dropout(cfg.head_drop)
        self.head = nn.Linear(cfg.encoder.embed_dim, cfg.num_classes)
        _init_model(self)
        # MAE: a small head init keeps the first fine-tuning steps from wrecking the pretrained features.
        nn.init.trunc_normal_(self.head.weight, std=2.0e-5)

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.encoder(imgs)  # [B, L, D]

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        pooled = self.fc_norm(tokens.mean(dim=1))  # [B, D]
        return self.head(self.head_drop(pooled))  # [B, num_classes]

    def forward(self, imgs: torch.Tensor, targets: torch.Tensor | None = None,
                label_smoothing: float = 0.0) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """logits [B, K]; (logits, cross-entropy loss) when targets [B] are given."""
        logits = self.forward_head(self.forward_features(imgs))
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits, targets, label_smoothing=label_smoothing)


# --------------------------------------------------------------------------- loading pretrained encoders
@dataclass
class EncoderLoadReport:
    source: str
    loaded: list[str]
    missing: list[str]  # encoder keys the file lacks (an error when loading)
    unexpected: list[str]  # keys under the encoder prefix that the encoder does not have
    ignored: list[str]  # other keys in the file (decoder, mask token, optimizer, ...)

    def summary(self) -> str:
        return (f"{self.source}: loaded {len(self.loaded)} encoder tensors, missing {len(self.missing)}, "
                f"unexpected {len(self.unexpected)}, ignored {len(self.ignored)} non-encoder keys")


_ENCODER_PREFIXES = ("", "encoder.", "model.encoder.", "module.encoder.", "_orig_mod.encoder.")


def _state_from_object(obj: Any) -> tuple[dict[str, torch.Tensor], dict | None]:
    """(flat state dict, stored encoder config or None) from any of our checkpoint shapes."""
    config = None
    if isinstance(obj, dict):
        config = obj.get("encoder_config")
        for key in ("encoder", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                inner = obj[key]
                if key == "encoder":  # our encoder.pt holds the encoder's own state dict
                    return {f"encoder.{k}": v for k, v in inner.items() if torch.is_tensor(v)}, config
                return {k: v for k, v in inner.items() if torch.is_tensor(v)}, config
        return {k: v for k, v in obj.items() if torch.is_tensor(v)}, config
    raise UserError(f"not a state dict or checkpoint (got {type(obj).__name__})")


def load_pretrained_encoder(encoder: GMSTEncoder, source: str | Path | dict, strict: bool = True,
                            ) -> EncoderLoadReport:
    """Load encoder weights from an encoder.pt, a full G-MAE / classifier checkpoint or a Lightning one.

    Missing encoder keys or mismatched shapes raise `UserError` (the file is for
    another model size); the report lists what was loaded, unexpected and ignored.
    """
    name = str(source) if not isinstance(source, dict) else "<state dict>"
    if not isinstance(source, dict):
        path = Path(source)
        if not path.is_file():
            raise UserError(f"pretrained weights not found: {path} (pass the encoder.pt written by "
                            "`python -m components.pretrain`)")
        try:
            source = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # torch raises assorted errors on a corrupt file
            raise UserError(f"{path}: cannot read weights ({type(exc).__name__}: {exc}); "
                            "pass a file saved by torch.save") from None
    state, stored_cfg = _state_from_object(source)
    if stored_cfg:
        diffs = {k: (stored_cfg.get(k), getattr(encoder.cfg, k)) for k in STRUCTURAL_FIELDS
                 if k in stored_cfg and _norm(stored_cfg[k]) != _norm(getattr(encoder.cfg, k))}
        if diffs:
            text = ", ".join(f"{k}: file {a} vs model {b}" for k, (a, b) in diffs.items())
            raise UserError(f"{name}: encoder was pretrained with a different architecture ({text}); "
                            "pick the matching gmae_classifier_* model and switches")
    own = encoder.state_dict()
    prefix = next((p for p in _ENCODER_PREFIXES if f"{p}patch_embed.proj.weight" in state), None)
    if prefix is None:
        raise UserError(f"{name}: no encoder weights found (no '*patch_embed.proj.weight' key); "
                        "pass the encoder.pt written by pretraining")
    enc_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    ignored = sorted(k for k in state if not k.startswith(prefix))  # empty for a bare encoder state dict
    missing = sorted(set(own) - set(enc_state))
    unexpected = sorted(set(enc_state) - set(own))
    # Shapes first: another model size shows up as both, and "other shapes" names the fix better.
    bad_shape = [(k, tuple(enc_state[k].shape), tuple(own[k].shape)) for k in own
                 if k in enc_state and enc_state[k].shape != own[k].shape]
    if bad_shape:
        k, a, b = bad_shape[0]
        raise UserError(f"{name}: {len(bad_shape)} encoder weight(s) have other shapes, e.g. {k}: file {a} vs "
                        f"model {b}; pick the gmae_classifier_* size the encoder was pretrained with")
    if strict and missing:
        raise UserError(f"{name}: {len(missing)} encoder weight(s) missing, e.g. {missing[:3]}; "
                        "the file is not a complete encoder of this model size")
    encoder.load_state_dict({k: v for k, v in enc_state.items() if k in own}, strict=False)
    loaded = sorted(k for k in own if k in enc_state)
    return EncoderLoadReport(name, loaded, missing, unexpected, ignored)


def _norm(v: Any) -> Any:
    return tuple(v) if isinstance(v, (list, tuple)) else v


def encoder_config_dict(cfg: GMSTConfig) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


# --------------------------------------------------------------------------- factories
# size -> (encoder fields, decoder (dim, depth, heads))
_SIZES: dict[str, tuple[dict[str, Any], tuple[int, int, int]]] = {
    # CPU-sized: 64 px crops, 8 px patches -> 8 x 8 tokens.
    "tiny": (dict(img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4, mlp_ratio=4.0), (64, 1, 4)),
    "small": (dict(img_size=224, patch_size=16, embed_dim=384, depth=8, num_heads=6, mlp_ratio=4.0), (256, 2, 8)),
    "base": (dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0), (512, 4, 16)),
}


def gmst_config(size: str, img_size: int | None = None, patch_size: int | None = None, use_msdc: bool = True,
                use_mhsa: bool = True, use_mscffn: bool = True, drop_path_rate: float = 0.0) -> GMSTConfig:
    """The encoder config of a named size, with overrides."""
    if size not in _SIZES:
        raise UserError(f"unknown G-MAE size {size!r}; one of {sorted(_SIZES)}")
    fields = dict(_SIZES[size][0])
    if patch_size is not None:
        fields["patch_size"] = patch_size
    if img_size is not None:
        fields["img_size"] = img_size
    # A quarter-patch overlap on each side: the kernel is 1.5 patches wide.
    fields["patch_overlap"] = fields["patch_size"] // 4
    return GMSTConfig(**fields, use_msdc=use_msdc, use_mhsa=use_mhsa, use_mscffn=use_mscffn,
                      drop_path_rate=drop_path_rate)


def _gmae(size: str, img_size: int | None, patch_size: int | None, mask_ratio: float, norm_pix_loss: bool,
          use_msdc: bool, use_mhsa: bool, use_mscffn: bool, drop_path_rate: float) -> GMAE:
    enc = gmst_config(size, img_size, patch_size, use_msdc, use_mhsa, use_mscffn, drop_path_rate)
    dim, depth, heads = _SIZES[size][1]
    return GMAE(GMAEConfig(encoder=enc, decoder_embed_dim=dim, decoder_depth=depth, decoder_num_heads=heads,
                           mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss))


def _classifier(size: str, num_classes: int, img_size: int | None, patch_size: int | None, use_msdc: bool,
                use_mhsa: bool, use_mscffn: bool, drop_path_rate: float, head_drop: float) -> GMAEClassifier:
    enc = gmst_config(size, img_size, patch_size, use_msdc, use_mhsa, use_mscffn, drop_path_rate)
    return GMAEClassifier(GMAEClassifierConfig(encoder=enc, num_classes=num_classes, head_drop=head_drop))


def gmae_tiny(img_size: int | None = None, patch_size: int | None = None, mask_ratio: float = MASK_RATIO,
              norm_pix_loss: bool = False, use_msdc: bool = True, use_mhsa: bool = True, use_mscffn: bool = True,
              drop_path_rate: float = 0.0) -> GMAE:
    return _gmae("tiny", img_size, patch_size, mask_ratio, norm_pix_loss, use_msdc, use_mhsa, use_mscffn,
                 drop_path_rate)


def gmae_small(img_size: int | None = None, patch_size: int | None = None, mask_ratio: float = MASK_RATIO,
               norm_pix_loss: bool = False, use_msdc: bool = True, use_mhsa: bool = True, use_mscffn: bool = True,
               drop_path_rate: float = 0.0) -> GMAE:
    return _gmae("small", img_size, patch_size, mask_ratio, norm_pix_loss, use_msdc, use_mhsa, use_mscffn,
                 drop_path_rate)


def gmae_base(img_size: int | None = None, patch_size: int | None = None, mask_ratio: float = MASK_RATIO,
              norm_pix_loss: bool = False, use_msdc: bool = True, use_mhsa: bool = True, use_mscffn: bool = True,
              drop_path_rate: float = 0.0) -> GMAE:
    return _gmae("base", img_size, patch_size, mask_ratio, norm_pix_loss, use_msdc, use_mhsa, use_mscffn,
                 drop_path_rate)


def gmae_classifier_tiny(num_classes: int = NUM_GESTURES, img_size: int | None = None, patch_size: int | None = None,
                         use_msdc: bool = True, use_mhsa: bool = True, use_mscffn: bool = True,
                         drop_path_rate: float = 0.1, head_drop: float = 0.0) -> GMAEClassifier:
    return _classifier("tiny", num_classes, img_size, patch_size, use_msdc, use_mhsa, use_mscffn, drop_path_rate,
                       head_drop)


def gmae_classifier_small(num_classes: int = NUM_GESTURES, img_size: int | None = None, patch_size: int | None = None,
                          use_msdc: bool = True, use_mhsa: bool = True, use_mscffn: bool = True,
                          drop_path_rate: float = 0.1, head_drop: float = 0.0) -> GMAEClassifier:
    return _classifier("small", num_classes, img_size, patch_size, use_msdc, use_mhsa, use_mscffn, drop_path_rate,
                       head_drop)


def gmae_classifier_base(num_classes: int = NUM_GESTURES, img_size: int | None = None, patch_size: int | None = None,
                         use_msdc: bool = True, use_mhsa: bool = True, use_mscffn: bool = True,
                         drop_path_rate: float = 0.1, head_drop: float = 0.0) -> GMAEClassifier:
    return _classifier("base", num_classes, img_size, patch_size, use_msdc, use_mhsa, use_mscffn, drop_path_rate,
                       head_drop)
