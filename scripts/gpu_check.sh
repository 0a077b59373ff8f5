#!/usr/bin/env bash
# Every check that needs a GPU, in one run: first deformrt's CUDA kernels (about 8 minutes at most on an
# H100/H200): build for this GPU, the `gpu`-marked tests (among them the tensor-core kernel in a new CUDA
# context), the DCN benchmark, the TensorRT-contract harness with the CUDA kernels (TensorRT's build and run
# sequence: several configurations, clones, two contexts, kHWC8, a refit), the `trt` tests when
# TENSORRT_ROOT names a TensorRT, then compute-sanitizer memcheck and racecheck (slowest last). Meanwhile
# the CPU runs the performance model (scripts/kernel_model.py, no GPU needed), printed at the end beside
# the measured times so the model gets calibrated. A table on stdout; a JSON file (default
# gpu_check.json, or $1) with every section's status, time, the benchmark rows and the model's rows.
#
#   bash scripts/gpu_check.sh [results.json]
#   GPU_CHECK_PARTS=detector bash scripts/gpu_check.sh   # only the whole detector through TensorRT
#
# Needs: one NVIDIA GPU, nvcc + cmake, a Python with torch (CUDA build; torchvision optional) and
# pytest. Uses $PYTHON (default: .venv/bin/python if present, else python3). A failing section is
# recorded and the next one runs; the exit status is 1 when any section failed.
set -euo pipefail
case ${1:-} in
  -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0 ;;
  -*) echo "error: unknown option $1; usage: bash scripts/gpu_check.sh [results.json]" >&2; exit 1 ;;
esac
(( $# <= 1 )) || { echo "error: one argument at most (the results file), got $#" >&2; exit 1; }
CALLER=$PWD
cd "$(dirname "$0")/.."
REPO=$PWD
OUT_JSON=${1:-$REPO/gpu_check.json}
[[ $OUT_JSON == /* ]] || OUT_JSON=$CALLER/$OUT_JSON  # relative to where it was typed
# Checked before minutes of work: the results file can be written, and there is a GPU to check.
if [[ -d $OUT_JSON ]]; then echo "error: $OUT_JSON is a directory; give a file for the results" >&2; exit 1; fi
[[ -d $(dirname "$OUT_JSON") && -w $(dirname "$OUT_JSON") ]] \
  || { echo "error: cannot write $OUT_JSON: directory $(dirname "$OUT_JSON") is missing or not writable" >&2; exit 1; }
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU ' \
    && ! "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  echo "error: no NVIDIA GPU here (neither nvidia-smi nor torch sees one); gpu_check runs the checks that need one" >&2
  exit 1
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/deformrt-gpucheck.XXXXXX")
BUILD=$WORK/build
RESULTS=$WORK/sections.tsv
: >"$RESULTS"
START=$(date +%s)
# Parts: "kernels" (build, gpu tests, DCN benchmark, contract harness, TensorRT tests, sanitizers) and
# "detector" (a whole detector through TensorRT). GPU_CHECK_PARTS=detector runs only the latter.
PARTS=${GPU_CHECK_PARTS:-kernels,detector}
WANT_KERNELS=0; WANT_DETECTOR=0
[[ ,$PARTS, == *,kernels,* ]] && WANT_KERNELS=1
[[ ,$PARTS, == *,detector,* ]] && WANT_DETECTOR=1
if [[ $WANT_KERNELS == 1 ]]; then DEFAULT_BUDGET=470; else DEFAULT_BUDGET=0; fi
if [[ $WANT_DETECTOR == 1 ]]; then DEFAULT_BUDGET=$(( DEFAULT_BUDGET + ${DETECTOR_BUDGET_S:-420} )); fi
BUDGET_S=${GPU_CHECK_BUDGET_S:-$DEFAULT_BUDGET}  # each section gets at most what is left of it

# run_section NAME TIMEOUT_S COMMAND...: runs COMMAND with a timeout, its output to $WORK/NAME.log
# (and to stdout), records status and seconds; never stops the script.
KERNEL_SECTIONS=" build gpu_tests bench trt_contract tensorrt memcheck racecheck "
run_section() {
  local name=$1 limit=$2
  shift 2
  if [[ $WANT_KERNELS == 0 && $KERNEL_SECTIONS == *" $name "* ]]; then return 0; fi
  local log=$WORK/$name.log t0 rc status left
  t0=$(date +%s)
  left=$(( BUDGET_S - (t0 - START) ))
  if (( left < 15 )); then
    skip_section "$name" "out of time (budget ${BUDGET_S}s)"
    return 0
  fi
  if (( limit > left )); then limit=$left; fi
  echo "=== $name (timeout ${limit}s): $*"
  set +e
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  rc=$?
  set -e
  tail -n 40 "$log"
  if [[ $rc -eq 0 ]]; then status=pass
  elif [[ $rc -eq 124 || $rc -eq 137 ]]; then status=timeout
  else status=fail; fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - t0 ))" "exit $rc" >>"$RESULTS"
}

skip_section() {
  if [[ $WANT_KERNELS == 0 && $KERNEL_SECTIONS == *" $1 "* ]]; then return 0; fi
  echo "=== $1: skipped: $2"
  printf '%s\t%s\t%s\t%s\n' "$1" skipped 0 "$2" >>"$RESULTS"
}

# --- the performance model, on the CPU while the GPU sections run ----------------------------------
MODEL_JSON=$WORK/model.json
MODEL_PID=
if [[ $WANT_KERNELS == 1 ]]; then
  timeout 400 "$PYTHON" scripts/kernel_model.py --json --no-registers >"$MODEL_JSON" 2>"$WORK/model.log" &
  MODEL_PID=$!
fi

# --- environment ----------------------------------------------------------------------------------
run_section environment 30 bash -c "nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv \
  && nvcc --version | tail -n 1 && $PYTHON -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name())'"

# --- build for this GPU ---------------------------------------------------------------------------
# This GPU's architecture from nvidia-smi (e.g. 9.0 -> 90); CMake's "native" (3.24+) otherwise.
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '. ' || true)
[[ $ARCH =~ ^[0-9]+$ ]] || ARCH=native
run_section build 150 bash -c "cmake -S plugins -B '$BUILD' -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=$ARCH \
  && cmake --build '$BUILD' --target deformrt_kernels -j \"\$(nproc)\""
if [[ -f $BUILD/libdeformrt_kernels.so ]]; then
  export DEFORMRT_KERNEL_LIB=$BUILD/libdeformrt_kernels.so
  HAVE_LIB=1
else
  HAVE_LIB=0
fi

# --- the gpu-marked tests -------------------------------------------------------------------------
if [[ $HAVE_LIB == 1 ]]; then
  run_section gpu_tests 120 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/test_plugin_gpu.py
else
  skip_section gpu_tests "kernel library did not build"
fi

# --- benchmark ------------------------------------------------------------------------------------
if [[ $HAVE_LIB == 1 ]]; then
  run_section bench 150 "$PYTHON" scripts/bench_dcn.py --json-file "$WORK/bench.json"
else
  skip_section bench "kernel library did not build"
fi

# --- TensorRT-contract harness with the real kernels ----------------------------------------------
# Every exported DCN node through the stand-in registry and the plugin's lifecycle, enqueued on device
# copies by the plugin built with its CUDA kernels for this GPU, against models.deform_conv2d.
run_section trt_contract 180 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/test_trt_contract.py

# --- a real TensorRT (when TENSORRT_ROOT names one) -------------------------------------------------
# The harness's loading and builder sequence against the real libnvinfer's registry (with the CUDA kernels),
# and the plugin registering with TensorRT's Python bindings each way.
if [[ -n "${TENSORRT_ROOT:-}" && -d "${TENSORRT_ROOT}/include" ]]; then
  run_section tensorrt 150 "$PYTHON" -m pytest -q -m trt -p no:cacheprovider tests/test_trt_contract.py \
    tests/test_plugin_gpu.py
else
  skip_section tensorrt "set TENSORRT_ROOT to an unpacked TensorRT release to run the trt tests"
fi

# --- a whole detector through TensorRT ---------------------------------------------------------------
# A small Mask R-CNN (modulated DCN, standard DeformConv, 128x160, calibrated random weights) through
# build-engine fp32 and fp16 (ROIAlign_TRT and ModulatedDeformConv2d from libnvinfer_plugin, the
# image_sizes profile, fp16 with the postprocessing kept fp32), compare with TensorRT beside PyTorch and
# ONNX Runtime (detections as sets), bench and eval (COCO AP on a tiny self-annotated set): the `trt`
# tests of tests/test_detector_commands.py, printing each command's output. Needs the TensorRT Python
# package (pip `tensorrt`, 10.x or 11.x); with $DETECTOR_BUDGET_S of its own (default 420 s) when run
# alone: GPU_CHECK_PARTS=detector bash scripts/gpu_check.sh.
if [[ $WANT_DETECTOR == 1 ]]; then
  if "$PYTHON" -c 'import tensorrt' >/dev/null 2>&1; then
    run_section detector_trt "${DETECTOR_BUDGET_S:-420}" "$PYTHON" -m pytest -q -s -rs -m trt -p no:cacheprovider \
      tests/test_detector_commands.py
  else
    skip_section detector_trt "the TensorRT Python package is not importable (pip install tensorrt)"
  fi
fi

# --- compute-sanitizer ----------------------------------------------------------------------------
SANITIZER=$(command -v compute-sanitizer || true)
if [[ -z $SANITIZER && -n "${CUDA_HOME:-}" && -x $CUDA_HOME/bin/compute-sanitizer ]]; then
  SANITIZER=$CUDA_HOME/bin/compute-sanitizer
fi
if [[ $HAVE_LIB == 1 && -n $SANITIZER ]]; then
  run_section memcheck 90 "$SANITIZER" --tool memcheck --error-exitcode 9 "$PYTHON" scripts/dcn_sanitize.py
  run_section racecheck 90 "$SANITIZER" --tool racecheck --racecheck-report hazard --error-exitcode 9 \
    "$PYTHON" scripts/dcn_sanitize.py --quick
else
  skip_section memcheck "compute-sanitizer or the kernel library missing"
  skip_section racecheck "compute-sanitizer or the kernel library missing"
fi

# === detector deploy bundle on this GPU (issue 20, deploy side; self-contained block) ======================
# A synthetic calibrated Mask R-CNN (modulated DCN, small proposal counts) exported, bundled with `deformrt
# deploy`, then the bundle's own build.sh (plugin, deformrt-run, engine with TensorRT's ROIAlign_TRT and our
# plugin, self-check as sets) in fp32 and fp16, deformrt-run --paste-masks, and the device predict
# (exporter.deploy.predict, numpy + TensorRT's Python) against `deformrt predict --engine` on the same
# engine. Needs TENSORRT_ROOT (trtexec in bin/, headers, libraries) and TensorRT's Python bindings; about
# 4 minutes (the export is on the CPU). Raise GPU_CHECK_BUDGET_S when the earlier sections leave too little.
if [[ -n "${TENSORRT_ROOT:-}" && -x "${TENSORRT_ROOT}/bin/trtexec" ]]; then
  DEPLOY_WORK=$WORK/deploy
  mkdir -p "$DEPLOY_WORK/images"
  # run.sh works in $DEPLOY_WORK: the interpreter by its absolute path
  if [[ $PYTHON == */* ]]; then DEPLOY_PYTHON=$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")
  else DEPLOY_PYTHON=$(command -v "$PYTHON"); fi
  cat >"$DEPLOY_WORK/run.sh" <<EOF_DEPLOY
set -euo pipefail
cd "$DEPLOY_WORK"
export LD_LIBRARY_PATH="$TENSORRT_ROOT/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
deformrt() { "$DEPLOY_PYTHON" -c 'import sys; from exporter.cli import main; sys.argv[0] = "deformrt"; sys.exit(main())' "\$@"; }
deformrt export --config-file e2e_mask_rcnn_mdconv_R_50_FPN_1x.yaml \
  --detector --onnx --shape 320x480 --no-verify -o det.onnx MODEL.RPN.PRE_NMS_TOP_N_TEST 300 \
  MODEL.RPN.POST_NMS_TOP_N_TEST 100 MODEL.RPN.FPN_POST_NMS_TOP_N_TEST 100 INPUT.MIN_SIZE_TEST 320 INPUT.MAX_SIZE_TEST 480
deformrt deploy det.onnx -o det-bundle --min-shape 1x3x256x256 --opt-shape 1x3x320x480 --max-shape 2x3x480x480 --force
"$DEPLOY_PYTHON" -c 'import numpy as np; from PIL import Image; r = np.random.default_rng(0); [Image.fromarray(r.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(f"images/{i}.png") for i, (h, w) in enumerate([(240, 320), (300, 200)])]'
TENSORRT_ROOT="$TENSORRT_ROOT" TRTEXEC="$TENSORRT_ROOT/bin/trtexec" bash det-bundle/build.sh --fp32 --iterations 20
TENSORRT_ROOT="$TENSORRT_ROOT" TRTEXEC="$TENSORRT_ROOT/bin/trtexec" bash det-bundle/build.sh --fp16 --iterations 20
grep -m 1 "Loading standard plugins" det-bundle/build/trtexec.log || echo "trtexec.log does not say it loaded TensorRT's plugins"
det-bundle/build/plugins/deformrt-run det-bundle/build/plugin-fp16.plan --plugin det-bundle/build/plugins/libdeformrt_plugin.so \
  --inputs det-bundle/reference/inputs --outputs . --paste-masks --iterations 0
"$DEPLOY_PYTHON" -c 'import numpy as np; m = np.load("pasted_masks.npy"); print("pasted_masks", m.shape, m.dtype, int(m.sum()), "pixels set")'
(cd det-bundle && PYTHONPATH=python "$DEPLOY_PYTHON" -m exporter.deploy.predict . ../images -o ../device-predictions \
  --engine build/plugin-fp16.plan --plugin build/plugins/libdeformrt_plugin.so)
deformrt predict det.onnx images/0.png images/1.png -o host-predictions --engine det-bundle/build/plugin-fp16.plan \
  --plugin det-bundle/build/plugins/libdeformrt_plugin.so --json > host.json
"$DEPLOY_PYTHON" -c 'import json; d = json.load(open("device-predictions/coco_results.json")); h = json.load(open("host.json")); print("device predict", len(d), "records, deformrt predict", len(h), "records:", "equal" if d == h else "DIFFERENT"); raise SystemExit(d != h)'
EOF_DEPLOY
  run_section deploy_detector 420 bash "$DEPLOY_WORK/run.sh"
else
  skip_section deploy_detector "set TENSORRT_ROOT to an unpacked TensorRT release (with bin/trtexec) to build a detector bundle"
fi
# === end of the detector deploy block ======================================================================

# --- summary: table on stdout, JSON file ----------------------------------------------------------
TOTAL=$(( $(date +%s) - START ))
echo
echo "=== summary (${TOTAL}s; logs in $WORK)"
printf '%-14s %-8s %6s  %s\n' section status seconds note
while IFS=$'\t' read -r name status secs note; do
  printf '%-14s %-8s %6s  %s\n' "$name" "$status" "$secs" "$note"
done <"$RESULTS"
if [[ -f $WORK/bench.log ]]; then
  echo
  echo "=== benchmark (ms per call; ratios ours / theirs, lower is better)"
  grep -v '^===' "$WORK/bench.log" | tail -n 60 || true
fi

# --- measured beside modelled -----------------------------------------------------------------------
if [[ $WANT_KERNELS == 1 ]]; then
if [[ -n $MODEL_PID ]] && wait "$MODEL_PID"; then MODEL_STATUS=ok; else MODEL_STATUS="failed or not run"; fi
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)
echo
echo "=== measured (this GPU: ${GPU_NAME:-unknown}) beside MODELED (scripts/kernel_model.py; model ${MODEL_STATUS})"
"$PYTHON" - "$WORK/bench.json" "$MODEL_JSON" "$GPU_NAME" <<'EOF' || echo "gpu_check: no model comparison (see $WORK/model.log)"
import json, os, sys
bench_path, model_path, gpu_name = sys.argv[1:4]
model = json.load(open(model_path))["layers"]
bench = json.load(open(bench_path))["rows"] if os.path.exists(bench_path) else []
key = "H100 SXM" if "H100" in gpu_name or "H200" in gpu_name else "A100" if "A100" in gpu_name else \
    "Jetson AGX Orin" if "Orin" in gpu_name else None
print(f"modelled GPU: {key or 'none matches this GPU; all shown'}")
print(f"{'layer':5} {'modelled GPU':16} {'ours us':>8} {'dense floor':>11} {'TRT-OSS':>8} {'/dense':>7} | "
      f"{'measured ours NHWC us (smooth/random)':>38} {'cuDNN cl us':>11} {'/cuDNN':>7}")
stage = {"res3": "conv3", "res4": "conv4", "res5": "conv5"}
for r in model:
    if key is not None and r["gpu"] != key:
        continue
    rows = [b for b in bench if b["stage"] == stage[r["layer"]] and b["dtype"] == "float16" and b["batch"] == 1]
    ours = "/".join(f"{1000 * b['ours_nhwc_ms']:.1f}" if b.get("ours_nhwc_ms") else "n/a" for b in rows) or "n/a"
    cudnn = min((b["cudnn_cl_ms"] for b in rows), default=None)
    best = min((b["ours_nhwc_ms"] for b in rows if b.get("ours_nhwc_ms")), default=None)
    ratio = f"{best / cudnn:.2f}" if best and cudnn else "n/a"
    print(f"{r['layer']:5} {r['gpu']:16} {r['modeled_us']:8.1f} {r['dense_floor_us']:11.1f} "
          f"{r['trt_oss_modeled_us']:8.1f} {r['ratio_vs_dense_floor']:7.2f} | {ours:>38} "
          f"{(f'{1000 * cudnn:.1f}' if cudnn else 'n/a'):>11} {ratio:>7}")
EOF
fi

"$PYTHON" - "$RESULTS" "$WORK/bench.json" "$OUT_JSON" "$TOTAL" "$WORK" "$MODEL_JSON" <<'EOF' || echo "gpu_check: could not write $OUT_JSON"
import json, os, sys
results, bench, out, total, work, model = sys.argv[1:7]
sections = []
for line in open(results):
    name, status, secs, note = line.rstrip("\n").split("\t", 3)
    sections.append({"section": name, "status": status, "seconds": int(secs), "note": note,
                     "log": os.path.join(work, name + ".log")})
report = {"total_seconds": int(total), "sections": sections,
          "bench": json.load(open(bench)) if os.path.exists(bench) else None,
          "model": json.load(open(model)) if os.path.exists(model) and os.path.getsize(model) else None}
with open(out + ".tmp", "w") as f:  # then renamed: an interrupted write leaves no truncated report
    json.dump(report, f, indent=2)
os.replace(out + ".tmp", out)
print(f"wrote {out}")
EOF

if grep -qP '\t(fail|timeout)\t' "$RESULTS"; then
  exit 1
fi
exit 0
