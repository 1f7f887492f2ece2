"""Command line: `python -m ladalit.run conf=NAME.yaml key.sub=value ...`.

Exit status 2 on a bad config or bad input, with a one-line message.
"""
from __future__ import annotations

import json
import shlex
import signal
import sys
import time
from pathlib import Path

import torch

import ladalit.components  # noqa: F401  registers data sets, model sources, class-path checks
from ladalit import registry
from ladalit.core.config import ConfigError, help_text, load_config, to_yaml
from ladalit.data.records import DataError
from ladalit.reporting.plots import write_plots
from ladalit.core.progress import Progress, header, quiet_transformers
from ladalit.core.results import Results, atomic_write_text, log_round
from ladalit.reporting.tracker import Tracker
from ladalit.core.run_identity import RunError, check_checkpoint, check_run_dir, prepare_run_dir, save_checkpoint
from ladalit.core.training import NonFiniteError
from ladalit.core.evaluation import evaluate_all
from ladalit.reporting.export import export_participants
from ladalit.scale.strategy import is_sharded
from ladalit.core.channel import Channel
from ladalit.core.rounds import run_in_process
from ladalit.core.budgets import check_budgets
from ladalit.core import experiment  # experiment.build_experiment: tests substitute it
from ladalit.demo.controls import Controls, analysis_on, replay_sizes  # the harness's controls (analysis only)
from ladalit.demo.oracle import oracle_report, world_oracle  # the harness's analysis: no method sees the oracle


def run_dir_for(cfg) -> Path:
    name = cfg.run_name or f"{cfg.method}-{time.strftime('%Y%m%d-%H%M%S')}-seed{cfg.seed}"
    return Path(cfg.output_dir) / name


def evaluate_round0(exp, results, tracker, channel, progress) -> None:
    """Round 0: every participant as it starts (the pre-trained models, before any transfer), evaluated
    like every round, so that the final table and the plots show what the run changed."""
    evaluate_all(exp, results, 0, progress)
    log_round(tracker, results, channel, 0)
    progress.summary(results, 0, channel)


def export_models(exp, run_dir: Path, results, quiet: bool) -> None:
    """The trained participants in RUN_DIR/models/ (ladalit.reporting.export); rank 0 only. Not under FSDP2
    (sharded weights): `python -m ladalit.reporting.export RUN_DIR` writes them from the checkpoint afterwards."""
    if is_sharded(exp.fabric):
        if not quiet:
            print(f"models: not exported under fsdp2; run: python -m ladalit.reporting.export {run_dir}")
        return
    paths = export_participants({"server": exp.server, **exp.clients}, exp.cfg, run_dir, exp.cfg.rounds, results)
    if paths and not quiet:
        print(f"models: {run_dir / 'models'} ({', '.join(p.name for p in paths)})")


def execute(cfg, quiet: bool = False, status: dict | None = None, conf: str = "") -> tuple[Path, dict]:
    """Run one experiment from a validated config; returns the run directory and the results.

    Nothing is written into the run directory before the run dir, the data, the models and (on
    resume) the checkpoint have been checked (`ladalit.core.run_identity`). `status` is filled with the
    run dir and the last complete round, for the message of an interrupted run.
    With several processes (FSDP2) every rank runs the loop; rank 0 alone writes files and W&B.
    `conf` (the config file given) is only shown in the header.
    """
    quiet_transformers(cfg.verbose)
    status = {} if status is None else status
    exp, controls, ckpt = build_checked(cfg)
    fabric = exp.fabric
    writer = fabric.is_global_zero
    run_dir = Path(fabric.broadcast(str(run_dir_for(cfg))))  # the name holds a time: rank 0's wins
    quiet = quiet or not writer
    if ckpt is not None:
        check_checkpoint(exp, ckpt, run_dir)
    if writer:
        prepare_run_dir(cfg, run_dir, to_yaml(cfg))
        if not quiet:
            print(header(exp, run_dir, conf), flush=True)
    status.update(run_dir=run_dir, round=0 if ckpt is None else ckpt["round"])
    fabric.barrier()
    channel, results = Channel(), Results()
    tracker = Tracker(cfg, run_dir) if writer else None
    start_round, state = resume_point(ckpt, controls, run_dir, quiet)
    on_round_end = checkpointer(cfg, fabric, run_dir, results, channel, controls, status, writer)
    with Progress(quiet=quiet) as progress:
        if start_round == 1:
            evaluate_round0(exp, results, tracker, channel, progress)
        # the method's roles over the one round loop
        extra = run_in_process(registry.roles(cfg.method), exp, channel, results, tracker, start_round, state,
                               on_round_end, progress)
    if not writer:
        return run_dir, {}
    return run_dir, finish(cfg, exp, run_dir, results, channel, tracker, controls, extra, quiet)


def build_checked(cfg):
    """(experiment, the harness's controls or None, the checkpoint to resume or None), after every check that
    needs no model: the run dir (and its checkpoint), a matched selector's replayed run, then the token budgets."""
    ckpt = check_run_dir(cfg, run_dir_for(cfg))
    sizes = None
    if cfg.analysis.selector != "none":  # the LaDa run a matched selector replays: checked before anything is built
        sizes = replay_sizes(cfg)
    exp = experiment.build_experiment(cfg)
    check_budgets(exp)  # every participant's token budgets fit, or one line naming it, before anything is written
    return exp, build_controls(cfg, exp, sizes), ckpt


def resume_point(ckpt, controls, run_dir: Path, quiet: bool) -> tuple[int, dict | None]:
    """(the first round to run, the roles' state to restore): (1, None) for a new run."""
    if ckpt is None:
        return 1, None
    state = ckpt["state"]
    torch.set_rng_state(ckpt["torch_rng"])
    if controls is not None:
        controls.load_state_dict(state.get("analysis"))
    if not quiet:
        print(f"resuming {run_dir} after round {ckpt['round']}")
    return ckpt["round"] + 1, state


def checkpointer(cfg, fabric, run_dir: Path, results, channel, controls, status: dict, writer: bool):
    """The round loop's `on_round_end(t, snapshot)`: the checkpoint (with the controls' own answers) and
    results.json after every round."""
    def on_round_end(t, snapshot):
        if controls is not None:  # the controls' own answers, beside the method's state
            snapshot = {**snapshot, "analysis": controls.state_dict()}
        if writer:
            save_checkpoint(run_dir, t, snapshot)
            results.save(run_dir, cfg, channel)
        status["round"] = t
        fabric.barrier()
    return on_round_end


def finish(cfg, exp, run_dir: Path, results, channel, tracker, controls, extra: dict, quiet: bool) -> dict:
    """results.json with the method's counters and the oracle's report, the controls' answers, the models, the
    plots and the tracker's summary; returns results.json's content."""
    analysis = controls.rows() if controls is not None else None
    if controls is not None:
        extra["analysis_generated"] = controls.generated
    extra = {**extra, **oracle_report(cfg, [x.id for x in exp.data.public], results,
                                      dict(cfg.analysis.learnable_steps) or None, analysis_responses=analysis)}
    out = results.save(run_dir, cfg, channel, extra=extra)
    if analysis is not None:
        atomic_write_text(run_dir / "analysis_responses.jsonl", "".join(json.dumps(r) + "\n" for r in analysis))
    export_models(exp, run_dir, results, quiet)
    plots = write_plots(out, run_dir)
    tracker.finish(results, plots)
    return out


def build_controls(cfg, exp, sizes):
    """The demo world's controls (`analysis:`; ladalit.demo.controls) as hooks in `exp`, with the oracle they
    need from the harness; None where every switch is off."""
    if not analysis_on(cfg):
        return None
    controls = Controls(cfg, exp, world_oracle(cfg, dict(cfg.analysis.learnable_steps) or None),
                        experiment.prepared_records(cfg), sizes)
    exp.hooks = controls.hooks()
    return controls


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help", "help") for a in argv):
        print(help_text())
        return 0
    try:
        cfg = load_config(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    quiet = cfg.quiet
    if cfg.verbose and not quiet:
        print(to_yaml(cfg), flush=True)
    status: dict = {}
    previous = _stop_on_sigterm()
    try:
        run_dir, out = execute(cfg, quiet=quiet, status=status,
                               conf=next((a.split("=", 1)[1] for a in argv if a.startswith("conf=")), ""))
    except (ConfigError, DataError, RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except NonFiniteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        print(interrupted_line(cfg, argv, status), file=sys.stderr)
        return 143 if isinstance(err, Terminated) else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if not out or quiet:  # not rank 0, or quiet=true: nothing printed, the run dir holds it all
        return 0
    results = Results()
    results.accuracy = out["accuracy"]
    print(results.table())
    print(f"communication: {out['communication_mb_total']:.3f} MB")
    print(f"results: {run_dir}")
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, so it ends like Ctrl-C (exit 143 instead of 130)."""


def _raise_terminated(signum, frame):
    raise Terminated()


def _stop_on_sigterm():
    """Install the SIGTERM handler (main thread only); returns the previous one, or None."""
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        return None


def interrupted_line(cfg, argv: list[str], status: dict) -> str:
    """One line: how far the run got and the command that continues it."""
    run_dir, done = status.get("run_dir"), status.get("round", 0)
    if run_dir is None:
        return "interrupted before the run started; nothing was written"
    if done == 0:
        return (f"interrupted during round 1, no round complete in {run_dir}: start again with: "
                f"{resume_command(argv, run_dir.name, 'overwrite=true')}")
    return (f"interrupted after round {done} of {cfg.rounds} (the last complete round, in {run_dir}); "
            f"resume with: {resume_command(argv, run_dir.name, 'resume=true')}")


def resume_command(argv: list[str], run_name: str, flag: str) -> str:
    keep = [a for a in argv if a.split("=", 1)[0] not in ("resume", "overwrite", "run_name")]
    return shlex.join(["python", "-m", "ladalit.run", *keep, f"run_name={run_name}", flag])


if __name__ == "__main__":
    sys.exit(main())
