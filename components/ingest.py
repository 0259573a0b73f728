"""Ingest: any supported source -> one normalised YOLO-pose dataset.

    python -m components.ingest --source synthetic --output_dir data/demo --num_images 600
    python -m components.ingest --source folder --input_dir ../shared/data/roboflow_gestures_v6 --output_dir D
    python -m components.ingest --source hagrid --input_dir ../shared/data/hagrid_sample --output_dir D
    python -m components.ingest --source roboflow --api_key KEY --workspace W --project P --version 6 --output_dir D

Writes `D/data.yaml`, `D/{train,val,test}/{images,labels}`, `D/manifest.json` and
`D/rejected/` (every rejected input file, with `reasons.jsonl`). Inputs are never
modified; the exit code is non-zero only when nothing usable remains.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from collections import Counter
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from shared.config import add_config_args, check_outputs, load_config, option, save_config
from shared.data.labels import write_labels
from shared.data.sources import (
    GestureMap,
    Rejection,
    SourceItem,
    SourceReport,
    default_gesture_map_path,
    download_roboflow,
    folder_map_section,
    read_folder,
    read_hagrid_source,
)
from shared.errors import UserError, run_cli
from shared.hand import FLIP_IDX, GESTURES, NUM_KEYPOINTS

SPLITS = ("train", "val", "test")


@dataclass
class IngestConfig:
    source: str = option("synthetic", "where the data comes from",
                         metadata={"choices": ["synthetic", "folder", "roboflow", "hagrid"]})
    output_dir: str = option("outputs/dataset", "the dataset folder to write", output="dir")
    input_dir: str = option("", "input folder (folder / hagrid sources)")
    num_images: int = option(600, "synthetic: number of still images", min=1)
    sequences: int = option(0, "synthetic: number of video sequences with ground-truth tracks", min=0)
    frames: int = option(60, "synthetic: frames per sequence", min=1)
    image_size: int = option(320, "synthetic: image side in pixels", min=32)
    seed: int = option(0, "random seed (synthetic content and split assignment)")
    splits: list[float] = option([0.7, 0.2, 0.1], "train/val/test fractions for sources without their own splits "
                                 "(three numbers in [0, 1] that sum to 1)", min=0.0, max=1.0)
    gesture_map: str = option("", "YAML mapping source class names to ours (default: configs/gesture_map.yaml)")
    api_key: str = option("", "Roboflow API key (or env ROBOFLOW_API_KEY)")
    workspace: str = option("", "Roboflow workspace")
    project: str = option("", "Roboflow project")
    version: int = option(0, "Roboflow dataset version", min=0)
    format: str = option("yolov11", "Roboflow export format")
    overwrite: bool = option(False, "replace an existing, non-empty output_dir")
    workers: int = option(2, "processes for synthetic rendering", min=0)

    def __post_init__(self) -> None:
        check_splits(self.splits)


@dataclass
class IngestResult:
    output_dir: str
    data_yaml: str
    manifest: str
    counts: dict
    rejected: int
    content_hash: str


# --------------------------------------------------------------------------- splitting
def check_splits(fractions: list[float]) -> None:
    """Three fractions in [0, 1] (train val test) that sum to 1, or one UserError."""
    if len(fractions) != 3 or any(not 0 <= f <= 1 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise UserError(f"--splits {' '.join(map(str, fractions))}: expected three fractions in [0, 1] (train val "
                        f"test) that sum to 1, e.g. 0.7 0.2 0.1" + (f"; these sum to {sum(fractions):g}"
                                                                     if len(fractions) == 3 else ""))


def assign_splits(items: list[SourceItem], fractions: list[float], seed: int) -> dict[str, list[SourceItem]]:
    """Keep a source's own splits; otherwise split by group (subject) or by item, seeded."""
    check_splits(fractions)
    fr = np.asarray(fractions, dtype=np.float64) / sum(fractions)
    out: dict[str, list[SourceItem]] = {s: [] for s in SPLITS}
    if items and all(it.split in SPLITS for it in items):
        for it in items:
            out[it.split].append(it)  # type: ignore[index]
        return out
    rng = np.random.default_rng(seed)
    groups: dict[str, list[SourceItem]] = {}
    for it in items:
        groups.setdefault(it.group or f"__item_{it.key}", []).append(it)
    keys = sorted(groups)
    rng.shuffle(keys)
    total = len(items)
    targets = fr * total
    filled = np.zeros(3)
    for key in keys:
        # Greedy: the split furthest below its target takes the next group.
        deficit = targets - filled
        s = int(np.argmax(deficit))
        out[SPLITS[s]].extend(groups[key])
        filled[s] += len(groups[key])
    return out


# --------------------------------------------------------------------------- writing
def _write_item(item: SourceItem, split: str, out: Path) -> str:
    """Write image + label; return the written image name."""
    images_dir = out / split / "images"
    if item.image_path is not None:
        name = item.key + item.image_path.suffix.lower()
        shutil.copyfile(item.image_path, images_dir / name)
    else:
        name = item.key + ".jpg"
        ok, buf = cv2.imencode(".jpg", item.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if not ok:
            raise RuntimeError(f"could not encode {item.key}")
        (images_dir / name).write_bytes(buf.tobytes())
    write_labels(out / split / "labels" / f"{item.key}.txt", item.labels)
    return name


def _render_and_write(args: tuple[int, int, int, str, str]) -> tuple[str, list[int], int]:
    """Worker: render one synthetic image and write it (deterministic per index)."""
    from shared.data.synthetic import SyntheticConfig, render_image

    seed, index, size, split, out = args
    sample = render_image(seed, index, SyntheticConfig(image_size=size))
    item = SourceItem(f"synth_{seed}_{index:06d}", sample.labels, image=sample.image)
    _write_item(item, split, Path(out))
    return item.key, [lb.cls for lb in sample.labels], len(sample.labels)


def _write_sequences(cfg: IngestConfig, out: Path) -> list[dict]:
    from shared.data.synthetic import SyntheticConfig, render_sequence, write_mot

    info = []
    scfg = SyntheticConfig(image_size=cfg.image_size)
    for k in tqdm(range(cfg.sequences), desc="sequences", unit="seq", disable=cfg.sequences == 0):
        seq_dir = out / "sequences" / f"seq_{k:03d}"
        (seq_dir / "images").mkdir(parents=True, exist_ok=True)
        (seq_dir / "labels").mkdir(parents=True, exist_ok=True)
        (seq_dir / "gt").mkdir(parents=True, exist_ok=True)
        frames = render_sequence(cfg.seed, k, cfg.frames, scfg)
        for f, frame in enumerate(frames, 1):
            ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            (seq_dir / "images" / f"{f:06d}.jpg").write_bytes(buf.tobytes())
            write_labels(seq_dir / "labels" / f"{f:06d}.txt", frame.labels)
        h, w = frames[0].image.shape[:2]
        write_mot(seq_dir / "gt" / "gt.txt", frames, w, h)
        (seq_dir / "seqinfo.ini").write_text(
            f"[Sequence]\nname=seq_{k:03d}\nimDir=images\nframeRate=30\nseqLength={len(frames)}\n"
            f"imWidth={w}\nimHeight={h}\nimExt=.jpg\n")
        info.append({"name": seq_dir.name, "frames": len(frames),
                     "tracks": len({t for fr in frames for t in fr.track_ids})})
    return info


def _content_hash(out: Path) -> str:
    digest = hashlib.sha256()
    for split in SPLITS:
        for sub in ("images", "labels"):
            for p in sorted((out / split / sub).iterdir()):
                digest.update(f"{split}/{sub}/{p.name}\n".encode())
                digest.update(hashlib.sha256(p.read_bytes()).digest())
    return digest.hexdigest()


def _write_rejected(rejected: list[Rejection], out: Path) -> None:
    rej_dir = out / "rejected"
    rej_dir.mkdir(parents=True, exist_ok=True)
    with open(rej_dir / "reasons.jsonl", "w") as f:
        for n, r in enumerate(rejected):
            copies = []
            for src in r.files:
                if src.is_file():
                    dst = rej_dir / f"{n:05d}_{src.name}"
                    shutil.copyfile(src, dst)
                    copies.append(dst.name)
            f.write(json.dumps({"item": r.item, "reason": r.reason, "files": copies}) + "\n")


def _prepare_output(out: Path, cfg: IngestConfig) -> None:
    if cfg.input_dir:
        inp = Path(cfg.input_dir).resolve()
        if out.resolve() == inp or inp in out.resolve().parents:
            raise UserError(f"--output_dir {out} lies inside --input_dir {inp}; choose a separate folder "
                            "(inputs are never modified)")
    if out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise UserError(f"output folder {out} is not empty; pass --overwrite to replace it or pick another")
        if not (out / "manifest.json").is_file() and not (out / "data.yaml").is_file():
            raise UserError(f"refusing to --overwrite {out}: it does not look like a dataset written by ingest")
        shutil.rmtree(out)
    for split in SPLITS:
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "labels").mkdir(parents=True, exist_ok=True)


def _describe_map(gmap: GestureMap, section: str, map_path: str | Path, why: str) -> str:
    mapped = ", ".join(f"{k}->{v}" for k, v in gmap.names.items()) or "identity"
    dropped = f"; dropped: {', '.join(sorted(gmap.drop))}" if gmap.drop else ""
    return f"class mapping: section '{section}' of {map_path} ({why}): {mapped}{dropped}"


def _load_source(cfg: IngestConfig, out: Path) -> tuple[SourceReport, str]:
    map_path = cfg.gesture_map or default_gesture_map_path()
    if cfg.source == "folder":
        if not cfg.input_dir:
            raise UserError("--source folder needs --input_dir")
        if not Path(cfg.input_dir).is_dir():
            raise UserError(f"input folder not found: {cfg.input_dir} (pass --input_dir with a YOLO / Roboflow "
                            f"export folder)")
        section, why = folder_map_section(cfg.input_dir, map_path)
        gmap = GestureMap.load(map_path, section)
        print(_describe_map(gmap, section, map_path, why))
        report = read_folder(cfg.input_dir, gmap)
        report.mapping = why
        return report, section
    if cfg.source == "hagrid":
        if not cfg.input_dir:
            raise UserError("--source hagrid needs --input_dir")
        return read_hagrid_source(cfg.input_dir, GestureMap.load(map_path, "hagrid")), "hagrid"
    if cfg.source == "roboflow":
        location = out.parent / f".{out.name}_roboflow_download"
        root = download_roboflow(cfg.api_key, cfg.workspace, cfg.project, cfg.version, cfg.format, location)
        return read_folder(root, GestureMap.load(map_path, "roboflow")), "roboflow"
    raise UserError(f"unknown --source {cfg.source!r}; choose synthetic, folder, roboflow or hagrid")


# --------------------------------------------------------------------------- the stage
def ingest(cfg: IngestConfig) -> IngestResult:
    out = Path(cfg.output_dir)
    check_splits(cfg.splits)
    check_outputs(cfg)
    if cfg.source != "synthetic":
        # Read and validate (and download) before touching the output folder.
        report, map_section = _load_source(cfg, out)
    _prepare_output(out, cfg)
    per_split: dict[str, list[tuple[str, list[int]]]] = {s: [] for s in SPLITS}
    notes: list[str] = []
    if cfg.source == "synthetic":
        report, map_section = SourceReport(), None
        order = np.random.default_rng(cfg.seed).permutation(cfg.num_images)
        fr = np.asarray(cfg.splits, dtype=np.float64) / sum(cfg.splits)
        bounds = np.round(np.cumsum(fr) * cfg.num_images).astype(int)
        split_of = {int(idx): SPLITS[int(np.searchsorted(bounds, pos, side="right"))]
                    for pos, idx in enumerate(order)}
        jobs = [(cfg.seed, i, cfg.image_size, split_of[i], str(out)) for i in range(cfg.num_images)]
        if cfg.workers > 1 and cfg.num_images >= 50:
            with get_context("spawn").Pool(cfg.workers) as pool:
                results = list(tqdm(pool.imap(_render_and_write, jobs, chunksize=8), total=len(jobs),
                                    desc="synthetic", unit="img"))
        else:
            results = [_render_and_write(j) for j in tqdm(jobs, desc="synthetic", unit="img")]
        for (key, classes, _n), job in zip(results, jobs):
            per_split[job[3]].append((key, classes))
    else:
        splits = assign_splits(report.items, cfg.splits, cfg.seed)
        for split, items in splits.items():
            for item in tqdm(items, desc=f"writing {split}", unit="img", disable=not items):
                _write_item(item, split, out)
                per_split[split].append((item.key, [lb.cls for lb in item.labels]))
                notes.extend(item.notes)

    sequences = _write_sequences(cfg, out) if cfg.source == "synthetic" and cfg.sequences > 0 else []
    _write_rejected(report.rejected, out)

    counts = {}
    hist: Counter = Counter()
    for split, rows in per_split.items():
        classes = Counter(c for _, cl in rows for c in cl)
        counts[split] = {"images": len(rows), "hands": sum(classes.values()),
                         "images_without_hands": sum(1 for _, cl in rows if not cl),
                         "classes": {GESTURES[c]: classes.get(c, 0) for c in range(len(GESTURES))}}
        hist.update(len(cl) for _, cl in rows)

    data_yaml = out / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({
        "path": str(out.resolve()), "train": "train/images", "val": "val/images", "test": "test/images",
        "kpt_shape": [NUM_KEYPOINTS, 3], "flip_idx": list(FLIP_IDX),
        "nc": len(GESTURES), "names": {i: n for i, n in enumerate(GESTURES)},
    }, sort_keys=False))
    content_hash = _content_hash(out)
    manifest = {
        "source": cfg.source,
        "input": cfg.input_dir or None,
        "gesture_map": {"file": str(cfg.gesture_map or default_gesture_map_path()), "section": map_section,
                        "why": report.mapping or None},
        "names": list(GESTURES),
        "counts": counts,
        "total_images": sum(c["images"] for c in counts.values()),
        "hands_per_image": {str(k): v for k, v in sorted(hist.items())},
        "content_hash": content_hash,
        "rejected": [{"item": r.item, "reason": r.reason} for r in report.rejected],
        "unmapped_names": report.unmapped,
        "dropped_names": report.dropped,
        "notes": notes,
        "sequences": sequences,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    save_config(cfg, out / "ingest_config.yaml")
    return IngestResult(str(out), str(data_yaml), str(out / "manifest.json"), counts, len(report.rejected),
                        content_hash)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.ingest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML with IngestConfig keys (flags override it)")
    add_config_args(parser, IngestConfig)
    args = parser.parse_args(argv)
    cfg = load_config(IngestConfig, args.config, args)
    result = ingest(cfg)
    total = sum(c["images"] for c in result.counts.values())
    for split, c in result.counts.items():
        print(f"{split:5s} {c['images']:6d} images {c['hands']:6d} hands  {c['classes']}")
    print(f"rejected {result.rejected} item(s) (see {Path(result.output_dir) / 'rejected' / 'reasons.jsonl'})")
    print(f"dataset: {result.data_yaml}")
    if total == 0:
        raise UserError(f"nothing usable remains after validation: {result.rejected} item(s) rejected (reasons in "
                        f"{Path(result.output_dir) / 'rejected' / 'reasons.jsonl'})")
    return 0


if __name__ == "__main__":
    run_cli(main)
