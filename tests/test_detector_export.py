"""The whole-detector export: ONNX Runtime against the eager PyTorch detector, stage by stage.

Two exports, each made once per module (export is the slow part): Mask R-CNN with modulated DCN
on FPN (its graph holds the RPN, the box head and the mask head; RPN-only and Faster R-CNN are
sub-graphs of it) and RetinaNet, both at 128x160 with calibrated random weights and verified at
two input sizes (128x160, and batch 2 at 192x224 with different unpadded sizes) by the export's
own verifier. The fixed-shape graph of every meta-architecture (RPN-only FPN/C4, Faster C4,
Mask C4) is also checked in PyTorch against the eager detector, which needs no export.
Then the file itself (operators, attributes TensorRT depends on, outputs, metadata), `deformrt
predict` on it, and bad input through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from cli_shell import deformrt
from exporter.evaluation.detections import ImageDetections, match_detections, paste_mask
from exporter.evaluation.detector_verify import verify
from exporter.onnx.detector_export import DetectorExportOptions, build_detector_model, export_detector
from exporter.onnx.detector_graph import ExportableDetector, detector_shape
from exporter.onnx.metadata import DetectorMetadata
from models.calibrate import calibration_images
from models.config import get_cfg
from upstream_reference import UPSTREAM_CONFIGS

SMALL = ["MODEL.RPN.PRE_NMS_TOP_N_TEST", "300", "MODEL.RPN.POST_NMS_TOP_N_TEST", "100",
         "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", "100", "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", "20",
         "TEST.DETECTIONS_PER_IMG", "20", "MODEL.RETINANET.PRE_NMS_TOP_N", "200",
         "INPUT.MIN_SIZE_TEST", "160", "INPUT.MAX_SIZE_TEST", "256"]  # predict resizes images to 160 px, not 800
MASK_CONFIG = "dcn/e2e_mask_rcnn_mdconv_R_50_FPN_1x.yaml"
RETINANET_CONFIG = "retinanet/retinanet_R-50-FPN_1x.yaml"
EXPORT_SHAPE = (128, 160)  # verified at 1x3x128x160 and 2x3x192x224 (+64 px, two unpadded sizes)
SHAPES = ((1, 3, 128, 160), (2, 3, 192, 224))


def config_path(name: str) -> str:
    path = UPSTREAM_CONFIGS / name
    if not path.is_file():
        pytest.skip(f"upstream configs not found at {UPSTREAM_CONFIGS}")
    return str(path)


def export(tmp_path_factory, config: str):
    out = tmp_path_factory.mktemp("det") / "det.onnx"
    result = export_detector(config_path(config), str(out), opts=SMALL,
                             options=DetectorExportOptions(input_size=EXPORT_SHAPE), verify=verify)
    return result, out


@pytest.fixture(scope="module")
def mask_export(tmp_path_factory):
    return export(tmp_path_factory, MASK_CONFIG)


@pytest.fixture(scope="module")
def retinanet_export(tmp_path_factory):
    return export(tmp_path_factory, RETINANET_CONFIG)


def _stages(report) -> dict:
    return {(c.stage, c.input_shape): c for c in report.checks}


def test_mask_rcnn_onnx_runtime_matches_pytorch_per_stage(mask_export):
    result, _ = mask_export
    report = result.verification
    assert report.passed, report.table()
    stages = _stages(report)
    for shape in SHAPES:
        pre, proposals, detections = (stages[(s, shape)] for s in ("pre-NMS top-k", "proposals", "detections"))
        assert pre.compared >= shape[0] * 5 * 100 and pre.max_box_err <= 1e-3
        assert proposals.compared >= shape[0] * 50
        assert detections.compared >= shape[0] * 5 and detections.max_mask_err is not None
        assert detections.max_score_err <= 1e-4 and detections.max_mask_err <= 1e-4


def test_retinanet_onnx_runtime_matches_pytorch_per_stage(retinanet_export):
    result, _ = retinanet_export
    assert result.verification.passed, result.verification.table()
    stages = _stages(result.verification)
    assert stages[("detections", SHAPES[1])].compared >= 20
    assert stages[("pre-NMS top-k", SHAPES[1])].compared >= 2 * 5 * 50


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def test_the_file_uses_standard_operators_as_tensorrt_needs_them(mask_export):
    result, path = mask_export
    model = onnx.load(str(path))
    opset = {o.domain: o.version for o in model.opset_import}
    assert opset[""] >= 17
    assert {n.domain for n in model.graph.node} <= {"", "deformrt"}
    assert result.op_types["deformrt.DeformConv2d"] == 13 and result.op_types["NonMaxSuppression"] == 2
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "RoiAlign":
            attrs = _attrs(node)
            assert attrs["coordinate_transformation_mode"] == b"output_half_pixel"
            assert attrs["sampling_ratio"] == 2 and attrs["mode"] == b"avg"
        if node.op_type == "TopK" and node.input[1] in constants:
            assert int(constants[node.input[1]].reshape(-1)[0]) < 3840
    outputs = {o.name: o.type.tensor_type for o in model.graph.output}
    assert list(outputs) == ["num_detections", "detection_boxes", "detection_scores", "detection_classes",
                             "detection_masks"]
    assert outputs["num_detections"].elem_type == onnx.TensorProto.INT32
    assert outputs["detection_classes"].elem_type == onnx.TensorProto.INT32
    assert [d.dim_value for d in outputs["detection_masks"].shape.dim[1:]] == [20, 28, 28]
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert inputs["image_sizes"].elem_type == onnx.TensorProto.INT32
    meta = DetectorMetadata.from_model(model)
    assert (meta.kind, meta.num_classes, meta.detections, meta.mask_size) == ("mask_rcnn", 81, 20, 28)
    assert meta.calibrated and not meta.debug_outputs


C4_SMALL = ["MODEL.RPN.PRE_NMS_TOP_N_TEST", "300", "MODEL.RPN.POST_NMS_TOP_N_TEST", "12",
            "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", "10"]


# Mask C4 (the shared res5 extractor feeding the mask predictor) shares every step with these two.
@pytest.mark.parametrize("config, opts", [
    ("rpn_R_50_FPN_1x.yaml", SMALL),
    ("rpn_R_50_C4_1x.yaml", ["MODEL.RPN.PRE_NMS_TOP_N_TEST", "600", "MODEL.RPN.POST_NMS_TOP_N_TEST", "100"]),
    ("e2e_mask_rcnn_R_50_C4_1x.yaml", C4_SMALL),
])
def test_fixed_shape_graph_of_every_meta_architecture_matches_eager(config, opts):
    """What the export traces (ExportableDetector, run eagerly) against the eager detector."""
    cfg = get_cfg(config_file=config_path(config), opts=opts, detector=True)
    model = build_detector_model(cfg).model
    images, sizes = calibration_images()
    images = images + torch.randn(images.shape, generator=torch.Generator().manual_seed(5))
    fixed = ExportableDetector(model, detector_shape(cfg)).eval()
    with torch.no_grad():
        expected = model(images, sizes)
        got = fixed(images, sizes.int())
    names = ["num_detections", "detection_boxes", "detection_scores", "detection_classes", "detection_masks"]
    outputs = {n: t.numpy() for n, t in zip(names, got)}
    for i, e in enumerate(expected):
        want = ImageDetections(e.boxes.numpy(), e.scores.numpy(), e.labels.numpy(),
                               None if e.masks is None else e.masks.numpy())
        have = ImageDetections.from_outputs(outputs, i)
        match = match_detections(want, have, iou_threshold=0.9999)
        assert len(want) > 0 and match.complete, (config, i, len(want), len(have))
        a, b = np.array(match.pairs).T
        np.testing.assert_allclose(have.scores[b], want.scores[a], atol=1e-6)
        if want.masks is not None:
            np.testing.assert_allclose(have.masks[b], want.masks[a], atol=1e-6)
        assert not outputs["detection_scores"][i][len(have):].any()  # rows past num_detections are zero


# ----------------------------------------------------------------------------------------------
# predict


def _png(path: Path, seed: int, size=(240, 330)):
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_predict_writes_pngs_and_coco_json(mask_export, tmp_path):
    """The README's command: pictures in the folder, a line per image on stdout, the COCO-style
    results in --json-file."""
    _, model = mask_export
    image = _png(tmp_path / "street.png", 0)
    done = deformrt("predict", model, image, "-o", "out", "--json-file", "results.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records = json.loads((tmp_path / "results.json").read_text())
    assert done.stdout.startswith(f"street.png: {len(records)} detections: ") and "-> out/street.png" in done.stdout
    assert records and {"image_id", "category_id", "bbox", "score", "segmentation", "file_name"} <= set(records[0])
    from PIL import Image
    from pycocotools import mask as mask_util

    with Image.open(tmp_path / "out" / "street.png") as drawn:
        assert drawn.size == (330, 240)
    # The RLE is the pasted mask at the original resolution: decode and compare with paste_mask.
    first = records[0]
    decoded = mask_util.decode({"size": first["segmentation"]["size"],
                                "counts": first["segmentation"]["counts"].encode()})
    assert decoded.shape == (240, 330)
    x, y, w, h = first["bbox"]
    assert 0 <= x and x + w - 1 <= 329.001 and 0 <= y and y + h - 1 <= 239.001


def test_paste_mask_matches_upstream():
    from upstream_reference import require_upstream

    require_upstream()
    from maskrcnn_benchmark.modeling.roi_heads.mask_head.inference import paste_mask_in_image

    rng = np.random.default_rng(4)
    for _ in range(30):
        mask = rng.random((28, 28)).astype(np.float32)
        x1, y1 = rng.uniform(0, 170, 2)  # detections are clipped to the image, as upstream's always are
        box = np.array([x1, y1, min(x1 + rng.uniform(0, 150), 239), min(y1 + rng.uniform(0, 120), 179)], np.float32)
        want = paste_mask_in_image(torch.from_numpy(mask), torch.from_numpy(box), 180, 240).numpy()
        np.testing.assert_array_equal(paste_mask(mask, box, 180, 240), want)


# ----------------------------------------------------------------------------------------------
# Bad input through the CLI: one line, exit status 1, no file


@pytest.mark.parametrize("config, extra, message", [
    ("e2e_keypoint_rcnn_R_50_FPN_1x.yaml", [], "keypoint heads are not supported"),
    ("e2e_mask_rcnn_R_50_C4_1x.yaml", [], "MODEL.RPN.PRE_NMS_TOP_N_TEST=6000 exceeds TensorRT's TopK limit of 3840"),
    ("e2e_mask_rcnn_R_50_FPN_1x.yaml", ["MODEL.ROI_MASK_HEAD.PREDICTOR", "MaskRCNNC4Predicter"],
     "unknown MODEL.ROI_MASK_HEAD.PREDICTOR 'MaskRCNNC4Predicter'"),
])
def test_bad_detector_configs_are_one_line_errors(tmp_path, config, extra, message):
    done = deformrt("export", "--config-file", config_path(config), "--detector", "--onnx", "-o", tmp_path / "d.onnx",
                   *extra)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and message in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "d.onnx").exists()


def test_checkpoint_missing_head_weights_is_refused(tmp_path):
    from models.detector import build_detector

    cfg = get_cfg(config_file=config_path("e2e_faster_rcnn_R_50_FPN_1x.yaml"), detector=True)
    state = build_detector(cfg).state_dict()
    torch.save({"model": {k: v for k, v in state.items() if "box.predictor" not in k}}, tmp_path / "ckpt.pth")
    done = deformrt("export", "--config-file", config_path("e2e_faster_rcnn_R_50_FPN_1x.yaml"), "--detector", "--onnx",
                   "--weights", tmp_path / "ckpt.pth", "-o", tmp_path / "d.onnx")
    assert done.returncode == 1 and "roi_heads.box.predictor.cls_score.weight" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "d.onnx").exists()


def test_predict_refuses_an_unreadable_image_before_any_work(mask_export, tmp_path):
    _, model = mask_export
    good = _png(tmp_path / "good.png", 1)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    done = deformrt("predict", model, good, bad, "-o", tmp_path / "out")
    assert done.returncode == 1 and "cannot read image" in done.stderr and "bad.jpg" in done.stderr
    assert not (tmp_path / "out" / "good.png").exists()


def test_fp16_model_keeps_postprocessing_in_fp32(mask_export):
    """convert_detector_to_fp16: convs, DCN and FC layers in fp16; decoding, NMS, ROIAlign, top-k and
    scores in fp32. ONNX Runtime (CPU) runs it, and its detections match the fp32 file's."""
    from exporter.evaluation.ort import ort_session
    from exporter.onnx.detector_export import convert_detector_to_fp16

    _, path = mask_export
    fp32 = onnx.load(str(path))
    converted = convert_detector_to_fp16(fp32)
    model = onnx.shape_inference.infer_shapes(converted.model)
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.input, *g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    half, single = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    seen = set()
    for node in g.node:
        first = types.get(node.input[0]) if node.input else None
        if node.op_type in ("NonMaxSuppression", "RoiAlign", "TopK", "Exp", "Softmax"):  # (Sigmoid: DCN masks too)
            assert first == single and (node.op_type != "RoiAlign" or types.get(node.input[1]) == single), node.name
            seen.add(node.op_type)
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "DeformConv2d"):
            assert first == half, node.name
            seen.add(node.op_type)
    assert {"NonMaxSuppression", "RoiAlign", "TopK", "Conv", "Gemm", "DeformConv2d"} <= seen
    assert all(o.type.tensor_type.elem_type != half for o in g.output)
    rng = np.random.default_rng(3)
    feed = {"images": (rng.uniform(0, 255, (1, 3, 128, 160)) - 115).astype(np.float32),
            "image_sizes": np.array([[120, 160]], np.int32)}
    names = [o.name for o in g.output]
    want = ImageDetections.from_outputs(dict(zip(names, ort_session(fp32).run(None, feed))))
    got = ImageDetections.from_outputs(dict(zip(names, ort_session(converted.model).run(None, feed))))
    match = match_detections(want, got, iou_threshold=0.9)
    assert len(match.pairs) >= 0.8 * len(want) > 0
