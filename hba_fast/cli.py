"""Command line: `hba-fast search [CONFIG]`, `train CONFIG --schedule F | --augment A`, `compare CONFIG --arms
A,B,schedule:F,pba:P --seeds N`, `tune CONFIG --random N | --fixed | --values F`, `export`, `plot` (--help). A
schedule is a schedule.json, a json-flat export or a PBA file (pba:FILE); a search in another space than PBA's
(policy.space) writes its hyperparameters' trajectory as schedule.json, which `plot` draws.

A stop signal (SIGTERM, SIGINT, SIGUSR1: hba_fast/run/stop.py) ends a run after its checkpoint with one line on
stderr (what stopped it, the step, the command that continues) and exit code 128 + the signal's number.

With no CONFIG, `search` runs the demo (configs/demo.yaml) on the generated shapes10 dataset. Errors a user
can fix (config, data, schedule, device, checkpoint, NaN loss, a full disk) are printed as one clear line, exit
code 2. `hba-fast train` writes into a folder of its own inside run.out_dir (train-schedule, train-baseline,
train-cutout, train-autoaugment, ...), so the obvious next step after a search, `hba-fast train CONFIG --schedule
RUN/schedule.json` with the search's own config, never collides with the search's run folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import shlex
import sys
import textwrap
from pathlib import Path

from . import __version__
from .augment.arms import AUGMENT_HELP
from .config import load_config
from .errors import StopRequested, UserError


def epilog() -> str:
    """The --help text on outputs and resume; the fields a resume may change come from the config's own metadata."""
    from .config import free_on_resume_fields

    free = ", ".join(f"{section}.{key}" for section, key in sorted(free_on_resume_fields()) if key != "epochs")
    resume = textwrap.fill(
        "stop and resume: SIGTERM, SIGINT (Ctrl-C) and SIGUSR1 (SLURM's --signal=USR1@120) finish the current round, "
        "write a checkpoint of the position inside the epoch and exit with 128 + the signal's number; a second signal "
        "exits at once. A run stopped at any moment (a signal, a kill, a crash) continues from its last checkpoint "
        "(written at such a stop and at the end of every train.checkpoint_every-th epoch) when the same command is run "
        "again, and ends where an uninterrupted run would. One process per run folder (an OS lock). To "
        "extend a finished run, run it again with a larger --set train.epochs=N (its earlier outputs move to "
        f"after-E-epochs/). Switches of how it runs may change too (run.*, {free}); any other changed setting is "
        "refused: start a new run with --set run.out_dir=DIR. run.resume=false refuses to touch a folder that holds "
        "a run.", width=112, subsequent_indent="  ")
    return f"""\
outputs: every run writes into its run folder, run.out_dir (runs/demo for the demo; set it with
  --set run.out_dir=DIR): schedule.json, schedule.png, model.pt, checkpoint.pt, config.yaml,
  environment.json, metrics.jsonl, log.txt. `hba-fast train` writes into RUN.OUT_DIR/train-schedule
  (or train-baseline, train-cutout, train-autoaugment, ...): model.pt, result.json (the test error),
  checkpoint.pt and the logs. `hba-fast compare` writes one such folder per arm and seed, and compare.md/json/png.

{resume}
"""


def _train_folder(cfg, schedule: str | None, augment: str | None):
    """`hba-fast train` runs in RUN.OUT_DIR/train-<schedule|AUGMENT>, not in the search's folder."""
    from .schedule.pba import PREFIX, split_spec

    if schedule and schedule.startswith(PREFIX):  # PBA's schedule: train-pba-<file stem>, as its compare arm
        name = "pba-" + split_spec(schedule)[0].stem
    else:
        name = "schedule" if schedule else str(augment).replace(":", "-").replace(",", "-")  # randaugment:2,9 -> -2-9
    out = Path(cfg.run.out_dir) / f"train-{name}"
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out_dir=str(out)))


def _one_line(message: str) -> str:
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hba-fast", description="Hypernetwork-Based Augmentation search: learn an "
                                     "augmentation schedule in about the time of one training run",
                                     epilog=epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hba-fast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_search = sub.add_parser("search", help="learn an augmentation schedule (paper Algorithm 1)", epilog=epilog(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p_search.add_argument("config", nargs="?", help="YAML config (default: the demo on the built-in shapes10)")
    p_train = sub.add_parser("train", help="train a plain model with a schedule or a baseline; report test error",
                             epilog=epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p_train.add_argument("config", help="YAML config (data, model, optim, train sections)")
    how = p_train.add_mutually_exclusive_group(required=True)
    how.add_argument("--schedule", help="schedule.json written by `hba-fast search` (or its run folder), or pba:FILE "
                     "(a PBA schedule file, e.g. PBA's published rcifar10_16_wrn.txt; pba:FILE@H: it covers H epochs)")
    how.add_argument("--augment", metavar="NAME", help=f"a hand-made augmentation instead: {AUGMENT_HELP}")
    p_compare = add_compare_parser(sub)
    p_tune = add_tune_parser(sub)
    for p in (p_search, p_train, p_compare, p_tune):
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a config value (YAML syntax), e.g. --set train.epochs=3")
    _add_export(sub)
    _add_plot(sub)
    args = parser.parse_args(argv)
    cfg = None
    try:
        if args.command in ("export", "plot"):
            return args.run(args)
        cfg = load_config(args.config, args.overrides)
        if args.command == "search":
            from .search import search

            search(cfg)
        elif args.command == "compare":
            run_compare(cfg, args)
        elif args.command == "tune":
            from .tune import tune

            if not args.random and not args.fixed and not args.values:
                parser.error("tune needs --random N (N >= 1), --fixed or --values SCHEDULE")
            tune(cfg, trials=args.random, fixed=args.fixed, trial_epochs=args.trial_epochs,
                 final_epochs=args.final_epochs, values=args.values)
        else:
            from .train import train

            train(_train_folder(cfg, args.schedule, args.augment), schedule=args.schedule, augment=args.augment)
    except StopRequested as e:  # a stop signal: the checkpoint holds the position (hba_fast/run/stop.py)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"hba-fast: {_one_line(e)}; continue with the same command: {_same_command(argv)}", file=sys.stderr,
                  flush=True)
        return 128 + e.signum
    except UserError as e:
        print(f"hba-fast: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # a full or read-only disk met outside the run's own writes: atomic.py's one line
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            raise
        print(f"hba-fast: error: {_disk_error(args, cfg, e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hba-fast: interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


def _same_command(argv: list[str] | None) -> str:
    """The command line of this process, to run again (under torchrun: the worker's arguments after torchrun's)."""
    args = shlex.join(sys.argv[1:] if argv is None else argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"torchrun ... -m hba_fast.cli {args} (the same torchrun command)"
    return f"hba-fast {args}"


def _disk_error(args, cfg, e: OSError) -> str:
    """A full or read-only disk met outside atomic.py's writes, in atomic.py's words (file, cause, fix)."""
    from .atomic import output_error

    run = args.command not in ("export", "plot")
    where = e.filename or (cfg.run.out_dir if run and cfg is not None else getattr(args, "out", None)) or "."
    line = _one_line(output_error(where, e, kept=False, other="run.out_dir" if run else "--out"))
    return line + ("; the last checkpoint is kept" if run and cfg is not None else "")


def _add_export(sub) -> None:
    from .schedule.export import FORMATS

    p = sub.add_parser("export", help="write a schedule in another tool's format (PBA, Albumentations, json-flat)")
    p.add_argument("schedule", help="schedule.json written by `hba-fast search`, a json-flat export, or pba:FILE "
                   "(a PBA schedule file; pba:FILE@H: it covers H epochs)")
    p.add_argument("--to", required=True, choices=FORMATS, help="the target format")
    p.add_argument("--out", required=True, help="the file to write (albumentations without --epoch: a folder)")
    p.add_argument("--epochs", type=int, help="stretch the schedule to this many training epochs first (pba: the "
                   "epochs of the PBA run, which then replays it exactly with --epochs N --hp_policy_epochs N)")
    p.add_argument("--epoch", type=int, help="export only this epoch (0-based)")
    p.add_argument("--image-size", type=int, default=32, help="pba: image side in pixels (PBA uses 32)")
    p.set_defaults(run=_export)


def _export(args) -> int:
    from .schedule.export import export_schedule

    report = export_schedule(args.schedule, args.to, args.out, epochs=args.epochs, epoch=args.epoch,
                             image_size=args.image_size)
    print(f"hba-fast: wrote {len(report.files)} file(s): {', '.join(report.files[:3])}"
          + (" ..." if len(report.files) > 3 else ""))
    for note in report.notes:
        print(f"hba-fast: {note}")
    return 0


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="draw a schedule: Figure 4 (magnitudes, per-op probabilities and magnitudes); "
                       "for another search space (policy.space, e.g. stn-cifar) its hyperparameters per epoch")
    p.add_argument("schedule", help="schedule.json (of any search space), a json-flat export, or pba:FILE (a PBA "
                   "schedule file)")
    p.add_argument("--out", help="PNG to write (default: the schedule's name with .png)")
    p.set_defaults(run=_plot)


def _plot(args) -> int:
    from .schedule.file import read_schedule
    from .schedule.pba import PREFIX, split_spec
    from .schedule.plot import plot_schedule
    from .schedule.trajectory import is_trajectory, plot_trajectory, read_trajectory

    path = split_spec(args.schedule)[0] if args.schedule.startswith(PREFIX) else Path(args.schedule)
    out = Path(args.out) if args.out else path.with_suffix(".png")
    if is_trajectory(path):  # a search in another space than PBA's (schedule/trajectory.py)
        plot_trajectory(out, read_trajectory(path), title=path.name)
    else:
        plot_schedule(out, read_schedule(args.schedule), title=path.name)
    print(f"hba-fast: wrote {out}")
    return 0


def add_compare_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="the evaluation protocol for several augmentations side by side, over seeds")
    p.add_argument("config", help="YAML config of the evaluation runs (data, model, optim, train, run.out_dir: the "
                                  "compare folder)")
    p.add_argument("--arms", required=True, help=f"comma-separated: {AUGMENT_HELP.replace(' | ', ', ')}, "
                   "schedule:PATH (a schedule.json; several allowed), pba:PATH (a PBA schedule file, e.g. PBA's "
                   "published rcifar10_16_wrn.txt; arm pba-<stem>)")
    p.add_argument("--seeds", type=int, default=3, help="runs per arm, seeds train.seed + 0..N-1 (default 3)")
    p.add_argument("--only-seed", type=int, default=None, metavar="K",
                   help="run only the pairs of seed K (0..N-1) and write no table: spread one comparison over "
                        "several processes; a call without it writes the table from the finished pairs")
    return p


def add_tune_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("tune", help="baselines at fixed hyperparameters of a regularisation space (policy.space, "
                       "e.g. stn-cifar): random search, the fixed initial values (paper Table 6)")
    p.add_argument("config", nargs="?", help="YAML config of a search in that space (e.g. "
                   "configs/stn-alexnet-cifar10.yaml; without one: the demo config and --set)")
    p.add_argument("--random", type=int, default=0, metavar="N", help="random search: N trials at values drawn "
                   "uniformly in the space's ranges, each a run of --trial-epochs; the best by validation loss is "
                   "retrained for --final-epochs (run.out_dir/random/trial<k>, random/best, random-search.json); "
                   "resumable per trial")
    p.add_argument("--fixed", action="store_true", help="one run at the space's initial values (run.out_dir/fixed)")
    p.add_argument("--values", metavar="SCHEDULE", help="one run at the last epoch's values of a search's "
                   "schedule.json in this space (run.out_dir/values)")
    p.add_argument("--trial-epochs", type=int, default=None, metavar="E", help="epochs of a trial (default "
                   "train.epochs)")
    p.add_argument("--final-epochs", type=int, default=None, metavar="F", help="epochs of the retrained best, of "
                   "--fixed and of --values (default train.epochs)")
    return p


def run_compare(cfg, args) -> None:
    from .compare import compare

    compare(cfg, args.arms, args.seeds, args.only_seed)


if __name__ == "__main__":
    sys.exit(main())
