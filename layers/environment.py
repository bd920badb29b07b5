"""Every environment variable the package reads: all are named ``SAMBAY_*`` and read through
:func:`read` only, so this is the whole list.

* ``SAMBAY_ATTENTION`` = ``auto`` (default) | ``ref`` | ``sdpa`` | ``flash``,
  ``SAMBAY_MAMBA`` = ``auto`` | ``ref`` | ``cuda``,
  ``SAMBAY_LINEAR`` = ``auto`` | ``torch`` | ``triton``: the kernels of every model built in the
  process unless it is given others (``model.backends``, see :mod:`layers.backends`); read once,
  at import of :mod:`layers.backends`; ``SAMBAY_FP8_GEMM`` = ``auto`` | ``dequant`` | ``scaled_mm``
  likewise: how fp8-weight layers multiply more than one row on CUDA.
* ``SAMBAY_GEMV_CACHE`` = a file path, or ``off``: the GEMV tiles swept on this machine (default
  ``~/.cache/sambay/gemv-<device name>.json``); ``off`` reads and writes none. Read at the first
  GEMV on each device and at each sweep (:func:`layers.gemv_triton.cache_path`).
* ``SAMBAY_GEMV_TUNE`` = ``0`` (default) | ``1``: ``1`` sweeps the tiles of a GEMV shape missing
  from the cache on its first eager call (seconds per shape; never inside a CUDA-graph capture or
  a compile trace). ``layers.gemv_triton.tune`` or ``examples/bench_gemv.py --tune`` sweep ahead.
* ``SAMBAY_PDL`` = ``1`` (default) | ``0``: ``0`` turns off programmatic dependent launch between
  the Triton decode kernels; read once, at import of :mod:`layers.gemv_triton`.
* ``SAMBAY_O200K_BPE`` = a file path: tiktoken's o200k_base BPE file, which the Phi-4 tokenizer
  is built from (:func:`reasoning.tokenizer.o200k.find_o200k_bpe`); read at each lookup.
"""

from __future__ import annotations

import os

VARIABLES: dict[str, str] = {
    "SAMBAY_ATTENTION": "default attention backend: auto, ref, sdpa or flash",
    "SAMBAY_MAMBA": "default Mamba backend: auto, ref or cuda",
    "SAMBAY_LINEAR": "default linear backend: auto, torch or triton",
    "SAMBAY_FP8_GEMM": "default fp8-weight GEMM for several rows: auto, dequant or scaled_mm",
    "SAMBAY_GEMV_CACHE": "file of the GEMV tiles swept on this machine, or off",
    "SAMBAY_GEMV_TUNE": "1 sweeps a GEMV shape missing from the tile cache on its first eager call",
    "SAMBAY_PDL": "0 turns off programmatic dependent launch between the Triton decode kernels",
    "SAMBAY_O200K_BPE": "path of tiktoken's o200k_base BPE file (the Phi-4 tokenizer)",
}


def read(name: str, default: str | None = None) -> str | None:
    """The value of the package's environment variable ``name`` (one of :data:`VARIABLES`), or
    ``default`` when it is unset."""
    if name not in VARIABLES:
        raise KeyError(f"{name} is not one of the package's environment variables {sorted(VARIABLES)}")
    return os.environ.get(name, default)
