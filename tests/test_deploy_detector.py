"""``deformrt deploy`` of a whole-detector file, and what runs on the device without torch, onnx or
onnxruntime: the bundle's references (detections, checked against the eager PyTorch detector as
sets), its deploy.conf and metadata, the device check as sets, and the device ``predict`` (same
PNGs and COCO records as ``deformrt predict``, with numpy's RLE where pycocotools is missing).

One export of the synthetic calibrated Mask R-CNN (modulated DCN, 128x160, small proposal counts and
widths, 20 detections per image) is deployed once for the module. TensorRT itself (build.sh's engine,
deformrt-run on it, the device predict with an engine) runs in scripts/gpu_check.sh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from exporter import cli
from exporter.deploy import layout
from exporter.deploy.check import check_detection_sets, detection_tolerances, read_conf
from exporter.evaluation.detections import ImageDetections

runner = CliRunner()
CONFIG = "e2e_mask_rcnn_mdconv_R_50_FPN_1x.yaml"
SMALL = ["MODEL.RPN.PRE_NMS_TOP_N_TEST", "300", "MODEL.RPN.POST_NMS_TOP_N_TEST", "100",
         "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", "100", "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", "20",
         "TEST.DETECTIONS_PER_IMG", "20", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "160",
         # a quarter of the widths: the same graph, 11 MB instead of 180 (the bundle writes four flavours)
         "MODEL.RESNETS.WIDTH_PER_GROUP", "16", "MODEL.RESNETS.STEM_OUT_CHANNELS", "16",
         "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", "64",
         "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", "128", "MODEL.ROI_MASK_HEAD.CONV_LAYERS", "(64, 64, 64, 64)"]
# What the device lacks (pycocotools too: the device predict then encodes RLE with numpy).
BLOCKED = ("torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "polygraphy", "typer", "yaml", "pycocotools")
_BLOCKER = """
import importlib.abc, sys
class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not on the device)")
        return None
sys.meta_path.insert(0, _Blocker())
"""


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


@pytest.fixture(scope="module")
def detector_file(tmp_path_factory) -> Path:
    """The README's export (its bundled config), synthetic weights and small sizes to keep the CPU time down."""
    out = tmp_path_factory.mktemp("deploy-detector") / "mask-rcnn.onnx"
    result = invoke("export", "--config-file", CONFIG, "--detector", "--onnx", "--shape", "128x160", "--no-verify",
                    "-o", out, *SMALL)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def bundle(detector_file) -> tuple[Path, dict]:
    """The bundle, written by the README's deploy command exactly."""
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (line,) = [x for x in readme.splitlines() if x.startswith("deformrt deploy mask-rcnn.onnx")]
    args = shlex.split(line)
    assert args[:3] == ["deformrt", "deploy", detector_file.name]
    cwd = os.getcwd()
    os.chdir(detector_file.parent)  # the README's relative paths
    try:
        result = invoke(*args[1:])
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    return detector_file.parent / args[args.index("-o") + 1], result.stdout


def test_bundle_is_a_detector_bundle(bundle, detector_file):
    path, summary = bundle
    conf = read_conf(path)
    assert "R-50-FPN mask_rcnn detector, 13 deformable convs" in summary
    assert "detections by ONNX Runtime" in summary and "checked as sets" in summary
    assert (conf["model"], conf["classes"], conf["detections"], conf["mask_size"]) == ("detector", "81", "20", "28")
    # the config's MODEL.ROI_HEADS.SCORE_THRESH and NMS
    assert (float(conf["score_threshold"]), float(conf["nms_threshold"])) == (0.05, 0.5)
    assert conf["inputs"].split() == ["images", "image_sizes"]
    assert conf["outputs"].split() == ["num_detections", "detection_boxes", "detection_scores", "detection_classes",
                                       "detection_masks"]
    assert conf["min_shapes"].split(",")[1] == "image_sizes:1x2" and conf["opt_shapes"].startswith("images:1x3x128x160,")
    for p in layout.PRECISIONS:
        assert {k: float(conf[f"{k}_{p}"]) for k in layout.DETECTION_TOLERANCES[p]} == layout.DETECTION_TOLERANCES[p]
    metadata = json.loads((path / layout.METADATA).read_text())
    assert json.loads(metadata["deformrt.detector"])["num_classes"] == 81
    sizes = np.load(path / layout.REFERENCE_INPUTS / "image_sizes.npy")
    images = np.load(path / layout.REFERENCE_INPUTS / "images.npy")
    assert sizes.dtype == np.int32 and sizes.tolist() == [[125, 153]] and images.shape == (1, 3, 128, 160)
    assert not images[:, :, 125:].any() and not images[:, :, :, 153:].any()  # zero padding past the unpadded size
    out = {n: np.load(path / layout.REFERENCE_OUTPUTS / f"{n}.npy") for n in conf["outputs"].split()}
    assert out["num_detections"].dtype == np.int32 and out["detection_classes"].dtype == np.int32
    assert 5 <= int(out["num_detections"][0, 0]) <= 20  # the calibrated synthetic heads detect


def test_reference_detections_are_the_pytorch_detectors(bundle):
    """The bundle's references (ONNX Runtime) against the eager PyTorch detector rebuilt from the
    metadata, as sets with the export's own tolerances (IoU 0.99, scores and masks within 1e-4)."""
    import torch

    from exporter.onnx.detector_export import rebuild_detector
    from exporter.onnx.metadata import ExportMetadata

    path, _ = bundle
    meta = ExportMetadata.from_props(json.loads((path / layout.METADATA).read_text()))
    model = rebuild_detector(meta).eval()
    images = np.load(path / layout.REFERENCE_INPUTS / "images.npy")
    sizes = np.load(path / layout.REFERENCE_INPUTS / "image_sizes.npy")
    with torch.no_grad():
        (found,) = model(torch.from_numpy(images), torch.from_numpy(sizes.astype(np.int64)))
    want = ImageDetections(found.boxes.numpy(), found.scores.numpy(), found.labels.numpy(), found.masks.numpy())
    outputs = {n: np.load(path / layout.REFERENCE_OUTPUTS / f"{n}.npy") for n in read_conf(path)["outputs"].split()}
    got = ImageDetections.from_outputs(outputs)
    strict = {"match_iou": 0.99, "score_tolerance": 1e-4, "mask_tolerance": 1e-4, "borderline": 1e-4,
              "score_threshold": 0.05}
    check = check_detection_sets(0, want, got, strict, capacity=20)
    assert check.passed and check.matched >= 5, check
    assert check.max_box_err < 1e-2, check


def run_on_device_python(bundle: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter that sees only the bundle's python/ folder, numpy and Pillow, with
    everything in BLOCKED unimportable."""
    import PIL

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(
        [str(bundle / layout.PYTHON_DIR), str(Path(np.__file__).parent.parent), str(Path(PIL.__file__).parent.parent)]))
    script = _BLOCKER.format(blocked=BLOCKED) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-S", "-c", script, *args], cwd=bundle, env=env, capture_output=True,
                          text=True, timeout=120)


def test_device_check_matches_detections_as_sets(bundle, tmp_path):
    """python3 -m exporter.deploy.check on engine-like outputs: the references reordered with fp16-sized
    errors pass; with the best detection gone, it fails and says why."""
    path, _ = bundle
    conf = read_conf(path)
    rng = np.random.default_rng()
    ref = {n: np.load(path / layout.REFERENCE_OUTPUTS / f"{n}.npy") for n in conf["outputs"].split()}
    n = int(ref["num_detections"][0, 0])
    order = np.concatenate([rng.permutation(n), np.arange(n, 20)])
    close = {k: (v[:, order] if v.ndim > 2 or k != "num_detections" else v).copy() for k, v in ref.items()}
    close["detection_boxes"] += rng.uniform(-0.05, 0.05, close["detection_boxes"].shape).astype(np.float32)
    close["detection_scores"] += rng.uniform(-3e-3, 3e-3, close["detection_scores"].shape).astype(np.float32)
    close["detection_masks"] += rng.uniform(-2e-2, 2e-2, close["detection_masks"].shape).astype(np.float32)
    best = int(np.argmax(ref["detection_scores"][0, :n]))
    keep = np.array([i for i in range(20) if i != best] + [best])
    lost = {k: (v[:, keep] if k != "num_detections" else v - 1) for k, v in ref.items()}
    for name, outputs in (("close", close), ("lost", lost)):
        (tmp_path / name).mkdir()
        for key, value in outputs.items():
            np.save(tmp_path / name / f"{key}.npy", value)
    main = "import sys\nfrom exporter.deploy.check import main\nsys.exit(main(sys.argv[1:]))\n"
    passed = run_on_device_python(path, main, str(path), "--outputs", str(tmp_path / "close"))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.splitlines()[-1].startswith("PASS (fp16; detections as sets: same class and IoU >= 0.9")
    strict = run_on_device_python(path, main, str(path), "--outputs", str(tmp_path / "close"), "--precision", "fp32")
    assert strict.returncode == 1 and strict.stdout.splitlines()[-1].startswith("FAIL (fp32; detections as sets: "
                                                                               "same class and IoU >= 0.99")
    failed = run_on_device_python(path, main, str(path), "--outputs", str(tmp_path / "lost"), "--json")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    (image,) = json.loads(failed.stdout)["images"]
    assert (image["matched"], image["unmatched"], image["verdict"]) == (n - 1, 1, "FAIL (unmatched detections)")


def test_device_predict_writes_what_deformrt_predict_writes(bundle, detector_file, tmp_path):
    """The device predict on a folder of images, torch/onnx/onnxruntime/pycocotools blocked: the
    inputs it feeds are deformrt predict's (so preprocessing is shared), and with the same outputs
    (recorded from ONNX Runtime, standing in for the engine) its PNGs are byte-identical and its COCO
    records, RLE masks included, equal those of `deformrt predict --json`."""
    from PIL import Image

    from exporter.evaluation import predict as host_predict

    path, _ = bundle
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng()
    for name, (h, w) in (("a", (150, 200)), ("b", (97, 131))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"{name}.png")
    host = tmp_path / "host"
    result = invoke("predict", detector_file, images / "a.png", images / "b.png", "-o", host, "--json")
    assert result.exit_code == 0, result.output
    host_records = json.loads(result.stdout)
    assert any("segmentation" in r for r in host_records)

    recorded = []
    run = host_predict.ort_runner(detector_file)
    record = lambda feed: recorded.append((feed, run(feed))) or recorded[-1][1]  # noqa: E731
    meta, detector = host_predict.load_detector_metadata(detector_file)
    for name in ("a", "b"):
        host_predict.predict_image(images / f"{name}.png", record, meta, detector)
    replay = tmp_path / "replay.npz"
    np.savez(replay, **{f"{i}_{kind}_{k}": v for i, (feed, out) in enumerate(recorded)
                        for kind, d in (("in", feed), ("out", out)) for k, v in d.items()})
    device_out = tmp_path / "device"
    # The engine's stand-in (trt_runner's contract: input arrays by name -> output arrays by name) returns
    # the recorded outputs for exactly the recorded inputs.
    code = f"""
        import sys, numpy as np
        from exporter.deploy.predict import predict_folder
        data = np.load({str(replay)!r})
        pairs = []
        for i in range({len(recorded)}):
            pick = lambda kind: {{k.split("_", 2)[2]: data[k] for k in data.files if k.startswith(f"{{i}}_{{kind}}_")}}
            pairs.append((pick("in"), pick("out")))
        def replay(feed):
            for inputs, outputs in pairs:
                if all(np.array_equal(feed[k], v) for k, v in inputs.items()):
                    return outputs
            raise SystemExit("the device predict fed inputs deformrt predict did not")
        predict_folder(sys.argv[1], [sys.argv[2]], sys.argv[3], replay)
        blocked = sorted(m for m in {BLOCKED!r} if m in sys.modules)
        print("imported:", blocked)
    """
    proc = run_on_device_python(path, code, str(path), str(images), str(device_out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "imported: []"
    for name in ("a", "b"):
        assert (device_out / f"{name}.png").read_bytes() == (host / f"{name}.png").read_bytes(), name
    device_records = json.loads((device_out / "coco_results.json").read_text())
    assert device_records == host_records


def test_device_predict_errors_are_one_line(bundle, tmp_path):
    path, _ = bundle
    main = "import sys\nfrom exporter.deploy.predict import main\nsys.exit(main(sys.argv[1:]))\n"
    (tmp_path / "empty").mkdir()
    proc = run_on_device_python(path, main, str(path), str(tmp_path / "empty"), "-o", str(tmp_path / "o"),
                                "--engine", str(tmp_path / "x.plan"))
    assert proc.returncode == 1 and proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr == f"error: {tmp_path / 'empty'} holds no .jpg, .jpeg or .png images\n"
    backbone = tmp_path / "backbone"
    backbone.mkdir()
    props = json.loads((path / layout.METADATA).read_text())
    del props["deformrt.detector"]
    (backbone / layout.METADATA).write_text(json.dumps(props))
    proc = run_on_device_python(path, main, str(backbone), str(tmp_path / "empty"), "-o", str(tmp_path / "o"),
                                "--engine", str(tmp_path / "x.plan"))
    assert proc.returncode == 1 and proc.stderr.startswith(f"error: {backbone} holds a backbone (R-50-FPN), not a "
                                                           "detector"), proc.stderr


def test_images_become_references_as_predict_preprocesses_them(detector_file, tmp_path):
    """deploy --images: each image resized and preprocessed exactly as `deformrt predict` feeds it, the
    unpadded sizes in image_sizes, and ONNX Runtime's detections for the batch of two."""
    from PIL import Image

    from exporter.evaluation import predict as host_predict

    rng = np.random.default_rng()
    paths = []
    for name, (h, w) in (("wide", (90, 140)), ("tall", (150, 100))):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    out = tmp_path / "bundle"
    result = invoke("deploy", detector_file, "-o", out, "--images", ",".join(map(str, paths)))
    assert result.exit_code == 0, result.output
    conf = read_conf(out)
    assert conf["reference_source"] == "images" and conf["reference_images"] == "wide.png tall.png"
    images = np.load(out / layout.REFERENCE_INPUTS / "images.npy")
    sizes = np.load(out / layout.REFERENCE_INPUTS / "image_sizes.npy")
    meta, detector = host_predict.load_detector_metadata(detector_file)
    for i, path in enumerate(paths):
        fed = []
        host_predict.predict_image(path, lambda feed: fed.append(feed) or _no_detections(feed), meta, detector)
        (feed,) = fed
        h, w = feed["image_sizes"][0]
        assert sizes[i].tolist() == [h, w]
        assert np.array_equal(images[i, :, :h, :w], feed["images"][0, :, :h, :w])
        assert not images[i, :, h:].any() and not images[i, :, :, w:].any()
    detections = np.load(out / layout.REFERENCE_OUTPUTS / "num_detections.npy")
    assert detections.shape == (2, 1) and (detections > 0).all()


def _no_detections(feed) -> dict:
    n = len(feed["images"])
    return {"num_detections": np.zeros((n, 1), np.int32), "detection_boxes": np.zeros((n, 1, 4), np.float32),
            "detection_scores": np.zeros((n, 1), np.float32), "detection_classes": np.zeros((n, 1), np.int32)}


def test_fp16_flavour_in_onnx_runtime_passes_the_fp16_set_check(bundle):
    """The bundle's mixed-fp16 flavour (postprocessing kept in fp32) run by ONNX Runtime on the CPU, as a
    stand-in for an fp16 engine, against the fp32 references with the fp16 tolerances of deploy.conf."""
    import onnx

    from exporter.deploy.bundle import ort_references
    from exporter.deploy.check import reference_inputs, reference_outputs

    path, _ = bundle
    conf = read_conf(path)
    outputs = ort_references(onnx.load(str(path / layout.onnx_model("onnx", "fp16"))), reference_inputs(path, conf))
    check = check_detection_sets(0, ImageDetections.from_outputs(reference_outputs(path, conf)),
                                 ImageDetections.from_outputs(outputs), detection_tolerances(conf, "fp16"), 20)
    assert check.passed and check.matched >= 5 and check.unmatched == 0, check


def test_numpy_rle_equals_pycocotools():
    """detections.encode_rle (the device's fallback) against pycocotools' mask.encode: random masks of
    random density and size, empty and full ones, single rows and columns."""
    from pycocotools import mask as mask_util

    from exporter.evaluation.detections import encode_rle

    rng = np.random.default_rng()
    for trial in range(300):
        h, w = rng.integers(1, 60, 2)
        mask = rng.uniform(0, 1, (h, w)) < rng.uniform(0, 1)
        if trial % 10 == 0:
            mask[:] = trial % 20 == 0  # full, then empty
        want = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert encode_rle(mask) == {"size": [int(h), int(w)], "counts": want["counts"].decode("ascii")}, trial
