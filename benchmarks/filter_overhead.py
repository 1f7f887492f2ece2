"""Filter overhead: time in the learnability filters (training + scoring) / round wall time.

    python -m benchmarks.filter_overhead [--quick] [--rounds 3]

A LaDa run in the demo world (conf/demo.yaml, when it exists and its zoo is cached)
or else on conf/smoke.yaml (demo: 2 rounds, evaluation cut to 20 test records per
client to bound the time; the filter/(round - evaluation) column is the fraction
without any evaluation). The library is not edited: `LearnabilityFilter.fit`,
`.observe`, `.select` and `.predict` are wrapped with timers for the run (only the
outermost call counts: `select` calls `predict`). Training = fit + observe (Eq. 8, 9
and the replay buffer), scoring = select + predict (Eq. 10, and the server's reward
weights). The round time comes from the loop's `on_round_end`; both are measured in
the same run, so the fraction is a ratio of two side-by-side measurements. Times are
process CPU time (one thread; not counting waits for a core on a shared machine);
the wall-time fraction is printed too.
Target: filter time / round time <= 5 % over the whole run. A miss says why in the summary's note: what
one fit costs (~6 * filter parameters * epochs * buffer size FLOPs), in training tokens of the world's models.
"""
from __future__ import annotations

import argparse
import contextlib
import time

from benchmarks.common import table, write_result
from benchmarks.run import add_common_args, demo_world, load, run_method, setup, summary_row

TARGET = 0.05
KINDS = {"fit": "train", "observe": "train", "select": "score", "predict": "score"}


@contextlib.contextmanager
def timed_filters(acc: dict):
    """Accumulate seconds and calls per method of LearnabilityFilter into `acc` (outermost calls only)."""
    from ladalit.method.filter import LearnabilityFilter
    depth = [0]
    originals = {name: getattr(LearnabilityFilter, name) for name in KINDS}

    def wrap(name, fn):
        def timed(self, *a, **k):
            if depth[0]:
                return fn(self, *a, **k)
            depth[0] += 1
            t, c = time.perf_counter(), time.process_time()
            try:
                out = fn(self, *a, **k)
                if name == "fit":  # the work of a fit: both networks, `epochs` epochs over its n observations
                    acc["filter_params"] = sum(q.numel() for q in self.parameters())
                    acc["fit_n"] = acc.get("fit_n", 0) + out.get("n", 0)
                    acc["fit_flops"] = (acc.get("fit_flops", 0)
                                        + 6 * self.epochs * out.get("n", 0) * acc["filter_params"])
                return out
            finally:
                acc[name] = acc.get(name, 0.0) + time.process_time() - c
                acc[name + "_wall"] = acc.get(name + "_wall", 0.0) + time.perf_counter() - t
                acc[name + "_calls"] = acc.get(name + "_calls", 0) + 1
                depth[0] -= 1
        return timed

    for name, fn in originals.items():
        setattr(LearnabilityFilter, name, wrap(name, fn))
    try:
        yield acc
    finally:
        for name, fn in originals.items():
            setattr(LearnabilityFilter, name, fn)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(ap)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    setup(args.threads, args.out, args.quick)
    conf, world = demo_world(args.quick)
    conf = conf or "smoke.yaml"
    rounds = 2 if args.quick else (args.rounds if conf == "smoke.yaml" else min(args.rounds, 2))
    over = [f"rounds={rounds}"]
    if conf != "smoke.yaml":  # bound the time: 2 rounds, evaluation on 20 test records per client
        over += ["eval.limit=20"]
        world += " (2 rounds, eval.limit=20)"
    if args.quick:
        over += ["data.public_size=16", "eval.limit=2", "eval.shots=[0]"]
    cfg = load(conf, over)

    per_round, acc = [], {}
    with timed_filters(acc):
        def on_round(t):
            per_round.append(dict(acc))
            acc.clear()
        rec = run_method(cfg, on_round=on_round)

    rows = []
    for t, (cpu, ev, wall, a) in enumerate(zip(rec.round_cpu_s, rec.eval_cpu_s, rec.round_s, per_round), start=1):
        train = a.get("fit", 0.0) + a.get("observe", 0.0)
        score = a.get("select", 0.0) + a.get("predict", 0.0)
        filter_wall = sum(a.get(f"{n}_wall", 0.0) for n in KINDS)
        rows.append({"round": t, "round_s": cpu, "eval_s": ev, "train_s": train, "score_s": score,
                     "filter_s": train + score, "fraction": (train + score) / cpu,
                     "fraction_without_eval": (train + score) / (cpu - ev),
                     "round_wall_s": wall, "filter_wall_s": filter_wall, "fraction_wall": filter_wall / wall,
                     "fits": a.get("fit_calls", 0), "scorings": a.get("select_calls", 0) + a.get("predict_calls", 0)})
    fits = [(a.get("fit_calls", 0), a.get("fit_n", 0), a.get("fit_flops", 0)) for a in per_round]
    for r, (calls, n, flops) in zip(rows, fits):
        r["mean_fit_n"], r["fit_gflop"] = n / max(calls, 1), flops / 1e9
    total_filter = sum(r["filter_s"] for r in rows)
    total_wall = sum(r["round_s"] for r in rows)
    total_eval = sum(r["eval_s"] for r in rows)
    fraction = total_filter / total_wall
    fraction_wall = sum(r["filter_wall_s"] for r in rows) / sum(r["round_wall_s"] for r in rows)
    print(f"Filter time per round, LaDa, {world}, {rounds} rounds")
    print(table([[r["round"], r["round_s"], r["eval_s"], r["train_s"], r["score_s"], r["fits"], r["scorings"],
                  f"{100 * r['fraction']:.2f}%", f"{100 * r['fraction_without_eval']:.2f}%"] for r in rows]
                + [["all", total_wall, total_eval, sum(r["train_s"] for r in rows), sum(r["score_s"] for r in rows),
                    sum(r["fits"] for r in rows), sum(r["scorings"] for r in rows), f"{100 * fraction:.2f}%",
                    f"{100 * total_filter / (total_wall - total_eval):.2f}%"]],
                ["round", "round cpu s", "eval cpu s", "filter train s", "filter score s", "fits", "scorings",
                 "filter/round", "filter/(round-eval)"]))
    print(f"(CPU times; in wall time: filter/round = {100 * fraction_wall:.2f}%)")
    fn = cfg.filter_net
    note = (f"{world}; filter hidden {fn.hidden}, depth {fn.depth}, epochs {fn.epochs}, "
            f"encoder {fn.encoder}; {len(cfg.clients)} clients x 2 filters")
    # Why a miss is structural to a world of tiny models: one fit (Eq. 8 + 9, SPEC: `epochs` epochs over the whole
    # replay buffer, after every minibatch) costs ~6 * P * epochs * n FLOPs (P: both networks), the training
    # FLOPs (~6 N per token) of P * epochs * n / N tokens through a model of N parameters.
    p_filter = max(a.get("filter_params", 0) for a in per_round)
    n_model = {m.name: sum(q.numel() for q in m.model.parameters())
               for m in [rec.exp.server, *rec.exp.clients.values()]}
    calls, n_fit = sum(c for c, _, _ in fits), sum(n for _, n, _ in fits)
    mean_n, fit_s = n_fit / max(calls, 1), sum(a.get("fit", 0.0) for a in per_round) / max(calls, 1)
    n_min, n_max = min(n_model.values()), max(n_model.values())
    tokens = p_filter * fn.epochs * mean_n / n_min  # a fit's FLOPs, in training tokens of the smallest model
    cost = (f"{calls} fits of {1e3 * fit_s:.0f} ms, each training 2 filter networks ({p_filter / 2e3:.0f}k "
            f"parameters each) {fn.epochs} epochs over the whole buffer (mean n {mean_n:.0f}): "
            f"{6 * p_filter * fn.epochs * mean_n / 1e9:.2f} GFLOP, what training "
            f"{p_filter * fn.epochs * mean_n / n_max:,.0f} to {tokens:,.0f} tokens costs these models "
            f"({n_min / 1e6:.2f}-{n_max / 1e6:.2f}M parameters)")
    if fraction > TARGET:
        why = ("the filter does about as much arithmetic as these tiny models: structural to this world (next to "
               f"a 0.5B model a fit is ~{p_filter * fn.epochs * mean_n / 5e8:.1f} training tokens)" if tokens > 1000
               else "the fits are tiny, their time is the per-op cost of small torch ops next to tiny models' rounds")
        note = f"MISS: {cost}; {why}. {note}"
    summary = summary_row(3, "filter overhead", f"filter/round <= {100 * TARGET:.0f}%",
                          f"{100 * fraction:.2f}% ({total_filter:.2f} of {total_wall:.1f} CPU s; "
                          f"wall {100 * fraction_wall:.2f}%)",
                          fraction <= TARGET, note)
    result = {"world": world, "config": {"conf": conf, "rounds": rounds, "quick": args.quick}, "rounds": rows,
              "filter_s": total_filter, "round_s": total_wall, "eval_s": total_eval, "fraction": fraction,
              "fraction_wall": fraction_wall, "filter_params": p_filter, "model_params": n_model,
              "mean_fit_n": mean_n, "cost": cost,
              "summary": summary}
    print(f"filter cost: {cost}")
    print(f"wrote {write_result('filter_overhead', result)}")
    return result


if __name__ == "__main__":
    main()
