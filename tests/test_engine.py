"""The continuous-batching engine (``sambay.generate.Engine``) on CPU in fp32, for both models: a
request's tokens do not depend on what else runs, on the policy, or on preemption; memory and
counters; paged decoding with per-row positions against full forwards."""

from __future__ import annotations

import threading

import pytest
import torch

from sambay import Phi4MiniConfig, Phi4MiniForCausalLM, SambaYConfig, SambaYForCausalLM
from sambay.cache import CacheBatch
from sambay.engine.runner import graph_ladder
from sambay.generate import Engine, Request, SamplingParams


def tiny(kind: str, seed: int = 0):
    torch.manual_seed(seed)
    if kind == "sambay":
        return SambaYForCausalLM(SambaYConfig.tiny(sliding_window=8, max_position_embeddings=256)).eval()
    model = Phi4MiniForCausalLM(Phi4MiniConfig.tiny(initializer_range=0.1)).eval()  # original_max 32, context 256
    return model


def prompts(model, lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, model.config.vocab_size, (n,), generator=g).tolist() for n in lengths]


KINDS = ["sambay", "dense"]


# ----------------------------------------------------------------------------- paged decode, per-row positions


def rows_through_paged_cache(model, rows: list[list[int]], steps: int, block_size: int = 4) -> list[torch.Tensor]:
    """Prefill every row alone into its own slot and blocks, then decode all rows together for
    ``steps`` teacher-forced tokens (row b's tokens after its prompt): logits per row (T_b, V)."""
    B = len(rows)
    n = -(-max(len(r) for r in rows) // block_size) + -(-steps // block_size) + 1
    cache = model.make_cache(1 + B * n, block_size, B)
    table = (1 + torch.arange(B * n, dtype=torch.int32)).view(B, n)
    budgets = [len(r) for r in rows]  # every row's length budget: its whole sequence
    long = torch.tensor([model.uses_long_rope(b) for b in budgets])
    prompt_lens = [len(r) - steps for r in rows]
    outs = []
    for b, r in enumerate(rows):
        T = prompt_lens[b]
        pos = torch.arange(T)
        write = table[b].long()[pos // block_size] * block_size + pos % block_size
        batch = CacheBatch(b, table[b:b + 1], pos, write, long[b:b + 1], start=0)
        outs.append([model.run(torch.tensor([r[:T]]), cache, batch)[0]])
    for t in range(steps):
        pos = torch.tensor([T + t for T in prompt_lens])
        write = table.long()[torch.arange(B), pos // block_size] * block_size + pos % block_size
        ids = torch.tensor([[r[T + t]] for r, T in zip(rows, prompt_lens)])
        logits = model.run(ids, cache, CacheBatch(0, table, pos, write, long))
        for b in range(B):
            outs[b].append(logits[b])
    return [torch.cat(o) for o in outs]


@pytest.mark.parametrize("kind", KINDS)
def test_a_row_gives_the_same_logits_alone_and_beside_rows_of_very_different_lengths(kind):
    """Rows of 3, 45 and 17 prompt tokens (sliding-window rings wrapped or not; for the dense
    model, LongRoPE's long factors on one row and the short ones on the others) decoded in one
    batch: every row's logits are its own full forward's, and its logits alone."""
    model = tiny(kind)
    steps = 10
    rows = prompts(model, [3 + steps, 45 + steps, 17 + steps])
    if kind == "dense":
        assert [model.uses_long_rope(len(r)) for r in rows] == [False, True, False]
    with torch.no_grad():
        together = rows_through_paged_cache(model, rows, steps)
        for r, got in zip(rows, together):
            alone = rows_through_paged_cache(model, [r], steps)[0]
            full = model(torch.tensor([r])).logits[0]
            assert (got - alone).abs().max() < 1e-5
            assert (got - full).abs().max() < 1e-4


def test_dense_long_factors_are_decided_per_request():
    """The same 10-token prompt decodes with the short factors under a budget of 32 tokens and with
    the long ones under a budget of 33, whatever its neighbours."""
    model = tiny("dense")
    assert not model.uses_long_rope(32) and model.uses_long_rope(33)
    engine = Engine(model, max_batch_size=4)
    p = prompts(model, [10])[0]
    short = engine.generate([Request(p, SamplingParams(temperature=0.0, max_new_tokens=22))])[0]
    long = engine.generate([Request(p, SamplingParams(temperature=0.0, max_new_tokens=23))])[0]
    assert engine.cache is not None
    ids = p + short.tokens[:-1]
    with torch.no_grad():
        # a 31-token full forward uses the short factors, as the request with budget 32 did
        assert model(torch.tensor([ids])).logits[0, len(p) - 1:].argmax(-1).tolist() == short.tokens
        padded = torch.tensor([ids + [1] * 10])  # 41 tokens: long factors; causal, so the padding changes nothing before it
        assert model(padded).logits[0, len(p) - 1:len(ids)].argmax(-1).tolist() == long.tokens[:len(short.tokens)]


# ----------------------------------------------------------------------------- same tokens everywhere


def greedy_reference(model, prompt: list[int], n: int) -> list[int]:
    """Greedy tokens from full forwards, each padded (after the tokens: causal, so it changes nothing
    before it) to the request's budget, so that the dense model's LongRoPE list is the request's."""
    ids, budget = list(prompt), len(prompt) + n
    with torch.no_grad():
        for _ in range(n):
            padded = torch.tensor([ids + [1] * (budget - len(ids))])
            ids.append(int(model(padded).logits[0, len(ids) - 1].argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("lookahead", [False, True])
def test_tokens_alone_static_continuous_and_preempted_are_identical(kind, temperature, lookahead):
    """Also with ``lookahead`` (each step launching the next before it returns), whose extra
    decode of a request that just finished is dropped."""
    model = tiny(kind)
    lengths, budgets = [3, 11, 6, 19, 2], [30, 9, 24, 14, 28]
    reqs = [Request(p, SamplingParams(temperature=temperature, top_p=0.9, max_new_tokens=m, seed=7 + i))
            for i, (p, m) in enumerate(zip(prompts(model, lengths), budgets))]
    alone = [Engine(model, max_batch_size=1).generate([r])[0].tokens for r in reqs]
    if temperature == 0.0:
        assert alone == [greedy_reference(model, r.prompt, r.params.max_new_tokens) for r in reqs]
    static = Engine(model, max_batch_size=2, policy="static", lookahead=lookahead)
    continuous = Engine(model, max_batch_size=3, prefill_chunk=4, lookahead=lookahead)  # chunked prefill; join, leave
    tight = Engine(model, max_batch_size=4, num_blocks=13, block_size=4, lookahead=lookahead)  # 48 tokens: preemptions
    for engine in (static, continuous, tight):
        gens = engine.generate(reqs)
        assert [g.tokens for g in gens] == alone
        assert all(g.finish_reason == "length" and len(g.tokens) == r.params.max_new_tokens
                   for g, r in zip(gens, reqs))
        assert engine.free_blocks == engine.num_blocks - 1  # everything freed (block 0 is scratch)
    assert tight.stats.preemptions > 0 and continuous.stats.preemptions == 0
    assert static.stats.mean_batch <= 2 and continuous.stats.mean_batch > static.stats.mean_batch


@pytest.mark.parametrize("kind", KINDS)
def test_lookahead_feeds_each_step_its_tokens_on_the_device(kind, monkeypatch):
    """With ``lookahead`` the next decode step is launched before this one's tokens are read back:
    every running row (those that just joined from a prefill included) takes its last token from
    the device (a source slot), and a request out of budget computes nothing in the step launched
    before its last token was read. Without it, every token comes from the host. Tokens are the
    same either way, with stop tokens ending requests (their extra row dropped)."""
    model = tiny(kind)
    ps = prompts(model, [5, 9, 3, 12])
    alone = [Engine(model, max_batch_size=1).generate([Request(p, SamplingParams(temperature=0.0,
                                                                                  max_new_tokens=12))])[0].tokens
             for p in ps]
    stop = alone[1][4]  # request 1 stops at its 5th token; the others wherever that token appears
    want = [t[:t.index(stop) + 1] if stop in t else t for t in alone]
    for lookahead in (False, True):
        engine = Engine(model, max_batch_size=4, prefill_chunk=8, lookahead=lookahead)
        calls = []
        real = engine.runner.decode

        def spy(seqs, sources=None):
            calls.append([(s.pending, s.out_of_budget, src) for s, src in zip(seqs, sources)])
            return real(seqs, sources)

        monkeypatch.setattr(engine.runner, "decode", spy)
        reqs = [Request(p, SamplingParams(temperature=0.0, max_new_tokens=12), stop_token_ids=[stop]) for p in ps]
        assert [g.tokens for g in engine.generate(reqs)] == want
        rows = [r for c in calls for r in c]
        fed = [r for r in rows if r[0] and not r[1]]
        if lookahead:
            assert len(fed) > len(rows) // 2 and all(src >= 0 for _, _, src in fed)
            assert any(out for _, out, _ in rows)  # a row launched after its last token was sampled
        else:
            assert not fed and not any(out for _, out, _ in rows)
        assert engine.free_blocks == engine.num_blocks - 1 and not engine.has_unfinished()


@pytest.mark.parametrize("lookahead", [False, True])
def test_a_failing_decode_step_after_a_stop_keeps_the_stop(lookahead):
    """With lookahead a step is launched before the last one's tokens are read: when that launch
    fails, a request whose last token (read after it) was a stop token still ends "stop" with it;
    and generate() returns with no step in flight (place() works, nothing is unfinished)."""
    model = tiny("dense")
    p = prompts(model, [5])[0]
    params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=3)
    full = Engine(model, max_batch_size=1).generate([Request(p, params)])[0].tokens
    stop = full[3]
    engine = Engine(model, max_batch_size=2, lookahead=lookahead)
    real, calls = engine.runner.decode, [0]

    def decode(seqs, sources=None):
        calls[0] += 1
        if calls[0] == full.index(stop) + 1:  # the step after the one that samples the stop token
            raise torch.OutOfMemoryError("injected")
        return real(seqs, sources)

    engine.runner.decode = decode
    g = engine.generate([Request(p, params, stop_token_ids=[stop])])[0]
    assert (g.tokens, g.finish_reason) == (full[:full.index(stop) + 1], "stop")
    engine.runner.decode = real
    g = engine.generate([Request(p, params, stop_token_ids=[full[1]])])[0]
    assert g.tokens == full[:2] and not engine.has_unfinished() and engine._planned is None
    engine.place([8])  # nothing in flight


def test_lookahead_leaves_nothing_in_flight_and_counts_what_it_keeps():
    """A caller stepping until it has seen every finish (a server's loop) finds nothing unfinished
    and nothing in flight after the last one, though the step launched with it was for requests
    that had just stopped; the counters are those of the engine without lookahead (rows computed
    and dropped are not counted); a placed request at its budget still finishes."""
    model = tiny("dense")
    ps = prompts(model, [5, 8])
    params = [SamplingParams(temperature=1.0, max_new_tokens=12, seed=3 + i) for i in range(2)]
    full = [Engine(model, max_batch_size=1).generate([Request(p, sp)])[0].tokens for p, sp in zip(ps, params)]
    stats = []
    for lookahead in (False, True):
        engine = Engine(model, max_batch_size=2, lookahead=lookahead)
        ids = [engine.add(Request(p, sp, stop_token_ids=[t[3]])) for p, sp, t in zip(ps, params, full)]
        finished = set()
        while finished != set(ids):
            finished |= {o.request_id for o in engine.step() if o.finished}
        assert not engine.has_unfinished() and engine._planned is None
        s = engine.stats
        stats.append((s.steps, s.decode_steps, s.decode_rows))
        engine.place([8], SamplingParams(temperature=0.0, max_new_tokens=1))  # at its budget already
        outs = [o for _ in range(3) for o in engine.step()]
        assert [o.finish_reason for o in outs] == ["length"] and not engine.has_unfinished()
    assert stats[0] == stats[1]


# ----------------------------------------------------------------------------- fp8 K/V cache


@pytest.mark.parametrize("kind", KINDS)
def test_fp8_kv_cache_halves_the_bytes_and_stays_near_the_full_precision_logits(kind):
    """kv_cache_dtype="fp8": e4m3 pools with a float32 scale per (token, head), one byte per value
    plus four per head vector (about half of bf16's bytes per token); the logits
    of a prefill and 30 decode steps stay within e4m3's precision of the full-precision ones and
    are not equal to them (the pools really are fp8)."""
    model = tiny(kind)
    ids = torch.tensor(prompts(model, [80]))
    auto, fp8 = model.allocate_cache(1, 100), model.allocate_cache(1, 100, kv_cache_dtype="fp8")
    assert all(p.dtype == torch.float8_e4m3fn for p in fp8.cache.k_pool.values())
    G, D = next(iter(auto.cache.k_pool.values())).shape[2:]
    layers = len(auto.cache.k_pool)
    assert auto.cache.kv_bytes_per_token() == layers * 2 * G * D * 4  # fp32 model
    assert fp8.cache.kv_bytes_per_token() == layers * 2 * G * (D + 4)
    with torch.no_grad():
        full = model(ids).logits
        got = []
        for cache in (auto, fp8):
            out = [model(ids[:, :50], cache=cache).logits]
            out += [model(ids[:, t:t + 1], cache=cache).logits for t in range(50, 80)]
            got.append(torch.cat(out, 1))
    err = lambda a: float((a - full).norm() / full.norm())  # noqa: E731
    assert err(got[0]) < 1e-5
    assert 1e-4 < err(got[1]) < (2e-2 if kind == "sambay" else 8e-2)


@pytest.mark.parametrize("kind", KINDS)
def test_fp8_kv_cache_tokens_alone_continuous_and_preempted_are_identical(kind):
    """fp8 K/V is quantized as it is written, in prefill and decode alike: a request's tokens are
    the same alone, beside others with chunked prefill, and after preemption and recomputation."""
    model = tiny(kind)
    lengths, budgets = [3, 11, 6, 19], [30, 9, 24, 14]
    reqs = [Request(p, SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=m, seed=3 + i))
            for i, (p, m) in enumerate(zip(prompts(model, lengths), budgets))]
    alone = [Engine(model, max_batch_size=1, kv_cache_dtype="fp8").generate([r])[0].tokens for r in reqs]
    continuous = Engine(model, max_batch_size=3, prefill_chunk=4, kv_cache_dtype="fp8")
    tight = Engine(model, max_batch_size=4, num_blocks=13, block_size=4, kv_cache_dtype="fp8")
    for engine in (continuous, tight):
        assert [g.tokens for g in engine.generate(reqs)] == alone
        assert engine.free_blocks == engine.num_blocks - 1
    assert tight.stats.preemptions > 0
    with pytest.raises(ValueError, match="kv_cache_dtype 'int4'"):
        Engine(model, kv_cache_dtype="int4")


def test_static_policy_admits_only_into_an_empty_batch():
    model = tiny("sambay")
    engine = Engine(model, max_batch_size=2, policy="static")
    for p, m in zip(prompts(model, [4, 4, 4]), (3, 12, 3)):
        engine.add(Request(p, SamplingParams(temperature=0.0, max_new_tokens=m)))
    seen = []
    while engine.has_unfinished():
        engine.step()
        seen.append((len(engine.scheduler.running), bool(engine.scheduler.prefilling)))
    # the third request waits until both of the first batch are done, though a slot frees early
    first_done = next(i for i, (n, _) in enumerate(seen) if n == 1)
    assert not any(p for _, p in seen[first_done:first_done + 5])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("lookahead", [False, True])
def test_stop_tokens_and_stop_conditions(kind, lookahead):
    model = tiny(kind)
    p = prompts(model, [5])[0]
    free = Engine(model).generate([Request(p, SamplingParams(temperature=0.0, max_new_tokens=12))])[0].tokens
    engine = Engine(model, lookahead=lookahead)
    stop_tok, by_cond = engine.generate([
        Request(p, SamplingParams(temperature=0.0, max_new_tokens=12), stop_token_ids=[free[3]]),
        Request(p, SamplingParams(temperature=0.0, max_new_tokens=12), should_stop=lambda toks: len(toks) == 5),
    ])
    first = free.index(free[3])
    assert stop_tok.tokens == free[:first + 1] and stop_tok.finish_reason == "stop"
    assert by_cond.tokens == free[:5] and by_cond.finish_reason == "stop"


@pytest.mark.parametrize("lookahead", [False, True])
def test_a_failing_stop_check_ends_only_its_request(lookahead):
    """A stop condition that raises ends its own request with finish_reason "error" and the message;
    the request beside it gives the tokens it gives alone, and the blocks all come back."""
    model = tiny("sambay")
    a, b = prompts(model, [7, 5])
    params = SamplingParams(temperature=0.0, max_new_tokens=10)
    engine = Engine(model, max_batch_size=2, block_size=4, lookahead=lookahead)
    alone = engine.generate([Request(b, params)])[0].tokens

    def broken(tokens: list[int]) -> bool:
        if len(tokens) == 3:
            raise RuntimeError("broken stop string")
        return False

    bad, good = engine.generate([Request(a, params, should_stop=broken), Request(b, params)])
    assert bad.finish_reason == "error" and "broken stop string" in bad.error and len(bad.tokens) == 3
    assert good.tokens == alone and good.finish_reason == "length"
    assert engine.free_blocks == engine.num_blocks - 1 and not engine.has_unfinished()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("chunk", [2048, 24])
def test_requests_admitted_together_prefill_in_one_call(kind, chunk, monkeypatch):
    """Whole prompts admitted in one step go through one forward call, right-padded to the longest
    (n samples of a prompt, an evaluation's k, a burst of requests), and chunks of prompts that
    continue from one position to one end likewise; each request gives the tokens it gives alone,
    greedy and seeded. With 24-token chunks a step takes two whole prompts and part of a third."""
    model = tiny(kind)
    a, b = prompts(model, [9, 9], seed=3)
    c, d = prompts(model, [5, 21], seed=4)
    reqs = [Request(a, SamplingParams(temperature=0.0, max_new_tokens=6)),
            Request(a, SamplingParams(temperature=0.9, top_p=0.9, seed=11, max_new_tokens=6)),
            Request(b, SamplingParams(temperature=0.9, seed=12, max_new_tokens=6)),
            Request(c, SamplingParams(temperature=0.0, max_new_tokens=6)),
            Request(d, SamplingParams(temperature=0.0, max_new_tokens=6))]
    engine = Engine(model, max_batch_size=5, block_size=4, prefill_chunk=chunk)
    alone = [engine.generate([r])[0].tokens for r in reqs]
    sizes = []
    real = engine.runner.prefill

    def counted(group, *args):
        sizes.append(len(group))
        return real(group, *args)

    monkeypatch.setattr(engine.runner, "prefill", counted)
    together = [g.tokens for g in engine.generate(reqs)]
    assert together == alone
    assert sizes == [5] if chunk == 2048 else max(sizes) > 1 and sum(sizes) > 5, sizes
    assert engine.free_blocks == engine.num_blocks - 1


@pytest.mark.parametrize("where", ["prefill", "decode"])
@pytest.mark.parametrize("lookahead", [False, True])
def test_a_failing_runner_ends_the_requests_it_computed(where, lookahead, monkeypatch):
    """The runner raising (out of memory, say) inside a prefill ends that request, inside a decode
    step the requests of that step, each with finish_reason "error" and the message; the engine
    frees their memory and runs the rest, which give the tokens they give alone."""
    model = tiny("sambay")
    a, b, c = prompts(model, [7, 5, 9])
    params = SamplingParams(temperature=0.0, max_new_tokens=6)
    engine = Engine(model, max_batch_size=2, block_size=4, lookahead=lookahead)
    alone = {i: engine.generate([Request(p, params)])[0].tokens for i, p in enumerate((a, b, c))}
    runner = engine.runner
    real = getattr(runner, where)
    calls = {"n": 0}

    def fail_once(*args):  # the first call: a's and b's prefill (admitted first), or the first decode step
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("simulated: out of memory")
        return real(*args)

    monkeypatch.setattr(runner, where, fail_once)
    gens = engine.generate([Request(p, params) for p in (a, b, c)])
    failed = [g for g in gens if g.finish_reason == "error"]
    assert failed and all("simulated: out of memory" in g.error and f"the {where}" in g.error for g in failed)
    if where == "prefill":  # a and b, admitted together, prefill in one call
        assert [g.finish_reason for g in gens] == ["error", "error", "length"]
    for i, g in enumerate(gens):
        if g.finish_reason != "error":
            assert g.tokens == alone[i]
    assert engine.free_blocks == engine.num_blocks - 1 and not engine.has_unfinished()


# ----------------------------------------------------------------------------- memory, abort, counters


@pytest.mark.parametrize("lookahead", [False, True])
def test_abort_frees_memory_and_the_others_go_on(lookahead):
    """An abort ends its request in the next step's outputs (with ``lookahead``, the token the
    launched step computes for it dropped), its blocks back; the other request gives the tokens it
    gives alone."""
    model = tiny("dense")
    engine = Engine(model, max_batch_size=4, block_size=4, lookahead=lookahead)
    a, b = prompts(model, [20, 6])
    params = SamplingParams(temperature=0.0, max_new_tokens=40)
    alone = engine.generate([Request(b, params)])[0].tokens
    ra = engine.add(Request(a, params))
    rb = engine.add(Request(b, params, request_id="b"))
    assert rb == "b"
    for _ in range(8):
        engine.step()
    held = engine.num_blocks - 1 - engine.free_blocks
    aborter = threading.Thread(target=engine.abort, args=(ra,))
    aborter.start()
    aborter.join()
    outs = engine.step()
    ended = [o for o in outs if o.request_id == ra and o.finished]
    assert ended and ended[0].finish_reason == "abort"
    assert engine.num_blocks - 1 - engine.free_blocks < held - 20 // 4  # a's blocks are back
    rest = []
    while engine.has_unfinished():
        rest += [o for o in engine.step() if o.finished]
    assert rest[0].generation.tokens == alone and engine.free_blocks == engine.num_blocks - 1
    engine.abort("no-such-request")  # ignored
    engine.step()


def test_lookahead_admits_requests_added_while_a_step_is_in_flight():
    """With lookahead a step is launched before step() returns: requests added and aborted then
    are taken at the next step and give the tokens they give alone; benchmarks' place() refuses
    to change the running set under a launched step."""
    model = tiny("sambay")
    params = SamplingParams(temperature=0.0, max_new_tokens=9)
    a, b, c = prompts(model, [6, 13, 4])
    alone = [Engine(model).generate([Request(p, params)])[0].tokens for p in (a, b, c)]
    engine = Engine(model, max_batch_size=4, block_size=4, lookahead=True)
    done: dict[str, list[int]] = {}
    ids = [engine.add(Request(a, params))]
    for i in range(40):
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out.generation.tokens
        if i in (2, 5):
            assert engine._planned is not None  # the next step is on its way
            ids.append(engine.add(Request(b if i == 2 else c, params)))
        if i == 3:
            with pytest.raises(RuntimeError, match="in flight"):
                engine.place([8])
        if not engine.has_unfinished():
            break
    assert [done[r] for r in ids] == alone
    assert engine.free_blocks == engine.num_blocks - 1 and engine._planned is None


def test_a_failure_planning_the_next_step_keeps_this_steps_outputs(monkeypatch):
    """With lookahead a step plans the next before returning; if that fails (a slot move, say),
    the step still returns what it produced (a finished request here) and the next step raises."""
    model = tiny("sambay")
    engine = Engine(model, max_batch_size=2, lookahead=True)
    a, b = prompts(model, [4, 5])
    engine.add(Request(a, SamplingParams(temperature=0.0, max_new_tokens=3), request_id="short"))
    engine.add(Request(b, SamplingParams(temperature=0.0, max_new_tokens=10), request_id="long"))
    real = engine.runner.move_slot
    armed = [False]

    def flaky(src, dst):
        if armed[0]:
            armed[0] = False
            raise RuntimeError("move failed")
        return real(src, dst)

    monkeypatch.setattr(engine.runner, "move_slot", flaky)
    finished, raised = {}, 0
    while engine.has_unfinished():
        seq = engine._live.get("short")
        armed[0] = armed[0] or (seq is not None and len(seq.tokens) == 2)  # 'short' leaves next: a move follows
        try:
            finished.update({o.request_id: o.finish_reason for o in engine.step() if o.finished})
        except RuntimeError as e:
            assert "move failed" in str(e)
            raised += 1
    assert raised == 1 and finished == {"short": "length", "long": "length"}


@pytest.mark.parametrize("lookahead", [False, True])
def test_stats_count_steps_prefill_tokens_and_the_mean_batch(lookahead):
    model = tiny("sambay")
    engine = Engine(model, max_batch_size=8, prefill_chunk=1000, lookahead=lookahead)
    ps = prompts(model, [5, 7, 9])
    engine.generate([Request(p, SamplingParams(temperature=0.0, max_new_tokens=6)) for p in ps])
    s = engine.stats
    assert s.prefill_tokens == 21 and s.preemptions == 0
    # all three prompts fit one step's prefill budget: they join together, then 5 decode steps of 3
    assert s.decode_rows == 15 and s.decode_steps == 5 and s.steps == 6
    assert s.mean_batch == pytest.approx(3)


@pytest.mark.parametrize("kind", KINDS)
def test_prefill_budget_is_shared_in_admission_order(kind):
    """prefill_chunk=8 over prompts of 5, 7 and 9 tokens: each step computes at most 8 prompt
    tokens, the oldest prompt first, a new one admitted with what is left; max_prefills caps how
    many go in at once. The tokens are what each request gives alone."""
    model = tiny(kind)
    ps = prompts(model, [5, 7, 9])
    params = SamplingParams(temperature=0.0, max_new_tokens=6)
    alone = [Engine(model, max_batch_size=1).generate([Request(p, params)])[0].tokens for p in ps]
    for max_prefills in (16, 1):
        engine = Engine(model, max_batch_size=4, prefill_chunk=8, max_prefills=max_prefills)
        ids = [engine.add(Request(p, params)) for p in ps]
        got: dict[str, list[int]] = {i: [] for i in ids}
        per_step = []
        while engine.has_unfinished():
            before = engine.stats.prefill_tokens
            for out in engine.step():
                got[out.request_id] += out.new_tokens
            per_step.append(engine.stats.prefill_tokens - before)
            assert len(engine.scheduler.prefilling) <= max_prefills
        assert [got[i] for i in ids] == alone
        # 16 slots: 5 + 3 of 7, then 4 + 4 of 9, then 5; one slot: 5, then 7, then 8 + 1
        assert per_step[:4] == ([8, 8, 5, 0] if max_prefills == 16 else [5, 7, 8, 1])
    single = Engine(model, max_batch_size=1)  # no more prefill slots than requests that could use them
    assert single.max_prefills == 1 and single.cache.num_slots == 2
    with pytest.raises(ValueError, match="max_prefills"):
        Engine(model, max_prefills=0)


def test_bad_requests_are_refused_early():
    model = tiny("dense")
    engine = Engine(model, num_blocks=5, block_size=4)
    with pytest.raises(ValueError, match="non-empty list"):
        engine.add(Request([]))
    with pytest.raises(ValueError, match="token ids in"):
        engine.add(Request([1, 10**6]))
    with pytest.raises(ValueError, match="context of 256"):
        engine.add(Request([1] * 200, SamplingParams(max_new_tokens=100)))
    with pytest.raises(ValueError, match="whole K/V pool"):
        engine.add(Request([1] * 10, SamplingParams(max_new_tokens=10)))
    engine.add(Request([1], SamplingParams(max_new_tokens=3), request_id="x"))
    with pytest.raises(ValueError, match="already in use"):
        engine.add(Request([1], SamplingParams(max_new_tokens=3), request_id="x"))
    with pytest.raises(ValueError, match="policy"):
        Engine(model, policy="fifo")


@pytest.mark.parametrize("kind", KINDS)
def test_non_finite_logits_end_the_request_with_an_error(kind):
    model = tiny(kind)
    with torch.no_grad():
        model.lm_head.weight[3, 0] = float("nan")  # tied: the embedding of token 3 too
    engine = Engine(model)
    p = prompts(model, [6])[0]
    gen = engine.generate([Request(p, SamplingParams(temperature=0.0, max_new_tokens=8))])[0]
    assert gen.finish_reason == "error" and "not finite" in gen.error and gen.tokens == []
    assert engine.free_blocks == engine.num_blocks - 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_dropped_engine_frees_its_pool_without_a_garbage_collection(kind):
    """No reference cycle keeps an engine (and its K/V pool) alive once the last reference goes:
    a second engine then sizes its pool from memory the first no longer holds."""
    import gc
    import weakref

    model = tiny(kind)
    gc.disable()
    try:
        engine = Engine(model, max_batch_size=4)
        engine.generate([Request(prompts(model, [5])[0], SamplingParams(temperature=0.0, max_new_tokens=4))])
        pool, ref = weakref.ref(next(iter(engine.cache.k_pool.values()))), weakref.ref(engine)
        del engine
        assert ref() is None and pool() is None
    finally:
        gc.enable()


def test_graph_ladder():
    assert graph_ladder(1) == [1]
    assert graph_ladder(8) == [1, 2, 4, 8]
    assert graph_ladder(40) == [1, 2, 4, 8, 16, 32, 40]
