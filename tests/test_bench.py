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
        check = r["fast_vs_reference"]["torch.float32"]
        assert check["prefill_rel_err"] < 1e-5 and check["decode_rel_err"] < 1e-5  # CPU: both are the reference
        assert all("prefill_s" in row and row["decode_ms"] > 0 for row in r["latency"])
        assert [row["batch"] for row in r["throughput"]] == [1, 4, 16]
        assert all(row["tokens_per_s"] > 0 for row in r["throughput"])
    assert results["transformers_generate"]["speedup"] > 0
    assert "best throughput" in out.stdout


def test_sambay_cache_is_at_most_a_twentieth_of_the_dense_one_at_34k():
    import torch

    from sambay import DenseCache, Phi4MiniConfig, SambaYCache, SambaYConfig

    n = 34 * 1024
    sambay = SambaYCache(SambaYConfig.official(), 2, 16, 1, device="meta", dtype=torch.bfloat16).nbytes_per_sequence(n)
    dense = DenseCache(Phi4MiniConfig.official(), 2, 16, 1, device="meta", dtype=torch.bfloat16).nbytes_per_sequence(n)
    assert dense == n * 128 * 1024
    assert sambay * 20 <= dense, (sambay, dense)


def test_throughput_sweep_bisects_to_the_largest_batch_that_fits(monkeypatch):
    """Sizes 1, 8, 64 with room for 37 rows: the sweep stops at 64, bisects 8..64 down to 37, and
    measures 37 again compiled."""
    import torch

    from sambay import bench

    calls = []

    def fake(model, s, device, batch, compile=False):
        calls.append((batch, compile))
        return None if batch > 37 else {"batch": batch, "tokens_per_s": 1.0, "floor_tokens_per_s": 1.0}

    monkeypatch.setattr(bench, "throughput_at", fake)
    s = bench.BenchSettings.tiny()
    s.batch_sizes, s.compile = [1, 8, 64], True
    rows = bench.measure_throughput(None, s, torch.device("cpu"), log=lambda _: None)
    assert calls == [(1, False), (8, False), (64, False), (36, False), (50, False), (43, False), (39, False),
                     (37, False), (38, False), (37, True)]
    assert [(r["batch"], r.get("compiled", False)) for r in rows] == [(1, False), (8, False), (36, False),
                                                                      (37, False), (37, True)]


def test_throughput_compiles_a_smaller_batch_when_compiling_runs_out_of_memory(monkeypatch):
    """An out-of-memory raised inside torch.compile (wrapped in its own error) counts as not
    fitting; the compiled measurement then falls back to 7/8 of the largest batch."""
    import torch

    from sambay import bench

    calls = []

    def fake(model, s, device, batch, compile=False):
        calls.append((batch, compile))
        return None if batch > 37 or (compile and batch > 33) else {"batch": batch, "tokens_per_s": 1.0, "floor_tokens_per_s": 1.0}

    monkeypatch.setattr(bench, "throughput_at", fake)
    s = bench.BenchSettings.tiny()
    s.batch_sizes, s.compile = [1, 8, 64], True
    rows = bench.measure_throughput(None, s, torch.device("cpu"), log=lambda _: None)
    assert calls[-2:] == [(37, True), (32, True)]
    assert (rows[-1]["batch"], rows[-1]["compiled"]) == (32, True)

    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory")
        except torch.OutOfMemoryError as e:
            raise RuntimeError("backend='inductor' raised") from e
    except RuntimeError as wrapped:
        assert bench._out_of_memory(wrapped)
    assert not bench._out_of_memory(ValueError("bad"))
