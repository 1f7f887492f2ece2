"""Option normalisation and the federated split: K clients' private train/test plus the public set D_p."""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace

from ladalit.data.records import LETTERS, DataError, MCRecord

log = logging.getLogger(__name__)


def _distractors(rec: MCRecord) -> list[str]:
    """The record's distinct option texts other than the gold text, in order."""
    gold = rec.gold_text
    return list(dict.fromkeys(o for o in rec.options if o != gold))


def drop_short(records: list[MCRecord], num_options: int = 4) -> list[MCRecord]:
    """Drop the records `normalise_options` would refuse (too few distinct distractors); log how many."""
    kept = [r for r in records if r.answer is not None and len(_distractors(r)) >= num_options - 1]
    if len(kept) < len(records):
        log.info("dropped %d of %d records with fewer than %d distinct options", len(records) - len(kept), len(records), num_options)
    return kept


def question_key(question: str) -> str:
    """What makes two questions the same: their text, case and spacing ignored."""
    return " ".join(question.casefold().split())


def drop_duplicate_questions(records: list[MCRecord], source: str) -> list[MCRecord]:
    """Keep the first record of each question text (case and spacing ignored); warn with the count.

    A question that occurs twice could land in a client's train set and in a test or the public set;
    ids cannot catch it where they are line numbers (AQuA, MathInstruct, CoT-Collection)."""
    first: dict[str, str] = {}
    kept, dropped = [], []
    for rec in records:
        key = question_key(rec.question)
        if key in first:
            dropped.append((rec.id, first[key]))
        else:
            first[key] = rec.id
            kept.append(rec)
    if dropped:
        examples = ", ".join(f"{a} repeats {b}" for a, b in dropped[:3])
        log.warning("%s: dropped %d of %d records whose question repeats an earlier one (%s%s)", source, len(dropped),
                    len(records), examples, ", ..." if len(dropped) > 3 else "")
    return kept


def normalise_options(records: list[MCRecord], num_options: int = 4, seed: int = 0) -> list[MCRecord]:
    """Keep the gold + (num_options - 1) seeded distractors; balance the gold position over the letters.

    Gold positions are a seeded shuffle of 0, 1, ..., num_options - 1 repeated, so
    every letter is the gold of len(records) / num_options records, ±1.
    Rationales are kept as they are (a letter they mention may no longer match).
    """
    if not 2 <= num_options <= len(LETTERS):
        raise ValueError(f"num_options must be in 2..{len(LETTERS)}, got {num_options}")
    rng = random.Random(seed)
    slots = [i % num_options for i in range(len(records))]
    rng.shuffle(slots)
    out = []
    for rec, slot in zip(records, slots):
        if rec.answer is None:
            raise DataError("normalise_options", None, "answer", f"record {rec.id} has no gold letter")
        if len(rec.options) < num_options:
            raise DataError("normalise_options", None, "options",
                            f"record {rec.id} has {len(rec.options)} options, needs at least {num_options}")
        distractors = _distractors(rec)
        if len(distractors) < num_options - 1:
            raise DataError("normalise_options", None, "options",
                            f"record {rec.id} has {len(distractors)} distinct distractors, needs {num_options - 1}")
        options = rng.sample(distractors, num_options - 1)
        options.insert(slot, rec.gold_text)
        out.append(replace(rec, options=tuple(options), answer=LETTERS[slot]))
    return out


@dataclass
class ClientData:
    """One client's private data: answers kept, no rationales."""

    train: list[MCRecord]
    test: list[MCRecord]


@dataclass
class FederatedData:
    """K clients' private data and the public distillation set D_p (no answers, no rationales)."""

    clients: list[ClientData]
    public: list[MCRecord]


# records of this domain belong to no client: they reach clients only through iid draws and the public set
SHARED_DOMAIN = "shared"


def domain_groups(records: list[MCRecord], num_clients: int) -> list[set[str]]:
    """The records' domains but SHARED_DOMAIN, sorted and dealt round-robin to the clients."""
    domains = sorted({r.domain for r in records} - {SHARED_DOMAIN})
    return [set(domains[k::num_clients]) for k in range(num_clients)]


def federated_split(
    records: list[MCRecord],
    num_clients: int,
    train_per_client: int,
    test_per_client: int,
    public_size: int,
    seed: int,
    domain_skew: float = 0.0,
) -> FederatedData:
    """Draw disjoint client train/test sets and the public set, deterministically by seed.

    domain_skew = 0: every client draws iid; 1: client k draws only from its own
    group of domains (`domain_groups`); in between: round(domain_skew · n) of each
    client's n records come from its own domains, the rest iid. The public set is
    drawn iid from what is left.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    if min(train_per_client, test_per_client, public_size) < 0:
        raise ValueError("train_per_client, test_per_client and public_size must be >= 0")
    if not 0.0 <= domain_skew <= 1.0:
        raise ValueError(f"domain_skew must be in [0, 1], got {domain_skew}")
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"record ids are not unique ({len(ids) - len(set(ids))} duplicates)")
    per_client = train_per_client + test_per_client
    need = num_clients * per_client + public_size
    if len(records) < need:
        raise ValueError(
            f"federated_split needs {need} records ({num_clients} clients x ({train_per_client} train + "
            f"{test_per_client} test) + {public_size} public), got {len(records)}")

    rng = random.Random(seed)
    order = list(range(len(records)))
    rng.shuffle(order)
    used: set[int] = set()

    def take(n: int, allowed: set[str] | None = None) -> list[int]:
        got = [i for i in order if i not in used and (allowed is None or records[i].domain in allowed)][:n]
        used.update(got)
        return got

    groups = domain_groups(records, num_clients)
    own = round(domain_skew * per_client)
    drawn = []
    for k, group in enumerate(groups):
        got = take(own, group)
        if len(got) < own:
            raise ValueError(
                f"domain_skew={domain_skew} needs {own} records from client {k}'s {len(group)} domains, "
                f"there are {len(got)}")
        drawn.append(got)
    clients = []
    for got in drawn:
        got = got + take(per_client - own)
        rng.shuffle(got)
        clients.append(ClientData(
            train=[records[i].private() for i in got[:train_per_client]],
            test=[records[i].private() for i in got[train_per_client:]],
        ))
    # a fresh draw from what is left: the clients' own-domain draws took their domains' first records in
    # `order`, so the next records in it would over-represent the domains no client takes
    rest = [i for i in order if i not in used]
    public = [records[i].public() for i in rng.sample(rest, public_size)]
    return FederatedData(clients=clients, public=public)
