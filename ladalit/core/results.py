"""Results of a run: accuracy per round/participant/prompt setting, selections, training
metrics and channel bytes. Written as JSON + CSV in the run directory; `log_round` hands a round's figures to a
tracker (W&B: `ladalit.reporting.tracker`), given by the layer that runs the experiment."""
from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Results:
    def __init__(self):
        self.accuracy: list[dict] = []
        self.selection: list[dict] = []
        self.train: list[dict] = []
        # every evaluated generation and every exchanged reasoning answer, as text (predictions.jsonl,
        # responses.jsonl): what the models actually said, for reading rather than for tables
        self.predictions: list[dict] = []
        self.responses: list[dict] = []
        # per (round, pair): the distribution of r_total, the selected fraction, the Eq. 10 terms (LaDa)
        self.reward_scale: list[dict] = []
        # per (round, participant, what): prompts cut to their budget, answers cut at max_new_tokens
        # ("responses": the exchanged answers), training pairs over max_length ("pairs")
        self.budget: list[dict] = []
        # per selection: the ids selected (rows {round, pair, ids}; selections.jsonl), e.g. for the demo
        # world's oracle (selection_quality)
        self.selected_ids: list[dict] = []
        # per trained sample (LaDa): rows {round, pair, id, r_total, predicted}: its reward r_total (Eq. 7) and the
        # filter's predicted reward U^p(x) when it was selected (sample_rewards.jsonl; the demo world's reward AUC)
        self.sample_rewards: list[dict] = []
        # a deployment's clients' accuracy per (round, participant, shots, domain, steps) of their test items, as
        # each site computed it from predictions that stay with it (rows of `accuracy_by_domain`,
        # ladalit.demo.oracle); in-process runs keep the predictions instead, and leave this empty
        self.domain_scores: list[dict] = []

    def add_eval(self, round: int, participant: str, role: str, shots: int, metrics: dict,
                 predictions: list[dict] | None = None) -> None:
        self.accuracy.append({"round": round, "participant": participant, "role": role, "shots": shots, **metrics})
        for p in predictions or []:
            self.predictions.append({"round": round, "participant": participant, "shots": shots, **p})

    def add_responses(self, rows: list[dict]) -> None:
        self.responses += rows

    def add_selection(self, round: int, pair: str, side: str, candidates: int, selected: int,
                      bound: str | None = None, ids: list[str] | None = None) -> None:
        self.selection.append({"round": round, "pair": pair, "side": side, "candidates": candidates,
                               "selected": selected, "bound": bound or ""})
        if ids is not None:
            self.selected_ids.append({"round": round, "pair": pair, "ids": list(ids)})

    def add_sample_rewards(self, round: int, pair: str, ids: list[str], r_total, predicted) -> None:
        for i, r, u in zip(ids, [float(x) for x in r_total], [float(x) for x in predicted]):
            self.sample_rewards.append({"round": round, "pair": pair, "id": i, "r_total": r, "predicted": u})

    def add_reward_scale(self, round: int, pair: str, side: str, **metrics) -> None:
        self.reward_scale.append({"round": round, "pair": pair, "side": side, **metrics})

    def add_budget(self, round: int, participant: str, what: str, **counts: int) -> None:
        """Counts summed per (round, participant, what)."""
        row = next((r for r in self.budget if (r["round"], r["participant"], r["what"]) == (round, participant, what)),
                   None)
        if row is None:
            self.budget.append({"round": round, "participant": participant, "what": what, **counts})
        else:
            for k, v in counts.items():
                row[k] = row.get(k, 0) + v

    def add_train(self, round: int, participant: str, **metrics) -> None:
        self.train.append({"round": round, "participant": participant, **metrics})

    def selected_per_round(self) -> dict[tuple[int, str], int]:
        out: dict[tuple[int, str], int] = defaultdict(int)
        for s in self.selection:
            out[(s["round"], s["pair"])] += s["selected"]
        return dict(out)

    def state_dict(self) -> dict:
        return {"accuracy": self.accuracy, "selection": self.selection, "train": self.train,
                "predictions": self.predictions, "responses": self.responses,
                "reward_scale": self.reward_scale, "budget": self.budget, "selected_ids": self.selected_ids,
                "sample_rewards": self.sample_rewards, "domain_scores": self.domain_scores}

    def load_state_dict(self, state: dict) -> None:
        self.accuracy, self.selection, self.train = state["accuracy"], state["selection"], state["train"]
        self.predictions, self.responses = state.get("predictions", []), state.get("responses", [])
        self.reward_scale, self.budget = state.get("reward_scale", []), state.get("budget", [])
        self.selected_ids = state.get("selected_ids", [])
        self.sample_rewards = state.get("sample_rewards", [])
        self.domain_scores = state.get("domain_scores", [])

    def save(self, run_dir: Path, cfg, channel, extra: dict | None = None) -> dict:
        comm = [{"round": r, "direction": d, "client": c, "bytes": b,
                 **channel.answers.get((r, d, c), {"answers_sent": 0, "answers_needed": 0})}
                for (r, d, c), b in sorted(channel.bytes_by().items())]
        selected = [{"round": r, "pair": p, "selected": n} for (r, p), n in sorted(self.selected_per_round().items())]
        out = {
            "method": cfg.method,
            "config": OmegaConf.to_container(cfg, resolve=True),
            "accuracy": self.accuracy,
            "selection": self.selection,
            "selected_per_round": selected,
            "train": self.train,
            "reward_scale": self.reward_scale,
            "budget": self.budget,
            "communication": comm,
            "communication_mb_total": channel.total_mb(),
            **(extra or {}),
        }
        atomic_write_text(run_dir / "results.json", json.dumps(out, indent=1))
        _write_csv(run_dir / "accuracy.csv", self.accuracy)
        _write_csv(run_dir / "selection.csv", self.selection)
        _write_csv(run_dir / "communication.csv", comm)
        _write_csv(run_dir / "train.csv", self.train)
        for name, rows in (("predictions.jsonl", self.predictions), ("responses.jsonl", self.responses),
                           ("selections.jsonl", self.selected_ids), ("sample_rewards.jsonl", self.sample_rewards)):
            atomic_write_text(run_dir / name, "".join(json.dumps(r) + "\n" for r in rows))
        return out

    def table(self, round: int | None = None) -> str:
        """Accuracy per participant and prompt setting for one round (default: last), lenient / strict
        (SPEC §7; strict: only an "answer is (X)" statement counts) with the lenient invalid-answer rate, and
        each one's round-0 accuracy (before any transfer) and the change since then, where evaluated."""
        if not self.accuracy:
            return "(no evaluation yet)"
        round = max(r["round"] for r in self.accuracy) if round is None else round
        rows = [r for r in self.accuracy if r["round"] == round]
        cell = {(r["participant"], r["shots"]): r for r in rows}
        first = {(r["participant"], r["shots"]): r for r in self.accuracy if r["round"] == 0}
        since = round != 0 and bool(first)
        shots = sorted({r["shots"] for r in rows})
        names = list(dict.fromkeys(r["participant"] for r in rows))
        head = f"{'participant':<14}" + "".join(f"{f'{s}-shot lenient/strict (invalid)':>33}" + (
            f"{'round 0':>15}{'change':>15}" if since else "") for s in shots)
        lines = [f"round {round}", head]
        for n in names:
            cells = ""
            for s in shots:
                m, m0 = cell.get((n, s)), first.get((n, s))
                c = f"{_pair(m, lambda r: r['accuracy'], lambda r: r.get('accuracy_strict'))} ({m['invalid_rate']:.2f})" if m else "-"
                cells += f"{c:>33}"
                if since:
                    cells += (f"{_pair(m0, lambda r: r['accuracy'], lambda r: r.get('accuracy_strict')):>15}"
                              f"{_pair(m, *_changes(m0)):>15}" if m and m0 else f"{'-':>15}{'-':>15}")
            lines.append(f"{n:<14}" + cells)
        return "\n".join(lines)


def _pair(row: dict, lenient, strict, fmt: str = ".3f") -> str:
    """"lenient/strict" of one accuracy row ("-" for a strict value the row lacks, e.g. an older run)."""
    st = strict(row)
    return f"{lenient(row):{fmt}}/" + ("-" if st is None else f"{st:{fmt}}")


def _changes(first: dict):
    """(lenient, strict) getters of a row's change since `first`, formatted with a sign."""
    def lenient(r):
        return _Signed(r["accuracy"] - first["accuracy"])

    def strict(r):
        a, b = r.get("accuracy_strict"), first.get("accuracy_strict")
        return None if a is None or b is None else _Signed(a - b)
    return lenient, strict


class _Signed(float):
    def __format__(self, spec: str) -> str:
        return format(float(self), "+" + spec)


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def log_round(tracker, results: "Results", channel, t: int) -> None:
    if tracker is None:
        return
    metrics = {f"acc/{r['participant']}/{r['shots']}shot": r["accuracy"] for r in results.accuracy if r["round"] == t}
    metrics |= {f"acc_strict/{r['participant']}/{r['shots']}shot": r["accuracy_strict"]
                for r in results.accuracy if r["round"] == t and "accuracy_strict" in r}
    metrics |= {f"invalid/{r['participant']}/{r['shots']}shot": r["invalid_rate"]
                for r in results.accuracy if r["round"] == t}
    metrics |= {f"selected/{p}": n for (r, p), n in results.selected_per_round().items() if r == t}
    for r in results.accuracy:
        if r["round"] == t:
            for key in ("invalid_strict", "prompts_cut", "answers_cut"):
                if key in r:
                    metrics[f"{key}/{r['participant']}/{r['shots']}shot"] = r[key]
    for r in results.reward_scale:
        if r["round"] == t:
            metrics |= {f"reward_scale/{r['pair']}/{key}": v for key, v in r.items()
                        if key not in ("round", "pair", "side")}
    for r in results.budget:
        if r["round"] == t:
            metrics |= {f"budget/{r['participant']}/{r['what']}/{key}": v for key, v in r.items()
                        if key not in ("round", "participant", "what")}
    by_participant: dict[str, list[dict]] = {}
    for row in results.train:
        if row["round"] == t and "loss_before" in row:
            by_participant.setdefault(row["participant"], []).append(row)
    for name, rows in by_participant.items():
        metrics[f"loss/{name}"] = sum(r["loss_before"] for r in rows) / len(rows)
        metrics[f"reward/{name}"] = sum(r["reward"] for r in rows) / len(rows)
    for (r, d, c), nbytes in channel.bytes_by().items():
        if r == t:
            metrics[f"mb/{c}/{d}"] = nbytes / 1e6
    tracker.log(metrics, step=t)
