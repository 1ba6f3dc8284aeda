"""``convergence prices diff --source litellm``: what LiteLLM's price map would add to the price book.

Prints, per provider, a unified diff of the price-book CSV with the proposed rows in place and a
summary (additions, changes, conflicts, one line each); ``--write`` appends the rows. Existing
rows are never edited (see :mod:`beam_pipelines.pricing.book_diff`), so the diff only ever has
``+`` lines. The LiteLLM wheel is a pinned release, downloaded once into
``$CONVERGENCE_HOME/cache/litellm`` unless ``--wheel`` names a copy.
"""
from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from beam_pipelines.cli.args import day
from beam_pipelines.errors import ConvergenceError

PROVIDERS = ("openai", "anthropic")
SOURCES = ("litellm",)


def add_diff_parser(prices_sub) -> argparse.ArgumentParser:
    """Add ``diff`` under an existing ``prices`` subcommand's subparsers."""
    diff = prices_sub.add_parser("diff", help="rows another price list would add to the price book (new rows only)")
    diff.add_argument("--source", choices=SOURCES, required=True, help="where the other prices come from")
    diff.add_argument("--provider", choices=[*PROVIDERS, "all"], default="all")
    diff.add_argument("--as-of", type=day, metavar="YYYY-MM-DD", help="the day a changed price takes effect (default: today, UTC)")
    diff.add_argument("--wheel", type=Path, metavar="PATH",
                      help="a downloaded litellm wheel (default: the pinned version, fetched into $CONVERGENCE_HOME/cache)")
    diff.add_argument("--write", action="store_true", help="append the proposed rows to the CSV files")
    return diff


def add_prices_parser(sub) -> argparse._SubParsersAction:
    """Add ``prices`` with its ``diff`` subcommand; returns the subparsers so more subcommands can join."""
    prices = sub.add_parser("prices", help="the price book: compare it with another price list")
    prices_sub = prices.add_subparsers(dest="prices_command", required=True)
    add_diff_parser(prices_sub)
    return prices_sub


def run_prices(args, settings) -> int:
    if getattr(args, "prices_command", None) != "diff":
        raise ConvergenceError(f"prices {getattr(args, 'prices_command', '')}: not handled here (expected diff)")
    return run_prices_diff(args, settings)


def run_prices_diff(args, settings) -> int:
    from beam_pipelines.pricing.book_diff import BOOKS, apply_diff, diff_book
    from beam_pipelines.pricing.litellm_source import fetch_wheel, litellm_rows, read_price_map

    wheel = args.wheel or fetch_wheel(Path(settings.home) / "cache" / "litellm")
    price_map = read_price_map(wheel)
    as_of = args.as_of or datetime.now(timezone.utc).date()
    providers = PROVIDERS if args.provider == "all" else (args.provider,)
    for provider in providers:
        book = BOOKS[provider]
        path = Path(settings.configs_dir) / book.csv
        result = diff_book(path, litellm_rows(price_map, provider), as_of, book, display=book.csv)
        print(result.unified_diff(), end="")
        print(result.summary())
        if args.write:
            print(f"wrote {path} (+{len(result.proposals)} row(s))" if apply_diff(path, result) else f"{book.csv}: nothing to write")
    return 0
