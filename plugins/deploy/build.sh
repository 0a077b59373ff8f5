#!/usr/bin/env bash
# deformrt bundle: build the plugin, the runtime and a TensorRT engine on this device, then check the
# engine against the references that came with the bundle (a detector's: detections, matched as sets). Needs CUDA (nvcc), TensorRT (headers,
# libraries, trtexec), CMake and a GPU; no Python, no network.
#
#   ./build.sh                 engine of deploy.conf's precision (fp16 unless deployed with --fp32), plugin flavour
#   ./build.sh --fp32          fp32 engine (no TF32); --fp16: fp16 engine
#   ./build.sh --dcn onnx      TensorRT's own DeformConv instead of deformrt's plugin (the fallback flavour)
#   ./build.sh --detect-only   print everything found (key=value lines, empty when missing) and everything
#                              missing (error: lines), then stop
#   options: --jobs N (parallel compile jobs), --iterations N (timed runs in the check, default 100), --help
#
# Environment: CUDA_HOME, TENSORRT_ROOT (an unpacked TensorRT release; default: the system's, as JetPack
# installs it), TRTEXEC (path of trtexec), DEFORMRT_BUILD_DIR (default: ./build). DEFORMRT_SYSROOT is
# put in front of every fixed system path searched (tests point it at fake install trees).
#
# Every missing prerequisite is reported before anything is built, one line each saying what is missing
# and how to get it; the exit status is 1 then, and when the check fails.
set -euo pipefail

BUNDLE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SYSROOT=${DEFORMRT_SYSROOT:-}
BUILD_DIR=${DEFORMRT_BUILD_DIR:-$BUNDLE/build}
CONF=$BUNDLE/deploy.conf

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

step() {
    printf '==> %s\n' "$*"
}

usage() { # the comment block at the top of this file, without the comment marks
    sed -n '2,$ { /^#/!q; s/^# \{0,1\}//; p; }' "${BASH_SOURCE[0]}"
}

# Missing prerequisites, collected so that one run names all of them.
problems=()
missing() {
    problems+=("$*")
}

# --- options -------------------------------------------------------------------------------------------
precision=  # deploy.conf's unless --fp16 / --fp32
dcn=plugin
detect_only=0
jobs=$(nproc 2>/dev/null || echo 2)
iterations=100
while [ $# -gt 0 ]; do
    case $1 in
        --fp32) precision=fp32 ;;
        --fp16) precision=fp16 ;;
        --dcn)
            [ $# -ge 2 ] || die "--dcn needs plugin or onnx"
            dcn=$2
            shift ;;
        --detect-only) detect_only=1 ;;
        --jobs)
            [ $# -ge 2 ] || die "--jobs needs a number"
            jobs=$2
            shift ;;
        --iterations)
            [ $# -ge 2 ] || die "--iterations needs a number"
            iterations=$2
            shift ;;
        -h | --help)
            usage
            exit 0 ;;
        *) die "unknown option $1 (see ./build.sh --help)" ;;
    esac
    shift
done
case $dcn in plugin | onnx) ;; *) die "--dcn must be plugin or onnx, not $dcn" ;; esac
case $jobs$iterations in *[!0-9]*) die "--jobs and --iterations need whole numbers" ;; esac

# --- the bundle ----------------------------------------------------------------------------------------
[ -f "$CONF" ] || die "deploy.conf not found in $BUNDLE: run build.sh from the unpacked deformrt bundle"

# deploy.conf holds key=value lines written by `deformrt deploy`; the last assignment of a key wins.
conf() {
    sed -n "s/^$1=//p" "$CONF" | tail -n 1
}

[ "$(conf format)" = 1 ] || die "deploy.conf is format '$(conf format)', this build.sh reads format 1: use the" \
    "build.sh that came with the bundle"
[ -n "$precision" ] || precision=$(conf precision)
[ -n "$precision" ] || precision=fp16
case $precision in fp16 | fp32) ;; *) die "deploy.conf: precision=$precision: write fp16 or fp32" ;; esac

# --- CUDA ----------------------------------------------------------------------------------------------
# first_executable CANDIDATE...: the first candidate that is an executable file (empty ones skipped).
first_executable() {
    local candidate
    for candidate in "$@"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}
cuda_version=
nvcc=$(first_executable "$(command -v nvcc 2>/dev/null || true)" "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" \
    "$SYSROOT/usr/local/cuda/bin/nvcc") || {
    nvcc=
    missing "nvcc not found on PATH${CUDA_HOME:+, in $CUDA_HOME/bin} or in $SYSROOT/usr/local/cuda/bin:" \
        "install the CUDA toolkit (on Jetson: sudo apt install nvidia-jetpack) or set CUDA_HOME to it"
}
if [ -n "$nvcc" ]; then
    cuda_version=$("$nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9.]*\).*/\1/p' | head -n 1)
    [ -n "$cuda_version" ] || missing "$nvcc does not report a CUDA release (nvcc --version): reinstall the CUDA toolkit"
fi

# --- TensorRT ------------------------------------------------------------------------------------------
if [ -n "${TENSORRT_ROOT:-}" ]; then
    trt_include_candidates=("$TENSORRT_ROOT/include")
    trt_root=$TENSORRT_ROOT
    trt_how="set TENSORRT_ROOT to an unpacked TensorRT release (it has include/ and lib/)"
else
    trt_include_candidates=("$SYSROOT/usr/include/aarch64-linux-gnu" "$SYSROOT/usr/include/x86_64-linux-gnu")
    trt_root=$SYSROOT/usr
    trt_how="install TensorRT (on Jetson: sudo apt install nvidia-jetpack) or set TENSORRT_ROOT to an unpacked TensorRT release"
fi
trt_include=
for dir in "${trt_include_candidates[@]}"; do
    if [ -f "$dir/NvInferVersion.h" ]; then
        trt_include=$dir
        break
    fi
done

# NV_TENSORRT_MAJOR is a number up to 10.12 and a macro naming TRT_MAJOR_ENTERPRISE from 10.13 on.
trt_define() {
    sed -n -E "s/^#define[[:space:]]+$1[[:space:]]+([0-9]+).*/\1/p" "$trt_include/NvInferVersion.h" | head -n 1
}
trt_number() {
    local value
    value=$(trt_define "NV_TENSORRT_$1")
    [ -n "$value" ] || value=$(trt_define "TRT_$1_ENTERPRISE")
    printf '%s\n' "$value"
}
trt_major=
trt_version=
trt_lib=
if [ -z "$trt_include" ]; then
    searched=$(printf ' or %s' "${trt_include_candidates[@]}")
    missing "TensorRT headers not found (no NvInferVersion.h in ${searched# or }): $trt_how"
else
    trt_major=$(trt_number MAJOR)
    trt_version=$trt_major.$(trt_number MINOR).$(trt_number PATCH)
    case $trt_version in
        [0-9]*.[0-9]*.[0-9]*) ;;
        *) die "cannot read the TensorRT version from $trt_include/NvInferVersion.h: reinstall TensorRT's headers" ;;
    esac

    # The library beside the headers: lib/ of a release, the same multiarch folder of the system.
    if [ -n "${TENSORRT_ROOT:-}" ]; then
        trt_lib_candidates=("$TENSORRT_ROOT/lib" "$TENSORRT_ROOT/lib64")
    else
        trt_lib_candidates=("$SYSROOT/usr/lib/$(basename "$trt_include")")
    fi
    for dir in "${trt_lib_candidates[@]}"; do
        if [ -e "$dir/libnvinfer.so.$trt_major" ]; then
            trt_lib=$dir
            break
        fi
    done
    [ -n "$trt_lib" ] || missing "TensorRT $trt_version headers found in $trt_include but not libnvinfer.so.$trt_major in" \
        "${trt_lib_candidates[0]}: install the TensorRT runtime (on Jetson: sudo apt install nvidia-jetpack;" \
        "Ubuntu: sudo apt install libnvinfer$trt_major) or set TENSORRT_ROOT to a full TensorRT release"

    majors=$(conf tensorrt_majors)
    [ -n "$majors" ] || die "deploy.conf has no tensorrt_majors line: the bundle is incomplete, make it again with deformrt deploy"
    supported=0
    for major in $majors; do
        [ "$major" = "$trt_major" ] && supported=1
    done
    [ $supported = 1 ] || missing "this machine has TensorRT $trt_version but the bundle was prepared for TensorRT" \
        "$(printf '%s\n' $majors | paste -sd '/' -): install one of those, or make the bundle again with a deformrt" \
        "that supports TensorRT $trt_major"
fi

trtexec=$(first_executable "${TRTEXEC:-}" "${TENSORRT_ROOT:+$TENSORRT_ROOT/bin/trtexec}" \
    "$(command -v trtexec 2>/dev/null || true)" "$SYSROOT/usr/src/tensorrt/bin/trtexec") || {
    trtexec=
    missing "trtexec not found (searched TRTEXEC, ${TENSORRT_ROOT:+$TENSORRT_ROOT/bin, }PATH and" \
        "$SYSROOT/usr/src/tensorrt/bin): install it (on Jetson: sudo apt install libnvinfer-bin) or set TRTEXEC to its path"
}

cmake=$(command -v cmake 2>/dev/null) || {
    cmake=
    missing "cmake not found on PATH: install CMake 3.22 or newer (sudo apt install cmake)"
}

# --- the GPU -------------------------------------------------------------------------------------------
# Jetsons have no nvidia-smi compute-capability query; asking the CUDA runtime works everywhere. It needs
# nvcc, so without nvcc the GPU stays unknown (and nvcc is reported missing).
compute_capability=
gpu_name=
cuda_arch=
if [ -n "$nvcc" ]; then
    mkdir -p "$BUILD_DIR"
    cat >"$BUILD_DIR/cuda-probe.cu" <<'EOF'
#include <cstdio>
#include <cuda_runtime_api.h>
int main()
{
    int count = 0;
    cudaError_t error = cudaGetDeviceCount(&count);
    if (error != cudaSuccess || count == 0)
    {
        std::fprintf(stderr, "%s\n", error != cudaSuccess ? cudaGetErrorString(error) : "no CUDA device");
        return 1;
    }
    int device = 0;
    cudaDeviceProp properties{};
    error = cudaGetDevice(&device);
    if (error == cudaSuccess)
        error = cudaGetDeviceProperties(&properties, device);
    if (error != cudaSuccess)
    {
        std::fprintf(stderr, "%s\n", cudaGetErrorString(error));
        return 1;
    }
    std::printf("compute_capability=%d.%d\ngpu_name=%s\n", properties.major, properties.minor, properties.name);
    return 0;
}
EOF
    if ! "$nvcc" -o "$BUILD_DIR/cuda-probe" "$BUILD_DIR/cuda-probe.cu" >"$BUILD_DIR/cuda-probe.log" 2>&1; then
        missing "$nvcc could not compile a small CUDA program (see $BUILD_DIR/cuda-probe.log): repair the CUDA toolkit"
    elif ! probe=$("$BUILD_DIR/cuda-probe" 2>&1); then
        missing "no usable CUDA GPU ($(printf '%s' "$probe" | head -n 1)): check the driver with nvidia-smi, or on a" \
            "Jetson run this on the device itself as a user in the video group"
    else
        compute_capability=$(printf '%s\n' "$probe" | sed -n 's/^compute_capability=//p')
        gpu_name=$(printf '%s\n' "$probe" | sed -n 's/^gpu_name=//p')
        cuda_arch=${compute_capability/./}
    fi
fi

if [ $detect_only = 1 ]; then
    printf '%s\n' "nvcc=$nvcc" "cuda_version=$cuda_version" "tensorrt_version=$trt_version" \
        "tensorrt_major=$trt_major" "tensorrt_include=$trt_include" "tensorrt_lib=$trt_lib" "trtexec=$trtexec" \
        "cmake=$cmake" "compute_capability=$compute_capability" "cuda_arch=$cuda_arch" "gpu_name=$gpu_name"
fi
if [ ${#problems[@]} -gt 0 ]; then
    printf 'error: %s\n' "${problems[@]}" >&2
    exit 1
fi
[ $detect_only = 0 ] || exit 0

# --- plugin and runtime ----------------------------------------------------------------------------------
[ -f "$BUNDLE/plugins/CMakeLists.txt" ] || die "the bundle has no plugins/ sources: make it again with deformrt deploy"
step "building the plugin and deformrt-run for sm_$cuda_arch (CUDA $cuda_version, TensorRT $trt_version)"
run_logged() {
    local log=$1
    shift
    if ! "$@" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "$1 failed (full log: $log)"
    fi
}
run_logged "$BUILD_DIR/cmake-configure.log" "$cmake" -S "$BUNDLE/plugins" -B "$BUILD_DIR/plugins" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="$cuda_arch" \
    -DTENSORRT_ROOT="$trt_root"
run_logged "$BUILD_DIR/cmake-build.log" "$cmake" --build "$BUILD_DIR/plugins" -j "$jobs" \
    --target deformrt_plugin deformrt-run deformrt-example
plugin_lib=$BUILD_DIR/plugins/libdeformrt_plugin.so
deformrt_run=$BUILD_DIR/plugins/deformrt-run
[ -x "$deformrt_run" ] || die "deformrt-run was not built (see $BUILD_DIR/cmake-configure.log: was libnvinfer found?)"

# --- engine --------------------------------------------------------------------------------------------
onnx=$BUNDLE/onnx/$dcn-$precision.onnx
[ -f "$onnx" ] || die "the bundle has no $dcn-$precision model (onnx/$dcn-$precision.onnx): try another" \
    "--dcn or precision, or make the bundle again with deformrt deploy"
engine=$BUILD_DIR/$dcn-$precision.plan
trtexec_args=(--onnx="$onnx" --saveEngine="$engine.tmp" --skipInference)
# fp16 comes from the mixed-fp16 ONNX (fp16 weights and casts where deformrt put them), built strongly
# typed: TensorRT 11 has no weakly typed fp16 flag, and TensorRT 10.12 deprecates it. TensorRT 11 is
# always strongly typed; TensorRT 10 needs the flag. fp32 engines are built without TF32.
[ "$trt_major" = 10 ] && trtexec_args+=(--stronglyTyped)
[ "$precision" = fp32 ] && trtexec_args+=(--noTF32)
# trtexec registers TensorRT's own plugins itself (initLibNvInferPlugins of libnvinfer_plugin, "Loading
# standard plugins" in its log): a detector's RoiAlign nodes become ROIAlign_TRT from there. deformrt's
# plugin is loaded with IPluginRegistry::loadLibrary (--dynamicPlugins); engines do not embed it, so the
# runtime loads the same library (deformrt-run --plugin).
if [ "$dcn" = plugin ]; then
    trtexec_args+=(--dynamicPlugins="$plugin_lib")
fi
min_shapes=$(conf min_shapes)
if [ -n "$min_shapes" ]; then
    trtexec_args+=(--minShapes="$min_shapes" --optShapes="$(conf opt_shapes)" --maxShapes="$(conf max_shapes)")
fi
step "building $(basename "$engine") from onnx/$(basename "$onnx") with trtexec (this takes minutes on a Jetson)"
run_logged "$BUILD_DIR/trtexec.log" "$trtexec" "${trtexec_args[@]}"

# The sidecar records what the engine was built with, in exporter/engine_meta.py's schema 1: the
# runtime refuses the engine on another TensorRT release or GPU. Versions come from deformrt-run, i.e.
# from the libnvinfer the runtime loads, not from the headers.
json_string() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\t'/\\t}
    s=${s//$'\n'/\\n}
    printf '"%s"' "$s"
}
json_profiles() {
    local item name first=1
    printf '['
    for item in $(printf '%s' "$min_shapes" | tr ',' ' '); do
        name=${item%%:*}
        [ $first = 1 ] || printf ', '
        first=0
        printf '{"name": %s, "min": [%s], "opt": [%s], "max": [%s]}' "$(json_string "$name")" \
            "$(shape_of "$min_shapes" "$name")" "$(shape_of "$(conf opt_shapes)" "$name")" \
            "$(shape_of "$(conf max_shapes)" "$name")"
    done
    printf ']'
}
shape_of() { # "images:1x3x320x320,..." images -> "1, 3, 320, 320"
    printf '%s' "$1" | tr ',' '\n' | sed -n "s/^$2://p" | sed 's/x/, /g'
}
platform=$("$deformrt_run" --platform) || die "deformrt-run --platform failed: $platform"
runtime_trt_version=$(printf '%s\n' "$platform" | sed -n 's/^tensorrt_version=//p')
plugin_json=null
plugin_sha=null
if [ "$dcn" = plugin ]; then
    plugin_json=$(json_string "$plugin_lib")
    plugin_sha=$(json_string "$(sha256sum "$plugin_lib" | cut -d ' ' -f 1)")
fi
fp16_method=null
[ "$precision" = fp16 ] && fp16_method='"deformrt"'
# metadata.json is the exported model's; the engine's flavour is the one built here.
metadata=$(sed -E "s/(\"deformrt\.dcn_op\": *)\"[a-z]*\"/\1\"$dcn\"/" "$BUNDLE/metadata.json" 2>/dev/null || echo '{}')
cat >"$engine.json.tmp" <<EOF
{
  "schema": 1,
  "deformrt_version": $(json_string "$(conf deformrt_version)"),
  "tensorrt_version": $(json_string "$runtime_trt_version"),
  "gpu_name": $(json_string "$gpu_name"),
  "compute_capability": $(json_string "$compute_capability"),
  "precision": "$precision",
  "fp16_method": $fp16_method,
  "profiles": $(json_profiles),
  "plugin_path": $plugin_json,
  "plugin_sha256": $plugin_sha,
  "onnx_path": $(json_string "onnx/$(basename "$onnx")"),
  "onnx_sha256": $(json_string "$(sha256sum "$onnx" | cut -d ' ' -f 1)"),
  "onnx_metadata": $metadata,
  "built_at": $(json_string "$(date -u +%Y-%m-%dT%H:%M:%S+00:00)"),
  "build_options": {"tool": "trtexec", "strongly_typed": true, "tf32": false, "cuda_arch": $(json_string "$cuda_arch")}
}
EOF
mv "$engine.tmp" "$engine"
mv "$engine.json.tmp" "$engine.json"

# --- self-check ----------------------------------------------------------------------------------------
check_args=("$engine" --inputs "$BUNDLE/reference/inputs" --check "$BUNDLE/reference/outputs")
if [ "$(conf model)" = detector ]; then
    # Detections are compared as sets (deformrt-run matches them by class and IoU; README.md, "When the
    # check fails", explains the borderline near-ties it names).
    detection_args=()
    for key in match_iou score_tolerance mask_tolerance borderline; do
        value=$(conf "${key}_$precision")
        [ -n "$value" ] || die "deploy.conf has no ${key}_$precision line: make the bundle again with deformrt deploy"
        detection_args+=("--$(printf '%s' "$key" | sed 's/_/-/')" "$value")
    done
    detection_args+=(--score-threshold "$(conf score_threshold)" --nms-threshold "$(conf nms_threshold)")
    step "checking $(basename "$engine") against the reference detections ($(conf reference_by)) as sets:" \
        "class and IoU >= $(conf "match_iou_$precision")"
    check_args+=("${detection_args[@]}")
else
    tolerance=$(conf "tolerance_$precision")
    [ -n "$tolerance" ] || die "deploy.conf has no tolerance_$precision line: make the bundle again with deformrt deploy"
    step "checking $(basename "$engine") against the PyTorch fp32 references (tolerance $tolerance, max abs error / max |reference|)"
    check_args+=(--tolerance "$tolerance")
fi
check_args+=(--iterations "$iterations")
[ "$dcn" = plugin ] && check_args+=(--plugin "$plugin_lib")
if "$deformrt_run" "${check_args[@]}"; then
    if [ "$dcn" = plugin ]; then
        step "engine: $engine (sidecar $engine.json), plugin: $plugin_lib"
    else
        step "engine: $engine (sidecar $engine.json), no plugin needed"
    fi
    if [ "$(conf model)" = detector ]; then
        step "detections on your images (PNGs and coco_results.json; numpy, Pillow and TensorRT's Python):" \
            "PYTHONPATH=python python3 -m exporter.deploy.predict . IMAGES/ -o predictions/ --engine $engine" \
            "$([ "$dcn" = plugin ] && printf -- '--plugin %s' "$plugin_lib")"
    fi
else
    die "the check failed: see README.md, section 'When the check fails' (first try ./build.sh --fp32)"
fi
