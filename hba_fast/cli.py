"""Command line: `hba-fast search [CONFIG]`, `train CONFIG --schedule F | --augment A`, `export`, `plot` (--help).

With no CONFIG, `search` runs the demo (configs/demo.yaml) on the generated shapes10 dataset. Errors a user
can fix (config, data, schedule, device, checkpoint, NaN loss) are printed as one clear message, exit code 2.
"""
from __future__ import annotations

import argparse
import sys

from .config import load_config
from .errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hba-fast", description="Hypernetwork-Based Augmentation search")
    sub = parser.add_subparsers(dest="command", required=True)
    p_search = sub.add_parser("search", help="learn an augmentation schedule (paper Algorithm 1)")
    p_search.add_argument("config", nargs="?", help="YAML config (default: the demo on the built-in shapes10)")
    p_train = sub.add_parser("train", help="train a plain model with a schedule or a baseline; report test error")
    p_train.add_argument("config", help="YAML config (data, model, optim, train sections)")
    how = p_train.add_mutually_exclusive_group(required=True)
    how.add_argument("--schedule", help="schedule.json written by `hba-fast search`")
    how.add_argument("--augment", choices=("baseline", "cutout"), help="a baseline augmentation instead")
    for p in (p_search, p_train):
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a config value (YAML syntax), e.g. --set train.epochs=3")
    _add_export(sub)
    _add_plot(sub)
    args = parser.parse_args(argv)
    try:
        if args.command in ("export", "plot"):
            return args.run(args)
        cfg = load_config(args.config, args.overrides)
        if args.command == "search":
            from .search import search

            search(cfg)
        else:
            from .train import train

            train(cfg, schedule=args.schedule, augment=args.augment)
    except UserError as e:
        print(f"hba-fast: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hba-fast: interrupted; run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


def _add_export(sub) -> None:
    from .export import FORMATS

    p = sub.add_parser("export", help="write a schedule in another tool's format (PBA, Albumentations, json-flat)")
    p.add_argument("schedule", help="schedule.json written by `hba-fast search` (or a json-flat export)")
    p.add_argument("--to", required=True, choices=FORMATS, help="the target format")
    p.add_argument("--out", required=True, help="the file to write (albumentations without --epoch: a folder)")
    p.add_argument("--epochs", type=int, help="stretch the schedule to this many training epochs first")
    p.add_argument("--epoch", type=int, help="export only this epoch (0-based)")
    p.add_argument("--image-size", type=int, default=32, help="pba: image side in pixels (PBA uses 32)")
    p.set_defaults(run=_export)


def _export(args) -> int:
    from .export import export_schedule

    report = export_schedule(args.schedule, args.to, args.out, epochs=args.epochs, epoch=args.epoch,
                             image_size=args.image_size)
    print(f"hba-fast: wrote {len(report.files)} file(s): {', '.join(report.files[:3])}"
          + (" ..." if len(report.files) > 3 else ""))
    for note in report.notes:
        print(f"hba-fast: {note}")
    return 0


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="draw a schedule: Figure 4 (magnitudes, per-op probabilities and magnitudes)")
    p.add_argument("schedule", help="schedule.json (or a json-flat export)")
    p.add_argument("--out", help="PNG to write (default: the schedule's name with .png)")
    p.set_defaults(run=_plot)


def _plot(args) -> int:
    from pathlib import Path

    from .schedule import read_any_schedule
    from .schedule_plot import plot_arrays

    probs, mags = read_any_schedule(args.schedule)
    out = Path(args.out) if args.out else Path(args.schedule).with_suffix(".png")
    plot_arrays(out, probs, mags, title=Path(args.schedule).name)
    print(f"hba-fast: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
