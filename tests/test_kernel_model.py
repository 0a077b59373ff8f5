"""scripts/kernel_model.py: its arithmetic (the dense-conv floors against the figures dcn-performance.md
derives from the vendors' specifications, wave quantisation, occupancy limits, the largest throughput term
winning, a cp.async's store counted once, the L2 reuse window from the sampled pixels), then the model
itself on ResNet-101's DCN layers (one interior CTA per launch run by the PTX executor; needs nvcc): every
layer on every GPU below TensorRT OSS's plugin modelled the same way, and within the ratios to the dense
floor the kernel reaches."""

from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import kernel_model  # noqa: E402

GPUS = kernel_model.GPUS


def test_the_three_layers_are_resnet101s_dcn_shapes():
    assert kernel_model.layers() == {"res3": (128, 100, 168), "res4": (256, 50, 84), "res5": (512, 25, 42)}


@pytest.mark.parametrize("gpu, floor_us", [("H100 SXM", 5.0), ("Jetson AGX Orin", 117.0)])
def test_dense_floor_matches_the_documented_compute_floor(gpu, floor_us):
    # dcn-performance.md: "compute floor 5 us per layer" on H100, "117 us per layer" on Orin;
    # every layer is 4.96 GFLOP (dense-equivalent).
    for c, h, w in kernel_model.layers().values():
        assert kernel_model.dense_floor_us(GPUS[gpu], c, h, w) == pytest.approx(floor_us, rel=0.02)


def test_partial_waves_count_the_busiest_sm():
    gpu = GPUS["H100 SXM"]
    per_cta = {"warp_instructions": 4000.0, "mma": 0.0, "shared_wavefronts": 0.0, "global_sectors": 0.0}
    one_wave = kernel_model.model_time(gpu, per_cta, 132, 0.0)
    two_waves = kernel_model.model_time(gpu, per_cta, 136, 0.0)   # 4 SMs get a second CTA
    assert one_wave["bound"] == two_waves["bound"] == "issue"
    assert two_waves["us"] == pytest.approx(2 * one_wave["us"])
    assert one_wave["us"] == pytest.approx(1000 / (gpu.clock_ghz * 1e3))   # 4000 / 4 schedulers, in us
    assert two_waves["wave_efficiency"] == pytest.approx(136 / 264, abs=1e-3)


def test_the_largest_term_wins():
    gpu = GPUS["A100"]
    per_cta = {"warp_instructions": 100.0, "mma": 10_000.0, "shared_wavefronts": 10.0, "global_sectors": 40.0}
    m = kernel_model.model_time(gpu, per_cta, 108, 1e3)
    assert m["bound"] == "tensor"
    # 10,000 mma x 4096 FLOP at 2048 FLOP per clock per SM (312 TFLOPS / 108 SMs / 1.41 GHz)
    assert m["us"] == pytest.approx(10_000 * 4096 / 2048 / 1.41e3, rel=0.01)
    assert m["terms_us"]["dram"] == pytest.approx(1e3 / 1555e9 * 1e6, abs=0.01)


def test_occupancy_limits():
    a100 = GPUS["A100"]
    # 128x128 tile: 256 threads, 68,608 B dynamic shared memory, 119 registers: 2 CTAs by registers and
    # shared memory; 74 registers and 34,304 B allow 3 (the 64x64 tile, as ptxas reports them)
    assert kernel_model.occupancy(a100, 256, 68608, 119) == 2
    assert kernel_model.occupancy(a100, 256, 34304, 74) == 3
    assert kernel_model.occupancy(a100, 256, 0, None) == 8


def test_trt_oss_model_is_never_below_the_dense_floor():
    for gpu in GPUS.values():
        for c, h, w in kernel_model.layers().values():
            trt = kernel_model.trt_oss_us(gpu, c, h, w)
            assert trt["us"] > kernel_model.dense_floor_us(gpu, c, h, w)
            assert trt["us"] == pytest.approx(trt["im2col_us"] + trt["gemm_us"] + trt["bias_us"], abs=0.05)


def test_a_cp_async_store_is_not_counted_twice_in_the_l1_term():
    # cp.async brings data from L2 into shared memory in one pass through the L1: its global sectors count, its
    # shared-memory store wavefronts do not count again.
    gpu = GPUS["A100"]
    per_cta = {"warp_instructions": 0.0, "mma": 0.0, "shared_wavefronts": 100.0, "cp_async_store_wavefronts": 40.0,
               "global_sectors": 80.0}
    m = kernel_model.model_time(gpu, per_cta, 108, 0.0)
    assert m["bound"] == "l1_shared"
    assert m["us"] == pytest.approx((100 - 40 + 80 / 4) / (gpu.clock_ghz * 1e3))


def test_wgmma_counts_at_the_full_tensor_peak_and_its_operands_in_the_l1_term():
    h100 = GPUS["H100 SXM"]
    clock_us = h100.clock_ghz * 1e3
    # 100 m64n256k16 per CTA (2 x 64 x 256 x 16 FLOP each) at 4096 FLOP per clock per SM, no mma.sync fraction
    wgmma_flop = 100 * 2 * 64 * 256 * 16
    per_cta = {"warp_instructions": 0.0, "mma": 0.0, "shared_wavefronts": 0.0, "global_sectors": 0.0,
               "wgmma_flop": float(wgmma_flop), "wgmma_shared_wavefronts": 0.0}
    m = kernel_model.model_time(h100, per_cta, 132, 0.0)
    assert m["bound"] == "tensor"
    assert h100.tensor_flop_per_clock_sm == pytest.approx(4096, rel=1e-3)
    assert m["us"] == pytest.approx(wgmma_flop / 4096 / clock_us, rel=1e-3)
    # the same FLOP by mma.sync takes 3/2 as long (2/3 of the peak); both together add up
    as_mma = dict(per_cta, wgmma_flop=0.0, mma=wgmma_flop / kernel_model.MMA_FLOP)
    assert kernel_model.model_time(h100, as_mma, 132, 0.0)["us"] == pytest.approx(1.5 * m["us"], rel=1e-3)
    both = dict(as_mma, wgmma_flop=float(wgmma_flop))
    assert kernel_model.model_time(h100, both, 132, 0.0)["us"] == pytest.approx(2.5 * m["us"], rel=1e-3)
    assert kernel_model.mma_equivalents(both) == pytest.approx(2 * wgmma_flop / 4096)
    # its shared-memory operand wavefronts join the L1/shared term
    l1 = dict(per_cta, wgmma_flop=0.0, shared_wavefronts=30.0, global_sectors=40.0, wgmma_shared_wavefronts=500.0)
    m = kernel_model.model_time(h100, l1, 132, 0.0)
    assert m["bound"] == "l1_shared" and m["us"] == pytest.approx((30 + 40 / 4 + 500) / clock_us)


def _tensors(h, w, offset_value):
    x = torch.zeros(1, 32, h, w, dtype=torch.float16)
    weight = torch.zeros(32, 32, 3, 3, dtype=torch.float16)
    offset = torch.full((1, 18, h, w), offset_value, dtype=torch.float16)
    return x, weight, offset


def test_reuse_window_counts_the_sampled_pixels_of_the_resident_ctas():
    gpu = GPUS["Jetson AGX Orin"]
    chunk_weights = 9 * 64 * 32 * 2  # one 32-channel chunk of a 64-channel tile, 9 taps, fp16
    # zero offsets, 16 resident CTAs of 32 pixels covering a 10 x 20 map: every pixel is a corner of some tap
    tensors = _tensors(10, 20, 0.0)
    window = kernel_model.wave_window_bytes(tensors, 32, 64, 7, (7, 1, 1), 32, 1, gpu)
    assert window == 10 * 20 * 32 * 2 + chunk_weights
    # the first output row only (20 pixels): its taps reach input rows 0 and 1 (-1 is outside), and the
    # bottom corners of row 1's samples reach row 2
    window = kernel_model.wave_window_bytes(tensors, 32, 64, 1, (1, 1, 1), 20, 1, gpu)
    assert window == 3 * 20 * 32 * 2 + chunk_weights
    # every sampling point far outside: the gather loads pixel 0 only
    window = kernel_model.wave_window_bytes(_tensors(10, 20, 300.0), 32, 64, 7, (7, 1, 1), 32, 1, gpu)
    assert window == 32 * 2 + chunk_weights
    # two channel tiles among the resident CTAs: both tiles' chunk weights
    window = kernel_model.wave_window_bytes(tensors, 32, 64, 14, (7, 2, 1), 32, 1, gpu)
    assert window == 10 * 20 * 32 * 2 + 2 * chunk_weights


def test_corners_are_the_bilinear_corners_of_each_sampling_point():
    # an independent count, point by point, on random offsets that put many points near and past the border
    h, w = 6, 9
    offset = torch.randn(1, 18, h, w) * 2.5
    expected_in_image, expected_loads = 0, []
    for tap in range(9):
        for pixel in range(h * w):
            oy, ox = divmod(pixel, w)
            y = oy - 1 + tap // 3 + float(offset[0, 2 * tap, oy, ox])
            x = ox - 1 + tap % 3 + float(offset[0, 2 * tap + 1, oy, ox])
            sampled = -1 <= math.floor(y) < h and -1 <= math.floor(x) < w
            for dy in (0, 1):
                for dx in (0, 1):
                    cy, cx = math.floor(y) + dy, math.floor(x) + dx
                    expected_in_image += sampled and 0 <= cy < h and 0 <= cx < w
                    expected_loads.append((min(max(cy, 0), h - 1), min(max(cx, 0), w - 1), sampled))
    found = list(kernel_model.corners(offset, h, w, h * w))
    assert sum(int(inside.sum()) for *_, inside in found) == expected_in_image
    assert 0 < expected_in_image < 4 * 9 * h * w
    loads = sorted((int(cy[t, p]), int(cx[t, p]), bool(sampled[t, p]))
                   for cy, cx, sampled, _ in found for t in range(9) for p in range(h * w))
    assert loads == sorted(expected_loads)


def test_tiling_floor_counts_corners_weights_and_wgmma_operand_bytes():
    h100, a100 = GPUS["H100 SXM"], GPUS["A100"]
    c, h, w = 128, 100, 168   # res3
    points = 9 * h * w
    flop = 2 * h * w * c * c * 9
    # every corner of every point in the image, 132 pixel tiles, one channel tile, wgmma: 4 corners x 128
    # channels x 2 bytes per point, the weights once per pixel tile, 1 byte of B per 32 multiply-adds
    floor = kernel_model.tiling_floor_us(h100, c, h, w, 4 * points, (132, 1, 1), 1, wgmma=True)
    l1_bytes = 4 * points * c * 2 + 132 * c * c * 9 * 2 + flop / 64
    assert floor["bound"] == "l1_shared"
    assert floor["us"] == pytest.approx(l1_bytes / 128 / 132 / (h100.clock_ghz * 1e3), rel=1e-9)
    # the 128-channel layer on Hopper: the corners and B reads alone exceed 1.5x the dense floor, so no
    # kernel of this tiling meets issue 18's 1.5x there; 256 channels halve the corner bytes per FLOP
    dense = kernel_model.dense_floor_us(h100, c, h, w)
    assert floor["us"] / dense > 1.5
    res4 = kernel_model.tiling_floor_us(h100, 256, 50, 84, 4 * 9 * 50 * 84, (33, 4, 1), 1, wgmma=True)
    assert res4["us"] / kernel_model.dense_floor_us(h100, 256, 50, 84) < 1.3
    # mma.sync: no operand term, the tensor time at its fraction of the peak; a second channel tile gathers
    # every point again; partial waves count the busiest SM
    sync = kernel_model.tiling_floor_us(a100, c, h, w, 0, (108, 1, 1), 1, wgmma=False)
    assert sync["bound"] == "tensor"
    assert sync["us"] == pytest.approx(flop / a100.tensor_flop_per_clock_sm / 108 / (a100.clock_ghz * 1e3))
    two_tiles = kernel_model.tiling_floor_us(a100, c, h, w, 4 * points, (108, 2, 1), 2, wgmma=False)
    assert two_tiles["l1_mb"]["corners"] == pytest.approx(2 * 4 * points * c * 2 / 1e6, abs=0.05)
    assert kernel_model.tiling_floor_us(a100, c, h, w, 0, (109, 1, 1), 1, wgmma=False)["us"] \
        == pytest.approx(2 * 108 / 109 * sync["us"])


# The modelled ratios to the dense floor the kernel reaches (scripts/kernel_model.py with one interior CTA
# per launch): the target is 1.5 everywhere. A100 and Orin meet it on every layer, bound by
# shared/L1 bandwidth; res3 (128 output channels: twice the gather bytes per mma of the 256-channel shape)
# is the tightest. H100 (the wgmma kernel) does not: at 128 bytes per clock per SM its corner loads, its
# weight fill and wgmma's shared-memory B reads alone are 1.2 to 1.7x the floor (the tiling floor), and
# the prologue tables, issue slots (res3) and the split-K reduction come on top.
MODELED_BOUND = {("res3", "H100 SXM"): 2.6, ("res4", "H100 SXM"): 2.0, ("res5", "H100 SXM"): 2.2,
                 ("res3", "A100"): 1.5, ("res4", "A100"): 1.3, ("res5", "A100"): 1.3,
                 ("res3", "Jetson AGX Orin"): 1.5, ("res4", "Jetson AGX Orin"): 1.3,
                 ("res5", "Jetson AGX Orin"): 1.5}


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found (the model runs the kernels' PTX)")
def test_modeled_layers_against_the_dense_floor_and_tensorrt_oss(capsys):
    assert kernel_model.main(["--json", "--ctas", "1", "--no-registers"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "MODELED" in report["note"]
    rows = {(r["layer"], r["gpu"]): r for r in report["layers"]}
    assert set(rows) == set(MODELED_BOUND)
    for key, r in rows.items():
        print(key, r["kernel"], r["grid"], r["bound"], r["modeled_us"], r["ratio_vs_dense_floor"], r["ratio_vs_trt_oss"])
        assert r["findings"] == []
        # the launches' own terms add up to the layer's time; every launch below TensorRT OSS's plugin
        assert r["modeled_us"] == pytest.approx(sum(launch["modeled_us"] for launch in r["launches"]), abs=0.05)
        assert r["ratio_vs_trt_oss"] < 1.0, key
        assert r["ratio_vs_dense_floor"] <= MODELED_BOUND[key], key
        # no kernel of the tiling beats its floor, ours included
        assert 1.0 <= r["tiling_floor_vs_dense_floor"] <= r["ratio_vs_dense_floor"], key
        assert r["wave_efficiency"] >= 0.85, key


def test_bad_arguments_are_one_line_errors(capsys):
    # as the scripts' shared boundary reports them (exporter.cli.options.run_script, exporter.util.usage.ScriptParser)
    assert kernel_model.run_script(kernel_model.main, ["--gpus", "H100"]) == 1
    assert capsys.readouterr().err == ("error: --gpus: unknown GPU 'H100' (did you mean 'H100 SXM'?); choose from "
                                       "H100 SXM, A100, Jetson AGX Orin\n")
    assert kernel_model.run_script(kernel_model.main, ["--src", "/nonexistent/src"]) == 1
    assert capsys.readouterr().err == "error: --src /nonexistent/src is not a directory\n"
    with pytest.raises(SystemExit) as exit_info:
        kernel_model.main(["--ctas", "0"])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    assert captured.err == "error: argument --ctas: must be >= 1, got 0\n" and captured.out == ""
