"""Behaviour-unchanged harness: run every registered method on conf/smoke.yaml (or --conf) and write a canonical digest
of what each run produced, so that a refactoring can show that it changed nothing.

    python -m benchmarks.behaviour_diff OUT_DIR                # run every method, write OUT_DIR/digest.json
    python -m benchmarks.behaviour_diff OUT_DIR --methods lada fedkd
    python -m benchmarks.behaviour_diff OUT_DIR rounds=1 --conf demo.yaml --methods lada   # another config
    python -m benchmarks.behaviour_diff --compare A/digest.json B/digest.json   # "identical" or the differences
    python -m benchmarks.behaviour_diff --compare A B --ignore-key init_args   # less a key a change added
    python -m benchmarks.behaviour_diff --compare A B --unordered train   # the rows under `train` as a multiset
    python -m benchmarks.behaviour_diff --compare A B --moved   # config keys a section took, at their new place

Per method the digest holds: results.json less the fields that name the run or the clock (the run's own
output_dir/run_name and any key about time); the rows of predictions.jsonl, selections.jsonl and
responses.jsonl; and a SHA-256 of every exported weight tensor (models/*/*.safetensors, by tensor name).
Floats are compared exactly (NaN equals NaN). Runs are in this process, one thread, W&B disabled.
Exit status of --compare: 0 identical, 1 different, 2 bad input.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

# Keys of results.json that depend on where or when the run was made, not on what it computed.
RUN_KEYS = {"output_dir", "run_name"}
TIME_WORDS = ("time", "seconds", "elapsed", "wall", "duration", "_s")
ROW_FILES = ("predictions.jsonl", "selections.jsonl", "responses.jsonl")


def _is_time_key(key: str) -> bool:
    k = key.lower()
    return any(k.endswith(w) if w == "_s" else w in k for w in TIME_WORDS)


def strip(obj):
    """obj without run-location and clock fields, at any depth."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if k not in RUN_KEYS and not _is_time_key(k)}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def weight_hashes(run_dir: Path) -> dict[str, str]:
    """SHA-256 of every tensor of the exported models, keyed `participant/file:tensor`."""
    import torch
    from safetensors.torch import load_file
    out = {}
    for f in sorted((run_dir / "models").rglob("*.safetensors")):
        rel = f.relative_to(run_dir / "models").as_posix()
        for name, t in sorted(load_file(str(f)).items()):
            raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)  # the bytes, any dtype
            out[f"{rel}:{name}"] = hashlib.sha256(raw.numpy().tobytes()).hexdigest()
    return out


def digest(run_dir: Path) -> dict:
    """The canonical record of one run directory."""
    d = {"results": strip(json.loads((run_dir / "results.json").read_text()))}
    for name in ROW_FILES:
        path = run_dir / name
        d[name] = [strip(json.loads(line)) for line in path.read_text().splitlines() if line] if path.exists() else None
    d["weights"] = weight_hashes(run_dir)
    return d


def run_methods(out: Path, methods: list[str], extra: list[str], conf: str = "smoke.yaml") -> dict:
    """Every method of `methods` on `conf` into out/<method>; their digests."""
    import torch
    from ladalit import run
    torch.set_num_threads(1)
    digests = {}
    for m in methods:
        argv = [f"conf={conf}", "quiet=true", f"method={m}", f"output_dir={out}", f"run_name={m}",
                "overwrite=true", "tracking.wandb.mode=disabled", *extra]
        rc = run.main(argv)
        if rc != 0:
            raise SystemExit(f"error: method {m} exited {rc}")
        digests[m] = digest(out / m)
        print(f"{m}: done", flush=True)
    return digests


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def differences(a, b, path: str = "", out: list | None = None, limit: int = 20) -> list[str]:
    """The first `limit` places where a and b differ, as 'path: a != b'."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in b or k not in a:
                out.append(f"{path}/{k}: only in {'A' if k in a else 'B'}")
            else:
                differences(a[k], b[k], f"{path}/{k}", out, limit)
            if len(out) >= limit:
                break
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} rows != {len(b)} rows")
        for i, (x, y) in enumerate(zip(a, b)):
            differences(x, y, f"{path}[{i}]", out, limit)
            if len(out) >= limit:
                break
    elif not _same(a, b):
        out.append(f"{path}: {json.dumps(a)[:120]} != {json.dumps(b)[:120]}")
    return out


def drop_keys(obj, names: set[str]):
    """obj without the dict keys in `names`, at any depth (e.g. a config key one side does not have yet)."""
    if isinstance(obj, dict):
        return {k: drop_keys(v, names) for k, v in obj.items() if k not in names}
    if isinstance(obj, list):
        return [drop_keys(v, names) for v in obj]
    return obj


def sort_rows(obj, names: set[str]):
    """obj with the lists under dict keys in `names` sorted (by their canonical JSON), at any depth: the same
    rows in another order compare equal (e.g. a change that gathers a round's rows per client)."""
    if isinstance(obj, dict):
        return {k: sorted(v, key=lambda r: json.dumps(r, sort_keys=True)) if k in names and isinstance(v, list)
                else sort_rows(v, names) for k, v in obj.items()}
    if isinstance(obj, list):
        return [sort_rows(v, names) for v in obj]
    return obj


def move_keys(digests: dict, moved: dict[str, str]) -> dict:
    """Each method's results.config with a top-level key of `moved` put where it went ("beta" -> "lada.beta":
    config["lada"]["beta"]), so a digest from before a section took the key compares with one from after."""
    for d in digests.values():
        config = d.get("results", {}).get("config") if isinstance(d, dict) else None
        for old, new in moved.items():
            if isinstance(config, dict) and old in config:
                node = config
                *path, leaf = new.split(".")
                for part in path:
                    node = node.setdefault(part, {})
                node[leaf] = config.pop(old)
    return digests


def compare(a_path: Path, b_path: Path, ignore: list[str] | None = None, unordered: list[str] | None = None,
            moved: dict[str, str] | None = None) -> int:
    a, b = (sort_rows(drop_keys(move_keys(json.loads(p.read_text()), moved or {}), set(ignore or ())),
                      set(unordered or ())) for p in (a_path, b_path))
    diffs = differences(a, b)
    if not diffs:
        less = f", less keys named {', '.join(ignore)}" if ignore else ""
        less += f", rows of {', '.join(unordered)} in any order" if unordered else ""
        less += f", config keys {', '.join(moved)} compared where they went" if moved else ""
        print(f"identical: {', '.join(sorted(a))} ({a_path} vs {b_path}{less})")
        return 0
    print(f"different ({a_path} vs {b_path}); first differences:")
    for line in diffs:
        print(f"  {line}")
    return 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", type=Path, help="directory for the runs and digest.json")
    p.add_argument("--conf", default="smoke.yaml", help="the config every method runs on (default smoke.yaml)")
    p.add_argument("--methods", nargs="*", help="methods to run (default: every method of the registry)")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"), help="two digest.json files")
    p.add_argument("--ignore-key", nargs="*", default=[], metavar="NAME",
                   help="with --compare: leave out dict keys of these names, at any depth")
    p.add_argument("--unordered", nargs="*", default=[], metavar="NAME",
                   help="with --compare: the lists under dict keys of these names compare as multisets of rows")
    p.add_argument("--moved", nargs="*", default=None, metavar="OLD=NEW",
                   help="with --compare: results.config keys recorded at an old place compare at the new one "
                        "(beta=lada.beta; no value: every key of ladalit.core.config.MOVED)")
    p.add_argument("overrides", nargs="*", default=[], help="extra key=value settings for every run")
    args = p.parse_args(argv)
    if args.compare:
        missing = [str(x) for x in args.compare if not x.is_file()]
        if missing:
            print(f"error: no such digest: {missing[0]}", file=sys.stderr)
            return 2
        moved = None
        if args.moved is not None:
            if any("=" not in m for m in args.moved):
                print(f"error: --moved takes OLD=NEW, got {next(m for m in args.moved if '=' not in m)!r}",
                      file=sys.stderr)
                return 2
            moved = dict(m.split("=", 1) for m in args.moved)
            if not moved:
                import ladalit.components  # noqa: F401  the sections and the keys they took
                from ladalit.core.config import MOVED
                moved = dict(MOVED)
        return compare(*args.compare, ignore=args.ignore_key, unordered=args.unordered, moved=moved)
    if args.out is None:
        print("error: give OUT_DIR, or --compare A B", file=sys.stderr)
        return 2
    from ladalit import registry
    methods = args.methods or list(registry.METHODS)
    unknown = [m for m in methods if m not in registry.METHODS]
    if unknown:
        print(f"error: unknown method {unknown[0]!r} (known: {', '.join(registry.METHODS)})", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    digests = run_methods(args.out.resolve(), methods, args.overrides, args.conf)
    path = args.out / "digest.json"
    path.write_text(json.dumps(digests, indent=1, sort_keys=True))
    for m, d in digests.items():  # short fingerprints to quote; --compare is the check
        print(f"{m}: sha256 {hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]}")
    print(f"digest: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
