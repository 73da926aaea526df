"""Would a compiled decoder be faster?  One chunk of the decoder, eager (``triplane_gan_ns.fields.decoder``)
against the same layers through ``torch.compile`` (inductor: one C++ loop per layer fusing the bias, the
softplus and its ``log``/``sigmoid``), alternating in one process.

Usage: python benchmarks/decoder_compile.py [--threads 2] [--repeats 200]

Prints, for the tiny preset's decoder (8 -> 32 -> 32 -> 9) and the paper preset's (32 -> 64 x 3 -> 33), the
median and best time of one 4096-row forward each way, their ratio and the largest difference of the outputs.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from triplane_gan_ns.fields.decoder import CHUNK, Decoder


def softplus_layers(x, *params):
    """The decoder's arithmetic written as plain tensor expressions, for the compiler to fuse."""
    weights, biases = params[0::2], params[1::2]
    h = x
    for w, b in zip(weights[:-1], biases[:-1]):
        z = h @ w.t() + b
        h = z.clamp_min(0) - torch.log(torch.sigmoid(z.abs()))
    return h @ weights[-1].t() + biases[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads")
    compiled = torch.compile(softplus_layers, dynamic=False)
    for name, (inputs, hidden, layers, outputs) in {"tiny": (8, 32, 2, 9), "paper": (32, 64, 3, 33)}.items():
        torch.manual_seed(0)
        decoder = Decoder(inputs, hidden, layers, outputs).requires_grad_(False)
        x = torch.randn(CHUNK, inputs)
        params = decoder.params()
        start = time.perf_counter()
        fused = compiled(x, *params)
        compile_s = time.perf_counter() - start
        difference = float((fused - decoder(x)).abs().max())
        times = {"eager": [], "compiled": []}
        for _ in range(args.repeats):
            for way, run in (("eager", lambda: decoder(x)), ("compiled", lambda: compiled(x, *params))):
                start = time.perf_counter()
                run()
                times[way].append(time.perf_counter() - start)
        eager, fast = statistics.median(times["eager"]), statistics.median(times["compiled"])
        print(
            f"{name}: eager {eager * 1e6:.0f} us (best {min(times['eager']) * 1e6:.0f}), compiled {fast * 1e6:.0f} us "
            f"(best {min(times['compiled']) * 1e6:.0f}; compiling took {compile_s:.1f} s): {eager / fast:.2f}x, "
            f"largest difference {difference:.1e}"
        )


if __name__ == "__main__":
    main()
