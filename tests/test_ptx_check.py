"""scripts/ptx_check.py: the kernels' real device code (PTX) run on the CPU under the executor's
memcheck, racecheck and initcheck, compared with models.deform_conv2d and, for the tensor-core kernel,
bit for bit with the kernels' CPU build. Here: the check passes on the sources with the exact JSON it
promises, and it fails, in the right category, on scratch copies of the sources with one defect seeded
each (a barrier removed, a bound moved by one, a misaligned vector load, a CPU build summing in another
order, a kernel no case launches). Needs nvcc (compiles only; no GPU)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "ptx_check.py"
sys.path.insert(0, str(REPO / "scripts"))

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found (ptx_check compiles the kernels)")


def run_check(*args: str) -> tuple[int, dict, str]:
    done = subprocess.run([sys.executable, str(SCRIPT), "--json", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=900)
    report = json.loads(done.stdout) if done.stdout.strip() else {}
    return done.returncode, report, done.stderr


def test_every_kernel_runs_clean_and_matches_pytorch():
    rc, report, err = run_check()
    assert rc == 0, err[-4000:]
    assert set(report) == {"arch", "kernels", "summary", "cases", "counters"}
    assert report["arch"] == "sm_80"
    summary = report["summary"]
    assert list(summary) == ["cases", "mismatches", "out_of_bounds", "misaligned", "races", "uninitialized_reads",
                             "barrier_divergence"]
    assert summary["cases"] == len(report["cases"]) >= 10
    assert all(v == 0 for k, v in summary.items() if k != "cases"), summary
    for case in report["cases"]:
        assert set(case) == {"name", "kernel", "ok", "error", "findings"}
        assert case["ok"] and case["findings"] == [] and case["kernel"] in report["kernels"]
    # both kernels, all three tile shapes, fp32 and fp16, the NCHW entry's two transposes (x to NHWC, the
    # OIHW weight to OHWI) and the split-K reduction
    kernels = " ".join(report["kernels"])
    for pattern in (r"deformConvTiledIf", r"deformConvTiledI6__half", r"TileShapeILi128ELi256", r"TileShapeILi256ELi128",
                    r"TileShapeILi64ELi64", r"oihwToOhwiKernel", r"nchwToNhwcKernel", r"splitKReduceKernel"):
        assert re.search(pattern, kernels), pattern
    # counters of every launch: the tensor-core kernel issues mma, the tiled ones none
    for key, c in report["counters"].items():
        kernel = key.rsplit("/", 1)[0]
        assert kernel in report["kernels"] and c["ctas_run"] >= 1 and c["warp_instructions_per_cta"] > 0
        assert (c["mma_per_cta"] > 0) == ("deformConvTensorCoreI" in kernel), key  # the template, not the file
    # fp32 within 1e-5, fp16 within the RMS rule (and the tensor-core operand rounding shows: > 1.0)
    errors = {c["name"]: c["error"] for c in report["cases"]}
    assert all(errors[n] <= 1e-5 for n in errors if n.startswith("fp32"))
    assert all(0.5 < errors[n] <= 1.6 for n in errors if n.startswith("fp16"))


def seeded(tmp_path: Path, file: str, old: str, new: str) -> Path:
    """A scratch copy of plugins/src with ``old`` replaced by ``new`` (exactly once) in ``file``."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "plugins" / "src", src)
    path = src / file
    text = path.read_text()
    assert text.count(old) == 1, f"the seeded defect no longer applies to {file}: update this test"
    path.write_text(text.replace(old, new))
    return src


DEFECTS = {
    # the barrier ending each pipelined K step: the next step's gather overwrites the A/B buffers other warps
    # still read
    "barrier removed": ("deformConvTensorCore.cu", "        cpAsyncWaitAll();\n        __syncthreads();\n        chunk = ",
                        "        cpAsyncWaitAll();\n        chunk = ", "fp16-nchw-tile-n256", "races"),
    # the epilogue stores row == rows: past the end of y in the last pixel tile
    "bound moved by one": ("deformConvTensorCore.h", "            if (r >= tile.rows)\n",
                           "            if (r > tile.rows)\n", "fp16-nchw-tile-n256", "out_of_bounds"),
    # the 16-byte channel-vector gather starts one half later
    "misaligned vector load": ("deformConvTensorCore.h", "uint16_t const* const base = chunkBase + loaded * kVector;",
                               "uint16_t const* const base = chunkBase + loaded * kVector + 1;",
                               "fp16-nhwc-tile-n256-c24", "misaligned"),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_seeded_defect_is_reported_in_its_category(tmp_path, defect):
    file, old, new, case, category = DEFECTS[defect]
    src = seeded(tmp_path, file, old, new)
    rc, report, err = run_check("--src", str(src), "--cases", case)
    assert rc == 1, err[-3000:]
    assert report["summary"][category] > 0, (report["summary"], err[-2000:])
    found = [f for c in report["cases"] for f in c["findings"] if f.get("category") == category]
    assert found and all("ptx_line" in f or f.get("kind") == "order-dependent result" for f in found)


def test_a_kernel_no_case_launches_is_an_error_naming_it(tmp_path):
    src = seeded(tmp_path, "deformConvKernel.cu", '#include <cuda_fp16.h>\n',
                 '#include <cuda_fp16.h>\n\n__global__ void kernelWithoutACase(float* p)\n{\n'
                 '    p[threadIdx.x] = 0.0f;\n}\n')
    rc, report, err = run_check("--src", str(src), "--cases", "no-such-case")
    assert rc == 1 and report == {}
    assert "kernelWithoutACase" in err and "no case of ptx_check.py launches it" in err


def test_a_cpu_build_that_sums_in_another_order_is_a_mismatch(tmp_path):
    # The CPU build runs a tile's last K step's two slices in the other order: its fp32 sums round
    # differently, while the device code and the float64 reference are untouched (the RMS rule still holds).
    src = seeded(tmp_path, "deformConvHost.cpp",
                 "    for (int32_t phase = 0; phase < Shape::Phases; ++phase)\n    {\n        mmaPhase<Shape>(s, tile, "
                 "stage, phase, cta);",
                 "    for (int32_t phase = Shape::Phases - 1; phase >= 0; --phase)\n    {\n        mmaPhase<Shape>(s, "
                 "tile, stage, phase, cta);")
    rc, report, err = run_check("--src", str(src), "--cases", "fp16-nhwc-tile-n256-c24")
    assert rc == 1, err[-3000:]
    assert report["summary"]["mismatches"] == 1
    details = [f["detail"] for c in report["cases"] for f in c["findings"] if f.get("category") == "mismatch"]
    assert len(details) == 1 and "the CPU build's outputs differ from the device code's" in details[0]
    assert "RMS" not in details[0]


def test_device_code_built_for_sm_90a_runs_through_the_same_harness():
    # --ptx-arch: the host code stays the sm_80 build, the device code is the same sources' PTX for
    # compute_90a (the target of sm_90-only code such as wgmma)
    rc, report, err = run_check("--ptx-arch", "sm_90a", "--cases", "fp16-nhwc-1x1-groups3")
    assert rc == 0, err[-3000:]
    assert "built the device code of deformConvKernel.cu, deformConvTensorCore.cu, deformConvWgmma.cu for sm_90a" in err
    (case,) = report["cases"]
    assert case["ok"] and case["findings"] == [] and "deformConvTensorCoreI" in case["kernel"]
    # the stand-in runtime's sm_90 device (H100 SXM): 132 SMs, 227 KB of shared memory per block
    from ptxexec.capture import DEVICES

    assert DEVICES["sm_90"]["sms"] == 132 and DEVICES["sm_90"]["shared_optin"] == 227 * 1024


def test_separately_compiled_ptx_takes_the_host_builds_kernel_names():
    # nvcc names a file's anonymous namespace afresh per path and build: the sm_90a PTX of the same
    # sources (or of a scratch copy) must still run under the names the host code launches
    from ptxexec.capture import _host_kernel_names

    host = "_ZN8deformrt2tc56_GLOBAL__N__4ff77004_23_deformConvTensorCore_cu_c8015e9420deformConvTensorCoreIiEEvv"
    other = host.replace("4ff77004", "a1675951").replace("c8015e94", "0b9d2e11")
    unrelated = "_ZN8deformrt2tc51_GLOBAL__N__ea729eb7_18_deformConvWgmma_cu_0c2de3ed15deformConvWgmmaIiEEvv"
    text = f".entry {other}(\n.param .u32 {other}_param_0\n)\n.entry {unrelated}(\n)\n"
    renamed = _host_kernel_names(text, [host])
    assert renamed.count(host) == 2 and other not in renamed and unrelated in renamed
