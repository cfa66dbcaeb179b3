"""ExecuTorch's activation arena before and after Serenity (issue 13) on four branchy PyTorch cells.

Run ``.venv/bin/python benchmarks/bench_executorch.py``. Each cell is built in PyTorch (eval mode,
seeded weights), exported with ``torch.export`` and written as a ``.pte`` twice: as ExecuTorch
writes it (export order, its greedy planner) and as :func:`serenity.executorch_io.to_executorch`
writes it (Serenity's order, the exact arena planner over ExecuTorch's lifetimes). Both arenas are
``execution_plan[0].non_const_buffer_sizes``; the column "ET in our order" is ExecuTorch's own
planner given Serenity's order, to separate what the order saves from what the planner saves.

Targets (exit 1 on a miss): our ``.pte`` runs in ``executorch.runtime`` with outputs equal to eager
PyTorch (``rtol = atol = 1e-4``), and our arena is never above ExecuTorch's in the export order.
"""

from __future__ import annotations

import random

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from verdict import verdict

from serenity.executorch_io import run_pte, to_executorch
from serenity.torch_export import from_torch


def conv_bn(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation), nn.BatchNorm2d(cout)
    )


def sep_conv(c: int, k: int, dilation: int = 1) -> nn.Sequential:
    """DARTS' separable conv: ReLU, depthwise k x k, pointwise 1 x 1, BN."""
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.ReLU(),
        nn.Conv2d(c, c, k, padding=pad, dilation=dilation, groups=c),
        nn.Conv2d(c, c, 1),
        nn.BatchNorm2d(c),
    )


class Inception(nn.Module):
    """GoogLeNet's inception (3a) block at 28 x 28: 1x1; 1x1 -> 3x3; 1x1 -> 5x5; pool -> 1x1."""

    def __init__(self, c: int = 192) -> None:
        super().__init__()
        self.b1 = conv_bn(c, 64)
        self.b2 = nn.Sequential(conv_bn(c, 96), nn.ReLU(), conv_bn(96, 128, 3))
        self.b3 = nn.Sequential(conv_bn(c, 16), nn.ReLU(), conv_bn(16, 32, 5))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(c, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1))


class DartsNormal(nn.Module):
    """DARTS (V2) normal cell: preprocess both inputs, four nodes each summing two ops, concat."""

    GENOTYPE = (
        ("sep3", 0),
        ("sep3", 1),
        ("sep3", 0),
        ("sep3", 1),
        ("sep3", 1),
        ("skip", 0),
        ("skip", 0),
        ("dil3", 2),
    )

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.pre0, self.pre1 = conv_bn(c, c), conv_bn(c, c)
        ops = {"sep3": lambda: sep_conv(c, 3), "dil3": lambda: sep_conv(c, 3, 2), "skip": nn.Identity}
        self.ops = nn.ModuleList(ops[name]() for name, _ in self.GENOTYPE)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for i in range(4):
            ia, ib = self.GENOTYPE[2 * i][1], self.GENOTYPE[2 * i + 1][1]
            states.append(self.ops[2 * i](states[ia]) + self.ops[2 * i + 1](states[ib]))
        return torch.cat(states[2:], 1)


class NasnetNormal(nn.Module):
    """NASNet-A normal cell: five blocks summing two ops of h and h_prev, concatenated with h_prev."""

    def __init__(self, c: int = 32) -> None:
        super().__init__()
        self.h, self.hp = conv_bn(c, c), conv_bn(c, c)
        self.sep = nn.ModuleList(
            [sep_conv(c, 3), sep_conv(c, 3), sep_conv(c, 5), sep_conv(c, 5), sep_conv(c, 3)]
        )
        self.avg = nn.AvgPool2d(3, 1, 1, count_include_pad=False)

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor) -> torch.Tensor:
        h, hp = self.h(x), self.hp(x_prev)
        blocks = [
            self.sep[0](h) + h,
            self.sep[1](hp) + self.sep[2](h),
            self.avg(h) + hp,
            self.avg(hp) + self.avg(hp),
            self.sep[3](hp) + self.sep[4](hp),
        ]
        return torch.cat([hp, *blocks], 1)


class RandWireStage(nn.Module):
    """A RandWire stage: a seeded random DAG (each node reads up to three of the four before it),
    node = ReLU -> separable 3x3 -> BN over the sum of its inputs; the output is the mean of the
    nodes no other node reads."""

    def __init__(self, c: int = 32, n: int = 12, seed: int = 0) -> None:
        super().__init__()
        rng = random.Random(seed)
        self.preds: list[list[int]] = []
        for i in range(n):
            window = list(range(max(-1, i - 4), i))  # -1 is the stage input
            self.preds.append(sorted(rng.sample(window, min(len(window), rng.randint(1, 3)))))
        read = {p for ps in self.preds for p in ps}
        self.sinks = [i for i in range(n) if i not in read]
        self.nodes = nn.ModuleList(sep_conv(c, 3) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        for node, ps in zip(self.nodes, self.preds, strict=True):
            ins = [x if p < 0 else outs[p] for p in ps]
            total = ins[0]
            for t in ins[1:]:
                total = total + t
            outs.append(node(total))
        sink = outs[self.sinks[0]]
        for i in self.sinks[1:]:
            sink = sink + outs[i]
        return sink


def cells() -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]]:
    torch.manual_seed(0)
    return {
        "inception-3a": (Inception(), (torch.randn(1, 192, 28, 28),)),
        "darts-normal": (DartsNormal(), (torch.randn(1, 32, 32, 32), torch.randn(1, 32, 32, 32))),
        "nasnet-a-normal": (NasnetNormal(), (torch.randn(1, 32, 32, 32), torch.randn(1, 32, 32, 32))),
        "randwire-stage": (RandWireStage(), (torch.randn(1, 32, 32, 32),)),
    }


def main() -> int:
    console = Console(width=160)
    table = Table(
        "cell", "ops", "ET export order", "ET in our order", "Serenity", "saved", "proven", "max |diff|", "s"
    )
    misses: list[str] = []
    for name, (model, inputs) in cells().items():
        model.eval()
        graph, program = from_torch(model, inputs)
        pte, report = to_executorch(program)
        _, et_ours = to_executorch(program, report.order, planner="executorch")
        with torch.no_grad():
            want = model(*inputs)
        got = run_pte(pte, list(inputs))[0]
        diff = float((got - want).abs().max())
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
            misses.append(f"{name}: ExecuTorch's outputs differ from eager PyTorch by {diff:.3g}")
        if report.arena > report.executorch_arena:
            misses.append(
                f"{name}: our arena {report.arena:,} B is above ExecuTorch's {report.executorch_arena:,} B"
            )
        saved = 1 - report.arena / report.executorch_arena if report.executorch_arena else 0.0
        table.add_row(
            name,
            str(len(graph.ops)),
            f"{report.executorch_arena:,}",
            f"{et_ours.arena:,}",
            f"{report.arena:,}",
            f"{saved:.1%}",
            "yes" if report.proven else "no",
            f"{diff:.2g}",
            f"{report.seconds:.1f}",
        )
    console.print(table)
    return verdict(console, misses)


if __name__ == "__main__":
    raise SystemExit(main())
