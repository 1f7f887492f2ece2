import math

import numpy as np
import pytest
import torch

from ladalit.method.lada import Config as LadaConfig
from ladalit.method.losses import (
    client_mard_loss,
    first_difference_lengths,
    mard_loss,
    mard_nll_loss,
    overlap_weights,
    server_mard_loss,
)


def _ref_loss_np(pc, pr, rc, rr, beta):
    """Independent float64 reference: log(1 + exp(-z)) written as -log(1/(1+exp(-z)))."""
    z = beta * ((pc - rc) - (pr - rr))
    return -np.log(1.0 / (1.0 + np.exp(-z)))


def _ref_grad_np(pc, pr, rc, rr, beta):
    """d loss / d pc = -beta * sigma(-z); d loss / d pr = +beta * sigma(-z)."""
    z = beta * ((pc - rc) - (pr - rr))
    s = 1.0 / (1.0 + np.exp(z))  # sigma(-z)
    return -beta * s, beta * s


def _random_logps(seed, b=64):
    """Summed response log-probs (tens to hundreds of nats); the policy differs
    from the reference by up to 5 nats per response, so |z| <= 10 * beta. (The
    naive reference loses relative precision once exp(-z) < 1e-11.)"""
    rng = np.random.default_rng(seed)
    rc, rr = -rng.uniform(5.0, 200.0, size=b), -rng.uniform(5.0, 200.0, size=b)
    pc, pr = rc + rng.uniform(-5.0, 5.0, size=b), rr + rng.uniform(-5.0, 5.0, size=b)
    return [pc, pr, rc, rr]


@pytest.mark.parametrize("beta", [0.1, 0.5, 1.5])
def test_mard_loss_and_grad_match_float64_reference(beta):
    pc, pr, rc, rr = _random_logps(int(beta * 10))
    tpc = torch.tensor(pc, dtype=torch.float64, requires_grad=True)
    tpr = torch.tensor(pr, dtype=torch.float64, requires_grad=True)
    loss = mard_loss(tpc, tpr, torch.tensor(rc), torch.tensor(rr), beta)
    assert loss.shape == (64,)
    ref = _ref_loss_np(pc, pr, rc, rr, beta)
    np.testing.assert_allclose(loss.detach().numpy(), ref, rtol=1e-6)

    loss.sum().backward()
    g_c, g_r = _ref_grad_np(pc, pr, rc, rr, beta)
    np.testing.assert_allclose(tpc.grad.numpy(), g_c, rtol=1e-6)
    np.testing.assert_allclose(tpr.grad.numpy(), g_r, rtol=1e-6)


def test_mard_loss_float32_close_to_float64_reference():
    pc, pr, rc, rr = _random_logps(7)
    t = [torch.tensor(a, dtype=torch.float32) for a in (pc, pr, rc, rr)]
    loss = mard_loss(*t, beta=0.1)
    assert loss.dtype == torch.float32
    # float32 inputs of magnitude ~200 carry ~1e-5 absolute error into z
    np.testing.assert_allclose(loss.numpy(), _ref_loss_np(pc, pr, rc, rr, 0.1), rtol=1e-4, atol=1e-5)


def test_mard_loss_hand_values():
    zeros = torch.zeros(3)
    # policy == reference everywhere -> z = 0 -> -log(1/2) = log 2
    torch.testing.assert_close(mard_loss(zeros, zeros, zeros, zeros, 0.1), torch.full((3,), math.log(2.0)))
    # z = beta * ((-1 - -3) - (-4 - -2)) = 0.5 * (2 - (-2)) = 2 -> log(1 + e^-2)
    out = mard_loss(torch.tensor([-1.0]), torch.tensor([-4.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), 0.5)
    torch.testing.assert_close(out, torch.tensor([math.log(1 + math.exp(-2.0))]))


def test_mard_nll_loss_hand_values_and_gradient():
    mard = torch.tensor([0.5, 0.25])
    pol_c = torch.tensor([-6.0, -2.0], requires_grad=True)
    tokens = torch.tensor([3, 4])
    assert mard_nll_loss(mard, pol_c, tokens, 0.0) is mard  # the paper's loss, untouched
    out = mard_nll_loss(mard, pol_c, tokens, 0.5)
    torch.testing.assert_close(out, torch.tensor([0.5 + 0.5 * 6 / 3, 0.25 + 0.5 * 2 / 4]))
    out.sum().backward()  # each chosen token's log-prob is pushed up by weight / |y_c|
    torch.testing.assert_close(pol_c.grad, torch.tensor([-0.5 / 3, -0.5 / 4]))


def test_mard_loss_is_stable_for_huge_margins():
    big = torch.tensor([1e4, -1e4], dtype=torch.float32)
    z0 = torch.zeros(2)
    out = mard_loss(big, z0, z0, z0, 1.0)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.tensor([0.0, 1e4]))


def test_client_and_server_wrappers_swap_roles():
    pc, pr, rc, rr = (torch.tensor(a) for a in _random_logps(3, b=8))
    # client (Eq. 3): chosen = y^s, rejected = y^k
    ys_pol, yk_pol, ys_ref, yk_ref = pc, pr, rc, rr
    torch.testing.assert_close(
        client_mard_loss(ys_pol, yk_pol, ys_ref, yk_ref, 0.1), mard_loss(ys_pol, yk_pol, ys_ref, yk_ref, 0.1)
    )
    # server (Eq. 4): chosen = y^k, rejected = y^s
    torch.testing.assert_close(
        server_mard_loss(yk_pol, ys_pol, yk_ref, ys_ref, 0.1), mard_loss(yk_pol, ys_pol, yk_ref, ys_ref, 0.1)
    )
    # with the same numbers the two directions are different objectives: l(z) vs l(-z),
    # and -log σ(z) - (-log σ(-z)) = -z
    z = 0.1 * ((ys_pol - ys_ref) - (yk_pol - yk_ref))
    diff = client_mard_loss(ys_pol, yk_pol, ys_ref, yk_ref, 0.1) - server_mard_loss(yk_pol, ys_pol, yk_ref, ys_ref, 0.1)
    torch.testing.assert_close(diff, -z)


def test_client_loss_gradient_raises_server_answer_likelihood():
    pol_ys = torch.tensor([-10.0], requires_grad=True)
    pol_yk = torch.tensor([-10.0], requires_grad=True)
    ref = torch.tensor([-10.0])
    client_mard_loss(pol_ys, pol_yk, ref, ref, 0.1).sum().backward()
    # gradient descent increases log phi(y^s|x) and decreases log phi(y^k|x): -0.1 * σ(0) = -0.05
    torch.testing.assert_close(pol_ys.grad, torch.tensor([-0.05]))
    torch.testing.assert_close(pol_yk.grad, torch.tensor([0.05]))


def test_overlap_weights_reward_mode_hand_example():
    # sample "a" chosen by clients 0,1,2; "b" by client 1 only; "c" by clients 0 and 2
    sample_ids = ["a", "a", "a", "b", "c", "c"]
    client_ids = [0, 1, 2, 1, 0, 2]
    scores = torch.tensor([0.6, 0.2, 0.2, 0.9, -0.3, 0.7])
    w = overlap_weights(sample_ids, client_ids, scores, mode="reward")
    # a: 0.6/1.0, 0.2/1.0, 0.2/1.0 ; b: alone -> 1 ; c: negative clamps to 0 -> 0, 1
    torch.testing.assert_close(w, torch.tensor([0.6, 0.2, 0.2, 1.0, 0.0, 1.0]))


def test_overlap_weights_uniform_mode_hand_example():
    sample_ids = ["a", "a", "a", "b", "c", "c"]
    client_ids = [0, 1, 2, 1, 0, 2]
    scores = torch.tensor([0.6, 0.2, 0.2, 0.9, -0.3, 0.7])
    w = overlap_weights(sample_ids, client_ids, scores, mode="uniform")
    torch.testing.assert_close(w, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0, 0.5, 0.5]))


def test_overlap_weights_all_nonpositive_falls_back_to_uniform():
    w = overlap_weights([5, 5, 7], [0, 1, 0], torch.tensor([0.0, -1.0, 0.0]), mode="reward")
    torch.testing.assert_close(w, torch.tensor([0.5, 0.5, 1.0]))


def test_overlap_weights_sum_to_one_per_sample_random():
    rng = np.random.default_rng(0)
    rows = [(int(s), k) for s in range(40) for k in range(3) if rng.random() < 0.6]
    sample_ids = [s for s, _ in rows]
    client_ids = [k for _, k in rows]
    scores = torch.tensor(rng.uniform(-0.2, 1.0, size=len(rows)), dtype=torch.float32)
    for mode in ("reward", "uniform"):
        w = overlap_weights(sample_ids, client_ids, scores, mode=mode)
        assert (w >= 0).all()
        for s in set(sample_ids):
            mask = torch.tensor([sid == s for sid in sample_ids])
            torch.testing.assert_close(w[mask].sum(), torch.tensor(1.0))


def test_overlap_weights_rejects_bad_input():
    with pytest.raises(ValueError):
        overlap_weights(["a", "a"], [0, 0], torch.tensor([0.5, 0.5]))  # same (sample, client) twice
    with pytest.raises(ValueError):
        overlap_weights(["a"], [0], torch.tensor([0.5]), mode="softmax")
    with pytest.raises(ValueError):
        overlap_weights(["a", "b"], [0], torch.tensor([0.5, 0.5]))


def weighted(loss, w):
    """Eq. 4's combination as the training path computes it: core.training.minibatch_loss with the weights."""
    from ladalit.core.training import RowLoss, minibatch_loss
    out, _, _ = minibatch_loss(None, lambda rows: RowLoss({"loss": loss[rows]}), range(len(loss)), w, "weights")
    return out


def test_server_loss_is_the_expectation_over_samples_on_the_training_path():
    sample_ids = ["a", "a", "b"]
    client_ids = [0, 1, 0]
    loss = torch.tensor([1.0, 3.0, 10.0], requires_grad=True)
    w = overlap_weights(sample_ids, client_ids, torch.tensor([0.75, 0.25, 0.4]), mode="reward")
    out = weighted(loss, w)
    # sample a: 0.75*1 + 0.25*3 = 1.5 ; sample b: 10 ; mean over 2 samples = 5.75
    torch.testing.assert_close(out, torch.tensor(5.75))
    out.backward()
    torch.testing.assert_close(loss.grad, torch.tensor([0.375, 0.125, 0.5]))


def test_server_loss_without_overlap_is_the_plain_mean_on_the_training_path():
    loss = torch.tensor([0.2, 0.4, 0.9])
    w = overlap_weights([1, 2, 3], [0, 1, 2], torch.tensor([0.1, 0.7, 0.3]))
    torch.testing.assert_close(weighted(loss, w), loss.mean())


def test_per_sample_loss_adds_the_nll_term_only_with_mard_nll():
    """distill.per_sample_loss wires `mard_nll` to mard_nll_loss with the chosen answers' trained lengths."""
    from ladalit.method.distill import per_sample_loss

    class Participant:
        role = "client"

        def pair_logprobs(self, prompts, chosen, rejected, lengths=None):
            return torch.tensor([-6.0, -2.0]), torch.tensor([-5.0, -1.0])

        def reference_pair_logprobs(self, keys, prompts, chosen, rejected, lengths=None):
            return torch.tensor([-5.0, -3.0]), torch.tensor([-5.0, -2.0])

        def response_lengths(self, prompts, responses):
            return [3, 4]

    args = (Participant(), ["k1", "k2"], ["x1", "x2"], ["c1", "c2"], ["r1", "r2"])
    paper = per_sample_loss(LadaConfig(beta=0.1, mard_nll=0.0, mard_span="response"), *args)
    torch.testing.assert_close(paper, mard_loss(torch.tensor([-6.0, -2.0]), torch.tensor([-5.0, -1.0]),
                                                torch.tensor([-5.0, -3.0]), torch.tensor([-5.0, -2.0]), 0.1))
    rpo = per_sample_loss(LadaConfig(beta=0.1, mard_nll=0.5, mard_span="response"), *args)
    torch.testing.assert_close(rpo, paper + 0.5 * torch.tensor([6.0 / 3, 2.0 / 4]))


@pytest.mark.parametrize("role", ["client", "server"])
def test_per_sample_loss_calls_eq3_for_a_client_and_eq4_for_the_server(role, monkeypatch):
    """The training path's MARD term is losses.client_mard_loss (Eq. 3: chosen = y^s) on a client and
    losses.server_mard_loss (Eq. 4: chosen = y^k) on the server, with the chosen answer's log-probs as the
    preferred side's."""
    from ladalit.method import distill, losses

    pol = torch.tensor([-6.0]), torch.tensor([-5.0])  # (chosen, rejected)
    ref = torch.tensor([-4.0]), torch.tensor([-3.0])
    calls = []
    for name in ("client_mard_loss", "server_mard_loss"):
        real = getattr(losses, name)
        monkeypatch.setattr(losses, name, lambda *a, _n=name, _r=real, **kw: calls.append((_n, kw)) or _r(*a, **kw))

    class Participant:
        def pair_logprobs(self, prompts, chosen, rejected, lengths=None):
            return pol

        def reference_pair_logprobs(self, keys, prompts, chosen, rejected, lengths=None):
            return ref

    p = Participant()
    p.role = role
    out = distill.per_sample_loss(LadaConfig(beta=0.1, mard_nll=0.0, mard_span="response"), p, ["k"], ["x"], ["c"], ["r"])
    (name, kw), = calls
    if role == "client":
        assert name == "client_mard_loss" and kw["pol_ys"] is pol[0] and kw["ref_yk"] is ref[1]
    else:
        assert name == "server_mard_loss" and kw["pol_yk"] is pol[0] and kw["ref_ys"] is ref[1]
    torch.testing.assert_close(out, mard_loss(pol[0], pol[1], ref[0], ref[1], 0.1))


@pytest.mark.parametrize("chosen, rejected, want", [
    ([5, 6, 7, 2], [5, 6, 9, 9, 2], (3, 3)),  # part at the third token
    ([5, 6, 2], [8, 6, 2], (1, 1)),  # at the first
    ([5, 6, 2], [5, 6, 2], (3, 3)),  # identical: the whole answers (margin 0 either way)
    ([5, 6, 2], [5, 6], (3, 2)),  # the rejected one is cut (no EOS) where the chosen goes on: its next token only
    ([5, 6], [5, 6, 7, 2], (2, 3)),
    ([], [4, 2], (0, 1)),
])
def test_first_difference_lengths_hand_cases(chosen, rejected, want):
    assert first_difference_lengths([chosen], [rejected]) == ([want[0]], [want[1]])


def _tiny_client():
    from omegaconf import OmegaConf

    from ladalit.core.config import LoraConfig, ModelConfig, TrainConfig
    from ladalit.core.models import build_model
    from ladalit.core.participant import Participant

    m = OmegaConf.structured(ModelConfig(arch="qwen3", lora=LoraConfig(enabled=True, r=4)))
    model, tok = build_model(m, seed=0)
    p = Participant("client1", "client", model, tok, OmegaConf.structured(TrainConfig()), m.lora)
    p.freeze_reference()
    with torch.no_grad():  # the policy moves away from the reference
        for n, q in p.model.named_parameters():
            if ".policy." in n and "lora_B" in n:
                q.add_(0.1 * torch.randn(q.shape, generator=torch.Generator().manual_seed(1)))
    return p


def test_first_difference_span_is_the_preference_at_the_first_differing_token():
    """mard_span=first_difference: the MARD loss of the two answers' first differing token, against a float64
    token-by-token computation; what the rejected answer says after it does not change the loss (with the
    whole answers, mard_span=response, it does)."""
    from ladalit.method.distill import per_sample_loss

    p = _tiny_client()
    prompt = "Question: 4+3+2?\nAnswer: Let's think step by step."
    chosen, rejected = " 4+3=7. 7+2=9. The answer is (B).", " 4+3=8. 8+2=10. The answer is (C)."
    tail = " 4+3=8. 8+1=3. The answer is (A)."  # the same first difference, another rest
    lada = LadaConfig(beta=0.5, mard_nll=0.0, mard_span="first_difference")
    got = per_sample_loss(lada, p, ["a"], [prompt], [chosen], [rejected])

    tok = p.tokenizer
    p_ids = tok(prompt)["input_ids"]
    c_ids, r_ids = (tok(y, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for y in (chosen, rejected))
    d = next(j for j, (a, b) in enumerate(zip(c_ids, r_ids)) if a != b)

    def logp_at_d(model, ids):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p_ids + ids])).logits[0].double()
        return torch.log_softmax(logits[len(p_ids) + d - 1], -1)[ids[d]].item()

    with p.reference() as ref:
        ref_c, ref_r = logp_at_d(ref, c_ids), logp_at_d(ref, r_ids)
    pol_c, pol_r = logp_at_d(p.model, c_ids), logp_at_d(p.model, r_ids)
    z = 0.5 * ((pol_c - ref_c) - (pol_r - ref_r))
    assert abs(z) > 1e-4  # the policy and the reference differ at that token
    assert got.item() == pytest.approx(math.log1p(math.exp(-z)), rel=1e-4)

    p.clear_reference_cache()
    other = per_sample_loss(lada, p, ["a"], [prompt], [chosen], [tail])
    torch.testing.assert_close(other, got)
    whole = LadaConfig(beta=0.5, mard_nll=0.0, mard_span="response")
    p.clear_reference_cache()
    a = per_sample_loss(whole, p, ["a"], [prompt], [chosen], [rejected])
    p.clear_reference_cache()
    b = per_sample_loss(whole, p, ["a"], [prompt], [chosen], [tail])
    assert abs((a - b).item()) > 1e-4
