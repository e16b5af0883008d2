"""``asiarch report``: a campaign's figures as PNG files and a Markdown summary, offline.

The same views as the dashboard (fitness over time, the discovery curve, the lineage,
loss curves of the best designs against the seeds, counts per status), drawn with
matplotlib's Agg canvas so that it runs on a machine without a display or a network,
and with no shared pyplot state, so reports of several campaigns can be written at once.
Every number comes from ``CampaignData``, so the report, the dashboard and ``asiarch
status`` count by the same rules (``asiarch.memory.lifecycle``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from asiarch.memory import STATUSES, Candidate
from asiarch.serve.data import CampaignData

STATUS_COLORS = {
    "proposed": "#9aa5b1", "validated": "#5b8def", "rejected": "#d9534f", "training": "#f0ad4e",
    "stopped": "#b08b5b", "finished": "#3a9d5d", "failed": "#8b1a1a", "promoted": "#7e57c2",
}
SEED_COLOR = "#222222"
BEST_COLOR = "#e0a100"
FIGURES = ("fitness_over_time.png", "discovery.png", "lineage.png", "top_curves.png", "status_counts.png")


if TYPE_CHECKING:
    from asiarch.storage import Location


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, format="png")
    return path


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#6b7480")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_fitness_over_time(fitness: dict[str, Any], path: Path, title: str = "") -> Path:
    """Fitness of each scored candidate by proposal number, the best so far, and the seeds' fitness."""
    figure = _figure(8, 4.2)
    ax = figure.add_subplot()
    points = fitness["points"]
    if not points:
        _empty(ax, "no scored candidates yet")
    else:
        for verified, color, size, label in ((False, "#5b8def", 14, "explore"), (True, "#7e57c2", 30, "verified")):
            chosen = [p for p in points if p["verified"] == verified]
            if chosen:
                ax.scatter([p["number"] for p in chosen], [p["fitness"] for p in chosen], s=size if len(points) < 2000 else 4,
                           color=color, alpha=0.75, label=label, linewidths=0)
        stars = [p for p in points if p["breakthrough"]]
        if stars:
            ax.scatter([p["number"] for p in stars], [p["fitness"] for p in stars], marker="*", s=120, color=BEST_COLOR,
                       edgecolors="#6b4b00", linewidths=0.5, label="breakthrough", zorder=4)
        xs = [p["number"] for p in points] + [fitness["proposals"]]
        ax.step(xs, [p["best"] for p in points] + [points[-1]["best"]], where="post", color=BEST_COLOR, lw=2,
                label="best so far", zorder=3)
        for value in sorted({b["fitness"] for b in fitness["baselines"]}):
            names = ", ".join(b["name"] for b in fitness["baselines"] if b["fitness"] == value)
            ax.axhline(value, color="#888", ls="--", lw=1, label=f"seeds ({names})" if len(names) < 50 else "seeds")
        ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel("proposal number")
        ax.set_ylabel("fitness")
        ax.grid(alpha=0.3)
    ax.set_title(title or "Fitness over time")
    return _save(figure, path)


def plot_discovery(discovery: dict[str, Any], path: Path, title: str = "") -> Path:
    """Cumulative breakthroughs against device-hours, with the best fitness against device-hours beside it."""
    figure = _figure(8, 4.2)
    ax = figure.add_subplot()
    points, hours = discovery["points"], discovery["device_hours"]
    end = max([hours] + [p["device_hours"] for p in points])
    xs = [0.0] + [p["device_hours"] for p in points] + [end]
    ys = [0] + [p["breakthroughs"] for p in points] + [points[-1]["breakthroughs"] if points else 0]
    ax.step(xs, ys, where="post", color=BEST_COLOR, lw=2.2, label="breakthroughs")
    if points:
        ax.scatter([p["device_hours"] for p in points], [p["breakthroughs"] for p in points], color=BEST_COLOR, s=18, zorder=3)
    ax.set_xlabel("device-hours")
    ax.set_ylabel("cumulative breakthroughs")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(-0.1, max(ys) + 1)  # counts: from zero, never a symmetric band around a flat 0
    ax.grid(alpha=0.3)
    curve = discovery.get("best_fitness") or []
    if curve:
        twin = ax.twinx()
        twin.step([c["device_hours"] for c in curve] + [end], [c["best_fitness"] for c in curve] + [curve[-1]["best_fitness"]],
                  where="post", color="#5b8def", lw=1.2, alpha=0.8,
                  label="best explore fitness" + (" (in update order)" if discovery.get("best_fitness_order") == "last update" else ""))
        twin.set_ylabel("best explore fitness so far", color="#5b8def")
        lines = ax.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    else:
        ax.legend(loc="upper left", fontsize=8)
    source = "campaign.json" if discovery["source"] == "campaign.json" else "rebuilt from the memory"
    ax.set_title(title or f"Discovery: breakthroughs against compute ({source})")
    return _save(figure, path)


def plot_lineage(lineage: dict[str, Any], path: Path, label_ids: Sequence[str] = (), title: str = "") -> Path:
    """The family tree, seeds on the left, in the dashboard's layered layout."""
    nodes = lineage["nodes"]
    depth = max((n["depth"] for n in nodes), default=0)
    rows = max((n["row"] for n in nodes), default=0)
    figure = _figure(min(16, max(8, 0.8 * depth + 4)), min(14, max(4.5, 0.16 * rows + 2)))
    ax = figure.add_subplot()
    if not nodes:
        _empty(ax, "no candidates yet")
        return _save(figure, path)
    where = {n["id"]: (n["depth"], -n["row"]) for n in nodes}
    for edge in lineage["edges"]:
        (x1, y1), (x2, y2) = where[edge["source"]], where[edge["target"]]
        ax.plot([x1, x2], [y1, y2], color="#c5cbd3", lw=0.6, zorder=1)
    for status, color in STATUS_COLORS.items():
        chosen = [n for n in nodes if n["status"] == status and not n["baseline"]]
        if chosen:
            ax.scatter([where[n["id"]][0] for n in chosen], [where[n["id"]][1] for n in chosen], s=22, color=color,
                       label=status, zorder=2, edgecolors="white", linewidths=0.4)
    rings = [n for n in nodes if n["breakthrough"]]
    if rings:
        ax.scatter([where[n["id"]][0] for n in rings], [where[n["id"]][1] for n in rings], s=90, facecolors="none",
                   edgecolors=BEST_COLOR, linewidths=1.8, label="breakthrough", zorder=3)
    seeds = [n for n in nodes if n["baseline"]]
    if seeds:
        ax.scatter([where[n["id"]][0] for n in seeds], [where[n["id"]][1] for n in seeds], marker="s", s=36,
                   color=SEED_COLOR, label="seed", zorder=2)
    labelled = set(label_ids) | {n["id"] for n in seeds}
    for n in nodes:
        if n["id"] in labelled:
            x, y = where[n["id"]]
            ax.annotate(n["name"], (x, y), xytext=(5, 3), textcoords="offset points", fontsize=7)
    ax.set_xlabel("generation in the tree (longest path from a seed)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    shown = len([n for n in nodes if not n["baseline"]])
    ax.set_title(title or f"Lineage: {shown} of {lineage['total']} candidates (the fittest and their ancestors)")
    return _save(figure, path)


def plot_top_curves(top: Sequence[Candidate], seeds: Sequence[Candidate], path: Path, title: str = "") -> Path:
    """Loss curves of the best candidates (solid) against the seed baselines (dashed), per stage."""
    stages = ["explore"] + (["verify"] if any(c.verify.loss_curve for c in top) else [])
    figure = _figure(6.5 * len(stages), 4.2)
    axes = figure.subplots(1, len(stages), squeeze=False)[0]
    palette = ["#2f6fdb", "#e0a100", "#3a9d5d", "#7e57c2", "#d9534f", "#17a2b8", "#b08b5b", "#e83e8c"]
    greys = ["#333333", "#666666", "#999999", "#555555", "#777777"]
    for ax, stage in zip(axes, stages):
        drew = False
        for i, seed in enumerate(seeds):
            curve = getattr(seed, stage).loss_curve
            if curve:
                ax.plot(range(len(curve)), curve, ls="--", lw=1.2, color=greys[i % len(greys)], label=f"{seed.name} (seed)")
                drew = True
        for i, c in enumerate(c for c in top if getattr(c, stage).loss_curve):
            curve = getattr(c, stage).loss_curve
            ax.plot(range(len(curve)), curve, lw=1.8, color=palette[i % len(palette)], label=c.name)
            drew = True
        if not drew:
            _empty(ax, f"no {stage} loss curves yet")
            continue
        ax.set_xlabel("evaluation")
        ax.set_ylabel("eval loss")
        ax.set_title(f"{stage}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    figure.suptitle(title or "Loss curves: the fittest candidates against the seeds")
    return _save(figure, path)


def plot_status_counts(counts: dict[str, int], path: Path, title: str = "") -> Path:
    """How many candidates ended in each status (seed baselines left out)."""
    figure = _figure(6.5, 3.6)
    ax = figure.add_subplot()
    names = [s for s in STATUSES]
    values = [counts.get(s, 0) for s in names]
    bars = ax.barh(names, values, color=[STATUS_COLORS[s] for s in names])
    ax.bar_label(bars, padding=3, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("candidates")
    ax.set_xlim(0, max(values + [1]) * 1.15)
    ax.set_title(title or f"Candidates by status ({sum(values)} in total)")
    return _save(figure, path)


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _budget_line(label: str, used: Any, cap: Any, digits: int = 2) -> str:
    shown = "—" if used is None else (f"{used:.{digits}f}" if isinstance(used, float) else str(used))
    limit = "no limit" if cap in (None, 0) else (f"{cap:.{digits}f}" if isinstance(cap, float) else str(cap))
    return f"| {label} | {shown} | {limit} |"


def _interval(test: dict[str, Any]) -> str:
    """``diff [low, high]`` of a one-sided test against a seed, or why there is no test."""
    if test.get("diff") is None:
        return "—"
    ci = test.get("ci")
    shown = f"{test['diff']:+.4f}" + (f" [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")
    return shown + (f", d={test['effect_size']:+.2f}" if test.get("effect_size") is not None else "")


def _significance_lines(verified: Sequence[Candidate]) -> list[str]:
    """Each verified candidate against each seed: the loss and benchmark differences with their
    95 % intervals, effect sizes and one-sided Welch p-values over the training runs."""
    if not verified:
        return []
    alpha = verified[0].verify.fitness_parts.get("significance", 0.05)
    lines = ["", f"### Against each seed at verify scale (one-sided Welch t-tests over independent training runs, "
             f"alpha {alpha})", "",
             "| candidate | seed | runs (independent) | Δ loss [95 % CI], effect | p (lower loss) | Δ bench [95 % CI], effect "
             "| p (higher bench) | beats |",
             "|---|---|---|---|---:|---|---:|---|"]
    for c in verified:
        for seed, test in sorted(c.verify.fitness_parts["tests"].items()):
            loss, bench = test["loss"], test["benchmark"]
            lines.append(f"| {_cell(c.name)} | {seed} | {_runs_cell(loss)} | {_interval(loss)} | {_cell(loss.get('p'))} "
                         f"| {_interval(bench)} | {_cell(bench.get('p'))} | {'yes' if test['beats'] else 'no'} |")
    return lines


def _runs_cell(test: dict) -> str:
    """``3 (2) vs 3 (3)``: each side's training runs and, in brackets, how many were independent (PBT clones one
    member into another; such runs are one sample in the test)."""
    n, runs = test.get("n") or [], test.get("runs") or test.get("n") or []
    if len(n) != 2 or len(runs) != 2:
        return "-"
    return " vs ".join(f"{r} ({k})" for r, k in zip(runs, n))


def write_report(campaign_dir: "str | Path | Location", out_dir: "str | Path | Location", top: int = 10) -> "Location":
    """Write the campaign's figures (PNG) and ``report.md`` into ``out_dir``; returns the Markdown file.

    ``campaign_dir`` is ``runs/<name>`` (or a runs folder, meaning its latest campaign); either
    may be an ``s3://`` location. Works on a campaign that is still running: it shows the
    memory as it is now.
    """
    from asiarch.storage import local_dir, location

    target = location(out_dir)
    with local_dir(target) as out:
        _write_report(CampaignData(campaign_dir), out, top)
    return target / "report.md"


def _write_report(data: CampaignData, out: Path, top: int) -> None:
    summary = data.summary()
    name = summary["name"]
    best_rows = data.candidates_page(sort="fitness", order="desc", limit=max(1, top), baselines=False)["items"]
    best_rows = [r for r in best_rows if r["fitness"] is not None]
    memory = data.memory()
    best = memory.get_candidates([r["id"] for r in best_rows]) if memory is not None else []
    seeds = memory.get_candidates([b["id"] for b in summary["baselines"]]) if memory is not None else []

    plot_fitness_over_time(data.fitness_over_time(), out / "fitness_over_time.png", f"{name}: fitness over time")
    plot_discovery(data.discovery(), out / "discovery.png")
    plot_lineage(data.lineage(top=150), out / "lineage.png", label_ids=[r["id"] for r in best_rows[:5]])
    plot_top_curves(best[:6], seeds, out / "top_curves.png")
    plot_status_counts(summary["counts"], out / "status_counts.png")

    budget, used = summary["budget"], summary["used"]
    lines = [
        f"# Campaign {name}",
        "",
        f"Status **{summary['status'] or 'unknown'}**, phase {summary['phase'] or '—'}, scale {summary['scale'] or '—'}"
        + (f" (verify at {summary['verify_scale']})" if summary.get("verify_scale") else "")
        + f"; started {summary['started_at'] or '—'}, last updated {summary['updated_at'] or '—'}.",
        "",
        f"{summary['total']} candidates proposed; {summary['trained']} trained (count toward the budget); "
        f"{summary['verified']} verified; **{summary['breakthroughs']} breakthroughs** (beat every seed at verify scale). "
        + (f"Best fitness **{summary['best']['fitness']:.4f}**: {_cell(summary['best']['name'])} (`{summary['best']['id']}`)."
           if summary["best"] else "No candidate has a fitness yet."),
        "",
        "| status | " + " | ".join(STATUSES) + " |",
        "|---|" + "---:|" * len(STATUSES),
        "| candidates | " + " | ".join(str(summary["counts"].get(s, 0)) for s in STATUSES) + " |",
        "",
        "## Budget",
        "",
        "| | used | budget |",
        "|---|---:|---:|",
        _budget_line("candidates trained", used.get("candidates"), budget.get("max_candidates")),
        _budget_line("device-hours", used.get("device_hours"), budget.get("device_hours")),
        _budget_line("LLM USD", used.get("usd"), budget.get("usd")),
        _budget_line("wall-clock hours", None if used.get("wall_seconds") is None else used["wall_seconds"] / 3600,
                     None if budget.get("wall_seconds") is None else budget["wall_seconds"] / 3600),
        "",
        f"## Top {len(best_rows)} candidates against the seeds",
        "",
        ("| rank | name | id | status | stage | fitness | explore loss | explore bench | verify loss | verify bench "
         "| verify fitness | breakthrough |"),
        "|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for rank, r in enumerate(best_rows, 1):
        lines.append(f"| {rank} | {_cell(r['name'])} | `{r['id']}` | {r['status']} | {r['stage']} | {_cell(r['fitness'])} | "
                     f"{_cell(r['explore_eval_loss'])} | {_cell(r['explore_benchmark'])} | {_cell(r['verify_eval_loss'])} | "
                     f"{_cell(r['verify_benchmark'])} | {_cell(r['verify_fitness'])} | {'★' if r['breakthrough'] else ''} |")
    for s in seeds:
        lines.append(f"| seed | {_cell(s.name)} | `{s.id}` | {s.status} | {s.stage} | {_cell(s.fitness)} | "
                     f"{_cell(s.explore.eval_loss)} | {_cell(s.explore.benchmark)} | {_cell(s.verify.eval_loss)} | "
                     f"{_cell(s.verify.benchmark)} | {_cell(s.verify.fitness)} | |")
    lines += _significance_lines([c for c in best if c.verify.fitness_parts.get("tests")])
    if best:
        lines += ["", "### What the best candidate is", "", f"**{_cell(best[0].name)}**: {best[0].motivation.strip() or '—'}"]
        if best[0].judge_rationale:
            lines += ["", f"Judge: {best[0].judge_rationale.strip()}"]
        if best[0].analysis:
            lines += ["", f"Analysis: {best[0].analysis.strip()}"]
    lines += [
        "",
        "## Figures",
        "",
        "![Fitness over time](fitness_over_time.png)",
        "",
        "![Discovery: breakthroughs against compute](discovery.png)",
        "",
        "![Loss curves of the fittest candidates against the seeds](top_curves.png)",
        "",
        "![Lineage](lineage.png)",
        "",
        "![Candidates by status](status_counts.png)",
        "",
        f"_Written by `asiarch report` at {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} "
        f"from `{data.root}` (memory version {summary['version']})._",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
