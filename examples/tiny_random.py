"""End to end on a tiny random SambaY: build, save in the official layout, load, prefill,
decode greedily through the cache, and check the result against one full forward pass.

    python examples/tiny_random.py [--out DIR] [--tokens 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from sambay import SambaYConfig, SambaYForCausalLM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="checkpoint folder to write (default: a temporary folder)")
    ap.add_argument("--tokens", type=int, default=64, help="tokens to generate")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    config = SambaYConfig.tiny()
    model = SambaYForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tiny SambaY: {n_params / 1e6:.2f}M parameters, layers {config.layer_types}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.out or tmp
        model.save_pretrained(folder)
        model = SambaYForCausalLM.from_pretrained(folder)
        print(f"saved and reloaded {folder}")

        prompt = torch.randint(0, config.vocab_size, (1, 16))
        cache = model.allocate_cache(batch_size=1, max_seq_len=prompt.shape[1] + args.tokens)
        t0 = time.perf_counter()
        with torch.no_grad():
            next_id = model(prompt, cache=cache, logits_to_keep=1).logits.argmax(-1)
            generated = [next_id]
            for _ in range(args.tokens - 1):
                next_id = model(next_id, cache=cache).logits.argmax(-1)
                generated.append(next_id)
            tokens = torch.cat([prompt] + generated, dim=1)
            dt = time.perf_counter() - t0
            # Greedy decoding through the cache must pick the argmax of a full forward everywhere.
            full = model(tokens[:, :-1]).logits.argmax(-1)[:, prompt.shape[1] - 1:]
        same = torch.equal(full, tokens[:, prompt.shape[1]:])
        print(f"generated {args.tokens} tokens in {dt:.2f}s on CPU: {tokens[0, prompt.shape[1]:].tolist()}")
        print(f"cached decoding matches a full forward pass: {same}")
        if not same:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
