"""Participant: reference log-probs come from the frozen reference, one pass per key;
log-probs mask the prompt; batched greedy generation equals one-by-one generation."""
import copy

import pytest
import torch
from omegaconf import OmegaConf

from ladalit.core.config import LoraConfig, ModelConfig, TrainConfig
from ladalit.core.models import build_model
from ladalit.core.participant import Participant, Sampling
from ladalit.core.prompts import CutAnswer

PROMPTS = ["Question: 2+3?\nAnswer: Let's think step by step.", "Question: a much longer prompt here?\nAnswer:"]
CHOSEN = [" 2+3=5. The answer is (B).", " yes"]
REJECTED = [" 2+3=6. The answer is (C).", " no, because of many reasons"]


def make(role="client", lora=True, arch="qwen3", seed=0):
    m = OmegaConf.structured(ModelConfig(arch=arch, lora=LoraConfig(enabled=lora, r=4)))
    model, tok = build_model(m, seed=seed)
    return Participant("p", role, model, tok, OmegaConf.structured(TrainConfig()), m.lora)


def perturb(p, adapter):
    with torch.no_grad():
        for n, q in p.model.named_parameters():
            if f".{adapter}." in n and "lora_B" in n:
                q.add_(0.1 * torch.randn_like(q))


def independent_logprob(model, tok, prompt, response, first=None):
    """Sum of log p(response token | prefix) over the response's first `first` tokens (None: all, EOS
    included), one token at a time in float64."""
    p_ids = tok(prompt)["input_ids"]
    r_ids = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([p_ids + r_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    total = 0.0
    for j, t in enumerate(r_ids[:first]):
        pos = len(p_ids) + j - 1
        total += torch.log_softmax(logits[pos], -1)[t].item()
    return total


@pytest.mark.parametrize("lora", [True, False])
def test_sequence_logprobs_match_an_independent_token_by_token_sum(lora):
    p = make(lora=lora)
    got = p.sequence_logprobs(PROMPTS, CHOSEN)
    for i in range(2):
        ref = independent_logprob(p.model, p.tokenizer, PROMPTS[i], CHOSEN[i])
        assert got[i].item() == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("lora", [True, False])
def test_sequence_logprobs_over_leading_tokens_match_an_independent_sum(lora):
    """`lengths` (lada.mard_span=first_difference) sums each response's first n tokens only; n = its full
    length gives the whole sum. Checked on the packed path and on the right-padded one (remote code)."""
    import ladalit.core.participant as participant_module

    p = make(lora=lora)
    full = [len(r) for r in p.response_ids(PROMPTS, CHOSEN)]
    for lengths in ([1, 3], [4, 2], full):
        got = p.sequence_logprobs(PROMPTS, CHOSEN, lengths=lengths)
        for i in range(2):
            want = independent_logprob(p.model, p.tokenizer, PROMPTS[i], CHOSEN[i], first=lengths[i])
            assert got[i].item() == pytest.approx(want, rel=1e-5)
    torch.testing.assert_close(p.sequence_logprobs(PROMPTS, CHOSEN, lengths=full), p.sequence_logprobs(PROMPTS, CHOSEN))
    packed = p.sequence_logprobs(PROMPTS, CHOSEN, lengths=[1, 3])
    real = participant_module._packs
    participant_module._packs = lambda model: False
    try:
        torch.testing.assert_close(p.sequence_logprobs(PROMPTS, CHOSEN, lengths=[1, 3]), packed)
    finally:
        participant_module._packs = real


def test_reference_pair_logprobs_over_leading_tokens_are_the_references_and_cached():
    p = make("server")
    lengths = ([2, 1], [3, 2])
    want = [[independent_logprob(p.model, p.tokenizer, PROMPTS[i], side[i], first=n[i]) for i in range(2)]
            for side, n in ((CHOSEN, lengths[0]), (REJECTED, lengths[1]))]
    p.freeze_reference()
    perturb(p, "policy")  # the policy moves away from the reference (the base)
    rc, rr = p.reference_pair_logprobs(["a", "b"], PROMPTS, CHOSEN, REJECTED, lengths=lengths)
    assert rc.tolist() == pytest.approx(want[0], rel=1e-5) and rr.tolist() == pytest.approx(want[1], rel=1e-5)
    pc, _ = p.pair_logprobs(PROMPTS, CHOSEN, REJECTED, lengths=lengths)
    assert (pc - rc).abs().max() > 1e-4
    p.reference_pair_logprobs(["a", "b"], PROMPTS, CHOSEN, REJECTED, lengths=lengths)
    assert p.reference_passes == 2  # one pass per key


def test_pair_logprobs_is_one_forward_pass_over_chosen_and_rejected():
    p = make()
    calls = []
    hook = p.model.register_forward_hook(lambda *a: calls.append(1))
    c, r = p.pair_logprobs(PROMPTS, CHOSEN, REJECTED)
    hook.remove()
    assert len(calls) == 1
    torch.testing.assert_close(c, p.sequence_logprobs(PROMPTS, CHOSEN))
    torch.testing.assert_close(r, p.sequence_logprobs(PROMPTS, REJECTED))


def test_client_reference_is_the_sft_model_not_the_policy_and_is_cached_once_per_key():
    torch.manual_seed(0)
    p = make("client")
    perturb(p, "sft")  # stands for the SFT step
    sft_model = copy.deepcopy(p.model)
    sft_lp = p.sequence_logprobs(PROMPTS, CHOSEN).detach()
    p.freeze_reference()
    torch.testing.assert_close(p.sequence_logprobs(PROMPTS, CHOSEN).detach(), sft_lp)  # policy starts at φ_ref
    perturb(p, "policy")  # the policy moves away: non-zero second adapter
    policy_lp = p.sequence_logprobs(PROMPTS, CHOSEN).detach()
    assert (policy_lp - sft_lp).abs().max() > 1e-3
    keys = [(1, "x1"), (1, "x2")]
    rc, rr = p.reference_pair_logprobs(keys, PROMPTS, CHOSEN, REJECTED)
    torch.testing.assert_close(rc, sft_lp, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the SFT snapshot (sft adapter only) agrees independently
        sft_model.base_model.set_adapter(["sft"])
        expected = [independent_logprob(sft_model, p.tokenizer, PROMPTS[i], REJECTED[i]) for i in range(2)]
    assert rr.tolist() == pytest.approx(expected, rel=1e-5)
    assert p.reference_passes == 2
    p.reference_pair_logprobs(keys, PROMPTS, CHOSEN, REJECTED)
    p.reference_pair_logprobs(keys[:1], PROMPTS[:1], CHOSEN[:1], REJECTED[:1])
    assert p.reference_passes == 2  # cached: one pass per (round, sample)
    p.reference_pair_logprobs([(2, "x1")], PROMPTS[:1], CHOSEN[:1], REJECTED[:1])
    assert p.reference_passes == 3
    # only the policy adapter trains after freeze_reference, also after a reference pass
    trainable = {n for n, q in p.model.named_parameters() if q.requires_grad}
    assert trainable and all(".policy." in n for n in trainable)


def test_server_reference_is_the_base_with_the_adapter_disabled():
    p = make("server")
    base_lp = p.sequence_logprobs(PROMPTS, CHOSEN).detach()
    p.freeze_reference()
    perturb(p, "policy")
    assert (p.sequence_logprobs(PROMPTS, CHOSEN).detach() - base_lp).abs().max() > 1e-3
    rc, _ = p.reference_pair_logprobs([(1, "a"), (1, "b")], PROMPTS, CHOSEN, REJECTED)
    torch.testing.assert_close(rc, base_lp, rtol=1e-5, atol=1e-5)


def test_full_finetuning_reference_is_a_frozen_copy():
    p = make("client", lora=False)
    p.freeze_reference()
    before = p.sequence_logprobs(PROMPTS, CHOSEN).detach()
    with torch.no_grad():
        for q in p.model.parameters():
            q.add_(0.01 * torch.randn_like(q))
    rc, _ = p.reference_pair_logprobs([(1, "a"), (1, "b")], PROMPTS, CHOSEN, REJECTED)
    torch.testing.assert_close(rc, before, rtol=1e-5, atol=1e-5)
    assert not any(q.requires_grad for q in p.ref_model.parameters())


def test_sft_steps_lower_the_response_loss():
    torch.manual_seed(0)
    p = make("client", lora=False)
    opt = torch.optim.AdamW(p.model.parameters(), lr=1e-2)
    first = p.sft_loss(PROMPTS, CHOSEN)
    for _ in range(20):
        opt.zero_grad()
        loss = p.sft_loss(PROMPTS, CHOSEN)
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first.item()


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_batched_greedy_generation_equals_one_by_one(arch):
    torch.manual_seed(0)
    p = make("client", lora=False, arch=arch)
    opt = torch.optim.AdamW(p.model.parameters(), lr=1e-2)
    for _ in range(30):  # learn to emit something other than EOS
        opt.zero_grad()
        p.sft_loss(PROMPTS, CHOSEN).backward()
        opt.step()
    prompts = PROMPTS + ["Question: 7?", "Q"]
    batched = p.generate_text(prompts, max_new_tokens=12, batch_size=4)
    single = [p.generate_text([x], max_new_tokens=12, batch_size=1)[0] for x in prompts]
    assert batched == single
    assert any(len(t) > 0 for t in batched)


def test_sampled_generation_repeats_from_its_seed_and_leaves_the_global_rng_alone():
    p = make("server", lora=False, arch="qwen3")  # random weights: a flat next-token distribution
    prompts = PROMPTS * 3
    greedy = p.generate_text(prompts, max_new_tokens=10, batch_size=4)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = p.generate_text(prompts, max_new_tokens=10, batch_size=4, sampling=Sampling(1.0, 0.95, seed=7))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's stream goes on as it was
    b = p.generate_text(prompts, max_new_tokens=10, batch_size=4, sampling=Sampling(1.0, 0.95, seed=7))
    c = p.generate_text(prompts, max_new_tokens=10, batch_size=4, sampling=Sampling(1.0, 0.95, seed=8))
    assert a == b and a != c and a != greedy
    assert len(set(a[0::2])) > 1  # one prompt, three samples: not all alike, unlike greedy's
    assert len(set(greedy[0::2])) == 1
    assert p.generate_text(prompts, max_new_tokens=10, batch_size=4) == greedy


def test_a_cut_answer_gets_no_eos_and_an_over_long_pair_keeps_its_prompt():
    p = make("client", lora=False)
    tok = p.tokenizer
    answer = " 2+3=5. (A) 5 vs"
    (_, whole), (_, cut) = p._rows(PROMPTS[:1] * 2, [answer, CutAnswer(answer)])
    r_ids = tok(answer, add_special_tokens=False)["input_ids"]
    assert whole == r_ids + [tok.eos_token_id] and cut == r_ids  # the model never ended a cut answer
    ref = independent_logprob(p.model, tok, PROMPTS[0], answer)  # with the EOS term
    eos_term = ref - independent_logprob_without_eos(p.model, tok, PROMPTS[0], answer)
    got = p.sequence_logprobs(PROMPTS[:1] * 2, [answer, CutAnswer(answer)])
    assert got[0].item() == pytest.approx(ref, rel=1e-5) and got[1].item() == pytest.approx(ref - eos_term, rel=1e-5)
    # over max_length: the prompt (question and instruction) stays whole, the response loses its end and its EOS
    p_ids = tok(PROMPTS[0])["input_ids"]
    p.train_cfg = OmegaConf.structured(TrainConfig(max_length=len(p_ids) + 5))
    [(prompt, resp)] = p._rows(PROMPTS[:1], [answer])
    assert prompt == p_ids and resp == r_ids[:5]
    assert p.overlong_pairs(PROMPTS[:1] * 3, [answer, CutAnswer(" 2+"), " 2"]) == 1


def independent_logprob_without_eos(model, tok, prompt, response):
    p_ids = tok(prompt)["input_ids"]
    r_ids = tok(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + r_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    return sum(torch.log_softmax(logits[len(p_ids) + j - 1], -1)[t].item() for j, t in enumerate(r_ids))


def test_generation_reports_which_answers_reached_max_new_tokens():
    torch.manual_seed(0)
    p = make("client", lora=False)
    opt = torch.optim.AdamW(p.model.parameters(), lr=1e-2)
    for _ in range(100):  # PROMPTS[0] -> EOS at once; PROMPTS[1] -> a long answer
        opt.zero_grad()
        p.sft_loss(PROMPTS, ["", " yes yes yes yes yes yes yes yes"]).backward()
        opt.step()
    cut: list = []
    texts = p.generate_text(PROMPTS, max_new_tokens=4, batch_size=2, cut=cut)
    assert texts[0] == "" and cut == [False, True]
    cut = []
    p.generate_text(PROMPTS[:1], max_new_tokens=4, batch_size=1, cut=cut)
    assert cut == [False]


def test_an_over_long_generation_prompt_loses_its_start_never_its_question(monkeypatch):
    p = make("client", lora=False)
    tok = p.tokenizer
    question = "Question: what is 7*6?\nOptions: (A) 42 (B) 13 (C) 76 (D) 1\nAnswer: Let's think step by step."
    long = "Question: an earlier worked example " + "that goes on " * 40 + "\n\n" + question
    budget = p.prompt_budget(8)
    assert len(tok(long)["input_ids"]) > budget >= len(tok(question)["input_ids"])
    seen = []
    generate = p.model.generate
    monkeypatch.setattr(p.model, "generate", lambda **kw: seen.append(kw["input_ids"]) or generate(**kw))
    ids, cut = p.prompt_ids([long, question], 8)
    assert cut == [True, False] and len(ids[0]) == budget
    p.generate_text([long], max_new_tokens=8, batch_size=1)
    fed = tok.decode(seen[0][0], skip_special_tokens=True)
    assert fed.endswith(question) and len(seen[0][0]) == budget
