"""Assemble a run from its config: Fabric, the federated data split, the participants."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import lightning as L

from ladalit.data.records import MCRecord
from ladalit.data.split import FederatedData, federated_split, normalise_options
from ladalit.models import build_model, check_model_source
from ladalit.offload import Residency
from ladalit.participant import Participant
from ladalit.prompts import DATA_FAMILY, ONE_SHOT_EXAMPLES

# marked on each Fabric-wrapped participant, so they run through the strategy's forward
FORWARD_METHODS = ("sequence_logprobs", "pair_logprobs", "token_logprobs", "reference_pair_logprobs",
                   "sft_loss", "generate_text", "generate_local")


@dataclass
class Experiment:
    cfg: object
    fabric: L.Fabric
    data: FederatedData
    example: MCRecord  # the worked example of one-shot prompts
    server: Participant
    clients: dict[str, Participant]
    residency: Residency = field(default_factory=lambda: Residency("cpu", enabled=False))


def load_records(cfg) -> list[MCRecord]:
    d = cfg.data
    if d.name == "synthetic":
        from ladalit import synthetic
        return synthetic.generate(synthetic.SyntheticConfig(
            num_records=d.synthetic.num_records, min_steps=d.synthetic.min_steps,
            max_steps=d.synthetic.max_steps, seed=cfg.seed))
    from ladalit.data.loaders import load_records as load
    return load(d.name, d.path, d.hub_id, d.split)


def load_data(cfg) -> FederatedData:
    d = cfg.data
    records = normalise_options(load_records(cfg), d.num_options, cfg.seed)
    return federated_split(records, len(cfg.clients), d.train_per_client, d.test_per_client,
                           d.public_size, cfg.seed, d.domain_skew)


def one_shot_example(cfg) -> MCRecord:
    return ONE_SHOT_EXAMPLES[DATA_FAMILY[cfg.data.name]]


def make_fabric(cfg) -> L.Fabric:
    f = cfg.fabric
    strategy = "auto"
    if f.strategy == "fsdp2":
        from ladalit.strategy import fsdp2_strategy
        strategy = fsdp2_strategy(cfg)
    fabric = L.Fabric(accelerator=f.accelerator, devices=f.devices, num_nodes=f.num_nodes,
                      strategy=strategy, precision=f.precision)
    return fabric


def name_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


def build_participant(cfg, name: str, role: str, pcfg) -> Participant:
    key = "server" if role == "server" else f"clients.{name}"
    from ladalit.strategy import loads_sharded  # fsdp2 + hub: built on meta, rank 0 reads the weights
    model, tok = build_model(pcfg.model, seed=name_seed(cfg.seed, name), key=key, meta=loads_sharded(cfg, pcfg))
    return Participant(name, role, model, tok, pcfg.train, pcfg.model.lora)


def setup_participant(fabric: L.Fabric, participant: Participant, residency: Residency | None = None):
    """Fabric-wrap a participant. Under FSDP2 its shards go onto the devices (moving the whole model first
    would not fit); with an enabled `residency` it stays parked on the CPU until its first call."""
    from lightning.fabric.strategies import ModelParallelStrategy
    parked = residency is not None and residency.enabled
    module = fabric.setup_module(participant, move_to_device=not (parked or isinstance(fabric.strategy, ModelParallelStrategy)))
    for m in FORWARD_METHODS:
        module.mark_forward_method(m)
    if residency is not None:
        residency.attach(module)
    return module


def make_residency(cfg, fabric: L.Fabric, offload: bool | None = None) -> Residency:
    """`fabric.offload_idle` on an accelerator: one participant on the device at a time.

    Not under FSDP2 (every participant is already split across the devices), not on the CPU (nothing to
    save); `offload=True` forces it on, e.g. to test the moves on the CPU."""
    from lightning.fabric.strategies import ModelParallelStrategy
    if offload is None:
        offload = (cfg.fabric.offload_idle and fabric.device.type != "cpu"
                   and not isinstance(fabric.strategy, ModelParallelStrategy))
    return Residency(fabric.device, enabled=offload)


def build_experiment(cfg, fabric: L.Fabric | None = None, offload: bool | None = None) -> Experiment:
    for key, pcfg in [("server", cfg.server)] + [(f"clients.{n}", c) for n, c in cfg.clients.items()]:
        check_model_source(key, pcfg.model)
    fabric = fabric or make_fabric(cfg)
    fabric.launch()
    fabric.seed_everything(cfg.seed, verbose=False)
    data = load_data(cfg)
    residency = make_residency(cfg, fabric, offload)
    server = setup_participant(fabric, build_participant(cfg, "server", "server", cfg.server), residency)
    clients = {n: setup_participant(fabric, build_participant(cfg, n, "client", c), residency)
               for n, c in cfg.clients.items()}
    return Experiment(cfg, fabric, data, one_shot_example(cfg), server, clients, residency)
