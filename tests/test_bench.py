import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_latency_harness_runs_tiny_on_cpu(tmp_path):
    """`compare_latency.py --device cpu --tiny` end to end: both models, every section, JSON written."""
    out = subprocess.run([sys.executable, str(ROOT / "examples/compare_latency.py"), "--out", str(tmp_path),
                          "--device", "cpu", "--tiny", "--no-plot"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["models"]) == {"sambay", "dense"}
    for r in results["models"].values():
        check = r["fast_vs_reference"]
        assert check["prefill_rel_err"] < 1e-5 and check["decode_rel_err"] < 1e-5  # CPU: both are the reference
        assert all("prefill_s" in row and row["decode_ms"] > 0 for row in r["latency"])
        assert [row["batch"] for row in r["throughput"]] == [1, 4, 16]
        assert all(row["tokens_per_s"] > 0 for row in r["throughput"])
    assert results["transformers_generate"]["speedup"] > 0
    assert "best throughput" in out.stdout
