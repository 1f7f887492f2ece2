"""Run identity: what a run directory holds, and whether this invocation may use it.

A run directory records `fingerprint.json`, everything that determines its results: the resolved
config minus the keys that may change on resume (`HARMLESS`, and `rounds`, kept apart), the sha256
of the local data file, and the code version (a hash of the ladalit sources). Before anything is
built or written, `check_run_dir` decides:

- a new or empty directory: a fresh run (`resume=true` is refused: nothing to continue);
- a directory holding a run: refused unless `resume=true` (continue it) or `overwrite=true`
  (replace it; the old files are removed only once validation has passed, by `prepare_run_dir`);
- `resume=true`: the recorded fingerprint must equal this one except for a larger `rounds`, and the
  checkpoint must load; `check_checkpoint` then checks it against the built models.

Every refusal is a `RunError` whose message is one line; nothing in the directory is changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from omegaconf import OmegaConf
from ladalit.core.results import atomic_write_text

CHECKPOINT = "checkpoint.pt"
FINGERPRINT = "fingerprint.json"
# keys that may differ on resume: they change what is shown or where files go, never the results
HARMLESS = ("quiet", "verbose", "tracking", "output_dir", "run_name", "resume", "overwrite")
RUN_MARKERS = ("config.yaml", FINGERPRINT, CHECKPOINT, "results.json")
PACKAGE = Path(__file__).resolve().parents[1]


class RunError(ValueError):
    """A run directory this invocation may not use; the message is one line."""


# ----------------------------------------------------------------------------- checkpoint files
def save_checkpoint(run_dir: Path, round: int, state: dict) -> None:
    """Atomic: a checkpoint interrupted mid-write is never the one loaded."""
    payload = {"round": round, "state": state, "torch_rng": torch.get_rng_state()}
    tmp = run_dir / (CHECKPOINT + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, run_dir / CHECKPOINT)


def load_checkpoint(run_dir: Path) -> dict | None:
    """The checkpoint in `run_dir`, None if there is none; RunError if it cannot be read (left as it is)."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    keep = "it is left as it is: restore a good copy, or start again with overwrite=true"
    try:
        ckpt = torch.load(path, weights_only=False)
    except Exception as err:  # truncated, not a torch file, unpickling errors
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunError(f"{path}: cannot be read, truncated or corrupt ({why}); {keep}") from None
    if not (isinstance(ckpt, dict) and {"round", "state", "torch_rng"} <= set(ckpt) and isinstance(ckpt["round"], int)):
        raise RunError(f"{path}: not a ladalit checkpoint (no round, state and torch_rng); {keep}")
    return ckpt


def check_checkpoint(exp, ckpt: dict, run_dir: Path) -> None:
    """Every participant's saved weights must exist in its model with the same shape."""
    path = Path(run_dir) / CHECKPOINT
    parts = {"server": exp.server, **exp.clients}
    saved = ckpt["state"].get("participants", {}) if isinstance(ckpt["state"], dict) else {}
    if set(saved) != set(parts):
        raise RunError(f"{path}: holds participants {sorted(saved)}, the config has {sorted(parts)}; "
                       "resume with the config that wrote it")
    for name, p in parts.items():
        model = p.model.state_dict()
        for key, value in saved[name].items():
            if key not in model:
                raise RunError(f"{path}: participant '{name}' weight '{key}' is not in the model "
                               "(another architecture); resume with the config that wrote it")
            if tuple(value.shape) != tuple(model[key].shape):
                raise RunError(f"{path}: participant '{name}' weight '{key}' has shape {list(value.shape)}, the model "
                               f"{list(model[key].shape)} (another architecture); resume with the config that wrote it")


# ----------------------------------------------------------------------------- fingerprint
def code_version() -> str:
    """sha256 of the ladalit sources (every .py file under the package, by relative path)."""
    h = hashlib.sha256()
    for f in sorted(PACKAGE.rglob("*.py")):
        h.update(str(f.relative_to(PACKAGE)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def flat(node, prefix: str = "") -> dict:
    """A nested config container as {dotted key: value}."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def fingerprint(cfg) -> dict:
    config = OmegaConf.to_container(cfg, resolve=True)
    for key in HARMLESS + ("rounds",):
        config.pop(key, None)
    path = cfg.data.path
    data = {path: file_sha256(path)} if path and Path(path).is_file() else {}
    return {"rounds": cfg.rounds, "config": flat(config), "data_files": data, "code": code_version()}


def _absent_prefix(key: str, other: dict) -> str:
    """The shortest dotted prefix of `key` that no key of `other` has (a whole removed client, say)."""
    parts = key.split(".")
    for n in range(1, len(parts) + 1):
        p = ".".join(parts[:n])
        if not any(k == p or k.startswith(p + ".") for k in other):
            return p
    return key


def differences(old: dict, new: dict) -> list[str]:
    """One entry per key that differs, naming it; a larger `rounds` is not a difference."""
    out = []
    a, b = old.get("config", {}), new["config"]
    for key in sorted(set(a) & set(b)):
        if a[key] != b[key]:
            out.append(f"{key}: {a[key]!r} -> {b[key]!r}")
    for only, other, what in ((set(a) - set(b), b, "removed"), (set(b) - set(a), a, "added")):
        out += [f"{p}: {what}" for p in sorted({_absent_prefix(k, other) for k in only})]
    if new["rounds"] < old.get("rounds", 0):
        out.append(f"rounds: {old['rounds']} -> {new['rounds']} (rounds may only grow)")
    for path in sorted(set(old.get("data_files", {})) | set(new["data_files"])):
        if old.get("data_files", {}).get(path) != new["data_files"].get(path):
            out.append(f"data file {path}: its contents changed")
    if old.get("code") != new["code"]:
        out.append(f"code version: {old.get('code')} -> {new['code']} (the ladalit sources changed)")
    return out


# ----------------------------------------------------------------------------- the run directory
def _writable_dir(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise RunError(f"config key 'output_dir': {output_dir} is a file, not a directory")
    probe = output_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise RunError(f"config key 'output_dir': {probe} is a file, so {output_dir} cannot be created")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunError(f"config key 'output_dir': {probe} is not writable")


def holds_a_run(run_dir: Path) -> bool:
    return run_dir.is_dir() and any(run_dir.iterdir())


def check_run_dir(cfg, run_dir: Path) -> dict | None:
    """Refuse (RunError) a run dir this config may not use; on resume return the loaded checkpoint.

    Reads only; writes nothing."""
    run_dir = Path(run_dir)
    _writable_dir(Path(cfg.output_dir))
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"config key 'run_name': {run_dir} is a file, not a run directory")
    if not cfg.resume:
        if holds_a_run(run_dir):
            if not cfg.overwrite:
                raise RunError(f"{run_dir} already holds a run: resume=true continues it, overwrite=true replaces it "
                               "(or choose another run_name)")
            if not any((run_dir / m).exists() for m in RUN_MARKERS):
                raise RunError(f"overwrite=true: {run_dir} is not a ladalit run directory (none of "
                               f"{', '.join(RUN_MARKERS)}); not removing it")
        return None
    if not (run_dir / CHECKPOINT).exists():
        what = "has no run" if not holds_a_run(run_dir) else f"has no {CHECKPOINT} (no round was completed)"
        raise RunError(f"resume=true: {run_dir} {what}; nothing to continue (start it without resume=true"
                       f"{', with overwrite=true' if holds_a_run(run_dir) else ''})")
    fp_path = run_dir / FINGERPRINT
    try:
        recorded = json.loads(fp_path.read_text())
        assert isinstance(recorded, dict) and isinstance(recorded.get("config"), dict)
    except (OSError, ValueError, AssertionError):
        raise RunError(f"resume=true: {fp_path} is missing or unreadable, so the resume cannot be checked against "
                       "the run; start again with overwrite=true") from None
    diffs = differences(recorded, fingerprint(cfg))
    if diffs:
        raise RunError(f"resume=true refused, {run_dir} was run with other settings: {'; '.join(diffs)} "
                       "(a resume may only raise rounds, or change quiet, tracking.*, output_dir, run_name)")
    ckpt = load_checkpoint(run_dir)
    if ckpt["round"] >= cfg.rounds and finished(run_dir):
        raise RunError(f"resume=true: {run_dir} is complete ({ckpt['round']} of {cfg.rounds} rounds); raise rounds "
                       "to continue it")
    return ckpt


def finished(run_dir: Path) -> bool:
    """results.json of the whole run was written: only the final save holds the run's counters."""
    try:
        return "nonfinite_skipped" in json.loads((Path(run_dir) / "results.json").read_text())
    except (OSError, ValueError):
        return False


def prepare_run_dir(cfg, run_dir: Path, config_yaml: str) -> None:
    """After validation: replace an old run (overwrite=true), then record the config and the fingerprint."""
    run_dir = Path(run_dir)
    if cfg.overwrite and holds_a_run(run_dir):
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", config_yaml)
    atomic_write_text(run_dir / FINGERPRINT, json.dumps(fingerprint(cfg), indent=1))
