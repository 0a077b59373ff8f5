"""The C++ runtime (plugins/runtime/): its TensorRT-free core (.npy reader and writer, engine sidecar,
output comparison) driven through tests/native/runtime_core_driver.cpp, built with g++ and
AddressSanitizer/UBSan, against files numpy and exporter/engine_meta.py wrote; and the TensorRT part
(library, deformrt-run, example) compiled against every TensorRT header set available."""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from exporter.trt.sidecar import EngineMeta
from exporter.trt.profiles import ShapeProfile
from trt_headers import HEADER_SETS_DIR, cuda_include, header_set_id, header_sets

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
RUNTIME_SRC = PLUGINS / "runtime" / "src"
# The TensorRT-free sources of the runtime library (CMake target deformrt_runtime_core).
CORE_SOURCES = ["npy.cpp", "hostTensor.cpp", "fileIo.cpp", "json.cpp", "sidecar.cpp", "compare.cpp", "latency.cpp",
                "detections.cpp"]

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed to build the native test driver")


@pytest.fixture
def rng(request):
    """Fresh random data per test, reproducible from the test id."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    if shutil.which("g++") is None:
        pytest.skip("g++ is needed to build the native test driver")
    exe = tmp_path_factory.mktemp("runtime-core") / "driver"
    cmd = ["g++", "-std=c++17", "-O0", "-g", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined",
           "-fno-sanitize-recover=all", f"-I{PLUGINS / 'include'}", f"-I{RUNTIME_SRC}",
           str(ROOT / "tests" / "native" / "runtime_core_driver.cpp"), *(str(RUNTIME_SRC / s) for s in CORE_SOURCES),
           "-o", str(exe)]
    subprocess.run(cmd, check=True)
    return exe


def run(driver, *args) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(driver), *map(str, args)], capture_output=True, text=True, timeout=60)
    # A sanitizer report means undefined behaviour or a memory error: never acceptable, even on bad input.
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr
    return proc


def expect_error(driver, *args) -> str:
    proc = run(driver, *args)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# --- .npy --------------------------------------------------------------------------------------------

SHAPES = [(), (0,), (7,), (2, 3), (4, 0, 2), (1, 3, 5, 7), (2, 1, 1, 3, 2)]
DTYPES = [np.float32, np.float16, np.int32, np.int64, np.uint8, np.int8, np.bool_]


def _random(rng, shape, dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return (rng.standard_normal(shape) * 100).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


@needs_gxx
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_npy_round_trip_of_files_numpy_wrote(driver, tmp_path, rng, dtype):
    for i, shape in enumerate(SHAPES):
        array = _random(rng, shape, dtype)
        version = [(1, 0), (2, 0), (3, 0)][i % 3]
        source, copy = tmp_path / f"in{i}.npy", tmp_path / f"out{i}.npy"
        with open(source, "wb") as f:
            np.lib.format.write_array(f, array, version=version)
        proc = run(driver, "copy", source, copy)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [np.dtype(dtype).name, "x".join(map(str, shape)) or "scalar"]
        back = np.load(copy)
        assert back.dtype == array.dtype and back.shape == array.shape and back.flags.c_contiguous
        assert back.tobytes() == array.tobytes()  # bit-exact, NaN payloads included
        # The header is padded as numpy pads it: the data starts on a 64-byte boundary.
        with open(copy, "rb") as f:
            assert np.lib.format.read_magic(f) == (1, 0)
            np.lib.format.read_array_header_1_0(f)
            assert f.tell() % 64 == 0


@needs_gxx
def test_npy_values_are_read_as_numpy_reads_them(driver, tmp_path, rng):
    """Every element widened to float64 by the C++ reader equals numpy's own widening, bit for bit:
    fp16 subnormals, signed zeros, infinities and the extremes of every integer type included."""
    special16 = np.array([0.0, -0.0, 6e-8, -6e-8, 6.1e-5, 65504, -65504, np.inf, -np.inf, 1 / 3], np.float16)
    arrays = {
        "f16": np.concatenate([special16, rng.standard_normal(40).astype(np.float16)]),
        "f32": np.concatenate([np.array([1e-45, -3.4e38, np.inf, -0.0], np.float32),
                               (rng.standard_normal(40) * 1e3).astype(np.float32)]),
        "i64": np.array([np.iinfo(np.int64).min + 1, -1, 0, 2**53], np.int64),
        "i32": rng.integers(-2**31, 2**31 - 1, 50, dtype=np.int32),
        "u8": rng.integers(0, 255, 20, dtype=np.uint8, endpoint=True),
        "b1": rng.integers(0, 2, 20).astype(bool),
    }
    for name, array in arrays.items():
        path = tmp_path / f"{name}.npy"
        np.save(path, array.reshape(2, -1))
        proc = run(driver, "values", path)
        assert proc.returncode == 0, proc.stderr
        got = np.array([float(v) for v in proc.stdout.split()])
        want = array.astype(np.float64)
        assert got.tobytes() == want.tobytes(), name


@needs_gxx
def test_npy_nan_is_read_as_nan(driver, tmp_path):
    np.save(tmp_path / "nan.npy", np.array([np.nan, 1.5], np.float16))
    values = run(driver, "values", tmp_path / "nan.npy").stdout.split()
    assert math.isnan(float(values[0])) and float(values[1]) == 1.5


def _npy_bytes(array: np.ndarray) -> bytes:
    import io
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _with_header(header: str, data: bytes = b"") -> bytes:
    header = header + " " * (-(10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + data


@needs_gxx
def test_npy_bad_files_are_errors_not_crashes(driver, tmp_path, rng):
    good = _npy_bytes(rng.standard_normal((3, 4)).astype(np.float32))
    header_end = good.index(b"\n") + 1
    cases = {
        "empty": (b"", "not a .npy file"),
        "text": (b"hello, world\n" * 4, "not a .npy file"),
        "wrong magic": (b"\x93NUMPX" + good[6:], "not a .npy file"),
        "cut in magic": (good[:4], "not a .npy file"),
        "cut in length": (good[:9], "truncated .npy header"),
        "cut in header": (good[:40], "truncated .npy header"),
        "cut in data": (good[:header_end + 20], "truncated .npy data: 3x4 float32 needs 48 bytes, the file has 20"),
        "trailing bytes": (good + b"\0" * 4, "trailing bytes in .npy data"),
        "version 4.0": (good[:6] + b"\x04\x00" + good[8:], "unsupported .npy format version 4.0"),
        "fortran order": (_npy_bytes(np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32))),
                          "Fortran-order arrays are not supported"),
        "big endian": (_npy_bytes(rng.standard_normal(4).astype(">f4")), "unsupported dtype '>f4'"),
        "complex": (_npy_bytes(rng.standard_normal(4).astype(np.complex64)), "unsupported dtype '<c8'"),
        "float64": (_npy_bytes(rng.standard_normal(4)), "unsupported dtype '<f8'"),
        "object": (_with_header("{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", b"\0" * 8),
                   "unsupported dtype '|O'"),
        "shape without comma": (_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (4), }", b"\0" * 16),
                                "malformed header (expected ',' in the shape tuple"),
        "negative dim": (_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-4,), }"),
                         "malformed header (expected a non-negative integer in the shape"),
        "huge dims": (_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"),
                      "has too many elements"),
        "petabytes announced": (_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1073741824, 1048576), }"),
                                "truncated .npy data: 1073741824x1048576 float32 needs 4503599627370496 bytes, the file has 0"),
        "dim overflow": (_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }"),
                         "shape dimension too large"),
        "missing key": (_with_header("{'descr': '<f4', 'shape': (1,), }", b"\0" * 4),
                        "the header needs 'descr', 'fortran_order' and 'shape'"),
        "repeated key": (_with_header("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (), }"),
                         "unexpected or repeated key 'descr'"),
        "unknown key": (_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (), 'x': 1}"),
                        "unexpected or repeated key 'x'"),
        "not a dict": (_with_header("['descr', '<f4']"), "malformed header (expected '{'"),
        "text after dict": (_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (), } junk"),
                            "unexpected text after the header dict"),
        "bad bool": (_with_header("{'descr': '<f4', 'fortran_order': 0, 'shape': (), }"), "expected True or False"),
        "unterminated": (_with_header("{'descr': '<f4"), "unterminated string"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / "bad.npy"
        path.write_bytes(content)
        line = expect_error(driver, "copy", path, tmp_path / "out.npy")
        assert line.startswith(f"error: {path}: ") and message in line, (name, line)
        assert not (tmp_path / "out.npy").exists()
    assert "cannot open" in expect_error(driver, "copy", tmp_path / "missing.npy", tmp_path / "out.npy")
    assert expect_error(driver, "copy", tmp_path, tmp_path / "out.npy") == f"error: {tmp_path} is not a regular file"


@needs_gxx
def test_npy_random_corruption_never_crashes(driver, tmp_path, rng):
    """Random byte flips and cuts of valid files: the reader answers with a value or an error, and the
    sanitizers see no out-of-bounds access or undefined behaviour."""
    sources = [_npy_bytes(rng.standard_normal(s).astype(t)) for s, t in [((2, 3), np.float32), ((5,), np.float16)]]
    for i in range(40):
        content = bytearray(sources[i % 2])
        for _ in range(int(rng.integers(1, 4))):
            content[int(rng.integers(0, 80))] = int(rng.integers(0, 256))
        if i % 3 == 0:
            content = content[:int(rng.integers(0, len(content)))]
        path = tmp_path / f"fuzz{i}.npy"
        path.write_bytes(bytes(content))
        proc = run(driver, "copy", path, tmp_path / "out.npy")
        assert proc.returncode in (0, 1), proc.stderr
        if proc.returncode == 1:
            assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


# --- comparison ----------------------------------------------------------------------------------------

def _float64_errors(output: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    diff = np.abs(output.astype(np.float64) - reference.astype(np.float64))
    return float(diff.max()), float(diff.max() / np.abs(reference.astype(np.float64)).max())


def _compare(driver, tmp_path, output, reference) -> dict:
    np.save(tmp_path / "out.npy", output)
    np.save(tmp_path / "ref.npy", reference)
    proc = run(driver, "compare", tmp_path / "out.npy", tmp_path / "ref.npy")
    assert proc.returncode == 0, proc.stderr
    return {k: float(v) for k, v in (item.split("=") for item in proc.stdout.split())}


@needs_gxx
def test_compare_matches_a_float64_computation(driver, tmp_path, rng):
    reference = (rng.standard_normal((2, 8, 5, 6)) * 3).astype(np.float32)
    for output in [reference + (rng.standard_normal(reference.shape) * 1e-3).astype(np.float32),
                   reference.astype(np.float16)]:  # an fp16 engine output against the fp32 reference
        got = _compare(driver, tmp_path, output, reference)
        max_abs, max_rel = _float64_errors(output, reference)
        assert got["max_abs"] == max_abs and got["max_rel"] == pytest.approx(max_rel, rel=1e-15)
        assert got["scale"] == float(np.abs(reference).max())
        assert got["finite"] == 1 and got["same_shape"] == 1


@needs_gxx
def test_compare_flags_non_finite_outputs_and_shape_mismatch(driver, tmp_path, rng):
    reference = rng.standard_normal((3, 4)).astype(np.float32)
    broken = reference.copy()
    broken[1, 2] = np.nan
    assert _compare(driver, tmp_path, broken, reference)["finite"] == 0
    assert _compare(driver, tmp_path, reference[:, :3].copy(), reference)["same_shape"] == 0
    zeros = np.zeros((2, 2), np.float32)
    assert _compare(driver, tmp_path, zeros + np.float32(1e-3), zeros)["max_rel"] == math.inf


# --- sidecar -------------------------------------------------------------------------------------------

def _write_sidecar(engine: Path, **overrides) -> None:
    """Written by the Python writer the runtime must agree with (exporter/engine_meta.py)."""
    values = dict(
        deformrt_version="0.1.0", tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7",
        precision="fp16", fp16_method="deformrt",
        profiles=[ShapeProfile("images", (1, 3, 320, 320), (1, 3, 800, 1344), (4, 3, 1344, 1344))],
        onnx_path="model.onnx", onnx_sha256="ab" * 32, onnx_metadata={"deformrt.body": "R-50-FPN"},
        plugin_path="/opt/deformrt/libdeformrt_plugin.so")
    values.update(overrides)
    engine.write_bytes(b"engine")
    Path(str(engine) + ".json").write_text(EngineMeta(**values).to_json())


@needs_gxx
def test_sidecar_written_by_python_is_accepted_on_the_same_platform(driver, tmp_path):
    engine = tmp_path / "model.plan"
    _write_sidecar(engine)
    proc = run(driver, "sidecar", engine, "10.3.0", "8.7", "Orin")
    assert proc.stdout.strip() == "ok precision=fp16 plugin=/opt/deformrt/libdeformrt_plugin.so same_gpu=1"
    # Another GPU of the same compute capability loads (the caller warns); the build number is ignored.
    proc = run(driver, "sidecar", engine, "10.3.0.26", "8.7", "Jetson AGX Orin")
    assert proc.stdout.strip().endswith("same_gpu=0")
    _write_sidecar(engine, plugin_path=None, precision="fp32")
    assert run(driver, "sidecar", engine, "10.3.0", "8.7", "Orin").stdout.strip() == "ok precision=fp32 plugin= same_gpu=1"


@needs_gxx
def test_sidecar_mismatch_is_a_clear_error(driver, tmp_path):
    engine = tmp_path / "model.plan"
    _write_sidecar(engine)
    assert expect_error(driver, "sidecar", engine, "10.13.3", "8.7", "Orin") == (
        f"error: {engine} was built with TensorRT 10.3.0.30, this is TensorRT 10.13.3; engines only load in the "
        "release that built them: rebuild the engine here")
    assert expect_error(driver, "sidecar", engine, "10.3.0", "8.6", "NVIDIA GeForce RTX 3090") == (
        f"error: {engine} was built for Orin (compute capability 8.7), this GPU is NVIDIA GeForce RTX 3090 "
        "(compute capability 8.6): rebuild the engine on this GPU")
    missing = tmp_path / "other.plan"
    assert expect_error(driver, "sidecar", missing, "10.3.0", "8.7", "Orin").startswith(
        f"error: {missing} has no sidecar {missing}.json")


@needs_gxx
def test_malformed_sidecars_are_errors_not_crashes(driver, tmp_path):
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"engine")
    good = json.loads(EngineMeta(
        deformrt_version="0.1.0", tensorrt_version="10.3.0", gpu_name="Orin", compute_capability="8.7",
        precision="fp16", profiles=[], onnx_path="m.onnx", onnx_sha256="0", onnx_metadata={}).to_json())
    text = json.dumps(good)
    cases = {
        "": "invalid JSON: unexpected end of input (line 1, column 1)",
        text[:-1]: "invalid JSON: expected ',' or '}'",
        text[:len(text) // 2]: "invalid JSON",
        text.replace('"schema": 1,', '"schema": 1,,'): "invalid JSON: expected a string key",
        text[:-1] + ",}": "invalid JSON: expected a string key",
        text + " x": "invalid JSON: unexpected text after the JSON value",
        "[" * 100000: "invalid JSON: nested deeper than 64 levels",
        '{"a": "\\q"}': "invalid JSON: unknown escape \\q",
        '{"a": "\\ud800"}': "invalid JSON: unpaired surrogate",
        '{"a": "\\u12"}': "invalid JSON: bad hex digit",
        '{"a": 01}': "invalid JSON: expected a value (line 1, column 7)",
        '{"a": 1.}': "invalid JSON: expected digits after '.'",
        '{"a": tru}': "invalid JSON: expected a value",
        '{"a": "x\ny"}': "invalid JSON: control character in a string",
        '{"a": 1, "a": 2}': 'invalid JSON: repeated key "a"',
        "[1, 2]": "not a JSON object",
        json.dumps({**good, "schema": 2}): "sidecar schema 2; this runtime reads schema 1",
        json.dumps({k: v for k, v in good.items() if k != "schema"}): "sidecar schema missing",
        json.dumps({k: v for k, v in good.items() if k != "compute_capability"}):
            'missing or non-string field "compute_capability"',
        json.dumps({**good, "tensorrt_version": 10}): 'missing or non-string field "tensorrt_version"',
        json.dumps({**good, "precision": "int8"}): 'precision "int8" is not one of fp32, tf32, fp16',
        json.dumps({**good, "plugin_path": 3}): '"plugin_path" is neither a string nor null',
    }
    for content, message in cases.items():
        Path(str(engine) + ".json").write_text(content)
        line = expect_error(driver, "sidecar", engine, "10.3.0", "8.7", "Orin")
        assert line.startswith(f"error: {engine}.json: ") and message in line, (content[:60], line)
    # Escapes that are valid decode correctly (a GPU name beyond ASCII).
    Path(str(engine) + ".json").write_text(json.dumps({**good, "gpu_name": "Orin \u00e9\ud83d\ude00"}))
    assert run(driver, "sidecar", engine, "10.3.0", "8.7", "Orin \u00e9\U0001F600").stdout.endswith("same_gpu=1\n")


@needs_gxx
def test_latency_percentiles_match_numpy(driver, rng):
    times = rng.gamma(4.0, 2.0, 37)
    proc = run(driver, "latency", *(repr(float(t)) for t in times))
    assert proc.returncode == 0, proc.stderr
    got = {k: float(v) for k, v in (item.split("=") for item in proc.stdout.split())}
    for q in (50, 90, 99):
        assert got[f"p{q}"] == pytest.approx(np.percentile(times, q), rel=1e-12)
    assert got["mean"] == pytest.approx(times.mean(), rel=1e-12)
    assert (got["min"], got["max"], got["n"]) == (times.min(), times.max(), 37)
    assert expect_error(driver, "latency", "1.0", "nan") == "error: invalid iteration time nan ms"


# --- the TensorRT part: compiled against every TensorRT header set ------------------------------------

TRT_SOURCES = ["engine.cpp", "pluginLoader.cpp", "tensorrtLogger.cpp", "tensorrtTypes.cpp"]
PROGRAMS = [PLUGINS / "runtime" / "tools" / "deformrtRun.cpp", PLUGINS / "runtime" / "example" / "runOnDeviceBuffers.cpp"]
# The only TensorRT symbols the runtime may need from libnvinfer: everything else in TensorRT's C++ API
# is inline in the headers, calling through the objects these entry points return.
TENSORRT_ENTRY_POINTS = {"createInferRuntime_INTERNAL", "getInferLibVersion", "getPluginRegistry"}


def _symbols(objects: list[Path], *flags: str) -> set[str]:
    out = subprocess.run(["nm", *flags, *map(str, objects)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip() and not line.endswith(":")}


def _compile_all(jobs: list[list[str]]) -> None:
    """Two compilers at a time (the CI machine has two cores)."""
    for i in range(0, len(jobs), 2):
        procs = [subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) for cmd in jobs[i:i + 2]]
        for cmd, proc in zip(jobs[i:i + 2], procs):
            _, err = proc.communicate()
            assert proc.returncode == 0, f"{' '.join(cmd)}\n{err}"


def _cxx(source: Path, obj: Path, *includes: Path) -> list[str]:
    return ["g++", "-std=c++17", "-O0", "-fPIC", "-Wall", "-Wextra", "-Werror", "-c", f"-I{PLUGINS / 'include'}",
            f"-I{RUNTIME_SRC}", *(f"-isystem{i}" for i in includes), str(source), "-o", str(obj)]


# --- detections: pasting masks and matching sets, against exporter/evaluation/detections.py ------------

def _write_detections(directory: Path, boxes, scores, labels, masks=None, rows=None, count=None) -> Path:
    """One image's detections as a detector file's fixed-size outputs (rows past the count are 0)."""
    directory.mkdir(parents=True, exist_ok=True)
    n = len(scores)
    rows = n if rows is None else rows
    padded = lambda a, dtype: np.concatenate([np.asarray(a, dtype).reshape((n,) + np.shape(a)[1:]),  # noqa: E731
                                              np.zeros((rows - n,) + np.shape(a)[1:], dtype)])[None]
    np.save(directory / "num_detections.npy", np.array([[n if count is None else count]], np.int32))
    np.save(directory / "detection_boxes.npy", padded(np.reshape(boxes, (n, 4)), np.float32))
    np.save(directory / "detection_scores.npy", padded(scores, np.float32))
    np.save(directory / "detection_classes.npy", padded(labels, np.int32))
    if masks is not None:
        np.save(directory / "detection_masks.npy", padded(masks, np.float32))
    return directory


def _random_boxes(rng, n: int, height: int, width: int) -> np.ndarray:
    """Boxes of every kind pasting meets: inside, partly or wholly outside the image, tiny (< 1 px),
    inverted (x2 < x1), and large."""
    x1 = rng.uniform(-0.4 * width, 1.1 * width, n)
    y1 = rng.uniform(-0.4 * height, 1.1 * height, n)
    w = np.exp(rng.uniform(np.log(0.05), np.log(2.0 * width), n))
    h = np.exp(rng.uniform(np.log(0.05), np.log(2.0 * height), n))
    boxes = np.stack([x1, y1, x1 + w, y1 + h], 1)
    boxes[::7] = boxes[::7][:, [2, 3, 0, 1]]  # some inverted
    return boxes.astype(np.float32)


@needs_gxx
def test_pasted_masks_equal_the_numpy_paste_mask(driver, tmp_path, rng):
    """Every pixel of the C++ paste equals exporter/evaluation/detections.paste_mask (upstream's
    paste_mask_in_image) on random masks and boxes, tiny and partly outside the image included."""
    from exporter.evaluation.detections import paste_mask

    for trial, (mask_size, height, width, n) in enumerate([(28, 61, 83, 40), (14, 37, 29, 40), (7, 5, 9, 20)]):
        boxes = _random_boxes(rng, n, height, width)
        masks = rng.uniform(0, 1, (n, mask_size, mask_size)).astype(np.float32)
        masks[::5] = np.clip(masks[::5] * 3 - 1, 0, 1)  # some saturated, some exactly 0 or 1
        folder = _write_detections(tmp_path / f"d{trial}", boxes, rng.uniform(0.05, 1, n), rng.integers(1, 81, n),
                                   masks, rows=n + 3)
        out = tmp_path / f"pasted{trial}.npy"
        proc = run(driver, "paste", folder, 0, height, width, out)
        assert proc.returncode == 0, proc.stderr
        got = np.load(out)
        assert got.shape == (n, height, width) and got.dtype == np.uint8
        want = np.stack([paste_mask(m, b, height, width) for m, b in zip(masks, boxes)])
        assert want.any(axis=(1, 2)).sum() >= n // 3  # the boxes do land in the image
        for i in range(n):
            assert np.array_equal(got[i].astype(bool), want[i]), (trial, i, boxes[i], int((got[i] != want[i]).sum()))
    # From the model's input resolution to the original image's, as `deformrt predict` maps boxes.
    in_h, in_w = 48, 64
    scaled = tmp_path / "scaled.npy"
    assert run(driver, "paste", folder, 0, height, width, scaled, in_h, in_w).returncode == 0
    ratio = np.array([width / in_w, height / in_h] * 2, np.float32)
    want = np.stack([paste_mask(m, b * ratio, height, width) for m, b in zip(masks, boxes)])
    assert np.array_equal(np.load(scaled).astype(bool), want)


def _parse_match(stdout: str) -> dict:
    lines = stdout.splitlines()
    pairs = [tuple(map(int, p.split(":"))) for p in lines[1].split()[1:]]
    fields = dict(f.split("=") for f in lines[4].split()[1:])
    return {"pairs": pairs, "unmatched_reference": [int(i) for i in lines[2].split()[1:]],
            "unmatched_other": [int(i) for i in lines[3].split()[1:]], **fields}


@needs_gxx
def test_detection_sets_are_matched_as_the_numpy_match_detections(driver, tmp_path, rng):
    """Engine detections against references as sets: the C++ pairs and leftovers equal numpy's
    match_detections, its counts and errors exporter.deploy.check's (the bundle's Python check) on a
    shuffled, perturbed copy with dropped, added and relabelled detections, near-ties at the score
    threshold, at the fixed size D and at the NMS threshold included."""
    from exporter.deploy.check import check_detection_sets
    from exporter.evaluation.detections import ImageDetections, match_detections

    tol = {"iou": 0.9, "score": 1e-3, "mask": 1e-2, "borderline": 1e-3, "threshold": 0.05, "nms": 0.5}
    for trial in range(6):
        n, capacity = 30, 30 if trial % 2 else 40
        boxes = _random_boxes(rng, n, 200, 300)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 2)
        labels = rng.integers(1, 4, n)
        scores = rng.uniform(0.05, 1, n).astype(np.float32)
        scores[:2] = [0.0504, 0.0512]  # one near the threshold, one not
        # 2 and 3: one class, IoU 0.50009 (legacy widths), 3 suppressed on the other side: an NMS near-tie
        boxes[2], boxes[3] = [10, 10, 49, 49], [23.33, 10, 62.33, 49]
        labels[3], scores[2:4] = labels[2], [0.6, 0.4]
        # 4: kept only here; the other side kept a same-class partner of about its score instead (IoU 0.6)
        boxes[4], scores[4] = [100, 100, 139, 139], 0.7
        masks = rng.uniform(0, 1, (n, 14, 14)).astype(np.float32)
        want = ImageDetections(boxes, scores, labels, masks)
        order = rng.permutation(np.r_[2, 5:n])[: n - 5]  # lost: 0 and 1 (near the threshold), 3 and 4 (NMS), one other
        got_boxes = boxes[order] + rng.normal(0, 0.02, (len(order), 4)).astype(np.float32)
        got_labels = labels[order].copy()
        got_labels[:1] = got_labels[:1] % 3 + 1  # one relabelled
        got_scores = scores[order] + rng.normal(0, 3e-4, len(order)).astype(np.float32)
        got_masks = masks[order] + rng.normal(0, 3e-3, (len(order), 14, 14)).astype(np.float32)
        extra = 2
        partner = np.array([[110, 100, 149, 139]], np.float32)  # IoU 30*40 / (2*1600 - 1200) = 0.6 with box 4
        got = ImageDetections(np.concatenate([got_boxes, _random_boxes(rng, extra, 200, 300), partner]),
                              np.concatenate([got_scores, rng.uniform(0.05, 1, extra), [0.7005]]).astype(np.float32),
                              np.concatenate([got_labels, rng.integers(1, 4, extra), labels[4:5]]),
                              np.concatenate([got_masks, rng.uniform(0, 1, (extra + 1, 14, 14))]).astype(np.float32))
        ref_dir = _write_detections(tmp_path / f"ref{trial}", want.boxes, want.scores, want.labels, want.masks,
                                    rows=capacity)
        out_dir = _write_detections(tmp_path / f"out{trial}", got.boxes, got.scores, got.labels, got.masks,
                                    rows=max(capacity, len(got)))
        proc = run(driver, "match", ref_dir, out_dir, tol["iou"], tol["score"], tol["mask"], tol["borderline"],
                   tol["threshold"], tol["nms"])
        assert proc.returncode == 0, proc.stderr
        got_check = _parse_match(proc.stdout)
        match = match_detections(want, got, tol["iou"])
        assert sorted(got_check["pairs"]) == sorted(match.pairs), trial
        assert sorted(got_check["unmatched_reference"]) == sorted(match.unmatched_reference), trial
        assert sorted(got_check["unmatched_other"]) == sorted(match.unmatched_other), trial
        rule = {"match_iou": tol["iou"], "score_tolerance": tol["score"], "mask_tolerance": tol["mask"],
                "borderline": tol["borderline"], "score_threshold": tol["threshold"], "nms_threshold": tol["nms"]}
        expected = check_detection_sets(0, want, got, rule, capacity)
        without_nms = check_detection_sets(0, want, got, {**rule, "nms_threshold": 0.0}, capacity)
        assert expected.borderline >= without_nms.borderline + 3  # 3, and the swapped pair 4 / partner
        assert (int(got_check["matched"]), int(got_check["borderline"]), int(got_check["unmatched"])) == (
            expected.matched, expected.borderline, expected.unmatched), (trial, got_check, expected)
        for key, value in (("box", expected.max_box_err), ("score", expected.max_score_err),
                           ("mask", expected.max_mask_err)):
            assert float(got_check[key]) == pytest.approx(value, rel=1e-6), (trial, key)
        assert got_check["pass"] == str(int(expected.passed))
        assert expected.unmatched >= 3 and expected.borderline >= 4  # lost/relabelled fail; 0.0504 is a near-tie


@needs_gxx
def test_bad_detector_outputs_and_boxes_are_errors_not_crashes(driver, tmp_path, rng):
    n = 4
    boxes = _random_boxes(rng, n, 40, 50)
    masks = rng.uniform(0, 1, (n, 14, 14)).astype(np.float32)
    good = dict(boxes=boxes, scores=rng.uniform(0.1, 1, n), labels=rng.integers(1, 5, n), masks=masks)
    over = _write_detections(tmp_path / "over", **good, rows=n, count=n + 1)
    assert expect_error(driver, "paste", over, 0, 40, 50, tmp_path / "o.npy") == "error: num_detections[0] is 5.000000, outside 0..4"
    negative = _write_detections(tmp_path / "negative", **good, count=-1)
    assert "outside 0..4" in expect_error(driver, "match", negative, over, 0.9, 1, 1, 0, 0)
    nan_box = _write_detections(tmp_path / "nan", **{**good, "boxes": np.where(np.arange(4) == 1, np.nan, boxes)})
    line = expect_error(driver, "paste", nan_box, 0, 40, 50, tmp_path / "o.npy")
    assert line.startswith("error: detection 0: pasteMask: box (") and "is not finite" in line
    huge = _write_detections(tmp_path / "huge", **{**good, "boxes": boxes * 1e7})
    assert "beyond +-1e6 px" in expect_error(driver, "paste", huge, 0, 40, 50, tmp_path / "o.npy")
    assert "outside 1..65536" in expect_error(driver, "paste", _write_detections(tmp_path / "ok", **good), 0, 0, 50,
                                              tmp_path / "o.npy")
    bad_shape = _write_detections(tmp_path / "shape", **good)
    np.save(bad_shape / "detection_scores.npy", rng.uniform(0, 1, (1, n + 1)).astype(np.float32))
    assert expect_error(driver, "paste", bad_shape, 0, 40, 50, tmp_path / "o.npy") == (
        "error: detector output detection_scores has shape 1x5, expected 1x4")
    no_masks = _write_detections(tmp_path / "nomask", **{**good, "masks": None})
    assert "have no masks" in expect_error(driver, "paste", no_masks, 0, 40, 50, tmp_path / "o.npy")
    assert not (tmp_path / "o.npy").exists()


@pytest.fixture(scope="module")
def tensorrt_free_objects(tmp_path_factory):
    """The runtime's core, deformrt-run and the example include no TensorRT header: compiled once."""
    include = cuda_include()
    if shutil.which("g++") is None or include is None:
        pytest.skip("g++ and CUDA's headers (cuda_runtime_api.h) are needed")
    out = tmp_path_factory.mktemp("runtime-objects")
    core = [(RUNTIME_SRC / s, out / (Path(s).stem + ".o")) for s in CORE_SOURCES]
    programs = [(p, out / (p.stem + ".o")) for p in PROGRAMS]
    _compile_all([_cxx(src, obj, include) for src, obj in core + programs])
    return include, [obj for _, obj in core], [obj for _, obj in programs]


@pytest.fixture(scope="module")
def nvinfer_stub(tmp_path_factory):
    """tests/native/nvinferStub.c as libnvinfer.so (a test double: TensorRT is not installed here)."""
    out = tmp_path_factory.mktemp("nvinfer-stub")
    subprocess.run(["gcc", "-shared", "-fPIC", str(ROOT / "tests" / "native" / "nvinferStub.c"), "-o",
                    str(out / "libnvinfer.so")], check=True)
    return out


def _check_deformrt_run(exe: Path, tmp_path: Path) -> None:
    """What deformrt-run does before it needs TensorRT: arguments, the sidecar, the GPU."""
    def call(*args):
        return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=60)

    assert call("--help").stdout.startswith("usage: deformrt-run ENGINE")
    proc = call("model.plan")
    assert proc.returncode == 1 and proc.stderr.splitlines()[-1] == (
        "error: --inputs DIR is needed (one NAME.npy per engine input)")
    assert call("m.plan", "--inputs", "d", "--check", "r").stderr.splitlines()[-1] == (
        "error: --check needs --tolerance (a detector's: --match-iou, --score-tolerance and --mask-tolerance)")
    assert call("m.plan", "--inputs", "d", "--paste-masks").stderr.splitlines()[-1] == (
        "error: --paste-masks writes pasted_masks.npy and needs --outputs DIR")
    assert call("m.plan", "--inputs", "d", "--image-size", "480").stderr.splitlines()[-1] == (
        "error: --image-size needs HEIGHTxWIDTH (e.g. 480x640), not 480")
    assert call("m.plan", "--inputs", "d", "--match-iou", "nan").stderr.splitlines()[-1] == (
        "error: --match-iou needs a non-negative number, not nan")
    assert call("m.plan", "--warmup", "-1").stderr.splitlines()[-1] == (
        "error: --warmup needs a non-negative integer, not -1")
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"engine")
    proc = call(engine, "--inputs", tmp_path)
    assert proc.returncode == 1 and proc.stderr == (
        f"error: {engine} has no sidecar {engine}.json: it records the TensorRT release and GPU the engine was "
        "built for; rebuild the engine with `deformrt build-engine` or the bundle's build.sh\n")
    Path(f"{engine}.json").write_text('{"schema": 1, "tensorrt_version": "10.3.0"')
    assert call(engine, "--inputs", tmp_path).stderr == (
        f"error: {engine}.json: invalid JSON: expected ',' or '}}' (line 1, column 43)\n")
    proc = call("--platform")
    if proc.returncode == 0:  # a machine with a GPU: the stub's TensorRT version and the real GPU
        assert proc.stdout.startswith("tensorrt_version=10.3.0\ngpu_name=")
    else:
        assert proc.stderr.startswith("error: no usable CUDA GPU: cudaGetDevice failed: ")


@pytest.mark.parametrize("include_dir", header_sets(), ids=header_set_id)
def test_runtime_compiles_against_tensorrt_headers(tensorrt_free_objects, nvinfer_stub, tmp_path, include_dir):
    """Headers-only: the library's TensorRT sources compile warning-free against this release's headers
    and CUDA's. From TensorRT they need exactly three C entry points (everything else of its C++ API
    is inline in the headers), so deformrt-run and the example link against a stub libnvinfer holding
    only those and the real libcudart; deformrt-run then runs up to where TensorRT would be used."""
    cuda, core, programs = tensorrt_free_objects
    objects = [tmp_path / (Path(s).stem + ".o") for s in TRT_SOURCES]
    _compile_all([_cxx(RUNTIME_SRC / s, o, include_dir, cuda) for s, o in zip(TRT_SOURCES, objects)])
    unresolved = _symbols(core + objects, "-u") - _symbols(core + objects, "--defined-only")
    assert {s for s in unresolved if "nvinfer" in s or s in TENSORRT_ENTRY_POINTS} == TENSORRT_ENTRY_POINTS
    assert {"cudaMalloc", "cudaMemcpyAsync", "cudaEventElapsedTime"} <= unresolved
    cuda_lib = next((d for d in (cuda.parent / "lib64", cuda.parent / "lib") if (d / "libcudart.so").exists()), None)
    if cuda_lib is None:
        pytest.skip(f"libcudart.so not found beside {cuda}")
    for program in programs:
        exe = tmp_path / program.stem
        subprocess.run(["g++", str(program), *map(str, core + objects), "-o", str(exe), f"-L{nvinfer_stub}",
                        f"-L{cuda_lib}", "-lnvinfer", "-lcudart", f"-Wl,-rpath,{nvinfer_stub}:{cuda_lib}"], check=True)
    _check_deformrt_run(tmp_path / "deformrtRun", tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("nvcc") is None,
                    reason="cmake and nvcc are needed to configure plugins/")
def test_cmake_builds_runtime_and_programs_against_a_tensorrt_install(tmp_path):
    """plugins/runtime/CMakeLists.txt as build.sh uses it: a TensorRT install (TENSORRT_ROOT: the 10.3
    headers and the stub libnvinfer) gives libdeformrt_runtime.so exporting the public API,
    deformrt-run and deformrt-example beside it, linked to libnvinfer and the shared libcudart."""
    from exporter.trt.plugin_build import cmake_build

    headers = HEADER_SETS_DIR / "10.3.0" / "include"
    if not (headers / "NvInferRuntime.h").is_file():
        pytest.skip(f"TensorRT 10.3 headers not found at {headers}")
    root = tmp_path / "TensorRT-10.3.0"
    (root / "lib").mkdir(parents=True)
    (root / "include").symlink_to(headers)
    subprocess.run(["gcc", "-shared", "-fPIC", str(ROOT / "tests" / "native" / "nvinferStub.c"),
                    "-Wl,-soname,libnvinfer.so.10", "-o", str(root / "lib" / "libnvinfer.so.10")], check=True)
    (root / "lib" / "libnvinfer.so").symlink_to("libnvinfer.so.10")
    build = cmake_build(tmp_path / "build", {"TENSORRT_ROOT": str(root), "CMAKE_CUDA_ARCHITECTURES": "75-real",
                                             "CMAKE_BUILD_TYPE": "Debug"}, ["deformrt-run", "deformrt-example"], jobs=2)
    library = build / "libdeformrt_runtime.so"
    needed = subprocess.run(["readelf", "-d", str(library)], capture_output=True, text=True, check=True).stdout
    assert "libnvinfer.so.10" in needed and "libcudart.so" in needed
    exported = subprocess.run(["nm", "-DC", "--defined-only", str(library)], capture_output=True, text=True,
                              check=True).stdout
    for api in ("deformrt::Engine::load(", "deformrt::readNpy(", "deformrt::writeNpy(", "deformrt::compareTensors(",
                "deformrt::currentPlatform(", "deformrt::readSidecar("):
        assert api in exported, api
    assert (build / "deformrt-example").is_file()
    _check_deformrt_run(build / "deformrt-run", tmp_path)


@needs_gxx
def test_tensorrt_own_plugins_are_registered_once_or_one_warning_says_why(tmp_path):
    """The runtime registers TensorRT's plugins (initLibNvInferPlugins of libnvinfer_plugin.so.<major>, found
    beside libnvinfer) once per process with a logger that outlives every Engine; where the library is
    absent, one warning line says so and what needs it (tests/native/pluginRegistrationDriver.cpp)."""
    cuda = cuda_include()
    if cuda is None or not header_sets():
        pytest.skip("TensorRT and CUDA headers are needed")
    include = next(h for h in header_sets() if h.parent.name.startswith("10."))
    lib = tmp_path / "lib"
    lib.mkdir()
    subprocess.run(["gcc", "-shared", "-fPIC", str(ROOT / "tests" / "native" / "nvinferStub.c"), "-o",
                    str(lib / "libnvinfer.so")], check=True)
    exe = tmp_path / "driver"
    subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{PLUGINS / 'include'}", f"-I{RUNTIME_SRC}",
                    f"-isystem{include}", f"-isystem{cuda}", str(ROOT / "tests" / "native" / "pluginRegistrationDriver.cpp"),
                    str(RUNTIME_SRC / "pluginLoader.cpp"), str(RUNTIME_SRC / "tensorrtLogger.cpp"), "-o", str(exe),
                    f"-L{lib}", "-lnvinfer", f"-Wl,-rpath,{lib}", "-ldl"], check=True)
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}

    absent = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=60)
    assert absent.returncode == 0, absent.stderr
    warnings = [line for line in absent.stdout.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and absent.stdout.splitlines()[-1] == "done", absent.stdout
    assert f"{lib}/libnvinfer_plugin.so.10 or libnvinfer_plugin.so.10 not found" in warnings[0]
    assert "standard-DeformConv flavour need them" in warnings[0]

    subprocess.run(["gcc", "-shared", "-fPIC", str(ROOT / "tests" / "native" / "nvinferPluginStub.c"),
                    "-Wl,-soname,libnvinfer_plugin.so.10", "-o", str(lib / "libnvinfer_plugin.so.10")], check=True)
    present = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=60)
    assert present.returncode == 0, present.stderr
    assert present.stdout.splitlines() == ["initLibNvInferPlugins(logger given, namespace '')", "done"]
