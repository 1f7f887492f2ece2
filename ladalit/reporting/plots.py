"""Figures from a saved results dict (the contents of results.json), rendered with Agg.

- `plot_accuracy`: accuracy per round per participant from round 0, one panel per prompt setting (paper
  Fig. 4), a dashed chance line; `plot_accuracy_runs`: the same over seeds, mean ± std bands
- `plot_selection`: selected-set size per model pair per round (the learnability gap)
- `plot_selection_quality`: the demo world's oracle precision of each pair's selection per round,
  against a random selection of the same size (`selection_quality.png`, where results have the rows)
- `plot_communication`: MB per method split by direction (paper Fig. 5)

Figures are built as plain `Figure` objects on an Agg canvas, so no GUI backend
and no pyplot global state is touched.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DIRECTIONS = ("client->server", "server->client")
PLOT_FILES = ("accuracy.png", "selection.png", "communication.png")


def _figure(ncols: int = 1, width: float = 5.0, height: float = 3.6):
    fig = Figure(figsize=(width * ncols, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    m = sum(values) / len(values)
    return m, (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0


def rounds_done(results: dict) -> tuple[int, int | None]:
    """(the last round with any record, the configured rounds or None)."""
    done = max((r["round"] for key in ("accuracy", "selected_per_round", "train", "communication")
                for r in results.get(key, [])), default=0)
    return done, results.get("config", {}).get("rounds")


def partial_label(results: dict) -> str:
    """"partial: N of M rounds" for a run that stopped before its last round, else ""."""
    done, total = rounds_done(results)
    return f"partial: {done} of {total} rounds" if total is not None and done < total else ""


def chance(results: dict) -> float | None:
    k = results.get("config", {}).get("data", {}).get("num_options")
    return 1.0 / k if k else None


def plot_accuracy(results: dict, path) -> Path:
    """One run: accuracy per round from round 0 (before any transfer), a dashed chance line (1/options)."""
    return plot_accuracy_runs([results], path)


def plot_accuracy_runs(runs: list[dict], path, title: str | None = None) -> Path:
    """Accuracy per round per participant, one panel per prompt setting. Several runs (seeds of one
    config): the mean with a ± std band."""
    return _save(accuracy_figure(runs, title), path)


def accuracy_figure(runs: list[dict], title: str | None = None) -> Figure:
    rows = [r for res in runs for r in res.get("accuracy", [])]
    shots = sorted({r["shots"] for r in rows}) or [0]
    fig, axes = _figure(len(shots))
    line = chance(runs[0])
    for ax, s in zip(axes, shots):
        mine = [r for r in rows if r["shots"] == s]
        if not mine:
            _empty(ax, "no evaluation")
            continue
        for i, name in enumerate(dict.fromkeys(r["participant"] for r in mine)):
            by_round: dict[int, list[float]] = defaultdict(list)
            strict: dict[int, list[float]] = defaultdict(list)
            for r in mine:
                if r["participant"] == name:
                    by_round[r["round"]].append(r["accuracy"])
                    if r.get("accuracy_strict") is not None:
                        strict[r["round"]].append(r["accuracy_strict"])
            xs = sorted(by_round)
            stats = [mean_std(by_round[t]) for t in xs]
            ax.plot(xs, [m for m, _ in stats], marker="o", label=name, color=f"C{i % 10}",
                    linewidth=2.0 if name == "server" else 1.4)
            if strict:  # SPEC §7: strict (an answer statement required) beside the lenient accuracy
                sx = sorted(strict)
                ax.plot(sx, [mean_std(strict[t])[0] for t in sx], marker=".", linestyle=":", color=f"C{i % 10}",
                        label=f"{name} strict", linewidth=1.0)
            if len(runs) > 1:
                ax.fill_between(xs, [m - d for m, d in stats], [m + d for m, d in stats], color=f"C{i % 10}", alpha=0.2)
        if line is not None:
            ax.axhline(line, color="gray", linestyle="--", linewidth=1, label=f"chance (1/{round(1 / line)})")
        ax.set_title(f"{s}-shot" + (f", mean ± std over {len(runs)} runs" if len(runs) > 1 else ""))
        ax.set_xlabel("round (0: before any transfer)")
        ax.set_ylabel("accuracy (solid: lenient, dotted: strict)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(sorted({r["round"] for r in mine}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    partial = sorted({partial_label(r) for r in runs} - {""})
    fig.suptitle(" ".join([title or f"{runs[0].get('method', '')} accuracy per round"]
                          + [f"({p})" for p in partial]), fontsize=10, wrap=True)
    return fig


def _client_of(pair: str) -> str:
    """The client of a pair: client1<-server and server<-client1 are both client1."""
    return pair.replace("server<-", "", 1) if pair.startswith("server<-") else pair.split("<-")[0]


def plot_selection(results: dict, path) -> Path:
    """Two panels with the same y range: what each client selects from the server's answers
    ("client1<-server") and what the server selects from each client's ("server<-client1");
    one colour per client in both."""
    rows = results.get("selected_per_round", [])
    fig, axes = _figure(2, width=4.5)
    pairs = list(dict.fromkeys(r["pair"] for r in rows))
    clients = list(dict.fromkeys(_client_of(p) for p in pairs))
    top = max((r["selected"] for r in rows), default=1)
    for ax, side, title in zip(axes, ("client", "server"), ("client side: k<-server", "server side: server<-k")):
        mine = [p for p in pairs if p.startswith("server<-") == (side == "server")]
        if not mine:
            _empty(ax, "no selections")
            ax.set_title(title)
            continue
        for pair in mine:
            pts = sorted((r["round"], r["selected"]) for r in rows if r["pair"] == pair)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=pair,
                    color=f"C{clients.index(_client_of(pair)) % 10}")
        ax.set_xticks(sorted({r["round"] for r in rows}))
        ax.set_ylim(0, top * 1.08)
        ax.set_xlabel("round")
        ax.set_ylabel("selected samples")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("selected-set size per model pair")
    return _save(fig, path)


def plot_selection_quality(results: dict, path) -> Path:
    """Two panels like `plot_selection`: each pair's oracle precision per round (solid) and a random
    selection's expected precision (dashed, same colour)."""
    rows = results.get("selection_quality", [])
    fig, axes = _figure(2, width=4.5)
    pairs = list(dict.fromkeys(r["pair"] for r in rows))
    clients = list(dict.fromkeys(_client_of(p) for p in pairs))
    for ax, side, title in zip(axes, ("client", "server"), ("client side: k<-server", "server side: server<-k")):
        mine = [p for p in pairs if p.startswith("server<-") == (side == "server")]
        if not mine:
            _empty(ax, "no selections")
        for pair in mine:
            pts = sorted((r["round"], r["precision"], r["random_precision"]) for r in rows if r["pair"] == pair)
            colour = f"C{clients.index(_client_of(pair)) % 10}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=colour, label=pair)
            ax.plot([p[0] for p in pts], [p[2] for p in pts], linestyle="--", color=colour, label=f"{pair} random")
        if mine:
            ax.set_xticks(sorted({r["round"] for r in rows}))
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("round")
            ax.set_ylabel("oracle precision")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        ax.set_title(title)
    fig.suptitle("selection quality per model pair (oracle; dashed: random selection of the same size)")
    return _save(fig, path)


def mb_by_direction(results: dict) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for c in results.get("communication", []):
        out[c["direction"]] += c["bytes"] / 1e6
    return {d: out.get(d, 0.0) for d in DIRECTIONS}


def plot_communication(results_by_method: dict[str, dict], path) -> Path:
    """Stacked bars: MB sent per method, client->server below server->client."""
    labels = list(results_by_method)
    fig, (ax,) = _figure(1, width=max(4.0, 1.4 * len(labels) + 2))
    mb = {lab: mb_by_direction(r) for lab, r in results_by_method.items()}
    bottom = [0.0] * len(labels)
    for d in DIRECTIONS:
        vals = [mb[lab][d] for lab in labels]
        ax.bar(labels, vals, bottom=bottom, label=d)
        bottom = [b + v for b, v in zip(bottom, vals)]
    for x, total in enumerate(bottom):
        ax.annotate(f"{total:.3g}", (x, total), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("MB")
    ax.set_title("communication per method")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def write_plots(results: dict, run_dir) -> list[Path]:
    """accuracy.png, selection.png and communication.png in `run_dir`; selection_quality.png too where the
    results have the demo world's oracle rows."""
    run_dir = Path(run_dir)
    paths = [plot_accuracy(results, run_dir / PLOT_FILES[0]),
             plot_selection(results, run_dir / PLOT_FILES[1]),
             plot_communication({results.get("method", "run"): results}, run_dir / PLOT_FILES[2])]
    if results.get("selection_quality"):
        paths.append(plot_selection_quality(results, run_dir / "selection_quality.png"))
    return paths


def wandb_images(paths) -> dict:
    """{"plots/accuracy": wandb.Image, ...} for `tracker.log`."""
    import wandb
    return {f"plots/{Path(p).stem}": wandb.Image(str(p)) for p in paths}
