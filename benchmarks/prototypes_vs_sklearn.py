"""Prototypes: ladalit's select_prototypes vs scikit-learn KMeans with its defaults, one thread each.

    python -m benchmarks.prototypes_vs_sklearn [--quick] [--n 100000] [--d 384] [--k 1000] [--seed 0]

Data: n float32 standard-normal embeddings, seeded (no cluster structure, so that
neither side converges early; the iterations each side ran are reported). Both sides
run with one thread (torch threads 1, and threadpoolctl's `threadpool_limits(1)` around
both, which also limits sklearn's OpenMP and BLAS).

- sklearn: what a user would otherwise call, `KMeans(n_clusters=k, random_state=seed).fit(x)`
  with every other argument at its default (greedy k-means++ init, n_init="auto" = 1,
  max_iter=300, tol=1e-4, Lloyd).
- ladalit: `select_prototypes(x, k/n, seed)` end to end (float32 torch k-means++ seeding
  over at most 8192 candidates, Lloyd until the inertia gains < 0.1%, at most 20
  updates, then the nearest distinct sample per centroid). Its k-means inertia is read
  from the `kmeans` call inside it.

Targets (issue 18): select_prototypes <= 10 s, sklearn / select_prototypes >= 5 (process
CPU time: one thread each, so the time spent waiting for a core on a shared machine is not
counted; wall times are reported too), and its k-means inertia within 1% of sklearn's.
sklearn runs once (about 2-3 min of CPU at the full size); select_prototypes `--reps` times.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import table, write_result
from benchmarks.run import add_common_args, median, setup, summary_row

TARGET_RATIO, TARGET_S, TARGET_INERTIA = 5.0, 10.0, 0.01


def make_data(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(rng.standard_normal((n, d), dtype=np.float32))


class Clock:
    """Wall and process CPU seconds since creation."""

    def __init__(self):
        self.t, self.c = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.t, time.process_time() - self.c


def sklearn_defaults(x, k, seed):
    from sklearn.cluster import KMeans
    clock = Clock()
    km = KMeans(n_clusters=k, random_state=seed).fit(x)
    wall, cpu = clock.read()
    return {"cpu_s": cpu, "wall_s": wall, "inertia": float(km.inertia_), "iterations": int(km.n_iter_)}


def ladalit_select(x, k, seed):
    from ladalit.method import prototypes
    seen = {}
    orig = prototypes.kmeans

    def recording(*a, **kw):
        clock = Clock()
        centroids, inertia, iters = orig(*a, **kw)
        seen.update(kmeans_cpu_s=clock.read()[1], inertia=inertia, iterations=iters)
        return centroids, inertia, iters

    prototypes.kmeans = recording
    try:
        clock = Clock()
        idx = prototypes.select_prototypes(x, k / x.shape[0], seed)
        wall, cpu = clock.read()
    finally:
        prototypes.kmeans = orig
    return {"cpu_s": cpu, "wall_s": wall, **seen, "prototypes": len(idx), "distinct": len(set(idx))}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(ap)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=2, help="select_prototypes repetitions (median)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    setup(args.threads, args.out, args.quick)
    if args.quick:
        args.n, args.d, args.k, args.reps = 4000, 32, 40, 1
    import sklearn
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    x = make_data(args.n, args.d, args.seed)
    print(f"n={args.n} d={args.d} k={args.k}, one thread each (torch threads {torch.get_num_threads()})")
    with threadpool_limits(1):
        pools = [{k: p.get(k) for k in ("user_api", "internal_api", "num_threads")} for p in threadpool_info()]
        ours = [ladalit_select(x, args.k, args.seed)]
        print(f"  select_prototypes: {ours[0]['cpu_s']:.2f} CPU s", flush=True)
        sk = sklearn_defaults(x, args.k, args.seed)
        print(f"  sklearn KMeans defaults: {sk['cpu_s']:.2f} CPU s, {sk['iterations']} iterations", flush=True)
        for _ in range(args.reps - 1):
            ours.append(ladalit_select(x, args.k, args.seed))
    cpu, wall = median([o["cpu_s"] for o in ours]), median([o["wall_s"] for o in ours])
    o = ours[0]
    ratio, ratio_wall = sk["cpu_s"] / cpu, sk["wall_s"] / wall
    rel_inertia = o["inertia"] / sk["inertia"] - 1.0
    print(table([["sklearn KMeans(n_clusters=k) defaults", sk["cpu_s"], sk["wall_s"], sk["iterations"], sk["inertia"],
                  ""],
                 ["ladalit select_prototypes", cpu, wall, o["iterations"], o["inertia"], f"{ratio:.2f}x"]],
                ["side", "CPU s", "wall s", "iters", "inertia", "sklearn/ladalit"]))
    print(f"inertia ladalit / sklearn - 1 = {rel_inertia:+.4%}; distinct prototypes {o['distinct']} of {o['prototypes']}")
    ok = (ratio >= TARGET_RATIO and cpu <= TARGET_S and rel_inertia <= TARGET_INERTIA
          and o["distinct"] == o["prototypes"] == args.k)
    measured = f"{ratio:.2f}x, {cpu:.2f} s (sklearn {sk['cpu_s']:.1f} s), inertia {rel_inertia:+.2%}"
    note = (f"{args.n}x{args.d} N(0,1), k={args.k}, one thread, CPU time (wall ratio {ratio_wall:.2f}x); "
            f"sklearn {sk['iterations']} iterations, ladalit {o['iterations']} Lloyd updates "
            f"(k-means {o['kmeans_cpu_s']:.2f} s of {o['cpu_s']:.2f} s)")
    summary = summary_row(4, "prototypes: select_prototypes vs sklearn KMeans",
                          f"sklearn/ladalit >= {TARGET_RATIO:g}, <= {TARGET_S:g} s, inertia within "
                          f"{TARGET_INERTIA:.0%}", measured, ok, note)
    result = {"config": vars(args), "threadpools": pools, "sklearn_version": sklearn.__version__,
              "sklearn": sk, "ladalit": ours, "ratio": ratio, "ratio_wall": ratio_wall, "ladalit_s": cpu,
              "relative_inertia": rel_inertia, "summary": summary}
    print(f"wrote {write_result('prototypes_vs_sklearn', result)}")
    return result


if __name__ == "__main__":
    main()
