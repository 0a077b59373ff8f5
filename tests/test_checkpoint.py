"""models.load_checkpoint: the three formats, reporting, strictness and untrusted files.

Every checkpoint is synthesised here from a reference backbone with random weights, named by the
independent converters in checkpoint_fixtures (model key -> upstream name), then loaded into a
freshly built backbone: every tensor and the outputs on a random input must equal the reference's.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from checkpoint_fixtures import (
    C2_DETECTOR_EXTRAS,
    DETECTOR_EXTRAS,
    LAST_BLOCKS,
    c2_blob_name,
    py2_numpy_pickle,
    randomize_,
    to_c2_blobs,
    to_detector,
    to_torchvision,
    write_pickle,
)
from models import DeformRTError, build_backbone, get_cfg, load_checkpoint
from models.checkpoint import CheckpointMismatchError, LoadReport
from models.safe_pickle import load_pickle

DCN = ("MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True, True)")
MDCN = DCN + ("MODEL.RESNETS.WITH_MODULATED_DCN", "True")
GN = ("MODEL.RESNETS.STEM_FUNC", "'StemWithGN'", "MODEL.RESNETS.TRANS_FUNC", "'BottleneckWithGN'",
      "MODEL.FPN.USE_GN", "True")
TORCHVISION_STRIDE = ("MODEL.RESNETS.STRIDE_IN_1X1", "False",)


def fresh(body: str, opts: tuple[str, ...] = ()):
    """A newly built backbone with upstream's initialisation (seeded)."""
    torch.manual_seed(0)
    return build_backbone(get_cfg(body, opts=opts)).eval()


def reference(body: str, opts: tuple[str, ...] = (), seed: int = 1, **kwargs):
    return randomize_(fresh(body, opts), seed, **kwargs)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def image(seed: int = 7) -> torch.Tensor:
    return torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def run(model, x):
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, (tuple, list)) else (out,)


def assert_same_state(model, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def assert_same_outputs(model, ref) -> None:
    x = image()
    got, want = run(model, x), run(ref, x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def assert_state_differs(model, ref) -> None:
    """Before loading: no tensor of ``model`` equals the reference's except identity-initialised ones."""
    ref_state = ref.state_dict()
    same = [k for k, v in model.state_dict().items() if torch.equal(v, ref_state[k])]
    assert all(k.endswith(("running_mean", "running_var")) or ".offset." in k for k in same), same[:3]


def copy_offsets(src, dst) -> list[str]:
    """Give ``dst`` the offset convs of ``src`` (keys never in C2 / torchvision files)."""
    keys = [k for k in src.state_dict() if ".offset." in k]
    with torch.no_grad():
        for k in keys:
            dst.state_dict()[k].copy_(src.state_dict()[k])
    return keys


# ------------------------------------------------------------------------------------------
# maskrcnn-benchmark
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix, legacy", [("module.", False), ("", True)])
def test_whole_detector_checkpoint_loads_its_backbone(tmp_path, prefix, legacy):
    ref = reference("R-50-FPN", MDCN)
    path = tmp_path / "model_final.pth"
    payload = {"model": to_detector(ref.state_dict(), prefix), "iteration": 90000,
               "optimizer": {"state": {}, "param_groups": [{"lr": 0.02}]}, "scheduler": {"last_epoch": 9}}
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    model = fresh("R-50-FPN", MDCN)
    assert_state_differs(model, ref)

    report = load_checkpoint(model, path)

    assert (report.kind, report.container) == ("maskrcnn-benchmark", "pth (legacy)" if legacy else "pth (zip)")
    assert report.loaded == list(ref.state_dict())
    assert report.missing == report.unexpected == report.from_init == report.identity == report.ignored == []
    assert sorted(report.skipped) == sorted(prefix + k for k in DETECTOR_EXTRAS)
    assert f"skipped {len(DETECTOR_EXTRAS)} entries outside this backbone" in report.format()
    assert_same_state(model, ref.state_dict())
    assert_same_outputs(model, ref)


def test_safetensors_backbone(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    ref = reference("R-50-C4")
    path = tmp_path / "backbone.safetensors"
    safetensors_torch.save_file(ref.state_dict(), str(path))
    model = fresh("R-50-C4")

    report = load_checkpoint(model, path)

    assert (report.kind, report.container) == ("maskrcnn-benchmark", "safetensors")
    assert len(report.loaded) == len(ref.state_dict()) and not report.missing and not report.skipped
    assert_same_state(model, ref.state_dict())
    assert_same_outputs(model, ref)


def test_native_keys_match_exactly_not_by_suffix(tmp_path):
    """Upstream matches by string suffix; a key that merely ends like a model key is unexpected."""
    ref = reference("R-50-C4")
    state = dict(ref.state_dict())
    state["extra.body.stem.conv1.weight"] = state["body.stem.conv1.weight"] * 2  # suffix-equal, not equal
    state["body.layer9.0.conv1.weight"] = torch.randn(3)
    torch.save(state, tmp_path / "ckpt.pth")
    model = fresh("R-50-C4")
    before = snapshot(model)

    with pytest.raises(CheckpointMismatchError, match=r"2 backbone tensor\(s\) in it match nothing in this R-50-C4: "
                                                      r"extra\.body\.stem\.conv1\.weight, body\.layer9\.0") as refused:
        load_checkpoint(model, tmp_path / "ckpt.pth")
    assert refused.value.kind == "unexpected" and "allow_unexpected=True" in str(refused.value)
    assert_same_state(model, before)  # refused before anything was copied

    report = load_checkpoint(model, tmp_path / "ckpt.pth", allow_unexpected=True)

    assert sorted(report.unexpected) == ["body.layer9.0.conv1.weight", "extra.body.stem.conv1.weight"]
    assert_same_state(model, ref.state_dict())


def test_strict_requires_offsets_from_a_trained_checkpoint(tmp_path):
    """A checkpoint without DCN loaded into a DCN model: the offsets and conv2.conv are missing."""
    plain = reference("R-50-FPN")
    torch.save({"model": to_detector(plain.state_dict())}, tmp_path / "plain.pth")
    model = fresh("R-50-FPN", DCN)
    before = snapshot(model)
    dcn_only = sorted(set(before) - set(plain.state_dict()))
    assert dcn_only and all(".conv2." in k for k in dcn_only)

    expected = rf"{len(dcn_only)} model tensor\(s\) are not in it: body\.layer2\.0\.conv2"
    with pytest.raises(DeformRTError, match=expected):
        load_checkpoint(model, tmp_path / "plain.pth")
    assert_same_state(model, before)  # a failed load changes nothing

    report = load_checkpoint(model, tmp_path / "plain.pth", strict=False)
    assert sorted(report.missing) == dcn_only and report.from_init == []
    assert sorted(report.unexpected) == sorted(
        f"module.backbone.{k}" for k in plain.state_dict() if k not in before)
    state = model.state_dict()
    for key in dcn_only:
        assert torch.equal(state[key], before[key]), key  # left as they were, and reported
    for key in report.loaded:
        assert torch.equal(state[key], plain.state_dict()[key]), key


def test_shape_mismatch_names_the_key_and_both_shapes(tmp_path):
    ref = reference("R-50-FPN")
    state = dict(ref.state_dict())
    state["fpn.fpn_inner1.weight"] = torch.randn(128, 256, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    model = fresh("R-50-FPN")
    before = snapshot(model)

    with pytest.raises(DeformRTError, match=r"shape mismatch for fpn\.fpn_inner1\.weight: the checkpoint has "
                                            r"\[128, 256, 1, 1\], the model expects \[256, 256, 1, 1\]"):
        load_checkpoint(model, tmp_path / "bad.pth", strict=False)
    assert_same_state(model, before)


def test_two_entries_for_one_key_are_refused(tmp_path):
    ref = reference("R-50-C4")
    state = to_detector(ref.state_dict(), "module.")
    state["backbone.body.stem.conv1.weight"] = state["module.backbone.body.stem.conv1.weight"]
    torch.save(state, tmp_path / "dup.pth")
    with pytest.raises(DeformRTError, match="both .* map to body.stem.conv1.weight"):
        load_checkpoint(fresh("R-50-C4"), tmp_path / "dup.pth")


# ------------------------------------------------------------------------------------------
# Detectron (Caffe2) pickles
# ------------------------------------------------------------------------------------------


def _c2_case(tmp_path, body, opts, depth, *, gn=False, py2=False):
    ref = reference(body, opts, identity_stats=True)
    blobs = to_c2_blobs(ref.state_dict(), LAST_BLOCKS[depth], gn=gn, detector=True)
    path = tmp_path / "model_final.pkl"
    if py2:
        path.write_bytes(py2_numpy_pickle(blobs))
    else:
        write_pickle(path, {"blobs": blobs, "cfg": "MODEL: {}"})
    model = randomize_(fresh(body, opts), seed=2)  # random running statistics, too
    return ref, model, blobs, path


@pytest.mark.parametrize("body, opts, depth, py2", [
    ("R-50-FPN", DCN, "R-50", True),
    ("R-101-FPN", (), "R-101", False),
    ("R-152-FPN", (), "R-152", False),
])
def test_detectron_c2_pickle(tmp_path, body, opts, depth, py2):
    """Names and values for each depth; outputs too for the (cheaper) R-50 with DCN."""
    ref, model, blobs, path = _c2_case(tmp_path, body, opts, depth, py2=py2)
    offsets = copy_offsets(ref, model)  # not in C2 files: give both the same "init"
    assert bool(offsets) == bool(opts)
    assert_state_differs(model, ref)

    report = load_checkpoint(model, path)

    keys = list(ref.state_dict())
    stats = [k for k in keys if k.endswith(("running_mean", "running_var"))]
    assert (report.kind, report.container) == ("detectron-c2", "pickle")
    assert report.loaded == [k for k in keys if k not in stats and k not in offsets]
    assert report.identity == stats and report.from_init == offsets
    assert report.missing == report.unexpected == report.warnings == []
    assert sorted(report.ignored) == sorted(k for k in blobs if k.endswith("_momentum") or k.startswith("fc1000"))
    assert sorted(report.skipped) == sorted(C2_DETECTOR_EXTRAS)
    assert_same_state(model, ref.state_dict())
    if depth == "R-50":
        assert_same_outputs(model, ref)


def test_detectron_c2_last_block_indices_follow_depth():
    """The FPN blob names carry each depth's last block: R-101 res4_22, R-152 res3_7 / res4_35."""
    for body, depth, expected in [
        ("R-50-FPN", "R-50", {"fpn_inner_res5_2_sum_w", "fpn_inner_res4_5_sum_lateral_w", "fpn_res3_3_sum_b"}),
        ("R-101-FPN", "R-101", {"fpn_inner_res4_22_sum_lateral_w", "fpn_res4_22_sum_w", "fpn_res2_2_sum_w"}),
        ("R-152-FPN", "R-152", {"fpn_inner_res3_7_sum_lateral_b", "fpn_res4_35_sum_w", "fpn_inner_res5_2_sum_b"}),
    ]:
        names = set(to_c2_blobs(fresh(body).state_dict(), LAST_BLOCKS[depth], momentum=False))
        assert expected <= names, body


def test_detectron_c2_group_norm(tmp_path):
    ref, model, blobs, path = _c2_case(tmp_path, "R-50-FPN", GN, "R-50", gn=True)
    assert {"conv1_gn_s", "res2_0_branch2a_gn_b", "res3_0_branch1_gn_s", "fpn_res2_2_sum_gn_s",
            "fpn_inner_res5_2_sum_w", "pred_w"} <= set(blobs)

    report = load_checkpoint(model, path)

    assert report.loaded == list(ref.state_dict())  # GN has no running statistics
    assert report.identity == report.missing == report.unexpected == []
    assert {"pred_w", "pred_b"} <= set(report.ignored)
    assert_same_state(model, ref.state_dict())
    assert_same_outputs(model, ref)


def test_detectron_c2_retinanet_extra_levels(tmp_path):
    ref, model, blobs, path = _c2_case(tmp_path, "R-50-FPN-RETINANET", (), "R-50")
    assert {"fpn_6_w", "fpn_7_b", "fpn_inner_res3_3_sum_lateral_w"} <= set(blobs)
    assert not any(name.startswith("fpn_inner_res2") for name in blobs)

    report = load_checkpoint(model, path)

    assert report.missing == report.unexpected == [] and "fpn.top_blocks.p6.weight" in report.loaded
    assert_same_state(model, ref.state_dict())
    assert_same_outputs(model, ref)


@pytest.mark.parametrize("body, dtype", [("R-50-C4", torch.float64), ("R-50-FPN", torch.float32)])
def test_detectron_c2_imagenet_init(tmp_path, body, dtype):
    """An ImageNet R-50.pkl: res5 unused by C4 bodies, FPN trained from init, both strict-clean.

    The float32 blobs take the model's dtype.
    """
    imagenet = reference("R-50-C5", identity_stats=True)
    path = write_pickle(tmp_path / "R-50.pkl", to_c2_blobs(imagenet.state_dict(), LAST_BLOCKS["R-50"]))
    model = fresh(body).to(dtype)
    before = snapshot(model)

    report = load_checkpoint(model, path)

    state = model.state_dict()
    fpn = [k for k in state if k.startswith("fpn.")]
    assert report.from_init == fpn and report.missing == report.unexpected == []
    assert bool(report.skipped) == (body == "R-50-C4")
    assert all(name.startswith("res5_") for name in report.skipped)
    for key in state:
        expected = before[key] if key in fpn else imagenet.state_dict()[key].to(dtype)
        assert state[key].dtype == dtype and torch.equal(state[key], expected), key


def test_detectron_c2_depth_mismatch_warns(tmp_path):
    """FPN blobs whose block index is not the model's last block get a warning per FPN module."""
    ref = reference("R-50-FPN", identity_stats=True)
    blobs = to_c2_blobs(ref.state_dict(), (2, 3, 22, 2))
    model = fresh("R-50-FPN")

    report = load_checkpoint(model, write_pickle(tmp_path / "odd.pkl", blobs))

    assert len(report.warnings) == 2 and all("res4 ends at block 5" in w for w in report.warnings)
    assert "warning: FPN blob fpn_inner_res4_22_sum_lateral" in report.format()


# ------------------------------------------------------------------------------------------
# torchvision
# ------------------------------------------------------------------------------------------


def test_torchvision_imagenet(tmp_path):
    opts = DCN + TORCHVISION_STRIDE
    ref = reference("R-50-FPN", opts)
    torch.save(to_torchvision(ref.state_dict()), tmp_path / "resnet50.pth")
    model = fresh("R-50-FPN", opts)
    offsets = copy_offsets(ref, model)
    fpn = [k for k in model.state_dict() if k.startswith("fpn.")]
    with torch.no_grad():
        for key in fpn:
            model.state_dict()[key].copy_(ref.state_dict()[key])

    report = load_checkpoint(model, tmp_path / "resnet50.pth", cfg=get_cfg("R-50-FPN", opts=opts))

    assert (report.kind, report.container) == ("torchvision", "pth (zip)")
    assert sorted(report.from_init) == sorted(offsets + fpn)
    assert report.missing == report.unexpected == report.warnings == []
    assert sorted(k for k in report.ignored if not k.endswith("num_batches_tracked")) == ["fc.bias", "fc.weight"]
    assert len(report.ignored) == 2 + sum(k.endswith("running_var") for k in ref.state_dict())
    assert "body.layer3.1.conv2.conv.weight" in report.loaded
    assert_same_state(model, ref.state_dict())
    assert_same_outputs(model, ref)


def test_torchvision_weights_warn_about_stride_in_1x1(tmp_path):
    ref = reference("R-50-C4")  # STRIDE_IN_1X1 True by default
    torch.save({"model": to_torchvision(ref.state_dict())}, tmp_path / "tv.pth")
    warned = load_checkpoint(fresh("R-50-C4"), tmp_path / "tv.pth")
    assert any("STRIDE_IN_1X1 False" in w for w in warned.warnings)
    by_cfg = load_checkpoint(fresh("R-50-C4"), tmp_path / "tv.pth", cfg=get_cfg("R-50-C4"))
    assert by_cfg.warnings == warned.warnings
    assert sorted(by_cfg.skipped) == sorted(k for k in to_torchvision(ref.state_dict()) if k.startswith("layer4."))


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def test_report_summary_and_format():
    report = LoadReport(path="w.pkl", kind="detectron-c2", container="pickle", loaded=["a", "b"], identity=["c"],
                        from_init=[f"off{i}" for i in range(7)], ignored=["fc1000_w"], skipped=["cls_score_w"],
                        warnings=["careful"])
    summary = report.summary()
    assert "\n" not in summary
    assert summary.startswith("loaded 2/10 tensors from w.pkl (detectron-c2, pickle): 0 missing, 7 trained from init")
    text = report.format().splitlines()
    assert text[0] == summary
    assert "  not in file (trained from init): 7: off0, off1, off2, off3, off4 (+2 more)" in text
    assert "  left at identity (not in C2 files): 1: c" in text
    assert "  warning: careful" in text
    assert not any(line.lstrip().startswith("missing") for line in text)


# ------------------------------------------------------------------------------------------
# Untrusted and broken files
# ------------------------------------------------------------------------------------------


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Evals:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').write('ran')",)


class _Spawns:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return subprocess.call, (["touch", str(self.marker)],)


@pytest.mark.parametrize("payload, callee", [(_RunsShell, "posix.system"), (_Evals, "builtins.eval"),
                                             (_Spawns, "subprocess.call")])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, payload, callee, protocol):
    marker = tmp_path / "pwned"
    blobs = {"conv1_w": np.ones((64, 3, 7, 7), np.float32), "res2_0_branch2a_w": payload(marker)}
    path = write_pickle(tmp_path / "R-50.pkl", {"blobs": blobs}, protocol=protocol)
    if sys.platform != "linux" and callee == "posix.system":
        callee = os.system.__module__ + ".system"
    with pytest.raises(DeformRTError, match=rf"^refusing to load {path}: it asks to run {callee}$"):
        load_checkpoint(torch.nn.Module(), path)
    assert not marker.exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_pth_with_code_is_refused_and_nothing_runs(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "model_final.pth"
    torch.save({"model": {"body.stem.conv1.weight": torch.zeros(1)}, "hook": _RunsShell(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(DeformRTError, match=r"^refusing to load .*model_final\.pth: it asks to run posix\.system$"):
        load_checkpoint(torch.nn.Module(), path)
    assert not marker.exists()


def test_safe_pickle_reads_plain_data_and_numpy_in_every_protocol():
    """Same result as the unrestricted stdlib unpickler for data-only pickles, all protocols."""
    rng = np.random.default_rng(3)
    arrays = {"f2": rng.standard_normal((2, 3)).astype(np.float16), "f8": rng.standard_normal(4),
              "i8": rng.integers(-9, 9, (3, 1)), "be": rng.standard_normal(5).astype(">f4"),
              "scalar": np.float32(2.5)}
    data = {"arrays": arrays, "plain": [1, 2.0, "x", b"y", None, (True,)], "set": {1, 2}}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        blob = pickle.dumps(data, protocol=protocol)
        got, want = load_pickle("mem", io.BytesIO(blob)), pickle.loads(blob)
        assert got["plain"] == data["plain"] and got["set"] == {1, 2}
        for key, array in arrays.items():
            assert got["arrays"][key].dtype == want["arrays"][key].dtype, (protocol, key)
            assert np.array_equal(got["arrays"][key], array), (protocol, key)


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "absent.pth", r"checkpoint not found: .*absent\.pth"),
    (lambda p: p, r"is a directory, not a file"),
    (lambda p: _write(p / "empty.pth", b""), r"the file is empty"),
    (lambda p: _write(p / "notes.pth", b"just some text\n"), r"not a PyTorch \(\.pth\), safetensors or pickle"),
    (lambda p: _write(p / "R-50.pkl", pickle.dumps({"blobs": {"conv1_w": np.ones((64, 3, 7, 7), np.float32)}},
                                                   protocol=2)[:-300]), r"the pickle ends early \(truncated"),
    (lambda p: _write(p / "model.pth", _saved({"w": torch.ones(300)})[:200]), r"corrupt or truncated PyTorch file"),
    (lambda p: write_pickle(p / "list.pkl", [np.ones(3)]), r"it holds a list, not a dict of weights"),
    (lambda p: write_pickle(p / "cfg.pkl", {"cfg": "MODEL: {}"}), r"it holds no tensors"),
    (lambda p: write_pickle(p / "d2.pkl", {"model": {}, "__author__": "Detectron2 Model Zoo"}),
     r"detectron2 checkpoints are not supported"),
])
def test_unreadable_files_give_one_line_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(DeformRTError, match=message) as info:
        load_checkpoint(torch.nn.Module(), path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_safetensors_problems_are_one_line_errors(tmp_path, monkeypatch):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "w.safetensors"
    safetensors_torch.save_file({"body.stem.conv1.weight": torch.randn(64, 3, 7, 7)}, str(path))
    truncated = _write(tmp_path / "cut.safetensors", path.read_bytes()[:-100])
    with pytest.raises(DeformRTError, match=r"cut\.safetensors: corrupt safetensors file"):
        load_checkpoint(torch.nn.Module(), truncated)
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if the package were not installed
    with pytest.raises(DeformRTError, match=r"reading \.safetensors needs the 'safetensors' package"):
        load_checkpoint(torch.nn.Module(), path)


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_blob_names_cover_every_c2_tensor():
    """Sanity of the test's own converter: every non-statistic, non-offset key has a unique blob name."""
    state = fresh("R-50-FPN", DCN).state_dict()
    names = [c2_blob_name(k, LAST_BLOCKS["R-50"]) for k in state]
    kept = [n for n in names if n is not None]
    assert len(kept) == len(set(kept)) == sum(not k.endswith(("running_mean", "running_var")) and ".offset." not in k
                                              for k in state)
