"""The demo world's preconditions (issue 34), measured before any method is compared.

    python -m benchmarks.demo_preconditions [--seeds 0 1 2] [--conf demo.yaml] [key=value ...]

A comparison of methods on the demo world means something only where the paper's premises hold in it.
Each seed builds the run's own experiment (split, models) from the config and measures, on the run's own
test items, strict zero-shot (only an answer statement counts, SPEC §7):

- a. the server: >= 0.9 on shared items of every length, and <= 0.4 on each client domain from 2 steps;
- b. each client: >= 0.8 on its own domain's 1-2-step items, and <= 0.5 on shared 3-4-step items;
- c. learnability, measured: per client and chain length L, SFT of the pre-trained client on 200 gold
  shared L-step rationales (records of a pool the split does not use), then the gain on 100 held-out
  shared L-step items. `learnable_steps` is the largest L whose gain is >= 10 points, or whose items the
  client already solves (>= 0.8 before the SFT: nothing is left to gain there, and the chain is within
  reach). At least one client must have L < 4, or the learnability gap the filter is for is absent;
- d. an oracle teacher can help: each client trained as Standalone trains (the private SFT, train.sft_epochs
  then train.epochs per later round), then SFT (train.epochs) on the server's answers to only the public
  samples labelled correctable (server right, client wrong, within the measured learnable steps), beats
  Standalone alone by >= 5 points, with a paired interval over seeds and items above 0;
- e. the server can learn: SFT of the server (its train.epochs) on the clients' correct answers to public
  samples of their own domains raises its accuracy on each client domain by >= 5 points. What the same SFT
  does to the server's own skill, its accuracy on the shared test items, is measured and printed beside it
  (`kept_shared`): it is not part of the criterion, but a server that gains the clients' domains by losing
  the shared chains is no higher on its test union.

Writes benchmarks/results/demo_preconditions.{json,md} (one table per precondition, each marked met or not),
and `preconditions(cfg)` returns one seed's measurements for `benchmarks.demo_methods`. The oracle's truth
(domain, steps, gold) is read here from the regenerated records, as the run's harness reads it: no method
sees it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch

import ladalit.components  # noqa: F401  registers the synthetic data set and the zoo

from ladalit.core.config import load_config
from ladalit.core.evaluation import evaluate
from ladalit.core.experiment import build_experiment, prepared_records
from ladalit.core.prompts import format_response, parse_answer, private_sft_pairs, zero_shot_prompt
from ladalit.core.training import NonFiniteGuard, supervised_finetune
from ladalit.data.split import SHARED_DOMAIN
from ladalit.demo.synthetic import SyntheticConfig, generate, num_steps
from ladalit.core.stats import interval_kind, paired_bootstrap

OUT = Path(__file__).resolve().parent / "results"
STEPS = (1, 2, 3, 4)
THRESHOLDS = {"a_shared_min": 0.9, "a_domain_max": 0.4, "b_own_min": 0.8, "b_shared_max": 0.5,
              "c_gain": 0.10, "c_solved": 0.8, "d_gain": 0.05, "e_gain": 0.05}
LEARN_TRAIN, LEARN_TEST = 200, 100  # gold rationales per (client, L), held-out items per L
SHARED = "kept_shared"  # e's entry for the server's shared test items (its own skill, beside the criterion)


# ----------------------------------------------------------------------------- measuring

def strict_by_cell(preds: list[dict], truth: dict) -> dict[tuple[str, int], list[float]]:
    """(domain, steps) -> per-item strict correctness (1.0 / 0.0) of a list of evaluation predictions."""
    out: dict[tuple[str, int], list[float]] = defaultdict(list)
    for p in preds:
        r = truth[p["id"]]
        out[(r.domain, num_steps(r))].append(float(p["stated"] == p["gold"]))
    return out


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else math.nan


def pooled(cells, domain: str, steps) -> float:
    return mean(x for s in steps for x in cells.get((domain, s), []))


def strict_eval(exp, participant, records) -> tuple[list[dict], list[float]]:
    """Zero-shot predictions of `participant` on `records` and their per-item strict correctness."""
    preds: list[dict] = []
    cfg = exp.cfg
    evaluate(participant, records, 0, exp.example, cfg.eval.max_new_tokens, cfg.eval.batch_size, preds)
    return preds, [float(p["stated"] == p["gold"]) for p in preds]


@contextmanager
def restored(participant):
    """Train inside; every weight is put back afterwards."""
    saved = {k: v.detach().clone() for k, v in participant.state_dict().items()}
    try:
        yield
    finally:
        participant.load_state_dict(saved)


def sft(exp, participant, prompts, responses, epochs: int, seed: int, lr: float | None = None) -> None:
    """Supervised fine-tuning with the participant's own optimizer (its train.lr, or `lr`)."""
    if not prompts or epochs <= 0:
        return
    opt = participant.configure_optimizers()
    for group in opt.param_groups if lr is not None else []:
        group["lr"] = lr
    optimizer = exp.fabric.setup_optimizers(opt)
    supervised_finetune(exp.fabric, participant, optimizer, prompts, responses, epochs, seed,
                        NonFiniteGuard(exp.cfg.on_nonfinite))


def rationale_pairs(records) -> tuple[list[str], list[str]]:
    return [zero_shot_prompt(r) for r in records], [format_response(r.rationale, r.answer) for r in records]


def learnability_pool(cfg, used_questions: set[str], size: int) -> dict[int, list]:
    """Per L, `size` gold shared L-step records that no split of this seed uses (a pool
    generated with its own seed; any question of the run's records is dropped)."""
    pool = generate(SyntheticConfig(num_records=8000, min_steps=1, max_steps=4, seed=cfg.seed + 50_000))
    out: dict[int, list] = {L: [] for L in STEPS}
    for r in pool:
        L = num_steps(r)
        if r.domain == SHARED_DOMAIN and r.question not in used_questions and len(out[L]) < size:
            out[L].append(r)
    short = [L for L in STEPS if len(out[L]) < size]
    if short:
        raise RuntimeError(f"learnability pool too small for L={short}")
    return out


def standalone_sft(exp, name: str, train) -> None:
    """The private SFT a Standalone client does over the run: train.sft_epochs, then train.epochs a round."""
    c = exp.clients[name]
    prompts, responses = private_sft_pairs(train, exp.cfg.sft_prompt)
    sft(exp, c, prompts, responses, c.train_cfg.sft_epochs, exp.cfg.seed + 1)
    for t in range(2, exp.cfg.rounds + 1):
        sft(exp, c, prompts, responses, c.train_cfg.epochs, exp.cfg.seed + t)


def right(text: str, rec) -> bool:
    """Whether an answer's parsed letter is the record's gold one (the oracle's labels)."""
    return parse_answer(text, len(rec.options)) == rec.answer


def own_domain_lessons(public, y_k: dict[str, list[str]], own: dict[str, str]) -> tuple[list[str], list[str]]:
    """Precondition e's data: (prompts, answers) of each client's correct answers to public samples of its own
    domain."""
    pairs = [(x, y) for k, ys in y_k.items() for x, y in zip(public, ys) if x.domain == own[k] and right(y, x)]
    return [zero_shot_prompt(x) for x, _ in pairs], [y for _, y in pairs]


def answers(exp, participant, records) -> list[str]:
    g = exp.cfg.generation
    return participant.generate_text([zero_shot_prompt(x) for x in records], g.max_new_tokens, g.batch_size)


def preconditions(cfg, log=print, learn_train: int = LEARN_TRAIN, learn_test: int = LEARN_TEST) -> dict:
    """One seed's measurements of a-e (see the module's docstring); `learn_train`/`learn_test`: the gold
    rationales and held-out items of c per (client, L)."""
    t0 = time.perf_counter()
    exp = build_experiment(cfg)
    truth = {r.id: r for r in prepared_records(cfg)}
    names = list(exp.clients)
    tests = {k: exp.data.clients[i].test for i, k in enumerate(names)}
    own = {k: _own_domain(tests[k], truth) for k in names}
    out: dict = {"seed": cfg.seed, "clients": names, "own_domain": own, "learn_sizes": [learn_train, learn_test]}

    # a, b: the pre-trained models on the run's own test items
    union = [x for k in names for x in tests[k]]
    preds, _ = strict_eval(exp, exp.server, union)
    cells = strict_by_cell(preds, truth)
    out["server_cells"] = {f"{d}/{s}": mean(v) for (d, s), v in sorted(cells.items())}
    out["a"] = {"shared": {s: pooled(cells, SHARED_DOMAIN, [s]) for s in STEPS},
                "domains_from_2": {own[k]: pooled(cells, own[k], STEPS[1:]) for k in names}}
    out["b"], out["client_cells"] = {}, {}
    for k in names:
        preds, _ = strict_eval(exp, exp.clients[k], tests[k])
        cells = strict_by_cell(preds, truth)
        out["client_cells"][k] = {f"{d}/{s}": mean(v) for (d, s), v in sorted(cells.items())}
        out["b"][k] = {"own_1_2": pooled(cells, own[k], (1, 2)), "shared_3_4": pooled(cells, SHARED_DOMAIN, (3, 4))}
    log(f"seed {cfg.seed}: a, b measured ({time.perf_counter() - t0:.0f} s)")

    # c: learnability per (client, L)
    pool = learnability_pool(cfg, {r.question for r in truth.values()}, learn_train + learn_test)
    out["c"] = {}
    for k in names:
        c, rows = exp.clients[k], {}
        for L in STEPS:
            train, held = pool[L][:learn_train], pool[L][learn_train:]
            _, before = strict_eval(exp, c, held)
            with restored(c):
                sft(exp, c, *rationale_pairs(train), c.train_cfg.epochs, cfg.seed + 100 + L)
                _, after = strict_eval(exp, c, held)
            rows[L] = {"before": mean(before), "after": mean(after), "gain": mean(after) - mean(before)}
        out["c"][k] = {"by_steps": rows, "learnable_steps": learnable_from(rows)}
        log(f"seed {cfg.seed}: c {k} learnable_steps={out['c'][k]['learnable_steps']} "
            f"({time.perf_counter() - t0:.0f} s)")
    learnable = {k: out["c"][k]["learnable_steps"] for k in names}

    # d: an oracle teacher; e: the server learning from the clients (both on the answers to D_p)
    public = [truth[x.id] for x in exp.data.public]
    y_s = answers(exp, exp.server, public)
    y_k = {k: answers(exp, exp.clients[k], public) for k in names}
    out["d"] = {}
    for i, k in enumerate(names):
        c = exp.clients[k]
        chosen = [(x, y) for x, y, yk in zip(public, y_s, y_k[k])
                  if right(y, x) and not right(yk, x) and num_steps(x) <= learnable[k]]
        with restored(c):
            standalone_sft(exp, k, exp.data.clients[i].train)
            _, base = strict_eval(exp, c, tests[k])
            sft(exp, c, [zero_shot_prompt(x) for x, _ in chosen], [y for _, y in chosen], c.train_cfg.epochs,
                cfg.seed + 7)
            _, taught = strict_eval(exp, c, tests[k])
        out["d"][k] = {"correctable": len(chosen), "standalone": mean(base), "oracle_teacher": mean(taught),
                       "diffs": [a - b for a, b in zip(taught, base)]}
    log(f"seed {cfg.seed}: d measured ({time.perf_counter() - t0:.0f} s)")

    s = exp.server
    domain_items = {k: [x for x in union if truth[x.id].domain == own[k]] for k in names}
    domain_items[SHARED] = [x for x in union if truth[x.id].domain == SHARED_DOMAIN]
    before = {k: mean(strict_eval(exp, s, xs)[1]) for k, xs in domain_items.items()}
    prompts, lessons = own_domain_lessons(public, y_k, own)
    with restored(s):
        sft(exp, s, prompts, lessons, s.train_cfg.epochs, cfg.seed + 9)
        after = {k: mean(strict_eval(exp, s, xs)[1]) for k, xs in domain_items.items()}
    out["e"] = {"pairs": len(prompts), **{own.get(k, k): {"before": before[k], "after": after[k],
                                                           "gain": after[k] - before[k]} for k in domain_items}}
    out["seconds"] = time.perf_counter() - t0
    log(f"seed {cfg.seed}: e measured ({out['seconds']:.0f} s)")
    return out


def learnable_from(rows: dict[int, dict]) -> int:
    """The largest chain length L whose SFT gain reached THRESHOLDS["c_gain"], or whose items were already
    solved (before >= THRESHOLDS["c_solved"]); 0 where none."""
    ok = [L for L, r in rows.items() if r["gain"] >= THRESHOLDS["c_gain"] or r["before"] >= THRESHOLDS["c_solved"]]
    return max(ok, default=0)


def _own_domain(test, truth) -> str:
    """The client domain of a client's test set (the non-shared domain with most items)."""
    counts: dict[str, int] = defaultdict(int)
    for x in test:
        if truth[x.id].domain != SHARED_DOMAIN:
            counts[truth[x.id].domain] += 1
    return max(counts, key=counts.get) if counts else SHARED_DOMAIN


# ----------------------------------------------------------------------------- judging

def verdicts(per_seed: list[dict]) -> dict[str, dict]:
    """Each precondition, met or not, with the figures it rests on (means over the seeds; d's interval over seeds
    and items)."""
    T, names = THRESHOLDS, per_seed[0]["clients"]
    avg = lambda f: mean(f(m) for m in per_seed)  # noqa: E731
    a_shared = {s: avg(lambda m: m["a"]["shared"][s]) for s in STEPS}
    a_dom = {d: avg(lambda m: m["a"]["domains_from_2"][d]) for d in per_seed[0]["a"]["domains_from_2"]}
    out = {"a": {"met": min(a_shared.values()) >= T["a_shared_min"] and max(a_dom.values()) <= T["a_domain_max"],
                 "shared_by_steps": a_shared, "client_domains_from_2": a_dom}}
    b = {k: {"own_1_2": avg(lambda m: m["b"][k]["own_1_2"]), "shared_3_4": avg(lambda m: m["b"][k]["shared_3_4"])}
         for k in names}
    out["b"] = {"met": all(v["own_1_2"] >= T["b_own_min"] and v["shared_3_4"] <= T["b_shared_max"] for v in b.values()),
                "clients": b}
    learn = {k: [m["c"][k]["learnable_steps"] for m in per_seed] for k in names}
    out["c"] = {"met": any(min(v) < 4 for v in learn.values()), "learnable_steps": learn,
                "gain_by_steps": {k: {L: avg(lambda m: m["c"][k]["by_steps"][L]["gain"]) for L in STEPS} for k in names}}
    d = {}
    for k in names:
        mu, lo, hi = paired_bootstrap([m["d"][k]["diffs"] for m in per_seed])
        d[k] = {"gain": mu, "low": lo, "high": hi, "correctable": [m["d"][k]["correctable"] for m in per_seed],
                "standalone": avg(lambda m: m["d"][k]["standalone"]), "oracle_teacher": avg(lambda m: m["d"][k]["oracle_teacher"])}
    out["d"] = {"met": all(v["gain"] >= T["d_gain"] and v["low"] > 0 for v in d.values()), "clients": d,
                "interval": interval_kind(len(per_seed))}
    domains = [m for m in per_seed[0]["e"] if m not in ("pairs", SHARED)]
    e = {dom: {"before": avg(lambda m: m["e"][dom]["before"]), "after": avg(lambda m: m["e"][dom]["after"])}
         for dom in domains}
    out["e"] = {"met": all(v["after"] - v["before"] >= T["e_gain"] for v in e.values()), "domains": e,
                "pairs": [m["e"]["pairs"] for m in per_seed]}
    if all(SHARED in m["e"] for m in per_seed):  # figures written before 2026-12-07 lack it
        out["e"]["shared"] = {"before": avg(lambda m: m["e"][SHARED]["before"]),
                              "after": avg(lambda m: m["e"][SHARED]["after"])}
    return out


def revive(m: dict) -> dict:
    """One seed's figures as read back from the JSON this script writes (chain lengths as int keys again)."""
    m["a"]["shared"] = {int(L): v for L, v in m["a"]["shared"].items()}
    for c in m["c"].values():
        c["by_steps"] = {int(L): v for L, v in c["by_steps"].items()}
    return m


def learnable_steps(per_seed: list[dict]) -> dict[str, int]:
    """The measured learnable steps per client: the smallest over the seeds (the cautious reading)."""
    return {k: min(m["c"][k]["learnable_steps"] for m in per_seed) for k in per_seed[0]["clients"]}


def markdown(per_seed: list[dict], v: dict, command: str) -> str:
    p = lambda x: f"{100 * x:.1f}"  # noqa: E731
    mark = lambda ok: "**met**" if ok else "**not met**"  # noqa: E731
    T, names = THRESHOLDS, per_seed[0]["clients"]
    seeds = [m["seed"] for m in per_seed]
    lines = [f"# Demo world preconditions, seeds {seeds}", "",
             f"{time.strftime('%Y-%m-%d')}, `{command}`; strict zero-shot accuracy (%), means over the seeds.", "",
             f"## a. The server: >= {p(T['a_shared_min'])} on shared items of every length, <= {p(T['a_domain_max'])} "
             f"on each client domain from 2 steps: {mark(v['a']['met'])}", "",
             "| shared 1 | shared 2 | shared 3 | shared 4 | " + " | ".join(f"{d} 2-4" for d in v["a"]["client_domains_from_2"]) + " |",
             "|" + "---|" * (4 + len(v["a"]["client_domains_from_2"])),
             "| " + " | ".join(p(v["a"]["shared_by_steps"][s]) for s in STEPS) + " | "
             + " | ".join(p(x) for x in v["a"]["client_domains_from_2"].values()) + " |", "",
             f"## b. Each client: >= {p(T['b_own_min'])} on its own 1-2-step items, <= {p(T['b_shared_max'])} on shared "
             f"3-4-step items: {mark(v['b']['met'])}", "",
             "| client | own domain | own 1-2 | shared 3-4 |", "|---|---|---|---|"]
    lines += [f"| {k} | {per_seed[0]['own_domain'][k]} | {p(b['own_1_2'])} | {p(b['shared_3_4'])} |"
              for k, b in v["b"]["clients"].items()]
    lines += ["", f"## c. Learnability, measured (SFT on {per_seed[0]['learn_sizes'][0]} gold shared L-step "
                  f"rationales, gain on {per_seed[0]['learn_sizes'][1]} held-out L-step items; learnable: gain >= {p(T['c_gain'])} or already >= "
                  f"{p(T['c_solved'])}); some client below 4: {mark(v['c']['met'])}", "",
              "| client | " + " | ".join(f"L={L} before → after" for L in STEPS) + " | learnable_steps per seed |",
              "|" + "---|" * (len(STEPS) + 2)]
    for k in names:
        cells = []
        for L in STEPS:
            bf = mean(m["c"][k]["by_steps"][L]["before"] for m in per_seed)
            af = mean(m["c"][k]["by_steps"][L]["after"] for m in per_seed)
            cells.append(f"{p(bf)} → {p(af)}")
        lines.append(f"| {k} | " + " | ".join(cells) + f" | {v['c']['learnable_steps'][k]} |")
    lines += ["", f"## d. An oracle teacher helps: Standalone, then SFT on the server's answers to the correctable "
                  f"public samples only, beats Standalone by >= {p(T['d_gain'])} with an interval above 0: "
                  f"{mark(v['d']['met'])}", "",
              f"Interval: 95% paired bootstrap, {v['d']['interval']}.", "",
              "| client | correctable samples per seed | Standalone | + oracle teacher | gain [95% interval] |",
              "|---|---|---|---|---|"]
    lines += [f"| {k} | {d['correctable']} | {p(d['standalone'])} | {p(d['oracle_teacher'])} | "
              f"{p(d['gain'])} [{p(d['low'])}, {p(d['high'])}] |" for k, d in v["d"]["clients"].items()]
    lines += ["", f"## e. The server learns: SFT on the clients' correct own-domain answers raises it by >= "
                  f"{p(T['e_gain'])} on each client domain: {mark(v['e']['met'])}", "",
              f"Pairs per seed: {v['e']['pairs']}.", "", "| domain | before | after |", "|---|---|---|"]
    lines += [f"| {dom} | {p(e['before'])} | {p(e['after'])} |" for dom, e in v["e"]["domains"].items()]
    if "shared" in v["e"]:
        sh = v["e"]["shared"]
        lines += [f"| shared (the server's own skill; not in the criterion) | {p(sh['before'])} | {p(sh['after'])} |"]
    lines += ["", f"Seconds per seed: {[round(m['seconds']) for m in per_seed]}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None, command: str | None = None) -> dict:
    """`command`: the command line the results files quote (default: this script's, with `argv`)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--conf", default="demo.yaml")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--name", default="demo_preconditions", help="the files' stem under --out")
    ap.add_argument("--learn-train", type=int, default=LEARN_TRAIN, help="c: gold rationales per (client, L)")
    ap.add_argument("--learn-test", type=int, default=LEARN_TEST, help="c: held-out items per L")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    per_seed = []
    for seed in args.seeds:
        cfg = load_config([f"conf={args.conf}", f"seed={seed}", "tracking.wandb.mode=disabled", *args.overrides])
        per_seed.append(preconditions(cfg, learn_train=args.learn_train, learn_test=args.learn_test))
        # each seed's figures are written as soon as it ends: a later seed may not
        (out / f"{args.name}.json").write_text(json.dumps({"per_seed": per_seed}, indent=1, default=str))
    v = verdicts(per_seed)
    command = command or "python -m benchmarks.demo_preconditions " + " ".join(argv if argv is not None else sys.argv[1:])
    (out / f"{args.name}.json").write_text(json.dumps({"command": command, "thresholds": THRESHOLDS,
                                                       "verdicts": v, "learnable_steps": learnable_steps(per_seed),
                                                       "per_seed": per_seed}, indent=1, default=str))
    text = markdown(per_seed, v, command)
    (out / f"{args.name}.md").write_text(text)
    print(text)
    return v


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
