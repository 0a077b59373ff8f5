"""deformrt's PyTorch detector against upstream maskrcnn-benchmark's own modules on the same weights.

Upstream runs with the shims of tests/upstream_reference.py (its compiled NMS and ROIAlign replaced
by float64 stand-ins written from their documented semantics). Both sides get one random
detector, calibrated (models.calibrate.calibrate_detector) so that proposals, detections and masks
exist, and the same padded batch of two images of different unpadded sizes (256x320 padded).
Detections are compared as sets (upstream returns them class by class): same count, each matched
by label and IoU >= 0.999, scores within 1e-5, mask probabilities within 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exporter.evaluation.detections import ImageDetections, match_detections
from models import DeformRTError
from models.calibrate import calibrate_detector
from models.checkpoint import load_checkpoint
from models.config import get_cfg
from models.detector import build_detector
from upstream_reference import UPSTREAM_CONFIGS, require_upstream, run_upstream, upstream_cfg, upstream_detector

# Fewer proposals and detections than the configs' defaults keep upstream's per-box stand-ins quick.
SMALL = ("MODEL.RPN.PRE_NMS_TOP_N_TEST", "200", "MODEL.RPN.POST_NMS_TOP_N_TEST", "60",
         "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", "60", "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", "15",
         "TEST.DETECTIONS_PER_IMG", "15", "MODEL.RETINANET.PRE_NMS_TOP_N", "150")
SIZES = torch.tensor([[250, 300], [256, 288]])

CONFIGS = {
    "mask-dcn-fpn": "dcn/e2e_mask_rcnn_mdconv_R_50_FPN_1x.yaml",
    "mask-c4": "e2e_mask_rcnn_R_50_C4_1x.yaml",
    "faster-gn-xconv": "gn_baselines/e2e_faster_rcnn_R_50_FPN_Xconv1fc_1x_gn.yaml",
    "retinanet": "retinanet/retinanet_R-50-FPN_1x.yaml",
    "rpn-fpn": "rpn_R_50_FPN_1x.yaml",
    "rpn-c4": "rpn_R_50_C4_1x.yaml",
}


def images(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 256, 320, generator=g) * 255 - 115
    x[0, :, 250:, :] = 0
    x[0, :, :, 300:] = 0
    x[1, :, :, 288:] = 0
    return x


def build_pair(name: str, opts=SMALL):
    """(our calibrated detector, upstream's detector with its weights)."""
    require_upstream()
    cfg = get_cfg(config_file=str(UPSTREAM_CONFIGS / CONFIGS[name]), opts=list(opts), detector=True)
    torch.manual_seed(0)
    ours = build_detector(cfg).eval()
    calibrate_detector(ours, images(1), SIZES, torch.Generator().manual_seed(0))
    return ours, upstream_detector(CONFIGS[name], ours.state_dict(), opts)


def as_numpy(upstream_boxlist) -> ImageDetections:
    f = upstream_boxlist
    scores = f.get_field("scores") if f.has_field("scores") else f.get_field("objectness")
    labels = f.get_field("labels") if f.has_field("labels") else torch.ones(len(f), dtype=torch.int64)
    masks = f.get_field("mask")[:, 0].numpy() if f.has_field("mask") else None
    return ImageDetections(f.bbox.numpy(), scores.numpy(), labels.numpy(), masks)


def ours_numpy(d) -> ImageDetections:
    return ImageDetections(d.boxes.numpy(), d.scores.numpy(), d.labels.numpy(),
                           None if d.masks is None else d.masks.numpy())


def assert_same_detections(ours: ImageDetections, theirs: ImageDetections, what: str) -> None:
    assert len(theirs) > 0, f"{what}: upstream found nothing; the test would prove nothing"
    match = match_detections(theirs, ours, iou_threshold=0.999)
    assert match.complete and len(ours) == len(theirs), (what, len(ours), len(theirs), match)
    i, j = np.array(match.pairs).T
    np.testing.assert_allclose(ours.boxes[j], theirs.boxes[i], atol=2e-3, err_msg=what)
    np.testing.assert_allclose(ours.scores[j], theirs.scores[i], atol=1e-5, err_msg=what)
    if theirs.masks is not None:
        np.testing.assert_allclose(ours.masks[j], theirs.masks[i], atol=1e-5, err_msg=what)


# mask-dcn-fpn: the stage test; rpn-c4: its single-level RPN feeds mask-c4's box head.
@pytest.mark.parametrize("name", [n for n in CONFIGS if n not in ("mask-dcn-fpn", "rpn-c4")])
def test_end_to_end_matches_upstream(name):
    # C4 heads pool 14x14 with adaptive grids: fewer proposals keep upstream's per-sample stand-in quick.
    ours, theirs = build_pair(name, SMALL + (("MODEL.RPN.POST_NMS_TOP_N_TEST", "25") if "c4" in name else ()))
    x = images()
    got = ours(x, SIZES)
    want = run_upstream(theirs, x, SIZES)
    for i in range(2):
        assert_same_detections(ours_numpy(got[i]), as_numpy(want[i]), f"{name}, image {i}")
    if name.startswith("rpn"):  # RPN-only models return proposals sorted by objectness, as upstream
        assert torch.all(got[0].scores[:-1] >= got[0].scores[1:])


def test_each_stage_matches_upstream():
    """Mask R-CNN with DCN: backbone features, RPN head outputs, proposals, then the box head on
    upstream's own proposals and the mask head on upstream's own detections."""
    ours, theirs = build_pair("mask-dcn-fpn")  # first: it puts upstream (with its CPU shims) on sys.path
    from maskrcnn_benchmark.structures.image_list import ImageList

    x = images()
    image_list = ImageList(x, [tuple(map(int, s)) for s in SIZES])
    with torch.no_grad():
        up_features = theirs.backbone(x)
        our_features = ours.backbone(x)
        for a, b in zip(our_features, up_features):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
        up_logits, up_deltas = theirs.rpn.head(up_features)
        our_logits, our_deltas = ours.rpn.head(up_features)
        for a, b in zip(our_logits + our_deltas, up_logits + up_deltas):
            torch.testing.assert_close(a, b)
        up_proposals, _ = theirs.rpn(image_list, up_features)
        stages: dict = {}
        ours(x, SIZES, stages=stages)
        for i, (boxes, scores) in enumerate(stages["proposals"]):
            proposals = ImageDetections(boxes.numpy(), scores.numpy(), np.ones(len(scores), np.int64))
            assert_same_detections(proposals, as_numpy(up_proposals[i]), f"proposals, image {i}")
        # Box head on upstream's proposals, mask head on upstream's detections.
        _, up_detections, _ = theirs.roi_heads.box(up_features, up_proposals)
        _, our_detections = ours.roi_heads["box"](up_features[:4], [p.bbox for p in up_proposals], SIZES)
        for i, (b, s, lab) in enumerate(our_detections):
            assert_same_detections(ImageDetections(b.numpy(), s.numpy(), lab.numpy()),
                                   as_numpy(up_detections[i]), f"box head, image {i}")
        _, up_masked, _ = theirs.roi_heads.mask(up_features, up_detections)
        our_masks = ours.roi_heads["mask"](up_features[:4], [d.bbox for d in up_detections],
                                           [d.get_field("labels") for d in up_detections])
        for mine, want in zip(our_masks, up_masked):
            torch.testing.assert_close(mine, want.get_field("mask")[:, 0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("config", [
    "e2e_faster_rcnn_R_50_C4_1x.yaml", "e2e_mask_rcnn_R_50_FPN_1x.yaml", "e2e_mask_rcnn_X_101_32x8d_FPN_1x.yaml",
    "dcn/e2e_faster_rcnn_dconv_R_50_FPN_1x.yaml", "gn_baselines/e2e_mask_rcnn_R_50_FPN_1x_gn.yaml",
    "gn_baselines/e2e_mask_rcnn_R_50_FPN_Xconv1fc_1x_gn.yaml", "retinanet/retinanet_R-101-FPN_P5_1x.yaml",
    "rpn_R_50_C4_1x.yaml",
])
def test_state_dict_matches_upstream_key_for_key(config):
    cfg = upstream_cfg(config)
    from maskrcnn_benchmark.config import cfg as global_cfg
    from maskrcnn_benchmark.modeling.detector import build_detection_model

    global_cfg.defrost()
    global_cfg.merge_from_other_cfg(cfg)
    want = {k: tuple(v.shape) for k, v in build_detection_model(cfg).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in build_detector(get_cfg(config_file=str(UPSTREAM_CONFIGS / config),
                                                                  detector=True)).state_dict().items()}
    assert list(got) == list(want)
    assert got == want


def test_keypoint_and_unknown_heads_are_one_line_errors():
    with pytest.raises(DeformRTError, match="keypoint heads are not supported.*MODEL.KEYPOINT_ON"):
        get_cfg(config_file=str(UPSTREAM_CONFIGS / "e2e_keypoint_rcnn_R_50_FPN_1x.yaml"), detector=True)
    cfg = get_cfg("R-50-FPN", detector=True, opts=[
        "MODEL.RPN.USE_FPN", "True", "MODEL.RPN.ANCHOR_STRIDE", "(4, 8, 16, 32, 64)", "MODEL.ROI_HEADS.USE_FPN", "True",
        "MODEL.ROI_BOX_HEAD.POOLER_SCALES", "(0.25, 0.125, 0.0625, 0.03125)",
        "MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR", "FPN2MLPFeatureExtrator"])
    with pytest.raises(DeformRTError, match="unknown MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR 'FPN2MLPFeatureExtrator' "
                                            r"\(did you mean 'FPN2MLPFeatureExtractor'\?\)"):
        build_detector(cfg)


def test_detectron_pickle_heads_load_by_upstreams_renames(tmp_path):
    """A Detectron Mask R-CNN FPN pickle (blob names as Detectron writes them) fills every head."""
    import pickle

    cfg = get_cfg(config_file=str(UPSTREAM_CONFIGS / "e2e_mask_rcnn_R_50_FPN_1x.yaml"), detector=True)
    torch.manual_seed(3)
    ref = build_detector(cfg).state_dict()
    heads = {
        "conv_rpn_fpn2": "rpn.head.conv", "rpn_cls_logits_fpn2": "rpn.head.cls_logits",
        "rpn_bbox_pred_fpn2": "rpn.head.bbox_pred", "fc6": "roi_heads.box.feature_extractor.fc6",
        "fc7": "roi_heads.box.feature_extractor.fc7", "cls_score": "roi_heads.box.predictor.cls_score",
        "bbox_pred": "roi_heads.box.predictor.bbox_pred", "conv5_mask": "roi_heads.mask.predictor.conv5_mask",
        "mask_fcn_logits": "roi_heads.mask.predictor.mask_fcn_logits",
        **{f"_[mask]_fcn{i}": f"roi_heads.mask.feature_extractor.mask_fcn{i}" for i in range(1, 5)},
    }
    blobs = {f"{blob}_{leaf}": ref[f"{module}.{name}"].numpy()
             for blob, module in heads.items() for leaf, name in (("w", "weight"), ("b", "bias"))}
    blobs["conv1_w"] = ref["backbone.body.stem.conv1.weight"].numpy()
    path = tmp_path / "detectron.pkl"
    path.write_bytes(pickle.dumps({"blobs": blobs}))
    model = build_detector(cfg)
    report = load_checkpoint(model, path, strict=False)
    state = model.state_dict()
    for module in heads.values():
        assert torch.equal(state[f"{module}.weight"], ref[f"{module}.weight"])
    assert not report.unexpected and not report.skipped
    assert all(k.startswith("backbone.") for k in report.missing)  # only this file's absent backbone
    assert len(report.computed) == 5  # the cell anchors come from the config


def test_whole_detector_checkpoint_missing_heads_is_refused(tmp_path):
    cfg = get_cfg(config_file=str(UPSTREAM_CONFIGS / "e2e_mask_rcnn_R_50_C4_1x.yaml"), detector=True)
    torch.manual_seed(0)
    state = build_detector(cfg).state_dict()
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "full.pth")
    model = build_detector(cfg)
    report = load_checkpoint(model, tmp_path / "full.pth")
    assert len(report.loaded) == len(state) and not report.missing
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    torch.save({k: v for k, v in state.items() if not k.startswith("roi_heads.mask.predictor.")}, tmp_path / "part.pth")
    with pytest.raises(DeformRTError, match=r"4 model tensor\(s\) are not in it: roi_heads\.mask\.predictor"):
        load_checkpoint(build_detector(cfg), tmp_path / "part.pth")


def test_whole_detector_checkpoint_with_other_heads_is_refused_unless_allowed(tmp_path):
    """Key for key, the backbone's strict rule: a Mask R-CNN file given to the Faster R-CNN config of
    the same body has mask-head tensors the model lacks (unexpected), refused naming them and the head;
    allow_unexpected loads the rest and lists them."""
    from models.checkpoint import CheckpointMismatchError

    mask_cfg = get_cfg(config_file=str(UPSTREAM_CONFIGS / "e2e_mask_rcnn_R_50_C4_1x.yaml"), detector=True)
    faster_cfg = get_cfg(config_file=str(UPSTREAM_CONFIGS / "e2e_faster_rcnn_R_50_C4_1x.yaml"), detector=True)
    torch.manual_seed(1)
    state = build_detector(mask_cfg).state_dict()
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "mask.pth")
    mask_keys = [k for k in state if k.startswith("roi_heads.mask.")]
    with pytest.raises(CheckpointMismatchError, match=rf"{len(mask_keys)} tensor\(s\) in it match nothing in this "
                                                      r"R-50-C4 detector: roi_heads\.mask\..*it has heads this config "
                                                      r"does not build: roi_heads\.mask"):
        load_checkpoint(build_detector(faster_cfg), tmp_path / "mask.pth")
    model = build_detector(faster_cfg)
    report = load_checkpoint(model, tmp_path / "mask.pth", allow_unexpected=True)
    assert sorted(report.unexpected) == sorted(f"module.{k}" for k in mask_keys)
    assert not report.missing
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


SYNTHETIC_OPTS = ["MODEL.RPN.PRE_NMS_TOP_N_TEST", "300", "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", "100",
                  "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", "20"]


def test_synthetic_detector_checkpoint_is_what_export_builds_without_weights(tmp_path):
    """`synthetic-checkpoint --config-file CFG --detector` saves the calibrated random detector that
    `export --detector` builds without --weights (same seed), key for key, and it loads strictly."""
    from exporter.evaluation.synthetic import make_synthetic_checkpoint
    from exporter.onnx.detector_export import build_detector_model
    from exporter.onnx.export import load_config

    config = str(UPSTREAM_CONFIGS / "dcn/e2e_mask_rcnn_mdconv_R_50_FPN_1x.yaml")
    saved = make_synthetic_checkpoint(None, tmp_path / "det.pth", config_file=config, opts=SYNTHETIC_OPTS, seed=3,
                                      detector=True)
    assert saved.detector == "mask_rcnn" and len(saved.mean_offsets_px) == 13
    assert 1.0 < np.mean(saved.mean_offsets_px) < 3.0  # a trained model's few px, not an untrained model's
    assert "--detector --onnx --weights det.pth" in saved.summary()
    built = build_detector_model(load_config(None, config, SYNTHETIC_OPTS, detector=True), seed=3).model
    file = torch.load(tmp_path / "det.pth", weights_only=True)["model"]
    want = built.state_dict()
    assert file.keys() == want.keys() and all(torch.equal(file[k], want[k]) for k in want)
    model = build_detector(get_cfg(config_file=config, detector=True))
    report = load_checkpoint(model, tmp_path / "det.pth")
    assert not report.missing and not report.unexpected
    key = "roi_heads.mask.predictor.mask_fcn_logits.weight"
    assert torch.equal(model.state_dict()[key], want[key])


def test_failed_detector_verification_tells_the_backbone_s_story():
    """After a failed check: the backbone in float64 and fp32 on the failing batch. The calibrated
    random detector is well-conditioned (the difference would be real); untrained offsets far outside
    the kernel get the ill-conditioning note with the synthetic-checkpoint --detector command. The
    verdict stands either way, and the report carries the note."""
    from types import SimpleNamespace

    from exporter.evaluation.conditioning import Story, note
    from exporter.evaluation.detector_verify import DetectorVerifyReport, StageCheck, conditioning_story
    from exporter.onnx.detector_export import random_detector
    from exporter.onnx.export import load_config

    config = str(UPSTREAM_CONFIGS / "dcn/e2e_mask_rcnn_mdconv_R_50_FPN_1x.yaml")
    model, _ = random_detector(load_config(None, config, SYNTHETIC_OPTS, detector=True))
    batch = np.random.default_rng(7).normal(0, 50, (1, 3, 128, 160)).astype(np.float32)
    story = conditioning_story(model, batch, SimpleNamespace(seed=0, body="R-50-FPN"), config)
    assert story.detector and not story.passed and 1.0 < story.offsets_px < 3.0
    assert 0 < story.floor < 1e-4 and not story.ill_conditioned and not story.suggests_synthetic
    assert "its backbone features in PyTorch fp32 are within" in note(story)[0]
    assert "the difference is real" in note(story)[0]

    untrained = Story(story.tolerance, 3e-2, 40.0, 0, "R-50-FPN", False, detector=True, synthetic=story.synthetic)
    text = " ".join(note(untrained))
    assert "ill-conditioned" in text and "40 px away" in text and "no float64 verdict: the check failed" in text
    assert (f"deformrt synthetic-checkpoint --config-file {config} --detector -o "
            "e2e_mask_rcnn_mdconv_R_50_FPN_1x-synthetic.pth") in text
    assert "--weights e2e_mask_rcnn_mdconv_R_50_FPN_1x-synthetic.pth" in text and "passed" not in text
    failed = StageCheck((1, 3, 128, 160), "detections", 3, 0.5, 0.1, None, 0, 1, False, "a box differs")
    report = DetectorVerifyReport(seed=0, checks=[failed], story=untrained)
    assert not report.passed and note(untrained)[0] in report.table()
    assert report.to_dict()["ill_conditioned"] and report.to_dict()["offsets_px"] == 40.0


def test_a_detection_lost_next_to_the_last_kept_one_is_borderline():
    """The per-image cap keeps the top detections: one found on a single side whose score is within
    BORDERLINE of the last kept detection's is a near-tie, far above the score threshold (the cut); one
    with a score far from both is a mismatch."""
    from exporter.evaluation.detections import ImageDetections
    from exporter.evaluation.detector_verify import BORDERLINE, _compare_sets

    rng = np.random.default_rng(11)
    corners = rng.uniform(0, 200, (4, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(20, 60, (4, 2))], axis=1).astype(np.float32)
    scores = np.array([0.9, 0.7, 0.41, 0.0], np.float32)
    labels = np.array([1, 2, 3, 1])
    kept = ImageDetections(boxes[:3], scores[:3], labels[:3])
    for lost_score, borderline in ((0.41 - BORDERLINE / 2, 1), (0.2, 0)):
        scores[3] = lost_score
        other = ImageDetections(boxes, scores.copy(), labels)
        check = _compare_sets((1, 3, 64, 64), "detections", kept, other, 0.05, None)
        assert (check.compared, check.borderline, check.mismatched) == (3, borderline, 1 - borderline)
        assert check.passed == bool(borderline)
