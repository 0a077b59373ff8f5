"""scripts/kernel_model.py's arithmetic (no executor run): the dense-conv floors against the figures
dcn-performance.md derives from the vendors' specifications, wave quantisation, occupancy limits, and
the largest throughput term winning."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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
