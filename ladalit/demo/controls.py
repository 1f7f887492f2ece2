"""The demo world's controls (issue 34): analysis switches of the experimenter's harness, not methods.

They tell "LaDa does not help on this world" from "this implementation is broken" (docs/demo.md, Controls).
The harness (`ladalit.run`) builds them from `analysis:` and hands them to the roles as hooks
(`ladalit.core.hooks`); the oracle reaches them only as an object the harness passes in (this module does not
import `ladalit.demo.oracle`, and no method imports this one).

- **Gold teacher** (`analysis.gold_teacher`): y^s, the server's answer a client learns from, is the record's
  gold rationale in the server's answer format (`gold_response`), for LaDa and FedKD. **Gold clients**
  (`analysis.gold_clients`, LaDa): the same for y^k, the clients' answers the server learns from.
- **Matched selectors** (`analysis.selector`, `analysis.sizes_from`): a LaDa run whose every (round, pair,
  candidate batch) selection is made by a random, a disagreement or an oracle-correctable selector, of the size
  the LaDa run `sizes_from` selected there (`replay_sizes`); the candidate batches are the same, as they
  follow from the seed, the data and n_c (checked against that run's config.yaml).
- **All answers** (`analysis.all_answers`): both sides' answers on every candidate of every (round, pair), for
  the oracle's random baseline over all of D_p. Neither sent, counted nor trained on.

The answers a control generates (`Controls.answers`) are its own: one per (round, participant, sample), by
the participant as it is when that sample is first a candidate of the round, where the method generates its
own for the samples it selects (a client's answers during its phase, before it trains on the candidate
batch; the server's, ψ of that round, in the clients' phase). They never enter the method's caches, its
counters or the channel; generation is greedy, so they leave the run as it would be without them (a test
checks that a run with `all_answers` selects, trains and scores exactly as one without).
"""
from __future__ import annotations

import json
import math
import random
from pathlib import Path

from omegaconf import OmegaConf

from ladalit.core.config import ConfigError, DataConfig
from ladalit.core.hooks import Hooks
from ladalit.core.prompts import format_response, parse_answer, zero_shot_prompt
from ladalit.data.records import MCRecord
from ladalit.demo.synthetic import option_check


def analysis_on(cfg) -> bool:
    a = cfg.analysis
    return bool(a.gold_teacher or a.gold_clients or a.selector != "none" or a.all_answers)


def gold_response(rec: MCRecord) -> str:
    """The gold rationale of a synthetic record (with its answer) as a server's answer reads: the chain of
    operations, each option set against the result in the record's own (normalised) option order, then
    "The answer is (X)." (`format_response`, the zoo's pre-training target). The record's stored rationale
    checks the options in their order before the split re-drew them (`normalise_options`), so its check is
    rebuilt."""
    if rec.answer is None or not rec.rationale or "(A) " not in rec.rationale:
        raise ValueError(f"record {rec.id}: no synthetic rationale and answer to build a gold answer from")
    chain = rec.rationale[:rec.rationale.index("(A) ")].strip()
    return format_response(f"{chain} {option_check(list(rec.options), rec.gold_index)}", rec.answer)


def choose(kind: str, cand: list[str], n: int, preferred: set[str], rng: random.Random) -> list[str]:
    """`n` of the candidates, in candidate order: `random` draws them uniformly; `disagreement` and `correctable`
    take the `preferred` candidates (a random n of them where more qualify) and fill up at random from the rest."""
    if not 0 <= n <= len(cand):
        raise ValueError(f"cannot select {n} of {len(cand)} candidates")
    if kind == "random":
        chosen = set(rng.sample(cand, n))
    elif kind in ("disagreement", "correctable"):
        first = [c for c in cand if c in preferred]
        rest = [c for c in cand if c not in preferred]
        chosen = set(rng.sample(first, min(n, len(first))))
        chosen |= set(rng.sample(rest, n - len(chosen)))
    else:
        raise ValueError(f"unknown selector {kind!r}")
    return [c for c in cand if c in chosen]


def replay_sizes(cfg) -> dict[tuple[int, str], list[int]]:
    """{(round, pair): [size per candidate batch]} that the LaDa run `analysis.sizes_from` selected; a run that
    does not fit (another seed, data or n_c, too few rounds, other clients) is a ConfigError naming the key."""
    key = "config key 'analysis.sizes_from'"
    run = Path(cfg.analysis.sizes_from)
    if not (run / "config.yaml").is_file() or not (run / "selections.jsonl").is_file():
        raise ConfigError(f"{key}: {run} is not a finished run directory (config.yaml and selections.jsonl)")
    src = OmegaConf.load(run / "config.yaml")
    if src.get("method") != "lada":
        raise ConfigError(f"{key}: {run} is a {src.get('method')} run; a matched selector replays a LaDa run's sizes")
    their_n_c = OmegaConf.select(src, "lada.n_c", default=src.get("n_c"))  # a run before 2026-12-07: top-level
    for name, mine, theirs in (("seed", cfg.seed, src.get("seed")), ("lada.n_c", cfg.lada.n_c, their_n_c),
                               ("clients", list(cfg.clients), list(src.get("clients", {}))),
                               ("data", OmegaConf.to_container(cfg.data),  # on today's schema (a key added since)
                                OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(DataConfig),
                                                                       src.get("data", {}))))):
        if mine != theirs:
            raise ConfigError(f"{key}: {run} has another {name} ({theirs}, this run: {mine}); the candidate batches "
                              "would differ")
    sizes: dict[tuple[int, str], list[int]] = {}
    for line in (run / "selections.jsonl").read_text().splitlines():
        row = json.loads(line)
        sizes.setdefault((row["round"], row["pair"]), []).append(len(row["ids"]))
    pairs = [f"{k}<-server" for k in cfg.clients] + [f"server<-{k}" for k in cfg.clients]
    for t in range(1, cfg.rounds + 1):
        batches = math.ceil(cfg.data.public_size / cfg.lada.n_c)  # D_p in candidate batches of n_c (method.pair)
        for p in pairs:
            if len(sizes.get((t, p), [])) != batches:
                raise ConfigError(f"{key}: {run} has {len(sizes.get((t, p), []))} selections of round {t}, pair {p}, "
                                  f"not {batches} (one per candidate batch; did it finish {cfg.rounds} rounds?)")
    return sizes


class Controls:
    """The hooks of the switched-on controls, and the answers they generated (analysis only)."""

    def __init__(self, cfg, exp, oracle, records: list[MCRecord], sizes: dict | None = None):
        """`oracle`: the demo world's (`ladalit.demo.oracle.world_oracle`), passed in by the harness; `records`:
        the run's records with their truth (`prepared_records`); `sizes`: `replay_sizes` for a matched selector."""
        self.cfg, self.exp, self.oracle, self.sizes = cfg, exp, oracle, sizes or {}
        public = {x.id for x in exp.data.public}
        self.records = {r.id: r for r in records if r.id in public}
        a = cfg.analysis
        self.gold = {i: gold_response(r) for i, r in self.records.items()} if a.gold_teacher or a.gold_clients else {}
        self.answers: dict[tuple[int, str, str], str] = {}  # (round, participant, id) -> text
        # (round, participant, id) the method answers itself (a selected sample's two sides): all_answers skips them
        self.method_has: set[tuple[int, str, str]] = set()

    def hooks(self) -> Hooks:
        a = self.cfg.analysis
        return Hooks(teacher=self.teacher if a.gold_teacher else None,
                     client_teacher=self.client_teacher if a.gold_clients else None,
                     selector=self.selector if a.selector != "none" else None,
                     selected=self.selected if a.all_answers else None)

    # ----------------------------------------------------------------------- the hooks
    def teacher(self, round: int, ids: list[str]) -> list[str]:
        return [self.gold[i] for i in ids]

    def client_teacher(self, round: int, client: str, ids: list[str]) -> list[str]:
        return self.teacher(round, ids)

    def selector(self, round: int, pair: str, batch: int, cand: list[str]) -> list[str]:
        kind, n = self.cfg.analysis.selector, self.sizes[(round, pair)][batch]
        rng = random.Random(f"ladalit-control-{kind}-{self.cfg.seed}-{round}-{pair}-{batch}")
        preferred: set[str] = set()
        if kind != "random":
            chosen, rejected = self.pair_answers(round, pair, cand)
            k = self.cfg.data.num_options
            if kind == "disagreement":
                preferred = {i for i in cand if parse_answer(chosen[i], k) != parse_answer(rejected[i], k)}
            else:
                preferred = {i for i in cand if self.oracle.label_of(pair, i, chosen[i], rejected[i], k,
                                                                      self.gold_teacher(pair)) == "correctable"}
        return choose(kind, cand, n, preferred, rng)

    def selected(self, round: int, pair: str, cand: list[str], sel: list[str]) -> None:
        """all_answers: both sides' answers on the candidates whose answers the method does not generate (it does
        for both sides of every sample it selects; an exchanged answer wins over an analysis one anyway)."""
        learner, teacher = pair.split("<-")
        self.method_has |= {(round, p, i) for i in sel for p in (learner, teacher)}
        if not self.gold_teacher(pair):
            self.answer(round, teacher, [i for i in cand if (round, teacher, i) not in self.method_has])
        self.answer(round, learner, [i for i in cand if (round, learner, i) not in self.method_has])

    # ----------------------------------------------------------------------- the answers
    def gold_teacher(self, pair: str) -> bool:
        """Whether the pair's chosen answer is the gold one: "k<-server" under gold_teacher, "server<-k" under
        gold_clients."""
        a = self.cfg.analysis
        return bool(a.gold_teacher if pair.endswith("<-server") else a.gold_clients)

    def pair_answers(self, round: int, pair: str, ids: list[str]) -> tuple[dict[str, str], dict[str, str]]:
        """({id: chosen answer}, {id: rejected answer}) of a pair: the teacher's (the gold one under the gold
        teacher) and the learner's, generated where this round has none yet."""
        learner, teacher = pair.split("<-")
        chosen = {i: self.gold[i] for i in ids} if self.gold_teacher(pair) else self.answer(round, teacher, ids)
        return chosen, self.answer(round, learner, ids)

    def answer(self, round: int, name: str, ids: list[str]) -> dict[str, str]:
        participant = self.exp.server if name == "server" else self.exp.clients[name]
        missing = [i for i in dict.fromkeys(ids) if (round, name, i) not in self.answers]
        if missing:
            g = self.cfg.generation
            texts = participant.generate_text([zero_shot_prompt(self.records[i].public()) for i in missing],
                                              g.max_new_tokens, g.batch_size)
            self.answers.update({(round, name, i): str(y) for i, y in zip(missing, texts)})
        return {i: self.answers[(round, name, i)] for i in ids}

    @property
    def generated(self) -> int:
        """How many answers the controls generated (each once: `answer` keeps them)."""
        return len(self.answers)

    def rows(self) -> list[dict]:
        """analysis_responses.jsonl: {round, participant, id, text} of every answer the controls generated."""
        return [{"round": r, "participant": p, "id": i, "text": y} for (r, p, i), y in self.answers.items()]

    def state_dict(self) -> dict:
        return {"rows": self.rows()}

    def load_state_dict(self, state: dict | None) -> None:
        """A checkpoint's (taken at a round's end: `method_has` concerns the round under way only)."""
        if state:
            self.answers = {(r["round"], r["participant"], r["id"]): r["text"] for r in state["rows"]}
