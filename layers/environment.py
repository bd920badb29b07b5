"""Every environment variable the package reads: all are named ``SAMBAY_*`` and read through
:func:`read` only, so this is the whole list.

* ``SAMBAY_ATTENTION`` = ``auto`` (default) | ``ref`` | ``sdpa`` | ``flash``,
  ``SAMBAY_MAMBA`` = ``auto`` | ``ref`` | ``cuda``,
  ``SAMBAY_LINEAR`` = ``auto`` | ``torch`` | ``triton``: the kernels of every model built in the
  process unless it is given others (``model.backends``, see :mod:`layers.backends`); read once,
  at import of :mod:`layers.backends`.
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
    "SAMBAY_PDL": "0 turns off programmatic dependent launch between the Triton decode kernels",
    "SAMBAY_O200K_BPE": "path of tiktoken's o200k_base BPE file (the Phi-4 tokenizer)",
}


def read(name: str, default: str | None = None) -> str | None:
    """The value of the package's environment variable ``name`` (one of :data:`VARIABLES`), or
    ``default`` when it is unset."""
    if name not in VARIABLES:
        raise KeyError(f"{name} is not one of the package's environment variables {sorted(VARIABLES)}")
    return os.environ.get(name, default)
