"""The deploy bundle's build.sh (plugins/deploy/build.sh), without a GPU or TensorRT: its detection of
CUDA, TensorRT, trtexec and the GPU against fake install trees (DEFORMRT_SYSROOT, TENSORRT_ROOT,
CUDA_HOME, a PATH holding only basic tools), with the exact one-line messages; and a whole run with
stand-in tools, checking the trtexec command line, the engine sidecar (read back by
exporter/engine_meta.py) and the self-check call.

The stand-ins (fake nvcc, cmake, trtexec, deformrt-run) implement only what build.sh uses of each:
nvcc --version and `nvcc -o OUT SRC` (OUT then reports the GPU the test chose), cmake -S/-B and --build
(creating the programs build.sh expects), trtexec --saveEngine, deformrt-run --platform and --check."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from cmake_tools import cmake_id, cmakes, configured_cuda_archs
from exporter.trt.sidecar import EngineMeta

ROOT = Path(__file__).resolve().parents[1]
BUILD_SH = ROOT / "plugins" / "deploy" / "build.sh"
HEADERS = ROOT.parent / "shared" / "third_party" / "tensorrt-headers"
# What build.sh and the stand-in tools may call besides the tools build.sh looks for.
BASIC_TOOLS = ["bash", "sed", "head", "tail", "basename", "dirname", "mkdir", "cat", "paste", "tr", "nproc", "cut",
               "sha256sum", "date", "mv", "env", "chmod", "cp"]

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="build.sh needs bash")

# The documented example of the bundle's deploy.conf, as `deformrt deploy` writes it.
CONF = (ROOT / "plugins" / "deploy" / "deploy.conf.example").read_text()


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/bash\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


FAKE_NVCC = r"""
if [ "$1" = --version ]; then echo "Cuda compilation tools, release 12.6, V12.6.68"; exit 0; fi
out=; while [ $# -gt 0 ]; do [ "$1" = -o ] && { out=$2; shift; }; shift; done
# The probe it "compiles" reports the GPU chosen by the test (FAKE_CC), or that there is none.
cat > "$out" <<'EOF'
#!/bin/bash
if [ -z "$FAKE_CC" ]; then echo "no CUDA-capable device is detected" >&2; exit 1; fi
printf 'compute_capability=%s\ngpu_name=%s\n' "$FAKE_CC" "Orin (nvgpu)"
EOF
chmod +x "$out"
"""

FAKE_CMAKE = r"""
echo "cmake $*" >> "$FAKE_LOG"
if [ "$1" = --build ]; then
  cp "$FAKE_RUN" "$2/deformrt-run"; echo plugin > "$2/libdeformrt_plugin.so"
else
  while [ $# -gt 0 ]; do [ "$1" = -B ] && mkdir -p "$2"; shift; done
fi
"""

FAKE_TRTEXEC = r"""
echo "trtexec $*" >> "$FAKE_LOG"
for arg; do case $arg in --saveEngine=*) echo engine > "${arg#--saveEngine=}";; esac; done
"""

FAKE_RUN = r"""
if [ "$1" = --platform ]; then printf 'tensorrt_version=%s\ngpu_name=Orin (nvgpu)\ncompute_capability=8.7\n' "$FAKE_TRT_VERSION"; exit 0; fi
echo "deformrt-run $*" >> "$FAKE_LOG"
echo "${FAKE_VERDICT:-PASS}"; [ "${FAKE_VERDICT:-PASS}" = PASS ]
"""


class Tree:
    """A bundle, a fake system root and a PATH with only basic tools, under tmp_path."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.bundle = tmp_path / "bundle"
        self.sys = tmp_path / "sysroot"
        self.bin = tmp_path / "bin"
        self.build = tmp_path / "build"
        self.log = tmp_path / "tools.log"
        self.bundle.mkdir()
        self.sys.mkdir()
        self.bin.mkdir()
        shutil.copy(BUILD_SH, self.bundle / "build.sh")
        (self.bundle / "deploy.conf").write_text(CONF)
        for tool in BASIC_TOOLS:
            (self.bin / tool).symlink_to(shutil.which(tool))
        self.env = {"PATH": str(self.bin), "DEFORMRT_SYSROOT": str(self.sys), "DEFORMRT_BUILD_DIR": str(self.build),
                    "FAKE_CC": "8.7", "FAKE_LOG": str(self.log), "HOME": str(tmp_path)}

    def nvcc(self, where: Path | None = None) -> Path:
        return _script(where or self.sys / "usr/local/cuda/bin/nvcc", FAKE_NVCC)

    def tensorrt(self, version: str = "10.3.0", *, library: bool = True, trtexec: bool = True,
                 arch: str = "aarch64-linux-gnu", root: Path | None = None) -> None:
        """TensorRT as JetPack installs it (multiarch system folders), or unpacked under `root`.
        NvInferVersion.h is the real header of that release when the shared header sets have it."""
        include = root / "include" if root else self.sys / "usr/include" / arch
        lib = root / "lib" if root else self.sys / "usr/lib" / arch
        include.mkdir(parents=True)
        lib.mkdir(parents=True)
        real = HEADERS / version / "include" / "NvInferVersion.h"
        if real.is_file():
            shutil.copy(real, include / "NvInferVersion.h")
        else:
            major, minor, patch = version.split(".")
            (include / "NvInferVersion.h").write_text(
                f"#define NV_TENSORRT_MAJOR {major} //!< major\n#define NV_TENSORRT_MINOR {minor}\n"
                f"#define NV_TENSORRT_PATCH {patch}\n")
        if library:
            (lib / f"libnvinfer.so.{version.split('.')[0]}").write_bytes(b"\x7fELF")
        if trtexec:
            _script(root / "bin/trtexec" if root else self.sys / "usr/src/tensorrt/bin/trtexec", FAKE_TRTEXEC)

    def cmake(self) -> None:
        _script(self.bin / "cmake", FAKE_CMAKE)

    def complete(self, version: str = "10.3.0") -> "Tree":
        self.nvcc()
        self.tensorrt(version)
        self.cmake()
        return self

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(self.bundle / "build.sh"), *args], capture_output=True, text=True,
                              env={**self.env, **env}, timeout=60)

    def errors(self, *args: str, **env: str) -> list[str]:
        """Exit status 1; the stderr lines, each an `error:` line."""
        proc = self.run(*args, **env)
        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        lines = proc.stderr.splitlines()
        assert lines and all(line.startswith("error: ") for line in lines), proc.stderr
        return lines

    def error(self, *args: str, **env: str) -> str:
        lines = self.errors(*args, **env)
        assert len(lines) == 1, lines
        return lines[0]


@pytest.fixture
def tree(tmp_path):
    return Tree(tmp_path)


JETPACK = "install TensorRT (on Jetson: sudo apt install nvidia-jetpack) or set TENSORRT_ROOT to an unpacked TensorRT release"


NO_NVCC = ("error: nvcc not found on PATH or in {sys}/usr/local/cuda/bin: install the CUDA toolkit (on Jetson: sudo "
           "apt install nvidia-jetpack) or set CUDA_HOME to it")
NO_HEADERS = ("error: TensorRT headers not found (no NvInferVersion.h in {sys}/usr/include/aarch64-linux-gnu or "
              "{sys}/usr/include/x86_64-linux-gnu): " + JETPACK)
NO_TRTEXEC = ("error: trtexec not found (searched TRTEXEC, PATH and {sys}/usr/src/tensorrt/bin): install it (on "
              "Jetson: sudo apt install libnvinfer-bin) or set TRTEXEC to its path")
NO_CMAKE = "error: cmake not found on PATH: install CMake 3.22 or newer (sudo apt install cmake)"
DETECTED_KEYS = ["nvcc", "cuda_version", "tensorrt_version", "tensorrt_major", "tensorrt_include", "tensorrt_lib",
                 "trtexec", "cmake", "compute_capability", "cuda_arch", "gpu_name"]


def test_detect_only_lists_everything_found_and_everything_missing(tree):
    """`./build.sh --detect-only` as typed at the device: every key, empty when missing, and one error
    line per missing prerequisite (not only the first)."""
    proc = tree.run("--detect-only")
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [m.format(sys=tree.sys) for m in (NO_NVCC, NO_HEADERS, NO_TRTEXEC, NO_CMAKE)]
    assert proc.stdout.splitlines() == [f"{key}=" for key in DETECTED_KEYS]

    tree.nvcc()
    tree.tensorrt("10.3.0", library=False, trtexec=False)
    proc = tree.run("--detect-only")
    assert proc.returncode == 1
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert list(found) == DETECTED_KEYS
    assert (found["nvcc"], found["tensorrt_version"], found["compute_capability"], found["cuda_arch"]) == (
        f"{tree.sys}/usr/local/cuda/bin/nvcc", "10.3.0", "8.7", "87")
    assert found["tensorrt_lib"] == found["trtexec"] == found["cmake"] == ""
    assert [line.split(":")[1].strip() for line in proc.stderr.splitlines()] == [
        "TensorRT 10.3.0 headers found in " + f"{tree.sys}/usr/include/aarch64-linux-gnu but not libnvinfer.so.10 in "
        f"{tree.sys}/usr/lib/aarch64-linux-gnu", "trtexec not found (searched TRTEXEC, PATH and "
        f"{tree.sys}/usr/src/tensorrt/bin)", "cmake not found on PATH"]
    # A build (no --detect-only) stops on the same list before building anything.
    assert tree.errors() == proc.stderr.splitlines()
    assert not (tree.build / "plugins").exists()


def test_no_nvcc_names_cuda_home_when_set(tree):
    tree.tensorrt()
    tree.cmake()
    assert tree.error("--detect-only", CUDA_HOME=str(tree.tmp / "cuda")) == (
        f"error: nvcc not found on PATH, in {tree.tmp}/cuda/bin or in {tree.sys}/usr/local/cuda/bin: install the "
        "CUDA toolkit (on Jetson: sudo apt install nvidia-jetpack) or set CUDA_HOME to it")


def test_cuda_but_no_tensorrt(tree):
    tree.nvcc()
    tree.cmake()
    assert tree.errors("--detect-only") == [NO_HEADERS.format(sys=tree.sys), NO_TRTEXEC.format(sys=tree.sys)]


def test_tensorrt_root_without_headers(tree):
    tree.nvcc()
    tree.cmake()
    _script(tree.tmp / "trtexec", "")
    root = tree.tmp / "TensorRT-10.3"
    root.mkdir()
    assert tree.error("--detect-only", TENSORRT_ROOT=str(root), TRTEXEC=str(tree.tmp / "trtexec")) == (
        f"error: TensorRT headers not found (no NvInferVersion.h in {root}/include): set TENSORRT_ROOT to an "
        "unpacked TensorRT release (it has include/ and lib/)")


def test_headers_without_libraries(tree):
    tree.nvcc()
    tree.cmake()
    tree.tensorrt("10.3.0", library=False)
    assert tree.error("--detect-only") == (
        f"error: TensorRT 10.3.0 headers found in {tree.sys}/usr/include/aarch64-linux-gnu but not libnvinfer.so.10 "
        f"in {tree.sys}/usr/lib/aarch64-linux-gnu: install the TensorRT runtime (on Jetson: sudo apt install "
        "nvidia-jetpack; Ubuntu: sudo apt install libnvinfer10) or set TENSORRT_ROOT to a full TensorRT release")


def test_tensorrt_major_the_bundle_was_not_prepared_for(tree):
    tree.nvcc()
    tree.cmake()
    tree.tensorrt("12.0.1")
    assert tree.error("--detect-only") == (
        "error: this machine has TensorRT 12.0.1 but the bundle was prepared for TensorRT 10/11: install one of "
        "those, or make the bundle again with a deformrt that supports TensorRT 12")
    (tree.bundle / "deploy.conf").write_text(CONF.replace("tensorrt_majors=10 11", "tensorrt_majors=11"))
    shutil.rmtree(tree.sys / "usr/include")
    shutil.rmtree(tree.sys / "usr/lib")
    tree.tensorrt("10.13.3")  # the real 10.13 header: NV_TENSORRT_MAJOR names TRT_MAJOR_ENTERPRISE
    assert "this machine has TensorRT 10.13.3 but the bundle was prepared for TensorRT 11:" in tree.error("--detect-only")


def test_no_trtexec(tree):
    tree.nvcc()
    tree.cmake()
    tree.tensorrt(trtexec=False)
    assert tree.error("--detect-only") == (
        f"error: trtexec not found (searched TRTEXEC, PATH and {tree.sys}/usr/src/tensorrt/bin): install it "
        "(on Jetson: sudo apt install libnvinfer-bin) or set TRTEXEC to its path")


def test_no_cmake(tree):
    tree.nvcc()
    tree.tensorrt()
    assert tree.error("--detect-only") == (
        "error: cmake not found on PATH: install CMake 3.22 or newer (sudo apt install cmake)")


def test_no_gpu(tree):
    tree.complete()
    assert tree.error("--detect-only", FAKE_CC="") == (
        "error: no usable CUDA GPU (no CUDA-capable device is detected): check the driver with nvidia-smi, or on a "
        "Jetson run this on the device itself as a user in the video group")


def test_nvcc_that_cannot_compile(tree):
    tree.complete()
    _script(tree.sys / "usr/local/cuda/bin/nvcc",
            '[ "$1" = --version ] && { echo "release 12.6, V12.6.68"; exit 0; }; echo "fatal error" >&2; exit 1\n')
    assert tree.error("--detect-only") == (
        f"error: {tree.sys}/usr/local/cuda/bin/nvcc could not compile a small CUDA program (see "
        f"{tree.build}/cuda-probe.log): repair the CUDA toolkit")


def test_not_in_a_bundle(tree):
    (tree.bundle / "deploy.conf").unlink()
    assert tree.error() == f"error: deploy.conf not found in {tree.bundle}: run build.sh from the unpacked deformrt bundle"


def test_deploy_conf_of_another_format(tree):
    (tree.bundle / "deploy.conf").write_text(CONF.replace("format=1", "format=2"))
    assert tree.error() == ("error: deploy.conf is format '2', this build.sh reads format 1: use the build.sh that "
                            "came with the bundle")


def test_bad_options(tree):
    assert tree.error("--int8") == "error: unknown option --int8 (see ./build.sh --help)"
    assert tree.error("--dcn", "cudnn") == "error: --dcn must be plugin or onnx, not cudnn"


def test_help_as_typed_in_the_bundle(tree):
    """`./build.sh --help` from inside the bundle: the usage block and nothing of the script after it."""
    proc = subprocess.run(["./build.sh", "--help"], cwd=tree.bundle, capture_output=True, text=True, env=tree.env,
                          timeout=60)
    assert proc.returncode == 0 and proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("deformrt bundle: build the plugin")
    assert any("--detect-only" in line for line in lines) and any("--help" in line for line in lines)
    comment_block = []
    for line in BUILD_SH.read_text().splitlines()[1:]:
        if not line.startswith("#"):
            break
        comment_block.append(line[2:] if line.startswith("# ") else line[1:])
    assert lines == comment_block, "the help must be exactly the script's top comment"
    assert not any(word in proc.stdout for word in ("set -euo", "BUNDLE=", "pipefail"))


def _detected(proc: subprocess.CompletedProcess) -> dict[str, str]:
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


@pytest.mark.parametrize("version", ["10.3.0", "10.13.3", "11.1"])
def test_complete_jetpack_tree_is_detected(tree, version):
    tree.complete(version)
    found = _detected(tree.run("--detect-only"))
    assert found == {
        "nvcc": f"{tree.sys}/usr/local/cuda/bin/nvcc", "cuda_version": "12.6",
        "tensorrt_version": version if version.count(".") == 2 else version + ".0",
        "tensorrt_major": version.split(".")[0], "tensorrt_include": f"{tree.sys}/usr/include/aarch64-linux-gnu",
        "tensorrt_lib": f"{tree.sys}/usr/lib/aarch64-linux-gnu", "trtexec": f"{tree.sys}/usr/src/tensorrt/bin/trtexec",
        "cmake": f"{tree.bin}/cmake", "compute_capability": "8.7", "cuda_arch": "87", "gpu_name": "Orin (nvgpu)"}


def test_tensorrt_root_and_cuda_home_tree_is_detected(tree):
    """A dGPU Linux box: TensorRT unpacked from a tar (x86_64), CUDA_HOME, nvcc not on PATH."""
    cuda = tree.tmp / "cuda-12.8"
    tree.nvcc(cuda / "bin/nvcc")
    root = tree.tmp / "TensorRT-10.13.3"
    tree.tensorrt("10.13.3", root=root)
    tree.cmake()
    found = _detected(tree.run("--detect-only", CUDA_HOME=str(cuda), TENSORRT_ROOT=str(root), FAKE_CC="12.0"))
    assert (found["nvcc"], found["tensorrt_include"], found["tensorrt_lib"], found["trtexec"]) == (
        f"{cuda}/bin/nvcc", f"{root}/include", f"{root}/lib", f"{root}/bin/trtexec")
    assert (found["tensorrt_version"], found["compute_capability"], found["cuda_arch"]) == ("10.13.3", "12.0", "120")


# --- a whole run with stand-in tools ---------------------------------------------------------------------

def _bundle_files(tree: Tree) -> None:
    for name in ("plugin-fp16", "plugin-fp32", "onnx-fp32"):
        (tree.bundle / "onnx").mkdir(exist_ok=True)
        (tree.bundle / "onnx" / f"{name}.onnx").write_bytes(name.encode())
    (tree.bundle / "plugins").mkdir()
    (tree.bundle / "plugins" / "CMakeLists.txt").write_text("# the plugin sources\n")
    (tree.bundle / "metadata.json").write_text('{"deformrt.body": "R-50-FPN", "deformrt.dcn_op": "plugin"}\n')
    tree.env["FAKE_RUN"] = str(_script(tree.tmp / "fake-deformrt-run", FAKE_RUN))


def _calls(tree: Tree, tool: str) -> list[list[str]]:
    return [line.split()[1:] for line in tree.log.read_text().splitlines() if line.split()[0] == tool]


@pytest.mark.parametrize("version, precision", [("10.3.0", "fp16"), ("11.1", "fp16"), ("10.3.0", "fp32")])
def test_full_run_builds_engine_writes_sidecar_and_checks(tree, version, precision):
    tree.complete(version)
    _bundle_files(tree)
    trt_version = version if version.count(".") == 2 else version + ".0"
    proc = tree.run(*(["--fp32"] if precision == "fp32" else []), "--iterations", "7", FAKE_TRT_VERSION=trt_version)
    assert proc.returncode == 0, proc.stderr
    assert "PASS" in proc.stdout.splitlines()

    configure, build = _calls(tree, "cmake")
    assert "-DCMAKE_CUDA_ARCHITECTURES=87" in configure and f"-DTENSORRT_ROOT={tree.sys}/usr" in configure
    assert f"-DCMAKE_CUDA_COMPILER={tree.sys}/usr/local/cuda/bin/nvcc" in configure
    assert {"deformrt_plugin", "deformrt-run"} <= set(build)

    engine = tree.build / f"plugin-{precision}.plan"
    plugin = tree.build / "plugins" / "libdeformrt_plugin.so"
    [trtexec] = _calls(tree, "trtexec")
    expected = {f"--onnx={tree.bundle}/onnx/plugin-{precision}.onnx", f"--saveEngine={engine}.tmp", "--skipInference",
                f"--dynamicPlugins={plugin}", "--minShapes=images:1x3x320x320", "--optShapes=images:1x3x800x1344",
                "--maxShapes=images:4x3x1344x1344"}
    # TensorRT 10 builds strongly typed only when asked; TensorRT 11 always does and has no --fp16.
    expected |= {"--stronglyTyped"} if version.startswith("10") else set()
    expected |= {"--noTF32"} if precision == "fp32" else set()
    assert set(trtexec) == expected
    assert engine.read_text() == "engine\n" and not Path(f"{engine}.tmp").exists()

    meta = EngineMeta.from_json(Path(f"{engine}.json").read_text(), source="sidecar")
    assert (meta.tensorrt_version, meta.compute_capability, meta.gpu_name, meta.precision) == (
        trt_version, "8.7", "Orin (nvgpu)", precision)
    assert meta.fp16_method == ("deformrt" if precision == "fp16" else None)
    assert meta.plugin_path == str(plugin) and meta.onnx_path == f"onnx/plugin-{precision}.onnx"
    assert [p.to_dict() for p in meta.profiles] == [
        {"name": "images", "min": [1, 3, 320, 320], "opt": [1, 3, 800, 1344], "max": [4, 3, 1344, 1344]}]
    assert meta.onnx_metadata == {"deformrt.body": "R-50-FPN", "deformrt.dcn_op": "plugin"}
    import hashlib
    assert meta.onnx_sha256 == hashlib.sha256(f"plugin-{precision}".encode()).hexdigest()
    assert meta.plugin_sha256 == hashlib.sha256(b"plugin\n").hexdigest()

    [check] = _calls(tree, "deformrt-run")
    tolerance = "0.01" if precision == "fp16" else "0.001"
    assert check == [str(engine), "--inputs", f"{tree.bundle}/reference/inputs", "--check",
                     f"{tree.bundle}/reference/outputs", "--tolerance", tolerance, "--iterations", "7",
                     "--plugin", str(plugin)]


def test_fallback_flavour_needs_no_plugin_and_static_models_take_no_shapes(tree):
    tree.complete()
    _bundle_files(tree)
    (tree.bundle / "deploy.conf").write_text(
        "\n".join(line for line in CONF.splitlines() if "_shapes=" not in line) + "\n")
    proc = tree.run("--dcn", "onnx", "--fp32", FAKE_TRT_VERSION="10.3.0")
    assert proc.returncode == 0, proc.stderr
    [trtexec] = _calls(tree, "trtexec")
    assert not [a for a in trtexec if a.startswith(("--dynamicPlugins", "--minShapes"))]
    meta = EngineMeta.from_json((tree.build / "onnx-fp32.plan.json").read_text())
    assert meta.plugin_path is None and meta.profiles == []
    assert meta.onnx_metadata == {"deformrt.body": "R-50-FPN", "deformrt.dcn_op": "onnx"}
    [check] = _calls(tree, "deformrt-run")
    assert "--plugin" not in check
    engine = tree.build / "onnx-fp32.plan"
    assert proc.stdout.splitlines()[-1] == f"==> engine: {engine} (sidecar {engine}.json), no plugin needed"


@pytest.mark.parametrize("recorded, flags, built", [("fp32", [], "fp32"), ("fp32", ["--fp16"], "fp16"),
                                                     ("fp16", ["--fp32"], "fp32")])
def test_precision_comes_from_deploy_conf_unless_a_flag_overrides_it(tree, recorded, flags, built):
    tree.complete()
    _bundle_files(tree)
    (tree.bundle / "deploy.conf").write_text(CONF + f"precision={recorded}\n")
    proc = tree.run(*flags, FAKE_TRT_VERSION="10.3.0")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tree.build.glob("*.plan")) == [f"plugin-{built}.plan"]
    (tree.bundle / "deploy.conf").write_text(CONF + "precision=int8\n")
    assert tree.error(FAKE_TRT_VERSION="10.3.0") == "error: deploy.conf: precision=int8: write fp16 or fp32"


def test_failed_check_and_missing_flavour(tree):
    tree.complete()
    _bundle_files(tree)
    proc = tree.run(FAKE_TRT_VERSION="10.3.0", FAKE_VERDICT="FAIL")
    assert proc.returncode == 1 and proc.stdout.splitlines()[-1] == "FAIL"
    assert proc.stderr.splitlines()[-1] == (
        "error: the check failed: see README.md, section 'When the check fails' (first try ./build.sh --fp32)")
    assert tree.error("--dcn", "onnx", FAKE_TRT_VERSION="10.3.0") == (
        "error: the bundle has no onnx-fp16 model (onnx/onnx-fp16.onnx): try another --dcn or precision, or make "
        "the bundle again with deformrt deploy")


# --- build.sh's configure with a real CMake -------------------------------------------------------------


PLUGINS = ROOT / "plugins"

# cmake: the real one configures (REAL_CMAKE); building is left out (it would compile the kernels and link a
# runtime against a libnvinfer this machine does not have), the programs build.sh expects appear instead.
CONFIGURING_CMAKE = r"""
echo "cmake $*" >> "$FAKE_LOG"
if [ "$1" = --build ]; then
  cp "$FAKE_RUN" "$2/deformrt-run"; echo plugin > "$2/libdeformrt_plugin.so"
else
  exec "$REAL_CMAKE" "$@"
fi
"""

# nvcc: the real one, except for build.sh's GPU probe (there is no GPU here): that reports FAKE_CC's.
PROBING_NVCC = r"""
case " $* " in
  *cuda-probe.cu*) ;;
  *) exec "$REAL_NVCC" "$@" ;;
esac
""" + FAKE_NVCC


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is needed for CMake's CUDA configure")
@pytest.mark.parametrize("cmake", cmakes(), ids=cmake_id)
def test_build_sh_as_written_configures_the_plugins_with_a_real_cmake(tree, cmake):
    """`./build.sh` with no options (the README's line) against the real plugins/ sources and TensorRT
    10.3 headers: the machine's CMake and the oldest supported one configure the plugin, the runtime and
    the kernels for the GPU's architecture alone (Orin: sm_87)."""
    _script(tree.bin / "nvcc", PROBING_NVCC)
    tree.tensorrt("10.3.0")
    include = tree.sys / "usr/include/aarch64-linux-gnu"
    for header in (HEADERS / "10.3.0" / "include").iterdir():
        if not (include / header.name).exists():
            (include / header.name).symlink_to(header)
    _script(tree.bin / "cmake", CONFIGURING_CMAKE)
    _bundle_files(tree)
    shutil.rmtree(tree.bundle / "plugins")
    (tree.bundle / "plugins").symlink_to(PLUGINS)
    # CMake needs the machine's compilers and tools: PATH keeps the stand-ins first.
    proc = tree.run(PATH=f"{tree.bin}:/usr/bin:/bin", REAL_CMAKE=str(cmake), REAL_NVCC=shutil.which("nvcc"),
                    FAKE_TRT_VERSION="10.3.0")
    configure_log = (tree.build / "cmake-configure.log").read_text() if (tree.build / "cmake-configure.log").exists() else ""
    assert proc.returncode == 0, proc.stderr + configure_log[-3000:]
    assert "PASS" in proc.stdout.splitlines()
    assert configured_cuda_archs(tree.build / "plugins") == ({87}, {87})
    assert "building for architectures 87 (CMAKE_CUDA_ARCHITECTURES)" in configure_log
    assert "deformrt: TensorRT 10 headers" in configure_log
    assert "C++ runtime and deformrt-run are not built" not in configure_log


@pytest.mark.parametrize("version, precision", [("10.3.0", "fp16"), ("11.1", "fp32")])
def test_detector_bundle_builds_with_both_input_profiles_and_checks_detections_as_sets(tree, version, precision):
    """A detector's deploy.conf (its keys from exporter/deploy/bundle.py's detector_conf, as `deformrt deploy`
    writes them): trtexec gets profiles for images and image_sizes and no extra plugin flag (it registers
    TensorRT's own plugins, ROIAlign_TRT among them, itself); deformrt-run checks the detections with the
    precision's set-matching tolerances; the last line names the device predict command."""
    from exporter.deploy import layout
    from exporter.deploy.bundle import detector_conf
    from exporter.onnx.metadata import DetectorMetadata

    tree.complete(version)
    _bundle_files(tree)
    detector = DetectorMetadata("mask_rcnn", 81, 100, 1000, 28, 800, 1333)
    keys = detector_conf(detector, 0.05, 0.5)
    shapes = {label: f"images:{n}x3x{h}x{w},image_sizes:{n}x2" for label, (n, h, w) in
              (("min", (1, 320, 320)), ("opt", (1, 800, 1344)), ("max", (2, 1344, 1344)))}
    (tree.bundle / "deploy.conf").write_text(CONF + "".join(f"{k}={v}\n" for k, v in keys.items())
                                             + "".join(f"{k}_shapes={v}\n" for k, v in shapes.items()))
    trt_version = version if version.count(".") == 2 else version + ".0"
    proc = tree.run(f"--{precision}", "--iterations", "3", FAKE_TRT_VERSION=trt_version)
    assert proc.returncode == 0, proc.stderr
    [trtexec] = _calls(tree, "trtexec")
    assert {f"--{label}Shapes={shape}" for label, shape in shapes.items()} <= set(trtexec)
    assert [a for a in trtexec if "Plugins" in a] == [f"--dynamicPlugins={tree.build}/plugins/libdeformrt_plugin.so"]
    engine = tree.build / f"plugin-{precision}.plan"
    meta = EngineMeta.from_json(Path(f"{engine}.json").read_text(), source="sidecar")
    assert [p.name for p in meta.profiles] == ["images", "image_sizes"]
    assert meta.profiles[1].to_dict() == {"name": "image_sizes", "min": [1, 2], "opt": [1, 2], "max": [2, 2]}
    [check] = _calls(tree, "deformrt-run")
    tol = layout.DETECTION_TOLERANCES[precision]
    assert check == [str(engine), "--inputs", f"{tree.bundle}/reference/inputs", "--check",
                     f"{tree.bundle}/reference/outputs", "--match-iou", str(tol["match_iou"]), "--score-tolerance",
                     str(tol["score_tolerance"]), "--mask-tolerance", str(tol["mask_tolerance"]), "--borderline",
                     str(tol["borderline"]), "--score-threshold", "0.05", "--nms-threshold", "0.5", "--iterations",
                     "3", "--plugin",
                     f"{tree.build}/plugins/libdeformrt_plugin.so"]
    assert proc.stdout.splitlines()[-1] == (
        "==> detections on your images (PNGs and coco_results.json; numpy, Pillow and TensorRT's Python): "
        f"PYTHONPATH=python python3 -m exporter.deploy.predict . IMAGES/ -o predictions/ --engine {engine} "
        f"--plugin {tree.build}/plugins/libdeformrt_plugin.so")
