"""Build a participant's causal LM and tokenizer from its `ModelConfig`.

Sources: `tiny` (random weights from an inline config, for tests), `hub` (a hub
id or a local directory, loaded with `from_pretrained`) and those registered in
`ladalit.core.sources` by the layers above, e.g. `zoo` (a pre-trained member of the CPU proving
ground, `ladalit.demo.zoo`, registered by `ladalit.demo.sources`).

`build_model(..., meta=True)` (FSDP2 sharded loading, `ladalit.scale.strategy`) builds a
`hub` model's parameters on the meta device and reads no weights: every process
builds the skeleton, and its shards come from rank 0 after `fully_shard`.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from ladalit.core.config import ConfigError
from ladalit.core.sources import MODEL_SOURCES

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def check_model_source(key: str, mcfg) -> None:
    """Fail before any loading: a missing local path, or a hub id while offline."""
    if mcfg.source != "hub":
        return
    name = mcfg.name_or_path
    if Path(name).expanduser().exists():
        return
    if not _is_hub_id(name):
        raise ConfigError(f"config key '{key}.model.name_or_path': local path {name!r} does not exist")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    if offline and not _in_hub_cache(name):
        raise ConfigError(
            f"config key '{key}.model.name_or_path': {name!r} is a hub id, HF_HUB_OFFLINE is set and it is not "
            "in the local hub cache; download it first or point name_or_path at a local directory")


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:
        return False


def tiny_tokenizer(name: str) -> PreTrainedTokenizerBase:
    if name == "byt5":
        from transformers import ByT5Tokenizer

        class CausalByT5Tokenizer(ByT5Tokenizer):
            """ByT5's bytes without the EOS that ByT5 appends to every input: a causal LM's prompt must
            not end the sequence (with it, tied-embedding tiny models answer every prompt with EOS)."""

            def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
                return token_ids_0 if token_ids_1 is None else token_ids_0 + token_ids_1

        return CausalByT5Tokenizer()
    return AutoTokenizer.from_pretrained(name)


@contextlib.contextmanager
def params_on_meta():
    """Parameters registered inside go to the meta device (no memory); buffers stay real, so computed
    tables such as the rotary frequencies need no re-initialisation."""
    register = torch.nn.Module.register_parameter

    def on_meta(module, name, param):
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def weights_dir(name_or_path: str) -> Path:
    """The local directory of a `hub` model: the path itself, or the hub cache's snapshot of the id."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download
    return Path(snapshot_download(name_or_path, local_files_only=True))


def build_model(mcfg, seed: int = 0, key: str = "model", meta: bool = False,
                quiet: bool = False) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """The causal LM and its tokenizer for one participant (LoRA is added by the Participant).

    `meta` (`source: hub` only): parameters on the meta device, no weights read; the model records
    where its safetensors are and `seed`, for `ladalit.scale.strategy.load_sharded`. `quiet` (the config's
    `quiet`): a zoo member pre-trained on first use shows no progress."""
    dtype = DTYPES[mcfg.dtype]
    if meta and mcfg.source != "hub":
        raise ValueError(f"{key}: building on the meta device needs model.source=hub, not {mcfg.source!r}")
    if mcfg.source == "tiny":
        tok = tiny_tokenizer(mcfg.tokenizer)
        config = AutoConfig.for_model(
            mcfg.arch, vocab_size=len(tok), hidden_size=mcfg.hidden_size,
            num_hidden_layers=mcfg.num_layers, num_attention_heads=mcfg.num_heads,
            num_key_value_heads=mcfg.num_kv_heads, intermediate_size=mcfg.intermediate_size,
            head_dim=mcfg.hidden_size // mcfg.num_heads, max_position_embeddings=4096,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id,
            tie_word_embeddings=True,
        )
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    elif mcfg.source == "hub":
        kw = dict(trust_remote_code=mcfg.trust_remote_code)
        try:
            tok = AutoTokenizer.from_pretrained(mcfg.tokenizer or mcfg.name_or_path, **kw)
            if meta:
                config = AutoConfig.from_pretrained(mcfg.name_or_path, **kw)
                with params_on_meta():
                    model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kw)
                model.ladalit_sharded_load = {"path": str(weights_dir(mcfg.name_or_path)), "seed": seed}
            else:
                model = AutoModelForCausalLM.from_pretrained(
                    mcfg.name_or_path, dtype=dtype, use_safetensors=None if mcfg.allow_unsafe_weights else True,
                    **kw)
        except OSError as err:  # no network, no such repo, no safetensors weights
            raise ConfigError(
                f"config key '{key}.model.name_or_path': could not load {mcfg.name_or_path!r} "
                f"({str(err).splitlines()[0]}); if this machine is offline, download the model elsewhere and "
                "point name_or_path at its local directory") from None
    elif mcfg.source in MODEL_SOURCES:  # registered by a layer above core (zoo: ladalit.demo.sources)
        model, tok = MODEL_SOURCES[mcfg.source](mcfg, quiet)
        model = model.to(dtype)
    else:  # a name the config allows whose module was not imported (ladalit.components imports them all)
        raise ConfigError(f"config key '{key}.model.source': {mcfg.source!r} is not registered "
                          "(import ladalit.components before building models)")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok
