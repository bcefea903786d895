"""Command line: `hba-fast search [CONFIG] [--set k=v ...]`, `hba-fast train CONFIG --schedule F | --augment A`
and `hba-fast compare CONFIG --arms A,B,schedule:F --seeds N`.

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
    how.add_argument("--augment", metavar="NAME", help="a hand-made augmentation instead: baseline | cutout | "
                     "autoaugment[:cifar10|svhn|imagenet] | randaugment[:N,M] | trivialaugment")
    p_compare = add_compare_parser(sub)
    for p in (p_search, p_train, p_compare):
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a config value (YAML syntax), e.g. --set train.epochs=3")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.command == "search":
            from .search import search

            search(cfg)
        elif args.command == "compare":
            run_compare(cfg, args)
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


def add_compare_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="the evaluation protocol for several augmentations side by side, over seeds")
    p.add_argument("config", help="YAML config of the evaluation runs (data, model, optim, train, run.out_dir: the "
                                  "compare folder)")
    p.add_argument("--arms", required=True, help="comma-separated: baseline, cutout, autoaugment[:cifar10|svhn|"
                   "imagenet], randaugment[:N,M], trivialaugment, schedule:PATH (a schedule.json; several allowed)")
    p.add_argument("--seeds", type=int, default=3, help="runs per arm, seeds train.seed + 0..N-1 (default 3)")
    return p


def run_compare(cfg, args) -> None:
    from .compare import compare

    compare(cfg, args.arms, args.seeds)


if __name__ == "__main__":
    sys.exit(main())
