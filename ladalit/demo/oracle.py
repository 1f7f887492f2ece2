"""The demo world's oracle: what a record's text does not say, for analysis only.

Every synthetic record has a hidden truth -- its domain, its number of steps, its gold letter -- public
records included. No method ever reads it: the split hands methods records without domain or (public)
answer, and nothing under `ladalit.method` or `ladalit.baselines` imports this module (a test checks
both). The run's harness (`ladalit.run.execute`) regenerates the records from the config after the run
and scores what the run recorded:

- `selection_quality`: per (round, pair), the oracle precision of the filter's selection against the
  expected precision of a random selection of the same size, and how often the chosen answer of the
  selected samples was correct (y^s on the client side, y^k on the server side);
- `accuracy_by_domain`: each evaluation's accuracy per (domain, steps) of the test items.

Which public samples are *learnable and useful* for a pair follows from how the world is built
(`ladalit.demo.synthetic`, `ladalit.demo.zoo`), so it needs no model's answer:

- client k <- server: a record of the shared operations (the server was taught all of them, and no
  domain's facts) whose chain is at most client k's `learnable_steps` long;
- server <- client k: a record of client k's own domain (whose facts only k was taught) whose chain is at
  most as long as the chains k was taught (`rationale_max_steps`).

A random selection's expected precision is the useful fraction of D_p (every round's candidate batches
cover D_p once). Models not from the zoo count as able to learn, and to have been taught, every length.

The *labels* (issue 34) partition each (round, pair, sample) by the answers actually exchanged that
round: the chosen answer is the teacher's (y^s for "k<-server", y^k for "server<-k"), the rejected one the
learner's own:

- correctable: chosen right, rejected wrong, and the chain within the learner's learnable steps;
- out_of_reach: the same, beyond them;
- redundant: both right;
- harmful: chosen wrong, rejected right;
- noise: both wrong (an answer without a parseable letter is wrong).

The learnable steps are a table {participant: longest learnable chain}, a parameter of every function
that uses them (`world_oracle`, `selection_quality`, `oracle_report`): the zoo's asserted
`learnable_steps` by default, a measured table where one exists. A sample lacking either answer that
round has no label. `selection_quality` gives each label's share of the filter's selection and the shares
a random selection of the same size would have in expectation: those of every sample of D_p that has both
answers that round (`random_labelled` of them; the methods generate answers only for the samples some
selection drew, so where that is below |D_p| the random shares are over those samples only, unless the
harness generated the others for analysis: `analysis.all_answers`, passed in as `analysis_responses`).

`reward_auc` scores LaDa's recorded per-sample rewards (r_total, and the filter's predicted reward at
selection) against the labels: the AUC of correctable against harmful, and against the rest. Under the gold
teacher (`analysis.gold_teacher`, ladalit.demo.controls) the chosen answer of "k<-server" is the gold one,
right by definition, and under the gold clients (`analysis.gold_clients`) that of "server<-k" (`gold_teacher=`,
`gold_clients=` of `sample_labels`, `selection_quality`, `reward_auc`).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from omegaconf import OmegaConf

from ladalit.core.prompts import parse_answer
from ladalit.data.split import SHARED_DOMAIN, domain_groups
from ladalit.demo.synthetic import num_steps
from ladalit.core.experiment import prepared_records
from ladalit.demo.zoo import ZOO


@dataclass(frozen=True)
class Truth:
    domain: str
    steps: int
    gold: str


@dataclass
class Oracle:
    truth: dict[str, Truth]  # by record id
    client_domains: dict[str, set[str]]  # client name -> its domains (as the split dealt them)
    learnable_steps: dict[str, int]
    taught_steps: dict[str, int]

    def useful(self, pair: str, sample_id: str) -> bool:
        """Whether the sample is learnable and useful for the pair ("k<-server" or "server<-k")."""
        t = self.truth[sample_id]
        learner, teacher = pair.split("<-")
        if learner == "server":
            return t.domain in self.client_domains[teacher] and t.steps <= self.taught_steps[teacher]
        return t.domain == SHARED_DOMAIN and t.steps <= self.learnable_steps[learner]

    def label_of(self, pair: str, sample_id: str, chosen: str, rejected: str, num_options: int = 4,
                 gold_teacher: bool = False) -> str:
        """The label of one sample of a pair from its chosen and rejected answers (`gold_teacher`: the chosen
        answer is the gold one, right by definition); what the harness's correctable selector asks."""
        t = self.truth[sample_id]
        right = gold_teacher or parse_answer(chosen, num_options) == t.gold
        return label(right, parse_answer(rejected, num_options) == t.gold,
                     t.steps <= self.learnable_steps[pair.split("<-")[0]])


LABELS = ("correctable", "out_of_reach", "redundant", "harmful", "noise")


def label(chosen_right: bool, rejected_right: bool, within_reach: bool) -> str:
    """One of LABELS for a sample whose chosen (teacher's) and rejected (learner's) answers were right or not."""
    if chosen_right:
        return "redundant" if rejected_right else ("correctable" if within_reach else "out_of_reach")
    return "harmful" if rejected_right else "noise"


def chosen_is_gold(pair: str, gold_teacher: bool, gold_clients: bool) -> bool:
    """Whether a pair's chosen answer is the record's gold one: "k<-server" under the gold teacher, "server<-k"
    under the gold clients."""
    return gold_teacher if pair.split("<-")[1] == "server" else gold_clients


def sample_labels(truth: Mapping[str, Truth], keys: Iterable[tuple[int, str, str]], answers: Mapping[tuple, str],
                  learnable_steps: Mapping[str, int], num_options: int = 4,
                  gold_teacher: bool = False, gold_clients: bool = False) -> dict[tuple[int, str, str], str | None]:
    """{(round, pair, id): label} for each key; None where the teacher's or the learner's answer of that round
    is not in `answers` ({(round, participant, id): text}, the exchanged answers). `gold_teacher` (the control
    `analysis.gold_teacher`): the chosen answer of every "k<-server" pair is the gold one, right by definition;
    `gold_clients` (`analysis.gold_clients`): the same for every "server<-k" pair."""
    out = {}
    for t, pair, i in keys:
        learner, teacher = pair.split("<-")
        gold_chosen = chosen_is_gold(pair, gold_teacher, gold_clients)
        chosen, rejected = answers.get((t, teacher, i)), answers.get((t, learner, i))
        if (chosen is None and not gold_chosen) or rejected is None:
            out[(t, pair, i)] = None
            continue
        gold = truth[i].gold
        out[(t, pair, i)] = label(gold_chosen or parse_answer(chosen, num_options) == gold,
                                  parse_answer(rejected, num_options) == gold, truth[i].steps <= learnable_steps[learner])
    return out


def label_shares(labels: Iterable[str | None]) -> tuple[int, dict[str, float]]:
    """(how many have a label, {label: share of those}); shares are NaN where none has one."""
    known = [x for x in labels if x is not None]
    n = len(known)
    return n, {k: sum(x == k for x in known) / n if n else float("nan") for k in LABELS}


def world_oracle(cfg, learnable_steps: Mapping[str, int] | None = None) -> Oracle | None:
    """The oracle of a run's data, or None where the data is not the demo world's. `learnable_steps`
    ({participant: steps}, e.g. measured) replaces the zoo's asserted values for the participants it names."""
    if cfg.data.name != "synthetic":
        return None
    records = prepared_records(cfg)
    names = list(cfg.clients)
    learnable, taught = {}, {}
    for name, ccfg in [("server", cfg.server), *cfg.clients.items()]:
        learnable[name] = taught[name] = cfg.data.synthetic.max_steps
        if ccfg.model.source == "zoo":
            member = ZOO.get(ccfg.model.name_or_path)
            if member is not None:
                learnable[name], taught[name] = member.learnable_steps, member.rationale_max_steps
    unknown = sorted(set(learnable_steps or {}) - set(learnable))
    if unknown:
        raise ValueError(f"learnable_steps names {', '.join(unknown)}, not a participant ({', '.join(learnable)})")
    learnable.update(learnable_steps or {})
    groups = domain_groups(records, len(names))
    return Oracle({r.id: Truth(r.domain, num_steps(r), r.answer) for r in records},
                  dict(zip(names, groups)), learnable, taught)


def selection_quality(oracle: Oracle, public_ids: list[str], selected: list[dict], responses: list[dict],
                      num_options: int = 4, learnable_steps: Mapping[str, int] | None = None,
                      analysis_responses: list[dict] | None = None, gold_teacher: bool = False,
                      gold_clients: bool = False) -> list[dict]:
    """Rows {round, pair, selected, precision, random_precision, chosen_correct, chosen_known, labelled,
    shares, random_labelled, random_shares} per (round, pair).

    `selected`: rows {round, pair, ids} (Results.selected_ids); `responses`: rows {round, participant, id,
    text} (the exchanged answers). The chosen answer of "k<-server" is the server's y^s, of "server<-k"
    client k's y^k; `chosen_correct` is over the selected samples whose chosen answer was recorded.
    `shares`: each label's share of the `labelled` selected samples; `random_shares`: of the
    `random_labelled` samples of D_p with both answers that round (a random selection's expected shares).
    `learnable_steps` (None: the oracle's) is the labels' table of learnable chain lengths.
    `analysis_responses` (rows like `responses`; `analysis.all_answers`): answers the harness generated for
    analysis only, which complete the random baseline's pool where no answer was exchanged (an exchanged one
    wins); the selection's own labels use the exchanged answers only. `gold_teacher`, `gold_clients`: as for
    `sample_labels`."""
    steps = oracle.learnable_steps if learnable_steps is None else {**oracle.learnable_steps, **learnable_steps}
    ids_of: dict[tuple[int, str], list[str]] = defaultdict(list)
    for row in selected:
        ids_of[(row["round"], row["pair"])] += row["ids"]
    answer = {(r["round"], r["participant"], r["id"]): r["text"] for r in responses}
    pooled = {(r["round"], r["participant"], r["id"]): r["text"] for r in analysis_responses or []} | answer
    rows = []
    for (t, pair), ids in sorted(ids_of.items()):
        learner, teacher = pair.split("<-")
        useful = sum(oracle.useful(pair, i) for i in ids)
        base = sum(oracle.useful(pair, i) for i in public_ids)
        gold = chosen_is_gold(pair, gold_teacher, gold_clients)
        said = [(i, answer.get((t, teacher, i))) for i in ids if gold or (t, teacher, i) in answer]
        right = sum(gold or parse_answer(y, num_options) == oracle.truth[i].gold for i, y in said)
        mine = sample_labels(oracle.truth, [(t, pair, i) for i in ids], answer, steps, num_options, gold_teacher,
                             gold_clients)
        pool = sample_labels(oracle.truth, [(t, pair, i) for i in public_ids], pooled, steps, num_options, gold_teacher,
                             gold_clients)
        labelled, shares = label_shares(mine[(t, pair, i)] for i in ids)
        random_labelled, random_shares = label_shares(pool.values())
        rows.append({"round": t, "pair": pair, "selected": len(ids),
                     "precision": useful / len(ids) if ids else float("nan"),
                     "random_precision": base / len(public_ids) if public_ids else float("nan"),
                     "chosen_correct": right / len(said) if said else float("nan"), "chosen_known": len(said),
                     "labelled": labelled, "shares": shares,
                     "random_labelled": random_labelled, "random_shares": random_shares})
    return rows


def accuracy_by_domain(truth: Mapping[str, Truth], predictions: list[dict]) -> list[dict]:
    """Rows {round, participant, shots, domain, steps, n, accuracy} from the evaluation's predictions (those of
    records without a truth are left out)."""
    cells: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    for p in predictions:
        t = truth.get(p["id"])
        if t is None:
            continue
        c = cells[(p["round"], p["participant"], p["shots"], t.domain, t.steps)]
        c[0] += 1
        c[1] += p["parsed"] == p["gold"]
    return [{"round": r, "participant": n, "shots": s, "domain": d, "steps": k, "n": c[0], "accuracy": c[1] / c[0]}
            for (r, n, s, d, k), c in sorted(cells.items())]


def domain_rows(oracle: Oracle, results) -> list[dict]:
    """results.json's `accuracy_by_domain`: the cells of the predictions this run holds, and those a deployment's
    sites computed from predictions that stayed with them (`Results.domain_scores`), in one order."""
    rows = accuracy_by_domain(oracle.truth, results.predictions) + list(getattr(results, "domain_scores", []))
    return sorted(rows, key=lambda r: (r["round"], r["participant"], r["shots"], r["domain"], r["steps"]))


def reward_auc(oracle: Oracle, sample_rewards: list[dict], responses: list[dict], num_options: int = 4,
               learnable_steps: Mapping[str, int] | None = None, gold_teacher: bool = False,
               gold_clients: bool = False) -> list[dict]:
    """Rows {round, pair, n, labelled, correctable, harmful, auc_r_total, auc_predicted, auc_r_total_rest,
    auc_predicted_rest} per (round, pair): how well LaDa's reward r_total (as recorded per trained sample,
    `Results.sample_rewards`) and the filter's predicted reward U^p at selection separate the samples labelled
    correctable from those labelled harmful (`auc_*`: `ladalit.core.stats.auc`, 0.5 = no sign of it; NaN
    where a side is empty, e.g. under the gold teacher, whose chosen answer is never wrong), and from every other
    labelled sample (`auc_*_rest`). Labels from the exchanged answers, as in `selection_quality`."""
    from ladalit.core.stats import auc
    steps = oracle.learnable_steps if learnable_steps is None else {**oracle.learnable_steps, **learnable_steps}
    answer = {(r["round"], r["participant"], r["id"]): r["text"] for r in responses}
    cells: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for r in sample_rewards:
        cells[(r["round"], r["pair"])].append(r)
    rows = []
    for (t, pair), obs in sorted(cells.items()):
        labels = sample_labels(oracle.truth, [(t, pair, r["id"]) for r in obs], answer, steps, num_options, gold_teacher,
                               gold_clients)
        tagged = [(labels[(t, pair, r["id"])], r) for r in obs]
        row = {"round": t, "pair": pair, "n": len(obs), "labelled": sum(lab is not None for lab, _ in tagged),
               "correctable": sum(lab == "correctable" for lab, _ in tagged),
               "harmful": sum(lab == "harmful" for lab, _ in tagged)}
        for key in ("r_total", "predicted"):
            pos = [r[key] for lab, r in tagged if lab == "correctable"]
            row[f"auc_{key}"] = auc(pos, [r[key] for lab, r in tagged if lab == "harmful"])
            row[f"auc_{key}_rest"] = auc(pos, [r[key] for lab, r in tagged if lab not in (None, "correctable")])
        rows.append(row)
    return rows


def oracle_report(cfg, public_ids: list[str], results, learnable_steps: Mapping[str, int] | None = None,
                  analysis_responses: list[dict] | None = None) -> dict:
    """results.json's oracle keys for a finished run (`selection_quality`, `accuracy_by_domain`, and for LaDa
    `reward_auc`), or {} where the data is not the demo world's. `learnable_steps`: as for `world_oracle`;
    `analysis_responses`: as for `selection_quality`; the gold teacher and clients (`analysis.gold_teacher`,
    `analysis.gold_clients`) from `cfg`."""
    oracle = world_oracle(cfg, learnable_steps)
    if oracle is None:
        return {}
    gold = {k: bool(OmegaConf.select(cfg, f"analysis.{k}", default=False)) for k in ("gold_teacher", "gold_clients")}
    out = {"selection_quality": selection_quality(oracle, public_ids, results.selected_ids, results.responses,
                                                  cfg.data.num_options, analysis_responses=analysis_responses,
                                                  **gold),
           "accuracy_by_domain": domain_rows(oracle, results)}
    if getattr(results, "sample_rewards", None):
        out["reward_auc"] = reward_auc(oracle, results.sample_rewards, results.responses, cfg.data.num_options,
                                       **gold)
    return out
