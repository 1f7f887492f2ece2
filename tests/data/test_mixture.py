"""The split's explicit mixtures (`data.mixture`, ladalit.data.split.mixture_split) and domain_skew between 0
and 1: exact counts per domain, independence from the clients' order, determinism, disjoint questions."""
from __future__ import annotations

from collections import Counter

import pytest

from ladalit.core.config import ConfigError, load_config
from ladalit.core.experiment import load_data, prepared_records
from ladalit.data.records import MCRecord
from ladalit.data.split import (Mixture, MixtureError, apportion, check_mixture, domain_groups, federated_split,
                                question_key)


def world(sizes: dict[str, int]) -> list[MCRecord]:
    """Records with distinct questions, interleaved over the domains (sizes: records per domain)."""
    out, n = [], 0
    left = dict(sizes)
    while any(left.values()):
        for d in sizes:
            if left[d]:
                out.append(MCRecord(f"{d}{left[d]}", f"question {n} of {d}?", ("a", "b", "c", "d"), "A", None, d))
                left[d] -= 1
                n += 1
    return out


RECS = world({"shared": 300, "x": 300, "y": 300, "z": 300})
DOMAIN = {r.id: r.domain for r in RECS}
V5 = Mixture(train={"c1": {"x": 0.5, "shared": 0.5}, "c2": {"y": 0.5, "shared": 0.5}, "c3": {"z": 0.5, "shared": 0.5}},
             test={"c3": {"z": 1.0}},
             public={"shared": 0.5, "x": 1 / 6, "y": 1 / 6, "z": 1 / 6})


def counts(recs) -> dict[str, int]:
    return dict(Counter(DOMAIN[r.id] for r in recs))


def test_apportion_by_hand():
    assert apportion(10, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}) == {"a": 4, "b": 3, "c": 3}  # tie: first by name
    assert apportion(5, {"b": 0.5, "a": 0.5}) == {"a": 3, "b": 2}
    assert apportion(2, {"a": 0.25, "b": 0.75}) == {"a": 0, "b": 2}  # 0.5 left on each: the larger share wins
    assert apportion(7, {"a": 0.0, "b": 1.0}) == {"b": 7}
    assert apportion(9, {"a": 0.25, "b": 0.75}) == {"a": 2, "b": 7}  # 2.25, 6.75: the larger remainder wins
    assert sum(apportion(301, {"a": 0.5, "b": 1 / 6, "c": 1 / 6, "d": 1 / 6}).values()) == 301


def test_mixture_split_counts_per_domain():
    fed = federated_split(RECS, 3, 40, 20, 60, seed=0, mixture=V5)
    assert [counts(c.train) for c in fed.clients] == [{"x": 20, "shared": 20}, {"y": 20, "shared": 20},
                                                      {"z": 20, "shared": 20}]
    assert [counts(c.test) for c in fed.clients] == [{"x": 10, "shared": 10}, {"y": 10, "shared": 10}, {"z": 20}]
    assert counts(fed.public) == {"shared": 30, "x": 10, "y": 10, "z": 10}
    # records reach methods without their domain, and the public set without an answer
    assert all(r.domain == "default" and r.answer == "A" for c in fed.clients for r in c.train + c.test)
    assert all(r.answer is None for r in fed.public)


def test_mixture_split_without_public_mixture_draws_it_from_what_is_left():
    mixture = Mixture(train={"c1": {"x": 1.0}, "c2": {"x": 1.0}})
    fed = federated_split(RECS, 2, 100, 50, 400, seed=3, mixture=mixture)
    assert [counts(c.train + c.test) for c in fed.clients] == [{"x": 150}, {"x": 150}]
    assert "x" not in counts(fed.public) and len(fed.public) == 400  # x is used up; 400 of the 900 others


def all_sets(fed) -> list[list[MCRecord]]:
    return [s for c in fed.clients for s in (c.train, c.test)] + [fed.public]


def test_no_question_in_two_sets():
    fed = federated_split(RECS, 3, 40, 20, 60, seed=1, mixture=V5)
    keys = [question_key(r.question) for s in all_sets(fed) for r in s]
    assert len(keys) == len(set(keys)) == 3 * 60 + 60


def test_mixture_split_is_independent_of_the_clients_order():
    """Listing the clients in another order hands each client, by name, the very same records."""
    fed = federated_split(RECS, 3, 40, 20, 60, seed=0, mixture=V5)
    order = ["c3", "c1", "c2"]
    moved = Mixture(train={n: V5.train[n] for n in order}, test=V5.test, public=V5.public)
    fed2 = federated_split(RECS, 3, 40, 20, 60, seed=0, mixture=moved)
    by_name = dict(zip(V5.train, fed.clients))
    assert dict(zip(order, fed2.clients)) == by_name
    assert fed2.public == fed.public


def test_mixture_split_is_deterministic_by_seed():
    a = federated_split(RECS, 3, 40, 20, 60, seed=5, mixture=V5)
    assert a == federated_split(RECS, 3, 40, 20, 60, seed=5, mixture=V5)
    b = federated_split(RECS, 3, 40, 20, 60, seed=6, mixture=V5)
    assert [r.id for s in all_sets(a) for r in s] != [r.id for s in all_sets(b) for r in s]
    assert [counts(c.train) for c in a.clients] == [counts(c.train) for c in b.clients]  # same counts, other records


def test_domain_skew_between_0_and_1_gives_every_client_the_same_counts():
    """domain_skew=0.5 of 150 train records: 75 from the client's own domain, 75 iid (18.75 per domain, the four
    being equal), so 93.75 own and 18.75 of each other domain, rounded: 94 own, 56 others; of 50 test records
    32 own and 6 of each other, whatever the client's place (before 2026-12-07 the first client's iid part
    was mostly shared and the later clients' mostly the others' domains)."""
    groups = domain_groups(RECS, 3)
    assert groups == [{"x"}, {"y"}, {"z"}]
    fed = federated_split(RECS, 3, 150, 50, 100, seed=0, domain_skew=0.5)
    for k, (own, c) in enumerate(zip("xyz", fed.clients)):
        train, test = counts(c.train), counts(c.test)
        assert train.pop(own) == 94 and sorted(train.values()) == [18, 19, 19], k
        assert test == {d: 32 if d == own else 6 for d in ("shared", "x", "y", "z")}, k
    keys = [question_key(r.question) for s in all_sets(fed) for r in s]
    assert len(keys) == len(set(keys))


def test_domain_skew_between_0_and_1_spreads_the_iid_part_by_the_pool():
    recs = world({"shared": 600, "x": 200, "y": 200})
    dom = {r.id: r.domain for r in recs}
    fed = federated_split(recs, 2, 80, 20, 50, seed=0, domain_skew=0.2)
    # 20 own + 80 iid (48 shared, 16 x, 16 y)
    assert [dict(Counter(dom[r.id] for r in c.train + c.test)) for c in fed.clients] == [
        {"shared": 48, "x": 36, "y": 16}, {"shared": 48, "x": 16, "y": 36}]


def test_domain_skew_between_0_and_1_needs_a_domain_per_client():
    recs = world({"shared": 100, "x": 100})
    with pytest.raises(ValueError, match=r"^domain_skew=0.5: client 1 has no domain of its own \(the records have 1 "
                                         r"domains besides 'shared' for 2 clients\)$"):
        federated_split(recs, 2, 0, 1, 10, seed=0, domain_skew=0.5)  # 0.5 of 1 record rounds to 0 own


def test_check_mixture_errors_name_the_key():
    def err(mixture, names=("c1", "c2")) -> str:
        with pytest.raises(MixtureError) as e:
            check_mixture(mixture, list(names))
        return str(e.value)

    assert err(Mixture(train={"c1": {"x": 1.0}})) == ("data.mixture.train: client c2 has no mixture (once "
                                                      "data.mixture.train is set, every client needs one)")
    assert err(Mixture(train={"c1": {"x": 1.0}, "c2": {"x": 1.0}, "c9": {"x": 1.0}})) == \
        "data.mixture.train.c9: no such client (clients: c1, c2)"
    assert err(Mixture(train={"c1": {"x": 0.5, "y": 0.4}, "c2": {"x": 1.0}})) == \
        "data.mixture.train.c1: shares sum to 0.9, they must sum to 1"
    assert err(Mixture(train={"c1": {"x": 1.0}, "c2": {"x": 1.0}}, test={"c2": {"x": 1.5, "y": -0.5}})) == \
        "data.mixture.test.c2.x: share 1.5 is not a number in [0, 1]"
    assert err(Mixture(train={"c1": {"x": 1.0}, "c2": {"x": float("nan")}})) == \
        "data.mixture.train.c2.x: share nan is not a number in [0, 1]"
    assert err(Mixture(train={"c1": {"x": 1.0}, "c2": {"x": 1.0}}, public={"x": 0.5})) == \
        "data.mixture.public: shares sum to 0.5, they must sum to 1"
    assert err(Mixture(train={"c1": {"x": 1.0}, "c2": {}})) == "data.mixture.train.c2: shares sum to 0, they must sum to 1"


def test_mixture_split_refuses_unknown_domains_and_too_few_records():
    with pytest.raises(MixtureError, match=r"^data.mixture.train.c1.w: unknown domain \(the records' domains: "
                                           r"shared, x, y, z\)$"):
        federated_split(RECS, 1, 10, 10, 10, seed=0, mixture=Mixture(train={"c1": {"w": 1.0}}))
    with pytest.raises(MixtureError) as e:
        federated_split(RECS, 2, 100, 101, 10, seed=0, mixture=Mixture(train={"c1": {"x": 1.0}, "c2": {"y": 1.0}},
                                                                       test={"c2": {"x": 1.0}}))
    assert str(e.value) == ("data.mixture.test.c2.x: domain x is asked for 302 records in all (train.c1 100, "
                            "test.c1 101, test.c2 101), the records have 300")
    federated_split(RECS, 2, 100, 100, 10, seed=0, mixture=Mixture(train={"c1": {"x": 1.0}, "c2": {"y": 1.0}},
                                                                   test={"c2": {"x": 1.0}}))  # 300 of 300: fits
    with pytest.raises(ValueError, match="domain_skew=0.5 and a mixture: choose one"):
        federated_split(RECS, 1, 10, 10, 10, seed=0, domain_skew=0.5, mixture=Mixture(train={"c1": {"x": 1.0}}))


# ------------------------------------------------------------ through the config: data.mixture

V5_ARGS = ["conf=demo.yaml", "quiet=true", "data.domain_skew=0",
           *[f"data.mixture.train.{n}.{d}=0.5" for n, d in (("client1", "calendar"), ("client2", "kitchen"),
                                                             ("client3", "market")) for d in (d, "shared")],
           "data.mixture.public.shared=0.5", "data.mixture.public.calendar=0.1666667",
           "data.mixture.public.kitchen=0.1666667", "data.mixture.public.market=0.1666667"]


def test_demo_world_with_the_v5_mixture():
    """The demo world's records split as the issue's v5 default asks: half own domain, half shared for each
    client's train and test; the public set half shared, half the client domains."""
    cfg = load_config(V5_ARGS)
    dom = {r.id: r.domain for r in prepared_records(cfg)}
    data = load_data(cfg)
    got = [(dict(Counter(dom[r.id] for r in c.train)), dict(Counter(dom[r.id] for r in c.test))) for c in data.clients]
    assert got == [({"calendar": 100, "shared": 100}, {"calendar": 150, "shared": 150}),
                   ({"kitchen": 100, "shared": 100}, {"kitchen": 150, "shared": 150}),
                   ({"market": 100, "shared": 100}, {"market": 150, "shared": 150})]
    assert dict(Counter(dom[r.id] for r in data.public)) == {"shared": 300, "calendar": 100, "kitchen": 100,
                                                             "market": 100}
    ids = [r.id for c in data.clients for r in c.train + c.test] + [r.id for r in data.public]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("extra, message", [
    (["data.mixture.train.client1.shared=0.4"], "config key 'data.mixture.train.client1': shares sum to 0.9, "
                                                "they must sum to 1"),
    (["data.mixture.train.client4.shared=1"], "config key 'data.mixture.train.client4': no such client "
                                              "(clients: client1, client2, client3)"),
    (["data.domain_skew=0.5"], "config key 'data.domain_skew': 0.5 and data.mixture both shape the split; "
                               "set domain_skew to 0"),
])
def test_config_refuses_a_bad_mixture_in_one_line(extra, message):
    with pytest.raises(ConfigError) as e:
        load_config(V5_ARGS + extra)
    assert str(e.value) == message


def test_config_mixture_needs_train_and_known_domains():
    with pytest.raises(ConfigError) as e:
        load_config(["conf=smoke.yaml", "data.mixture.public.shared=1"])
    assert str(e.value).startswith("config key 'data.mixture.train': required once")
    with pytest.raises(ConfigError) as e:  # domains are checked against the records, at data load
        load_data(load_config(V5_ARGS + ["data.mixture.train.client1.foo=0"]))
    assert str(e.value) == ("config key 'data.mixture.train.client1.foo': unknown domain (the records' domains: "
                            "calendar, kitchen, market, shared) (data.name=synthetic)")
    with pytest.raises(ConfigError) as e:
        load_data(load_config(V5_ARGS + ["data.mixture.test.client3.shared=1", "data.test_per_client=1000"]))
    assert str(e.value).startswith("config key 'data.mixture.test.client3.shared': domain shared is asked for 2600 "
                                   "records in all (train.client1 100, train.client2 100, train.client3 100, "
                                   "test.client1 500, test.client2 500, test.client3 1000, public 300), the records "
                                   "have ")
