"""Step parity: samples/s of the ``resnet1d`` seed configuration through the platform's loop
(:func:`trainables.loop.fit`) vs a bare PyTorch loop over the same memory-mapped data, in the
same process, alternating runs so drift hits both alike.

    python bench/step_parity.py --samples 2000 --epochs 2 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datasets import get_dataset  # noqa: E402
from search_spaces import get_space  # noqa: E402
from trainables.loop import FitSettings, fit, make_optimizer  # noqa: E402


def bare_epochs(space, config, data, epochs: int, seed: int = 0) -> int:
    """A hand-written loop: same model, optimizer, batches and augmentation; no platform."""
    torch.manual_seed(seed)
    model = space.build(config, data.info)
    opt = make_optimizer(model, config)
    x, y = data.arrays["x"], data.arrays["y"]
    batch, background = int(config["batch_size"]), float(config["background"])
    seen = 0
    for epoch in range(1, epochs + 1):
        rng = np.random.default_rng([seed, epoch])
        model.train()
        order = rng.permutation(data.train)
        for start in range(0, len(order), batch):
            idx = np.sort(order[start : start + batch])
            if len(idx) < 2:
                continue
            xb = torch.from_numpy(np.asarray(x[idx], dtype=np.float32))
            yb = torch.from_numpy(np.asarray(y[idx])).long()
            xb = xb + torch.from_numpy(rng.uniform(0, background, (len(idx), 1))).float()
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
        model.eval()
        with torch.no_grad():
            for start in range(0, len(data.val), 256):
                idx = data.val[start : start + 256]
                model(torch.from_numpy(np.asarray(x[idx], dtype=np.float32)))
                seen += len(idx)
    return seen


def platform_epochs(space, config, data, epochs: int, figure_every: int = 3) -> int:
    fit(space, config, data, FitSettings(max_epochs=epochs, seed=0, figure_every=figure_every),
        report=lambda m, s: None)
    per_epoch = (len(data.train) // 1) + len(data.val)
    return per_epoch * epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    space = get_space("resnet1d")
    spec = get_dataset(space.dataset)
    data = spec.load(spec.prepare(None, args.samples, 0, {}), 0, {})
    config = dict(space.seed_config)
    times = {"bare": [], "platform": [], "no figures": []}
    counts = {}

    def without_figures(*a):
        return platform_epochs(*a, figure_every=0)

    for _ in range(args.repeats):
        for name, fn in (("bare", bare_epochs), ("platform", platform_epochs),
                         ("no figures", without_figures)):
            start = time.perf_counter()
            counts[name] = fn(space, config, data, args.epochs)
            times[name].append(time.perf_counter() - start)
    rate = {k: counts[k] / min(v) for k, v in times.items()}
    print(f"step parity: resnet1d seed config, {args.samples} patterns, {args.epochs} epochs, "
          f"best of {args.repeats}, {torch.get_num_threads()} thread(s)")
    print("| loop | samples/s |")
    print("| --- | ---: |")
    print(f"| bare PyTorch | {rate['bare']:.0f} |")
    print(f"| platform `fit` (defaults: a confusion-matrix picture on the last epoch) | "
          f"{rate['platform']:.0f} |")
    print(f"| platform `fit`, pictures off | {rate['no figures']:.0f} |")
    print(f"| **platform ÷ bare** (target ≥ 0.97) | **{rate['platform'] / rate['bare']:.3f}** |")
    print(f"| pictures off ÷ bare | {rate['no figures'] / rate['bare']:.3f} |")


if __name__ == "__main__":
    main()
