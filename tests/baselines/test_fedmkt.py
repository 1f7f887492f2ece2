"""FedMKT: token alignment, vocabulary mapping, top-k KD, dual minimum cross-entropy, and an
end-to-end run on conf/smoke.yaml where only sparse top-k logits cross the channel."""
import math

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ladalit.baselines import fedmkt
from ladalit.core.channel import Channel
from ladalit.core.messages import as_dict, decode
from ladalit.core.config import load_config
from ladalit.core.experiment import build_experiment
from ladalit.baselines import token_alignment
from ladalit.baselines.fedmkt import aligned_target, min_ce_choice, sequence_ce, sparse_kd_loss, sparse_target, topk_logits
from ladalit.baselines.token_alignment import (align_tokens, levenshtein, map_vocab_strings, token_strings, token_table,
                                              vocab_mapping)
from ladalit.core.results import Results
from ladalit.core.rounds import run_in_process

TEXT = "the cat sat."
# shorter sequences keep the end-to-end runs quick (prompts lose tokens from the left)
SHORT = ["server.train.max_length=128", "clients.client1.train.max_length=128", "clients.client2.train.max_length=128"]


# ----------------------------------------------------------------------------- hand-made tokenizers
def char_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level (GPT-2 style, "Ġ" = space) with no merges: one token per character."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", *alphabet])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def bpe_tokenizer() -> PreTrainedTokenizerFast:
    """Metaspace BPE (Llama style, "▁" = space) with the merges t+h, th+e, c+a, ca+t, ▁+cat."""
    merges = [("t", "h"), ("th", "e"), ("c", "a"), ("ca", "t"), ("\u2581", "cat")]
    base = ["</s>", "<pad>", "\u2581", ".", *"abcdefghijklmnopqrstuvwxyz"]
    vocab = {t: i for i, t in enumerate(base + ["th", "the", "ca", "cat", "\u2581cat"])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="never")
    tok.decoder = decoders.Metaspace(prepend_scheme="never")
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>")


def tokens(tok, text=TEXT):
    return tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])


# ----------------------------------------------------------------------------- alignment
def test_the_hand_made_tokenizers_split_as_designed():
    assert tokens(bpe_tokenizer()) == ["the", "\u2581cat", "\u2581", "s", "a", "t", "."]
    assert tokens(char_tokenizer()) == list("the") + ["\u0120"] + list("cat") + ["\u0120"] + list("sat.")


def test_identical_tokenizers_give_identity_alignment_and_mapping():
    for make in (char_tokenizer, bpe_tokenizer):
        a, b = make(), make()
        t = tokens(a)
        assert align_tokens(t, tokens(b)) == [(i, i) for i in range(len(t))]
        assert torch.equal(vocab_mapping(a, b), torch.arange(len(a)))


def test_char_level_vs_bpe_alignment_by_hand():
    # BPE:  "the" " cat" " " "s" "a" "t" "."          (offsets 0 3 7 8 9 10 11)
    # char: t h e " " c a t " " s a t .                (offsets 0 .. 11)
    # Equal strings at equal offsets: " "@7, s@8, a@9, t@10, .@11. "the" and " cat" have no
    # equal partner; the shifted " "@3 ties on raw cost and loses on the offset tie-break.
    expected = [(2, 7), (3, 8), (4, 9), (5, 10), (6, 11)]
    assert align_tokens(tokens(bpe_tokenizer()), tokens(char_tokenizer())) == expected
    assert align_tokens(tokens(char_tokenizer()), tokens(bpe_tokenizer())) == [(j, i) for i, j in expected]
    # the same through the per-id surface tables the runner uses
    bpe, char = bpe_tokenizer(), char_tokenizer()
    sa = [token_strings(bpe)[i] for i in bpe(TEXT, add_special_tokens=False)["input_ids"]]
    sb = [token_strings(char)[i] for i in char(TEXT, add_special_tokens=False)["input_ids"]]
    assert sa == ["the", " cat", " ", "s", "a", "t", "."]
    assert align_tokens(sa, sb, normalise=False) == expected


def test_two_bpe_tokenisations_with_different_merges():
    a = ["the", "Ġcat", "Ġsat", "."]
    b = ["th", "e", "\u2581cat", "\u2581s", "at", "."]
    assert align_tokens(a, b) == [(1, 2), (3, 5)]
    # without `exact` the substituted (unequal) pairs come back too
    assert set(align_tokens(a, b)) <= set(align_tokens(a, b, exact=False))
    assert align_tokens([], b) == [] and align_tokens(a, []) == []


def test_alignment_recovers_after_the_texts_drift():
    # an unknown character spelled differently on one side: later tokens still pair up
    a = ["Ġx", "<unk>", "Ġthe", "Ġcat"]
    b = ["Ġx", "é", "Ġthe", "Ġcat"]
    assert align_tokens(a, b) == [(0, 0), (2, 2), (3, 3)]


def test_vocab_mapping_by_hand():
    bpe, char = bpe_tokenizer(), char_tokenizer()
    b2c = vocab_mapping(bpe, char)
    c2b = vocab_mapping(char, bpe)
    bid, cid = bpe.convert_tokens_to_ids, char.convert_tokens_to_ids
    assert b2c.shape == (len(bpe),) and c2b.shape == (len(char),)
    # exact after normalisation
    assert b2c[bid("s")] == cid("s") and b2c[bid("\u2581")] == cid("\u0120")
    assert c2b[cid("\u0120")] == bid("\u2581") and c2b[cid("t")] == bid("t")
    # special tokens by role
    assert b2c[bpe.eos_token_id] == char.eos_token_id and c2b[char.pad_token_id] == bpe.pad_token_id
    # fallback: "the" -> "t" (edit distance 2, longest common prefix), " cat" -> " " (3, prefix " ")
    assert b2c[bid("the")] == cid("t") and b2c[bid("\u2581cat")] == cid("\u0120")
    assert levenshtein("kitten", "sitting") == 3


def test_a_vocabulary_that_crossed_as_strings_maps_as_its_tokenizer_does():
    """What FedMKT's roles send once (each side's token strings) is all the other side needs to map its ids."""
    bpe, char = bpe_tokenizer(), char_tokenizer()
    token_alignment._MAPPINGS.clear()
    sent = token_alignment.table_of_strings(list(token_table(bpe).strings))
    assert sent.strings == token_table(bpe).strings and sent.digest == token_table(bpe).digest
    assert torch.equal(token_alignment.table_mapping(sent, token_table(char)), vocab_mapping(bpe, char))
    token_alignment._MAPPINGS.clear()
    assert torch.equal(token_alignment.table_mapping(token_table(char), sent), vocab_mapping(char, bpe))


def test_map_vocab_strings_prefers_exact_then_lowest_id():
    m = map_vocab_strings(["ab", "zz", "abc"], ["x", "ab", "ab", "abd"], window=2)
    # "ab": exact, the lower of the two ids; "zz": the smallest edit distance ("x", 2);
    # "abc": "ab" and "abd" both at distance 1 with a common prefix of 2 -> the lower id
    assert m.tolist() == [1, 0, 1]


def test_vocab_mapping_disk_cache(tmp_path):
    bpe, char = bpe_tokenizer(), char_tokenizer()
    token_alignment._MAPPINGS.clear()  # the in-memory cache would answer first
    first = vocab_mapping(bpe, char, cache_dir=tmp_path)
    token_alignment._MAPPINGS.clear()
    files = list(tmp_path.glob("vocab-*.pt"))
    assert len(files) == 1
    torch.save(torch.zeros_like(first), files[0])  # a later call reads the file, not recomputes
    assert torch.equal(vocab_mapping(bpe, char, cache_dir=tmp_path), torch.zeros_like(first))
    token_alignment._MAPPINGS.clear()


# ----------------------------------------------------------------------------- top-k and KD loss
def test_topk_logits_and_sparse_kd_loss_by_hand():
    values, indices = topk_logits(torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]]), 2)
    assert values.tolist() == [[2.0, 1.0]] and indices.tolist() == [[0, 1]]
    assert topk_logits(torch.zeros(3, 4), 16)[0].shape == (3, 4)  # k capped at the vocabulary
    mapping = torch.tensor([3, 0, 1, 2, 2])  # teacher id -> student id
    probs, ids, ok = sparse_target(values, indices, mapping)
    p0 = math.e / (math.e + 1)
    assert ids.tolist() == [[3, 0]] and ok.tolist() == [True]
    assert probs[0].tolist() == pytest.approx([p0, 1 - p0])
    # uniform student over 4 tokens: the loss is log 4 whatever the target
    assert sparse_kd_loss(torch.full((1, 4), -math.log(4)), ids, probs).item() == pytest.approx(math.log(4))
    # student probabilities .1 .2 .3 .4
    logp = torch.tensor([[0.1, 0.2, 0.3, 0.4]]).log()
    expected = -(p0 * math.log(0.4) + (1 - p0) * math.log(0.1))
    assert sparse_kd_loss(logp, ids, probs).item() == pytest.approx(expected)  # 1.2890
    # two teacher tokens mapped to one student token add up
    probs2, ids2, _ = sparse_target(values, indices, torch.tensor([2, 2, 0, 0, 0]))
    assert sparse_kd_loss(logp, ids2, probs2).item() == pytest.approx(-math.log(0.3))
    # masked positions do not count
    lp = torch.stack([logp, torch.full((1, 4), -math.log(4))], 1)  # [1, 2, 4]
    two = sparse_kd_loss(lp, ids.unsqueeze(0).repeat(1, 2, 1), probs.unsqueeze(0).repeat(1, 2, 1),
                         torch.tensor([[True, False]]))
    assert two.item() == pytest.approx(expected)
    # ids outside the mapping (padded embedding rows) lose their mass; all lost -> not ok
    probs3, _, ok3 = sparse_target(torch.tensor([[1.0, 1.0], [1.0, 1.0]]), torch.tensor([[0, 9], [8, 9]]), mapping)
    assert probs3[0].tolist() == pytest.approx([1.0, 0.0]) and ok3.tolist() == [True, False]
    # temperature flattens
    pt, _, _ = sparse_target(values, indices, None, temperature=2.0)
    assert pt[0, 0].item() == pytest.approx(math.exp(0.5) / (math.exp(0.5) + 1))  # logits 2, 1 at T=2


def test_aligned_target_moves_teacher_topk_onto_student_tokens():
    bpe, char = bpe_tokenizer(), char_tokenizer()
    student = torch.tensor(bpe(TEXT, add_special_tokens=False)["input_ids"])   # 7 tokens
    teacher = torch.tensor(char(TEXT, add_special_tokens=False)["input_ids"])  # 12 tokens
    # teacher puts its top-2 on its own next token and on "x"
    values = torch.tensor([[3.0, 1.0]]).repeat(len(teacher), 1).half()
    indices = torch.stack([teacher, torch.full_like(teacher, char.convert_tokens_to_ids("x"))], -1).int()
    ids, probs, n = aligned_target(student, token_table(bpe), teacher, values, indices, token_table(char),
                                   vocab_mapping(char, bpe), 1.0)
    assert n == 5 and ids.shape == (7, 2)
    # unaligned "the", " cat": one-hot on the student's own label
    for i in (0, 1):
        assert ids[i, 0] == student[i] and probs[i].tolist() == [1.0, 0.0]
    p = math.exp(3) / (math.exp(3) + math.exp(1))
    for i in range(2, 7):  # aligned: the teacher's token and "x", mapped to BPE ids
        assert ids[i].tolist() == [student[i].item(), bpe.convert_tokens_to_ids("x")]
        assert probs[i].tolist() == pytest.approx([p, 1 - p], abs=1e-3)


# ----------------------------------------------------------------------------- dual minimum cross-entropy
def test_min_ce_choice_on_hand_made_distributions():
    labels = torch.tensor([[0, 1], [0, 1]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    # model A: p(label) = .5, .5 on both examples; model B: .9, .1 on example 0 and .9, .9 on example 1
    pa = torch.tensor([[[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]] * 2)
    pb = torch.tensor([[[0.9, 0.05, 0.05], [0.45, 0.1, 0.45]], [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05]]])
    ce_a, ce_b = sequence_ce(pa.log(), labels, mask), sequence_ce(pb.log(), labels, mask)
    assert ce_a.tolist() == pytest.approx([math.log(2)] * 2)
    assert ce_b.tolist() == pytest.approx([-(math.log(0.9) + math.log(0.1)) / 2, -math.log(0.9)])
    assert min_ce_choice(ce_a, ce_b).tolist() == [0, 1]  # A (own) on example 0, B (teacher) on 1
    # three candidates, ties keep the lower index
    three = min_ce_choice(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 3.0]), torch.tensor([0.5, 2.0]))
    assert three.tolist() == [2, 0]
    # per character: 2 tokens covering 8 characters
    per_char = sequence_ce(pa.log(), labels, mask, torch.tensor([8, 8]))
    assert per_char.tolist() == pytest.approx([2 * math.log(2) / 8] * 2)
    # masked tokens do not count
    m2 = torch.tensor([[True, False], [True, True]])
    assert sequence_ce(pb.log(), labels, m2)[0].item() == pytest.approx(-math.log(0.9))


# ----------------------------------------------------------------------------- end to end
def synthetic_bpe_dir(tmp_path, cfg):
    """A small byte-level BPE trained on the smoke public texts: client1 then speaks another tokenizer."""
    from ladalit.core.experiment import load_data
    from ladalit.core.prompts import format_response, zero_shot_prompt
    data = load_data(cfg)
    texts = [zero_shot_prompt(x) + format_response(x.rationale, x.answer) for c in data.clients for x in c.train]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")
    path = tmp_path / "bpe-tok"
    fast.save_pretrained(path)
    return path


class CannedAnswers(fedmkt.ResponseCache):
    """The tiny random server of smoke.yaml answers with empty strings (and public records carry
    no answers): stand in sentence-long answers so that whole texts are scored and aligned."""

    def get(self, round, participant, samples):
        from ladalit.core.prompts import format_response
        self.generated += len(samples)
        return [format_response(f"We read: {x.question}", "B") for x in samples]


def test_fedmkt_smoke_run_exchanges_only_sparse_topk(tmp_path, monkeypatch):
    monkeypatch.setattr(fedmkt, "ResponseCache", CannedAnswers)
    base = ["conf=smoke.yaml", f"output_dir={tmp_path}", "run_name=r", "quiet=true", "eval.shots=[0]",
            "eval.limit=4", "data.public_size=8", "data.train_per_client=8", *SHORT]
    path = synthetic_bpe_dir(tmp_path, load_config(base))
    cfg = load_config(base + [f"clients.client1.model.tokenizer={path}"])
    exp = build_experiment(cfg)
    assert len(exp.clients["client1"].tokenizer) != len(exp.server.tokenizer)  # byte BPE vs ByT5
    channel = Channel(keep_payloads=True)
    results = Results()
    out = run_in_process(fedmkt.ROLES, exp, channel, results)

    names = {r["participant"] for r in results.accuracy}
    assert names == {"server", *cfg.clients}
    assert {r["round"] for r in results.accuracy} == {1, 2}
    trained = {(r["round"], r["participant"]) for r in results.train if "kd_loss" in r}
    assert trained == {(t, p) for t in (1, 2) for p in ("server", *cfg.clients)}
    assert all(math.isfinite(r["loss"]) for r in results.train if "kd_loss" in r)
    assert not out["nonfinite_skipped"] and out["responses_generated"] == len(exp.data.public)

    k = cfg.fedmkt.top_k
    vocab = {"server": exp.server.model.config.vocab_size,
             **{n: c.model.config.vocab_size for n, c in exp.clients.items()}}
    kinds = [(m.direction, m.client, m.kind, m.round) for m in channel.messages]
    assert {(d, kind) for d, _, kind, _ in kinds} == {
        ("server->client", "public_texts"), ("client->server", "topk_logits"), ("server->client", "topk_logits"),
        ("client->server", "ready"), ("server->client", "end_round")}
    topk_bytes, dense_bytes = 0, 0
    for msg, raw in zip(channel.messages, channel.payloads):
        p = as_dict(decode(raw))
        if msg.kind == "public_texts":  # the answers and the server's vocabulary cross once, in round 1
            assert bool(p["texts"]) == bool(p["vocab"]) == (msg.round == 1)
            assert all(isinstance(s, str) for s in p["texts"] + p["vocab"])
        if msg.kind != "topk_logits":
            continue
        # a client's vocabulary goes up once, with its first top-k; the server's comes with the texts
        assert bool(p["vocab"]) == (msg.round == 1 and msg.direction == "client->server")
        if p["vocab"]:
            assert p["vocab"] == token_table(exp.clients[msg.client].tokenizer).strings
        L = int(p["lengths"].sum())
        assert p["values"].dtype == torch.float16 and p["values"].shape == (L, k)
        assert p["indices"].dtype == torch.int32 and p["indices"].shape == (L, k)
        assert p["token_ids"].dtype == torch.int32 and p["token_ids"].shape == (L,)
        assert p["ce"].dtype == torch.float32 and p["ce"].shape == (len(exp.data.public),)
        assert p["ids"] == [x.id for x in exp.data.public]
        sender = "server" if msg.direction == "server->client" else msg.client
        assert int(p["indices"].max()) < vocab[sender]
        topk_bytes += msg.nbytes
        dense_bytes += L * vocab[sender] * 2  # dense fp16 logits over the vocabulary
    assert topk_bytes < dense_bytes / 5, (topk_bytes, dense_bytes)
    # where the server learnt from client1 (another tokenizer), part of its tokens were aligned
    st = out["fedmkt"]
    for t in (1, 2):
        if st["teacher_chosen"][f"{t}:server"]["client1"] > 0:
            assert st["aligned_fraction"][f"{t}:server"] > 0
    # the alignment between the two real tokenizers: equal strings at equal character offsets
    answers = CannedAnswers(1, 1).get(1, None, exp.data.public)
    tab_c, tab_s = token_table(exp.clients["client1"].tokenizer), token_table(exp.server.tokenizer)
    covered = 0
    for text in answers:
        a = [tab_c.strings[i] for i in exp.clients["client1"].tokenizer(text, add_special_tokens=False)["input_ids"]]
        b = [tab_s.strings[i] for i in exp.server.tokenizer(text, add_special_tokens=False)["input_ids"]]
        assert "".join(a) == "".join(b) == text
        pairs = align_tokens(a, b, normalise=False)
        for i, j in pairs:
            assert a[i] == b[j] and len("".join(a[:i])) == len("".join(b[:j]))
        covered += len(pairs)
        assert len(pairs) == sum(1 for n, s in enumerate(a) if len(s) == 1)  # every 1-char BPE token
    assert covered > 0
    # client2 shares the server's tokenizer: whatever it took from the server was aligned position by position
    for key, frac in out["fedmkt"]["aligned_fraction"].items():
        if key.endswith("client2") and frac is not None:
            assert frac == 1.0


def test_fedmkt_without_server_training_sends_the_server_topk_once(tmp_path, monkeypatch):
    monkeypatch.setattr(fedmkt, "ResponseCache", CannedAnswers)
    cfg = load_config(["conf=smoke.yaml", f"output_dir={tmp_path}", "quiet=true", "eval.shots=[0]", "eval.limit=2",
                       "eval.every_round=false", "data.public_size=8", *SHORT,
                       "fedmkt.server_training=false", "fedmkt.top_k=4", "fedmkt.ce_normalise=token"])
    exp = build_experiment(cfg)
    channel = Channel(keep_payloads=True)
    results = Results()
    run_in_process(fedmkt.ROLES, exp, channel, results)
    down = [(m.round, m.client) for m in channel.messages if m.kind == "topk_logits" and m.direction == "server->client"]
    assert sorted(down) == [(1, k) for k in sorted(cfg.clients)]
    up = [(m.round, m.client) for m in channel.messages if m.kind == "topk_logits" and m.direction == "client->server"]
    assert sorted(up) == [(t, k) for t in (1, 2) for k in sorted(cfg.clients)]
    assert not [r for r in results.train if r["participant"] == "server"]
    assert {r["round"] for r in results.accuracy} == {2}
    for msg, raw in zip(channel.messages, channel.payloads):
        if msg.kind == "topk_logits":
            assert decode(raw).values.shape[-1] == 4


def test_snapshot_agrees_with_the_participants_own_log_probs():
    from ladalit.core.experiment import build_participant
    cfg = load_config(["conf=smoke.yaml"])
    p = build_participant(cfg, "server", "server", cfg.server)
    prompts = ["Question: 2+2?\nAnswer: Let's think step by step.", "Question: why?", "Q"]
    responses = [" 2+2=4. The answer is (A).", "", " Because."]
    per_token = fedmkt.snapshot(p, prompts, responses, k=5, batch_size=2, ce_normalise="token")
    per_char = fedmkt.snapshot(p, prompts, responses, k=5, batch_size=2, ce_normalise="char")
    with torch.no_grad():
        logp, mask = p.token_logprobs(prompts, responses)
    assert per_token.lengths.tolist() == mask.sum(-1).tolist() == [len(r) + 1 for r in responses]  # ByT5 + EOS
    assert per_token.ce.tolist() == pytest.approx((-(logp * mask).sum(-1) / mask.sum(-1)).tolist(), rel=1e-4)
    # per character: the same total over the characters (EOS counts one)
    assert (per_char.ce * per_token.lengths).tolist() == pytest.approx((per_token.ce * per_token.lengths).tolist(),
                                                                      rel=1e-4)
    assert per_token.values.shape == (int(per_token.lengths.sum()), 5)
    assert bool((per_token.values[:, :-1] >= per_token.values[:, 1:]).all())
    assert per_token.token_ids.tolist()[-len(" Because.") - 1:] == p.tokenizer(" Because.")["input_ids"] + [p.tokenizer.eos_token_id]
