"""`cx hub credit …`: rebuild the credit tables after the rules changed, sweep expired periods now."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .config import HubConfig


def register_hub(sub: Any, config_arg: Any) -> None:
    credit = sub.add_parser("credit", help="public credit information: publicity, classes, lists 信用信息")
    c_sub = credit.add_subparsers(title="credit actions", metavar="ACTION", required=True)
    rebuild = c_sub.add_parser("rebuild", help="judge every record again by the configured credit rules 按规则重建")
    config_arg(rebuild)
    rebuild.set_defaults(run=run_rebuild)
    sweep = c_sub.add_parser("sweep", help="recompute enterprises whose publicity periods or labels ended 到期清理")
    config_arg(sweep)
    sweep.set_defaults(run=run_sweep)


def run_rebuild(args: argparse.Namespace) -> int:
    from .cli import opened_store
    from .credit import NAME, CreditProjection, Rules
    from .projections import Projector

    cfg = HubConfig.load(args.config)
    rules = Rules.from_config(cfg)

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\r  rebuilding 重建 {done:,} / {total:,}", end="", file=sys.stderr, flush=True)

    with opened_store(cfg) as store:
        versions = Projector(store, [CreditProjection(rules)]).rebuild(NAME, progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"credit rules {rules.version} ({rules.sha256[:12]}) applied to {versions:,} record versions "
          f"信用规则已应用于{versions:,}条记录版本")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from .cli import opened_store
    from .credit import Rules, sweep

    cfg = HubConfig.load(args.config)
    with opened_store(cfg) as store:
        count = sweep(store, Rules.from_config(cfg))
    print(f"{count:,} enterprises recomputed 家企业已重新计算")
    return 0
