"""Scaling: LaDa round time vs the number of clients K, and vs the public set size |D_p|.

    python -m benchmarks.scaling_k [--quick] [--reps 3] [--rounds 2]

Worlds are conf/smoke.yaml with its clients replaced by K copies of client1 (llama,
hidden 32, full fine-tuning), `data.synthetic.num_records=400` so that 8 clients fit,
and the selection size pinned: `filter_net.min_select = max_select = n_c / 2` (8 of
every candidate batch of 16, from round 2; round 1 takes the prototypes). The filters
still score, select and train; pinning only makes every client (and the server for
every client) train on the same number of samples, so that t(K) measures the cost of
K clients rather than how many samples K particular filters happened to pick (left
free, one client's filter picked 3 of 32 in round 2 and another 29: the K = 1 world
then does a fraction of a K = 8 world's per-client work). `--free` leaves them free.

- K = 1, 2, 4, 8 on one fixed public set: the split is drawn once for K = 8 and
  client k's private data is the same in every world (`clients[:K]`), |D_p| = 32.
- |D_p| = 16, 32, 64, 128 with K = 2 (the split drawn for each size); a least-squares
  line time = a + b |D_p| and its R².

Round time: the mean over the run's rounds of the process CPU time between two
`on_round_end` calls (round 1 includes the reference SFT; every round includes the
evaluation); one thread, so CPU time is the wall time without the waits for a core on
a shared machine (wall times are reported too). All worlds of one repetition run back to back, repetitions interleaved;
medians over repetitions. t(8)/t(1) is the median of the per-repetition ratios.
Targets: t(8)/t(1) <= 8.5; time vs |D_p| linear, R² >= 0.95 (the threshold used here).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import table, write_result
from benchmarks.run import add_common_args, k_client_conf, load, median, run_method, setup, summary_row

TARGET_K_RATIO, TARGET_R2 = 8.5, 0.95


def linear_fit(x, y) -> tuple[float, float, float]:
    """(intercept, slope, R²) of the least-squares line."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    slope, intercept = np.polyfit(x, y, 1)
    res = y - (intercept + slope * x)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return float(intercept), float(slope), 1.0 - float((res ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(ap)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--free", action="store_true", help="do not pin the selection size")
    args = ap.parse_args(argv)
    setup(args.threads, args.out, args.quick)
    from ladalit.data.split import FederatedData
    from ladalit.core.experiment import load_data

    ks, sizes, public_k = [1, 2, 4, 8], [16, 32, 64, 128], 32
    base = [f"rounds={args.rounds}", "data.synthetic.num_records=400"]
    if args.quick:
        ks, sizes, public_k, args.reps = [1, 2], [8, 16], 8, 1
        base = ["rounds=1", "data.synthetic.num_records=200", "eval.limit=2", "eval.shots=[0]"]
    if not args.free:
        base += ["lada.n_c=16", "filter_net.min_select=8", "filter_net.max_select=8"]

    k_times = {k: [] for k in ks}
    k_selected = {k: [] for k in ks}
    k_wall = {k: [] for k in ks}
    k_rounds = {k: [] for k in ks}
    d_times = {p: [] for p in sizes}
    d_selected = {p: [] for p in sizes}
    with tempfile.TemporaryDirectory() as tmp:
        confs = {k: k_client_conf(k, Path(tmp) / f"k{k}.yaml") for k in sorted({*ks, 2})}
        cfgs = {k: load(confs[k], base + [f"data.public_size={public_k}"]) for k in ks}
        full = load_data(cfgs[max(ks)])  # one split: fixed public set and per-client data for every K
        d_cfgs = {p: load(confs[2], base + [f"data.public_size={p}"]) for p in sizes}
        for rep in range(args.reps):
            for k in ks:
                data = FederatedData(clients=full.clients[:k], public=full.public)
                rec = run_method(cfgs[k], data=data)
                k_times[k].append(sum(rec.round_cpu_s) / len(rec.round_cpu_s))
                k_wall[k].append(sum(rec.round_s) / len(rec.round_s))
                k_rounds[k].append(rec.round_cpu_s)
                k_selected[k].append(sum(s["selected"] for s in rec.out["selected_per_round"]))
                print(f"  rep {rep + 1} K={k}: rounds {', '.join(f'{s:.2f}' for s in rec.round_cpu_s)} CPU s "
                      f"({', '.join(f'{s:.2f}' for s in rec.round_s)} wall s)", flush=True)
            for p in sizes:
                rec = run_method(d_cfgs[p])
                d_times[p].append(sum(rec.round_cpu_s) / len(rec.round_cpu_s))
                d_selected[p].append(sum(s["selected"] for s in rec.out["selected_per_round"]))
                print(f"  rep {rep + 1} |D_p|={p}: rounds {', '.join(f'{s:.2f}' for s in rec.round_cpu_s)} CPU s "
                      f"({', '.join(f'{s:.2f}' for s in rec.round_s)} wall s)", flush=True)

    k1 = ks[0]
    k_ratios = {k: median([a / b for a, b in zip(k_times[k], k_times[k1])]) for k in ks}
    k_wall_ratios = {k: median([a / b for a, b in zip(k_wall[k], k_wall[k1])]) for k in ks}
    print(f"\nRound time vs K (|D_p| = {public_k}, fixed public set; {args.reps} reps)")
    print(table([[k, median(k_times[k]), min(k_times[k]), max(k_times[k]), k_ratios[k], k_ratios[k] / k,
                  median(k_wall[k]), k_wall_ratios[k], median(k_selected[k])] for k in ks],
                ["K", "median round CPU s", "min", "max", "t(K)/t(1)", "t(K)/(K t(1))", "median wall s",
                 "wall t(K)/t(1)", "selected (all pairs, rounds)"]))
    d_med = [median(d_times[p]) for p in sizes]
    a, b, r2 = linear_fit(sizes, d_med)
    print(f"\nRound CPU time vs |D_p| (K = 2; {args.reps} reps): t = {a:.3f} + {b:.4f} |D_p|, R² = {r2:.4f}")
    print(table([[p, d_med[i], a + b * p, median(d_selected[p])] for i, p in enumerate(sizes)],
                ["|D_p|", "median round CPU s", "linear fit", "selected (all pairs, rounds)"]))

    kmax = ks[-1]
    ok = k_ratios[kmax] <= TARGET_K_RATIO and r2 >= TARGET_R2
    summary = summary_row(5, "scaling in K and |D_p|", f"t({kmax})/t(1) <= {TARGET_K_RATIO:g}; |D_p| fit R² >= "
                          f"{TARGET_R2:g}", f"t({kmax})/t(1) = {k_ratios[kmax]:.2f}; R² = {r2:.3f}", ok,
                          f"smoke clients (llama h32), selection {'free' if args.free else 'pinned to 8/16'}; "
                          f"median of {args.reps} interleaved reps; t(1) = {median(k_times[k1]):.2f} CPU s/round; "
                          f"wall t({kmax})/t(1) = {k_wall_ratios[kmax]:.2f}; "
                          f"|D_p| slope {1000 * b:.1f} ms/sample")
    result = {"config": {"ks": ks, "sizes": sizes, "public_k": public_k, "reps": args.reps, "base": base,
                         "free": args.free},
              "k_times": {str(k): v for k, v in k_times.items()},
              "k_selected": {str(k): v for k, v in k_selected.items()},
              "k_wall_times": {str(k): v for k, v in k_wall.items()},
              "k_wall_ratio": {str(k): v for k, v in k_wall_ratios.items()},
              "k_round_times": {str(k): v for k, v in k_rounds.items()},
              "k_ratio": {str(k): v for k, v in k_ratios.items()},
              "dp_times": {str(p): v for p, v in d_times.items()},
              "dp_selected": {str(p): v for p, v in d_selected.items()},
              "dp_fit": {"intercept": a, "slope": b, "r2": r2}, "summary": summary}
    print(f"wrote {write_result('scaling_k', result)}")
    return result


if __name__ == "__main__":
    main()
