"""The deployment's server side (ladalit.federation.server) with client sites reached by bytes only
(LocalSites: each message handled as a fresh process would, from the site's own disk) gives the results of
the in-process run; failures follow federation.on_client_failure; a resumed server and its sites agree."""
import json

import pytest

from ladalit.core.channel import Channel
from ladalit.core.config import ConfigError, load_config
from ladalit.core.messages import ClientRound, decode, encode
from ladalit.core.transport import ClientFailure
from ladalit.federation.prepare import prepare_sites
from ladalit.federation.server import serve
from ladalit.federation.site import ClientSite, read_records
from ladalit.federation.transport import LocalSites, Lost
from ladalit.run import execute

SAME = ("accuracy", "selection", "selected_per_round", "train", "reward_scale", "bound_hits", "nonfinite_skipped",
        "accuracy_by_domain")


def same(a, b) -> bool:
    """Equal, NaN included (an untrained filter's score means are NaN on both sides)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def smoke(out, *extra):
    return load_config(["conf=smoke.yaml", f"output_dir={out}", "quiet=true", *extra])


def local_federation(tmp, cfg, transport_cls=LocalSites, **kw):
    nodes = prepare_sites(cfg, tmp / "fed")
    sites = {f"node{i}": ClientSite(n) for i, n in enumerate(nodes.values())}
    return transport_cls(Channel(keep_payloads=True), sites, cfg.federation.on_client_failure, **kw)


class LosesClient2InRound2(LocalSites):
    """client2 stops answering at its first message of round 2."""

    def carry(self, requests, timeout_s=None):
        if decode(next(iter(requests.values()))).round != 2 or "client2" not in requests:
            return super().carry(requests)
        out = super().carry({k: d for k, d in requests.items() if k != "client2"})
        return {k: out[k] if k != "client2" else Lost("gone", len(requests[k])) for k in requests}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The in-process run, and the deployment: client2 lost in round 2 under `raise` (the run stops), then
    the server resumed (resume=true) with every site back; the deployment's results are the resumed run's."""
    tmp = tmp_path_factory.mktemp("sites")
    _, inproc = execute(smoke(tmp, "run_name=inproc"), quiet=True)
    cfg = smoke(tmp, "run_name=sites", "federation.protocol=per_round")
    lossy = local_federation(tmp, cfg, LosesClient2InRound2)
    with pytest.raises(ClientFailure) as failed:
        serve(cfg, lossy, tmp / "fed" / "server")
    stopped = {"error": str(failed.value), "checkpoint": (tmp / "sites" / "checkpoint.pt").is_file(),
               "results": json.loads((tmp / "sites" / "results.json").read_text())}
    # client1's site had gone on into round 2: it starts round 2 again from its copy of round 1
    cfg = smoke(tmp, "run_name=sites", "federation.protocol=per_round", "resume=true")
    transport = LocalSites(Channel(keep_payloads=True), {k: ClientSite(a.node_config) for k, a in lossy.address.items()})
    run_dir, deployed = serve(cfg, transport, tmp / "fed" / "server")
    transport.channel.payloads += lossy.channel.payloads
    return tmp, inproc, deployed, transport, run_dir, stopped


def test_deployment_gives_the_in_process_results(runs):  # resumed once: see the fixture
    _, inproc, deployed, *_ = runs
    for key in SAME:
        assert same(deployed[key], inproc[key]), key
    assert deployed["engine"] == "LocalSites" and deployed["failed_clients"] == []
    # the clients' cells came from their sites (their predictions stayed there), the server's from its own
    assert {r["participant"] for r in deployed["accuracy_by_domain"]} == {"server", "client1", "client2"}
    assert not any(p.startswith("client") for p in {json.loads(x)["participant"]
                                                  for x in (runs[4] / "predictions.jsonl").read_text().splitlines()})


def test_report_shows_answer_bytes_sent_and_needed(runs):
    _, inproc, deployed, *_ = runs
    for row in inproc["communication"]:  # Algorithm 1's exchange sends only what the receiver uses
        assert row["answers_sent"] == row["answers_needed"]
    rounds = [r for r in deployed["communication"] if r["round"] >= 1]
    assert all(r["answers_sent"] >= r["answers_needed"] for r in rounds)
    assert sum(r["answers_sent"] for r in rounds) > sum(r["answers_needed"] for r in rounds) > 0
    needed = {(r["round"], r["direction"], r["client"]): r["answers_needed"] for r in inproc["communication"]}
    assert {k: v for k, v in needed.items() if v} == {(r["round"], r["direction"], r["client"]): r["answers_needed"]
                                                     for r in rounds if r["answers_needed"]}


def test_no_private_text_or_id_crosses(runs):
    tmp, _, _, transport, *_ = runs
    private = [x for name in ("client1", "client2") for f in ("train.jsonl", "test.jsonl")
               for x in read_records(tmp / "fed" / name / f)]
    assert transport.channel.payloads and private
    wire = b"".join(transport.channel.payloads)
    for x in private:  # as the JSON header holds a string: quoted (an id is not a prefix of another)
        assert json.dumps(x.id).encode() not in wire, x.id
        assert json.dumps(x.question, ensure_ascii=False)[1:-1].encode() not in wire, x.id
    public = read_records(tmp / "fed" / "server" / "public.jsonl", require_answer=False)
    assert json.dumps(public[0].id).encode() in wire  # the scan sees ids where they do cross


def test_site_refuses_a_round_it_cannot_be_in(runs):
    tmp, *_ = runs
    site = ClientSite({"name": "client1", "data": str(tmp / "fed" / "client1")})
    reply = decode(site.handle_bytes(encode(ClientRound(7, [], [], []))))
    assert reply.kind == "refused" and "no state of round 6" in reply.why


def test_raise_stops_with_the_last_round_checkpointed_and_resume_agrees(runs):
    _, inproc, deployed, _, _, stopped = runs
    assert stopped["error"] == "client 'client2' failed in round 2: gone" and stopped["checkpoint"]
    assert {r["round"] for r in stopped["results"]["accuracy"]} == {0, 1}
    for key in SAME:  # the resumed deployment ends where the uninterrupted in-process run does
        assert same(deployed[key], inproc[key]), key


def test_a_lada_deployment_needs_per_round(tmp_path):
    with pytest.raises(ConfigError, match="federation.protocol"):
        serve(smoke(tmp_path), None, tmp_path)


@pytest.mark.parametrize("method", ["standalone", "fedkd"])  # every method with roles beside LaDa (the fixture)
def test_baselines_on_a_deployment_give_the_in_process_results(tmp_path, method):
    _, inproc = execute(smoke(tmp_path, f"method={method}", "run_name=inproc"), quiet=True)
    cfg = smoke(tmp_path, f"method={method}", "run_name=deployed")
    _, deployed = serve(cfg, local_federation(tmp_path, cfg), tmp_path / "fed" / "server")
    assert same(deployed["accuracy"], inproc["accuracy"]) and deployed["nonfinite_skipped"] == []
    # the same roles over the same round loop: the same rows in the same order, the same messages counted
    assert same(deployed["train"], inproc["train"]) and len(inproc["train"]) > 0
    kinds = lambda out: [(r["round"], r["direction"], r["client"]) for r in out["communication"] if r["round"] > 0]  # noqa: E731
    assert kinds(deployed) == kinds(inproc) != []


@pytest.mark.parametrize("method", ["sft_cot", "socratic_cot", "rstar"])
def test_reasoning_baselines_on_a_deployment_give_the_in_process_results(tmp_path, monkeypatch, method):
    """With canned generations that state answers (the smoke models state none), so that targets and trajectories
    cross; rStar's sites reload the round's trajectories from disk between its two messages."""
    from ladalit.baselines import reasoning
    from tests.baselines.test_reasoning import BASE, Canned
    monkeypatch.setattr(reasoning, "generate", Canned())
    extra = [a for a in BASE if not a.startswith(("conf=", "quiet="))] + [f"method={method}"]
    _, inproc = execute(smoke(tmp_path, *extra, "run_name=inproc"), quiet=True)
    cfg = smoke(tmp_path, *extra, "run_name=deployed")
    _, deployed = serve(cfg, local_federation(tmp_path, cfg), tmp_path / "fed" / "server")
    assert same(deployed["accuracy"], inproc["accuracy"]) and same(deployed["train"], inproc["train"])
    assert any(r.get("targets") for r in inproc["train"])  # something was learnt from what crossed
    stats = {"sft_cot": "server_rationales", "socratic_cot": "socratic_chains", "rstar": "rstar"}[method]
    assert same(deployed[stats], inproc[stats]) and deployed["nonfinite_skipped"] == []
    kinds = lambda out: [(r["round"], r["direction"], r["client"]) for r in out["communication"] if r["round"] > 0]  # noqa: E731
    assert kinds(deployed) == kinds(inproc)


@pytest.mark.parametrize("weights", ["global", "local"])
def test_wasp_on_a_deployment_gives_the_in_process_results(tmp_path, monkeypatch, weights):
    """With tests/baselines/test_wasp.py's canned LLM, so that samples, votes and weights cross; a site reloads
    what it holds from disk between the round's two messages."""
    from ladalit.baselines import wasp
    from tests.baselines.test_wasp import BASE, CannedAnswers, FakeServer
    monkeypatch.setattr(wasp, "generate", FakeServer())
    monkeypatch.setattr(wasp, "ResponseCache", CannedAnswers)
    extra = [a for a in BASE if not a.startswith(("conf=", "quiet="))] + [
        "method=wasp", "wasp.samples_per_round=20", "wasp.top_q=3", "wasp.pool_size=3", f"wasp.weights={weights}",
        "server.train.max_length=508"]
    _, inproc = execute(smoke(tmp_path, *extra, "run_name=inproc"), quiet=True)
    cfg = smoke(tmp_path, *extra, "run_name=deployed")
    _, deployed = serve(cfg, local_federation(tmp_path, cfg), tmp_path / "fed" / "server")
    for key in ("accuracy", "train", "selection", "wasp", "responses_generated", "nonfinite_skipped"):
        assert same(deployed[key], inproc[key]), key
    assert any(r.get("synthetic") for r in inproc["train"])  # something was learnt from what crossed


def test_fedmkt_on_a_deployment_gives_the_in_process_results(tmp_path, monkeypatch):
    """With tests/baselines/test_fedmkt.py's canned answers and client1 on its own byte-level BPE: the
    vocabularies cross once, the sites keep the server's top-k and their own between messages."""
    from ladalit.baselines import fedmkt
    from tests.baselines.test_fedmkt import SHORT, CannedAnswers, synthetic_bpe_dir
    monkeypatch.setattr(fedmkt, "ResponseCache", CannedAnswers)
    extra = ["method=fedmkt", "eval.shots=[0]", "eval.limit=4", "data.public_size=8", "data.train_per_client=8", *SHORT]
    bpe = synthetic_bpe_dir(tmp_path, smoke(tmp_path, *extra))
    extra.append(f"clients.client1.model.tokenizer={bpe}")
    _, inproc = execute(smoke(tmp_path, *extra, "run_name=inproc"), quiet=True)
    cfg = smoke(tmp_path, *extra, "run_name=deployed")
    _, deployed = serve(cfg, local_federation(tmp_path, cfg), tmp_path / "fed" / "server")
    for key in ("accuracy", "train", "fedmkt", "responses_generated", "nonfinite_skipped"):
        assert same(deployed[key], inproc[key]), key
    assert {r["participant"] for r in inproc["train"] if "kd_loss" in r} == {"server", "client1", "client2"}
