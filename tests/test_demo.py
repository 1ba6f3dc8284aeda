"""`make demo` is the first thing a new user runs: it must work and show what it promises."""
from __future__ import annotations

from beam_pipelines.cli.main import main


def test_the_demo_runs_every_daily_pipeline_and_ends_with_focus_and_the_ledger(home, capsys):
    assert main(["demo", "--days", "2"]) == 0
    out = capsys.readouterr().out
    for pipeline in ("openai/cost/usage_cost", "anthropic/cost/usage_cost", "gcp/cost/billing",
                     "openai/ledger/billed_cost", "anthropic/ledger/billed_cost"):
        assert f"running {pipeline}" in out
    assert "FAILED" not in out
    focus = out[out.index("FOCUS 1.2 (focus_cost_daily)"):out.index("ledger (cost_reconciliation_daily)")]
    assert all(provider in focus for provider in ("openai", "anthropic", "gcp"))
    ledger = out[out.index("ledger (cost_reconciliation_daily)"):]
    assert ledger.count("MATCHED") == 2 * 2 * 2 and "VARIANCE" not in ledger, "2 orgs x 2 providers x 2 days"
