"""Backend choice: a property of each model, active per thread (layers/backends.py), and the one
table of environment variables (layers/environment.py)."""

from __future__ import annotations

import copy
import threading

import pytest
import torch

from layers import backends, environment
from layers.backends import Backends
from sambay import SambaYConfig, SambaYForCausalLM
from sambay.generate import Engine, Request, SamplingParams


def tiny_model() -> SambaYForCausalLM:
    torch.manual_seed(3)
    return SambaYForCausalLM(SambaYConfig.tiny(sliding_window=8)).eval()


def test_two_models_on_two_threads_each_run_their_own_backends(monkeypatch):
    """A model whose choice is SDPA and one on the reference path, generating at the same time on
    two threads (in lockstep, so their calls interleave), while the main thread forces yet another
    choice: every attention call of a thread takes its own model's path, prefill and decode."""
    seen: dict[str, list[tuple[str, str]]] = {"sdpa": [], "ref": []}
    real_announce = backends.announce

    def record(what: str, backend: str) -> None:
        seen[threading.current_thread().name].append((what, backend))
        real_announce(what, backend)

    monkeypatch.setattr(backends, "announce", record)
    sdpa_model = tiny_model()
    sdpa_model.backends = Backends(attention="sdpa")
    ref_model = copy.deepcopy(sdpa_model)
    ref_model.backends = Backends(attention="ref")
    assert sdpa_model.backends != ref_model.backends and SambaYForCausalLM.backends == backends.DEFAULT
    ids = torch.randint(0, sdpa_model.config.vocab_size, (2, 12))
    barrier = threading.Barrier(2, timeout=60)
    tokens: dict[str, list[list[int]]] = {}
    errors: list[BaseException] = []

    def run(model: SambaYForCausalLM) -> None:
        try:
            engine = Engine(model, cuda_graphs=False)
            for n in range(1, 4):
                barrier.wait()
                with torch.no_grad():
                    model(ids[:, :n + 4])
                cache = model.allocate_cache(2, 16)
                with torch.no_grad():
                    model(ids[:, :n + 4], cache=cache)
                barrier.wait()
                with torch.no_grad():
                    model(ids[:, n + 4:n + 5], cache=cache)  # a paged decode step
            params = SamplingParams(temperature=0.0, max_new_tokens=4)
            tokens[threading.current_thread().name] = [g.tokens for g in engine.generate(
                [Request(ids[0].tolist(), params), Request(ids[1, :7].tolist(), params)])]
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
            barrier.abort()

    with backends.use(attention="ref" if backends.active().attention != "ref" else "sdpa"):
        forced = backends.active()
        threads = [threading.Thread(target=run, args=(m,), name=name)
                   for name, m in (("sdpa", sdpa_model), ("ref", ref_model))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert backends.active() == forced  # the threads left the main thread's choice alone
    assert not errors, errors
    assert {what for what, _ in seen["sdpa"]} >= {"attention prefill", "attention decode"}
    assert {b for what, b in seen["sdpa"] if what.startswith("attention")} == {"sdpa"}
    assert {what for what, _ in seen["ref"]} >= {"attention"}
    assert {b for what, b in seen["ref"] if what.startswith("attention")} == {"ref"}
    assert len(tokens["sdpa"]) == len(tokens["ref"]) == 2


def test_use_forces_knobs_over_the_models_choice_in_its_thread_only():
    model = tiny_model()
    model.backends = Backends(attention="sdpa")
    calls = []

    def layer_reads(*_: object) -> None:
        calls.append(backends.attention_backend(torch.device("cpu")))

    model.model.embed_tokens.register_forward_hook(layer_reads)
    ids = torch.zeros(1, 3, dtype=torch.long)
    with torch.no_grad():
        model(ids)
        with backends.use(attention="ref"):
            model(ids)
            other = threading.Thread(target=lambda: model(ids))
            other.start()
            other.join()
        model(ids)
    assert calls == ["sdpa", "ref", "sdpa", "sdpa"]
    assert backends.active() == backends.DEFAULT  # nothing left active after the calls


def test_backends_are_checked_and_read_from_the_environment(monkeypatch):
    with pytest.raises(ValueError, match="unknown attention backend 'bogus'"):
        Backends(attention="bogus")
    with pytest.raises(ValueError, match="unknown linear backend"):
        Backends().replace(linear="cuda")
    monkeypatch.setenv("SAMBAY_ATTENTION", "ref")
    monkeypatch.setenv("SAMBAY_LINEAR", "torch")
    monkeypatch.delenv("SAMBAY_MAMBA", raising=False)
    assert Backends.from_env() == Backends(attention="ref", mamba="auto", linear="torch")
    cpu = torch.device("cpu")
    choice = Backends(attention="flash" if backends.HAS_FLASH_ATTN else "sdpa")
    assert backends.attention_backend(cpu, choice) == ("ref" if backends.HAS_FLASH_ATTN else "sdpa")
    assert backends.linear_backend(cpu, Backends(linear="triton" if backends.HAS_TRITON else "torch")) == "torch"


def test_every_sambay_variable_is_in_the_one_table():
    """Each SAMBAY_* name the package's code mentions is documented in layers/environment.py, and
    reading an undocumented one is refused."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    mentioned = set()
    for package in ("layers", "sambay", "reasoning"):
        for path in (root / package).rglob("*.py"):
            mentioned |= set(re.findall(r"SAMBAY_[A-Z0-9_]+", path.read_text()))
    assert mentioned == set(environment.VARIABLES)
    assert all(name in environment.__doc__ for name in environment.VARIABLES)
    with pytest.raises(KeyError, match="SAMBAY_NOPE"):
        environment.read("SAMBAY_NOPE")
