"""park / activate: the round trip is bit-exact, the optimizer keeps working, every tensor really moves the
first time, and a park after that copies only what can change (trainable weights, gradients, optimizer state)."""
from __future__ import annotations

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from ladalit.core.config import LoraConfig, ModelConfig, TrainConfig
from ladalit.core.experiment import setup_participant
from ladalit.method.losses import mard_loss
from ladalit.core.models import build_model
from ladalit.scale.offload import Residency, activate, park
from ladalit.core.participant import Participant
from ladalit.core.training import optimizer_step

PROMPTS = ["Question: 2+3?\nAnswer:", "Question: 7*6?\nAnswer:"]
CHOSEN = [" 2+3=5. The answer is (B).", " 42. The answer is (A)."]
REJECTED = [" 6. The answer is (C).", " no idea"]


def setup(lora: bool):
    """A Fabric-wrapped client after one MARD step, so that AdamW has state."""
    torch.manual_seed(0)
    m = OmegaConf.structured(ModelConfig(arch="qwen3", lora=LoraConfig(enabled=lora, r=4)))
    model, tok = build_model(m, seed=0)
    p = Participant("c", "client", model, tok, OmegaConf.structured(TrainConfig(lr=1e-2, max_length=96)), m.lora)
    fabric = L.Fabric(accelerator="cpu", devices=1)
    p.freeze_reference()
    module = setup_participant(fabric, p)
    opt = fabric.setup_optimizers(p.configure_optimizers())
    step(fabric, module, opt, "a")
    return fabric, module, opt


def step(fabric, module, opt, key):
    pc, pr = module.pair_logprobs(PROMPTS, CHOSEN, REJECTED)
    rc, rr = module.reference_pair_logprobs([(key, 0), (key, 1)], PROMPTS, CHOSEN, REJECTED)
    optimizer_step(fabric, module, opt, mard_loss(pc, pr, rc, rr, 0.1).mean())


def tensors(module, opt) -> dict:
    out = {f"param:{n}": p for n, p in module.module.named_parameters()}
    out |= {f"buffer:{n}": b for n, b in module.module.named_buffers()}
    names = {id(p): n for n, p in module.module.named_parameters()}
    for p, st in opt.optimizer.state.items():
        for k, v in st.items():
            out[f"state:{names[id(p)]}:{k}"] = v
    return out


def snapshot(module, opt) -> dict:
    return {k: v.detach().clone() for k, v in tensors(module, opt).items()}


@pytest.mark.parametrize("lora", [True, False])
def test_park_then_activate_is_bit_exact_and_moves_every_tensor(lora):
    fabric, module, opt = setup(lora)
    before = snapshot(module, opt)
    params = {n: p for n, p in module.module.named_parameters()}
    assert any(k.startswith("buffer:") for k in before)  # rotary inv_freq (and the reference copy's)
    assert sum(k.endswith(":exp_avg") for k in before) > 0
    ptrs = {k: v.data_ptr() for k, v in tensors(module, opt).items()}

    assert park(module, opt)
    parked = tensors(module, opt)
    for k, v in parked.items():
        assert v.device.type == "cpu"
        assert torch.equal(v, before[k]), k
        if not k.endswith(":step"):  # a fresh copy, not the old storage
            assert v.data_ptr() != ptrs[k], k
    for n, p in module.module.named_parameters():
        assert p is params[n]  # the optimizer still holds the same parameter objects

    assert activate(module, opt, "cpu")
    back = tensors(module, opt)
    for k, v in back.items():
        assert torch.equal(v, before[k]) and v.dtype == before[k].dtype, k
    assert module.device == torch.device("cpu")
    assert opt.optimizer.param_groups[0]["params"][0] is next(p for p in module.module.parameters() if p.requires_grad)


@pytest.mark.parametrize("lora", [True, False])
def test_optimizer_step_after_the_round_trip_equals_a_step_without_it(lora):
    fabric_a, a, opt_a = setup(lora)
    fabric_b, b, opt_b = setup(lora)
    start = snapshot(b, opt_b)
    assert park(a, opt_a) and activate(a, opt_a, "cpu")
    step(fabric_a, a, opt_a, "b")
    step(fabric_b, b, opt_b, "b")
    sa, sb = snapshot(a, opt_a), snapshot(b, opt_b)
    assert sa.keys() == sb.keys() == start.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert any(not torch.equal(sb[k], start[k]) for k in sb if k.startswith("param:"))  # the step did something


def test_activate_sends_every_weight_grad_and_optimizer_state_to_the_device(monkeypatch):
    """No GPU here: the copy is intercepted; it must be asked for every tensor, with the target device."""
    import ladalit.scale.offload as offload
    fabric, module, opt = setup(lora=True)
    assert park(module, opt)  # the first park: every tensor gets its host copy
    expected = {v.data_ptr() for k, v in tensors(module, opt).items() if not k.endswith(":step")}
    expected |= {p.grad.data_ptr() for p in module.module.parameters() if p.grad is not None}
    assert any(p.grad is not None for p in module.module.parameters())
    real, asked = offload._move, {}

    def fake_move(t, device, pin):
        asked[t.data_ptr()] = (device, pin)
        return real(t, torch.device("cpu"), False)

    monkeypatch.setattr(offload, "_move", fake_move)
    assert activate(module, opt, "cuda:1")
    assert set(asked) == expected
    assert {d for d, _ in asked.values()} == {torch.device("cuda:1")}
    assert not any(pin for _, pin in asked.values())
    # where the participant now puts its inputs (Participant._encode uses self.device)
    assert module.device == torch.device("cuda:1") and module.module.device == torch.device("cuda:1")
    # the step counters stay on the CPU (torch's AdamW keeps them there unless capturable/fused)
    steps = [v for k, v in tensors(module, opt).items() if k.endswith(":step")]
    assert steps and all(v.data_ptr() not in asked for v in steps)

    asked.clear()
    moved = park(module, opt)
    # back on the host: the trainable (LoRA) weights, their gradients and the optimizer state are copied;
    # the frozen base and the buffers still hold the copies activate made, unwritten: they move no byte
    assert moved.bytes == changing_bytes(module, opt) < sum(_nbytes(v) for v in tensors(module, opt).values())
    assert {d for d, _ in asked.values()} <= {torch.device("cpu")}
    assert module.device == torch.device("cpu")


def _nbytes(t):
    return t.numel() * t.element_size()


def changing_bytes(module, opt) -> int:
    """Trainable parameters + their gradients + the optimizer state that moves (not the CPU step counters)."""
    params = [p for p in module.module.parameters() if p.requires_grad]
    grads = [p.grad for p in module.module.parameters() if p.grad is not None]
    state = [v for st in opt.optimizer.state.values() for k, v in st.items() if k != "step"]
    return sum(_nbytes(t) for t in params + grads + state)


@pytest.mark.parametrize("lora", [True, False])
def test_every_park_after_the_first_moves_only_trainable_weights_grads_and_optimizer_state(lora):
    """Two participants taking turns, a MARD step each turn: the byte counters, and one host copy per tensor."""
    fabric, a, opt_a = setup(lora)
    _, b, opt_b = setup(lora)
    res = Residency("cpu")
    res.attach(a)
    res.attach(b)
    first = res.parked.bytes
    assert first == sum(_nbytes(v) for m, o in ((a, opt_a), (b, opt_b)) for k, v in tensors(m, o).items()
                        if not k.endswith(":step")) + sum(_nbytes(p.grad) for m in (a, b)
                                                           for p in m.module.parameters() if p.grad is not None)
    frozen = [p for p in a.module.parameters() if not p.requires_grad]
    assert frozen  # LoRA: the base; no LoRA: the reference copy
    host_ptrs = [p.data_ptr() for p in frozen]
    everything = sum(_nbytes(v) for v in tensors(a, opt_a).values())
    for turn in range(3):
        for m, o, key in ((a, opt_a, f"a{turn}"), (b, opt_b, f"b{turn}")):
            before = res.parked.bytes
            step(fabric, m, o, key)  # activates m (parking the other one), then trains it
            other, other_opt = (b, opt_b) if m is a else (a, opt_a)
            if res.swaps > 1:  # the other one was parked by this activation
                assert res.parked.bytes - before == changing_bytes(other, other_opt) < everything
    assert res.resident is b.module  # a parked 3 times after its first park
    assert [p.data_ptr() for p in frozen] == host_ptrs  # a's frozen weights: the same host copy, allocated once
    assert res.activated.bytes > 0 and res.activated.tensors > 0 and res.swaps == 6


def test_a_frozen_weight_written_on_the_device_is_copied_back():
    """The version counter sees an in-place write (here a no_grad copy_, as load_state_dict does)."""
    fabric, a, opt = setup(lora=True)
    res = Residency("cpu")
    res.attach(a)
    res.use(a)
    name, w = next((n, p) for n, p in a.module.named_parameters() if not p.requires_grad)
    with torch.no_grad():
        w.add_(1.0)
    expected = w.detach().clone()
    moved = park(a)
    assert moved.bytes >= _nbytes(w) + changing_bytes(a, opt)
    assert torch.equal(w, expected)
    activate(a, device="cpu")
    assert torch.equal(dict(a.module.named_parameters())[name], expected)


def test_a_sharded_participant_is_left_alone(tmp_path):
    """FSDP2 owns the shard storage: park/activate report None and move nothing."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
        opt = torch.optim.AdamW(model.parameters())
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
        ptrs = [p.to_local().data_ptr() for p in model.parameters()]
        assert park(model, opt) is None
        assert activate(model, opt, "meta") is None
        assert [p.to_local().data_ptr() for p in model.parameters()] == ptrs
        assert all(p.device.type == "cpu" for p in model.parameters())
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- Residency in a whole run
def test_residency_moves_the_called_participant_in_and_the_previous_one_out():
    fabric, a, opt_a = setup(lora=True)
    _, b, _ = setup(lora=False)
    res = Residency("cpu")
    res.attach(a)
    res.attach(b)
    assert res.resident is None and res.swaps == 0
    a_ptr = next(a.module.parameters()).data_ptr()
    a.pair_logprobs(PROMPTS, CHOSEN, REJECTED)  # any marked method goes through the hook
    assert res.resident is a.module and res.swaps == 1
    assert next(a.module.parameters()).data_ptr() != a_ptr  # really copied in
    step(fabric, a, opt_a, "b")  # several calls in a row: no further move
    assert res.swaps == 1
    b.generate_text(PROMPTS, 4, 2)
    assert res.resident is b.module and res.swaps == 2
    res.use(a)
    assert res.resident is a.module and res.swaps == 3


def _run(method, offload: bool, tmp_path):
    from ladalit.core.channel import Channel
    from ladalit.core.config import load_config
    from ladalit.core.experiment import build_experiment
    from ladalit.core.results import Results
    from ladalit import registry
    from ladalit.core.rounds import run_in_process
    cfg = load_config(["conf=smoke.yaml", f"method={method}", f"output_dir={tmp_path}", "quiet=true",
                       "clients.client1.model.lora.enabled=true"])
    exp = build_experiment(cfg, offload=offload)
    parts = [exp.server, *exp.clients.values()]
    wrong = []

    def check(module, args):  # every model forward runs on the resident participant
        for p in parts:
            if module is p.module.model or module is p.module.ref_model:
                if exp.residency.enabled and exp.residency.resident is not p.module:
                    wrong.append((p.module.name, exp.residency.resident and exp.residency.resident.name))
    handle = torch.nn.modules.module.register_module_forward_pre_hook(check)
    try:
        results = Results()
        run_in_process(registry.roles(method), exp, Channel(), results)
    finally:
        handle.remove()
    return exp, results, wrong


@pytest.mark.parametrize("method", ["lada", "fedmkt"])
def test_a_run_with_offloading_equals_one_without_and_only_the_resident_computes(method, tmp_path):
    exp_on, on, wrong = _run(method, True, tmp_path)
    assert wrong == []
    assert exp_on.residency.swaps > len(exp_on.clients) + 1  # participants really took turns
    _, off, _ = _run(method, False, tmp_path)
    assert on.accuracy == off.accuracy
    assert on.train == off.train
