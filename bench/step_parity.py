"""Step parity: samples/s of the ``resnet1d`` seed configuration through the platform's loop
(:func:`trainables.loop.fit`) vs a bare PyTorch loop over the same memory-mapped data, in the
same process. Rounds alternate the order of the loops (ABC, CBA, ...); the headline is the
median over rounds of each round's platform ÷ bare, which cancels the machine's drift better
than a ratio of best times taken minutes apart.

    python bench/step_parity.py --samples 2000 --epochs 2 --repeats 6
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


def bare_epochs(space, config, data, epochs: int, seed: int = 0, device: str = "cpu",
                precision: str = "fp32") -> int:
    """A hand-written loop: same model, optimizer, batches and augmentation; no platform.
    ``precision`` fp32 or bf16 (autocast, as the platform's loop does)."""
    torch.manual_seed(seed)
    dev = torch.device(device)
    model = space.build(config, data.info).to(dev)
    opt = make_optimizer(model, config)
    mixed = precision == "bf16"
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
            xb = torch.from_numpy(np.asarray(x[idx], dtype=np.float32)).to(dev)
            yb = torch.from_numpy(np.asarray(y[idx])).long().to(dev)
            xb = xb + torch.from_numpy(rng.uniform(0, background, (len(idx), 1))).float().to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=mixed):
                loss = F.cross_entropy(model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(idx)
        model.eval()
        with torch.no_grad():
            for start in range(0, len(data.val), 256):
                idx = data.val[start : start + 256]
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=mixed):
                    model(torch.from_numpy(np.asarray(x[idx], dtype=np.float32)).to(dev)).cpu()
                seen += len(idx)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return seen


def platform_epochs(space, config, data, epochs: int, figure_every: int = 3,
                    device: str = "cpu", precision: str = "fp32") -> int:
    """The platform's :func:`fit` for ``epochs`` epochs; returns the samples it went through."""
    fit(space, config, data, FitSettings(max_epochs=epochs, seed=0, figure_every=figure_every,
                                         device=device, precision=precision),
        report=lambda m, s: None)
    if device == "cuda":
        torch.cuda.synchronize()
    per_epoch = (len(data.train) // 1) + len(data.val)
    return per_epoch * epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=6, help="rounds of the three loops")
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

    legs = [("bare", bare_epochs), ("platform", platform_epochs), ("no figures", without_figures)]
    ratios: dict[str, list[float]] = {"platform": [], "no figures": []}
    for _, fn in legs:  # untimed warm-up: first calls of torch's kernels, page cache, imports
        fn(space, config, data, 1)
    for round_ in range(args.repeats):
        # ABC, CBA, ABC, ...: each loop runs as often first as last, so a drift of the machine's
        # speed (these VMs' kernels vary by 10-20 % from one minute to the next) hits all alike
        order = legs if round_ % 2 == 0 else legs[::-1]
        took = {}
        for name, fn in order:
            start = time.perf_counter()
            counts[name] = fn(space, config, data, args.epochs)
            took[name] = time.perf_counter() - start
            times[name].append(took[name])
        for name in ratios:  # samples/s ratio of this round's neighbouring runs
            ratios[name].append((counts[name] / took[name]) / (counts["bare"] / took["bare"]))
    rate = {k: counts[k] / min(v) for k, v in times.items()}
    median = {k: float(np.median(v)) for k, v in ratios.items()}
    print(f"step parity: resnet1d seed config, {args.samples} patterns, {args.epochs} epochs, "
          f"{args.repeats} rounds (ABC/CBA order), {torch.get_num_threads()} thread(s)")
    print("| loop | samples/s (best of rounds) | ÷ bare, median of rounds | ÷ bare, each round |")
    print("| --- | ---: | ---: | --- |")
    print(f"| bare PyTorch | {rate['bare']:.0f} | | |")
    each = {k: ", ".join(f"{r:.3f}" for r in v) for k, v in ratios.items()}
    print(f"| platform `fit` (defaults: pictures every third and the last epoch) | "
          f"{rate['platform']:.0f} | **{median['platform']:.3f}** | {each['platform']} |")
    print(f"| platform `fit`, pictures off | {rate['no figures']:.0f} | "
          f"{median['no figures']:.3f} | {each['no figures']} |")
    print(f"**platform ÷ bare** (target ≥ 0.97): **{median['platform']:.3f}** median of rounds, "
          f"{rate['platform'] / rate['bare']:.3f} best-of ÷ best-of; pictures off "
          f"{median['no figures']:.3f} / {rate['no figures'] / rate['bare']:.3f}")

if __name__ == "__main__":
    main()
