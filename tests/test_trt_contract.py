"""The TensorRT contract, proven without TensorRT: tests/trt_contract/contractHarness.cpp drives the plugin
libraries as TensorRT, its ONNX parser and its tools do, against a stand-in libnvinfer that implements the
documented plugin-registry contract (tests/trt_contract/standinNvinfer.cpp), for every TensorRT header set in
../shared/third_party/tensorrt-headers (and every directory in $TENSORRT_INCLUDE_DIR, ':'-separated).

- Loading: IPluginRegistry::loadLibrary (once, twice), dlopen of the autoload file with TensorRT loaded
  privately, globally or not yet, and a TensorRT of another major.
- Every deformable-conv node of real exports (several bodies, v1 and v2, groups, deformable groups, stride,
  dilation; OHWI weights as exported, and OIHW as older files have them): fields built as the ONNX parser
  builds them, format answers at every position (unchanged by garbage in the later positions), and TensorRT's
  real build and run sequence (several configurations on one instance and a clone, serialisation after a
  configuration that did not win, a lazy onShapeChange before the first enqueue on a clone, two execution
  contexts alternating batch sizes, a refit in place), enqueued on the CPU (the DEFORMRT_PLUGIN_HOST_KERNELS
  variant) in fp32, fp16 and fp16 kHWC8, every output against models.deform_conv2d in float64.
- Malformed field collections and bad calls, under AddressSanitizer and UBSan.

With a real TensorRT: ``TENSORRT_ROOT=/opt/TensorRT pytest tests/test_trt_contract.py`` also runs the
loading, lifecycle and enqueue checks against its libnvinfer (marked ``trt``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from exporter.trt.plugin_build import cmake_build
from models.native import AUTOLOAD_PLUGIN_LIBRARY, PLUGIN_LIBRARY, PLUGINS_DIR
from trt_headers import HEADER_SETS_DIR, cuda_include, header_set_id, header_sets, tensorrt_major

REPO = Path(__file__).resolve().parent.parent
HARNESS_DIR = Path(__file__).resolve().parent / "trt_contract"
SANITIZERS = "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CXX = shutil.which("c++") or shutil.which("g++")
HEADER_SETS = header_sets()
CUDA_INCLUDE = cuda_include()


def _newest_header_set() -> Path:
    return max(HEADER_SETS, key=lambda p: (tensorrt_major(p), header_set_id(p)))


pytestmark = [
    pytest.mark.skipif(CXX is None or shutil.which("cmake") is None, reason="a C++ compiler and cmake are needed"),
    pytest.mark.skipif(not HEADER_SETS, reason=f"no TensorRT headers in {HEADER_SETS_DIR} or $TENSORRT_INCLUDE_DIR"),
    pytest.mark.skipif(CUDA_INCLUDE is None, reason="no CUDA headers (cuda_runtime_api.h; TensorRT's headers need it)"),
]


def _compile(sources: list[Path], out: Path, include: Path, *, shared: bool, flags: str = "", soname: str = "",
             defines: tuple[str, ...] = (), libs: tuple[str, ...] = ()) -> Path:
    cmd = [CXX, "-std=c++17", "-Wall", "-Wextra", "-Wno-deprecated-declarations",
           "-I", str(PLUGINS_DIR / "include"), "-I", str(PLUGINS_DIR / "src"),
           "-isystem", str(include), "-isystem", str(CUDA_INCLUDE), *flags.split(), *[f"-D{d}" for d in defines]]
    if shared:
        cmd += ["-shared", "-fPIC", "-fvisibility=hidden"] + ([f"-Wl,-soname,{soname}"] if soname else [])
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd += [*map(str, sources), "-o", str(out), *libs, "-ldl"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"compiling {out.name} failed:\n{' '.join(cmd)}\n{proc.stderr[-6000:]}"
    return out


@dataclass
class ContractBuild:
    """Everything one header set needs: the stand-in libnvinfer (and one that reports another major), the
    plugin's two files built against it (host kernels) and the harness."""

    include: Path
    nvinfer: Path
    wrong_major_nvinfer: Path | None  # the stand-in built to report another major
    plugin_dir: Path
    harness: Path

    def run(self, *args, env=None, check=True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(self.harness), *map(str, args)], capture_output=True, text=True, timeout=300,
                              env=env)
        if check:
            assert proc.returncode == 0, f"harness {' '.join(map(str, args[:2]))} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc


def _gpu_available() -> bool:
    return torch.cuda.is_available() and shutil.which("nvcc") is not None


def _cuda_arch() -> str:
    major, minor = torch.cuda.get_device_capability()
    return f"{major}{minor}-real"


def build_contract(out: Path, include: Path, *, sanitize: bool = False, tensorrt_root: Path | None = None,
                   cuda: bool = False) -> ContractBuild:
    """Build the stand-in, the plugin (against a TensorRT root made of ``include`` and the stand-in, so that
    CMake finds and links "libnvinfer" as with a real install) and the harness; in parallel where possible.
    The sanitized build is for the fuzzing and the headers-only autoload file: unoptimised (quicker to compile)
    and configured with the headers alone (no libnvinfer to link, as `deformrt build-plugin --tensorrt-include-dir`).
    ``cuda``: the plugin with its CUDA kernels for this machine's GPU, and a harness that enqueues on device copies."""
    # The harness compiles slowly and runs little: unoptimised. The plugin's host kernels run every node: -O2.
    flags = f"-O0 -g {SANITIZERS}" if sanitize else "-O0"
    major = tensorrt_major(include)
    soname = f"libnvinfer.so.{major}"
    if tensorrt_root is None:
        root = out / "tensorrt"
        (root / "lib").mkdir(parents=True, exist_ok=True)
        if not (root / "include").exists():
            (root / "include").symlink_to(include)
        nvinfer = _compile([HARNESS_DIR / "standinNvinfer.cpp"], root / "lib" / soname, include, shared=True,
                           flags=flags if sanitize else "-O0", soname=soname)
    else:
        root, nvinfer = tensorrt_root, next(p for p in (tensorrt_root / "lib").glob(f"{soname}*") if p.is_file())
    options = {"TENSORRT_ROOT": str(root), "DEFORMRT_PLUGIN_HOST_KERNELS": "ON", "DEFORMRT_BUILD_CUDA": "OFF",
               "CMAKE_BUILD_TYPE": "Release", "Python3_EXECUTABLE": sys.executable}
    targets = ["deformrt_plugin", "deformrt_plugin_autoload"]
    harness_defines, harness_libs = (), ()
    if cuda:
        cuda_lib = CUDA_INCLUDE.parent / "lib64"
        options.update(DEFORMRT_PLUGIN_HOST_KERNELS="OFF", DEFORMRT_BUILD_CUDA="ON", CMAKE_CUDA_ARCHITECTURES=_cuda_arch())
        harness_defines, harness_libs = ("HARNESS_CUDA=1",), (f"-L{cuda_lib}", f"-Wl,-rpath,{cuda_lib}", "-lcudart")
    if sanitize:
        options.update(CMAKE_BUILD_TYPE="Debug", CMAKE_CXX_FLAGS=SANITIZERS, CMAKE_SHARED_LINKER_FLAGS=SANITIZERS,
                       TENSORRT_ROOT="", TENSORRT_INCLUDE_DIR=str(include))
    with ThreadPoolExecutor(2) as pool:
        plugin = pool.submit(cmake_build, out / "plugin", options, targets, 2)
        harness = pool.submit(_compile, [HARNESS_DIR / "contractHarness.cpp"], out / "contractHarness", include,
                              shared=False, flags=flags, defines=harness_defines, libs=harness_libs)
        wrong = None
        if not sanitize and tensorrt_root is None:
            wrong = _compile([HARNESS_DIR / "standinNvinfer.cpp"], out / "wrong-major" / soname, include, shared=True,
                             flags="-O0", soname=soname, defines=(f"STANDIN_REPORTED_MAJOR={major + 1}",))
        plugin_dir = plugin.result()
        return ContractBuild(include, nvinfer, wrong, plugin_dir, harness.result())


@pytest.fixture(scope="session", params=HEADER_SETS, ids=header_set_id)
def contract(request, tmp_path_factory) -> ContractBuild:
    return build_contract(tmp_path_factory.mktemp(f"trt-contract-{request.param.parent.name}"), request.param)


# ---------------------------------------------------------------------------------------------------------------
# Loading


def test_plugin_files_export_what_their_loaders_call(contract):
    def dynamic_symbols(path: Path) -> set[str]:
        out = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True)
        return {line.split()[-1] for line in out.stdout.splitlines() if " T " in line}

    def needed(path: Path) -> list[str]:
        out = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
        return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+)\]", out)

    dynamic, autoload = contract.plugin_dir / PLUGIN_LIBRARY, contract.plugin_dir / AUTOLOAD_PLUGIN_LIBRARY
    assert {"getCreators", "setLoggerFinder"} <= dynamic_symbols(dynamic)
    assert not any("nvinfer" in lib for lib in needed(dynamic)), "TensorRT itself loads libdeformrt_plugin.so"
    # A TensorRT library was found at build time (the stand-in's root), so the autoload file depends on it.
    assert f"libnvinfer.so.{tensorrt_major(contract.include)}" in needed(autoload)
    assert "getCreators" not in dynamic_symbols(autoload), "loadLibrary must not take the self-registering file"


@pytest.mark.parametrize("scenario", ["loadlibrary", "loadlibrary-twice", "autoload-private", "autoload-global",
                                      "autoload-not-yet"])
def test_every_way_of_loading_registers_one_usable_creator(contract, scenario):
    # No library path for "not yet": the autoload file's DT_NEEDED (and RUNPATH) must bring libnvinfer in.
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    proc = contract.run("load", scenario, contract.nvinfer, contract.plugin_dir, env=env)
    if scenario == "loadlibrary-twice":
        assert "already registered" in proc.stdout, "the second loadLibrary is refused, and the reason logged"


def test_the_stand_in_catches_a_registration_made_while_loadlibrary_loads(contract, tmp_path):
    """The harness's own check: a library that registers from a static initialiser (as the plugin once did)."""
    _compile([HARNESS_DIR / "misbehavingPlugin.cpp"], tmp_path / PLUGIN_LIBRARY, contract.include, shared=True,
             flags="-O0")
    proc = contract.run("load", "loadlibrary", contract.nvinfer, tmp_path, check=False)
    assert proc.returncode != 0
    assert "registerCreator was called while loadLibrary was loading a plugin library" in proc.stdout
    assert "already registered: the library is refused" in proc.stdout


@pytest.mark.parametrize("how", ["loadlibrary", "autoload"])
def test_a_tensorrt_of_another_major_is_refused_with_one_log_line(contract, how):
    proc = contract.run("load", f"wrong-major-{how}", contract.wrong_major_nvinfer, contract.plugin_dir)
    major = tensorrt_major(contract.include)
    lines = [line for line in proc.stderr.splitlines() if "the plugin is not registered" in line]
    assert len(lines) == 1, proc.stderr
    assert f"built for TensorRT {major}" in lines[0] and f"reports TensorRT {major + 1}." in lines[0]


# ---------------------------------------------------------------------------------------------------------------
# Exported nodes: parser fields, lifecycle, enqueue


def _dcn_nodes(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    from exporter.onnx.op_contract import OP_NAME
    return [n for n in proto.graph.node if n.op_type == OP_NAME]


def _exports() -> list[tuple[str, onnx.ModelProto]]:
    """Small real exports covering v1 and v2, groups, deformable groups, stride and dilation."""
    from exporter.onnx import passes as graph_passes, schema as onnx_schema
    from exporter.onnx.export import ExportOptions, build_model, export_model, load_config, prepare_for_export, trace_to_onnx
    from models.layers import DFConv2d

    static = dict(dynamic=False, batch=1)
    bodies = [
        # DCNv2 (the frozen BN folded into a bias) in res3, stride 1 (C4).
        ("R-50-C4", ["MODEL.RESNETS.STAGE_WITH_DCN", "(False, True, False, False)",
                     "MODEL.RESNETS.WITH_MODULATED_DCN", "True"], (32, 32)),
        # DCNv1, ResNeXt groups, 2 deformable groups, the stride in the 3x3 (first res5 block).
        ("R-50-FPN", ["MODEL.RESNETS.STAGE_WITH_DCN", "(False, False, False, True)", "MODEL.RESNETS.NUM_GROUPS", "2",
                      "MODEL.RESNETS.WIDTH_PER_GROUP", "8", "MODEL.RESNETS.DEFORMABLE_GROUPS", "2",
                      "MODEL.RESNETS.STRIDE_IN_1X1", "False"], (64, 64)),
    ]
    exports = []
    for body, opts, size in bodies:
        built = build_model(load_config(body, None, opts), seed=3)
        exports.append((body, export_model(built, ExportOptions(dcn_op="plugin", input_size=size, **static))))
    # No body has a dilated DCN: one DFConv2d (v2, dilation 2, groups 2, 2 deformable groups, stride 2) through
    # the same trace and graph passes.
    torch.manual_seed(4)
    layer = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1),  # the exporter's input has 3 channels
                                DFConv2d(8, 6, stride=2, groups=2, dilation=2, deformable_groups=2, modulated=True))
    layer.eval()
    proto = trace_to_onnx(prepare_for_export(layer), ["y"], ExportOptions(input_size=(32, 32), **static), 1)
    graph_passes.cleanup(proto)
    graph_passes.to_onnx_op(proto)
    onnx_schema.register()
    graph_passes.to_plugin_op(proto)
    exports.append(("DFConv2d-dilated", proto))
    return exports


_ONNX_TYPES = {onnx.AttributeProto.INT: "INT", onnx.AttributeProto.INTS: "INTS", onnx.AttributeProto.FLOAT: "FLOAT",
               onnx.AttributeProto.FLOATS: "FLOATS", onnx.AttributeProto.STRING: "STRING"}


def _attr_line(a: onnx.AttributeProto) -> str:
    kind = _ONNX_TYPES[a.type]
    if kind == "INT":
        return f"attr {a.name} INT {a.i}"
    if kind == "INTS":
        return f"attr {a.name} INTS {len(a.ints)} {' '.join(map(str, a.ints))}"
    if kind == "FLOAT":
        return f"attr {a.name} FLOAT {a.f!r}"
    if kind == "FLOATS":
        return f"attr {a.name} FLOATS {len(a.floats)} {' '.join(map(repr, a.floats))}"
    return f"attr {a.name} STRING {a.s.hex()}"


@dataclass
class NodeCase:
    spec: Path
    inputs: list[torch.Tensor]  # float32, ONNX input order, W in the node's weight layout
    attrs: dict
    attr_types: dict


def _node_attrs(node: onnx.NodeProto) -> dict:
    """The node's attributes as Python values (STRING attributes decoded)."""
    values = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _with_oihw_weight(node: onnx.NodeProto, weight: torch.Tensor) -> tuple[onnx.NodeProto, torch.Tensor]:
    """The node as a file from before weight_layout has it: no attribute (OIHW, the default), the weight OIHW."""
    from exporter.onnx import op_contract as oc
    legacy = onnx.NodeProto()
    legacy.CopyFrom(node)
    kept = [a for a in legacy.attribute if a.name != "weight_layout"]
    del legacy.attribute[:]
    legacy.attribute.extend(kept)
    return legacy, oc.weight_to_oihw(weight, oc.weight_layout(_node_attrs(node))).contiguous()


def _write_node_specs(out: Path) -> list[NodeCase]:
    from exporter.onnx.op_contract import input_names
    cases = []
    gen = torch.Generator().manual_seed(20261202)
    for model_name, proto in _exports():
        inferred = onnx.shape_inference.infer_shapes(proto)
        shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
                  for vi in list(inferred.graph.value_info) + list(inferred.graph.input)}
        weights = {t.name: torch.from_numpy(onnx.numpy_helper.to_array(t).copy()) for t in proto.graph.initializer}
        nodes = list(_dcn_nodes(proto))
        # Each node as exported (OHWI weight), and the first of each model as an older file has it (OIHW).
        variants = [(i, n, None) for i, n in enumerate(nodes)] + [(0, nodes[0], "oihw")]
        for index, exported_node, legacy in variants:
            node = exported_node
            attrs = _node_attrs(node)
            names = input_names(bool(attrs["has_bias"]), bool(attrs["modulated"]))
            inputs = []
            for role, name in zip(names, node.input):
                if name in weights:  # the node's real weights and bias
                    tensor = weights[name].float()
                    if legacy and role == "W":
                        node, tensor = _with_oihw_weight(exported_node, tensor)
                    inputs.append(tensor)
                    continue
                shape = [2] + shapes[name][1:]  # batch 2; fresh random values, never zeros
                if role == "offset":
                    inputs.append(torch.randn(shape, generator=gen) * 2.5)  # samples land pixels away, some outside
                elif role == "mask":
                    inputs.append(torch.rand(shape, generator=gen))
                else:
                    inputs.append(torch.randn(shape, generator=gen))
            stem = f"{model_name}-{index}" + (f"-{legacy}" if legacy else "")
            attrs = _node_attrs(node)
            lines = [f"name {model_name}/{node.name or index}{'-' + legacy if legacy else ''}", f"op {node.op_type}"]
            lines += [_attr_line(a) for a in node.attribute]
            for i, t in enumerate(inputs):
                file = f"{stem}.in{i}"
                t.contiguous().numpy().astype("<f4").tofile(out / file)
                lines.append(f"input {t.dim()} {' '.join(map(str, t.shape))} {file}")
            expected = _reference(inputs, attrs, torch.float64)
            lines.append(f"output 4 {' '.join(map(str, expected.shape))}")
            spec = out / f"{stem}.spec"
            spec.write_text("\n".join(lines) + "\n")
            cases.append(NodeCase(spec, inputs, attrs, {a.name: _ONNX_TYPES[a.type] for a in node.attribute}))
    return cases


def _reference(inputs: list[torch.Tensor], attrs: dict, dtype: torch.dtype, absolute: bool = False) -> torch.Tensor:
    """models.deform_conv2d on the node's tensors in ``dtype``; with ``absolute``, on |x|, |W|, |B| (every
    product's magnitude summed: the scale of the rounding errors)."""
    from exporter.onnx import op_contract as oc
    from models import deform_conv2d
    named = dict(zip(oc.input_names(bool(attrs["has_bias"]), bool(attrs["modulated"])), (t.to(dtype) for t in inputs)))
    pads = attrs["pads"]
    assert pads[:2] == pads[2:], "the exporter writes symmetric pads"
    x, w, b = named["X"], oc.weight_to_oihw(named["W"], oc.weight_layout(attrs)), named.get("B")
    if absolute:
        x, w, b = x.abs(), w.abs(), None if b is None else b.abs()
    return deform_conv2d(x, named["offset"], w, b, stride=tuple(attrs["strides"]), padding=tuple(pads[:2]),
                         dilation=tuple(attrs["dilations"]), mask=named.get("mask"))


@pytest.fixture(scope="session")
def node_cases(tmp_path_factory) -> list[NodeCase]:
    return _write_node_specs(tmp_path_factory.mktemp("dcn-nodes"))


def test_exports_cover_the_node_variants(node_cases):
    attrs = [c.attrs for c in node_cases]
    assert {a["modulated"] for a in attrs} == {0, 1}
    # Exported nodes carry their weight channels-last; files from before weight_layout (OIHW) still load.
    assert {a.get("weight_layout", "OIHW (absent)") for a in attrs} == {"OHWI", "OIHW (absent)"}
    assert any(_expects_channels_last(c) for c in node_cases) and not all(_expects_channels_last(c) for c in node_cases)
    assert any(a["group"] > 1 for a in attrs) and any(a["offset_group"] > 1 for a in attrs)
    assert any(max(a["strides"]) > 1 for a in attrs) and any(max(a["dilations"]) > 1 for a in attrs)
    # The parser reads plugin_version / plugin_namespace with ->s(): they must be STRING attributes.
    assert all(c.attr_types["plugin_version"] == c.attr_types["plugin_namespace"] == "STRING" for c in node_cases)


def _variant_inputs(case: NodeCase, batch1: bool, refit: bool) -> list[torch.Tensor]:
    """The node's tensors as a run saw them: the first image only (batch1), the weight negated (refit)."""
    from exporter.onnx.op_contract import input_names
    roles = input_names(bool(case.attrs["has_bias"]), bool(case.attrs["modulated"]))
    inputs = []
    for role, t in zip(roles, case.inputs):
        if batch1 and role in ("X", "offset", "mask"):
            t = t[:1]
        if refit and role == "W":
            t = -t
        inputs.append(t)
    return inputs


def _expects_channels_last(case: NodeCase) -> bool:
    """The contract offers fp16 kHWC8 when the input and output channels are multiples of 8."""
    x, w = case.inputs[0], case.inputs[1]
    return x.shape[1] % 8 == 0 and w.shape[0] % 8 == 0


def _check_against_reference(case: NodeCase, variant: str, batch1: bool = False, refit: bool = False):
    suffix = variant + (".refit" if refit else "") + (".batch1" if batch1 else "")
    got = torch.from_numpy(np.fromfile(f"{case.spec}.{suffix}.out", dtype="<f4")).double()
    inputs = _variant_inputs(case, batch1, refit)
    if variant != "fp32":
        inputs = [t.half().float() for t in inputs]  # what the plugin saw
    expected = _reference(inputs, case.attrs, torch.float64)
    scale = _reference(inputs, case.attrs, torch.float64, absolute=True)  # sum of |products| per output
    got = got.reshape(expected.shape)
    assert torch.isfinite(got).all()
    # fp32: each output sums K = C/groups*kH*kW products (bilinear blends in fp32 too); the rounding error is
    # a few fp32 ulps of the summed magnitudes. fp16: every sampled value and weight is stored in binary16
    # (relative error 2^-11 each) and the output is rounded to binary16 once more.
    if variant == "fp32":
        tolerance = 2.0 ** -18 * scale + 1e-30
    else:
        tolerance = 2.0 ** -9 * scale + 2.0 ** -11 * expected.abs() + 2.0 ** -24
    excess = (got - expected).abs() - tolerance
    assert excess.max() <= 0, (f"{case.spec.name} {suffix}: worst error {(got - expected).abs().max():.3g} "
                               f"exceeds its bound at {int(excess.argmax())}")
    assert expected.abs().max() > 0, "the reference is not trivially zero"


def test_every_exported_node_through_the_parser_lifecycle_and_enqueue(contract, node_cases):
    _run_nodes_and_compare(contract, node_cases)


# ---------------------------------------------------------------------------------------------------------------
# Fuzzing under AddressSanitizer and UBSan (one header set: the newest)


@pytest.fixture(scope="session")
def sanitized_contract(tmp_path_factory) -> ContractBuild:
    include = _newest_header_set()
    return build_contract(tmp_path_factory.mktemp("trt-contract-asan"), include, sanitize=True)


def test_malformed_fields_and_bad_calls_are_refused_with_a_reason(sanitized_contract):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=99",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=98")
    proc = sanitized_contract.run("fuzz", sanitized_contract.nvinfer, sanitized_contract.plugin_dir, env=env, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    cases = int(re.search(r"fuzz cases: (\d+)", proc.stdout).group(1))
    assert cases > 200
    assert "runtime error" not in proc.stderr and "AddressSanitizer" not in proc.stderr


def test_headers_only_autoload_file_loads_tensorrt_by_its_versioned_soname(sanitized_contract):
    autoload = sanitized_contract.plugin_dir / AUTOLOAD_PLUGIN_LIBRARY
    dynamic = subprocess.run(["readelf", "-d", str(autoload)], capture_output=True, text=True, check=True).stdout
    assert "libnvinfer" not in dynamic, "a headers-only build has no libnvinfer to depend on"
    soname_dir = str(sanitized_contract.nvinfer.parent)
    env = dict(os.environ, LD_LIBRARY_PATH=soname_dir, ASAN_OPTIONS="detect_leaks=0")
    sanitized_contract.run("load", "autoload-not-yet", sanitized_contract.nvinfer, sanitized_contract.plugin_dir, env=env)
    # Where the soname cannot be found, nothing is registered and the reason is one line.
    env["LD_LIBRARY_PATH"] = ""
    proc = sanitized_contract.run("load", "autoload-not-yet", sanitized_contract.nvinfer, sanitized_contract.plugin_dir,
                                  env=env, check=False)
    assert proc.returncode != 0 and "FAIL: loading the plugin loaded" in proc.stdout
    assert f"libnvinfer.so.{tensorrt_major(sanitized_contract.include)} cannot be loaded" in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# The CUDA kernels (a GPU) and a real TensorRT


def _run_nodes_and_compare(build: ContractBuild, node_cases: list[NodeCase], env=None):
    """The harness's builder sequence for every node (contractHarness.cpp, runBuilderSequence), then every
    output it wrote against models.deform_conv2d: each winning combination (fp32, fp16, and fp16 kHWC8
    exactly where the channels allow it), at the full batch and at batch 1 in a second context, before and
    after the weight was changed in place."""
    build.run("nodes", build.nvinfer, build.plugin_dir, *[c.spec for c in node_cases], env=env)
    for case in node_cases:
        variants = ["fp32", "fp16"] + (["fp16-hwc8"] if _expects_channels_last(case) else [])
        assert Path(f"{case.spec}.fp16-hwc8.out").exists() == _expects_channels_last(case), case.spec.name
        for variant in variants:
            for batch1 in (False, True):
                for refit in (False, True):
                    _check_against_reference(case, variant, batch1, refit)
        for out in case.spec.parent.glob(f"{case.spec.name}.*.out"):
            os.remove(out)  # the next build writes its own


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_available(), reason="needs an NVIDIA GPU (torch.cuda) and nvcc")
def test_every_exported_node_with_the_cuda_kernels(tmp_path, node_cases):
    include = _newest_header_set()
    _run_nodes_and_compare(build_contract(tmp_path, include, cuda=True), node_cases)


@pytest.mark.trt
@pytest.mark.skipif(not os.environ.get("TENSORRT_ROOT"), reason="set TENSORRT_ROOT to a TensorRT install to run "
                    "the harness against its libnvinfer")
def test_the_harness_against_a_real_tensorrt(tmp_path, node_cases):
    """Loading every way and every node's lifecycle against the real libnvinfer's registry; enqueue runs the
    CUDA kernels when a GPU is present, else the host kernels."""
    root = Path(os.environ["TENSORRT_ROOT"])
    build = build_contract(tmp_path, root / "include", tensorrt_root=root, cuda=_gpu_available())
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    for scenario in ("loadlibrary", "loadlibrary-twice", "autoload-private", "autoload-global", "autoload-not-yet"):
        build.run("load", scenario, build.nvinfer, build.plugin_dir, env=env)
    _run_nodes_and_compare(build, node_cases)
