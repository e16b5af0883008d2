"""Tables and plots of trial results: what a person reads at the end of a run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from rich.table import Table

COLUMNS = [
    # (header, key, format)
    ("params", "parameters", "{:,}"),
    ("eval loss", "eval_loss", "{:.3f}"),
    ("MQAR acc", "mqar_accuracy", "{:.3f}"),
    ("downstream", "downstream_mean", "{:.3f}"),
    ("tokens/s", "tokens_per_second", "{:,.0f}"),
    ("time (s)", "train_seconds", "{:.0f}"),
    ("stop", "stop_reason", "{}"),
]


if TYPE_CHECKING:
    from asiarch.storage import Location


def cell(value: Any, fmt: str) -> str:
    """A table cell: ``-`` for a value that was not measured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def results_table(rows: Sequence[dict[str, Any]], title: str = "Results") -> Table:
    table = Table(title=title)
    table.add_column("seed")
    for header, _, _ in COLUMNS:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(row.get("seed", row.get("mixer", "?")), *(cell(row.get(key), fmt) for _, key, fmt in COLUMNS))
    return table


def progress_table(latest: dict[str, dict[str, Any]], names: Sequence[str]) -> Table:
    """Live view: step, losses and throughput of every running trial."""
    table = Table(title="Training seeds")
    for header in ("seed", "state", "step", "train loss", "eval loss", "MQAR acc", "tokens/s"):
        table.add_column(header, justify="left" if header in ("seed", "state") else "right")
    for name in names:
        m = latest.get(name, {})
        step = f"{m.get('step', 0)}/{m['total_steps']}" if "total_steps" in m else "-"
        table.add_row(
            name, m.get("state", "queued"), step,
            cell(m.get("train_loss"), "{:.3f}"), cell(m.get("eval_loss"), "{:.3f}"),
            cell(m.get("mqar_accuracy"), "{:.3f}"), cell(m.get("tokens_per_second"), "{:,.0f}"),
        )
    return table


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    headers = ["seed"] + [h for h, _, _ in COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [row.get("seed", row.get("mixer", "?"))] + [cell(row.get(key), fmt) for _, key, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Eval loss and MQAR accuracy against tokens seen, one line per trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_mqar) = plt.subplots(1, 2, figsize=(11, 4))
    for row in rows:
        history = row.get("history") or []
        if not history:
            continue
        tokens = [h["tokens_seen"] / 1e6 for h in history]
        label = row.get("seed", row.get("mixer", "?"))
        ax_loss.plot(tokens, [h["eval_loss"] for h in history], marker="o", label=label)
        if "mqar_accuracy" in history[0]:
            ax_mqar.plot(tokens, [h["mqar_accuracy"] for h in history], marker="o", label=label)
    ax_loss.set(xlabel="tokens seen (M)", ylabel="validation loss", title="LM validation loss")
    ax_mqar.set(xlabel="tokens seen (M)", ylabel="accuracy", title="MQAR accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_mqar):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(out_dir: "Location", rows: Sequence[dict[str, Any]], title: str) -> None:
    """results.json (everything), results.md (the table) and curves.png into ``out_dir`` (a directory or s3://)."""
    from asiarch.storage import local_dir

    with local_dir(out_dir) as local:
        (local / "results.json").write_text(json.dumps(list(rows), indent=2, default=str))
        (local / "results.md").write_text(f"# {title}\n\n{markdown_table(rows)}\n\n![curves](curves.png)\n")
        plot_curves(rows, local / "curves.png")
