"""A PTX executor: runs CUDA kernels' compiled device code (PTX) on the CPU with memcheck, racecheck,
initcheck and performance counters. The executor itself needs only numpy (no torch, no GPU).

    from ptxexec import GlobalMemory, Launcher, parse_module
    module = parse_module(ptx_text)
    mem = GlobalMemory(); x = mem.alloc("x", 1024, data)
    result = Launcher(module, mem).run(kernel_name, grid, block, dynamic_shared, params)

See machine.py for the execution model and the checks, ops.py for the instruction semantics.
"""

from .machine import CATEGORIES, ExecutionError, Finding, GlobalMemory, Launcher, LaunchResult
from .ops import CLASSES
from .ptx import PtxError, entry_names, parse_module

__all__ = ["CATEGORIES", "CLASSES", "ExecutionError", "Finding", "GlobalMemory", "Launcher", "LaunchResult",
           "PtxError", "entry_names", "parse_module"]
