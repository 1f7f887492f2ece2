"""The distilled models in the formats the ecosystem loads: `python -m ladalit.reporting.export RUN_DIR [--round N] [--merge]`.

Every run ends with this export (`ladalit.run`); the command redoes it for an existing run (any method) from its
`checkpoint.pt` (the last complete round; a stopped run included). Each participant the run trained goes
to `RUN_DIR/models/<participant>/`:

- with LoRA: a peft adapter directory (`adapter_config.json`, `adapter_model.safetensors`) naming its base
  model. A client's policy is the frozen "sft" adapter plus the trained "policy" adapter (SPEC §3); the
  two are concatenated along the rank into one adapter that gives the same weights (r = lora_alpha =
  r_sft + r_policy, `ladalit.scale.vllm_backend.merge_adapters`). The server's is its "policy" adapter.
- `--merge`, or without LoRA: the full weights, `save_pretrained` in safetensors.
- the tokenizer (the tiny models' byte tokenizer is written as a `tokenizers` byte-level tokenizer that
  encodes the same ids, so that `AutoTokenizer` loads it), and a model card `README.md`: base model,
  method, round, accuracy, the config that produced it.

Base models: `source: hub` names its hub id (or the absolute path of its local directory); `tiny` and
`zoo` models have no hub id, so their base weights are saved beside the adapter in `base/` and the
adapter names that directory by its absolute path (move the run dir, and pass the base explicitly:
`PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(".../base"), ".../client2")`).

Under `fabric.strategy: fsdp2` the end-of-run export is not written (the weights are sharded); run this
command on the run dir afterwards. Exit status 2, one line, when a run dir cannot be exported.
"""
from __future__ import annotations

import argparse
import copy
import shutil
import sys
from pathlib import Path

import torch

import ladalit.components  # noqa: F401  registers data sets, model sources, class-path checks
from ladalit.core.config import ConfigError, load_config, to_yaml
from ladalit.scale.vllm_backend import merge_adapters, save_adapter
from ladalit.core.experiment import build_participant
from ladalit.core.results import Results
from ladalit.core.run_identity import CHECKPOINT, RunError, load_checkpoint
from ladalit.core.progress import quiet_transformers

MODELS = "models"


class ExportError(ValueError):
    """A run dir that cannot be exported; the message is one line."""


def trained(results_train: list[dict], names: list[str]) -> list[str]:
    """The participants a run trained: those with training rows, in `names` order."""
    seen = {r["participant"] for r in results_train}
    return [n for n in names if n in seen]


def participant_config(cfg, name: str):
    return cfg.server if name == "server" else cfg.clients[name]


def base_reference(mcfg) -> str | None:
    """How the export names its base model: the hub id, the absolute local dir, or None (tiny / zoo)."""
    if mcfg.source != "hub":
        return None
    local = Path(mcfg.name_or_path).expanduser()
    return str(local.resolve()) if local.exists() else mcfg.name_or_path


def policy_adapters(participant) -> list[str]:
    return ["sft", "policy"] if participant.role == "client" else ["policy"]


def byte_tokenizer(tok):
    """The tiny models' ByT5 byte tokenizer (id = byte + 3, no EOS appended) as a fast tokenizer of
    `tokenizers`, which `AutoTokenizer` loads (ByT5's own class cannot be loaded without sentencepiece)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode
    byte_char = bytes_to_unicode()
    offset = tok.offset
    vocab = {str(t): i for i, t in tok.added_tokens_decoder.items() if i < offset}
    vocab.update({byte_char[b]: b + offset for b in range(256)})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=str(tok.unk_token)))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=str(tok.pad_token),
                                   eos_token=str(tok.eos_token), unk_token=str(tok.unk_token))
    extra = [str(tok.added_tokens_decoder[i]) for i in sorted(tok.added_tokens_decoder) if i >= offset]
    fast.add_tokens(extra, special_tokens=True)
    return fast


def save_tokenizer(tok, out: Path) -> None:
    from transformers import ByT5Tokenizer
    (byte_tokenizer(tok) if isinstance(tok, ByT5Tokenizer) else tok).save_pretrained(out)


def model_card(name: str, cfg, round: int, accuracy: list[dict], base: str, kind: str) -> str:
    """README.md of one export: base model, method, round, accuracy (and round 0), the config."""
    rows = {(r["round"], r["shots"]): r for r in accuracy if r["participant"] == name}
    shots = sorted({s for _, s in rows})
    acc = []
    for s in shots:
        now, first = rows.get((round, s)), rows.get((0, s))
        cell = f"{now['accuracy']:.3f}" if now else "not evaluated"
        if now and first:
            cell += f" (round 0: {first['accuracy']:.3f}, {now['accuracy'] - first['accuracy']:+.3f})"
        acc.append(f"- {s}-shot accuracy, round {round}: {cell}")
    mcfg = participant_config(cfg, name).model
    hub = base_reference(mcfg)
    front = ["---", "library_name: " + ("peft" if kind == "adapter" else "transformers"), "tags: [ladalit]"]
    if hub is not None and not Path(hub).is_absolute():
        front.insert(1, f"base_model: {hub}")
    front.append("---")
    return "\n".join(front + [
        f"# {name}: {cfg.method}, round {round} of {cfg.rounds}", "",
        f"- base model: `{base}` (source `{mcfg.source}`"
        + (f", `{mcfg.name_or_path}`" if mcfg.source == "zoo" else "") + ")",
        f"- method: `{cfg.method}`; seed {cfg.seed}; data `{cfg.data.name}`",
        f"- format: {'peft LoRA adapter on the base model' if kind == 'adapter' else 'full weights (safetensors)'}",
        *acc, "",
        "Accuracy: greedy decoding on this participant's test set (the server: the union of the clients' "
        "test sets), the answer letter parsed from the generation; unparseable counts as wrong.", "",
        "## Config that produced it", "", "```yaml", to_yaml(cfg).rstrip(), "```", ""])


def export_participant(participant, cfg, out: Path, round: int, accuracy: list[dict], merge: bool = False) -> Path:
    """Write one participant to `out` (replacing what was there); returns `out`."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    mcfg = participant_config(cfg, participant.name).model
    model = participant.model
    kind = "adapter" if participant.use_lora and not merge else "full"
    if kind == "adapter":
        base = base_reference(mcfg)
        if base is None:  # tiny / zoo: no hub id; the base weights go beside the adapter
            copy.deepcopy(model).unload().save_pretrained(out / "base")
            save_tokenizer(participant.tokenizer, out / "base")
            base = str((out / "base").resolve())
        sd, config = merge_adapters(model, policy_adapters(participant))
        config["base_model_name_or_path"] = base
        save_adapter(out, sd, config)
    else:
        if participant.use_lora:  # --merge: base + the policy adapters folded into the weights
            model = copy.deepcopy(model).merge_and_unload(adapter_names=policy_adapters(participant))
        model.save_pretrained(out)
        base = base_reference(mcfg) or f"{mcfg.source}:{mcfg.name_or_path or mcfg.arch}"
    save_tokenizer(participant.tokenizer, out)
    (out / "README.md").write_text(model_card(participant.name, cfg, round, accuracy, base, kind))
    return out


def export_participants(participants: dict, cfg, run_dir: Path, round: int, results, merge: bool = False) -> list[Path]:
    """Export every trained participant of `participants` (name -> Participant) to run_dir/models/."""
    names = trained(results.train, list(participants))
    with torch.no_grad():
        return [export_participant(participants[n], cfg, Path(run_dir) / MODELS / n, round, results.accuracy, merge)
                for n in names]


def rebuild_participants(cfg, state: dict) -> dict:
    """The participants of a run, on the CPU, with the checkpoint's trained weights and the policy adapters on."""
    parts = {"server": build_participant(cfg, "server", "server", cfg.server)}
    parts |= {n: build_participant(cfg, n, "client", c) for n, c in cfg.clients.items()}
    for n, p in parts.items():
        missing, unexpected = p.model.load_state_dict(state["participants"][n], strict=False)
        if unexpected or (not p.use_lora and missing):
            raise ExportError(f"checkpoint weights of {n!r} do not fit its config "
                              f"({len(unexpected)} unexpected, {len(missing)} missing keys)")
        if p.use_lora and p.role == "client":
            p.train_adapters(["policy"])  # the policy: "sft" + "policy" active, as after freeze_reference()
        p.eval()
    return parts


def export_run(run_dir, round: int | None = None, merge: bool = False) -> list[Path]:
    """Export an existing run from its checkpoint (see the module docstring)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ExportError(f"{run_dir}: no config.yaml (not a run directory)")
    try:
        cfg = load_config([f"conf={run_dir / 'config.yaml'}"])
    except ConfigError as err:
        raise ExportError(f"{run_dir / 'config.yaml'}: {err}") from None
    try:
        ckpt = load_checkpoint(run_dir)
    except RunError as err:  # truncated or not a checkpoint
        raise ExportError(str(err)) from None
    if ckpt is None:
        raise ExportError(f"{run_dir}: no {CHECKPOINT}; the run completed no round "
                          f"(a finished run's {MODELS}/ were written at its end)")
    if round is not None and round != ckpt["round"]:
        raise ExportError(f"{run_dir}: --round {round}: the run keeps the weights of round {ckpt['round']} only "
                          f"({CHECKPOINT} holds the last complete round)")
    results = Results()
    results.load_state_dict(ckpt["state"]["results"])
    parts = rebuild_participants(cfg, ckpt["state"])
    return export_participants(parts, cfg, run_dir, ckpt["round"], results, merge)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ladalit.reporting.export", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", metavar="RUN_DIR")
    ap.add_argument("--round", type=int, default=None, help="the round to export (default: the checkpoint's)")
    ap.add_argument("--merge", action="store_true", help="full weights with the LoRA adapters merged in")
    args = ap.parse_args(argv)
    quiet_transformers()
    try:
        paths = export_run(args.run_dir, args.round, args.merge)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
