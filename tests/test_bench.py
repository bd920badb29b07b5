import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_latency_harness_runs_tiny_on_cpu(tmp_path):
    """`compare_latency.py --device cpu --tiny` end to end: both models, every section, JSON written."""
    out = subprocess.run([sys.executable, str(ROOT / "examples/compare_latency.py"), "--out", str(tmp_path),
                          "--device", "cpu", "--tiny"], capture_output=True, text=True, timeout=600, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    # the floors come from the bandwidth measured in this run, recorded beside them
    bandwidth = results["copy_bandwidth_bytes_per_s"]
    assert 1e8 < bandwidth < 1e13 and "bandwidth" not in results["settings"]
    assert f"{bandwidth / 1e12:.3f} TB/s" in out.stdout
    # the plots the README promises, after the README's install (matplotlib is a dependency)
    for name in ("latency.png", "throughput.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.search(r"^plots: \S+latency\.png, \S+throughput\.png$", out.stdout, re.M)
    assert set(results["models"]) == {"sambay", "dense"}
    for r in results["models"].values():
        check = r["fast_vs_reference"]["float32"]
        assert check["prefill_rel_err"] < 1e-5 and check["decode_rel_err"] < 1e-5  # CPU: both are the reference
        assert all("prefill_s" in row and row["decode_ms"] > 0 for row in r["latency"])
        assert [row["batch"] for row in r["throughput"]] == [1, 4, 16]
        assert all(row["tokens_per_s"] > 0 for row in r["throughput"])
    assert results["transformers_generate"]["speedup"] > 0
    assert "best throughput" in out.stdout


def test_sampling_benchmark_runs_on_cpu(tmp_path):
    """`bench_sampling.py --device cpu`: every part timed per batch size, JSON written."""
    out = subprocess.run([sys.executable, str(ROOT / "examples/bench_sampling.py"), "--out", str(tmp_path),
                          "--device", "cpu", "--vocab", "4096", "--batch-sizes", "1,3"],
                         capture_output=True, text=True, timeout=300, env=ENV)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads((tmp_path / "sampling.json").read_text())["rows"]
    assert [r["batch"] for r in rows] == [1, 3]
    timed = ("kernel_ms", "kernel_greedy_ms", "sort_ref_ms", "sort_ref_greedy_ms", "sort_alone_ms")
    assert all(r[k] > 0 for r in rows for k in timed)
    assert all(r["read_floor_ms"] is None for r in rows)  # no bandwidth measured on a CPU


@pytest.mark.parametrize("quantize, kv", [("fp8", None), (None, "fp8"), ("fp8", "fp8")])
def test_fast_vs_reference_reports_each_fp8_mode_against_the_unquantized_reference(quantize, kv):
    """Each fp8 mode: fast against the reference of the same numerics (on CPU both are the
    reference: equal), and against the unquantized reference: a real but small error."""
    import torch

    from sambay import bench

    s = bench.BenchSettings.tiny()
    s.quantize, s.kv_cache_dtype, s.check_prompt = quantize, kv, 40  # past 32: LongRoPE alike in both
    model = bench.build("dense", "tiny", "cpu", torch.float32)
    check, quantized = bench.fast_vs_reference(model, s, steps=8)
    mode = {("fp8", None): "fp8 weights", (None, "fp8"): "fp8 kv", ("fp8", "fp8"): "fp8 weights + kv"}[quantize, kv]
    assert check[mode]["prefill_rel_err"] < 1e-5 and check[mode]["decode_rel_err"] < 1e-5
    err = check["vs_unquantized_reference"]
    assert 1e-4 < err["prefill_rel_err"] < 0.1 and 1e-4 < err["decode_rel_err"] < 0.1
    assert (quantized.lm_head.weight.dtype == torch.float8_e4m3fn) == (quantize == "fp8")


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

    def fake(model, s, device, batch, compile=False, bandwidth=None):
        calls.append((batch, compile))
        assert bandwidth == 1e12
        return None if batch > 37 else {"batch": batch, "tokens_per_s": 1.0, "floor_tokens_per_s": 1.0}

    monkeypatch.setattr(bench, "throughput_at", fake)
    s = bench.BenchSettings.tiny()
    s.batch_sizes, s.compile = [1, 8, 64], True
    rows = bench.measure_throughput(None, s, torch.device("cpu"), log=lambda _: None, bandwidth=1e12)
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

    def fake(model, s, device, batch, compile=False, bandwidth=None):
        calls.append((batch, compile))
        return None if batch > 37 or (compile and batch > 33) else {"batch": batch, "tokens_per_s": 1.0, "floor_tokens_per_s": 1.0}

    monkeypatch.setattr(bench, "throughput_at", fake)
    s = bench.BenchSettings.tiny()
    s.batch_sizes, s.compile = [1, 8, 64], True
    rows = bench.measure_throughput(None, s, torch.device("cpu"), log=lambda _: None, bandwidth=1e12)
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


def test_copy_bandwidth_is_measured_bytes_read_plus_written(monkeypatch):
    """measure_bandwidth: 2 x nbytes over the median copy time, of a real copy."""
    from sambay import bench

    monkeypatch.setattr(bench, "timed", lambda fn, device, repeat: [fn(), 0.5, 0.25, 1.0][1:])
    assert bench.measure_bandwidth("cpu", nbytes=1000) == 2 * 1000 / 0.5
    monkeypatch.undo()
    measured = bench.measure_bandwidth("cpu", nbytes=2**24, repeat=3)
    assert 1e8 < measured < 1e13  # a CPU memcpy: between 0.1 GB/s and 10 TB/s


def test_floors_scale_with_the_measured_bandwidth():
    """Every floor is the step's bytes over the bandwidth passed in: twice the bandwidth, half the floor."""
    import torch

    from sambay import bench

    s = bench.BenchSettings.tiny()
    s.prompt_lengths, s.contexts, s.decode_steps, s.batch_sizes = [32], [32], 2, [2]
    s.prompt, s.generate, s.throughput_points = 16, 16, 2
    model = bench.build("dense", "tiny", "cpu", torch.float32)
    cpu = torch.device("cpu")
    lat = [bench.measure_prefill_and_latency(model, s, cpu, lambda _: None, bandwidth=bw)[0] for bw in (1e9, 2e9)]
    cache = model.allocate_cache(1, 64).cache  # the paged state behind the simple cached path
    assert lat[0]["floor_ms"] == pytest.approx(1e3 * bench.step_bytes(model, cache, 32) / 1e9)
    assert lat[1]["floor_ms"] == pytest.approx(lat[0]["floor_ms"] / 2)
    thr = [bench.throughput_at(model, s, cpu, 2, bandwidth=bw) for bw in (1e9, 2e9)]
    assert thr[1]["floor_tokens_per_s"] == pytest.approx(2 * thr[0]["floor_tokens_per_s"])


def test_plots_one_colour_per_model_every_line_plain_ticks():
    """Each model keeps its colour in every panel, floors and measurements are all drawn on log
    axes (a CPU floor 1000x below the measurement stays in view), ticks are plain numbers."""
    import math

    from sambay import bench

    def lat(scale):
        return [{"length": n, "prefill_s": scale * n / 1e4, "decode_ms": scale * (1 + n / 1e3),
                 "floor_ms": scale * 1e-3 * (1 + n / 1e3)} for n in (32, 64, 128, 1024, 65536)]

    def thr(scale):
        return [{"batch": b, "tokens_per_s": scale * b, "floor_tokens_per_s": 1e3 * scale * b} for b in (1, 4, 16, 256)] \
            + [{"batch": 256, "tokens_per_s": 300 * scale, "floor_tokens_per_s": 1e3, "compiled": True}]

    results = {"environment": {"device": "cpu"}, "settings": {"dtype": "float32", "shape": "tiny", "prompt": 32,
                                                              "generate": 96},
               "copy_bandwidth_bytes_per_s": 1.5e10,
               "models": {"dense": {"latency": lat(1.0), "throughput": thr(1.0)},
                          "sambay": {"latency": lat(0.5), "throughput": thr(3.0)}}}
    figs = bench.figures(results)
    try:
        axes = [ax for fig in figs for ax in fig.axes]
        assert len(axes) == 3
        for fig in figs:
            fig.canvas.draw()
        for ax in axes:
            lines = ax.get_lines()
            assert len(lines) >= 2
            for line in lines:
                kind = line.get_label().split()[0]
                assert line.get_color() == bench.COLORS[kind], (ax.get_title(), line.get_label())
                x0, x1 = ax.get_xlim()
                y0, y1 = ax.get_ylim()
                assert all(x0 <= x <= x1 for x in line.get_xdata()) and all(y0 <= y <= y1 for y in line.get_ydata())
            assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
            for axis in (ax.xaxis, ax.yaxis):
                assert axis.get_offset_text().get_text() == ""
                labels = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
                assert len(labels) >= 2, labels
                for text in labels:
                    assert re.fullmatch(r"\d+(\.\d+)?", text), text  # no 10^x, no 1e+05, no mathtext
                    assert not math.isnan(float(text))
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")
