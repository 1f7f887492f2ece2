"""Sharded loading under FSDP2: peak RSS of each process vs one full copy of the model (CPU, gloo).

    python -m benchmarks.sharded_loading [--quick] [--shape Qwen/Qwen3-0.6B] [--processes 2]

A model of a `ladalit.scale.shapes` preset is saved once with random bf16 weights as local
safetensors (under ~/.cache/ladalit/bench/, kept for the next run). Then:

- sharded: `--processes` processes (Fabric, `fabric.strategy: fsdp2`, gloo) build the
  participant (LoRA on, `source: hub`) on the meta device and load it with
  `ladalit.scale.strategy.load_sharded`: rank 0 reads the file, every process receives its shards;
- whole: one process loads the same participant with `from_pretrained` (what every FSDP2
  process did before, so the old sum was `--processes` x this).

Each process reports its RSS after the imports and the process group (before building
anything), its peak RSS (VmHWM) once loaded, and its peak after one forward pass.
One full copy = the bytes of the checkpoint's tensors. `from_pretrained` maps the file, so
its pages count once a forward touches them.
Target (issue 18): sum over the sharded processes of (loaded peak - after imports) <= 1.3 x
one full copy; the raw peaks (imports included) are reported too.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

TARGET = 1.3
CACHE = Path(os.environ.get("LADALIT_BENCH_CACHE", Path.home() / ".cache" / "ladalit" / "bench"))


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def rss_bytes() -> int:
    return _status("VmRSS")


def peak_rss_bytes() -> int:
    """This process image's peak RSS (VmHWM). Not `ru_maxrss`: Linux carries that across exec, so a worker
    started by a big parent would report the parent's size."""
    return _status("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def save_random(shape_name: str, quick: bool, cache: Path = CACHE) -> Path:
    """The preset with random bf16 weights as local safetensors (once), and a byte tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, ByT5Tokenizer

    from ladalit.scale.shapes import SHAPES
    path = cache / (shape_name.replace("/", "--") + ("-quick" if quick else "") + "-random-bf16")
    if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
        return path
    shape = SHAPES[shape_name]
    if quick:  # the same architecture, tiny
        shape = dataclasses.replace(shape, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                                    intermediate_size=128, vocab_size=512)
    config = shape.config()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    tmp = path.with_name(path.name + ".tmp")
    model.save_pretrained(tmp)
    ByT5Tokenizer().save_pretrained(tmp)
    tmp.rename(path)
    return path


def checkpoint_bytes(path: Path) -> int:
    from safetensors import safe_open
    total = 0
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for k in f.keys():
                t = f.get_slice(k)
                n = 1
                for s in t.get_shape():
                    n *= s
                total += n * 2  # bf16
    return total


def _participant_cfg(model_dir: Path, processes: int):
    from omegaconf import OmegaConf

    import ladalit.components  # noqa: F401  the config sections its components own
    from ladalit.core.config import RunConfig
    cfg = OmegaConf.structured(RunConfig())
    cfg.fabric.devices, cfg.fabric.accelerator = processes, "cpu"
    cfg.fabric.strategy = "fsdp2" if processes > 1 else "auto"
    p = cfg.server
    p.model.source, p.model.name_or_path, p.model.tokenizer, p.model.dtype = "hub", str(model_dir), "", "bfloat16"
    p.model.lora.enabled = True
    return cfg


def worker(out: Path, model_dir: Path, processes: int) -> None:
    """One process of the measurement: sharded (processes > 1) or whole (1)."""
    import torch
    from lightning.fabric import Fabric

    from ladalit.scale import strategy
    from ladalit.core.experiment import build_participant, setup_participant
    import peft  # noqa: F401 - imported before the baseline: only the model counts
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = _participant_cfg(model_dir, processes)
    torch.set_num_threads(1)
    if processes > 1:
        fabric = Fabric(accelerator="cpu", devices=processes, strategy=strategy.fsdp2_strategy(cfg),
                        precision="bf16-true")
    else:
        fabric = Fabric(accelerator="cpu", devices=1)
    fabric.launch()
    AutoModelForCausalLM._model_mapping[type(AutoConfig.from_pretrained(model_dir))]  # imports the model's module
    after_imports = rss_bytes()  # after the imports and the process group: only the model counts from here
    t0 = time.perf_counter()
    p = build_participant(cfg, "server", "server", cfg.server)
    built = rss_bytes()
    module = setup_participant(fabric, p)
    seconds = time.perf_counter() - t0
    loaded, peak_loaded = rss_bytes(), peak_rss_bytes()
    with torch.no_grad():  # it computes
        lp = module.pair_logprobs(["Question: 2+3?\nAnswer:"], [" 5. The answer is (B)."], [" 6."])
    fabric.barrier()
    r = {"rank": fabric.global_rank, "processes": processes, "after_imports": after_imports,
         "peak": peak_rss_bytes(), "load_s": seconds,
         "after_build": built, "after_load": loaded, "peak_at_load": peak_loaded, "logprob": float(lp[0][0])}
    (out / f"{'sharded' if processes > 1 else 'whole'}-rank{fabric.global_rank}.json").write_text(json.dumps(r))


def _launch(out: Path, model_dir: Path, processes: int, timeout: int = 1200) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])
           + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, __file__, "--worker", str(out), str(model_dir), str(processes)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    kind = "sharded" if processes > 1 else "whole"
    return [json.loads((out / f"{kind}-rank{i}.json").read_text()) for i in range(processes)]


def main(argv: list[str] | None = None) -> dict:
    from benchmarks.common import table, write_result
    from benchmarks.run import add_common_args, fmt_bytes, setup, summary_row
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(ap)
    ap.add_argument("--shape", default="Qwen/Qwen3-0.6B")
    ap.add_argument("--processes", type=int, default=2)
    args = ap.parse_args(argv)
    setup(args.threads, args.out, args.quick)
    import tempfile
    with tempfile.TemporaryDirectory() as d:  # --quick: the tiny model in the temporary directory too
        model_dir = save_random(args.shape, args.quick, Path(d) if args.quick else CACHE)
        full = checkpoint_bytes(model_dir)
        sharded = _launch(Path(d), model_dir, args.processes)
        whole = _launch(Path(d), model_dir, 1)[0]
    grown = [r["peak_at_load"] - r["after_imports"] for r in sharded]
    ratio = sum(grown) / full
    raw_ratio = sum(r["peak_at_load"] for r in sharded) / full
    # from_pretrained maps the file: its pages count only once touched, i.e. at the first forward
    whole_grown = whole["peak"] - whole["after_imports"]
    rows = [[f"sharded rank {r['rank']}", fmt_bytes(r["after_imports"]), fmt_bytes(r["peak_at_load"]),
             fmt_bytes(g), f"{g / full:.2f}", fmt_bytes(r["peak"]), f"{r['load_s']:.1f}"]
            for r, g in zip(sharded, grown)]
    rows.append([f"sum of {args.processes}", fmt_bytes(sum(r["after_imports"] for r in sharded)),
                 fmt_bytes(sum(r["peak_at_load"] for r in sharded)), fmt_bytes(sum(grown)), f"{ratio:.2f}",
                 fmt_bytes(sum(r["peak"] for r in sharded)), ""])
    rows.append(["whole (from_pretrained), 1 process", fmt_bytes(whole["after_imports"]), "(mapped)",
                 fmt_bytes(whole_grown), f"{whole_grown / full:.2f}", fmt_bytes(whole["peak"]),
                 f"{whole['load_s']:.1f}"])
    print(f"{args.shape}{' (quick: tiny)' if args.quick else ''}, random bf16, LoRA on; one full copy = "
          f"{fmt_bytes(full)}")
    print(table(rows, ["process", "RSS after imports", "peak RSS, loaded", "loaded - imports", "x one copy",
                       "peak after a forward", "load s"]))
    same = max(abs(r["logprob"] - whole["logprob"]) for r in sharded)
    print(f"summed log-prob of one pair, |sharded - whole| = {same:.3g} (whole: {whole['logprob']:.4g}; bf16)")
    measured = (f"sum(loaded peak - imports) {ratio:.2f}x one copy ({fmt_bytes(sum(grown))} of {fmt_bytes(full)}); "
                f"raw peaks {raw_ratio:.2f}x")
    summary = summary_row(8, "sharded loading: RSS over processes", f"sum <= {TARGET:g}x one full copy", measured,
                          ratio <= TARGET, f"{args.shape}, {args.processes} gloo processes; old path "
                          f"{args.processes} x {whole_grown / full:.2f} copies; after a forward the sharded processes peak at "
                          f"{fmt_bytes(sum(r['peak'] for r in sharded))} in all (FSDP2 all-gathers on CPU)")
    result = {"shape": args.shape, "quick": args.quick, "full_copy_bytes": full, "sharded": sharded, "whole": whole,
              "ratio": ratio, "raw_ratio": raw_ratio, "logprob_diff": same, "summary": summary}
    print(f"wrote {write_result('sharded_loading', result)}")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
