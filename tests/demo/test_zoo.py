import json
import subprocess
from dataclasses import replace

import pytest
import torch

from ladalit.core.prompts import format_response, zero_shot_prompt
from ladalit.demo import zoo
from ladalit.data.records import MCRecord
from ladalit.demo.synthetic import FACT_WORDS, SHARED, SyntheticConfig, generate, num_steps

TINY_CORPUS = SyntheticConfig(num_records=400, seed=11)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny models gain nothing from threads, and on a shared 2-core machine oversubscribed threads crawl
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny(arch="qwen3", tokenizer=zoo.BPE, steps=40, **kw):
    return zoo.ZooMember(f"tiny-{arch}", arch, tokenizer, hidden_size=32, num_layers=2, num_heads=2,
                         num_kv_heads=1, intermediate_size=64, corpus=TINY_CORPUS,
                         train=zoo.TrainSpec(steps=steps, batch_size=16, lr=3e-3, warmup=5), **kw)


@pytest.fixture(scope="module")
def texts():
    return zoo.corpus_texts(TINY_CORPUS)


def test_format_prompt_and_parse():
    rec = MCRecord("x", "Tom has 6 apples. He gets 2 more. How many apples now?", ("8", "6", "4", "9"), "A", "6+2=8.")
    assert zero_shot_prompt(rec) == ("Question: Tom has 6 apples. He gets 2 more. How many apples now?\n"
                                      "Options: (A) 8 (B) 6 (C) 4 (D) 9\nAnswer: Let's think step by step.")
    assert format_response(rec.rationale, "A") == " 6+2=8. The answer is (A)."
    assert format_response(None, "C") == " The answer is (C)."
    assert zoo.parse_answer(" 6+2=8. The answer is (B).") == "B"
    assert zoo.parse_answer(" 6+2=8. The answer is") is None


@pytest.mark.parametrize("spec", [zoo.CHAR, zoo.BPE, zoo.SP], ids=lambda s: s.name)
def test_tokenizer_round_trip_digits_split(spec, texts):
    tok = zoo.build_tokenizer(spec, texts)
    for text in texts[:50] + ["Question: 100-37=63. 63*2=? The answer is (D)."]:
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == text
        for t in tok.convert_ids_to_tokens(ids):
            if any(c.isdigit() for c in t):
                assert len(t) == 1, t  # every digit is its own token
    assert {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id} == {0, 1, 2}
    if spec is zoo.CHAR:
        assert len(tok) == 256 + 3  # bytes only: character level
    else:
        assert len(tok(texts[0])["input_ids"]) < 0.7 * len(texts[0])  # merges shorten the text


def test_tokenizers_differ_and_are_cached(tmp_path, texts):
    toks = {s.name: zoo.load_tokenizer(s, TINY_CORPUS, tmp_path) for s in (zoo.CHAR, zoo.BPE, zoo.SP)}
    encodings = {n: t.tokenize(texts[0]) for n, t in toks.items()}
    assert len({tuple(e) for e in encodings.values()}) == 3
    again = zoo.load_tokenizer(zoo.SP, TINY_CORPUS, tmp_path)
    assert again.get_vocab() == toks["sp"].get_vocab()
    assert len(list(tmp_path.glob("tok-*"))) == 3


@pytest.mark.parametrize("spec", [zoo.CHAR, zoo.BPE, zoo.SP], ids=lambda s: s.name)
def test_encode_pairs_masks_the_prompt(spec, texts):
    tok = zoo.build_tokenizer(spec, texts)
    for rec in generate(TINY_CORPUS)[:20]:
        pair = (zero_shot_prompt(rec), format_response(rec.rationale, rec.answer))
        (ids, w), = zoo.encode_pairs(tok, [pair])
        n_prompt = len(tok(pair[0])["input_ids"])
        assert ids[:-1] == tok(pair[0] + pair[1])["input_ids"]  # same as encoding the whole text
        assert ids[-1] == tok.eos_token_id
        assert w == [0.0] * n_prompt + [1.0] * (len(ids) - n_prompt)
        assert tok.decode(ids[n_prompt:], skip_special_tokens=True) == pair[1]


def test_curriculum_client_is_weaker():
    recs = generate(SyntheticConfig(num_records=400, seed=2))
    eligible = [r for r in recs if r.domain in ("kitchen", SHARED) and num_steps(r) <= 2]
    # short answers for what the client is not taught, and for a quarter of what it is; all zero-shot
    client = tiny(rationale_domains=("kitchen", SHARED), rationale_max_steps=2, short_fraction=0.25,
                  one_shot_fraction=0.0)
    pairs = zoo.curriculum(client, recs, seed=0)
    assert sorted(p for p, _ in pairs) == sorted(zero_shot_prompt(r) for r in recs)
    by_prompt = {zero_shot_prompt(r): r for r in recs}
    with_rationale = [by_prompt[p] for p, resp in pairs if "=" in resp]
    assert with_rationale and all(zoo.taught(client, r) for r in with_rationale)
    assert 0.6 < len(with_rationale) / len(eligible) < 0.9
    assert all(resp == format_response(None, by_prompt[p].answer) for p, resp in pairs if by_prompt[p] not in eligible)
    # the zoo's clients: only their own short chains, always with the rationale
    client = replace(client, short_answers=False, short_fraction=0.0)
    pairs = zoo.curriculum(client, recs, seed=0)
    assert sorted(pairs) == sorted((zero_shot_prompt(r), format_response(r.rationale, r.answer)) for r in eligible)


def test_curriculum_one_shot_share_and_question_writing():
    from ladalit.baselines.wasp import parse_question
    recs = generate(SyntheticConfig(num_records=600, seed=2))
    member = tiny(short_answers=False, one_shot_fraction=0.3, question_fraction=0.2)
    pairs = zoo.curriculum(member, recs, seed=0)
    shared = [r for r in recs if r.domain == SHARED]
    answers = [(p, r) for p, r in pairs if not p.startswith("Write")]
    questions = [(p, r) for p, r in pairs if p.startswith("Write")]
    assert len(answers) == len(shared) and len(questions) == round(0.2 * len(shared))
    one_shot = [p for p, _ in answers if p.startswith(zero_shot_prompt(zoo.EXAMPLE))]
    assert 0.2 < len(one_shot) / len(answers) < 0.4
    for p, target in questions:  # WASP's prompt, then a question WASP can parse
        assert p.endswith("New question:\nQuestion:") and parse_question(target, 4) is not None


def test_curriculum_direct_answer_share_is_the_private_sfts_format():
    """direct_fraction adds that share of the taught records once more, after the direct-answer prompt with the
    short answer statement: exactly the pairs the private-train SFT trains on (`prompts.private_sft_pairs`);
    untaught records never; a member without it, none."""
    from ladalit.core.prompts import private_sft_pairs
    recs = generate(SyntheticConfig(num_records=800, seed=2))
    base = tiny(rationale_domains=("kitchen", SHARED), rationale_max_steps=2, short_answers=False,
                one_shot_fraction=0.3)
    member = replace(base, direct_fraction=0.1)
    pairs = zoo.curriculum(member, recs, seed=0)
    taught = [r for r in recs if zoo.taught(member, r)]
    prompts, responses = private_sft_pairs(recs, "direct")
    sft, by_prompt = dict(zip(prompts, responses)), dict(zip(prompts, recs))
    direct = [(p, t) for p, t in pairs if p in sft]
    assert direct and all(sft[p] == t for p, t in direct)
    assert all(zoo.taught(member, by_prompt[p]) for p, _ in direct)
    assert 0.05 < len(direct) / len(taught) < 0.15
    assert len(pairs) - len(direct) == len(taught)  # every taught record keeps its rationale pair
    assert not any(p in sft for p, _ in zoo.curriculum(base, recs, seed=0))
    assert all(m.direct_fraction == 0.1 for n, m in zoo.ZOO.items() if n != "server")
    assert zoo.ZOO["server"].direct_fraction == 0.0  # the server has no private data


def test_the_servers_corpus_holds_no_domain_fact():
    """The zoo server's whole pre-training text (the real member, its real corpus) never names a fact of a
    client domain; each client's holds its own domain's facts and no other's."""
    corpora = {}
    for name, member in zoo.ZOO.items():
        key = repr(member.corpus)
        corpora[key] = corpora.get(key) or generate(member.corpus, unique=False)  # one corpus for the whole zoo: made once
        pairs = zoo.curriculum(member, corpora[key], member.train.seed)
        text = "\n".join(p + r for p, r in pairs)
        found = {d for d, words in FACT_WORDS.items() if any(w in text for w in words)}
        own = set(member.rationale_domains) - {SHARED}
        assert found == own, name
        if name == "server":
            assert found == set()


def test_length_bucketed_batches_cover_an_epoch_with_little_padding():
    g = torch.Generator().manual_seed(0)
    lengths = [int(x) for x in torch.randint(10, 400, (1000,), generator=g)]
    batches = zoo.length_bucketed_batches(lengths, 8, g, bucket=16)
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat)) and len(flat) >= 1000 - 8 * 8  # whole batches of every chunk
    assert all(len(b) == 8 for b in batches)
    padded = sum(8 * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.15 * sum(lengths[i] for i in flat)  # a random order pads to about 1.6x


def test_pretraining_lowers_the_loss(texts):
    member = tiny(steps=60)
    tok = zoo.build_tokenizer(member.tokenizer, texts)
    model = zoo.build_model(member, tok)
    losses = zoo.pretrain(model, tok, member)
    assert len(losses) == 60
    assert sum(losses[-5:]) / 5 < 0.6 * losses[0]
    assert not model.training


def test_load_member_caches(tmp_path, monkeypatch):
    member = tiny(steps=8)
    calls = []
    real = zoo.pretrain
    monkeypatch.setattr(zoo, "pretrain", lambda *a, **k: calls.append(1) or real(*a, **k))
    model, tok = zoo.load_member(member, cache_dir=tmp_path, progress=False)
    path = zoo.member_dir(member, tmp_path)
    assert path.parent == tmp_path and path.name == f"tiny-qwen3-{zoo.member_hash(member)}"
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    info = json.loads((path / "zoo.json").read_text())
    assert info["member"]["hidden_size"] == 32 and info["code_version"] == zoo.CODE_VERSION
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    model2, tok2 = zoo.load_member(member, cache_dir=tmp_path, progress=False)
    assert calls == [1]  # the second load did not train
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    sd1, sd2 = model.state_dict(), model2.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    assert tok2.get_vocab() == tok.get_vocab()
    # a changed spec is a different cache entry and trains again
    zoo.load_member(replace(member, train=replace(member.train, lr=1e-3)), cache_dir=tmp_path, progress=False)
    assert calls == [1, 1]
    monkeypatch.setenv("LADALIT_CACHE", str(tmp_path / "env"))
    assert zoo.default_cache_dir() == tmp_path / "env"


def test_member_hash_tracks_the_spec():
    m = tiny()
    assert zoo.member_hash(m) == zoo.member_hash(tiny())
    changed = [
        replace(m, hidden_size=48), replace(m, arch="llama"), replace(m, tokenizer=zoo.CHAR),
        replace(m, train=replace(m.train, steps=41)), replace(m, corpus=replace(m.corpus, seed=12)),
        replace(m, rationale_max_steps=2), replace(m, short_fraction=0.1),
    ]
    hashes = {zoo.member_hash(c) for c in changed}
    assert len(hashes) == len(changed) and zoo.member_hash(m) not in hashes


@pytest.mark.parametrize("arch,spec", [("llama", zoo.SP), ("gemma", zoo.CHAR), ("qwen3", zoo.BPE)])
def test_quick_eval_batched_matches_one_by_one(arch, spec, tmp_path):
    model, tok = zoo.load_member(tiny(arch, spec, steps=30), cache_dir=tmp_path, progress=False)
    assert model.config.model_type == arch
    recs = generate(SyntheticConfig(num_records=6, seed=5))  # 1..4 steps: prompts of different lengths
    batched = zoo.predict(model, tok, recs, max_new_tokens=12, batch_size=6)
    single = [zoo.predict(model, tok, [r], max_new_tokens=12)[0] for r in recs]
    assert batched == single  # left padding does not change greedy outputs
    acc = zoo.quick_eval(model, tok, recs, max_new_tokens=12)
    assert acc == sum(zoo.parse_answer(t) == r.answer for t, r in zip(batched, recs)) / len(recs)


def test_zoo_is_heterogeneous():
    assert len({m.arch for m in zoo.ZOO.values()}) >= 3
    assert len({m.tokenizer for m in zoo.ZOO.values()}) >= 3
    server = zoo.ZOO["server"]
    clients = [m for n, m in zoo.ZOO.items() if n != "server"]
    assert len(clients) >= 3
    assert server.rationale_max_steps == 4 > max(m.rationale_max_steps for m in clients)  # long chains: the server's
    assert set(server.rationale_domains) == {SHARED}  # no client domain's facts
    # client k was taught the k-th client domain, which the split deals to client k
    assert [set(m.rationale_domains) - {SHARED} for m in clients] == [{"calendar"}, {"kitchen"}, {"market"}]
    size = lambda m: m.num_layers * m.hidden_size * (4 * m.hidden_size + 3 * m.intermediate_size)
    assert all(size(server) > 2 * size(c) for c in clients)
    smallest = min(clients, key=size)
    assert smallest.learnable_steps == 3 and all(c.learnable_steps == 4 for c in clients if c is not smallest)


@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_every_zoo_member_has_sdpa_attention(name, tmp_path):
    # the first command's 15-minute budget rests on it: an eager-only family (gemma2, world v2's client3)
    # costs several times the pre-training of an SDPA one of the same size
    tok = zoo.load_tokenizer(zoo.ZOO[name].tokenizer, TINY_CORPUS, tmp_path)
    model = zoo.build_model(zoo.ZOO[name], tok)
    assert model.config._attn_implementation == "sdpa"


# ----------------------------------------------------------------------------- shipped weights

@pytest.mark.parametrize("name", list(zoo.ZOO))
def test_every_member_is_shipped_at_its_current_hash(name, monkeypatch):
    # a change to a member's spec (or CODE_VERSION) changes its hash: ship it again (python -m ladalit.demo.zoo --ship)
    path = zoo.shipped_member(zoo.ZOO[name])  # checks every file's sha256
    assert path is not None and path.name == f"{name}-{zoo.member_hash(zoo.ZOO[name])}"
    monkeypatch.setattr(zoo, "pretrain", lambda *a, **k: pytest.fail("the shipped member was pre-trained again"))
    model, tok = zoo.load_member(name, cache_dir="/nonexistent/cache", progress=False)
    assert model.num_parameters() == zoo.member_info(name)["num_parameters"]
    assert tok.bos_token == zoo.BOS and len(tok) == model.config.vocab_size


def test_shipped_sums_are_sha256sum_format():
    sums = zoo.read_sums()
    assert {rel.split("/", 1)[0] for rel in sums} == {f"{n}-{zoo.member_hash(m)}" for n, m in zoo.ZOO.items()}
    out = subprocess.run(["sha256sum", "--check", "--quiet", zoo.SUMS], cwd=zoo.SHIPPED, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ship_then_load_then_tamper(tmp_path, monkeypatch):
    member = tiny(steps=4)
    lines = zoo.ship([member], cache_dir=tmp_path / "cache", shipped=tmp_path / "weights")
    name = f"{member.name}-{zoo.member_hash(member)}"
    assert {ln.split("  ", 1)[1] for ln in lines} >= {f"{name}/model.safetensors", f"{name}/tokenizer.json",
                                                     f"{name}/zoo.json"}
    assert zoo.shipped_member(member, tmp_path / "weights") == tmp_path / "weights" / name
    assert zoo.shipped_member(replace(member, hidden_size=48), tmp_path / "weights") is None  # another spec
    # loading prefers the shipped copy over a cache that holds the same spec
    monkeypatch.setattr(zoo, "SHIPPED", tmp_path / "weights")
    cached = zoo.member_dir(member, tmp_path / "cache") / "model.safetensors"
    cached.write_bytes(b"not read")  # the shipped copy is loaded, not the cache's
    model, _ = zoo.load_member(member, cache_dir=tmp_path / "cache", progress=False)
    assert model.config.hidden_size == member.hidden_size
    # a changed shipped byte is refused, with the file named
    weights = tmp_path / "weights" / name / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(zoo.ZooIntegrityError, match=r"model\.safetensors: sha256 .* does not match"):
        zoo.load_member(member, cache_dir=tmp_path / "cache", progress=False)



def test_partial_steps_teach_a_share_of_longer_chains_by_record_id():
    """partial_steps teaches, beyond rationale_max_steps, about that share of a (domain, steps) cell's records with
    their rationale, chosen by the record's id (so the same records whatever else the curriculum draws); other
    cells and other domains beyond the limit stay untaught; a member without it keeps its hash."""
    recs = generate(SyntheticConfig(num_records=4000, seed=2))
    base = tiny(rationale_domains=("kitchen", SHARED), rationale_max_steps=2, short_answers=False, one_shot_fraction=0.0)
    member = replace(base, partial_steps=((SHARED, 3, 0.3), (SHARED, 4, 0.1)))
    cell = lambda d, n: [r for r in recs if r.domain == d and num_steps(r) == n]  # noqa: E731
    for n, share in ((3, 0.3), (4, 0.1)):
        got = sum(zoo.taught(member, r) for r in cell(SHARED, n)) / len(cell(SHARED, n))
        assert abs(got - share) < 0.06, (n, got)
        assert not any(zoo.taught(base, r) for r in cell(SHARED, n))
    assert not any(zoo.taught(member, r) for n in (3, 4) for r in cell("kitchen", n))
    assert all(zoo.taught(member, r) == zoo.taught(base, r) for r in recs if num_steps(r) <= 2)
    pairs = zoo.curriculum(member, recs, seed=0)
    taught3 = {zero_shot_prompt(r) for r in cell(SHARED, 3) if zoo.taught(member, r)}
    assert taught3 and taught3 <= {p for p, _ in pairs}
    assert zoo.member_hash(member) != zoo.member_hash(base)
    assert zoo.member_hash(base) == zoo.member_hash(replace(base, partial_steps=()))
