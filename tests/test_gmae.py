"""G-MAE: no leaks from masked patches, shapes, pretraining/fine-tuning runs, encoder loading, corpus steps."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from shared.errors import UserError
from shared.models.gmae import (
    GMAE,
    gmae_base,
    gmae_classifier_small,
    gmae_classifier_tiny,
    gmae_small,
    gmae_tiny,
    load_pretrained_encoder,
)
from shared.models.registry import create_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CLASSES = ("fist", "normal_hand", "pointer")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These models are tiny: with two threads every op waits on an OpenMP barrier, which on a shared,
    busy 2-core machine costs 10x the work itself. One thread here; the previous setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _shape_image(rng: np.random.Generator, cls: int, size: int = 40) -> np.ndarray:
    """A BGR image of one coloured shape per class (circle / square / bar) on a noisy background."""
    img = np.full((size, size, 3), rng.integers(0, 256, 3), np.uint8)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    cx, cy = (int(v) for v in rng.integers(size // 3, 2 * size // 3, 2))
    r = size // 4
    if cls == 0:
        cv2.circle(img, (cx, cy), r, colour, -1)
    elif cls == 1:
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), colour, -1)
    else:
        cv2.line(img, (cx, cy - r - 4), (cx, cy + r + 4), colour, 4)
    return img


def _write_image_folder(root: Path, per_class: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(root / name / f"{i:03d}.png"), _shape_image(rng, c))
    return root


def _masked_pixels(mask: torch.Tensor, patch: int, grid: int) -> torch.Tensor:
    """[B, L] patch mask (1 = hidden) -> [B, 3, H, W] boolean pixel mask."""
    b = mask.shape[0]
    pix = mask.view(b, 1, grid, grid).repeat_interleave(patch, 2).repeat_interleave(patch, 3).bool()
    return pix.expand(b, 3, grid * patch, grid * patch)


# --------------------------------------------------------------------------- no leaks
def test_masked_patches_never_reach_the_encoder():
    torch.manual_seed(0)
    model = gmae_tiny().eval()  # 64 px, 8 px patches with a 2 px overlap -> 8 x 8 tokens
    x = torch.randn(2, 3, 64, 64)
    ids_keep, mask = model.random_masking(2, 64, 0.6)
    hidden = _masked_pixels(mask, 8, 8)
    x_changed = x.clone()
    x_changed[hidden] = torch.randn(int(hidden.sum())) * 10  # new content in every masked patch
    x_changed[0, :, :8, :8][hidden[0, :, :8, :8]] = float("nan")  # even NaNs stay out
    with torch.no_grad():
        out = model.encoder(x, ids_keep)
        out_changed = model.encoder(x_changed, ids_keep)
    assert out.shape == (2, int(64 * 0.4), 128)
    assert torch.equal(out, out_changed), "masked pixels changed the visible tokens' features"

    # The test can fail: a change in a visible patch does reach the output ...
    x_visible = x.clone()
    x_visible[~hidden] += 0.5
    with torch.no_grad():
        assert not torch.equal(out, model.encoder(x_visible, ids_keep))
    # ... and without zeroing the masked pixels, the overlapping patch embedding leaks.
    model.encoder.hide_masked_pixels = lambda imgs, ids, grid: imgs
    with torch.no_grad():
        x_changed[0, :, :8, :8] = 0.0
        assert not torch.equal(model.encoder(x, ids_keep), model.encoder(x_changed, ids_keep))


def test_masking_drops_tokens_and_loss_counts_hidden_patches_only():
    torch.manual_seed(0)
    model = gmae_tiny(img_size=32).eval()
    x = torch.randn(3, 3, 32, 32)  # 4 x 4 patches
    latent, ids_keep, mask, grid = model.forward_encoder(x, mask_ratio=0.75)
    assert grid == (4, 4) and latent.shape == (3, 4, 128) and mask.sum(1).tolist() == [12.0] * 3
    assert torch.equal(mask.gather(1, ids_keep), torch.zeros(3, 4))  # kept patches are the visible ones
    pred = model.forward_decoder(latent, ids_keep, grid)
    target = model.patch_targets(x)
    # Perfect predictions on the hidden patches give zero loss whatever happens on the visible ones.
    fake = torch.where(mask.bool().unsqueeze(-1), target, pred)
    assert model.forward_loss(x, fake, mask).item() == 0.0
    assert model.forward_loss(x, pred, mask).item() > 0.0


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("factory, kwargs, size", [
    (gmae_tiny, {}, 64),  # the CPU model at its own size
    (gmae_tiny, {"norm_pix_loss": True}, 32),  # per-patch normalised targets
    (gmae_tiny, {"use_msdc": False}, 32),  # ablation: no MSDC
    (gmae_tiny, {"use_mhsa": False}, 32),  # ablation: no attention
    (gmae_tiny, {"use_mscffn": False}, 32),  # ablation: plain FFN
    (gmae_small, {}, 32),  # builds; one 2 x 2-token input is cheap
    (gmae_base, {}, 32),
])
def test_autoencoder_factories_shapes(factory, kwargs, size):
    torch.manual_seed(0)
    model: GMAE = factory(**kwargs)
    p = model.cfg.encoder.patch_size
    with torch.no_grad():
        loss, pred, mask = model(torch.randn(2, 3, size, size))
    n = (size // p) ** 2
    assert pred.shape == (2, n, p * p * 3) and mask.shape == (2, n)
    assert torch.isfinite(loss) and torch.isfinite(pred).all()


@pytest.mark.parametrize("name, size", [
    ("gmae_classifier_tiny", 64), ("gmae_classifier_small", 32), ("gmae_classifier_base", 32)])
def test_classifier_factories_shapes(name, size):
    torch.manual_seed(0)
    model = create_model(name)  # through the registry, num_classes defaults to our 5 gestures
    model.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        logits = model(x)
        logits2, loss = model(x, torch.tensor([0, 4]))
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    assert torch.equal(logits, logits2) and torch.isfinite(loss)


def test_msc_ffn_fused_kernel_equals_parallel_convolutions():
    from shared.models.gmst import MSCFFN

    torch.manual_seed(0)
    ffn = MSCFFN(8, 16)
    g = torch.randn(2, 16, 6, 6)
    parallel = sum(branch(g) for branch in ffn.branches)
    weight, bias = ffn.fused_kernel()
    fused = torch.nn.functional.conv2d(g, weight, bias, padding=3, groups=16)
    torch.testing.assert_close(fused, parallel, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel, dilation", [(3, 1), (3, 5), (7, 1)])  # MSDC branches and the fused FFN kernel
def test_depthwise_conv_fast_backward_matches_autograd(kernel, dilation):
    from shared.models.gmst import depthwise_conv

    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 1, kernel, kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: depthwise_conv(*a, dilation=dilation), (x, w, b))
    x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()  # the layout blocks use
    depthwise_conv(x_cl, w, b, dilation).sum().backward()
    pad = dilation * (kernel - 1) // 2
    torch.nn.functional.conv2d(x, w, b, padding=pad, dilation=dilation, groups=6).sum().backward()
    torch.testing.assert_close(x_cl.grad, x.grad)


# --------------------------------------------------------------------------- training signal
def test_pretraining_loss_falls_on_synthetic_crops():
    from shared.data.image_transforms import val_transform

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    tf = val_transform(32)
    from PIL import Image

    imgs = torch.stack([tf(Image.fromarray(_shape_image(rng, i % 3)[:, :, ::-1])) for i in range(16)])
    model = gmae_tiny(img_size=32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    losses = []
    for _ in range(25):
        loss, _, _ = model(imgs)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3]), losses


def test_layer_decay_scales_early_layers_down():
    from shared.training.gmae import param_groups_lrd

    model = gmae_classifier_tiny()
    groups = param_groups_lrd(model, weight_decay=0.05, layer_decay=0.5)
    scale = {g["name"]: g["lr_scale"] for g in groups}
    depth = model.cfg.encoder.depth
    assert scale["layer0"] == 0.5 ** (depth + 1)  # patch embedding
    assert scale[f"layer{depth + 1}"] == 1.0  # head
    assert scale["layer1"] < scale["layer2"] < scale[f"layer{depth}"]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    no_decay = [g for g in groups if g["name"].endswith("_no_decay")]
    assert no_decay and all(g["weight_decay"] == 0.0 for g in no_decay)


# --------------------------------------------------------------------------- encoder loading
def test_pretrained_encoder_loads_every_weight_and_missing_keys_fail():
    torch.manual_seed(0)
    pre = gmae_tiny()
    clf = gmae_classifier_tiny(num_classes=3)
    report = load_pretrained_encoder(clf.encoder, pre.state_dict())  # a full autoencoder state dict
    own = clf.encoder.state_dict()
    assert sorted(report.loaded) == sorted(own) and not report.missing and not report.unexpected
    assert any(k.startswith("decoder") for k in report.ignored)
    assert all(torch.equal(own[k], pre.encoder.state_dict()[k]) for k in own)

    partial = {k: v for k, v in pre.encoder.state_dict().items() if not k.startswith("blocks.3.")}
    with pytest.raises(UserError, match="missing"):
        load_pretrained_encoder(gmae_classifier_tiny().encoder, {"encoder": partial})
    with pytest.raises(UserError, match="other shapes|different architecture"):
        load_pretrained_encoder(gmae_classifier_small().encoder, {"encoder": pre.encoder.state_dict()})
    extra = dict(pre.encoder.state_dict(), **{"blocks.0.surprise": torch.zeros(1)})
    assert load_pretrained_encoder(gmae_classifier_tiny().encoder, {"encoder": extra}).unexpected == \
        ["blocks.0.surprise"]


def test_encoder_from_another_ablation_is_refused():
    pre = gmae_tiny(use_mhsa=False)
    saved = {"encoder": pre.encoder.state_dict(), "encoder_config": {"use_mhsa": False, "embed_dim": 128}}
    with pytest.raises(UserError, match="use_mhsa"):
        load_pretrained_encoder(gmae_classifier_tiny().encoder, saved)


# --------------------------------------------------------------------------- stages
def _pretrain_cfg(data_dir: Path, out: Path, seed: int = 0, **kw):
    from components.pretrain import PretrainConfig

    kw = {"epochs": 1, "save_every": 1, **kw}
    return PretrainConfig(data_dir=str(data_dir), output_dir=str(out), model="gmae_tiny", img_size=32,
                          batch_size=8, learning_rate=1e-3, warmup_epochs=0, num_workers=0, seed=seed,
                          progress_bar=False, preview_count=2, accelerator="cpu", **kw)


@pytest.fixture(scope="module")
def split_corpus_dir(tmp_path_factory) -> Path:
    from shared.data.corpus import split_corpus

    raw = _write_image_folder(tmp_path_factory.mktemp("raw"), per_class=16)
    out = tmp_path_factory.mktemp("corpus") / "split"
    split_corpus(raw, out, pretrain_fraction=0.5, val_fraction=0.25, test_fraction=0.25, seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def pretrained(split_corpus_dir, tmp_path_factory):
    from components.pretrain import run_pretrain

    return run_pretrain(_pretrain_cfg(split_corpus_dir, tmp_path_factory.mktemp("pretrain")))


def test_pretrain_writes_encoder_previews_summary(pretrained):
    out = Path(pretrained.output_dir)
    assert Path(pretrained.encoder_weights).is_file() and Path(pretrained.autoencoder).is_file()
    preview = cv2.imread(pretrained.previews[-1])
    assert preview.shape == (2 * 32, 3 * 32, 3)  # 2 images x (original | masked | reconstructed)
    summary = json.loads((out / "pretrain_summary.json").read_text())
    assert np.isfinite(summary["metrics"]["train/loss"]) and np.isfinite(summary["metrics"]["val/loss"])
    assert (out / "metrics.jsonl").is_file() and (out / "config.yaml").is_file()


def test_same_seed_same_first_epoch_loss(pretrained, split_corpus_dir, tmp_path):
    from components.pretrain import run_pretrain

    again = run_pretrain(_pretrain_cfg(split_corpus_dir, tmp_path / "again"))
    other = run_pretrain(_pretrain_cfg(split_corpus_dir, tmp_path / "other", seed=1))
    first = pretrained.history[0]["train/loss"]
    assert abs(again.history[0]["train/loss"] - first) < 1e-6
    assert abs(other.history[0]["train/loss"] - first) > 1e-6


def test_finetune_cli_from_pretrained_encoder_then_classify(pretrained, split_corpus_dir, tmp_path):
    from components.classify import ClassifyConfig, run_classify
    from components.train import main as train_main

    ckpt_dir = tmp_path / "ft"
    config = Path(__file__).resolve().parents[1] / "configs" / "finetune.yaml"
    code = train_main(["--task", "gmae_finetune", "--config", str(config), "--data_dir", str(split_corpus_dir),
                       "--pretrained_weights", pretrained.encoder_weights, "--checkpoint_dir", str(ckpt_dir),
                       "--model", "gmae_classifier_tiny", "--epochs", "1", "--batch_size", "8", "--num_workers", "0",
                       "--progress_bar", "false", "--accelerator", "cpu", "--plots", "false"])
    assert code == 0
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.json", "metrics.jsonl", "train_summary.json",
                 "encoder_load.json"):
        assert (ckpt_dir / name).is_file(), name
    metrics = json.loads((ckpt_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["val/accuracy"] <= 1.0 and 0.0 <= metrics["val/macro_f1"] <= 1.0
    load = json.loads((ckpt_dir / "encoder_load.json").read_text())
    assert load["loaded"] == len(gmae_classifier_tiny().encoder.state_dict()) and load["missing"] == []
    summary = json.loads((ckpt_dir / "train_summary.json").read_text())
    assert summary["test_metrics"]["num_images"] > 0  # best.pt evaluated on the test split

    result = run_classify(ClassifyConfig(weights=str(ckpt_dir / "best.pt"), data_dir=str(split_corpus_dir),
                                         images=str(split_corpus_dir / "finetune_dataset" / "test"),
                                         output_dir=str(tmp_path / "cls")))
    cm = np.array(result.metrics["confusion_matrix"])
    assert cm.shape == (5, 5) and cm.sum() == result.metrics["num_images"]  # our five gesture ids
    predictions = json.loads(Path(result.predictions_json).read_text())["predictions"]
    assert len(predictions) == cm.sum() and all(0.0 <= p["probability"] <= 1.0 for p in predictions)
    assert Path(result.predictions_csv).read_text().startswith("path,class,probability")


def test_finetune_refuses_missing_weights_file(tmp_path, split_corpus_dir):
    from components.tasks.gmae_finetune import GMAEFinetuneConfig, run_finetune

    with pytest.raises(UserError, match="not found"):
        run_finetune(GMAEFinetuneConfig(data_dir=str(split_corpus_dir), pretrained_weights=str(tmp_path / "no.pt"),
                                        output_dir=str(tmp_path / "ft")))


# --------------------------------------------------------------------------- corpus
def _tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_prepare_corpus_drops_bad_images_and_never_touches_input(tmp_path):
    from shared.data.corpus import prepare_corpus

    src = _write_image_folder(tmp_path / "src", per_class=3)
    good = cv2.imread(str(src / "fist" / "000.png"))
    (src / "fist" / "broken.jpg").write_bytes(b"not an image at all")
    jpeg = cv2.imencode(".jpg", good)[1].tobytes()
    (src / "fist" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    cv2.imwrite(str(src / "pointer" / "tiny.png"), good[:16, :16])
    cv2.imwrite(str(src / "pointer" / "copy.bmp"), good)  # same pixels as fist/000.png, other name and format
    before = _tree_digest(src)

    report = prepare_corpus(src, tmp_path / "out", min_size=32, progress=False)
    assert _tree_digest(src) == before  # the input is untouched
    reasons = {f["path"]: f["reason"].split(":")[0] for f in report.files}
    assert reasons == {"fist/broken.jpg": "unreadable", "fist/truncated.jpg": "unreadable",
                       "pointer/tiny.png": "too_small", "pointer/copy.bmp": "duplicate"}
    assert report.kept == 9 and report.dropped == {"unreadable": 2, "too_small": 1, "duplicate": 1}
    kept = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert len(kept) == 9 and "fist/000.png" in kept
    assert json.loads(report.report_path.read_text())["kept"] == 9
    with pytest.raises(UserError, match="overlaps the input"):
        prepare_corpus(src, src / "inside", progress=False)
    with pytest.raises(UserError, match="not empty"):
        prepare_corpus(src, tmp_path / "out", progress=False)


def test_split_keeps_each_subject_in_one_subset(tmp_path):
    from shared.data.corpus import imagefolder_items, read_manifest, split_corpus, write_manifest

    src = _write_image_folder(tmp_path / "src", per_class=12)
    rows = [{"path": p.relative_to(src).as_posix(), "label": p.parent.name, "group": f"user{i % 7}"}
            for i, p in enumerate(sorted(src.rglob("*.png")))]
    write_manifest(src, rows)  # 7 subjects, each in several classes
    scan = imagefolder_items(src)
    assert len(scan.items) == 36 and {it.group for it in scan.items} == {f"user{i}" for i in range(7)}
    assert {it.label for it in scan.items} == set(CLASSES)
    report = split_corpus(src, tmp_path / "split", seed=3, progress=False)
    out_rows = read_manifest(tmp_path / "split").values()
    subsets: dict[str, set[str]] = {}
    for row in out_rows:
        subsets.setdefault(row["group"], set()).add("/".join(row["path"].split("/")[:2]))
    assert all(len(s) == 1 for s in subsets.values()), subsets
    assert len(subsets) == 7 and sum(report.groups.values()) == 7
    assert sum(sum(c.values()) for c in report.counts.values()) == 36
    # The same seed gives the same split.
    again = split_corpus(src, tmp_path / "split2", seed=3, progress=False)
    assert again.counts == report.counts


@pytest.mark.skipif(not (DATA / "roboflow_gestures_v6").is_dir(), reason="needs ../shared/data (real photos)")
def test_yolo_source_gives_hand_crops_in_our_classes(tmp_path):
    from shared.data.corpus import data_formater, yolo_items
    from shared.data.sources import GestureMap, default_gesture_map_path
    from shared.hand import GESTURES

    gmap = GestureMap.load(default_gesture_map_path(), "roboflow")  # five -> normal_hand, one -> pointer
    scan = yolo_items(DATA / "roboflow_gestures_v6", gesture_map=gmap)
    assert scan.items and {it.label for it in scan.items} <= set(GESTURES)
    assert all(0 <= it.box[0] < it.box[2] <= 1 and 0 <= it.box[1] < it.box[3] <= 1 for it in scan.items)
    assert scan.issues  # images holding dropped classes (four, three, two) are reported, not guessed
    fmt = data_formater(scan.items[:5], tmp_path / "crops", crop_size=40, progress=False)
    assert fmt.written == 5 and not fmt.failed


@pytest.mark.skipif(not (DATA / "hagrid_sample").is_dir(), reason="needs ../shared/data (real photos)")
def test_hagrid_crops_format_clean_split_by_user(tmp_path):
    from shared.data.corpus import data_formater, hagrid_items, prepare_corpus, read_manifest, split_corpus

    scan = hagrid_items(DATA / "hagrid_sample", mode="crops")
    assert scan.items and all(it.group.startswith("hagrid:") and it.box is not None for it in scan.items)
    fmt = data_formater(scan.items, tmp_path / "fmt", crop_size=48, progress=False)
    assert fmt.written == len(scan.items) and "no_gesture" in fmt.per_class and "fist" in fmt.per_class
    crop = cv2.imread(str(next((tmp_path / "fmt" / "fist").glob("*.jpg"))))
    assert crop.shape == (48, 48, 3)
    clean = prepare_corpus(tmp_path / "fmt", tmp_path / "clean", min_size=32, progress=False)
    split_corpus(tmp_path / "clean", tmp_path / "split", seed=0, progress=False)
    where: dict[str, set[str]] = {}
    for row in read_manifest(tmp_path / "split").values():
        where.setdefault(row["group"], set()).add("/".join(row["path"].split("/")[:2]))
    assert sum(len(v) for v in where.values()) == len(where)  # one subset per HaGRID user_id
    assert clean.kept == len(list((tmp_path / "split").rglob("*.jpg")))

    from shared.data.sources import GestureMap, default_gesture_map_path
    from shared.hand import GESTURES

    mapped = hagrid_items(DATA / "hagrid_sample", gesture_map=GestureMap.load(default_gesture_map_path(), "hagrid"),
                          unmapped_unlabelled=True)  # our five names; other gestures kept for pretraining only
    assert len(mapped.items) == len(scan.items) and mapped.skipped.get("call")
    assert {it.label for it in mapped.items} == {"", "fist", "normal_hand", "pointer"} <= set(GESTURES) | {""}

    frames = hagrid_items(DATA / "hagrid_sample", mode="frames")
    assert len(frames.items) == len({it.image_path for it in scan.items}) and all(it.box is None for it in frames.items)


# --------------------------------------------------------------------------- real hands
HAGRID_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "hagrid_train" / "images"


def _real_photos(root: Path, per_folder: int = 3) -> Path:
    """A few real HaGRID photos in two gesture folders (copies: the source is never touched)."""
    if not HAGRID_TRAIN.is_dir():
        pytest.skip(f"needs the real photos in {HAGRID_TRAIN}")
    for folder in ("fist", "call"):
        (root / folder).mkdir(parents=True)
        for p in sorted((HAGRID_TRAIN / folder).glob("*.jpg"))[:per_folder]:
            (root / folder / p.name).write_bytes(p.read_bytes())
    return root


def test_pretrain_on_real_photos_cuts_hands_with_the_teacher(tmp_path, capsys):
    from components.pretrain import run_pretrain

    photos = _real_photos(tmp_path / "photos")
    result = run_pretrain(_pretrain_cfg(photos, tmp_path / "out", source="teacher", crop_size=48, epochs=2,
                                        keep_snapshots=True, save_every=5))
    hands = Path(result.corpus_dir)
    report = json.loads((hands.parent / "hands_report.json").read_text())
    # Every photo shows a hand; the teacher finds most of them. The crops keep the photo's folder.
    assert report["images_read"] == 6 and report["crops"] >= 4 and report["how"] == "teacher"
    assert set(report["per_folder"]) == {"fist", "call"}
    crop = cv2.imread(str(next((hands / "fist").glob("*.png"))))
    assert crop.shape == (48, 48, 3) and crop.std() > 10  # a real picture, not a blank
    # A preview every epoch; the encoder at --save_every and at the end (one snapshot here).
    assert len(result.previews) == 2 and len(list((tmp_path / "out" / "snapshots").glob("*.pt"))) == 1
    # A corrupt file in the folder is named and skipped, never silent.
    (photos / "fist" / "broken.jpg").write_bytes(b"not a jpeg")
    run_pretrain(_pretrain_cfg(photos, tmp_path / "out2", source="teacher", crop_size=48))
    assert "broken.jpg: not a readable image, skipped" in capsys.readouterr().err
    assert any(u.endswith("broken.jpg") for u in json.loads(
        (tmp_path / "out2" / "corpus" / "hands_report.json").read_text())["unreadable"])
    (photos / "fist" / "broken.jpg").unlink()
    # A second run reuses the crops instead of asking the teacher again.
    again = run_pretrain(_pretrain_cfg(photos, tmp_path / "out", source="teacher", crop_size=48))
    assert again.corpus_dir == result.corpus_dir


def test_pretrain_on_a_folder_without_hands_fails_before_training(tmp_path):
    from components.pretrain import run_pretrain

    blank = tmp_path / "walls"
    blank.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(blank / f"wall_{i}.png"), (rng.random((96, 96, 3)) * 40 + 100).astype(np.uint8))
    with pytest.raises(UserError, match="no hand found in 3 image"):
        run_pretrain(_pretrain_cfg(blank, tmp_path / "out", source="teacher"))
    assert not (tmp_path / "out" / "encoder.pt").exists()


def test_finetune_labels_per_class_and_too_few_labels(tmp_path, split_corpus_dir):
    from components.tasks.gmae_finetune import GMAEFinetuneConfig, run_finetune

    def cfg(**kw):
        return GMAEFinetuneConfig(data_dir=str(split_corpus_dir), output_dir=str(tmp_path / "ft"),
                                  model="gmae_classifier_tiny", img_size=32, epochs=1, batch_size=8, num_workers=0,
                                  progress_bar=False, plots=False, accelerator="cpu", evaluate_test=False, **kw)

    result = run_finetune(cfg(labels_per_class=2))
    classes = len(list((split_corpus_dir / "finetune_dataset" / "train").iterdir()))
    assert result.extra["train_images"] == 2 * classes
    # One labelled image for five classes cannot teach them: refused before training, with the fix.
    with pytest.raises(UserError, match="at least one image per class"):
        run_finetune(cfg(labels_per_class=1, class_names=["fist", "normal_hand", "pointer", "pinch", "2_hands",
                                                          "call"], num_classes=0))
