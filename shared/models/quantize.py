"""INT8 on the CPU: ONNX Runtime static quantization of BlazeHand, checked on real crops.

    report = quantize_blazehand("hand.onnx", "hand_int8.onnx", calibration=real_crops(...),
                                tests={"hagrid_sample": real_crops(...)})

Recipe (`QuantizeConfig`): QDQ format, per-channel s8 weights, u8 activations, ranges from
real hand crops (`shared.inference.real_crops`, the same reader the TensorRT INT8 calibrator
uses). The activation ranges are computed once and cached; every later quantization of the
same file (with other layers left in float) reuses them, so the sensitivity sweep costs one
quantization per layer, not one calibration.

Mixed precision: the calibration crops are split into a calibration part and a validation
part (other photos). When the all-int8 model misses the tolerance on the validation crops,
each Conv / Gemm is quantized ALONE (the rest in float) and the landmark error it brings is
measured: its sensitivity. (The other direction, everything int8 but one layer, says little:
the error is spread over the backbone, and leaving one layer in float moves the validation
mean by < 0.01 px for all but the stem.) The most sensitive layers are then kept in float,
the fewest that bring the validation error within tolerance (a bisection over the ranking),
at most `max_float_layers`. The result
is then verified against the float model on HELD-OUT crops (other people), and
`QuantizeReport.failed` names the first tolerance that is missed: the caller must not ship
the INT8 file then (components.export keeps the float model and exits 2).

Errors are in crop pixels of the model's input (224 for BlazeHand), measured only on crops
where the float model finds a hand (presence >= 0.5): the pipeline drops the others.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from shared.config import option
from shared.data.realsets import RealCrops
from shared.errors import UserError
from shared.models.openvino_int8 import OPENVINO_FLOAT_MODULES, OpenVinoModel, quantize_nncf

# (folder or image, size=, limit=) -> RealCrops: `shared.inference.real_crops.real_crops`, which runs the
# MediaPipe teacher; models below the inference room receive it from their caller.
CropReader = Callable[..., RealCrops]
# landmarks [N, 21, 2] (crop pixels) -> gesture ids [N]: the pipeline's gesture model, from the caller
GestureReader = Callable[[np.ndarray], np.ndarray]
# crop-model ONNX file -> {test set: {"accuracy": gesture accuracy of the whole pipeline on its labelled photos,
# "targets": labelled hands, "hands": hands found per photo}}: `shared.inference.gesture_eval.end_to_end_check`
EndToEnd = Callable[[Path], dict[str, dict]]

TOL_MEAN_PX = 1.0  # int8 vs fp32 landmarks, mean over keypoints of present hands, px at 224
TOL_P99_PX = 4.0  # ... 99th percentile
TOL_GESTURE = 0.01  # gesture accuracy (end to end, labelled photos) within this of fp32; without labels,
# the gesture (argmax) agreement on the crops must be >= 1 - this
PRESENT = 0.5  # presence threshold (the pipeline's min_presence)
QUANTIZABLE = ("Conv", "Gemm", "MatMul")  # the layers the sensitivity sweep looks at
# BlazeHand's first layers, at 112x112 and 56x56 (stem, first block, blocks 0-2: 12 of 47 convolutions),
# stay in float by default. Measured on real crops of other people (hagrid_sample 135, roboflow 75),
# 7-bit weights, heads float, 1,224 calibration crops (docs/benchmarks.md, INT8): all int8 1.69 px mean /
# 12.1 px p99; stem..block 0 float 0.76 / 4.12 px and one roboflow hand's gesture (score 0.513 in fp32)
# turns `unknown`; + block 1: 0.61 / 2.25 px, the same hand turns; + block 2 (the default): 0.63 / 3.06 px,
# that hand stays (0.502), every gesture accuracy and hand count equal to fp32's. Speed: int8 at high
# resolution pays about as much in quantize/dequantize traffic as it saves; 1.8-2.1x over fp32 either way
# on an AVX-512 VNNI CPU.
FLOAT_MODULES = ("stem", "first_block", "blocks.0", "blocks.1", "blocks.2")
# The runtime an int8 file is verified and timed on, and the tool that places its QDQ nodes
RUNTIMES = ("onnxruntime", "openvino")
QUANTIZERS = ("onnxruntime", "nncf")


def float_modules_for(modules: list[str], quantizer: str) -> list[str]:
    """BlazeHand's modules to keep in float: `modules`, or for ["auto"] the default measured with
    `quantizer` (FLOAT_MODULES, OPENVINO_FLOAT_MODULES for nncf)."""
    if list(modules) != ["auto"]:
        return list(modules)
    return list(OPENVINO_FLOAT_MODULES if quantizer == "nncf" else FLOAT_MODULES)


def module_nodes(nodes: list[tuple[str, str]], modules: list[str]) -> list[str]:
    """The ONNX nodes of BlazeHand modules ("stem", "blocks.0", ...): torch names a node by its
    module path, e.g. /model/blocks/blocks.0/expand/Conv."""
    wanted = [f"/{m}/" for m in modules if m and m != "none"]
    return [n for n, _ in nodes if any(w in n for w in wanted)]


@dataclass
class QuantizeConfig:
    runtime: str = option("onnxruntime", "the runtime the int8 file is verified and timed on: onnxruntime or "
                                         "openvino (the same QDQ file runs on both; OpenVINO's int8 is faster)",
                          choices=list(RUNTIMES))
    quantizer: str = option("onnxruntime", "who places the QDQ nodes: onnxruntime (ONNX Runtime's static "
                                           "quantization; runs well on both runtimes) or nncf (NNCF's, for OpenVINO: "
                                           "faster there, slow on ONNX Runtime)", choices=list(QUANTIZERS))
    calibrate_method: str = option("minmax", "activation ranges: minmax, entropy or percentile",
                                   choices=["minmax", "entropy", "percentile"])
    activation_symmetric: bool = option(False, "symmetric activation ranges (zero point 128 for u8)")
    per_channel: bool = option(True, "one weight scale per output channel")
    weight_bits: int = option(7, "7: ONNX Runtime's reduce_range, exact on every x86 CPU; 8: more weight precision, "
                                 "but u8 x s8 products overflow ONNX Runtime's 16-bit sums on CPUs without AVX-512 "
                                 "VNNI (AVX2: +60 % landmark error measured here)", choices=[7, 8])
    float_modules: list[str] = option(["auto"], "BlazeHand modules kept in float ('none' = none; 'auto' = the "
                                                "quantizer's measured default: FLOAT_MODULES for onnxruntime, "
                                                "OPENVINO_FLOAT_MODULES for nncf): the high-resolution first layers")
    float_heads: bool = option(True, "keep the fully connected heads (Gemm: landmarks, presence, ...) in float: a u8 "
                                     "landmark output alone rounds to ~1 px; they cost ~1 % of the run time")
    val_fraction: float = option(0.25, "part of the calibration crops (whole photos) kept out of calibration "
                                       "to choose the float layers", min=0.0, max=0.9)
    max_float_layers: int = option(12, "keep at most this many Conv/Gemm layers in float", min=0)
    tol_mean_px: float = option(TOL_MEAN_PX, "int8 vs fp32 landmark tolerance: mean, px at the input size", min=0)
    tol_p99_px: float = option(TOL_P99_PX, "int8 vs fp32 landmark tolerance: 99th percentile, px", min=0)
    threads: int = option(1, "threads for the checks and the timing", min=0)

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise UserError(f"int8 runtime {self.runtime!r} is not one of {', '.join(RUNTIMES)}")
        if self.quantizer not in QUANTIZERS:
            raise UserError(f"int8 quantizer {self.quantizer!r} is not one of {', '.join(QUANTIZERS)}")
        self.float_modules = float_modules_for(self.float_modules, self.quantizer)


def recipe(kind: str, **settings) -> QuantizeConfig:
    """The export's recipe for a model `kind`: "blazehand" keeps its first modules in float
    (`float_modules`, default the quantizer's, see FLOAT_MODULES); any other model ("classifier":
    timm, G-MAE) has no such modules and quantizes every layer but the head."""
    if kind != "blazehand":
        settings["float_modules"] = []
    return QuantizeConfig(**settings)


@dataclass
class LayerCost:
    """One layer kept in float: what the validation error and the speed were after adding it."""

    node: str
    op_type: str
    alone_mean_px: float  # validation mean error with ONLY this layer int8 (its sensitivity)
    alone_p99_px: float


@dataclass
class QuantizeReport:
    int8_path: str
    float_path: str
    calibration_crops: int
    validation_crops: int
    config: dict
    all_int8: dict[str, float]  # validation metrics with every layer quantized
    float_layers: list[LayerCost] = field(default_factory=list)
    sensitivity: list[dict] = field(default_factory=list)  # every layer: node, op_type, mean/p99 px when alone int8
    chosen: dict[str, float] = field(default_factory=dict)  # validation metrics of the shipped mix
    tests: dict[str, dict[str, float]] = field(default_factory=dict)  # held-out set -> metrics
    # labelled held-out set -> the whole pipeline's gesture accuracy and hands found, fp32 vs int8
    end_to_end: dict[str, dict] = field(default_factory=dict)
    speed_ms: dict[str, float] = field(default_factory=dict)  # fp32 / int8, batch 1
    failed: str = ""  # the first tolerance missed on a held-out set ("" = passed)
    seconds: float = 0.0
    kind: str = "blazehand"  # or "classifier" (a timm / G-MAE hand-crop classifier: top-1 agreement)

    @property
    def passed(self) -> bool:
        return not self.failed


# --------------------------------------------------------------------------- running


def session(path: str | Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def forward(path: str | Path, threads: int = 1,
            runtime: str = "onnxruntime") -> tuple[Callable[[np.ndarray], dict[str, np.ndarray]], int | None]:
    """The ONNX file on `runtime` (onnxruntime or openvino): (inputs -> outputs by name, the batch
    size the file is fixed to or None)."""
    if runtime == "openvino":
        model = OpenVinoModel(path, threads)
        return model, model.fixed_batch
    sess = session(path, threads)
    name, fixed = sess.get_inputs()[0].name, sess.get_inputs()[0].shape[0]
    names = [o.name for o in sess.get_outputs()]
    return (lambda x: dict(zip(names, sess.run(names, {name: x})))), (
        fixed if isinstance(fixed, int) and fixed > 0 else None)


def run_model(path: str | Path, x: np.ndarray, threads: int = 1, batch: int = 16,
              runtime: str = "onnxruntime") -> dict[str, np.ndarray]:
    """Outputs of the ONNX file on [N, 3, S, S] inputs, by name (batch 1 when the batch is fixed), on
    `runtime` (onnxruntime or openvino)."""
    run, fixed = forward(path, threads, runtime)
    step = fixed or batch
    chunks = [run(x[i:i + step]) for i in range(0, len(x), step)]
    return {n: np.concatenate([c[n] for c in chunks]) for n in chunks[0]}


def time_model(path: str | Path, x: np.ndarray, threads: int = 1, runs: int = 200, warmup: int = 20,
               runtime: str = "onnxruntime") -> float:
    """Median ms of one batch-1 run on `runtime`."""
    run, _ = forward(path, threads, runtime)
    one = np.ascontiguousarray(x[:1])
    for _ in range(warmup):
        run(one)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run(one)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def compare_blazehand(out: dict[str, np.ndarray], ref: dict[str, np.ndarray],
                      gestures: GestureReader | None = None) -> dict[str, float]:
    """int8 (`out`) vs float (`ref`) BlazeHand outputs on the same crops.

    Landmark error (px at the input size) over the keypoints of crops where the float model finds
    a hand; presence agreement (both above or both below 0.5) and max |diff|; gesture (argmax)
    agreement on the present crops.
    """
    present = ref["presence"][:, 0] >= PRESENT  # [N]
    dist = np.linalg.norm(out["landmarks"][..., :2] - ref["landmarks"][..., :2], axis=-1)[present]  # [M, 21]
    same = (out["presence"][:, 0] >= PRESENT) == present
    metrics = {
        "crops": float(len(present)), "present": float(present.sum()),
        "mean_px": float(dist.mean()) if dist.size else 0.0,
        "p99_px": float(np.percentile(dist, 99)) if dist.size else 0.0,
        "max_px": float(dist.max()) if dist.size else 0.0,
        "presence_agreement": float(same.mean()),
        "presence_max_diff": float(np.abs(out["presence"] - ref["presence"]).max()),
    }
    if present.any() and gestures is not None:
        # The gesture the pipeline outputs (the caller's gesture model on each side's landmarks:
        # MediaPipe's network has no trained gesture head of its own).
        a, b = (gestures(o["landmarks"][present][..., :2]) for o in (out, ref))
        metrics["gesture_agreement"] = float((np.asarray(a) == np.asarray(b)).mean())
    return metrics


def compare_end_to_end(fp32: dict[str, dict], int8: dict[str, dict]) -> tuple[dict[str, dict], str]:
    """The whole pipeline with the float vs the int8 crop model on labelled photos of other people
    (`EndToEnd` results): per set, both gesture accuracies and the photos where the number of hands
    found differs. Returns (table, the first tolerance missed or '')."""
    table, failed = {}, ""
    for name, ref in fp32.items():
        got = int8[name]
        differ = int(sum(a != b for a, b in zip(ref["hands"], got["hands"])))
        table[name] = {"targets": ref["targets"], "photos": len(ref["hands"]), "fp32_accuracy": ref["accuracy"],
                       "int8_accuracy": got["accuracy"], "hands_fp32": int(sum(ref["hands"])),
                       "hands_int8": int(sum(got["hands"])), "photos_hands_differ": differ}
        if failed:
            continue
        if abs(got["accuracy"] - ref["accuracy"]) > TOL_GESTURE + 1e-9:
            failed = (f"{name}: gesture accuracy {got['accuracy']:.3f} int8 vs {ref['accuracy']:.3f} fp32 on "
                      f"{ref['targets']} labelled hands (tolerance {TOL_GESTURE})")
        elif differ:
            failed = f"{name}: the number of hands found differs on {differ} of {len(ref['hands'])} photos"
    return table, failed


def missed_tolerance(metrics: dict[str, float], tol_mean: float, tol_p99: float, gesture_agreement: bool = True) -> str:
    """'' when `metrics` are within tolerance, else which tolerance failed and by how much.
    `gesture_agreement`: also hold the crops' gesture agreement to 1 - TOL_GESTURE (when no labelled
    photos measure the gesture accuracy itself)."""
    if metrics["mean_px"] > tol_mean:
        return f"landmark mean error {metrics['mean_px']:.2f} px > {tol_mean} px"
    if metrics["p99_px"] > tol_p99:
        return f"landmark p99 error {metrics['p99_px']:.2f} px > {tol_p99} px"
    if metrics["presence_agreement"] < 1.0:
        return f"hands found differ on {1 - metrics['presence_agreement']:.1%} of the crops (presence 0.5)"
    if gesture_agreement and metrics.get("gesture_agreement", 1.0) < 1.0 - TOL_GESTURE:
        return f"gesture agreement {metrics['gesture_agreement']:.3f} < {1 - TOL_GESTURE:.2f}"
    return ""


# --------------------------------------------------------------------------- quantizing


class _Reader:
    """onnxruntime's CalibrationDataReader over an [N, 3, S, S] array, one crop per call."""

    def __init__(self, x: np.ndarray, input_name: str) -> None:
        self.x, self.input_name, self.i = x, input_name, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.x):
            return None
        self.i += 1
        return {self.input_name: self.x[self.i - 1:self.i]}

    def __len__(self) -> int:
        return len(self.x)


def quantizable_nodes(path: str | Path) -> list[tuple[str, str]]:
    """(name, op_type) of the Conv / Gemm / MatMul nodes, in graph order."""
    import onnx

    model = onnx.load(str(path))
    return [(n.name, n.op_type) for n in model.graph.node if n.op_type in QUANTIZABLE]


def quantize_static_qdq(float_path: str | Path, out_path: str | Path, calib_x: np.ndarray, cache: str | Path,
                        cfg: QuantizeConfig, nodes_to_exclude: list[str] | None = None,
                        nodes_to_quantize: list[str] | None = None) -> Path:
    """One QDQ quantization of `float_path`; activation ranges computed from `calib_x` into `cache`
    on the first call and read from it afterwards."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.calibrate_method]
    input_name = session(float_path).get_inputs()[0].name
    quantize_static(str(float_path), str(out_path), _Reader(calib_x, input_name), quant_format=QuantFormat.QDQ,
                    per_channel=cfg.per_channel, reduce_range=cfg.weight_bits == 7,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=method, nodes_to_exclude=list(nodes_to_exclude or []),
                    nodes_to_quantize=list(nodes_to_quantize) if nodes_to_quantize else None,
                    calibration_cache_path=str(cache),
                    extra_options={"ActivationSymmetric": cfg.activation_symmetric})
    return Path(out_path)


def quantize_file(float_path: str | Path, out_path: str | Path, calib_x: np.ndarray, cache: str | Path,
                  cfg: QuantizeConfig, nodes_to_exclude: list[str] | None = None,
                  nodes_to_quantize: list[str] | None = None) -> Path:
    """One quantization by `cfg.quantizer`: ONNX Runtime's QDQ (`quantize_static_qdq`, ranges cached in
    `cache`) or NNCF's for OpenVINO (`shared.models.openvino_int8.quantize_nncf`)."""
    if cfg.quantizer == "nncf":
        return quantize_nncf(float_path, out_path, calib_x, list(nodes_to_exclude or []),
                             [n for n, _ in quantizable_nodes(float_path)], nodes_to_quantize)
    return quantize_static_qdq(float_path, out_path, calib_x, cache, cfg, nodes_to_exclude, nodes_to_quantize)


def preprocess(float_path: str | Path, out_path: str | Path) -> Path:
    """onnxruntime's quantization pre-processing (graph optimisation, ONNX shape inference).
    Symbolic shape inference is skipped: it cannot follow the exported Reshape of the heads."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(float_path), str(out_path), skip_symbolic_shape=True)
    return Path(out_path)


def fixed_float_nodes(layers: list[tuple[str, str]], cfg: QuantizeConfig) -> list[str]:
    """The layers the recipe always keeps in float: the heads (cfg.float_heads: the Gemm nodes, i.e.
    BlazeHand's five heads or a classifier's last layer; a transformer's in-block linears export as
    MatMul and are quantized) and the nodes of cfg.float_modules (BlazeHand's; others have none)."""
    fixed = [n for n, op in layers if op == "Gemm"] if cfg.float_heads else []
    return fixed + module_nodes(layers, cfg.float_modules)


def quantize_default(float_path: str | Path, out_path: str | Path, calib_x: np.ndarray,
                     cfg: QuantizeConfig | None = None) -> Path:
    """The recipe's int8 file with no sweep and no checks (benchmarks/models.py times it; the
    export, `quantize_blazehand`, is what verifies one before anyone uses it)."""
    cfg = cfg or QuantizeConfig()
    with tempfile.TemporaryDirectory(prefix="handops-int8-") as tmp:
        pre = preprocess(float_path, Path(tmp) / "pre.onnx")
        return quantize_file(pre, out_path, calib_x, Path(tmp) / "ranges.json", cfg,
                             fixed_float_nodes(quantizable_nodes(pre), cfg))


def split_by_photo(crops: RealCrops, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (calibration, validation) with every photo's crops on one side."""
    photos = sorted(set(crops.sources))
    rng = np.random.default_rng(seed)
    val_photos = set(rng.permutation(photos)[: int(round(len(photos) * val_fraction))].tolist())
    val = np.array([s in val_photos for s in crops.sources])
    if val_fraction > 0 and (val.all() or not val.any()):
        raise UserError(f"{len(photos)} calibration photo(s) cannot be split into calibration and validation "
                        "crops; give more photos of hands")
    return np.flatnonzero(~val), np.flatnonzero(val)


def fewest_within(ok: Callable[[int], bool], most: int) -> int:
    """The fewest float layers k in 1..`most` for which `ok(k)` (the mix is within tolerance), by
    bisection (the error falls about monotonically in k); `most` when even `ok(most)` fails."""
    lo, hi = 1, most
    if ok(hi):
        while lo < hi:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid + 1
    return hi


def quantize_blazehand(float_path: str | Path, out_path: str | Path, calibration: RealCrops,
                       tests: dict[str, RealCrops], cfg: QuantizeConfig | None = None,
                       log=print, gestures: GestureReader | None = None,
                       reference_path: str | Path | None = None,
                       gesture_agreement: bool = True) -> QuantizeReport:
    """Quantize a BlazeHand ONNX file to `out_path` with the least float layers that keep the
    validation error within tolerance, then verify on the held-out `tests` (see the module doc);
    `gestures` (landmarks -> gesture ids) adds the gesture agreement to the checks. Every check is
    against `reference_path` (default: `float_path`; the original model when `float_path` was
    fine-tuned for quantization, `shared.models.qat`). `gesture_agreement=False`: the crops' gesture
    agreement is reported, not held to tolerance (the caller measures the gesture accuracy on labelled
    photos instead, `quantize_stage`). `out_path` is written either way; check `report.passed` before
    using it."""
    cfg = cfg or QuantizeConfig()
    start = time.perf_counter()
    float_path, out_path = Path(float_path), Path(out_path)
    reference_path = Path(reference_path) if reference_path else float_path
    names = [o.name for o in session(float_path).get_outputs()]
    if "landmarks" not in names:
        raise UserError(f"{float_path}: INT8 export is implemented for BlazeHand (outputs landmarks, presence, ...); "
                        f"this model outputs {names}")
    cal_idx, val_idx = split_by_photo(calibration, cfg.val_fraction)
    cal_x = calibration.x[cal_idx]
    val_x = calibration.x[val_idx] if len(val_idx) else calibration.x
    with tempfile.TemporaryDirectory(prefix="handops-int8-") as tmp:
        tmp = Path(tmp)
        pre = preprocess(float_path, tmp / "pre.onnx")
        cache = tmp / "ranges.json"
        ref_val = run_model(reference_path, val_x, cfg.threads, runtime=cfg.runtime)
        # Always float: the heads (cfg.float_heads) and cfg.float_modules; the sweep may add more.
        layers = quantizable_nodes(pre)
        fixed_float = fixed_float_nodes(layers, cfg)

        # A layer's sensitivity is the error it alone brings to the file being quantized: measured against
        # that file (a fine-tuned one differs from the reference by its tuning already); every tolerance
        # is held against the reference.
        ref_own = (ref_val if float_path == reference_path
                   else run_model(float_path, val_x, cfg.threads, runtime=cfg.runtime))

        def trial(path: Path, exclude: list[str] | None = None, only: list[str] | None = None,
                  against: dict[str, np.ndarray] | None = None) -> dict[str, float]:
            quantize_file(pre, path, cal_x, cache, cfg, fixed_float + list(exclude or []), only)
            got = run_model(path, val_x, cfg.threads, runtime=cfg.runtime)
            return compare_blazehand(got, ref_val if against is None else against, gestures)

        best = tmp / "best.onnx"
        all_int8 = trial(best)
        log(f"int8 (fixed float layers only): validation mean {all_int8['mean_px']:.2f} px, "
            f"p99 {all_int8['p99_px']:.2f} px ({len(val_x)} crops)")
        report = QuantizeReport(int8_path=str(out_path), float_path=str(reference_path), calibration_crops=len(cal_x),
                                validation_crops=len(val_x), config=asdict(cfg), all_int8=all_int8,
                                chosen=all_int8)
        if missed_tolerance(all_int8, cfg.tol_mean_px, cfg.tol_p99_px, gesture_agreement) and cfg.max_float_layers > 0:
            nodes = [(n, op) for n, op in layers if n not in fixed_float]
            log(f"sensitivity: {len(nodes)} layers, each quantized alone ...")
            candidate = tmp / "trial.onnx"
            for node, op in nodes:
                m = trial(candidate, only=[node], against=ref_own)
                report.sensitivity.append({"node": node, "op_type": op, "mean_px": m["mean_px"],
                                           "p99_px": m["p99_px"]})
            ranked = sorted(report.sensitivity, key=lambda s: (-s["mean_px"], -s["p99_px"]))
            # Fewest float layers within tolerance: bisection over k (the error falls ~monotonically in k).
            results: dict[int, dict[str, float]] = {0: all_int8}

            def ok(k: int) -> bool:
                results[k] = m = trial(candidate, exclude=[s["node"] for s in ranked[:k]])
                log(f"  {k} most sensitive layer(s) in float: validation mean {m['mean_px']:.2f} px, "
                    f"p99 {m['p99_px']:.2f} px")
                return not missed_tolerance(m, cfg.tol_mean_px, cfg.tol_p99_px, gesture_agreement)

            k = fewest_within(ok, min(cfg.max_float_layers, len(ranked)))
            float_nodes = [s["node"] for s in ranked[:k]]
            report.chosen = results[k]
            quantize_file(pre, best, cal_x, cache, cfg, fixed_float + float_nodes)
            report.float_layers = [LayerCost(s["node"], s["op_type"], s["mean_px"], s["p99_px"]) for s in ranked[:k]]
        out_path.parent.mkdir(parents=True, exist_ok=True)
        best.replace(out_path)
    return verify_held_out(report, out_path, reference_path, tests, lambda a, b: compare_blazehand(a, b, gestures),
                           lambda m: missed_tolerance(m, cfg.tol_mean_px, cfg.tol_p99_px, gesture_agreement),
                           cfg.threads, calibration.x, start, cfg.runtime)


def verify_held_out(report: QuantizeReport, out_path: Path, reference_path: Path, tests: dict[str, RealCrops],
                    compare: Callable[[dict, dict], dict[str, float]], missed: Callable[[dict[str, float]], str],
                    threads: int, fallback_x: np.ndarray, start: float, runtime: str = "onnxruntime") -> QuantizeReport:
    """The held-out checks: `compare(int8 outputs, float outputs)` per test set, the first
    `missed(metrics)` into `report.failed`; then the batch-1 speed of both files."""
    for name, crops in tests.items():
        metrics = compare(run_model(out_path, crops.x, threads, runtime=runtime),
                          run_model(reference_path, crops.x, threads, runtime=runtime))
        report.tests[name] = metrics
        failed = missed(metrics)
        if failed and not report.failed:
            report.failed = f"{name}: {failed}"
    probe = next(iter(tests.values())).x if tests else fallback_x
    report.speed_ms = {"fp32": time_model(reference_path, probe, threads, runtime=runtime),
                       "int8": time_model(out_path, probe, threads, runtime=runtime)}
    report.seconds = round(time.perf_counter() - start, 1)
    return report


def compare_classifier(out: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict[str, float]:
    """int8 (`out`) vs float (`ref`) classifier probabilities on the same crops: top-1 agreement and
    the probability differences."""
    a, b = out["gesture_probs"], ref["gesture_probs"]
    diff = np.abs(a - b)
    return {"crops": float(len(a)), "top1_agreement": float((a.argmax(1) == b.argmax(1)).mean()),
            "prob_mean_diff": float(diff.mean()), "prob_max_diff": float(diff.max())}


def quantize_classifier(float_path: str | Path, out_path: str | Path, calibration: RealCrops,
                        tests: dict[str, RealCrops], cfg: QuantizeConfig | None = None) -> QuantizeReport:
    """A timm or G-MAE hand-crop classifier (output `gesture_probs`): every convolution and matrix
    product int8, the head in float (cfg.float_heads), ranges from the calibration crops, then verified against the
    float model on the held-out `tests`: top-1 agreement >= 1 - TOL_GESTURE on every set.
    `out_path` is written either way; check `report.passed` before using it."""
    cfg = cfg or recipe("classifier")
    start = time.perf_counter()
    float_path, out_path = Path(float_path), Path(out_path)
    names = [o.name for o in session(float_path).get_outputs()]
    if "gesture_probs" not in names:
        raise UserError(f"{float_path}: int8 classifier export expects a gesture_probs output; this model outputs "
                        f"{names}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    quantize_default(float_path, out_path, calibration.x, cfg)
    report = QuantizeReport(int8_path=str(out_path), float_path=str(float_path), calibration_crops=len(calibration),
                            validation_crops=0, config=asdict(cfg), all_int8={}, kind="classifier")

    def missed(m: dict[str, float]) -> str:
        agree = m["top1_agreement"]
        return f"top-1 agreement {agree:.3f} < {1 - TOL_GESTURE:.2f}" if agree < 1.0 - TOL_GESTURE else ""

    return verify_held_out(report, out_path, float_path, tests, compare_classifier, missed, cfg.threads,
                           calibration.x, start, cfg.runtime)


def describe_speed(report: QuantizeReport) -> list[str]:
    if not report.speed_ms:
        return []
    fp32, int8 = report.speed_ms["fp32"], report.speed_ms["int8"]
    return [f"speed, batch 1, {report.config['threads']} thread(s): fp32 {fp32:.2f} ms, int8 {int8:.2f} ms "
            f"({fp32 / max(int8, 1e-9):.2f}x)"]


def describe(report: QuantizeReport) -> list[str]:
    """The verification table and the float layers, as printed by components.export."""
    if report.kind == "classifier":
        lines = [f"int8: calibrated on {report.calibration_crops} real crops; every convolution and matrix product int8"
                 f"{', the head in float' if report.config['float_heads'] else ''}",
                 "held-out crops, int8 vs fp32:",
                 "| set | crops | top-1 agree | mean abs prob diff | max abs prob diff |", "|---|---|---|---|---|"]
        for name, m in report.tests.items():
            lines.append(f"| {name} | {int(m['crops'])} | {m['top1_agreement']:.3f} | {m['prob_mean_diff']:.4f} | "
                         f"{m['prob_max_diff']:.3f} |")
        return lines + describe_speed(report)
    lines = [f"int8: calibrated on {report.calibration_crops} real crops, float layers chosen on "
             f"{report.validation_crops} validation crops ({report.config['calibrate_method']}"
             f"{', symmetric activations' if report.config['activation_symmetric'] else ''})"]
    a = report.all_int8
    lines.append(f"int8, fixed float layers only (validation): mean {a['mean_px']:.2f} px, p99 {a['p99_px']:.2f} px, "
                 f"max {a['max_px']:.2f} px")
    if report.float_layers:
        c = report.chosen
        lines.append(f"{len(report.float_layers)} layer(s) kept in float (validation mean {c['mean_px']:.2f} px, "
                     f"p99 {c['p99_px']:.2f} px); each one's error when quantized alone:")
        for f in report.float_layers:
            lines.append(f"  {f.node} ({f.op_type}): mean {f.alone_mean_px:.3f} px, p99 {f.alone_p99_px:.2f} px")
    lines.append("held-out crops, int8 vs fp32 (px at the input size):")
    lines.append("| set | crops | hands | mean px | p99 px | max px | hands found agree | gesture agree |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for name, m in report.tests.items():
        gesture = f"{m['gesture_agreement']:.3f}" if "gesture_agreement" in m else "-"
        lines.append(f"| {name} | {int(m['crops'])} | {int(m['present'])} | {m['mean_px']:.2f} | {m['p99_px']:.2f} | "
                     f"{m['max_px']:.2f} | {m['presence_agreement']:.3f} | {gesture} |")
    if report.end_to_end:
        lines.append("the whole pipeline (static, shipped gesture model) on the labelled photos, fp32 vs int8:")
        lines.append("| set | photos | labelled hands | gesture accuracy fp32 | int8 | hands found fp32 | int8 | "
                     "photos differing |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, e in report.end_to_end.items():
            lines.append(f"| {name} | {e['photos']} | {e['targets']} | {e['fp32_accuracy']:.3f} | "
                         f"{e['int8_accuracy']:.3f} | {e['hands_fp32']} | {e['hands_int8']} | "
                         f"{e['photos_hands_differ']} |")
    return lines + describe_speed(report)


def write_report(report: QuantizeReport, path: str | Path) -> Path:
    path = Path(path)
    data = asdict(report)
    data["passed"] = report.passed
    path.write_text(json.dumps(data, indent=2))
    return path


def subset(crops: RealCrops, idx: np.ndarray) -> RealCrops:
    return RealCrops(x=crops.x[idx], keypoints=crops.keypoints[idx], sources=[crops.sources[i] for i in idx],
                     images_read=crops.images_read, unreadable=crops.unreadable, how=crops.how)


# (calibration crops [N, 3, S, S], validation crops) -> a float ONNX file fine-tuned for int8
# (`shared.models.qat` on the caller's torch model); None = plain post-training quantization.
Tuner = Callable[[np.ndarray, np.ndarray], Path]


def read_sets(cfg, reader: CropReader, size: int, log=print, what: str = "real hand crops"
              ) -> tuple[RealCrops, dict[str, RealCrops]]:
    """The calibration set from `cfg.calibration_dir` (at most `cfg.calibration_limit`) and the held-out
    sets: one per `cfg.test_dir` (at most `cfg.test_limit` each), or else a quarter of the calibration
    photos, held out. `reader(folder, size=, limit=)`: `real_crops` or `real_frames`."""
    calibration = reader(cfg.calibration_dir, size=size, limit=cfg.calibration_limit)
    log(f"calibration: {len(calibration)} {what} from {calibration.images_read} photo(s) ({calibration.how})")
    for bad in calibration.unreadable:
        log(f"skipped {bad}: not a readable image")
    if cfg.test_dir:
        return calibration, {Path(d).name: reader(d, size=size, limit=cfg.test_limit) for d in cfg.test_dir}
    cal_idx, test_idx = split_by_photo(calibration, 0.25, seed=1)
    return subset(calibration, cal_idx), {"held-out calibration photos": subset(calibration, test_idx)}


def quantize_stage(cfg, float_path: Path, out_path: Path, real_crops: CropReader,
                   gestures: GestureReader | None = None, log=print, tune: Tuner | None = None,
                   end_to_end: EndToEnd | None = None, kind: str = "blazehand", size: int = 224) -> dict:
    """`components.export onnx --precision int8`: real crops from `cfg.calibration_dir` (a quarter
    of its photos held out for the verification unless `cfg.test_dir` names other people),
    `tune` (quantization-aware fine-tuning on the calibration crops, checked against the original
    float model), `quantize_blazehand`, then `end_to_end` (the whole pipeline on the labelled
    test photos with each crop model: gesture accuracy within TOL_GESTURE, the same number of
    hands on every photo; when it is None or no test set is labelled, the crops' gesture
    agreement is held to tolerance instead), the table printed. `real_crops(folder, size=, limit=)` reads the crops
    (`shared.inference.real_crops.real_crops`, passed in by the caller). Returns the report as a
    dict; when a tolerance is missed its int8 file is renamed `<stem>_int8_rejected.onnx` and
    `out_path` is not written. `kind="classifier"`: a timm / G-MAE classifier on `size` crops,
    `quantize_classifier` (no fine-tuning, no gesture or pipeline checks: its own top-1 is the gesture)."""
    calibration, tests = read_sets(cfg, real_crops, size, log)
    qcfg = recipe(kind, max_float_layers=cfg.max_float_layers, tol_mean_px=cfg.tol_mean_px,
                  tol_p99_px=cfg.tol_p99_px, weight_bits=cfg.weight_bits, runtime=cfg.runtime,
                  quantizer=cfg.quantizer, float_modules=list(cfg.float_modules))
    if kind == "classifier":
        report = quantize_classifier(float_path, out_path, calibration, tests, qcfg)
        return finish(report, out_path, log)
    tuned = tune(calibration.x, next(iter(tests.values())).x) if tune is not None else float_path
    reference = end_to_end(float_path) if end_to_end is not None else {}
    report = quantize_blazehand(tuned, out_path, calibration, tests, qcfg, log=log, gestures=gestures,
                                reference_path=float_path, gesture_agreement=not reference)
    if reference:
        report.end_to_end, failed = compare_end_to_end(reference, end_to_end(out_path))
        report.failed = report.failed or failed
    return finish(report, out_path, log)


def finish(report: QuantizeReport, out_path: Path, log, lines: Callable[[QuantizeReport], list[str]] | None = None
           ) -> dict:
    """Print the report (`lines`, default `describe`); a model that missed a tolerance is renamed
    `<stem>_int8_rejected`."""
    for line in (lines or describe)(report):
        log(line)
    if report.failed:
        rejected = out_path.with_name(f"{out_path.stem}_int8_rejected{out_path.suffix}")
        Path(out_path).replace(rejected)
        report.int8_path = str(rejected)
    data = asdict(report)
    data["passed"] = report.passed
    return data

