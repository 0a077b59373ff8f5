"""``deformrt compare`` without TensorRT: PyTorch against ONNX Runtime (fp32, and the fp16 conversion)
for several exported bodies, the statistics against a direct computation, input preprocessing, the
report, and the errors raised before anything runs."""

import json
import types

import numpy as np
import pytest
import torch

from exporter.evaluation.compare import TOLERANCES, CompareOptions, compare_models, make_inputs
from exporter.evaluation.inputs import load_image, preprocess, random_images
from exporter.trt.sidecar import EngineMeta, sidecar_path
from exporter.onnx.metadata import ExportMetadata
from exporter.trt.profiles import ShapeProfile
from models.errors import DeformRTError

MODELS = {
    # name: (config file, body, opts, DCN flavour, export H x W)
    "fpn-mdcn-plugin": ("e2e_mask_rcnn_mdconv_R_50_FPN_1x.yaml", None, [], "plugin", (64, 96)),
    "c4-dcn-onnx": (None, "R-50-C4", ["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, True, False)"], "onnx", (64, 64)),
    "fpn-gn": ("e2e_mask_rcnn_R_50_FPN_1x_gn.yaml", None, [], "plugin", (64, 64)),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from exporter.onnx.export import ExportOptions, build_model, export_model, load_config

    out = tmp_path_factory.mktemp("compare")
    paths = {}
    for name, (config_file, body, opts, flavour, size) in MODELS.items():
        built = build_model(load_config(body=body, config_file=config_file, opts=opts), seed=5)
        proto = export_model(built, ExportOptions(dcn_op=flavour, input_size=size))
        paths[name] = out / f"{name}.onnx"
        paths[name].write_bytes(proto.SerializeToString())
    return paths


@pytest.mark.parametrize("name", list(MODELS))
def test_pytorch_and_onnxruntime_agree_fp32(exported, name):
    meta = ExportMetadata.from_model(exported[name])
    report = compare_models(exported[name], CompareOptions(backends=("torch", "ort"), seed=21))
    assert report.passed and report.reference == "torch" and report.seed == 21
    [comparison] = report.comparisons
    assert comparison.backend == "ort" and comparison.precision == "fp32" and comparison.tolerance == TOLERANCES["fp32"]
    assert [o.name for o in comparison.outputs] == list(meta.output_names)
    _, _, h, w = report.input_shape
    for out, stride, channels in zip(comparison.outputs, meta.output_strides, meta.output_channels):
        assert out.shape == (1, channels, -(-h // stride), -(-w // stride))
        # Both compute in fp32: agreement far inside the fp32 tolerance, but not bit-identical.
        assert 0 < out.max_rel < 1e-5 and out.mean_abs <= out.max_abs


def test_statistics_match_a_direct_computation(exported):
    """The reported numbers are those of the arrays: recompute them from PyTorch and ONNX Runtime."""
    import onnx

    from exporter.onnx.export import rebuild_model
    from exporter.evaluation.ort import ort_model_bytes, ort_session

    path = exported["c4-dcn-onnx"]
    meta = ExportMetadata.from_model(path)
    report = compare_models(path, CompareOptions(backends=("torch", "ort"), seed=8, batch=2, shape=(96, 64)))
    batch, _ = make_inputs(meta, (), 2, (96, 64), 8)
    assert report.input_shape == batch.shape == (2, 3, 96, 64)
    with torch.inference_mode():
        expected = [t.double().numpy() for t in rebuild_model(meta)(torch.from_numpy(batch))]
    got = ort_session(ort_model_bytes(onnx.load_model(str(path)))).run(None, {"images": batch})
    for out, e, g in zip(report.comparisons[0].outputs, expected, got):
        diff = np.abs(e - g)
        assert out.max_abs == pytest.approx(diff.max(), rel=1e-6)
        assert out.mean_abs == pytest.approx(diff.mean(), rel=1e-4)
        assert out.max_rel == pytest.approx(diff.max() / np.abs(e).max(), rel=1e-6)


@pytest.mark.parametrize("name", ["fpn-mdcn-plugin", "fpn-gn"])
def test_fp16_conversion_in_onnxruntime_against_pytorch(exported, name):
    report = compare_models(exported[name], CompareOptions(backends=("torch", "ort"), seed=3, fp16=True))
    [comparison] = report.comparisons
    assert comparison.precision == "fp16" and comparison.tolerance == TOLERANCES["fp16"]
    assert report.passed, report.table()
    # fp16 error level: well inside the tolerance, and clearly not fp32.
    assert all(1e-5 < o.max_rel < 1e-2 for o in comparison.outputs), report.table()


def test_first_backend_is_the_reference_and_a_tolerance_below_fp32_rounding_goes_to_float64(exported):
    """--tolerance 1e-12 is below what fp32 can hold (PyTorch fp32 itself is ~1e-7..1e-5 from float64):
    the strict check fails, and the outputs are judged against float64 PyTorch, as export's verify does."""
    path = exported["c4-dcn-onnx"]
    report = compare_models(path, CompareOptions(backends=("ort", "torch"), seed=4, tolerance=1e-12))
    assert report.reference == "ort" and [c.backend for c in report.comparisons] == ["torch"]
    assert report.comparisons[0].tolerance == 1e-12
    [out] = report.comparisons[0].outputs
    assert out.max_rel > 1e-12 and out.floor > 1e-12
    # torch against float64 is the floor itself: it passes the float64 rule, and says so.
    assert out.max_rel_float64 == pytest.approx(out.floor) and out.passed and report.passed
    assert out.verdict(1e-12) == "PASS (vs fp64)" and report.story.judged_by_float64
    assert not report.story.ill_conditioned  # a tolerance tighter than fp32, not an ill-conditioned model
    table = report.table()
    assert "reference: ort (fp32)" in table and "torch fp32 vs fp64" in table and table.endswith("PASSED")
    assert "the tolerance 1e-12 is tighter than fp32 rounding here" in table
    assert report.to_dict()["ill_conditioned"] is False


def test_report_json_has_stable_keys(exported):
    report = compare_models(exported["c4-dcn-onnx"], CompareOptions(seed=9))
    d = json.loads(report.to_json())
    assert list(d) == ["onnx", "input", "reference", "comparisons", "passed", "ill_conditioned", "note"]
    assert d["input"] == {"name": "images", "shape": [1, 3, 64, 64], "source": "random", "seed": 9, "images": []}
    assert d["reference"] == {"backend": "torch", "precision": "fp32"}
    [c] = d["comparisons"]
    assert list(c) == ["backend", "precision", "tolerance", "passed", "outputs"]
    assert list(c["outputs"][0]) == ["name", "shape", "max_abs", "max_rel", "mean_abs", "passed", "floor",
                                     "max_rel_float64", "verdict"]
    assert d["passed"] is True


def test_fresh_seed_by_default(exported):
    meta = ExportMetadata.from_model(exported["c4-dcn-onnx"])
    seeds = {make_inputs(meta)[1] for _ in range(4)}
    assert len(seeds) > 1 and None not in seeds


def test_real_images_are_preprocessed_and_compared(exported, tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(50, 70), (64, 40)]):
        paths.append(tmp_path / f"img{i}.npy")
        np.save(paths[-1], rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
    report = compare_models(exported["fpn-gn"], CompareOptions(images=paths))  # size divisibility 32
    assert report.source == "images" and report.seed is None and report.input_shape == (2, 3, 64, 96)
    assert report.passed


def _meta(to_bgr255, color_order, div=32):
    return types.SimpleNamespace(to_bgr255=to_bgr255, color_order=color_order, pixel_mean=(10.0, 20.0, 30.0),
                                 pixel_std=(2.0, 4.0, 5.0), size_divisibility=div)


@pytest.mark.parametrize("to_bgr255,color_order", [(True, "BGR"), (False, "RGB")])
def test_preprocess_against_an_explicit_loop(to_bgr255, color_order):
    img = np.random.default_rng(1).uniform(0, 255, size=(5, 7, 3))
    out = preprocess([img], _meta(to_bgr255, color_order, div=4))
    assert out.shape == (1, 3, 8, 8) and out.dtype == np.float32
    mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 5.0)
    for c in range(3):
        source = 2 - c if color_order == "BGR" else c
        scale = 1.0 if to_bgr255 else 1 / 255.0
        for y in range(8):
            for x in range(8):
                want = (img[y, x, source] * scale - mean[c]) / std[c] if y < 5 and x < 7 else 0.0
                assert out[0, c, y, x] == pytest.approx(want, rel=1e-6, abs=1e-5)


def test_random_images_are_pixel_images():
    imgs = random_images(2, 8, 16, seed=3)
    assert [i.shape for i in imgs] == [(8, 16, 3)] * 2 and all(0 <= i.min() and i.max() <= 255 for i in imgs)
    np.testing.assert_array_equal(imgs[0], random_images(1, 8, 16, seed=3)[0])


def test_load_image_errors(tmp_path):
    with pytest.raises(DeformRTError, match="image not found"):
        load_image(tmp_path / "none.npy")
    (tmp_path / "a.bmp").write_bytes(b"x")
    with pytest.raises(DeformRTError, match=r"must be \.npy, \.png"):
        load_image(tmp_path / "a.bmp")
    np.save(tmp_path / "bad.npy", np.zeros((4, 4, 4)))
    with pytest.raises(DeformRTError, match=r"HxWx3 RGB image, got an array of shape \(4, 4, 4\)"):
        load_image(tmp_path / "bad.npy")
    np.save(tmp_path / "gray.npy", np.arange(12, dtype=np.uint8).reshape(3, 4))
    assert load_image(tmp_path / "gray.npy").shape == (3, 4, 3)
    try:
        import PIL  # noqa: F401
    except ImportError:
        (tmp_path / "a.png").write_bytes(b"\x89PNG")
        with pytest.raises(DeformRTError, match="needs Pillow"):
            load_image(tmp_path / "a.png")


@pytest.mark.parametrize("backends,match", [
    (("torch",), "at least two different backends"),
    (("torch", "torch"), "at least two different backends"),
    (("torch", "tensorflow"), "unknown backend 'tensorflow'"),
])
def test_backend_errors(exported, backends, match):
    with pytest.raises(DeformRTError, match=match):
        compare_models(exported["c4-dcn-onnx"], CompareOptions(backends=backends))


def test_input_errors(exported, tmp_path):
    with pytest.raises(DeformRTError, match="multiples of the model's size divisibility 32"):
        compare_models(exported["fpn-gn"], CompareOptions(shape=(48, 64)))
    with pytest.raises(DeformRTError, match="ONNX file not found"):
        compare_models(tmp_path / "none.onnx")
    with pytest.raises(DeformRTError, match="--tolerance must be positive and finite, got 0"):
        compare_models(exported["fpn-gn"], CompareOptions(tolerance=0.0))


def _fake_engine(tmp_path, onnx_path, max_hw=(128, 128)):
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"not a real plan")
    meta = EngineMeta("0.1.0", "10.3.0", "Orin", "8.7", "fp16",
                      [ShapeProfile("images", (1, 3, 64, 64), (1, 3, 64, 64), (1, 3, *max_hw))],
                      str(onnx_path), "0" * 64, {}, fp16_method="builder-flag")
    sidecar_path(engine).write_text(meta.to_json())
    return engine


def test_shape_outside_the_engine_profile_is_reported_before_running(exported, tmp_path):
    engine = _fake_engine(tmp_path, exported["c4-dcn-onnx"])
    with pytest.raises(DeformRTError, match=r"1x3x160x64 is outside the engine's profile \(min 1x3x64x64, max "
                                            r"1x3x128x128\)"):
        compare_models(exported["c4-dcn-onnx"], CompareOptions(backends=("torch", "trt"), engine=engine,
                                                               shape=(160, 64)))


def test_tensorrt_backend_without_tensorrt_or_plugin(exported, tmp_path, monkeypatch):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    monkeypatch.setenv("DEFORMRT_PLUGIN_LIB", str(tmp_path / "missing.so"))
    with pytest.raises(DeformRTError, match="needs the deformrt TensorRT plugin: .*missing.so"):
        compare_models(exported["fpn-mdcn-plugin"], CompareOptions(backends=("torch", "trt")))
    with pytest.raises(DeformRTError, match="TensorRT is not available here"):
        compare_models(exported["c4-dcn-onnx"], CompareOptions(backends=("torch", "trt")))  # no plugin needed


def test_flatten_outputs():
    from exporter.evaluation.runners import flatten_outputs

    assert list(flatten_outputs((1, 2), ["a", "b"]).items()) == [("a", 1), ("b", 2)]
    assert list(flatten_outputs({"b": 2, "a": 1}, ["a", "b"]).items()) == [("a", 1), ("b", 2)]
    with pytest.raises(DeformRTError, match="returned 1 outputs but the ONNX metadata names 2"):
        flatten_outputs(torch.zeros(1), ["a", "b"])
    with pytest.raises(DeformRTError, match="no output named b"):
        flatten_outputs({"a": 1}, ["a", "b"])


def test_onnxruntime_cuda_provider_is_checked(exported):
    import onnx

    from exporter.evaluation.ort import ort_model_bytes, ort_session

    data = ort_model_bytes(onnx.load_model(str(exported["c4-dcn-onnx"])))
    if not torch.cuda.is_available():
        with pytest.raises(DeformRTError, match="ONNX Runtime cannot use CUDA here"):
            ort_session(data, "cuda")
    with pytest.raises(DeformRTError, match="unknown ONNX Runtime provider 'tpu'"):
        ort_session(data, "tpu")
    with pytest.raises(DeformRTError, match="ONNX Runtime .* cannot load the model: .*corrupt"):
        ort_session(b"not onnx", "cpu")


def test_demo_compare_runs_what_is_available(exported, monkeypatch, tmp_path):
    import io

    from exporter.evaluation.compare import demo_compare
    from exporter.util.progress import Progress

    monkeypatch.setenv("DEFORMRT_PLUGIN_LIB", str(tmp_path / "missing.so"))
    stream = io.StringIO()
    report = demo_compare(exported["c4-dcn-onnx"], Progress(stream=stream))
    assert report.passed and report.reference == "torch"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert [c.backend for c in report.comparisons] == ["ort"]
        assert "TensorRT left out of the comparison: TensorRT is not available here" in stream.getvalue()
