"""Every message that crosses between the server and a client: one small dataclass per kind, one codec.

A message carries the round it belongs to, so a receiver can refuse one from another round. `encode`
turns a message into the bytes that cross (its plain fields as JSON, its tensors as safetensors); `decode`
reads them back and rebuilds the dataclass; neither format can carry code. Nothing else crosses: the
transport (ladalit.core.transport) counts exactly these bytes.

LaDa's protocol (ladalit.method.lada drives it; ladalit.method.client answers), server → client ⇒ reply:

    BeginRound                       ⇒ Ready          (round 1: the client's ❶ reference SFT)
    SelectCandidates(candidate ids)  ⇒ SelectedIds    (the client's filter picks, Eq. 10; round 1: ❷)
    ServerAnswers(y^s, cut)          ⇒ Distilled      (MARD update, rewards ❸–❺, filter fit ❻❼)
    EndClientRound                   ⇒ Ready
    AskAnswers(ids)                  ⇒ ClientAnswers  (y^k for the samples the server selected for this pair)
    EndRound                         ⇒ Ready

With `federation.protocol: per_round` (what a deployment on Flower needs: a small constant number of
messages per client per round, ladalit.federation) the clients' phase is one exchange, and the server's
AskAnswers names all of D_p once:

    ClientRound(candidate batches, y^s for all of D_p)  ⇒ ClientRoundDone(the selected ids per batch)
    AskAnswers(every id of D_p)                          ⇒ ClientAnswers
    EndRound                                             ⇒ Ready

The other methods with roles (ladalit/registry.py), server → client ⇒ reply:

    Standalone    LocalRound(t)                                 ⇒ Ready
    FedKD         LocalRound(1, y^s on all of D_p); LocalRound(t) ⇒ Ready
    SFT-CoT       ServerRationales(1, ids, targets); LocalRound(t) ⇒ Ready   (Socratic-CoT: SocraticChains)
    rStar         AskTrajectories(t, ids)                       ⇒ PartialTrajectories(ids, partials)
                  CompletionAnswers(t, ids, letters)            ⇒ Ready
    WASP          SyntheticSamples(t, questions, targets)       ⇒ Votes
                  SampleWeights(t, w) (weights=global), else EndRound(t) ⇒ Ready
    FedMKT        PublicTexts(t, new answers, round 1: vocab)   ⇒ TopKLogits (round 1: with its vocab)
                  TopKLogits(t, the server's, when changed)     ⇒ Ready
                  EndRound(t)                                   ⇒ Ready

"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

import safetensors.torch
import torch

KINDS: dict[str, type] = {}


def message(kind: str):
    """Register a dataclass as a message kind (its name on the wire and in communication.csv)."""
    def wrap(cls):
        cls = dataclass(cls)
        cls.kind = kind
        KINDS[kind] = cls
        return cls
    return wrap


class ProtocolError(RuntimeError):
    """A message the receiver cannot accept: an unknown kind, or one from another round."""


def encode(msg) -> bytes:
    """4 bytes of header length, the header (JSON: the kind and the plain fields), then the tensor fields
    as safetensors. Both formats hold data only: decoding runs no code."""
    plain, tensors = {}, {}
    for name, v in as_dict(msg).items():
        if isinstance(v, torch.Tensor):
            tensors[name] = v.detach().cpu().contiguous()
        else:
            plain[name] = v
    head = json.dumps({"kind": msg.kind, "fields": plain, "tensors": sorted(tensors)},
                      ensure_ascii=False, separators=(",", ":")).encode()
    return len(head).to_bytes(4, "big") + head + (safetensors.torch.save(tensors) if tensors else b"")


def decode(data: bytes):
    n = int.from_bytes(data[:4], "big")
    head = json.loads(data[4: 4 + n].decode())
    if head["kind"] not in KINDS:
        raise ProtocolError(f"unknown message kind {head['kind']!r}")
    tensors = safetensors.torch.load(data[4 + n:]) if head["tensors"] else {}
    return KINDS[head["kind"]](**head["fields"], **tensors)


def as_dict(msg) -> dict:
    """The message's fields by name (the objects themselves: no copy, unlike dataclasses.asdict)."""
    return {f.name: getattr(msg, f.name) for f in fields(msg)}


# ----------------------------------------------------------------------------- LaDa, server -> client
@message("begin_round")
class BeginRound:
    round: int


@message("select_candidates")
class SelectCandidates:
    round: int
    batch: int
    ids: list[str]  # one candidate batch of D_p


@message("server_answers")
class ServerAnswers:
    """The server's reasoning answers y^s, for the ids the client selected (LaDa) or for all of D_p (FedKD,
    FedMKT). `cut`: the positions of answers cut at max_new_tokens (the receiver's loss appends no EOS)."""
    round: int
    texts: list[str]
    cut: list[int] = field(default_factory=list)
    batch: int = -1


@message("client_round")
class ClientRound:
    """per_round: the client's whole phase of round t in one message: the candidate batches of D_p (ids, in
    stream order) and the server's answers y^s for every id of `ids`, of which the client uses those it selects."""
    round: int
    batches: list[list[str]]
    ids: list[str]
    texts: list[str]
    cut: list[int] = field(default_factory=list)


@message("end_client_round")
class EndClientRound:
    round: int


@message("ask_answers")
class AskAnswers:
    """Send me your answers y^k for these public ids (the server's selection for this pair)."""
    round: int
    ids: list[str]


@message("end_round")
class EndRound:
    round: int


# ----------------------------------------------------------------------------- LaDa, client -> server
@message("ready")
class Ready:
    round: int


@message("selected_ids")
class SelectedIds:
    round: int
    batch: int
    ids: list[str]


@message("client_round_done")
class ClientRoundDone:
    round: int
    selected: list[list[str]]  # per candidate batch, the ids the client's filter picked


@message("distilled")
class Distilled:
    round: int
    batch: int


@message("client_answers")
class ClientAnswers:
    round: int
    texts: list[str]
    cut: list[int] = field(default_factory=list)


# ----------------------------------------------------------------------------- the baselines
@message("public_texts")
class PublicTexts:
    """FedMKT: start round t. `texts`: the server's answers on D_p, the texts both sides score (only when they are
    new; empty: keep the last); `vocab`: the server's token strings (round 1), which the client aligns with."""
    round: int
    texts: list[str] = field(default_factory=list)
    vocab: list[str] = field(default_factory=list)


@message("topk_logits")
class TopKLogits:
    """FedMKT: per public sample, the top-k logits of a participant's distribution over its answer tokens;
    `vocab`: the sender's token strings, the first time a client sends (the server aligns with them)."""
    round: int
    ids: list[str]
    lengths: torch.Tensor
    token_ids: torch.Tensor
    values: torch.Tensor
    indices: torch.Tensor
    ce: torch.Tensor
    vocab: list[str] = field(default_factory=list)


@message("synthetic_samples")
class SyntheticSamples:
    """WASP: the server's synthetic questions and its targets for them."""
    round: int
    ids: list[str]
    questions: list[str]
    options: list[list[str]]
    targets: list[str]


@message("votes")
class Votes:
    round: int
    votes: torch.Tensor


@message("sample_weights")
class SampleWeights:
    round: int
    weights: torch.Tensor


@message("server_rationales")
class ServerRationales:
    """SFT-CoT: the LLM's chain-of-thought targets for public ids."""
    round: int
    ids: list[str]
    targets: list[str]


@message("socratic_chains")
class SocraticChains(ServerRationales):
    """Socratic-CoT: the LLM's sub-question chains for public ids."""


@message("ask_trajectories")
class AskTrajectories:
    """rStar: start round t; reply with your reasoning trajectories on these public questions, cut part-way."""
    round: int
    ids: list[str]


@message("partial_trajectories")
class PartialTrajectories:
    """rStar: a client's reasoning trajectories cut part-way, for the server to complete."""
    round: int
    ids: list[str]
    partials: list[str]


@message("completion_answers")
class CompletionAnswers:
    round: int
    ids: list[str]
    answers: list[str]


# ----------------------------------------------------------------------------- a deployment (ladalit.federation)
# The experimenter's messages around the protocol when the clients are other processes or hosts (Flower):
# what the run is, who is where, and each client's rows of results. None carries private text or ids.
@message("join")
class Join:
    """The run as a client needs it: the resolved config (it names no private path) and D_p; the same for
    every node. The reply (RoundReport) names the client, from the node's own config."""
    round: int
    run: str  # the run's name: the site keeps one state directory per run
    config: str
    public: list[dict]
    evaluate: bool  # round 0: evaluate yourself before any transfer


@message("refused")
class Refused:
    """The client cannot take the message (another round, no such run, bad local data): why, in one line."""
    round: int
    client: str
    why: str


@message("round_report")
class RoundReport:
    """The reply to Join and to the client's last message of a round (EndRound; Standalone's and FedKD's
    LocalRound) on a deployment: the client's rows of results of the round (Results.state_dict(), with its
    scores when it evaluated itself; its private predictions stay with it) and its counters: skipped
    non-finite steps, answers generated, its filter's bound hits."""
    round: int
    client: str
    results: dict
    counters: dict


@message("local_round")
class LocalRound:
    """Standalone and FedKD on a deployment: train round t on what you hold; FedKD's round 1 brings the
    LLM's answers on all of D_p (`texts`)."""
    round: int
    texts: list[str] = field(default_factory=list)


# the message that starts a client's round (a site restores round t-1), and a client's last message of a round (a
# site replies with its RoundReport); SFT-CoT's and Socratic-CoT's round 1 is one message, as LocalRound is
ROUND_STARTS = (ClientRound, LocalRound, ServerRationales, AskTrajectories, SyntheticSamples, PublicTexts)
ROUND_ENDS = (EndRound, LocalRound, ServerRationales, CompletionAnswers, SampleWeights)
