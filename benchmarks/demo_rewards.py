"""Can the filters' rewards tell learnable-and-useful samples from the others? From one finished LaDa run
on the demo world.

    python -m benchmarks.demo_rewards RUN_DIR

Each filter learns from the rewards r_total (Eq. 5-7) in its replay buffer (the run's checkpoint.pt holds
every filter's buffer: the question embeddings and r_total of every trained sample, in the order they
were trained). Each buffer row is matched to its public sample by its embedding and labelled with the
oracle (`ladalit.demo.oracle`): useful or not, whether the chosen answer it was trained on (y^s for a
client, y^k for the server) was right, and whether the two answers' letters differ. Per (pair, round):
the AUC of the rewards for each label, the probability that a sample with it has a higher reward than one
without (0.5: the rewards carry no sign of it, and a filter trained on them cannot select by it), and
the same for a right chosen answer among the samples whose answers differ. Prints a table, writes
RUN_DIR/rewards.json.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from itertools import groupby
from pathlib import Path

import torch
from omegaconf import OmegaConf

import ladalit.components  # noqa: F401  registers data sets, model sources, class-path checks


def auc(pos: list[float], neg: list[float]) -> float:
    """P(a positive's score > a negative's), ties counting one half (Mann-Whitney); NaN if a side is empty."""
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def split_auc(obs: list[tuple], label: int) -> float:
    """The AUC of the rewards (obs[..][0]) of the observations whose `label` field is true against the others'."""
    return auc([o[0] for o in obs if o[label]], [o[0] for o in obs if not o[label]])


def buffer_rows(buf: dict, emb: torch.Tensor, ids: list[str], counts: list[tuple[int, int]]) -> list[tuple[int, str, float]]:
    """(round, sample id, r_total) of a filter's buffer, in training order: row j is the public sample whose
    embedding is nearest to it (cosine; the same text re-encoded in another batch differs in the last bits);
    `counts` are (round, trained samples) in order (the buffer must not have wrapped)."""
    n = int(buf["buf_count"])
    if n != sum(c for _, c in counts) or int(buf["buf_ptr"]) != n % buf["buf_x"].shape[0]:
        raise ValueError(f"a buffer of {n} rows does not match {sum(c for _, c in counts)} trained samples")
    x, r = buf["buf_x"][:n].float(), buf["buf_r"][:n]
    sim = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(emb.float(), dim=1).T
    best, j = sim.max(dim=1)
    if best.min() < 0.999:
        raise ValueError(f"a buffer row matches no public sample (best cosine {best.min():.4f})")
    rounds = [t for t, c in counts for _ in range(c)]
    return [(t, ids[int(k)], float(v)) for t, k, v in zip(rounds, j, r)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    args = ap.parse_args(argv)
    from ladalit.core.config import RunConfig
    from ladalit.core.encoder import make_encoder
    from ladalit.core.experiment import prepared_records
    from ladalit.core.prompts import format_question, parse_answer
    from ladalit.demo.oracle import world_oracle

    run = Path(args.run_dir)
    # on today's schema, so that a run written before a key was added (e.g. data.mixture) still reads
    cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.load(run / "config.yaml"))
    oracle = world_oracle(cfg)
    selected = [json.loads(line) for line in (run / "selections.jsonl").read_text().splitlines()]
    public_ids = sorted({i for s in selected for i in s["ids"]})
    records = {r.id: r.public() for r in prepared_records(cfg)}
    emb = make_encoder(cfg.filter_net.encoder).encode_cached(public_ids, [format_question(records[i]) for i in public_ids])
    counts: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for s in selected:
        counts[s["pair"]][s["round"]] += len(s["ids"])
    said = {(r["round"], r["participant"], r["id"]): r["text"]
            for r in map(json.loads, (run / "responses.jsonl").read_text().splitlines())}
    roles = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["state"]["roles"]
    buffers = {f"{k}<-server": roles[k]["filters"]["pair"] for k in cfg.clients}
    buffers |= {f"server<-{k}": buf for k, buf in roles["server"]["filters"].items()}
    table = []
    print(f"{'pair':<18}{'round':>6}{'n':>6}{'useful':>7}{'differ':>7}   AUC: useful  chosen right  differ"
          f"  right|differ")
    for pair, buf in buffers.items():
        learner, teacher = pair.split("<-")
        for t, group in groupby(buffer_rows(buf, emb, public_ids, sorted(counts[pair].items())), key=lambda x: x[0]):
            obs = []  # (r_total, useful, chosen answer right, the two answers' letters differ)
            for _, i, r in group:
                chosen, own = said.get((t, teacher, i)), said.get((t, learner, i))
                letters = [None if a is None else parse_answer(a, cfg.data.num_options) for a in (chosen, own)]
                obs.append((r, oracle.useful(pair, i), letters[0] == oracle.truth[i].gold, letters[0] != letters[1]))
            differ = [o for o in obs if o[3]]
            row = {"pair": pair, "round": t, "n": len(obs), "useful": sum(o[1] for o in obs), "differ": len(differ),
                   "reward_mean": sum(o[0] for o in obs) / len(obs),
                   "auc_useful": split_auc(obs, 1), "auc_chosen_right": split_auc(obs, 2),
                   "auc_differ": split_auc(obs, 3), "auc_chosen_right_when_differ": split_auc(differ, 2)}
            table.append(row)
            print(f"{pair:<18}{t:>6}{row['n']:>6}{row['useful']:>7}{row['differ']:>7}{row['auc_useful']:>13.2f}"
                  f"{row['auc_chosen_right']:>14.2f}{row['auc_differ']:>8.2f}{row['auc_chosen_right_when_differ']:>15.2f}")
    out = {"run": str(run), "rows": table}
    (run / "rewards.json").write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
