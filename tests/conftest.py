import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA; they are skipped (with the reason) on machines without it."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.use_deterministic_algorithms(False)
    yield
