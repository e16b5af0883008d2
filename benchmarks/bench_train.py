"""Forward+backward throughput of each seed mixer at cpu_tiny widths across sequence lengths,
and the time per token of a training step of the research-scale language model with each seed.

Prints tokens/s per seed and length, each seed's speed relative to softmax attention
measured in the same run, and each seed's time growth from T=1024 to T=4096 at the same batch size
(a linear-cost mixer grows ~4x, attention more). The second table trains the cpu_tiny LM (its batch,
sequence length and widths) for a few AdamW steps per seed and gives each seed's time per token
against the slowest of the 2024 seeds (deltanet, gated_deltanet, mamba2, attention) measured in the
same run: issue 17's goal is <= 1.5x for the frontier seeds. Run: ``.venv/bin/python benchmarks/bench_train.py``.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
from rich.table import Table

from asiarch.console import output_console  # noqa: E402
from asiarch.arch import SEEDS
from asiarch.config import load_scale


def median_seconds(step: Callable[[], None], device: str, repeats: int) -> float:
    """Median seconds of ``step()`` over ``repeats`` calls after one warm-up (allocations, kernel compilation)."""
    times = []
    for i in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def time_fwd_bwd(mixer: torch.nn.Module, batch: int, length: int, width: int, device: str, repeats: int) -> float:
    """Median seconds of one forward+backward of ``mixer`` on a ``[batch, length, width]`` input."""
    x = torch.randn(batch, length, width, device=device, requires_grad=True)
    return median_seconds(lambda: mixer(x).sum().backward(), device, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--batch", type=int, default=2, help="sequences per batch, the same at every length")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_scale("cpu_tiny").model
    width, heads = model.hidden_size, model.num_heads

    rates: dict[str, dict[int, float]] = {}
    seconds: dict[str, dict[int, float]] = {}
    for name, cls in SEEDS.items():
        torch.manual_seed(0)
        mixer = cls(width, heads, layer_idx=0, **model.mixer_kwargs).to(args.device)
        for length in args.lengths:
            t = time_fwd_bwd(mixer, args.batch, length, width, args.device, args.repeats)
            seconds.setdefault(name, {})[length] = t
            rates.setdefault(name, {})[length] = args.batch * length / t

    table = Table(title=f"forward+backward tokens/s, batch {args.batch}, d={width}, {heads} heads, {args.device}, {args.threads} thread(s)")
    table.add_column("seed")
    for length in args.lengths:
        table.add_column(f"T={length}", justify="right")
        table.add_column("vs attn", justify="right")
    growth = 1024 in args.lengths and 4096 in args.lengths
    if growth:
        table.add_column("time x (1024->4096)", justify="right")
    for name in SEEDS:
        cells = []
        for length in args.lengths:
            cells += [f"{rates[name][length]:,.0f}", f"{rates[name][length] / rates['attention'][length]:.2f}x"]
        if growth:
            cells.append(f"{seconds[name][4096] / seconds[name][1024]:.1f}x")
        table.add_row(name, *cells)
    output_console().print(table)
    research_scale_table(args.device, args.repeats)


BASELINE_SEEDS = ("deltanet", "gated_deltanet", "mamba2", "attention")


def research_scale_table(device: str, repeats: int) -> None:
    """Seconds per training step of the cpu_tiny LM with each seed (median), and per token."""
    from asiarch.arch import LanguageModel, ModelConfig

    scale = load_scale("cpu_tiny")
    cfg = ModelConfig(**{**scale.model.__dict__, "vocab_size": 1024 + 128})  # the tokenizer's vocab + MQAR's
    batch, length = scale.train.batch_size, scale.train.seq_len
    step_seconds: dict[str, float] = {}
    for name, cls in SEEDS.items():
        torch.manual_seed(0)
        model = LanguageModel(cfg, cls).to(device)
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
        tokens = torch.randint(0, cfg.vocab_size, (batch, length + 1), device=device)

        def step() -> None:
            optimiser.zero_grad(set_to_none=True)
            logits = model(tokens[:, :-1])
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
            optimiser.step()

        step_seconds[name] = median_seconds(step, device, repeats)
    slowest = max(step_seconds[n] for n in BASELINE_SEEDS if n in step_seconds)
    table = Table(title=f"cpu_tiny LM training step (batch {batch} x {length} tokens, d={cfg.hidden_size}, "
                        f"{cfg.num_layers} layers), {device}; baseline: the slowest 2024 seed")
    for col in ("seed", "s / step", "us / token", "vs slowest 2024 seed", "goal (frontier)"):
        table.add_column(col, justify="right" if col != "seed" else "left")
    for name, t in step_seconds.items():
        frontier = name not in BASELINE_SEEDS
        ratio = t / slowest
        table.add_row(name, f"{t:.3f}", f"{t / (batch * length) * 1e6:.1f}", f"{ratio:.2f}x",
                      ("met" if ratio <= 1.5 else "NOT met") + " (<= 1.5x)" if frontier else "")
    output_console().print(table)


if __name__ == "__main__":
    main()
