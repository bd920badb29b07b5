"""What CI runs: .ci/run calls the README's test command, and on CI only ``gpu`` tests may skip."""

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ["pytester"]

SAMPLE = """
import pytest

def test_runs():
    assert True

def test_skips_itself():
    pytest.skip("no data here")

@pytest.mark.gpu
def test_needs_cuda():
    import torch
    assert torch.cuda.is_available(), "a gpu test must not run without CUDA"
"""


@pytest.mark.parametrize("ci", ["true", ""])
def test_on_ci_only_gpu_tests_may_skip(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str) -> None:
    pytester.makeconftest((ROOT / "tests/conftest.py").read_text())
    pytester.makeini('[pytest]\nmarkers =\n    gpu: needs a CUDA device\n')
    pytester.makepyfile(test_sample=SAMPLE)
    monkeypatch.setenv("CI", ci)  # read by the conftest when the subprocess imports it
    result = pytester.runpytest_subprocess("-q", "-rs")
    out = result.stdout.str()
    gpu = int(torch.cuda.is_available())  # the gpu test runs (and passes) only where there is CUDA
    if ci:
        result.assert_outcomes(passed=1 + gpu, failed=1, skipped=1 - gpu)
        assert "skipped on CI, where only tests marked gpu may skip: Skipped: no data here" in out
    else:
        result.assert_outcomes(passed=1 + gpu, skipped=2 - gpu)
        assert "no data here" in out  # -rs prints the reasons
    assert gpu or "needs a CUDA device" in out


def test_ci_runs_the_readme_test_command_with_skip_reasons() -> None:
    script = (ROOT / ".ci/run").read_text()
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^(python -m pytest[^#\n]*?)\s+# the tests \(what CI runs\)", readme, re.M)
    assert command is not None, "the README names the test command CI runs"
    assert command.group(1).strip() == "python -m pytest -q -rs"
    assert "python3 -m pytest -q -rs" in script
    assert "torch==2.13.0" in script.split("triton")[0]  # torch first: an unpinned torch pulls CUDA
    assert re.search(r"pip install -q triton==3\.\d+\.\d+", script)
    assert "CI=" in script  # .ci/run enforces "only gpu tests skip" wherever it runs
