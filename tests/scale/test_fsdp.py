"""FSDP2 (`fabric.strategy: fsdp2`) on CPU: 2 processes over gloo, tiny qwen3 + LoRA participants.

The worker (this file run as a script) is launched once per module; Fabric
re-runs it for rank 1. Each rank compares what the sharded participant does with
an unsharded copy of the same participant in the same process, and writes what
it measured to a JSON file; the tests below assert on both ranks' files.
Checked: the reference (adapter disabled / "sft" only) and the policy log-probs,
greedy generation (also with different prompts per process that stop at
different steps), a baseline training step (SFT, WASP, FedMKT) split over the
processes, one MARD step (adapters move exactly as an unsharded AdamW
step would, the base does not), the client's switch from the "sft" to the
"policy" adapter after sharding, activation checkpointing, bf16 gathers over a
bf16 base with float32 adapters, the no-LoRA guard, and sharded and full
checkpoints restoring adapters and AdamW state bit-exactly (a full one also
into a single-device participant).
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

PROMPTS = ["Question: 2+3?\nAnswer: Let's think step by step.", "Question: what is 7*6?\nAnswer:"]
CHOSEN = [" 2+3=5. The answer is (B).", " 7*6=42. The answer is (A)."]
REJECTED = [" 2+3=6. The answer is (C).", " no idea"]


# ----------------------------------------------------------------------------- the worker
def _participant(role: str, seed: int, dtype: str = "float32", lora: bool = True):
    import torch
    from omegaconf import OmegaConf

    from ladalit.core.config import LoraConfig, ModelConfig, TrainConfig
    from ladalit.core.models import build_model
    from ladalit.core.participant import Participant
    m = OmegaConf.structured(ModelConfig(arch="qwen3", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                         intermediate_size=128, dtype=dtype, lora=LoraConfig(enabled=lora, r=4)))
    model, tok = build_model(m, seed=seed)
    train = OmegaConf.structured(TrainConfig(lr=1e-2, grad_clip=1.0, max_length=128))
    p = Participant(role, role, model, tok, train, m.lora)
    torch.manual_seed(seed + 1)
    with torch.no_grad():  # non-zero adapters, so that policy and reference differ
        for n, q in p.model.named_parameters():
            if "lora_B" in n:
                q.copy_(0.2 * torch.randn_like(q))
    return p


def _full_state(module) -> dict:
    """The full (gathered) state dict of a sharded module, or a plain copy."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    root = module._forward_module  # the strategy's ShardedRoot
    sd = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True))
    return {k.removeprefix("participant."): v.detach().clone() for k, v in sd.items()}


def _plain_state(p) -> dict:
    return {k: v.detach().clone() for k, v in p.state_dict().items()}


def _mard_step(fabric, participant, optimizer, keys):
    from ladalit.method.losses import mard_loss
    from ladalit.core.training import optimizer_step
    participant.train()
    pc, pr = participant.pair_logprobs(PROMPTS, CHOSEN, REJECTED)
    rc, rr = participant.reference_pair_logprobs(keys, PROMPTS, CHOSEN, REJECTED)
    loss = mard_loss(pc, pr, rc, rr, 0.1).mean()
    optimizer_step(fabric, participant, optimizer, loss)
    return loss.item()


def _plain_mard_step(p, optimizer, keys):
    """The same step without Fabric: the expected result."""
    import torch

    from ladalit.method.losses import mard_loss
    p.train()
    pc, pr = p.pair_logprobs(PROMPTS, CHOSEN, REJECTED)
    rc, rr = p.reference_pair_logprobs(keys, PROMPTS, CHOSEN, REJECTED)
    loss = mard_loss(pc, pr, rc, rr, 0.1).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([q for q in p.parameters() if q.requires_grad], 1.0)
    optimizer.step()
    return loss.item()


def _max_diff(a: dict, b: dict, keys) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in keys)


def worker(out_dir: Path) -> None:
    import torch
    from lightning.fabric import Fabric
    from omegaconf import OmegaConf

    import ladalit.components  # noqa: F401  registers the config sections RunConfig is built from
    from ladalit.core.config import RunConfig
    from ladalit.core.experiment import setup_participant
    from ladalit.scale.strategy import load_participant, make_parallelize_fn, save_participant

    cfg = OmegaConf.structured(RunConfig())
    cfg.fabric.devices, cfg.fabric.accelerator, cfg.fabric.strategy = 2, "cpu", "fsdp2"
    from ladalit.scale.strategy import fsdp2_strategy
    fabric = Fabric(accelerator="cpu", devices=2, strategy=fsdp2_strategy(cfg), precision="32-true")
    fabric.launch()
    torch.set_num_threads(1)
    r: dict = {"rank": fabric.global_rank, "world_size": fabric.world_size}

    # ---------------------------------------------------------------- server: base + "policy", reference = base
    server = _participant("server", seed=3)
    plain = copy.deepcopy(server)  # the same participant, never sharded
    plain_opt = plain.configure_optimizers()
    exp_gen = plain.generate_text(PROMPTS, max_new_tokens=8, batch_size=2)
    mine = [PROMPTS[fabric.global_rank]] * 2  # per process: its own prompts and number of decoding steps
    steps = 8 if fabric.global_rank == 0 else 2
    exp_mine = plain.generate_text(mine, max_new_tokens=steps, batch_size=2)
    exp_pol = plain.pair_logprobs(PROMPTS, CHOSEN, REJECTED)
    exp_ref = plain.reference_pair_logprobs(["a", "b"], PROMPTS, CHOSEN, REJECTED)
    before = _plain_state(plain)
    _plain_mard_step(plain, plain_opt, ["a", "b"])
    exp_after = _plain_state(plain)

    module = setup_participant(fabric, server)
    from torch.distributed.tensor import DTensor
    r["dtensor_params"] = sum(isinstance(q, DTensor) for q in module.parameters())
    r["params"] = sum(1 for _ in module.parameters())
    r["local_numel"] = sum(q.to_local().numel() if isinstance(q, DTensor) else q.numel() for q in module.parameters())
    r["full_numel"] = sum(q.numel() for q in plain.parameters())
    r["device"] = str(server.device)
    with torch.no_grad():
        pol = module.pair_logprobs(PROMPTS, CHOSEN, REJECTED)
    ref = module.reference_pair_logprobs(["a", "b"], PROMPTS, CHOSEN, REJECTED)
    r["policy_logprob_diff"] = max((x - y).abs().max().item() for x, y in zip(pol, exp_pol))
    r["reference_logprob_diff"] = max((x - y).abs().max().item() for x, y in zip(ref, exp_ref))
    r["reference_differs_from_policy"] = (ref[0] - pol[0]).abs().max().item()
    from transformers.distributed.fsdp import is_fsdp_managed_module
    r["generate_syncs_processes"] = is_fsdp_managed_module(server.model.get_base_model())
    r["generation"] = module.generate_text(PROMPTS, max_new_tokens=8, batch_size=2)
    # each process its own prompts, stopping after 8 or 2 steps: HF's synced_gpus (on because fully_shard
    # marks the HF model FSDP-managed) keeps the all-gathers matched; without it the processes' collectives
    # fall out of step
    r["generation_own_prompts"] = module.generate_local(mine, max_new_tokens=steps, batch_size=2)
    r["expected_generation_own_prompts"] = exp_mine
    r["expected_generation"] = exp_gen
    r["training_mode_restored"] = server.model.training

    opt = fabric.setup_optimizers(server.configure_optimizers())
    r["loss"] = _mard_step(fabric, module, opt, ["a", "b"])
    after = _full_state(module)
    lora = [k for k in before if "lora_" in k]
    base = [k for k in before if "lora_" not in k]
    r["lora_keys"], r["base_keys"] = len(lora), len(base)
    r["lora_change"] = _max_diff(after, before, lora)
    r["base_change"] = _max_diff(after, before, base)
    r["vs_unsharded_step"] = _max_diff(after, exp_after, before)

    # checkpoints: full (adapters only) and sharded, each restores the adapters exactly
    for kind, full in (("full", True), ("sharded", False)):
        path = out_dir / f"server-{kind}"
        save_participant(fabric, module, path, full=full, optimizer=opt, extra={"round": 7})
        saved = _full_state(module)
        _mard_step(fabric, module, opt, ["a", "b"])  # move away
        moved = _full_state(module)
        meta = load_participant(fabric, module, path, optimizer=opt, extra_keys=("round",))
        restored = _full_state(module)
        _mard_step(fabric, module, opt, ["a", "b"])  # from the restored weights and AdamW state
        again = _full_state(module)
        r[f"{kind}_moved"] = _max_diff(moved, saved, lora)
        r[f"{kind}_restore_diff"] = _max_diff(restored, saved, list(saved))
        r[f"{kind}_step_after_restore_diff"] = _max_diff(again, moved, list(saved))
        r[f"{kind}_meta"] = meta.get("round")
        r[f"{kind}_is_dir"] = path.is_dir()
        if full:
            if fabric.global_rank == 0:  # for the single-process load in the tests below
                torch.save({k: v for k, v in saved.items() if "lora_" in k}, out_dir / "server-full-adapters.pt")
            on_disk = torch.load(path, weights_only=False) if fabric.global_rank == 0 else {"model": {}}
            r["full_file_keys_are_lora_only"] = all("lora_" in k for k in on_disk["model"])
            r["full_file_has_optimizer"] = "optimizer" in on_disk

    # ---------------------------------------------------------------- bf16 base, fp32 LoRA, bf16 gathers
    fabric.strategy._parallelize_fn = make_parallelize_fn("bf16-mixed")
    bf = _participant("server", seed=7, dtype="bfloat16")
    r["bf16_dtypes"] = sorted({str(q.dtype) for q in bf.parameters()})
    module_b = setup_participant(fabric, bf)
    b_before = _full_state(module_b)
    opt_b = fabric.setup_optimizers(bf.configure_optimizers())
    r["bf16_loss"] = _mard_step(fabric, module_b, opt_b, ["e", "f"])
    b_after = _full_state(module_b)
    r["bf16_lora_change"] = _max_diff(b_after, b_before, [k for k in b_before if "lora_" in k])
    r["bf16_base_change"] = _max_diff(b_after, b_before, [k for k in b_before if "lora_" not in k])
    r["bf16_generation"] = module_b.generate_text(PROMPTS, max_new_tokens=4, batch_size=2)

    # ---------------------------------------------------------------- client: "sft" trains, then "policy"
    fabric.strategy._parallelize_fn = make_parallelize_fn("32-true", activation_checkpointing=True)
    client = _participant("client", seed=5)
    plain_c = copy.deepcopy(client)
    module_c = setup_participant(fabric, client)
    r["client_checkpointing"] = any(getattr(m, "gradient_checkpointing", False) for m in client.modules())
    # ❶ one SFT step on the "sft" adapter (sharded and plain)
    opt_c = fabric.setup_optimizers(client.configure_optimizers())
    from ladalit.core.training import optimizer_step
    module_c.train()
    optimizer_step(fabric, module_c, opt_c, module_c.sft_loss(PROMPTS, CHOSEN))
    popt = plain_c.configure_optimizers()
    plain_c.train()
    loss = plain_c.sft_loss(PROMPTS, CHOSEN)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([q for q in plain_c.parameters() if q.requires_grad], 1.0)
    popt.step()
    # freeze the reference (sft), train the policy adapter: requires_grad flips after sharding
    client.freeze_reference()
    plain_c.freeze_reference()
    c_before = _full_state(module_c)
    opt_c = fabric.setup_optimizers(client.configure_optimizers())
    _mard_step(fabric, module_c, opt_c, ["c", "d"])
    popt = plain_c.configure_optimizers()
    _plain_mard_step(plain_c, popt, ["c", "d"])
    c_after = _full_state(module_c)
    exp_c = _plain_state(plain_c)
    pol_keys = [k for k in c_before if ".policy." in k]
    sft_keys = [k for k in c_before if ".sft." in k]
    base_c = [k for k in c_before if "lora_" not in k]
    r["client_policy_change"] = _max_diff(c_after, c_before, pol_keys)
    r["client_sft_change"] = _max_diff(c_after, c_before, sft_keys)
    r["client_base_change"] = _max_diff(c_after, c_before, base_c)
    r["client_vs_unsharded"] = _max_diff(c_after, exp_c, list(exp_c))

    # ---------------------------------------------------------------- no LoRA
    fabric.strategy._parallelize_fn = make_parallelize_fn("32-true")
    plain_p = _participant("server", seed=9, lora=False)
    try:
        setup_participant(fabric, plain_p)
        r["no_lora_error"] = ""
    except ValueError as err:
        r["no_lora_error"] = str(err)
    plain_p = _participant("server", seed=9, lora=False)
    plain_p.freeze_reference()  # a reference frozen before sharding is sharded with the policy
    exp_nl = plain_p.pair_logprobs(PROMPTS, CHOSEN, REJECTED, model=plain_p.ref_model)
    module_nl = setup_participant(fabric, plain_p)
    got_nl = module_nl.reference_pair_logprobs(["g", "h"], PROMPTS, CHOSEN, REJECTED)
    r["no_lora_reference_diff"] = max((x - y).abs().max().item() for x, y in zip(got_nl, exp_nl))

    # ---------------------------------------------------------------- data parallel: each process its rows
    fabric.strategy._parallelize_fn = make_parallelize_fn("32-true")
    r.update(_data_parallel(fabric))

    (out_dir / f"rank{fabric.global_rank}.json").write_text(json.dumps(r))


def _data_parallel(fabric) -> dict:
    """Generation and MARD steps split over the 2 processes (3 rows: one padded; 1 row: rank 1 all padding)
    against the same calls on an unsharded copy under a single-process Fabric."""
    import torch
    from lightning.fabric import Fabric

    from ladalit.scale.data_parallel import world_of
    from ladalit.core.experiment import setup_participant
    from ladalit.method.distill import distill_step
    from ladalit.method.lada import Config as LadaConfig
    from ladalit.core.training import NonFiniteGuard
    prompts = PROMPTS + ["Question: 9-4?\nAnswer:"]
    chosen, rejected = CHOSEN + [" 9-4=5. The answer is (D)."], REJECTED + [" 13. The answer is (A)."]
    cfg = LadaConfig(beta=0.1)  # the `lada` section, the paper's MARD
    single = Fabric(accelerator="cpu", devices=1)

    def pair():  # the same participant sharded over the processes, and whole under one process
        sharded = _participant("server", seed=11)
        plain = copy.deepcopy(sharded)
        plain_m = setup_participant(single, plain)
        module = setup_participant(fabric, sharded)
        return (sharded, module, fabric.setup_optimizers(sharded.configure_optimizers()),
                plain, plain_m, single.setup_optimizers(plain.configure_optimizers()))

    sharded, module, opt, plain, plain_m, plain_opt = pair()
    out: dict = {"dp_rank_world": list(world_of(fabric))}
    out["dp_generation"] = module.generate_text(prompts, max_new_tokens=6, batch_size=2)
    out["dp_expected_generation"] = plain_m.generate_text(prompts, max_new_tokens=6, batch_size=2)
    weights = torch.tensor([0.5, 0.5, 1.0])  # rows 0 and 1: two clients' answers to one sample (Eq. 4)
    for name, idx, w in (("three", [0, 1, 2], weights), ("one", [2], None)):
        sharded, module, opt, plain, plain_m, plain_opt = pair()
        pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
        keys = [(name, i) for i in idx]
        args = (pick(prompts), pick(chosen), pick(rejected))
        b, a = distill_step(cfg, fabric, module, opt, NonFiniteGuard("raise"), 1, 0, keys, *args, weights=w)
        eb, ea = distill_step(cfg, single, plain_m, plain_opt, NonFiniteGuard("raise"), 1, 0, keys, *args, weights=w)
        out[f"dp_{name}_before_diff"] = (b - eb).abs().max().item()
        out[f"dp_{name}_after_diff"] = (a - ea).abs().max().item()
        out[f"dp_{name}_rows"] = len(b)
        full, exp = _full_state(module), _plain_state(plain)
        out[f"dp_{name}_weights_diff"] = _max_diff(full, exp, [k for k in exp if "lora_" in k])
        out[f"dp_{name}_moved"] = (a - b).abs().max().item()
        # the gradients the step used (AdamW's first step amplifies rounding where a gradient is near 0)
        grads = {n: q.grad.full_tensor() for n, q in sharded.named_parameters() if q.grad is not None}
        exp_g = {n: q.grad for n, q in plain.named_parameters() if q.grad is not None}
        out[f"dp_{name}_grad_keys"] = sorted(grads) == sorted(exp_g) and len(grads) > 0
        out[f"dp_{name}_grad_rel_diff"] = max((grads[n] - exp_g[n]).abs().max().item() for n in exp_g) / max(
            exp_g[n].abs().max().item() for n in exp_g)
        out[f"dp_{name}_reference_passes"] = sharded.reference_passes  # this process's share only
        # the same step through the training skeleton (ladalit.core.training.rows_step)
        from ladalit.core.training import rows_step
        from ladalit.method.distill import per_sample_loss
        sharded, module, opt, plain, plain_m, plain_opt = pair()
        b2, a2 = rows_step(fabric, module, opt, NonFiniteGuard("raise"), 1, 0, len(idx), lambda rows: per_sample_loss(
            cfg, module, *[[xs[i] for i in rows] for xs in (keys, *args)]), weights=w)
        out[f"dp_{name}_rows_step_diff"] = max((b2 - eb).abs().max().item(), (a2 - ea).abs().max().item())
        out[f"dp_{name}_rows_step_weights_diff"] = _max_diff(_full_state(module), exp, [k for k in exp if "lora_" in k])

    # Every method's training goes through one skeleton (ladalit.core.training.train_rows): SFT (round 1's
    # reference, every baseline), WASP's vote-weighted SFT and FedMKT's LM + KD step, 3 rows split over the
    # processes vs the whole minibatch on one
    from ladalit.baselines import fedmkt, wasp
    from ladalit.core.training import supervised_finetune
    targets = fedmkt.own_targets(fedmkt.snapshot(_participant("server", seed=11), prompts, chosen, 4, 8), 1.0)
    steps = {
        "sft": lambda f, m, o: supervised_finetune(f, m, o, prompts, chosen, 1, 0, NonFiniteGuard("raise"))[0],
        "wasp": lambda f, m, o: wasp.weighted_finetune(f, m, o, prompts, chosen, torch.tensor([0.5, 2.0, 1.0]), 1, 0,
                                                       NonFiniteGuard("raise"), 1)[0],
        "fedmkt": lambda f, m, o: fedmkt.distill(f, m, o, prompts, chosen, targets, 0.3, 1, 0,
                                                 NonFiniteGuard("raise"), 1)["loss"],
    }
    for name, step in steps.items():
        sharded, module, opt, plain, plain_m, plain_opt = pair()
        loss, expected = step(fabric, module, opt), step(single, plain_m, plain_opt)
        out[f"dp_{name}_loss_diff"] = abs(loss - expected)
        grads = {n: q.grad.full_tensor() for n, q in sharded.named_parameters() if q.grad is not None}
        exp_g = {n: q.grad for n, q in plain.named_parameters() if q.grad is not None}
        out[f"dp_{name}_grad_keys"] = sorted(grads) == sorted(exp_g) and len(grads) > 0
        out[f"dp_{name}_grad_rel_diff"] = max((grads[n] - exp_g[n]).abs().max().item() for n in exp_g) / max(
            exp_g[n].abs().max().item() for n in exp_g)
        full, exp = _full_state(module), _plain_state(plain)
        out[f"dp_{name}_weights_diff"] = _max_diff(full, exp, [k for k in exp if "lora_" in k])
    return out


# ----------------------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fsdp")


@pytest.fixture(scope="module")
def ranks(out_dir):
    from tests.gloo_workers import run_ranks  # the pytest process only: the workers never import it
    return run_ranks(__file__, out_dir)


def test_two_processes_shard_every_parameter(ranks):
    for r in ranks:
        assert r["world_size"] == 2
        assert r["dtensor_params"] == r["params"] > 0
        # each process holds about half of the parameters
        assert r["local_numel"] < 0.6 * r["full_numel"]
        assert r["device"] == "cpu"


def test_policy_and_reference_logprobs_match_the_unsharded_participant(ranks):
    for r in ranks:
        assert r["policy_logprob_diff"] < 1e-4
        assert r["reference_logprob_diff"] < 1e-4  # server reference = adapter disabled
        assert r["reference_differs_from_policy"] > 1e-3


def test_greedy_generation_runs_under_the_strategy_and_matches(ranks):
    for r in ranks:
        assert r["generation"] == r["expected_generation"]
        assert any(r["generation"])
        assert r["generate_syncs_processes"]
        assert r["generation_own_prompts"] == r["expected_generation_own_prompts"]
        assert r["training_mode_restored"] is True
    assert ranks[0]["generation_own_prompts"] != ranks[1]["generation_own_prompts"]


def test_each_process_generates_its_share_and_all_get_every_answer(ranks):
    for r in ranks:
        assert r["dp_rank_world"][1] == 2
        assert r["dp_generation"] == r["dp_expected_generation"] and len(r["dp_generation"]) == 3


@pytest.mark.parametrize("rows", ["three", "one"])
def test_a_mard_step_split_over_processes_equals_the_whole_batch_on_one(ranks, rows):
    """3 weighted rows (rank 1: one real row and one padding row) and 1 row (rank 1: padding only):
    per-row losses before and after, and the adapters after the step, as without splitting."""
    for r in ranks:
        assert r[f"dp_{rows}_rows"] == (3 if rows == "three" else 1)
        assert r[f"dp_{rows}_moved"] > 1e-4  # the step changed the losses
        assert r[f"dp_{rows}_before_diff"] < 1e-5 and r[f"dp_{rows}_after_diff"] < 1e-5
        assert r[f"dp_{rows}_grad_keys"] and r[f"dp_{rows}_grad_rel_diff"] < 1e-5
        assert r[f"dp_{rows}_weights_diff"] < 1e-4  # lr 1e-2: an AdamW step moves each weight by ~1e-2
        assert r[f"dp_{rows}_rows_step_diff"] < 1e-5 and r[f"dp_{rows}_rows_step_weights_diff"] < 1e-4  # rows_step
        # each process ran the reference on its share: 2 rows of 3 (rank 1: row 2 + padding), 1 of 1
        assert r[f"dp_{rows}_reference_passes"] == (2 if rows == "three" else 1)


@pytest.mark.parametrize("step", ["sft", "wasp", "fedmkt"])
def test_a_baseline_training_step_split_over_processes_equals_the_whole_minibatch_on_one(ranks, step):
    """supervised_finetune, wasp.weighted_finetune and fedmkt.distill under FSDP2: each process its share
    of the rows (ladalit.core.training), the same reported loss, gradients and adapters as one process."""
    for r in ranks:
        assert r[f"dp_{step}_loss_diff"] < 1e-5  # the reported loss is the whole minibatch's
        assert r[f"dp_{step}_grad_keys"] and r[f"dp_{step}_grad_rel_diff"] < 1e-5
        assert r[f"dp_{step}_weights_diff"] < 1e-4


def test_one_mard_step_moves_only_the_adapters_like_an_unsharded_step(ranks):
    for r in ranks:
        assert r["lora_keys"] > 0 and r["base_keys"] > 0
        assert r["lora_change"] > 1e-4
        assert r["base_change"] == 0.0
        assert r["vs_unsharded_step"] < 1e-5


def test_client_switches_from_sft_to_policy_adapter_after_sharding_with_checkpointing(ranks):
    for r in ranks:
        assert r["client_checkpointing"]
        assert r["client_policy_change"] > 1e-4  # the policy adapter was frozen when sharded
        assert r["client_sft_change"] == 0.0
        assert r["client_base_change"] == 0.0
        assert r["client_vs_unsharded"] < 1e-5


def test_without_lora_the_reference_must_be_frozen_before_sharding(ranks):
    for r in ranks:
        assert "model.lora.enabled=true" in r["no_lora_error"]
        assert r["no_lora_reference_diff"] < 1e-4


def test_bf16_gathers_train_float32_adapters_on_a_bfloat16_base(ranks):
    for r in ranks:
        assert r["bf16_dtypes"] == ["torch.bfloat16", "torch.float32"]  # peft keeps adapters in float32
        assert r["bf16_loss"] == r["bf16_loss"]  # finite
        assert r["bf16_lora_change"] > 1e-4
        assert r["bf16_base_change"] == 0.0
        assert len(r["bf16_generation"]) == 2


@pytest.mark.parametrize("kind", ["full", "sharded"])
def test_checkpoint_round_trip_restores_the_adapters_exactly(ranks, kind):
    for r in ranks:
        assert r[f"{kind}_moved"] > 0  # the step in between changed the adapters
        assert r[f"{kind}_restore_diff"] == 0.0
        assert r[f"{kind}_meta"] == 7
        assert r[f"{kind}_is_dir"] is (kind == "sharded")
        assert r[f"{kind}_step_after_restore_diff"] == 0.0  # weights and AdamW state came back
    assert ranks[0]["full_file_keys_are_lora_only"] and ranks[0]["full_file_has_optimizer"]


def test_a_full_fsdp2_checkpoint_loads_into_a_single_device_participant(ranks, out_dir):
    """Adapters and AdamW state saved gathered under fsdp2 restore under the default strategy, and back."""
    import torch
    from lightning.fabric import Fabric

    from ladalit.core.experiment import setup_participant
    from ladalit.scale.strategy import load_participant, save_participant
    fabric = Fabric(accelerator="cpu", devices=1)
    p = _participant("server", seed=3)
    module = setup_participant(fabric, p)
    opt = fabric.setup_optimizers(p.configure_optimizers())
    meta = load_participant(fabric, module, out_dir / "server-full", optimizer=opt, extra_keys=("round",))
    expected = torch.load(out_dir / "server-full-adapters.pt")
    got = p.state_dict()
    assert meta["round"] == 7 and expected
    for k, v in expected.items():
        assert torch.equal(got[k], v), k
    assert len(opt.optimizer.state) == len(expected) and all("exp_avg" in s for s in opt.optimizer.state.values())
    # single device -> file -> single device: same adapters and optimizer state
    save_participant(fabric, module, out_dir / "single", full=False, optimizer=opt, extra={"round": 8})
    q = _participant("server", seed=4)  # different weights until loaded
    module_q = setup_participant(fabric, q)
    opt_q = fabric.setup_optimizers(q.configure_optimizers())
    assert load_participant(fabric, module_q, out_dir / "single", optimizer=opt_q, extra_keys=("round",))["round"] == 8
    for k, v in expected.items():
        assert torch.equal(q.state_dict()[k], v), k
    for a, b in zip(opt.optimizer.state.values(), opt_q.optimizer.state.values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
