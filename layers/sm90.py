"""Build Triton kernels for Hopper (sm_90) on a machine without a GPU, to check and read them.

Triton's interpreter runs a kernel's Python and accepts what the compiler refuses; and GPU time
is scarce. :func:`target_sm90` points Triton's driver at an sm_90 target, so calling a kernel
compiles it through Triton's whole pipeline (TTIR, TTGIR, PTX, ptxas) and stops at the launch,
which needs a GPU: :func:`compiles` runs such a call. :func:`ptx_counts` reads the instructions
that say how a kernel moves data (asynchronous copies, ``ldmatrix`` versus scalar shared loads,
vector widths of global loads, tensor-core ops). Use it in a process without
``TRITON_INTERPRET=1``, before the kernels' modules are imported.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch


def target_sm90() -> None:
    """From now on this process's Triton compiles for sm_90 and launches nothing."""
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.driver import CudaDriver
    from triton.runtime import driver

    class Sm90(CudaDriver):
        def __init__(self) -> None:  # no CUDA to initialize
            pass

        def get_current_target(self) -> GPUTarget:
            return GPUTarget("cuda", 90, 32)

        def get_current_device(self) -> int:
            return 0

        def get_current_stream(self, device: int | None = None) -> int:
            return 0

        def get_active_torch_device(self) -> torch.device:
            return torch.device("cpu")

    driver.set_active(Sm90())


def compiles(call: Callable[[], object]) -> None:
    """Run ``call`` (a kernel launch on CPU tensors): it compiles, then fails to launch, which is
    what a GPU-less build ends in; any other error (a compile error) propagates."""
    try:
        call()
    except AttributeError as e:
        if "launcher_cls" not in str(e):
            raise


PATTERNS = {
    "cp.async": r"cp\.async\.c",
    "ldmatrix": r"ldmatrix",
    "ld.shared": r"ld\.shared",
    "st.shared": r"st\.shared",
    "ld.global": r"ld\.global",
    "ld.global.v4": r"ld\.global(?:\.\w+)*\.v4",
    "ld.global 8-bit": r"ld\.global(?:\.\w+)*\.(?:u8|b8|s8)\b",
    "mma.sync": r"mma\.sync",
    "wgmma": r"wgmma\.mma_async",
    "cvt e4m3": r"cvt\.\S*e4m3",
}


def ptx_counts(ptx: str) -> dict[str, int]:
    """How often each instruction of :data:`PATTERNS` appears in a kernel's PTX."""
    return {name: len(re.findall(pattern, ptx)) for name, pattern in PATTERNS.items()}
