"""Structured configs: every knob of a run, validated at start.

`load_config(["conf=smoke.yaml", "rounds=3", ...])` merges, in order, the
dataclass defaults, the YAML file and the dotted command-line overrides, then
validates names and ranges. Any problem raises `ConfigError` whose message is
one line naming the key; `ladalit.run` prints it and exits with status 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from ladalit.core.classpath import InitArgError, check_init_args, import_class
from ladalit.core.encoder import Encoder
from ladalit.registry import METHODS as REGISTERED
from ladalit.data.split import Mixture, MixtureError, check_mixture

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


class ConfigError(ValueError):
    """A bad configuration; the message is one line naming the key."""


@dataclass
class LoraConfig:
    # train LoRA adapters (peft) instead of all weights
    enabled: bool = False
    # LoRA rank
    r: int = 8
    # LoRA scaling alpha
    alpha: int = 16
    # dropout on the LoRA path
    dropout: float = 0.0
    # module names, or ["all-linear"]
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class ModelConfig:
    # tiny: random weights from the fields below; hub: hub id or local dir in name_or_path; zoo: a ladalit.demo.zoo member
    source: str = "tiny"
    # hub id or local directory (source=hub); zoo member name (source=zoo)
    name_or_path: str = ""
    # tiny: architecture family of the random model
    arch: str = "qwen3"
    # tiny: hidden size
    hidden_size: int = 64
    # tiny: decoder layers
    num_layers: int = 2
    # tiny: attention heads
    num_heads: int = 4
    # tiny: key/value heads
    num_kv_heads: int = 2
    # tiny: MLP width
    intermediate_size: int = 128
    # tiny: "byt5"; hub: "" means the model's own tokenizer, else a hub id or local dir
    tokenizer: str = "byt5"
    # run code shipped with a hub model (off unless a model needs it)
    trust_remote_code: bool = False
    # only safetensors weights unless this is set (pickle files can run code)
    allow_unsafe_weights: bool = False
    # weight dtype
    dtype: str = "float32"
    # LoRA adapters
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class TrainConfig:
    # AdamW learning rate
    lr: float = 1e-3
    # samples per optimizer step
    batch_size: int = 8
    # epochs of supervised fine-tuning on private train (the reference SFT, Algorithm 1 ❶)
    sft_epochs: int = 1
    # epochs over each round's distillation data (LaDa: passes over each candidate batch's selection, the
    # batch reward measured after the last; see docs/method.md)
    epochs: int = 1
    # tokens per prompt+response (an over-long pair loses the end of its response; a generation prompt
    # over max_length - max_new_tokens loses its start, never its question)
    max_length: int = 384
    # gradient-norm clipping (0 = off)
    grad_clip: float = 1.0
    # AdamW weight decay
    weight_decay: float = 0.0


@dataclass
class ParticipantConfig:
    # the causal LM and its tokenizer
    model: ModelConfig = field(default_factory=ModelConfig)
    # optimisation settings
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class SyntheticDataConfig:
    # problems drawn before the split; a draw whose question repeats an earlier one is left out (a few fewer records)
    num_records: int = 6000
    # fewest reasoning steps per problem (difficulty)
    min_steps: int = 1
    # most reasoning steps per problem (difficulty)
    max_steps: int = 4


@dataclass
class MixtureConfig:
    """`data.mixture`: the split's domains given explicitly (ladalit.data.split.mixture_split); empty = domain_skew."""
    # client name -> {domain: share} of its private train set, shares in [0, 1] summing to 1; every client
    # needs one once any is set ({}: the split follows domain_skew)
    train: Dict[str, Dict[str, float]] = field(default_factory=dict)
    # client name -> {domain: share} of its private test set (a client not named here: its train mixture)
    test: Dict[str, Dict[str, float]] = field(default_factory=dict)
    # {domain: share} of the public set D_p ({}: drawn iid from the records the clients left)
    public: Dict[str, float] = field(default_factory=dict)


@dataclass
class DataConfig:
    # data set loader
    name: str = "synthetic"
    # local file (JSONL / JSON) instead of the hub
    path: Optional[str] = None
    # hub id for the hub loaders (empty: the loader's default)
    hub_id: Optional[str] = None
    # hub split
    split: str = "train"
    # options per question after normalisation (gold + distractors)
    num_options: int = 4
    # private train records per client
    train_per_client: int = 1000
    # private test records per client
    test_per_client: int = 500
    # public distillation set size |D_p| (no answers)
    public_size: int = 1000
    # 0: iid clients; 1: every client draws only from its own domains; in between: that share from its own
    # domains, the rest iid (exact counts)
    domain_skew: float = 0.0
    # explicit domain shares per client (train, test) and of the public set; replaces domain_skew
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    # the generated task (name=synthetic)
    synthetic: SyntheticDataConfig = field(default_factory=SyntheticDataConfig)


@dataclass
class GenerationConfig:
    # response generation backend: hf = HF generate with the KV cache; vllm = one vLLM engine per participant
    # serving its LoRA policy (ladalit.scale.vllm_backend, pip install 'ladalit[vllm]'; needs a GPU, LoRA and source=hub)
    backend: str = "hf"
    # tokens per generated reasoning answer
    max_new_tokens: int = 96
    # prompts per generation batch
    batch_size: int = 16
    # LaDa: at start, fail unless every participant's max_new_tokens and max_length fit a full answer and the
    # longest zero-shot prompt in its own tokens (ladalit.core.budgets)
    check_budgets: bool = True
    # backend=vllm: fraction of the GPU's memory one awake engine may use (weights, activations, KV cache)
    vllm_gpu_memory_utilization: float = 0.5
    # backend=vllm: GPUs one engine spreads its model over (vLLM tensor parallelism, its own worker processes)
    vllm_tensor_parallel_size: int = 1


@dataclass
class EvalConfig:
    # 0 = zero-shot, 1 = one-shot
    shots: List[int] = field(default_factory=lambda: [0, 1])
    # tokens per generated answer
    max_new_tokens: int = 96
    # prompts per generation batch
    batch_size: int = 32
    # evaluate after every round (else only after the last)
    every_round: bool = True
    # evaluate at most this many test records per client (None = all)
    limit: Optional[int] = None


@dataclass
class FabricConfig:
    # auto | cpu | cuda
    accelerator: str = "auto"
    # devices per node
    devices: int = 1
    # nodes
    num_nodes: int = 1
    # auto | fsdp2
    strategy: str = "auto"
    # Fabric precision, e.g. 32-true | bf16-mixed | bf16-true
    precision: str = "32-true"
    # keep participants that are not training on the CPU (accelerators only)
    offload_idle: bool = True
    # fsdp2: recompute decoder-layer activations in the backward pass (the 32B/72B scenarios need it)
    activation_checkpointing: bool = True


@dataclass
class FederationConfig:
    # LaDa's exchange: per_batch = Algorithm 1's (the server's answers per candidate batch, for the selected
    # samples only); per_round = a few messages per client per round (every answer on D_p at once, as a
    # deployment on Flower needs: ladalit.federation); the results are the same
    protocol: str = "per_batch"
    # Flower: seconds the server waits for a client's reply before that client counts as failed
    client_timeout_s: float = 600.0
    # Flower: seconds the server waits for every node to join (start its site, build its model, evaluate round 0)
    join_timeout_s: float = 1800.0
    # Flower: a failed client stops the run with its last checkpoint (raise), or the run goes on without it (skip)
    on_client_failure: str = "raise"


@dataclass
class AnalysisConfig:
    """`analysis:` switches of the experimenter's harness (`ladalit.run`) on the demo world: controls and
    measurements, not methods. They reach a method only as hooks the harness passes in (docs/demo.md, Controls)."""
    # control: y^s, the server's answer a client learns from, is the record's gold rationale in the server's
    # answer format, for LaDa (every selected sample) and FedKD (all of D_p); the server's own answers are unchanged
    gold_teacher: bool = False
    # control, the server's direction: y^k, a client's answer the server learns from (chosen in "server<-k"), is the
    # record's gold rationale, for LaDa (every sample the server's filters select); the clients' own answers (their
    # rejected y^k in "k<-server") and the server's y^s are unchanged
    gold_clients: bool = False
    # control: the selection of every (round, pair, candidate batch) is made by this matched selector instead of
    # the filter, at the size LaDa selected there in the run analysis.sizes_from: none | random | disagreement
    # (the two sides' answer letters differ) | correctable (the oracle's correctable label); the last two fill
    # up at random when too few candidates qualify
    selector: str = "none"
    # the finished LaDa run directory (same seed, data and n_c) whose selection sizes the matched selector replays
    sizes_from: str = ""
    # generate both sides' answers on every candidate each (round, pair), for analysis only (neither sent nor
    # counted nor trained on), so the oracle's random baseline covers all of D_p (analysis_responses.jsonl)
    all_answers: bool = False
    # the oracle's learnable steps, participant -> the longest chain it can learn from rationales, as measured by
    # benchmarks/demo_preconditions.py (its precondition c); {}: the zoo's asserted learnable_steps. Labels only
    # (correctable / out of reach), for the run's oracle rows and the correctable selector
    learnable_steps: Dict[str, int] = field(default_factory=dict)


@dataclass
class WandbConfig:
    # offline (default) | online | disabled
    mode: str = "offline"
    # W&B project
    project: str = "ladalit"
    # W&B entity (team or user)
    entity: Optional[str] = None


@dataclass
class TrackingConfig:
    # Weights & Biases
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class BaseRunConfig:
    """The run config's own keys; `run_config()` adds the sections components register (`section`)."""
    # the method to run
    method: str = "lada"
    # seed for the data split, models, filters and prototypes
    seed: int = 0
    # communication rounds T
    rounds: int = 5
    # the prompt of the private-train SFT, whose targets are short answer statements: direct (question and
    # options, then "Answer:") | cot (the step-by-step prompt of generation and evaluation, which teaches a
    # model to skip the steps it is asked for)
    sft_prompt: str = "direct"
    # data set, split sizes and skew
    data: DataConfig = field(default_factory=DataConfig)
    # the server LLM
    server: ParticipantConfig = field(default_factory=ParticipantConfig)
    # the client SLMs by name; K = number of entries.
    clients: Dict[str, ParticipantConfig] = field(default_factory=dict)
    # response generation for distillation
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    # evaluation
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Lightning Fabric
    fabric: FabricConfig = field(default_factory=FabricConfig)
    # how the server and the clients exchange messages (the Flower deployment: ladalit.federation)
    federation: FederationConfig = field(default_factory=FederationConfig)
    # experiment tracking
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # the harness's controls and analysis switches on the demo world (all off: a plain run)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    # directory for run directories
    output_dir: str = "runs"
    # run directory name (empty: method-time-seed)
    run_name: str = ""
    # true: continue the run in output_dir/run_name from its last complete checkpoint (see docs/running.md, Resume)
    resume: bool = False
    # true: replace the run already in output_dir/run_name (its files are removed once validation passes)
    overwrite: bool = False
    # skip: drop a step whose loss or reward is not finite (counted); raise: stop with a message
    on_nonfinite: str = "skip"
    # print nothing (no header, progress, tables or results path); errors, and warnings about the input data, still go to stderr
    quiet: bool = False
    # also transformers' per-load "Loading weights" bars, and the full resolved config at start
    verbose: bool = False


# Sections a component owns (`section`): name -> (its Config dataclass, the key it follows, its description).
SECTIONS: dict[str, tuple[type, str, str]] = {}
# name -> its cross-key check, run by `validate` (raises ConfigError naming the key)
SECTION_CHECKS: dict[str, Callable[[DictConfig], None]] = {}
# a key that was the run config's own before its section took it -> where it is now ("beta" -> "lada.beta")
MOVED: dict[str, str] = {}
_SCHEMA: list[type] = []  # the assembled RunConfig, rebuilt after a registration


def section(name: str, config: type, after: str, description: str, choices: dict | None = None,
            ranges: dict | None = None, check: Callable[[DictConfig], None] | None = None,
            moved: tuple[str, ...] = ()) -> None:
    """Register `config` (a dataclass, a comment line above each field) as the run config's section `name`,
    placed after the key `after`; `choices` / `ranges` are its own CHOICES / RANGES (keys without the section
    prefix) and `check(cfg)` its cross-key check. `moved`: its keys that were top-level keys of the run config
    once; a config or override that still names one there is refused with where it went. A component calls
    this at import (`ladalit.components`)."""
    if name in {f.name for f in fields(BaseRunConfig)} or (
            name in SECTIONS and SECTIONS[name][0].__module__ != config.__module__):  # a module reloaded: replaced
        raise ValueError(f"config section {name!r} is registered twice")
    SECTIONS[name] = (config, after, description)
    CHOICES.update({f"{name}.{k}": tuple(v) for k, v in (choices or {}).items()})
    RANGES.update({f"{name}.{k}": tuple(v) for k, v in (ranges or {}).items()})
    if check is not None:
        SECTION_CHECKS[name] = check
    MOVED.update({k: f"{name}.{k}" for k in moved})
    _SCHEMA.clear()


def run_config() -> type:
    """The run config's dataclass: BaseRunConfig's keys with every registered section after its `after` key."""
    if _SCHEMA:
        return _SCHEMA[0]
    if not SECTIONS:  # filter_net, reward and the baselines' sections are registered by their modules
        raise RuntimeError("no config section is registered: import ladalit.components before building a config")
    hints = get_type_hints(BaseRunConfig)
    specs = [(f.name, hints[f.name], field(default=f.default, default_factory=f.default_factory))
             for f in fields(BaseRunConfig)]
    pending = dict(SECTIONS)
    while pending:
        names = [n for n, _, _ in specs]
        placed = [n for n, (_, after, _) in pending.items() if after in names]
        if not placed:
            raise ValueError(f"config sections {sorted(pending)} follow keys that do not exist")
        for n in placed:
            config, after, _ = pending.pop(n)
            specs.insert([s[0] for s in specs].index(after) + 1, (n, config, field(default_factory=config)))
    cls = make_dataclass("RunConfig", specs, namespace={
        "__doc__": "Every key of a run: BaseRunConfig's and the registered sections' (`section`).",
        "__comments_from__": BaseRunConfig,
        "__section_descriptions__": {n: d for n, (_, _, d) in SECTIONS.items()}})
    cls.__module__ = __name__
    _SCHEMA.append(cls)
    return cls


def __getattr__(name: str) -> Any:
    """`RunConfig` is assembled on first use (PEP 562), after the components have registered their sections."""
    if name == "RunConfig":
        return run_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


METHODS = tuple(REGISTERED)  # ladalit.registry: every method, registered once
# Allowed values of the string-valued names. A key ending in ".*" applies to every entry of a dict.
# Keys whose value names a class ("pkg.mod:Class"): key -> (the base it must subclass, the key of its own
# settings (init_args) or "", the __init__ arguments the caller passes itself). The module that defines the base
# registers its key at import (`class_key`), as `ladalit.method.filter` does for filter_net.class_path.
CLASS_KEYS: dict[str, tuple[type, str, tuple[str, ...]]] = {}


def class_key(key: str, base: type, init_args: str = "", passed: tuple[str, ...] = ()) -> None:
    """Validate `key`, when set, as the class path of a subclass of `base`, and the mapping at `init_args` as
    settings of that subclass's `__init__` (less `passed`, the arguments its caller sets from other keys)."""
    CLASS_KEYS[key] = (base, init_args, tuple(passed))


CHOICES: dict[str, tuple[str, ...]] = {
    "method": METHODS,
    "data.name": ("synthetic", "aqua", "commonsenseqa", "mathinstruct", "cot_collection"),
    "generation.backend": ("hf", "vllm"),
    "fabric.strategy": ("auto", "fsdp2"),
    "tracking.wandb.mode": ("offline", "online", "disabled"),
    "fabric.accelerator": ("auto", "cpu", "cuda"),
    "fabric.precision": ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true"),
    "on_nonfinite": ("skip", "raise"),
    "sft_prompt": ("direct", "cot"),
    "federation.protocol": ("per_batch", "per_round"),
    "federation.on_client_failure": ("raise", "skip"),
    "analysis.selector": ("none", "random", "disagreement", "correctable"),
    "*.model.source": ("tiny", "hub", "zoo"),
    "*.model.arch": ("qwen3", "qwen2", "llama", "gemma2", "internlm3"),
    "*.model.dtype": ("float32", "bfloat16", "float16"),
}
# (low, high) inclusive bounds; None = unbounded on that side.
RANGES: dict[str, tuple[float | None, float | None]] = {
    "seed": (0, None),
    "rounds": (1, None),
    "federation.client_timeout_s": (1.0, None),
    "federation.join_timeout_s": (1.0, None),
    "data.synthetic.num_records": (1, None),
    "data.synthetic.min_steps": (1, None),
    "data.synthetic.max_steps": (1, None),
    "data.num_options": (2, 10),
    "data.train_per_client": (1, None),
    "data.test_per_client": (1, None),
    "data.public_size": (1, None),
    "data.domain_skew": (0.0, 1.0),
    "*.train.lr": (0.0, None),
    "*.train.batch_size": (1, None),
    "*.train.sft_epochs": (0, None),
    "*.train.epochs": (0, None),
    "*.train.max_length": (1, None),
    "*.train.grad_clip": (0.0, None),
    "*.train.weight_decay": (0.0, None),
    "*.model.hidden_size": (1, None),
    "*.model.num_layers": (1, None),
    "*.model.num_heads": (1, None),
    "*.model.num_kv_heads": (1, None),
    "*.model.intermediate_size": (1, None),
    "*.model.lora.r": (1, None),
    "*.model.lora.alpha": (1, None),
    "*.model.lora.dropout": (0.0, 1.0),
    "eval.max_new_tokens": (1, None),
    "eval.batch_size": (1, None),
    "eval.limit": (1, None),
    "generation.max_new_tokens": (1, None),
    "generation.batch_size": (1, None),
    "fabric.devices": (1, None),
    "fabric.num_nodes": (1, None),
    "generation.vllm_gpu_memory_utilization": (0.01, 1.0),
    "generation.vllm_tensor_parallel_size": (1, None),
}


def float_keys(cls: type = None, prefix: str = "") -> list[str]:
    """Every float-valued key of the config schema, as a pattern: "filter_net.tau", "*.train.lr" (a participant's
    key: server and every client). None of them means anything at NaN or ±inf; `validate` refuses those."""
    cls = run_config() if cls is None else cls
    hints = get_type_hints(cls)
    keys = []
    for f in fields(cls):
        tp = hints[f.name]
        if tp is ParticipantConfig or get_origin(tp) in (dict, Dict):  # server; clients.NAME
            if f.name == "server":
                keys += float_keys(ParticipantConfig, "*.")
        elif is_dataclass(tp):
            keys += float_keys(tp, f"{prefix}{f.name}.")
        elif tp is float or (get_origin(tp) is Union and float in get_args(tp)):
            keys.append(f"{prefix}{f.name}")
    return keys


def resolve_conf_path(name: str) -> Path:
    """`conf=NAME` is a file in conf/ (with or without .yaml) or a path."""
    p = Path(name)
    for cand in (p, CONF_DIR / name, CONF_DIR / f"{name}.yaml"):
        if cand.is_file():
            return cand
    available = ", ".join(list_configs()) or "none"
    raise ConfigError(f"conf={name}: no such file (configs in conf/: {available})")


def list_configs() -> list[str]:
    """Run configs in conf/ (matrix.yaml describes an experiment matrix for launch/matrix.py, not a run)."""
    return sorted(p.name for p in CONF_DIR.glob("*.yaml") if p.name != "matrix.yaml")


def _keys_of(node: Any) -> list[str]:
    return sorted(node.keys()) if isinstance(node, DictConfig) else []


def _one_line(err: OmegaConfBaseException, schema: DictConfig, hint: str = "?") -> str:
    key = getattr(err, "full_key", None) or hint
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)):
        if key in MOVED:  # a top-level key that a section took (an old config, an old run's config.yaml)
            return f"config key '{key}' moved to '{MOVED[key]}'"
        parent_key, _, leaf = key.rpartition(".")
        parent = OmegaConf.select(schema, parent_key) if parent_key else schema
        if parent is None and parent_key.startswith("clients."):  # a client not yet in the schema
            rest = parent_key.split(".", 2)[2:]
            participant = OmegaConf.structured(ParticipantConfig)
            parent = OmegaConf.select(participant, rest[0]) if rest else participant
        allowed = ", ".join(_keys_of(parent))
        return f"unknown config key '{key}' (allowed keys here: {allowed})"
    return f"config key '{key}': {str(err).splitlines()[0].removeprefix('Merge error: ')}"


def _merge(base: DictConfig, other: Any, hint: str = "?") -> DictConfig:
    """`hint` names the key being merged, for errors that do not carry one."""
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line(err, base, hint)) from None
    except TypeError as err:  # e.g. a list merged onto a mapping
        raise ConfigError(f"config key '{hint}': {err} (expected a mapping of keys)") from None


def _read_yaml(path: Path) -> Any:
    """The parsed YAML file (a UTF-8 BOM is accepted); errors keep their line and column."""
    import yaml
    try:  # OmegaConf's own loader: its float rules, and duplicate keys are errors
        from omegaconf._yaml import get_yaml_loader
    except ImportError:  # omegaconf < 2.4
        from omegaconf._utils import get_yaml_loader
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror})") from None
    try:
        return yaml.load(text, Loader=get_yaml_loader())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {err.problem or err.context}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None


def _load_file(cfg: DictConfig, path: Path) -> DictConfig:
    raw = _read_yaml(path)
    if raw is None:
        return cfg
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys (key: value lines) at the top level, "
                          f"got {type(raw).__name__} {str(raw)[:40]!r}")
    clients = raw.pop("clients", None)
    if clients is not None and not isinstance(clients, dict):
        raise ConfigError(f"{path}: config key 'clients': expected a mapping of client name to its settings, "
                          f"got {type(clients).__name__}")
    for key, value in raw.items():
        cfg = _merge(cfg, {key: value}, str(key))
    # a client entry is a ParticipantConfig: merge each onto the schema so its keys are checked
    for name, client in (clients or {}).items():
        if not isinstance(client, dict):
            raise ConfigError(f"{path}: config key 'clients.{name}': expected a mapping (model, train), "
                              f"got {type(client).__name__} {client!r}")
        cfg = _merge(cfg, {"clients": {name: client}}, f"clients.{name}")
    return cfg


def _check_value(key: str, pattern: str, value: Any, floats: list[str]) -> None:
    if pattern in CHOICES and value not in CHOICES[pattern]:
        raise ConfigError(f"config key '{key}': unknown value {value!r} (allowed: {', '.join(CHOICES[pattern])})")
    if pattern in floats and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{key}': value {value} is not a finite number")
    if pattern in RANGES and value is not None:
        lo, hi = RANGES[pattern]
        bad = (lo is not None and value < lo) or (hi is not None and value > hi) or (
            isinstance(value, float) and not math.isfinite(value))
        if bad:
            rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
            raise ConfigError(f"config key '{key}': value {value} out of range {rng}")


def validate(cfg: DictConfig) -> None:
    """Names and ranges; raises ConfigError with a one-line message."""
    floats = float_keys()
    for pattern in dict.fromkeys(list(CHOICES) + list(RANGES) + floats):
        if pattern.startswith("*."):
            rest = pattern[2:]
            places = participant_configs(cfg)
            for prefix, node in places:
                _check_value(f"{prefix}.{rest}", pattern, OmegaConf.select(node, rest), floats)
        else:
            _check_value(pattern, pattern, OmegaConf.select(cfg, pattern), floats)
    if len(cfg.clients) == 0:
        raise ConfigError("config key 'clients': at least one client is required")
    for prefix, node in participant_configs(cfg):
        if node.model.source in ("hub", "zoo") and not node.model.name_or_path:
            raise ConfigError(f"config key '{prefix}.model.name_or_path': required when source={node.model.source}")
    if cfg.fabric.strategy == "fsdp2":
        for prefix, node in participant_configs(cfg):
            if not node.model.lora.enabled:
                raise ConfigError(f"config key '{prefix}.model.lora.enabled': fabric.strategy=fsdp2 needs LoRA "
                                  "(the frozen reference copy of full fine-tuning cannot be sharded)")
    for check in SECTION_CHECKS.values():
        check(cfg)
    if cfg.resume and not cfg.run_name:
        raise ConfigError("config key 'run_name': resume=true needs the run_name of the run to continue")
    if cfg.generation.backend == "vllm":
        _check_vllm(cfg)
    _check_consistency(cfg)



def participant_configs(cfg) -> list[tuple[str, Any]]:
    """(config prefix, node) of every participant: ("server", cfg.server), then ("clients.NAME", ...) in order."""
    return [("server", cfg.server)] + [(f"clients.{n}", c) for n, c in cfg.clients.items()]


def _check_consistency(cfg: DictConfig) -> None:
    """Values that are each in range but do not fit together, lists, names and class paths."""
    shots = list(cfg.eval.shots)
    if not shots or any(s not in (0, 1) for s in shots) or len(set(shots)) != len(shots):
        raise ConfigError(f"config key 'eval.shots': {shots} must be a non-empty list of distinct values from [0, 1] "
                          "(0 = zero-shot, 1 = one-shot)")
    syn = cfg.data.synthetic
    if syn.min_steps > syn.max_steps:
        raise ConfigError(f"config key 'data.synthetic.min_steps': {syn.min_steps} is above max_steps {syn.max_steps}")
    if cfg.data.name == "synthetic" and (cfg.data.path or cfg.data.hub_id):
        key = "data.path" if cfg.data.path else "data.hub_id"
        raise ConfigError(f"config key '{key}': not used by data.name=synthetic (the data is generated); "
                          "set data.name to the loader of that data")
    for prefix, node in participant_configs(cfg):
        m = node.model
        if m.source == "tiny" and m.hidden_size % m.num_heads:
            raise ConfigError(f"config key '{prefix}.model.hidden_size': {m.hidden_size} is not a multiple of "
                              f"num_heads {m.num_heads}")
        if m.source == "tiny" and m.num_heads % m.num_kv_heads:
            raise ConfigError(f"config key '{prefix}.model.num_heads': {m.num_heads} is not a multiple of "
                              f"num_kv_heads {m.num_kv_heads}")
    _check_mixture(cfg)
    _check_analysis(cfg)
    if cfg.resume and cfg.overwrite:
        raise ConfigError("config key 'overwrite': resume=true and overwrite=true contradict each other; choose one")
    name = cfg.run_name
    if name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"config key 'run_name': {name!r} must be a plain directory name (output_dir says where)")
    for key, (base, args_key, passed) in CLASS_KEYS.items():
        value = OmegaConf.select(cfg, key)
        args = OmegaConf.select(cfg, args_key) if args_key else None
        if value:
            cls = _check_class(key, value, base)
            if args_key:
                try:
                    check_init_args(value, cls, base, OmegaConf.to_container(args) if args else {}, passed)
                except InitArgError as err:
                    raise ConfigError(f"config key '{args_key}.{err.name}': {err}") from None
        elif args:
            raise ConfigError(f"config key '{args_key}': settings of a class, but {key} names none")


def _check_mixture(cfg: DictConfig) -> None:
    """data.mixture: a mixture per client, shares in [0, 1] summing to 1 (domains and counts: at data load)."""
    m = cfg.data.mixture
    if not (m.train or m.test or m.public):
        return
    if not m.train:
        raise ConfigError("config key 'data.mixture.train': required once data.mixture.test or data.mixture.public "
                          "is set (a mixture per client)")
    if cfg.data.domain_skew > 0:
        raise ConfigError(f"config key 'data.domain_skew': {cfg.data.domain_skew} and data.mixture both shape the "
                          "split; set domain_skew to 0")
    try:
        check_mixture(mixture_of(cfg), list(cfg.clients))
    except MixtureError as err:
        raise ConfigError(f"config key 'data.mixture.{err.key}': {err.message}") from None


def _check_analysis(cfg: DictConfig) -> None:
    """analysis.*: the controls need the demo world's truth, the in-process harness, and (a matched selector)
    a LaDa run to replay; whether that run fits is checked at start (ladalit.demo.controls.replay_sizes)."""
    a = cfg.analysis
    names = ["server", *cfg.clients]
    for k, v in a.learnable_steps.items():
        if k not in names:
            raise ConfigError(f"config key 'analysis.learnable_steps.{k}': no such participant ({', '.join(names)})")
        if v < 0:
            raise ConfigError(f"config key 'analysis.learnable_steps.{k}': {v} is below 0")
    on = [k for k, v in (("gold_teacher", a.gold_teacher), ("gold_clients", a.gold_clients),
                         ("selector", a.selector != "none"), ("all_answers", a.all_answers)) if v]
    if a.sizes_from and a.selector == "none":
        raise ConfigError("config key 'analysis.sizes_from': only a matched selector reads it; set analysis.selector")
    if not on:
        return
    key = f"analysis.{on[0]}"
    allowed = ("lada", "fedkd") if on == ["gold_teacher"] else ("lada",)
    if cfg.method not in allowed:
        raise ConfigError(f"config key '{key}': a control of method {' or '.join(allowed)}, not {cfg.method}")
    if cfg.data.name != "synthetic":
        raise ConfigError(f"config key '{key}': needs the demo world's truth (data.name=synthetic), not {cfg.data.name}")
    if cfg.federation.protocol != "per_batch":
        raise ConfigError(f"config key '{key}': runs in the in-process harness only (federation.protocol=per_batch)")
    if a.selector != "none" and not a.sizes_from:
        raise ConfigError("config key 'analysis.sizes_from': analysis.selector needs the LaDa run whose selection "
                          "sizes it replays")


def mixture_of(cfg):
    """The config's data.mixture as a `ladalit.data.split.Mixture` (clients in config order), or None."""
    m = cfg.data.mixture
    if not m.train:
        return None
    train = {n: dict(m.train[n]) for n in cfg.clients if n in m.train}
    train.update({n: dict(v) for n, v in m.train.items() if n not in train})  # unknown names: check_mixture says so
    return Mixture(train=train, test={n: dict(v) for n, v in m.test.items()}, public=dict(m.public) or None)


def check_encoder(key: str, value: str) -> None:
    """An encoder key: "" (the default's), minilm, hashing, or the class path of an Encoder subclass."""
    if value not in ("", "minilm", "hashing"):
        _check_class(key, value, Encoder)


def _check_class(key: str, path: str, base: type) -> type:
    try:
        return import_class(path, base)
    except (ValueError, TypeError, ImportError, AttributeError) as err:
        raise ConfigError(f"config key '{key}': {path!r}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def _check_vllm(cfg: DictConfig) -> None:
    """generation.backend=vllm: one single-process run on a GPU, every participant a hub model with LoRA."""
    single = "vLLM inside a multi-process Fabric world is not supported by this backend"
    if cfg.fabric.strategy == "fsdp2":
        raise ConfigError(f"config key 'fabric.strategy': generation.backend=vllm does not run under fsdp2 ({single}; "
                          "generation.vllm_tensor_parallel_size spreads an engine over GPUs)")
    for key in ("devices", "num_nodes"):
        if cfg.fabric[key] > 1:
            raise ConfigError(f"config key 'fabric.{key}': generation.backend=vllm needs 1, got {cfg.fabric[key]} "
                              f"({single}; generation.vllm_tensor_parallel_size spreads an engine over GPUs)")
    if cfg.fabric.accelerator == "cpu":
        raise ConfigError("config key 'fabric.accelerator': generation.backend=vllm needs a GPU "
                          "(vLLM's sleep mode, which parks idle engines, runs on CUDA and ROCm only)")
    why = {"tiny": "a tiny model has random weights in memory only",
           "zoo": "zoo members are the CPU proving ground's tiny models; to try one, set source=hub and "
                  "name_or_path to its cached directory"}
    for prefix, node in participant_configs(cfg):
        if not node.model.lora.enabled:
            raise ConfigError(f"config key '{prefix}.model.lora.enabled': generation.backend=vllm needs LoRA "
                              "(the trained weights reach the engine as a LoRA adapter; full fine-tuning cannot "
                              "be synced into vLLM through its public API)")
        if node.model.source != "hub":
            raise ConfigError(f"config key '{prefix}.model.source': generation.backend=vllm needs source=hub "
                              f"(a hub id or a local directory vLLM loads itself); {why[node.model.source]}")


def load_config(argv: list[str]) -> DictConfig:
    """Build the run config from `conf=FILE` and dotted `key=value` overrides."""
    schema = OmegaConf.structured(run_config())
    conf_args = [a for a in argv if a.startswith("conf=")]
    overrides = [a for a in argv if not a.startswith("conf=")]
    for a in overrides:
        if "=" not in a or a.startswith(("-", "=")):
            raise ConfigError(f"argument {a!r}: expected key=value (see --help)")
    cfg = schema
    if conf_args:
        cfg = _load_file(cfg, resolve_conf_path(conf_args[-1].split("=", 1)[1]))
    for a in overrides:  # one at a time, so an error names its key
        key = a.split("=", 1)[0]
        try:
            cli = OmegaConf.from_dotlist([a])
        except (OmegaConfBaseException, ValueError) as err:
            raise ConfigError(f"bad override {a!r}: {str(err).splitlines()[0]}") from None
        cfg = _merge(cfg, cli, key)
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


HELP_KEYS = [
    ("method", " | ".join(METHODS)),
    ("rounds", "communication rounds T"),
    ("seed", "seed for data split, models, filters"),
    ("lada.loss, .filter, .server_weights", "LaDa ablations: mard|ce, lada|none, reward|uniform"),
    ("lada.beta, .n_c, .init_fraction", "MARD β, candidate batch size, prototype fraction"),
    ("lada.mard_nll", "weight of an NLL term on the chosen answer (RPO remedy; 0 = the paper)"),
    ("sft_prompt", "prompt of the private-train SFT: direct | cot"),
    ("reward.alpha, reward.granularity, reward.batch", "α of Eq. 7; sample | set; previous_selection | same_sample"),
    ("filter_net.*", "filter network: encoder, lam (λ), tau (τ), lr, epochs, fit_every, min_select, max_select, "
                     "class_path"),
    ("data.*", "name, path, hub_id, train_per_client, test_per_client, public_size, domain_skew, mixture.*"),
    ("server.* / clients.NAME.*", "model (source, name_or_path, arch, sizes, lora.*), train (lr, epochs, ...)"),
    ("eval.*", "shots [0, 1], max_new_tokens, batch_size, every_round, limit"),
    ("fabric.*", "accelerator, devices, strategy (auto | fsdp2), precision"),
    ("tracking.wandb.mode", "offline | online | disabled"),
    ("analysis.*", "controls on the demo world: gold_teacher, selector (+ sizes_from), all_answers"),
    ("output_dir, run_name, resume, overwrite", "where results go; resume=true continues run_name, overwrite=true replaces it"),
]


def help_text() -> str:
    lines = [
        "usage: python -m ladalit.run conf=NAME.yaml [key.sub=value ...]",
        "",
        "conf=      a file in conf/ or a path. Configs in conf/: " + ", ".join(list_configs()),
        "",
        "main keys (dotted overrides merge on top of the file):",
    ]
    lines += [f"  {k:<36} {v}" for k, v in HELP_KEYS]
    lines += ["", "The full reference with defaults is in docs/configuration.md."]
    return "\n".join(lines)
