"""Communication: MB per round per client for LaDa, FedKD and FedMKT, and LaDa sends only what it selected.

    python -m benchmarks.communication [--quick] [--rounds 2]

Each method runs in the demo world (conf/demo.yaml, when it exists and its zoo is
cached; evaluation, which sends nothing, cut to 4 records) or else on
conf/smoke.yaml, same seed, same split, `--rounds` rounds. Bytes are the results'
`communication` rows (every message is serialised by `Channel.send` and counted);
MB per round per client = all bytes, both directions / (rounds x clients), rounds
without messages included (FedKD sends once, in round 1).

LaDa check: the channel keeps the payloads; each message is decoded and its length
compared with the selection the loop recorded (`selected_per_round`):
  client k -> server  "selected_ids"    = |selection of pair k<-server| in that round
  server -> client k  "server_answers"  = the same count
  server -> client k  "ask_answers"     = |selection of pair server<-k|
  client k -> server  "client_answers"  = the same count
and nothing else goes up but the acknowledgements "ready" and "distilled" (a round number, a batch number). Target: every count equal (LaDa sends only selected samples).
"""
from __future__ import annotations

import argparse
from collections import defaultdict

from benchmarks.common import table, write_result
from ladalit.core.messages import as_dict, decode
from benchmarks.run import add_common_args, demo_world, load, run_method, setup, summary_row

METHODS = ("lada", "fedkd", "fedmkt")
PAIR_OF = {("client->server", "selected_ids"): "{k}<-server", ("server->client", "server_answers"): "{k}<-server",
           ("server->client", "ask_answers"): "server<-{k}", ("client->server", "client_answers"): "server<-{k}"}


def mb_per_round_client(out: dict, rounds: int, clients: list[str]) -> dict:
    up = sum(r["bytes"] for r in out["communication"] if r["direction"] == "client->server")
    down = sum(r["bytes"] for r in out["communication"] if r["direction"] == "server->client")
    per_round = defaultdict(int)
    for r in out["communication"]:
        per_round[r["round"]] += r["bytes"]
    n = rounds * len(clients)
    return {"mb_per_round_client": (up + down) / n / 1e6, "up_mb_per_round_client": up / n / 1e6,
            "down_mb_per_round_client": down / n / 1e6, "total_mb": (up + down) / 1e6,
            "mb_by_round": {str(t): b / 1e6 for t, b in sorted(per_round.items())}}


def check_lada(rec) -> tuple[list[dict], list[str]]:
    """(one row per checked message, problems)."""
    ch = rec.channel
    selected = {(s["round"], s["pair"]): s["selected"] for s in rec.out["selected_per_round"]}
    public_ids = {x.id for x in rec.exp.data.public}
    counts = defaultdict(int)
    problems = []
    for m, data in zip(ch.messages, ch.payloads):
        payload = as_dict(decode(data))
        key = (m.direction, m.kind)
        if key not in PAIR_OF:
            if m.direction == "client->server" and set(payload) - {"round", "batch"}:
                problems.append(f"round {m.round}: unexpected {m.kind} from {m.client}")
            continue
        items = payload["texts"] if "texts" in payload else payload["ids"]
        if "ids" in payload and not set(items) <= public_ids:
            problems.append(f"round {m.round}: {m.kind} {m.direction} {m.client} names ids outside D_p")
        counts[(m.round, m.direction, m.kind, m.client)] += len(items)
    rows = []
    rounds = sorted({t for t, _ in selected})
    for t in rounds:
        for k in rec.exp.clients:
            for (direction, kind), pair in PAIR_OF.items():
                want = selected.get((t, pair.format(k=k)), 0)
                got = counts.get((t, direction, kind, k), 0)
                rows.append({"round": t, "client": k, "direction": direction, "kind": kind, "items": got,
                             "selected": want, "ok": got == want})
                if got != want:
                    problems.append(f"round {t} {k} {direction} {kind}: {got} items, {want} selected")
    return rows, problems


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(ap)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    setup(args.threads, args.out, args.quick)
    conf, world = demo_world(args.quick)
    conf = conf or "smoke.yaml"
    rounds = 1 if args.quick else args.rounds
    over = [f"rounds={rounds}"] + (["data.public_size=16", "eval.limit=2", "eval.shots=[0]"] if args.quick else [])
    if conf != "smoke.yaml":  # evaluation sends nothing: cut it to bound the time
        over += ["eval.limit=4", "eval.shots=[0]"]

    per_method, check_rows, problems = {}, [], []
    for method in METHODS:
        cfg = load(conf, over + [f"method={method}"])
        rec = run_method(cfg, keep_payloads=(method == "lada"))
        clients = list(rec.exp.clients)
        per_method[method] = mb_per_round_client(rec.out, rounds, clients)
        per_method[method]["kinds"] = sorted({(m.direction, m.kind) for m in rec.channel.messages})
        if method == "lada":
            check_rows, problems = check_lada(rec)
            per_method[method]["selected_per_round"] = rec.out["selected_per_round"]
            per_method[method]["public_size"] = len(rec.exp.data.public)
        print(f"  {method}: {per_method[method]['total_mb']:.4f} MB in {rec.total_s:.1f} s", flush=True)

    print(f"\nMB per round per client, {world}, {rounds} round(s), {len(clients)} clients")
    lada_mb = per_method["lada"]["mb_per_round_client"]
    print(table([[m, v["mb_per_round_client"], v["up_mb_per_round_client"], v["down_mb_per_round_client"],
                  v["total_mb"], v["mb_per_round_client"] / lada_mb] for m, v in per_method.items()],
                ["method", "MB/round/client", "up", "down", "total MB", "vs LaDa"]))
    print("\nLaDa: items per message vs the loop's selection (summed over the round)")
    print(table([[r["round"], r["client"], r["direction"], r["kind"], r["items"], r["selected"], r["ok"]]
                 for r in check_rows], ["round", "client", "direction", "kind", "items", "selected", "equal"]))
    for p in problems:
        print("PROBLEM:", p)
    ok = not problems and bool(check_rows)
    measured = ", ".join(f"{m} {v['mb_per_round_client'] * 1000:.1f} KB" for m, v in per_method.items())
    summary = summary_row(7, "communication / round / client", "LaDa sends only selected samples (ids = selections)",
                          f"{measured}; ids == selected: {ok}", ok,
                          f"{world}; {len(check_rows)} LaDa message counts checked")
    result = {"world": world, "config": {"conf": conf, "rounds": rounds, "quick": args.quick},
              "methods": per_method, "lada_check": check_rows, "problems": problems, "summary": summary}
    print(f"wrote {write_result('communication', result)}")
    return result


if __name__ == "__main__":
    main()
