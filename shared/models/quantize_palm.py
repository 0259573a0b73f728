"""INT8 BlazePalm: the palm detector quantized on real photos, checked hand for hand.

    report = quantize_blazepalm("palm.onnx", "palm_int8.onnx", calibration=real_frames(...),
                                tests={"hagrid_sample": real_frames(...)})

The same recipe as BlazeHand's (`shared.models.quantize`: ONNX Runtime QDQ or NNCF for OpenVINO,
per-channel weights, ranges from real data), on what the detector sees: whole photos
letterboxed to 192 (`shared.inference.real_crops.real_frames`). What is compared is what the
pipeline uses, the palms after the detector's own post-processing (score >= 0.5, MediaPipe's
weighted NMS), int8 against fp32 on the same photos:

- the photos where the number of palms differs (tolerance `tol_photos_differ`, default 0: the
  same hands on every photo);
- for the palms found by both (IoU >= 0.5), the error of the box corners and the 7 palm
  keypoints in pixels at 192 (mean and p99 tolerances, as BlazeHand's at 224).

Mixed precision works on modules (the stem, each stage, each FPN step, each head, the joins
between them; 19 in all),
not single convolutions: each module is quantized ALONE on the validation photos (its
sensitivity: photos differing, then pixel error), and the most sensitive ones stay in float,
the fewest that keep the validation photos within tolerance (a bisection), at most
`max_float_layers` modules. The result is verified on held-out photos of other people; the
caller must not ship a file whose `QuantizeReport.failed` is set (components.export keeps the
float model and exits 2).

Measured (docs/benchmarks.md, INT8): the palm detector is the fragile one. Its photos often hold
a second palm candidate scored near the 0.5 threshold, so most modules alone already move some
photo's palm count: NNCF all-int8 is 1.5x faster on OpenVINO (8.3 -> 5.4 ms, 1 thread) but
changes the number of palms on 8-11 % of the photos; the mix the sweep finds (15 of 19 modules
float) gains nothing and still loses a palm on 1 of 124 held-out photos.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from shared.data.realsets import RealCrops
from shared.errors import UserError
from shared.models.blazepalm_post import Letterbox, iou_one_to_many, postprocess
from shared.models.quantize import (
    CropReader,
    LayerCost,
    QuantizeConfig,
    QuantizeReport,
    fewest_within,
    finish,
    preprocess,
    quantize_file,
    read_sets,
    run_model,
    split_by_photo,
    verify_held_out,
)

SCORE_THRESHOLD = 0.5  # the pipeline's detector_score_threshold (MediaPipe's min_detection_confidence)
NMS_THRESHOLD = 0.3
MATCH_IOU = 0.5  # an int8 palm is the fp32 palm it overlaps this much
TOL_PHOTOS_DIFFER = 0.0  # fraction of held-out photos whose number of palms may differ


def module_of(node: str) -> str | None:
    """A BlazePalm node's module: /model/stage8/stage8.3/pointwise/Conv -> stage8 (the stem's activation
    is the stem's); the nodes between modules (the FPN's upsample-and-add joins, the heads' reshapes)
    are "joins"; the export wrapper's decoding (outside /model/, always float) None."""
    if not node.startswith("/model/"):
        return None
    m = re.match(r"/model/([^/]+)/", node)
    if not m:
        return "joins"
    return "stem" if m.group(1) == "stem_act" else m.group(1)


def model_modules(path: str | Path) -> dict[str, list[str]]:
    """Module -> the names of ALL its nodes (convolutions, activations, additions): keeping a module in
    float must leave no quantizer inside it, and NNCF puts some on additions and concatenations."""
    import onnx

    modules: dict[str, list[str]] = {}
    for node in onnx.load(str(path)).graph.node:
        name = module_of(node.name)
        if name is not None:
            modules.setdefault(name, []).append(node.name)
    return modules


def wrapper_nodes(path: str | Path) -> list[str]:
    """The nodes outside the network (`module_of` None): the export wrapper's input clamp and decoding."""
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if module_of(n.name) is None]


def _palms(out: dict[str, np.ndarray], i: int, size: int):
    identity = Letterbox(1.0, 1.0, 0.0, 0.0, size)  # input pixels
    return postprocess(out["boxes"][i], out["keypoints"][i], out["scores"][i], identity, SCORE_THRESHOLD,
                       NMS_THRESHOLD)


def compare_palm(out: dict[str, np.ndarray], ref: dict[str, np.ndarray], size: int = 192) -> dict[str, float]:
    """int8 (`out`) vs float (`ref`) BlazePalm outputs on the same photos, after post-processing: photos
    whose number of palms differs, and for matched palms the distance of the 2 box corners and 7
    keypoints (px at `size`) and the largest score difference."""
    differ, palms_ref, palms_out, unmatched = 0, 0, 0, 0
    dists: list[np.ndarray] = []
    score_diff = 0.0
    for i in range(len(ref["scores"])):
        r, o = _palms(ref, i, size), _palms(out, i, size)
        palms_ref += len(r)
        palms_out += len(o)
        differ += int(len(r) != len(o))
        for j in range(len(r)):
            iou = iou_one_to_many(r.xyxy[j], o.xyxy) if len(o) else np.zeros(0)
            if not len(iou) or iou.max() < MATCH_IOU:
                unmatched += 1
                continue
            k = int(iou.argmax())
            points_r = np.concatenate([r.xyxy[j].reshape(2, 2), r.keypoints[j]])
            points_o = np.concatenate([o.xyxy[k].reshape(2, 2), o.keypoints[k]])
            dists.append(np.linalg.norm(points_o - points_r, axis=-1))
            score_diff = max(score_diff, abs(float(o.score[k]) - float(r.score[j])))
    d = np.concatenate(dists) if dists else np.zeros(0)
    photos = len(ref["scores"])
    return {"photos": float(photos), "palms_fp32": float(palms_ref), "palms_int8": float(palms_out),
            "photos_differ": float(differ), "photos_differ_fraction": differ / max(photos, 1),
            "unmatched": float(unmatched), "mean_px": float(d.mean()) if d.size else 0.0,
            "p99_px": float(np.percentile(d, 99)) if d.size else 0.0, "max_px": float(d.max()) if d.size else 0.0,
            "score_max_diff": score_diff}


def missed_palm(metrics: dict[str, float], tol_mean: float, tol_p99: float,
                tol_photos: float = TOL_PHOTOS_DIFFER) -> str:
    """'' when `metrics` (compare_palm) are within tolerance, else which tolerance failed."""
    if metrics["photos_differ_fraction"] > tol_photos + 1e-9:
        return (f"the number of palms differs on {int(metrics['photos_differ'])} of {int(metrics['photos'])} photos "
                f"({metrics['photos_differ_fraction']:.1%} > {tol_photos:.1%})")
    if metrics["mean_px"] > tol_mean:
        return f"palm box / keypoint mean error {metrics['mean_px']:.2f} px > {tol_mean} px"
    if metrics["p99_px"] > tol_p99:
        return f"palm box / keypoint p99 error {metrics['p99_px']:.2f} px > {tol_p99} px"
    return ""


def quantize_blazepalm(float_path: str | Path, out_path: str | Path, calibration: RealCrops,
                       tests: dict[str, RealCrops], cfg: QuantizeConfig | None = None, log=print,
                       tol_photos_differ: float = TOL_PHOTOS_DIFFER) -> QuantizeReport:
    """Quantize a BlazePalm ONNX file to `out_path` with the fewest float modules that keep the
    validation photos within tolerance, then verify on the held-out `tests` (see the module doc).
    `calibration` / `tests`: letterboxed photos (`real_frames`). `out_path` is written either way;
    check `report.passed` before using it."""
    cfg = cfg or QuantizeConfig(float_modules=[])
    start = time.perf_counter()
    float_path, out_path = Path(float_path), Path(out_path)
    size = calibration.x.shape[-1]
    ref_all = run_model(float_path, calibration.x, cfg.threads, runtime=cfg.runtime)
    if not any(len(_palms(ref_all, i, size)) for i in range(len(calibration))):
        where = ", ".join(sorted({str(Path(s).parent) for s in calibration.sources})[:3])
        raise UserError(f"{where}: the palm detector finds no hand on any of the {len(calibration)} calibration "
                        "photos; --calibration_dir needs real photos of hands")
    cal_idx, val_idx = split_by_photo(calibration, cfg.val_fraction)
    cal_x, val_x = calibration.x[cal_idx], calibration.x[val_idx] if len(val_idx) else calibration.x
    ref_val = {k: v[val_idx] for k, v in ref_all.items()} if len(val_idx) else ref_all

    def missed(m: dict[str, float]) -> str:
        return missed_palm(m, cfg.tol_mean_px, cfg.tol_p99_px, tol_photos_differ)

    nothing_int8 = ""
    with tempfile.TemporaryDirectory(prefix="handops-int8-palm-") as tmp:
        tmp = Path(tmp)
        pre = preprocess(float_path, tmp / "pre.onnx")
        cache = tmp / "ranges.json"
        modules = model_modules(pre)
        # The export wrapper's input clamp and anchor decoding stay float: ONNX Runtime would otherwise put
        # quantizers on them, boxes and keypoints included (8-bit outputs: about 1 px steps at 192).
        fixed = wrapper_nodes(pre) + [n for m in cfg.float_modules if m and m != "none" for n in modules.get(m, [])]

        def trial(path: Path, exclude: list[str] = (), only: list[str] | None = None) -> dict[str, float]:
            quantize_file(pre, path, cal_x, cache, cfg, fixed + list(exclude), only)
            return compare_palm(run_model(path, val_x, cfg.threads, runtime=cfg.runtime), ref_val, size)

        best = tmp / "best.onnx"
        all_int8 = trial(best)
        log(f"int8 palm detector (every module): {int(all_int8['photos_differ'])} of {len(val_x)} validation photos "
            f"differ in palms found, box / keypoint mean {all_int8['mean_px']:.2f} px, p99 {all_int8['p99_px']:.2f} px")
        report = QuantizeReport(int8_path=str(out_path), float_path=str(float_path), calibration_crops=len(cal_x),
                                validation_crops=len(val_x), config=asdict(cfg), all_int8=all_int8, chosen=all_int8,
                                kind="palm")
        report.config["tol_photos_differ"] = tol_photos_differ
        if missed(all_int8) and cfg.max_float_layers > 0:
            names = [m for m in modules if m not in cfg.float_modules]
            log(f"sensitivity: {len(names)} modules, each quantized alone ...")
            candidate = tmp / "trial.onnx"
            for name in names:
                m = trial(candidate, only=modules[name])
                report.sensitivity.append({"node": name, "op_type": "module", "mean_px": m["mean_px"],
                                           "p99_px": m["p99_px"], "photos_differ": m["photos_differ"]})
                log(f"  {name} alone: {int(m['photos_differ'])} photo(s) differ, mean {m['mean_px']:.2f} px")
            ranked = sorted(report.sensitivity, key=lambda s: (-s["photos_differ"], -s["mean_px"], -s["p99_px"]))
            results: dict[int, dict[str, float]] = {0: all_int8}

            def floats(k: int) -> list[str]:
                return [n for s in ranked[:k] for n in modules[s["node"]]]

            def ok(k: int) -> bool:
                results[k] = m = trial(candidate, exclude=floats(k))
                log(f"  {k} most sensitive module(s) in float: {int(m['photos_differ'])} photo(s) differ, "
                    f"mean {m['mean_px']:.2f} px")
                return not missed(m)

            hi = fewest_within(ok, min(cfg.max_float_layers, len(ranked)))
            report.chosen = results[hi]
            quantize_file(pre, best, cal_x, cache, cfg, fixed + floats(hi))
            report.float_layers = [LayerCost(s["node"], "module", s["mean_px"], s["p99_px"]) for s in ranked[:hi]]
            if hi == len(ranked):
                # every module float: the file is fp32 with extra steps; the mix within tolerance does not exist
                below = results.get(hi - 1) or trial(candidate, exclude=floats(hi - 1))
                nothing_int8 = (f"validation: no module can be int8: with the {hi - 1} most sensitive in float, the "
                                f"one left int8 ({ranked[-1]['node']}) still misses ({missed(below)})")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        best.replace(out_path)
    report = verify_held_out(report, out_path, float_path, tests, lambda a, b: compare_palm(a, b, size), missed,
                             cfg.threads, calibration.x, start, cfg.runtime)
    report.failed = report.failed or nothing_int8
    return report


def describe_palm(report: QuantizeReport) -> list[str]:
    """The palm detector's verification table (components.export prints it)."""
    a = report.all_int8
    lines = [f"int8 palm detector: calibrated on {report.calibration_crops} real photos, float modules chosen on "
             f"{report.validation_crops} validation photos",
             f"every module int8 (validation): {int(a['photos_differ'])} photo(s) differ in palms found, box / "
             f"keypoint mean {a['mean_px']:.2f} px, p99 {a['p99_px']:.2f} px"]
    if report.float_layers:
        c = report.chosen
        lines.append(f"{len(report.float_layers)} module(s) kept in float (validation: {int(c['photos_differ'])} "
                     f"photo(s) differ, mean {c['mean_px']:.2f} px); each one's effect when quantized alone:")
        by_name = {s["node"]: s for s in report.sensitivity}
        for f in report.float_layers:
            lines.append(f"  {f.node}: {int(by_name[f.node]['photos_differ'])} photo(s) differ, mean "
                         f"{f.alone_mean_px:.3f} px, p99 {f.alone_p99_px:.2f} px")
    lines.append("held-out photos, int8 vs fp32 palms (score >= 0.5, after NMS; px at the input size):")
    lines.append("| set | photos | palms fp32 | palms int8 | photos differing | mean px | p99 px | max px | "
                 "max score diff |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for name, m in report.tests.items():
        lines.append(f"| {name} | {int(m['photos'])} | {int(m['palms_fp32'])} | {int(m['palms_int8'])} | "
                     f"{int(m['photos_differ'])} | {m['mean_px']:.2f} | {m['p99_px']:.2f} | {m['max_px']:.2f} | "
                     f"{m['score_max_diff']:.3f} |")
    return lines


def quantize_palm_stage(cfg, float_path: Path, out_path: Path, real_frames: CropReader, log=print,
                        size: int = 192) -> dict:
    """`components.export onnx --model_type blazepalm_full --precision int8`: letterboxed photos from
    `cfg.calibration_dir` (a quarter held out unless `cfg.test_dir` names other people; `real_frames`
    reads them, passed in by the caller), `quantize_blazepalm`, the table printed. Returns the report
    as a dict; a model that misses a tolerance is renamed `<stem>_int8_rejected.onnx`."""
    calibration, tests = read_sets(cfg, real_frames, size, log, what="letterboxed photos")
    # BlazeHand's float modules ('auto') mean nothing here: the palm detector's are chosen by the sweep.
    modules = [] if list(cfg.float_modules) == ["auto"] else list(cfg.float_modules)
    qcfg = QuantizeConfig(max_float_layers=cfg.max_float_layers, tol_mean_px=cfg.tol_mean_px,
                          tol_p99_px=cfg.tol_p99_px, weight_bits=cfg.weight_bits, runtime=cfg.runtime,
                          quantizer=cfg.quantizer, float_modules=modules, float_heads=False)
    report = quantize_blazepalm(float_path, out_path, calibration, tests, qcfg, log=log,
                                tol_photos_differ=cfg.tol_photos_differ)
    return finish(report, out_path, log, describe_palm)
