"""Option normalisation and the federated split: K clients' private train/test plus the public set D_p."""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field, replace

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


@dataclass(frozen=True)
class Mixture:
    """Explicit domain shares of the split (`data.mixture`): {domain: share} per client, by name, for its
    private train set and for its test set, and for the public set. The clients come back in `train`'s
    order; a client missing from `test` is tested on its train mixture; `public` None or {} draws D_p iid
    from what the clients left."""

    train: dict[str, dict[str, float]]
    test: dict[str, dict[str, float]] = field(default_factory=dict)
    public: dict[str, float] | None = None

    def test_of(self, name: str) -> dict[str, float]:
        return self.test.get(name) or self.train[name]


class MixtureError(ValueError):
    """A mixture that cannot be drawn; `key` is where under data.mixture (e.g. "train.client1.calendar")."""

    def __init__(self, key: str, message: str):
        super().__init__(f"data.mixture.{key}: {message}")
        self.key, self.message = key, message


# shares of one mixture may miss 1 by this much (1/3 + 1/3 + 1/3 written with a few decimals)
SHARE_TOLERANCE = 1e-6


def check_shares(key: str, shares: dict[str, float]) -> None:
    """MixtureError unless every share is a finite number in [0, 1] and they sum to 1."""
    for domain, share in shares.items():
        if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0.0 <= share <= 1.0:
            raise MixtureError(f"{key}.{domain}", f"share {share!r} is not a number in [0, 1]")
    total = sum(shares.values())
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise MixtureError(key, f"shares sum to {total:g}, they must sum to 1")


def check_mixture(mixture: Mixture, names: list[str]) -> None:
    """MixtureError unless `train` names every client and no other, `test` only clients, and every
    mixture's shares are in [0, 1] and sum to 1 (the domains are checked against the records: `check_mixture_fits`)."""
    for part in ("train", "test"):
        for name in getattr(mixture, part):
            if name not in names:
                raise MixtureError(f"{part}.{name}", f"no such client (clients: {', '.join(names)})")
    missing = [n for n in names if n not in mixture.train]
    if missing:
        raise MixtureError("train", f"client {missing[0]} has no mixture (once data.mixture.train is set, "
                                    "every client needs one)")
    for name in names:
        check_shares(f"train.{name}", mixture.train[name])
        if name in mixture.test:
            check_shares(f"test.{name}", mixture.test[name])
    if mixture.public:
        check_shares("public", mixture.public)


def apportion(n: int, shares: dict[str, float]) -> dict[str, int]:
    """Whole counts summing to n in proportion to the shares (largest remainder; equal remainders go to the
    larger share, then to the domain first in sorted order). Domains with share 0 get none."""
    total = sum(shares.values())
    exact = {d: n * s / total for d, s in shares.items() if s > 0}
    counts = {d: int(x) for d, x in exact.items()}
    by_rest = sorted(exact, key=lambda d: (-round(exact[d] - counts[d], 9), -shares[d], d))
    for d in by_rest[:n - sum(counts.values())]:
        counts[d] += 1
    return counts


def mixture_demand(mixture: Mixture, train_per_client: int, test_per_client: int,
                   public_size: int) -> dict[str, dict[str, int]]:
    """{domain: {part: records}}, part being "train.NAME", "test.NAME" or "public" (a client missing
    from `test` counts under "test.NAME" with its train mixture)."""
    need: dict[str, dict[str, int]] = {}
    parts = [(f"train.{n}", train_per_client, mixture.train[n]) for n in mixture.train]
    parts += [(f"test.{n}", test_per_client, mixture.test_of(n)) for n in mixture.train]
    if mixture.public:
        parts.append(("public", public_size, mixture.public))
    for what, n, shares in parts:
        for domain, count in apportion(n, shares).items():
            need.setdefault(domain, {})[what] = count
    return need


def check_mixture_fits(mixture: Mixture, records: list[MCRecord], train_per_client: int, test_per_client: int,
                       public_size: int) -> None:
    """MixtureError naming the key when a mixture names a domain the records lack, or asks a domain for
    more records than it has."""
    have: dict[str, int] = {}
    for r in records:
        have[r.domain] = have.get(r.domain, 0) + 1
    known = ", ".join(sorted(have))
    parts = [(f"train.{n}", s) for n, s in mixture.train.items()] + [(f"test.{n}", s) for n, s in mixture.test.items()]
    parts += [("public", mixture.public)] if mixture.public else []
    for key, shares in parts:
        for domain in shares:
            if domain not in have:
                raise MixtureError(f"{key}.{domain}", f"unknown domain (the records' domains: {known})")
    demand = mixture_demand(mixture, train_per_client, test_per_client, public_size)
    for domain, wants in sorted(demand.items()):
        total = sum(wants.values())
        if total > have[domain]:
            # named after the part asking for the most of it (the last of equals)
            key = f"{max(reversed(list(wants)), key=wants.get)}.{domain}"
            if key.startswith("test.") and key.split(".")[1] not in mixture.test:
                key = "train." + key.split(".", 1)[1]
            parts_text = ", ".join(f"{w} {c}" for w, c in wants.items())
            raise MixtureError(key, f"domain {domain} is asked for {total} records in all ({parts_text}), "
                                    f"the records have {have[domain]}")
    left = len(records) - sum(c for wants in demand.values() for c in wants.values())
    if not mixture.public and left < public_size:
        raise MixtureError("public", f"{left} records are left for the public set of {public_size}")


def skew_mixture(records: list[MCRecord], num_clients: int, domain_skew: float) -> Mixture:
    """domain_skew as a mixture: a share domain_skew from the client's own domains (`domain_groups`), the rest
    iid, each part spread over its domains in proportion to their records. Clients are named "0", "1", ..."""
    have: dict[str, int] = {}
    for r in records:
        have[r.domain] = have.get(r.domain, 0) + 1
    total = len(records)
    train = {}
    for k, group in enumerate(domain_groups(records, num_clients)):
        if not group:
            raise ValueError(f"domain_skew={domain_skew}: client {k} has no domain of its own (the records have "
                             f"{len(set(have) - {SHARED_DOMAIN})} domains besides {SHARED_DOMAIN!r} for "
                             f"{num_clients} clients)")
        own = sum(have[d] for d in group)
        shares = {d: (1 - domain_skew) * c / total for d, c in sorted(have.items())}
        for d in sorted(group):
            shares[d] += domain_skew * have[d] / own
        train[str(k)] = shares
    return Mixture(train=train)


def mixture_split(records: list[MCRecord], mixture: Mixture, train_per_client: int, test_per_client: int,
                  public_size: int, seed: int) -> FederatedData:
    """Disjoint client train/test sets and public set with exactly the mixtures' counts per domain.

    Each domain's records are taken in one seeded shuffled order, in consecutive blocks: the public set's
    first (when it has a mixture), then the clients' in sorted name order, train before test. So counts never
    depend on the clients' order, and a client's records depend on its name, not its place in the config.
    A client's train and test lists are shuffled by a stream of its own; an iid public set is a seeded
    sample of what is left."""
    check_mixture(mixture, list(mixture.train))
    check_mixture_fits(mixture, records, train_per_client, test_per_client, public_size)
    rng = random.Random(seed)
    order = list(range(len(records)))
    rng.shuffle(order)
    queue: dict[str, list[int]] = {}
    for i in order:
        queue.setdefault(records[i].domain, []).append(i)
    taken = {d: 0 for d in queue}
    used: set[int] = set()

    def take(n: int, shares: dict[str, float]) -> list[int]:
        got = []
        for domain, count in sorted(apportion(n, shares).items()):
            got += queue[domain][taken[domain]:taken[domain] + count]
            taken[domain] += count
        used.update(got)
        return got

    public = take(public_size, mixture.public) if mixture.public else None
    drawn = {}
    for name in sorted(mixture.train):
        mine = random.Random(f"ladalit.split:{seed}:{name}")
        train, test = take(train_per_client, mixture.train[name]), take(test_per_client, mixture.test_of(name))
        mine.shuffle(train)
        mine.shuffle(test)
        drawn[name] = ClientData(train=[records[i].private() for i in train], test=[records[i].private() for i in test])
    if public is None:
        public = rng.sample([i for i in order if i not in used], public_size)
    else:
        rng.shuffle(public)
    return FederatedData(clients=[drawn[n] for n in mixture.train], public=[records[i].public() for i in public])


def federated_split(
    records: list[MCRecord],
    num_clients: int,
    train_per_client: int,
    test_per_client: int,
    public_size: int,
    seed: int,
    domain_skew: float = 0.0,
    mixture: Mixture | None = None,
) -> FederatedData:
    """Draw disjoint client train/test sets and the public set, deterministically by seed.

    With a `mixture`: exactly its counts per domain (`mixture_split`; domain_skew must be 0). Else
    domain_skew = 0: every client draws iid; 1: client k draws only from its own group of domains
    (`domain_groups`); in between: `skew_mixture`, a share domain_skew of each client's records from its own
    domains and the rest iid, in exact counts. The public set is drawn iid from what is left.
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
    if mixture is not None and domain_skew > 0:
        raise ValueError(f"domain_skew={domain_skew} and a mixture: choose one")
    per_client = train_per_client + test_per_client
    need = num_clients * per_client + public_size
    if len(records) < need:
        raise ValueError(
            f"federated_split needs {need} records ({num_clients} clients x ({train_per_client} train + "
            f"{test_per_client} test) + {public_size} public), got {len(records)}")
    if mixture is None and 0.0 < domain_skew < 1.0:
        # the draw before 2026-12-07 took the own-domain records first and the iid ones from what was left,
        # client by client, so the iid part was mostly the domains no client owns and depended on client order
        mixture = skew_mixture(records, num_clients, domain_skew)
    if mixture is not None:
        if len(mixture.train) != num_clients:
            raise ValueError(f"the mixture has {len(mixture.train)} clients, num_clients is {num_clients}")
        return mixture_split(records, mixture, train_per_client, test_per_client, public_size, seed)

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
