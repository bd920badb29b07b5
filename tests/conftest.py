import os

import pytest
import torch

# Without CUDA the Triton kernels run under Triton's interpreter (on CPU tensors,
# tests/test_kernels_interpret.py). Set before any test module imports triton: the interpreter is
# chosen when a kernel is defined. Never on a GPU machine, where the kernels compile.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist on one GPU (`pytest -n 8 -m gpu`), each worker sees an equal share of the GPU's
# memory as free: an engine sizes its block pool from free memory, and the first to start would
# otherwise take nearly all of it from the others.
if torch.cuda.is_available() and os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    _mem_get_info = torch.cuda.mem_get_info

    def _worker_share(device=None):
        free, total = _mem_get_info(device)
        return max(0, min(free, total // _workers - torch.cuda.memory_reserved(device))), total

    torch.cuda.mem_get_info = _worker_share

# On CI (the CI variable set, as CI services and .ci/run do) a skip is a failure, except for tests
# marked ``gpu``: a test that skips itself there hides that it never ran.
ON_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA; they are skipped (with the reason) on machines without it."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On CI, report a skipped test that is not marked ``gpu`` as failed, with its skip reason."""
    outcome = yield
    report = outcome.get_result()
    if ON_CI and report.skipped and not hasattr(report, "wasxfail") and "gpu" not in item.keywords:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped on CI, where only tests marked gpu may skip: {reason}"


@pytest.fixture(autouse=True)
def _deterministic():
    torch.use_deterministic_algorithms(False)
    yield


@pytest.fixture(autouse=True)
def _free_gpu_memory(request):
    """After a GPU test, give its memory back: an engine sizes its block pool from free GPU memory,
    so one left to the garbage collector (engines hold reference cycles) starves the next test."""
    yield
    if "gpu" in request.keywords and torch.cuda.is_available():
        import gc

        gc.collect()
        torch.cuda.empty_cache()
