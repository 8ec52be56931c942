"""A short chaos run on each hub store (tests/chaos.py; `make chaos` runs the full one)."""

from __future__ import annotations

from chaos import Plan, run


def test_short_chaos_run_loses_and_repeats_nothing(store_kind):
    figures = run(Plan(rows=3000, store=store_kind, close_every=3, gap=2.5, settle_timeout=240))
    assert (figures["hub_kills"], figures["node_kills"], figures["broker_restarts"]) == (3, 9, 1)
    assert figures["connections_closed"] > 0 and figures["retracted"] > 0 and figures["batches_resent"] > 0
    print(figures)
