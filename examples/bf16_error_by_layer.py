"""How far bf16 inference drifts from fp32 on the same weights, layer by layer (CPU is enough).

    python examples/bf16_error_by_layer.py --layers 8 --tokens 64

Builds the dense Phi-4-mini at its official width with ``--layers`` layers and random weights
rounded to bf16, runs the plain-PyTorch reference once in fp32 and once in bf16, and prints each
layer's output relative error ‖bf16 − fp32‖ / ‖fp32‖ and the logits'. Then it injects relative
noise of bf16's size (``--noise``) into layer 0's MLP output of the fp32 run, to show whether the
network amplifies a perturbation or just carries it.
"""

from __future__ import annotations

import argparse
import copy

import torch

import layers.backends as backends
from sambay import Phi4MiniConfig, Phi4MiniForCausalLM


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--noise", type=float, default=4e-3)
    args = ap.parse_args()
    torch.manual_seed(0)
    config = Phi4MiniConfig.official()
    config.num_hidden_layers = args.layers
    model32 = Phi4MiniForCausalLM(config).to(torch.bfloat16).float().eval()  # bf16 values, fp32 math
    model16 = copy.deepcopy(model32).to(torch.bfloat16)
    ids = torch.randint(0, config.vocab_size, (1, args.tokens))
    outputs: dict[int, list[torch.Tensor]] = {}
    for model in (model32, model16):
        for i, layer in enumerate(model.model.layers):
            layer.register_forward_hook(lambda mod, inp, out, i=i: outputs.setdefault(i, []).append(out.float()))
    with torch.no_grad(), backends.use(attention="ref", mamba="ref", linear="torch"):
        logits32, logits16 = model32(ids).logits.float(), model16(ids).logits.float()
        for i in range(args.layers):
            print(f"layer {i:2d} output: bf16 vs fp32 relative error {rel(outputs[i][1], outputs[i][0]):.2e}")
        print(f"logits: bf16 vs fp32 relative error {rel(logits16, logits32):.2e}")
        mlp = model32.model.layers[0].mlp
        hook = mlp.register_forward_hook(lambda mod, inp, out: out * (1 + args.noise * torch.randn_like(out)))
        noisy = model32(ids).logits.float()
        hook.remove()
    print(f"fp32 with {args.noise:.1e} relative noise on layer 0's MLP output: logits move by {rel(noisy, logits32):.2e}")


if __name__ == "__main__":
    main()
