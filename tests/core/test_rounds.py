"""The round loop (ladalit.core.rounds): what one round does in which order, which rounds are evaluated, the
rows and counters it gathers, and a checkpoint that puts every role back."""
from types import SimpleNamespace

from ladalit.core.channel import Channel
from ladalit.core.results import Results
from ladalit.core.rounds import RoundLoop, gather_rows, merge_counters, restore, run_rounds, snapshot


class Server:
    def __init__(self, log):
        self.log, self.results, self.trained = log, Results(), 0

    def run_round(self, t):
        self.log.append(("round", t))
        self.trained += 1
        self.results.add_train(t, "server", loss=float(t))

    def counters(self):
        return {"nonfinite_skipped": [{"round": 9}], "responses_generated": 2, "bound_hits": {"client1": {"lo": 1}}}

    def state_dict(self):
        return {"participant": {"w": self.trained}, "trained": self.trained}

    def load_state_dict(self, state):
        self.trained = state["trained"]
        assert state["participant"] == {"w": self.trained}


def cfg(rounds, every_round):
    return SimpleNamespace(rounds=rounds, eval=SimpleNamespace(every_round=every_round))


def loop_of(log, rounds, every_round):
    results, server = Results(), Server(log)
    return RoundLoop(cfg(rounds, every_round), server, results, Channel(),
                     gather=lambda t: log.append(("gather", t)), evaluate=lambda t: log.append(("evaluate", t)),
                     end=lambda t, s: log.append(("end", t)))


def test_a_round_runs_the_server_then_gathers_evaluates_and_ends_and_only_the_last_is_evaluated():
    log = []
    run_rounds(loop_of(log, 3, False), start=2)
    assert log == [("round", 2), ("gather", 2), ("end", 2), ("round", 3), ("gather", 3), ("evaluate", 3), ("end", 3)]
    log.clear()
    run_rounds(loop_of(log, 2, True), start=1)
    assert [e for e in log if e[0] == "evaluate"] == [("evaluate", 1), ("evaluate", 2)]


def test_gathering_takes_every_roles_rows_in_order_and_empties_them():
    a, b, results = Server([]), Server([]), Results()
    a.run_round(1), b.run_round(1), b.run_round(2)
    gather_rows(results, [b, a])
    assert [r["loss"] for r in results.train] == [1.0, 2.0, 1.0]
    assert a.results.train == [] and b.results.train == []


def test_counters_are_the_clients_in_order_then_the_servers():
    clients = {"client1": {"nonfinite_skipped": [{"round": 1}], "responses_generated": 3, "bound_hits": {"hi": 2}},
               "client2": {"nonfinite_skipped": [], "responses_generated": 4, "bound_hits": None}}
    got = merge_counters(clients, Server([]).counters())
    assert got == {"nonfinite_skipped": [{"round": 1}, {"round": 9}], "responses_generated": 9,
                   "bound_hits": {"client:client1": {"hi": 2}, "server:client1": {"lo": 1}}}
    assert merge_counters({"c": {"nonfinite_skipped": []}}, {"nonfinite_skipped": []}) == {"nonfinite_skipped": []}


def test_a_snapshot_puts_every_role_the_results_and_the_channel_back():
    server, results, channel = Server([]), Results(), Channel()
    server.run_round(1)
    gather_rows(results, [server])
    state = snapshot({"server": server}, results, channel, {"n": 1})
    assert state["participants"] == {"server": {"w": 1}} and "participant" not in state["roles"]["server"]
    again, results2, channel2 = Server([]), Results(), Channel()
    restore(state, {"server": again}, results2, channel2)
    assert again.trained == 1 and results2.train == results.train


def test_a_methods_own_counters_are_merged_key_by_key_at_every_depth():
    clients = {"c1": {"nonfinite_skipped": [], "fedmkt": {"chosen": {"1:c1": 0.5}}, "rstar": {"1:c1": {"n": 1}}},
               "c2": {"nonfinite_skipped": [], "fedmkt": {"chosen": {"1:c2": 0.25}}, "rstar": {"1:c2": {"n": 2}}}}
    own = {"nonfinite_skipped": [], "fedmkt": {"chosen": {"1:server": {"c1": 1.0}}, "aligned": {"1:server": None}}}
    assert merge_counters(clients, own) == {
        "nonfinite_skipped": [], "rstar": {"1:c1": {"n": 1}, "1:c2": {"n": 2}},
        "fedmkt": {"chosen": {"1:c1": 0.5, "1:c2": 0.25, "1:server": {"c1": 1.0}}, "aligned": {"1:server": None}}}
    assert clients["c1"]["fedmkt"] == {"chosen": {"1:c1": 0.5}}  # the roles' own counters are left as they are
