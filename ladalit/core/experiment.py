"""Assemble a run from its config: Fabric, the federated data split, the participants."""
from __future__ import annotations

from dataclasses import dataclass, field

import lightning as L

from ladalit.core.config import ConfigError, mixture_of, participant_configs
from ladalit.core.hooks import Hooks
from ladalit.core.sources import DATA_SETS
from ladalit.data.loaders import LOADERS
from ladalit.data.loaders import load_records as read_records
from ladalit.data.records import MCRecord
from ladalit.data.split import (FederatedData, MixtureError, check_mixture_fits, domain_groups, drop_duplicate_questions,
                                federated_split, normalise_options, skew_mixture)
from ladalit.core.models import build_model, check_model_source
from ladalit.scale.offload import Residency
from ladalit.core.seeds import name_seed
from ladalit.scale.strategy import fsdp2_strategy, is_sharded, loads_sharded  # loads_sharded: fsdp2 + hub, built on meta
from ladalit.core.participant import Participant
from ladalit.core.prompts import DATA_FAMILY, ONE_SHOT_EXAMPLES

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
    # the harness's analysis hooks (ladalit.core.hooks; the demo world's controls): none by default
    hooks: Hooks = field(default_factory=Hooks)


def load_records(cfg) -> list[MCRecord]:
    d = cfg.data
    if d.name in DATA_SETS:  # generated, not read: registered by a layer above core (ladalit.demo.sources)
        return DATA_SETS[d.name](cfg)
    if d.name not in LOADERS:  # a name the config allows whose module was not imported
        raise ConfigError(f"config key 'data.name': {d.name!r} is not registered "
                          "(import ladalit.components before loading data)")
    return read_records(d.name, d.path, d.hub_id, d.split)


def data_source(cfg) -> str:
    d = cfg.data
    return d.path or d.hub_id or f"data.name={d.name}"


def prepared_records(cfg) -> list[MCRecord]:
    """Load, drop repeated questions, check the counts against the split (before any model is built),
    normalise the options: the records the split deals, with every label still on them."""
    source = data_source(cfg)
    records = drop_duplicate_questions(load_records(cfg), source)
    check_records_fit(cfg, records, source)
    return normalise_options(records, cfg.data.num_options, cfg.seed)


def load_data(cfg) -> FederatedData:
    d = cfg.data
    return federated_split(prepared_records(cfg), len(cfg.clients), d.train_per_client, d.test_per_client,
                           d.public_size, cfg.seed, d.domain_skew, mixture_of(cfg))


def check_records_fit(cfg, records: list[MCRecord], source: str) -> None:
    """ConfigError naming the keys when the records cannot fill the split or the options."""
    d, k = cfg.data, len(cfg.clients)
    need = k * (d.train_per_client + d.test_per_client) + d.public_size
    if len(records) < need:
        raise ConfigError(
            f"config keys 'data.train_per_client', 'data.test_per_client', 'data.public_size': the split needs {need} "
            f"records ({k} clients x ({d.train_per_client} train + {d.test_per_client} test) + {d.public_size} "
            f"public), {source} has {len(records)}")
    for rec in records:
        distinct = len({o for o in rec.options if o != rec.gold_text}) + 1
        if distinct < d.num_options:
            raise ConfigError(f"config key 'data.num_options': {d.num_options}, but record {rec.id} of {source} has "
                              f"{distinct} distinct options")
    mixture = mixture_of(cfg)
    if mixture is not None:
        try:
            check_mixture_fits(mixture, records, d.train_per_client, d.test_per_client, d.public_size)
        except MixtureError as err:
            raise ConfigError(f"config key 'data.mixture.{err.key}': {err.message} ({source})") from None
    if d.domain_skew > 0:
        per_client = d.train_per_client + d.test_per_client
        own = round(d.domain_skew * per_client)
        for i, group in enumerate(domain_groups(records, k)):
            have = sum(r.domain in group for r in records)
            if have < own:
                raise ConfigError(f"config key 'data.domain_skew': {d.domain_skew} needs {own} records from client "
                                  f"{i + 1}'s domains {sorted(group)}, {source} has {have}")
    if 0 < d.domain_skew < 1:
        try:
            check_mixture_fits(skew_mixture(records, k, d.domain_skew), records, d.train_per_client,
                               d.test_per_client, d.public_size)
        except ValueError as err:  # MixtureError: a domain asked for more than it has
            raise ConfigError(f"config key 'data.domain_skew': {d.domain_skew} cannot be drawn from {source}: "
                              f"{getattr(err, 'message', str(err))}") from None


def one_shot_example(cfg) -> MCRecord:
    return ONE_SHOT_EXAMPLES[DATA_FAMILY[cfg.data.name]]


def make_fabric(cfg) -> L.Fabric:
    f = cfg.fabric
    strategy = "auto"
    if f.strategy == "fsdp2":
        strategy = fsdp2_strategy(cfg)
    try:
        fabric = L.Fabric(accelerator=f.accelerator, devices=f.devices, num_nodes=f.num_nodes,
                          strategy=strategy, precision=f.precision)
    except (RuntimeError, ValueError) as err:  # e.g. accelerator=cuda without a GPU, more devices than there are
        raise ConfigError(f"config key 'fabric.accelerator': accelerator={f.accelerator} devices={f.devices} "
                          f"cannot run here ({_first_line(err)})") from None
    return fabric


def build_participant(cfg, name: str, role: str, pcfg) -> Participant:
    key = "server" if role == "server" else f"clients.{name}"
    try:
        model, tok = build_model(pcfg.model, seed=name_seed(cfg.seed, name), key=key, meta=loads_sharded(cfg, pcfg),
                                 quiet=cfg.quiet)
    except OSError as err:  # hub unreachable (offline, firewall), a missing file: transformers raises OSError
        if pcfg.model.source != "hub":
            raise
        raise ConfigError(f"config key '{key}.model.name_or_path': {pcfg.model.name_or_path!r} could not be loaded "
                          f"({_first_line(err)}); check the network, or download it and set HF_HUB_OFFLINE=1, "
                          "or point name_or_path at a local directory") from None
    return Participant(name, role, model, tok, pcfg.train, pcfg.model.lora)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def setup_participant(fabric: L.Fabric, participant: Participant, residency: Residency | None = None):
    """Fabric-wrap a participant. Under FSDP2 its shards go onto the devices (moving the whole model first
    would not fit); with an enabled `residency` it stays parked on the CPU until its first call."""
    parked = residency is not None and residency.enabled
    module = fabric.setup_module(participant, move_to_device=not (parked or is_sharded(fabric)))
    for m in FORWARD_METHODS:
        module.mark_forward_method(m)
    if residency is not None:
        residency.attach(module)
    return module


def make_residency(cfg, fabric: L.Fabric, offload: bool | None = None) -> Residency:
    """`fabric.offload_idle` on an accelerator: one participant on the device at a time.

    Not under FSDP2 (every participant is already split across the devices), not on the CPU (nothing to
    save); `offload=True` forces it on, e.g. to test the moves on the CPU."""
    if offload is None:
        offload = cfg.fabric.offload_idle and fabric.device.type != "cpu" and not is_sharded(fabric)
    return Residency(fabric.device, enabled=offload)


def build_experiment(cfg, fabric: L.Fabric | None = None, offload: bool | None = None) -> Experiment:
    for key, pcfg in participant_configs(cfg):
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


def public_by_id(exp, sample_id: str):
    if not hasattr(exp, "_public_index"):
        exp._public_index = {x.id: x for x in exp.data.public}
    return exp._public_index[sample_id]
