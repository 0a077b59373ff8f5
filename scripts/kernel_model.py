"""A performance MODEL (not a measurement) of deformrt's fp16 DCN kernel for ResNet-101's DCN layers,
built from the PTX executor's counters, beside the dense-convolution floor of the same shape and
TensorRT OSS's im2col + Hgemm DCN plugin modelled the same way.

    python scripts/kernel_model.py [--json] [--ctas 4] [--gpus "H100 SXM,A100,Jetson AGX Orin"]
                                   [--no-registers] [--src DIR]

For each layer (res3/res4/res5 conv2 at 800x1344, batch 1, fp16, 3x3, modulated, no bias: the shapes of
scripts/bench_dcn.py) and each GPU below, the plugin's NHWC entry point (its kHWC8 path, the OHWI
weights read in place) plans its launch for that GPU's SM count, shared memory and L2 (the real launch
code, through the stand-in CUDA runtime); the executor runs a few CTAs of every launch it makes (the
convolution kernel, and the reduction when it splits K: the first CTA and random ones) and their
counters, scaled by the CTA count, give per launch:
  issue      PTX warp-instructions but ld.param / (4 schedulers x clock)   (ptxas may expand or fuse: PTX != SASS)
  tensor     mma.sync m16n8k16 x 4096 FLOP / (fp16 tensor FLOP per clock x mma.sync efficiency)
             + wgmma FLOP (2 x 64 x N x 16 per m64nNk16) / fp16 tensor FLOP per clock (wgmma reaches the peak)
  L1/shared  shared-memory wavefronts + global 32-byte sectors / 4 + the 128-byte wavefronts of wgmma's
             shared-memory operands (A when from shared memory, B), one wavefront per clock; a cp.async's
             shared-memory store is not counted again (the copy passes the L1 once)
  DRAM       the launch's compulsory bytes (inputs it reads first, outputs it writes) / bandwidth; plus
             the share of its re-read global sectors the L2 cannot hold: 1 - (L2 / 2) / (the bytes the
             CTAs resident at once touch), the latter computed from the layer's offsets (every input pixel
             whose channels the first wave's sampling points load) plus weights, offsets and mask; split-K
             partial sums go to DRAM (written, then read) when they exceed half the L2
per SM with the busiest SM's CTAs (ceil(CTAs / SMs): partial waves count), the largest term wins; the
layer's time is the sum over its launches (they run one after another).
Latency (dependent loads, barriers, occupancy too low to hide them) is NOT modelled: the modelled time
is a throughput bound, optimistic for latency-bound code. `scripts/gpu_check.sh` prints measured times
beside these numbers when a GPU is available, to calibrate the model.

Dense floor: 2 N Ho Wo Cout Cin 9 FLOP at the GPU's full dense fp16 tensor peak, or the compulsory bytes
of x, weights and y at full bandwidth, whichever is longer.
Tiling floor (tiling_floor_us): the least any kernel with the launch's tiling can take, counting only the
bytes it cannot avoid through each SM's L1 (in-image bilinear corners, each CTA's weights, wgmma's shared
B operand) against its tensor time: what stays between it and ours is what the kernel adds.
TensorRT OSS (modelled from its known structure, dcn-performance.md "How everyone does it today"):
im2col (one thread per (channel, pixel), IM2COL_INSTRUCTIONS per (channel, pixel, tap), column buffer
written to DRAM), cuBLAS Hgemm (at GEMM_EFFICIENCY of peak, column buffer read back), bias add.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from exporter.cli.options import pick_names, run_script  # noqa: E402
from exporter.util.usage import ScriptParser, first_paragraph, whole_number  # noqa: E402
from models.errors import DeformRTError  # noqa: E402

MMA_FLOP = 2 * 16 * 8 * 16          # one mma.sync.m16n8k16
ISSUE_PER_CLOCK = 4                 # warp schedulers per SM (Volta through Hopper)
L1_BYTES_PER_CLOCK = 128            # one shared/L1 wavefront per clock per SM

# TensorRT OSS modulated DCN plugin, modelled (not run): PTX-level instructions per (channel, pixel, tap)
# of its im2col (3 loads of dy/dx/mask, coordinates, 4 bounds checks, 4 corner loads, blend, store,
# index math), L1 wavefronts per warp-level load (pixels are consecutive threads: near-coalesced), and
# cuBLAS' fraction of peak at these GEMM shapes.
IM2COL_INSTRUCTIONS = 60
IM2COL_LOADS = 7
IM2COL_WAVEFRONTS_PER_LOAD = 1.5
GEMM_EFFICIENCY = 0.75


@dataclasses.dataclass(frozen=True)
class Gpu:
    arch: str
    sms: int
    clock_ghz: float            # the clock the tensor peak below is quoted at
    tensor_tflops: float        # dense fp16 tensor-core peak (fp32 accumulation)
    mma_sync_fraction: float    # share of that peak mma.sync can reach
    dram_gbs: float
    l2_mb: float
    smem_per_sm_kb: int
    source: str

    @property
    def tensor_flop_per_clock_sm(self) -> float:
        return self.tensor_tflops * 1e12 / (self.sms * self.clock_ghz * 1e9)


# The GPUs and their sources, in one table.
GPUS = {
    "H100 SXM": Gpu("sm_90", 132, 1.83, 989.4, 2 / 3, 3350, 50, 228,
                    "NVIDIA H100 Tensor Core GPU datasheet (SXM5: 989.4 dense fp16 TFLOPS, 3.35 TB/s HBM3) and "
                    "Hopper whitepaper (132 SMs, 50 MB L2, 228 KB shared memory/L1 per SM); 989.4 TFLOPS = 132 SMs "
                    "x 4096 FLOP/clock x 1.83 GHz; mma.sync (not wgmma) at about 2/3 of it: dcn-performance.md"),
    "A100": Gpu("sm_80", 108, 1.41, 312, 1.0, 1555, 40, 164,
                "NVIDIA A100 datasheet (SXM4 40 GB: 312 dense fp16 TFLOPS, 1,555 GB/s HBM2) and Ampere "
                "whitepaper (108 SMs, 1,410 MHz boost, 40 MB L2, 164 KB shared memory per SM)"),
    "Jetson AGX Orin": Gpu("sm_87", 16, 1.3, 42.5, 1.0, 204.8, 4, 164,
                           "NVIDIA Jetson AGX Orin 64GB data sheet (2048 CUDA cores = 16 SMs, 64 tensor cores, "
                           "1.3 GHz GPU, 204.8 GB/s LPDDR5, 4 MB L2); 42.5 dense fp16 TFLOPS = the GPU's 170 "
                           "sparse INT8 TOPS / 4 (dcn-performance.md: about 42)"),
}
MAX_THREADS_PER_SM = 2048
REGISTERS_PER_SM = 65536


def layers() -> dict:
    """ResNet-101's DCN conv2 layers at 800x1344 (the stages bench_dcn.py times)."""
    from bench_dcn import STAGES
    names = {"conv3": "res3", "conv4": "res4", "conv5": "res5"}
    return {names[k]: v for k, v in STAGES.items()}


# -------------------------------------------------------------------------------------------------
# The model

def occupancy(gpu: Gpu, threads: int, shared_bytes: int, registers: Optional[int]) -> int:
    """Resident CTAs per SM: threads, shared memory (1 KB reserved per CTA) and registers (per warp, in
    units of 256)."""
    ctas = MAX_THREADS_PER_SM // threads
    ctas = min(ctas, gpu.smem_per_sm_kb * 1024 // (shared_bytes + 1024))
    if registers:
        per_warp = math.ceil(registers * 32 / 256) * 256
        ctas = min(ctas, REGISTERS_PER_SM // per_warp // (threads // 32))
    return max(ctas, 0)


def model_time(gpu: Gpu, per_cta: dict, ctas: int, dram_bytes: float) -> dict:
    """Modelled microseconds of a launch of ``ctas`` CTAs with the per-CTA counters ``per_cta``."""
    clock = gpu.clock_ghz * 1e9
    issue = per_cta["warp_instructions"] / ISSUE_PER_CLOCK
    tensor = (per_cta["mma"] * MMA_FLOP / (gpu.tensor_flop_per_clock_sm * gpu.mma_sync_fraction)
              + per_cta.get("wgmma_flop", 0.0) / gpu.tensor_flop_per_clock_sm)
    l1 = (per_cta["shared_wavefronts"] - per_cta.get("cp_async_store_wavefronts", 0.0) + per_cta["global_sectors"] / 4
          + per_cta.get("wgmma_shared_wavefronts", 0.0))
    busiest = math.ceil(ctas / gpu.sms)
    terms = {"issue": busiest * issue / clock, "tensor": busiest * tensor / clock, "l1_shared": busiest * l1 / clock,
             "dram": dram_bytes / (gpu.dram_gbs * 1e9)}
    bound = max(terms, key=terms.get)
    return {"us": terms[bound] * 1e6, "bound": bound, "terms_us": {k: round(v * 1e6, 2) for k, v in terms.items()},
            "wave_efficiency": round(ctas / (busiest * gpu.sms), 3)}


def mma_equivalents(per_cta: dict) -> float:
    """mma.sync m16n8k16 plus wgmma counted in m16n8k16s of the same FLOP (one m64nNk16 = 4 x N/8), so
    instructions per mma stay comparable between the two."""
    return per_cta["mma"] + per_cta.get("wgmma_flop", 0.0) / MMA_FLOP


CHUNK_CHANNELS = 32  # the kernel's K step: 32 channels of one tap (deformConvTensorCore.h kStepK)


def wave_window_bytes(tensors, c: int, bn: int, ctas: int, grid: tuple, m_extent: int, resident: int,
                      gpu: Gpu) -> float:
    """The bytes between a global sector's first read and its re-reads (its LRU reuse distance, the quantity
    an LRU cache's hits depend on: Mattson et al., "Evaluation techniques for storage hierarchies", IBM
    Systems Journal 9(2), 1970), for the CTAs resident at once. CTAs start in launch order, pixel tiles
    fastest (the order CUTLASS's threadblock rasterization relies on for L2 reuse: CUTLASS
    media/docs/efficient_gemm.md), so the first ``min(CTAs, SMs x resident)`` cover ``min(those, x tiles) x
    m_extent`` consecutive output pixels. A sampled x sector is re-read by the same CTA at the chunk's
    other taps and by the resident CTAs of the neighbouring pixel tiles and of the other output-channel
    tiles, all within the 9 steps of one 32-channel chunk; a weight sector by every resident CTA of the
    same channel tile and K range at about the same step. In between, the resident CTAs touch: every input
    pixel their sampling points load a corner from (clamped into the image as the prologue does; a point
    outside it loads pixel 0), 32 channels of each, and the chunk's weights for each distinct (channel
    tile, K split) among them."""
    x, offset = tensors[0], tensors[2]
    _, _, h, w = x.shape
    ho, wo = offset.shape[2], offset.shape[3]
    concurrent = min(ctas, gpu.sms * max(resident, 1))
    pixels = min(min(concurrent, grid[0]) * m_extent, ho * wo)
    distinct_y = min(grid[1], -(-concurrent // grid[0]))
    touched = set()
    for cy, cx, sampled, _ in corners(offset, h, w, pixels):
        touched.update(np.where(sampled, cy * w + cx, 0).ravel().tolist())
    chunk = min(c, CHUNK_CHANNELS)
    return len(touched) * chunk * 2 + 9 * bn * chunk * 2 * distinct_y


def corners(offset, h: int, w: int, pixels: int):
    """The four bilinear corners of every 3x3 sampling point (stride 1, padding 1, one offset group) of the
    first ``pixels`` output pixels: per corner (arrays over tap x pixel), its row and column clamped into the
    image (what the kernel's prologue loads), whether the point is sampled at all (inside (-1, h) x (-1, w)),
    and whether the corner itself lies in the image (the only corners a kernel must load)."""
    ho, wo = offset.shape[2], offset.shape[3]
    off = offset[0].float().numpy().reshape(9, 2, ho * wo)[:, :, :pixels]
    oy, ox = np.divmod(np.arange(pixels), wo)
    ki, kj = np.divmod(np.arange(9), 3)
    fy = np.floor(oy[None, :] - 1 + ki[:, None] + off[:, 0])
    fx = np.floor(ox[None, :] - 1 + kj[:, None] + off[:, 1])
    sampled = (fy >= -1) & (fy < h) & (fx >= -1) & (fx < w)
    for dy in (0, 1):
        for dx in (0, 1):
            cy, cx = fy + dy, fx + dx
            in_image = sampled & (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
            yield np.clip(cy, 0, h - 1).astype(np.int64), np.clip(cx, 0, w - 1).astype(np.int64), sampled, in_image


def tiling_floor_us(gpu: Gpu, c: int, h: int, w: int, in_image_corners: int, grid: tuple, channel_tiles: int,
                    wgmma: bool) -> dict:
    """The least time any kernel with this launch's tiling can take on ``gpu`` (throughput terms only): the
    tensor time of the layer's FLOP, or the bytes that must pass each SM's L1/shared memory at
    L1_BYTES_PER_CLOCK, whichever is longer, on the busiest SM. Those bytes are
      corners   every in-image bilinear corner of every sampling point, C fp16 channels, once per output-channel
                tile (``channel_tiles``: the re-gather);
      weights   every weight once per pixel tile (grid[0]): a CTA brings its channel tile's K range into shared
                memory, through the L1 (cp.async) or into it (TMA), once;
      operand   with wgmma, its shared-memory B operand: N x 16 fp16 per m64nNk16, 1 byte per 32 multiply-adds
                whatever N (the ISA fixes M at 64; A may come from registers); mma.sync gets no operand term
                (its fragments could in principle stay in registers).
    Nothing else (prologue tables, offsets, A staging, split-K partial sums) is counted, so no kernel of this
    tiling beats it."""
    clock = gpu.clock_ghz * 1e9
    ctas = grid[0] * grid[1] * grid[2]
    busiest = math.ceil(ctas / gpu.sms)
    flop = 2 * h * w * c * c * 9
    tensor_rate = gpu.tensor_flop_per_clock_sm * (1.0 if wgmma else gpu.mma_sync_fraction)
    terms = {"corners": in_image_corners * c * 2 * channel_tiles, "weights": grid[0] * 2 * c * c * 9,
             "operand": flop / 2 / 32 if wgmma else 0.0}
    l1_clocks = sum(terms.values()) / L1_BYTES_PER_CLOCK
    tensor_clocks = flop / tensor_rate
    per_cta = max(l1_clocks, tensor_clocks) / ctas
    return {"us": busiest * per_cta / clock * 1e6, "bound": "l1_shared" if l1_clocks > tensor_clocks else "tensor",
            "l1_mb": {k: round(v / 1e6, 1) for k, v in terms.items()}}


def dense_floor_us(gpu: Gpu, c: int, h: int, w: int) -> float:
    flop = 2 * h * w * c * c * 9
    bytes_ = 2 * (c * h * w + c * c * 9 + c * h * w)
    return max(flop / (gpu.tensor_tflops * 1e12), bytes_ / (gpu.dram_gbs * 1e9)) * 1e6


def trt_oss_us(gpu: Gpu, c: int, h: int, w: int) -> dict:
    """TensorRT OSS's modulated DCN (im2col, Hgemm, bias), modelled the same way."""
    clock = gpu.clock_ghz * 1e9
    elements = c * 9 * h * w
    col_bytes = 2 * elements
    warps = elements / 32
    im2col_issue = warps * IM2COL_INSTRUCTIONS / ISSUE_PER_CLOCK / gpu.sms / clock
    im2col_l1 = warps * IM2COL_LOADS * IM2COL_WAVEFRONTS_PER_LOAD / gpu.sms / clock
    im2col_dram = (col_bytes + 2 * c * h * w + 2 * 27 * h * w) / (gpu.dram_gbs * 1e9)
    im2col = max(im2col_issue, im2col_l1, im2col_dram)
    gemm_flop = 2 * c * h * w * c * 9
    gemm = max(gemm_flop / (gpu.tensor_tflops * 1e12 * GEMM_EFFICIENCY),
               (col_bytes + 2 * c * c * 9 + 2 * c * h * w) / (gpu.dram_gbs * 1e9))
    bias = 2 * 2 * c * h * w / (gpu.dram_gbs * 1e9)
    return {"us": (im2col + gemm + bias) * 1e6, "im2col_us": round(im2col * 1e6, 2), "gemm_us": round(gemm * 1e6, 2),
            "bias_us": round(bias * 1e6, 2)}


# -------------------------------------------------------------------------------------------------
# Counters from the executor

def register_counts(src: Path) -> dict:
    """(arch number, short kernel name) -> registers, from ptxas (scripts/kernel_resources.py)."""
    import tempfile

    import kernel_resources
    archs = tuple(sorted({int(g.arch.removeprefix("sm_")) for g in GPUS.values()}))
    with tempfile.TemporaryDirectory() as tmp:
        rows, _ = kernel_resources.collect(archs, Path(tmp), src)
    return {(r.arch, r.kernel): r.registers for r in rows}


def run_launch(checker, mem, rec, n_ctas: int, seed: int = 17) -> dict:
    """Counters of ``n_ctas`` CTAs (the middle one, an interior tile of a whole pixel range, and random
    ones) of the recorded launch ``rec``."""
    from ptxexec import CLASSES

    grid = rec.grid
    total = grid[0] * grid[1] * grid[2]
    rng = np.random.default_rng(seed)
    middle = total // 2
    others = np.array([i for i in range(total) if i != middle])
    picks = [middle] + sorted(int(i) for i in rng.choice(others, size=min(n_ctas, total) - 1, replace=False))
    ctas = [(i % grid[0], i // grid[0] % grid[1], i // (grid[0] * grid[1])) for i in picks]
    launcher = checker.launcher(rec.kernel, mem)
    result = launcher.run(rec.kernel, grid, rec.block, rec.dynamic_shared, rec.params, ctas=ctas)
    n = result.ctas_run
    mem_c = result.memory
    per_class = result.per_cta_instructions.sum(axis=1) / n
    return {
        "kernel": rec.kernel, "grid": grid, "block": rec.block, "dynamic_shared": rec.dynamic_shared, "ctas": total,
        "ctas_run": n, "findings": [str(f) for f in result.findings], "seconds": round(result.seconds, 1),
        # ld.param becomes a constant-bank operand in SASS: no issue slot of its own
        "per_cta": {"warp_instructions": result.warp_instructions / n - float(per_class[CLASSES.index("ld.param")]),
                    "mma": float(per_class[CLASSES.index("mma")]),
                    "wgmma_flop": mem_c["wgmma_flop"] / n,
                    "wgmma_shared_wavefronts": mem_c["wgmma_shared_wavefronts"] / n,
                    "shared_wavefronts": (mem_c["shared_load_wavefronts"] + mem_c["shared_store_wavefronts"]) / n,
                    "cp_async_store_wavefronts": mem_c["cp_async_store_wavefronts"] / n,
                    "global_sectors": (mem_c["global_load_sectors"] + mem_c["global_store_sectors"]) / n,
                    "global_load_sectors": mem_c["global_load_sectors"] / n},
        "load_sectors_by_buffer": {k: v / n for k, v in result.load_sectors_by_buffer.items()},
        "counters": result.counters(),
    }


def run_layer(checker, layer: str, shape: tuple, gpu: Gpu, n_ctas: int, cache: dict,
              ptx_arch: Optional[str] = None) -> dict:
    """Counters of every launch the plugin makes for ``layer`` on ``gpu`` (cached per launch), its device
    code from the PTX built for ``ptx_arch`` (None: the checker's default build)."""
    from ptx_check import Case, main_launch

    from ptxexec.capture import RecordedMemoryOp

    c, h, w = shape
    case = Case(f"{layer}-{gpu.arch}", "nhwc", "fp16", (1, c, c, h, w, 3, 3, 1, 1, 1, 1, 1, True, False),
                device=gpu.arch, offset_scale=1.0, ptx_arch=ptx_arch)
    mem, addr, tensors, recorded, problems = checker.call(case)
    launches = [r for r in recorded if not isinstance(r, RecordedMemoryOp)]
    main = main_launch(launches)
    if problems or main is None:
        raise RuntimeError(f"{layer} on {gpu.arch}: {'; '.join(problems) or 'no launch'}")
    key = tuple((r.kernel, r.grid, r.dynamic_shared) for r in launches) + (c, h, w, checker.lib.ptx_arch)
    if key not in cache:
        # in order: the reduction reads what the convolution wrote
        runs = [run_launch(checker, mem, rec, n_ctas if rec is main else 2) for rec in launches]
        index = launches.index(main)
        # split K (a launch after the convolution): its partial sums
        splits = runs[index]["grid"][1] // max(1, -(-c // 256)) if len(runs) > index + 1 else 0
        cache[key] = {"launches": runs, "main": index, "tensors": tensors,
                      "x_bytes": 2 * c * h * w, "weight_bytes": 2 * c * c * 9, "y_bytes": 2 * c * h * w,
                      "offset_mask_bytes": 2 * 27 * h * w, "partial_bytes": 4 * c * h * w * splits}
    return cache[key]


def channel_tile(c: int) -> int:
    """The output channels one CTA covers for a group of ``c`` (every plan of these layers: 256 at most)."""
    return 256 if c > 128 else 128 if c > 64 else 64


def layer_model(run: dict, gpu: Gpu, c: int, resident: int) -> dict:
    """The modelled time of a layer's launches on ``gpu`` (their sum) and each launch's terms."""
    main_index = run["main"]
    partials_in_dram = run["partial_bytes"] > gpu.l2_mb * 1e6 / 2
    out = []
    total = 0.0
    for i, launch in enumerate(run["launches"]):
        ctas = launch["ctas"]
        if i == main_index:
            grid = launch["grid"]
            m_extent = -(-(run["x_bytes"] // (2 * c)) // grid[0])
            bn = channel_tile(c)
            window = wave_window_bytes(run["tensors"], c, bn, ctas, grid, m_extent, resident, gpu)
            compulsory_in = run["x_bytes"] + run["weight_bytes"] + run["offset_mask_bytes"]
            gathered = launch["per_cta"]["global_load_sectors"] * 32 * ctas
            spill = max(0.0, 1 - gpu.l2_mb * 1e6 / 2 / window)
            dram = compulsory_in + spill * max(0.0, gathered - compulsory_in)
            dram += run["partial_bytes"] if partials_in_dram else (0 if run["partial_bytes"] else run["y_bytes"])
            extra = {"reuse_window_mb": round(window / 1e6, 2), "l2_spill_share": round(spill, 3)}
        else:  # the split-K reduction: reads the partial sums, writes y
            dram = run["y_bytes"] + (run["partial_bytes"] if partials_in_dram else 0)
            extra = {}
        m = model_time(gpu, launch["per_cta"], ctas, dram)
        total += m["us"]
        out.append({"kernel": short_name(launch["kernel"]), "ctas": ctas, "grid": list(launch["grid"]),
                    "modeled_us": round(m["us"], 2), "bound": m["bound"], "terms_us": m["terms_us"],
                    "wave_efficiency": m["wave_efficiency"], "dram_mb": round(dram / 1e6, 2), **extra})
    return {"us": total, "launches": out}


def short_name(mangled: str) -> str:
    """The kernel's name as scripts/kernel_resources.py prints it (e.g. deformConvTensorCore<128,128,2,4>)."""
    import kernel_resources
    return kernel_resources.short_name(mangled)


def main(argv: Optional[list] = None) -> int:
    parser = ScriptParser(description=first_paragraph(__doc__))
    parser.add_argument("--json", action="store_true", help="print the model as JSON on stdout")
    parser.add_argument("--ctas", type=whole_number(1), default=4,
                        help="CTAs run per launch (default 4: the middle one and 3 random ones)")
    parser.add_argument("--gpus", default=",".join(GPUS), help="comma-separated GPU names of the table")
    parser.add_argument("--no-registers", action="store_true",
                        help="skip ptxas' register counts (occupancy from threads and shared memory only)")
    parser.add_argument("--src", type=Path, default=REPO / "plugins" / "src",
                        help="the kernel sources to model (default: plugins/src), e.g. a changed copy")
    parser.add_argument("--sm90-ptx", default="sm_90a", choices=("sm_80", "sm_90a"),
                        help="the device code the sm_90 GPUs (H100) run: the sources built for sm_90a (default: "
                             "compute_90a, where the plugin's wgmma kernel is, as the default CMake build has it), or "
                             "the sm_80 build every other GPU runs (the mma.sync kernel on Hopper)")
    args = parser.parse_args(argv)
    gpus = {name: GPUS[name] for name in pick_names(args.gpus, list(GPUS), "--gpus", "GPU")}
    if not args.src.is_dir():
        raise DeformRTError(f"--src {args.src} is not a directory")
    from ptx_check import Checker, build_sources, log
    lib, ptx_builder = build_sources(args.src.resolve(), REPO / "plugins" / "include", "sm_80",
                                     REPO / "plugins" / "build" / "ptxexec-cache")
    checker = Checker(lib, "sm_80", ptx_builder=ptx_builder)
    registers = {} if args.no_registers else register_counts(args.src.resolve())
    cache: dict = {}
    in_image: dict = {}  # layer -> its sampling points' in-image corners
    rows = []
    for layer, (c, h, w) in layers().items():
        for gname, gpu in gpus.items():
            log(f"kernel_model: {layer} on {gname} ...")
            ptx_arch = args.sm90_ptx if gpu.arch == "sm_90" else None
            run = run_layer(checker, layer, (c, h, w), gpu, args.ctas, cache, ptx_arch)
            main = run["launches"][run["main"]]
            kernel = short_name(main["kernel"])
            regs = registers.get((int(gpu.arch.removeprefix("sm_")), kernel))
            threads = main["block"][0] * main["block"][1] * main["block"][2]
            resident = occupancy(gpu, threads, main["dynamic_shared"], regs)
            ours = layer_model(run, gpu, c, resident)
            floor = dense_floor_us(gpu, c, h, w)
            if layer not in in_image:
                in_image[layer] = sum(int(inside.sum()) for *_, inside in corners(run["tensors"][2], h, w, h * w))
            tiling = tiling_floor_us(gpu, c, h, w, in_image[layer], run["launches"][run["main"]]["grid"],
                                     -(-c // channel_tile(c)), main["per_cta"]["wgmma_flop"] > 0)
            trt = trt_oss_us(gpu, c, h, w)
            main_model = ours["launches"][run["main"]]
            rows.append({
                "layer": layer, "gpu": gname, "ptx_arch": ptx_arch or "sm_80", "kernel": kernel,
                "grid": main_model["grid"], "ctas": main["ctas"],
                "ctas_run": main["ctas_run"], "resident_ctas_per_sm": resident, "registers": regs,
                "modeled_us": round(ours["us"], 2), "bound": main_model["bound"], "terms_us": main_model["terms_us"],
                "launches": ours["launches"],
                "wave_efficiency": main_model["wave_efficiency"], "dense_floor_us": round(floor, 2),
                "trt_oss_modeled_us": round(trt["us"], 2),
                "trt_oss_terms_us": {k: v for k, v in trt.items() if k != "us"},
                "ratio_vs_dense_floor": round(ours["us"] / floor, 2),
                "ratio_vs_trt_oss": round(ours["us"] / trt["us"], 2),
                "tiling_floor_us": round(tiling["us"], 2), "tiling_floor_bound": tiling["bound"],
                "tiling_floor_l1_mb": tiling["l1_mb"], "tiling_floor_vs_dense_floor": round(tiling["us"] / floor, 2),
                "trt_oss_vs_dense_floor": round(trt["us"] / floor, 2),
                "per_cta": {k: round(v, 1) for k, v in main["per_cta"].items()},
                "ptx_instructions_per_mma": round(main["per_cta"]["warp_instructions"]
                                                  / max(mma_equivalents(main["per_cta"]), 1), 2),
                "counters": main["counters"],
                "findings": [f for launch in run["launches"] for f in launch["findings"]],
            })
    report = {"note": "MODELED, not measured: a throughput model from PTX-executor counters (see the script's "
                      "docstring); latency is not modelled",
              "gpus": {k: dataclasses.asdict(v) for k, v in gpus.items()}, "layers": rows}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print("MODELED (not measured): deformrt fp16 DCN kernel, batch 1, 800x1344; throughput model from PTX-executor "
          "counters")
    print(f"{'layer':5} {'GPU':16} {'kernel':34} {'grid':>13} {'waves':>5} {'bound':>9} {'ours us':>8} "
          f"{'dense us':>8} {'TRT-OSS us':>10} {'/dense':>7} {'/TRT':>6} {'floor/dense':>11}")
    for r in rows:
        grid = "x".join(str(v) for v in r["grid"])
        reduce = " +reduce" if len(r["launches"]) > 1 else ""
        print(f"{r['layer']:5} {r['gpu']:16} {(r['kernel'] + reduce)[:34]:34} {grid:>13} {r['wave_efficiency']:5.2f} "
              f"{r['bound']:>9} {r['modeled_us']:8.1f} {r['dense_floor_us']:8.1f} {r['trt_oss_modeled_us']:10.1f} "
              f"{r['ratio_vs_dense_floor']:7.2f} {r['ratio_vs_trt_oss']:6.2f} {r['tiling_floor_vs_dense_floor']:11.2f}")
    print("\nfloor: the least any kernel with the same tiling can take (tiling_floor_us): its in-image corner loads, "
          "weight fill and wgmma's\nshared-memory B reads through 128 B/clock of L1 per SM, or its tensor time; "
          "ours/dense above it is what the kernel adds")
    print("\nper CTA (executor counters, mean of the CTAs run):")
    for r in rows:
        if r["gpu"] != next(iter(gpus)):
            continue
        c = r["counters"]
        print(f"  {r['layer']} {r['kernel']}: {r['per_cta']['warp_instructions']:.0f} warp-instructions, "
              f"{mma_equivalents(r['per_cta']):.0f} m16n8k16 equivalents ({r['ptx_instructions_per_mma']} PTX "
              f"instructions per mma), "
              f"shared wavefronts/request ld {c.get('shared_load_wavefronts_per_request')} "
              f"st {c.get('shared_store_wavefronts_per_request')}, global sectors/request "
              f"ld {c.get('global_load_sectors_per_request')} st {c.get('global_store_sectors_per_request')}")
    for name, g in gpus.items():
        print(f"  {name}: {g.source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_script(main))
