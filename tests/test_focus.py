"""FOCUS 1.2: rows from priced LLM usage and the flattened GCP export, and our validator (good and broken data)."""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal

import pandas as pd
import pyarrow as pa
import pytest

from beam_pipelines.errors import WarehouseError
from beam_pipelines.focus.columns import column_order, focus_columns, focus_schema
from beam_pipelines.focus.gcp import focus_rows_gcp
from beam_pipelines.focus.llm import ANTHROPIC, OPENAI, focus_rows_anthropic, focus_rows_openai, price_list_rates
from beam_pipelines.focus.validator import null_rules, validate_focus
from beam_pipelines.gcp.config import FlattenOptions
from beam_pipelines.gcp.flatten import Flattener
from beam_pipelines.gcp.generator import generate_export
from beam_pipelines.pricing.anthropic_cost import BATCH_TIERS, price_anthropic_usage
from beam_pipelines.pricing.openai_cost import TIER_ALIASES, price_openai_usage
from beam_pipelines.pricing.price_list import TokenPrice, load_price_list
from beam_pipelines.warehouse.arrow_schema import to_arrow
from tests.conftest import CONFIGS

OPENAI_PRICES = load_price_list(CONFIGS / "openai/seed/data/default_pricing.csv", tier_aliases=TIER_ALIASES)
ANTHROPIC_PRICES = load_price_list(CONFIGS / "anthropic/seed/data/default_pricing.csv", batch_tiers=BATCH_TIERS)
NOW = datetime(2026, 11, 26, tzinfo=timezone.utc)
DAYS = (date(2026, 11, 19), date(2026, 11, 20))
M = 1_000_000
NANO = Decimal("1e-9")
WITH_CREDITS = FlattenOptions(json_fields={"labels": "labels", "project_labels": "project.labels", "credits": "credits",
                                           "system_labels": "system_labels"})


def openai_usage(model, day, input_tokens, cached=0, output=0, batch=False, tier="default", project="proj_a", key="key_1",
                 org="acme", **classes):
    return {"usage_date": day, "org_slug": org, "row_key": f"{model}|{day}|{batch}|{tier}|{project}|{key}", "run_id": "run-1",
            "project_id": project, "api_key_id": key, "model": model, "batch": batch, "service_tier": tier,
            "input_tokens": input_tokens, "input_cached_tokens": cached, "output_tokens": output, "num_model_requests": 3,
            **classes}


def openai_raw() -> pd.DataFrame:
    rows = []
    for day in DAYS:
        rows += [
            openai_usage("gpt-5", day, 3 * M + 7, cached=1001, output=55_555, batch=True),  # batch: $0.0625/MTok cached
            openai_usage("gpt-5-2025-08-07", day, 2_345_678, cached=345_678, output=12_345, tier="flex", project="proj_b"),
            openai_usage("gpt-6.1-terra", day, 4 * M, cached=M, output=2 * M, input_cache_write_tokens=M // 3,
                         tier="priority", key=None),
            openai_usage("gpt-realtime", day, 900_001, cached=100_000, output=300_001, input_audio_tokens=400_000,
                         input_cached_audio_tokens=50_000, output_audio_tokens=200_000, input_image_tokens=1234,
                         project=None),
            openai_usage("gpt-image-2", day, 50_000, output=80_000, output_image_tokens=80_000, input_image_tokens=20_000),
            openai_usage("gpt-5", day, 0, output=0),  # requests only: no FOCUS row
            openai_usage("no-such-model", day, 777, output=23),  # UNPRICED: left out and counted
            openai_usage("gpt-5", day, 1000, output=10, output_audio_tokens=5, key="key_2"),  # audio without a rate: UNPRICED
        ]
    return pd.DataFrame(rows)


def anthropic_usage(model, day, uncached=0, read=0, w5=0, w1=0, out=0, searches=0, tier="standard", window="0-200k",
                    geo="global", speed="standard", workspace="wrkspc_1", key="apikey_1"):
    return {"usage_date": day, "org_slug": "acme", "row_key": f"{model}|{day}|{tier}|{window}|{geo}|{speed}|{workspace}",
            "run_id": "run-2", "model": model, "workspace_id": workspace, "api_key_id": key, "service_tier": tier,
            "context_window": window, "inference_geo": geo, "speed": speed, "uncached_input_tokens": uncached,
            "cache_read_input_tokens": read, "cache_creation_5m_input_tokens": w5, "cache_creation_1h_input_tokens": w1,
            "output_tokens": out, "web_search_requests": searches}


def anthropic_raw() -> pd.DataFrame:
    rows = []
    for day in DAYS:
        rows += [
            anthropic_usage("claude-sonnet-4-5-20250929", day, 2 * M + 1, read=M, w5=333_333, w1=77_777, out=123_457, searches=17),
            anthropic_usage("claude-sonnet-4-5-20250929", day, 1_000_003, out=99_999, geo="us"),  # 1.1x on tokens only
            anthropic_usage("claude-opus-5-5", day, 3 * M, read=12_345, out=45_678, tier="batch", workspace=None),
            anthropic_usage("claude-opus-5-5", day, 300_001, out=1_001, window="200k-1M", key=None),
            anthropic_usage("claude-haiku-4-5-20251001", day, 10_001, out=2_003, searches=3, geo="us"),
            anthropic_usage("claude-sonnet-4-5-20250929", day, 5_000, out=100, tier="priority"),  # PRIORITY_TIER: left out
            anthropic_usage("claude-unknown-1", day, 4_000, out=400),  # UNPRICED
        ]
    return pd.DataFrame(rows)


def _classes(source, cost: pd.DataFrame) -> set[tuple[str, str]]:
    priced = cost[cost["pricing_status"] == "PRICED"]
    return {(r["row_key"], c.name) for _, r in priced.iterrows() for c in source.classes if r[c.quantity]}


def _sum(values) -> Decimal:
    return sum((Decimal(v) for v in values), Decimal(0))


def _assert_llm(source, cost: pd.DataFrame, focus: pd.DataFrame, unpriced: dict) -> None:
    assert list(focus.columns) == column_order()
    priced = cost[cost["pricing_status"] == "PRICED"]
    for day, rows in priced.groupby("usage_date"):
        day_rows = focus[focus["x_ChargeDate"] == day]
        for column in ("ListCost", "ContractedCost", "BilledCost", "EffectiveCost"):
            assert _sum(day_rows[column]) == _sum(rows["total_cost_usd"]), (day, column)
    assert set(zip(focus["x_SourceRowKey"], focus["x_TokenClass"])) == _classes(source, cost)
    assert len(focus) == len(_classes(source, cost)) and focus["x_RowKey"].is_unique
    left_out = cost[cost["pricing_status"] != "PRICED"]
    assert not set(focus["x_SourceRowKey"]) & set(left_out["row_key"])
    expected = defaultdict(lambda: {"rows": 0, "tokens": 0})
    for _, r in left_out.iterrows():
        expected[r["model"]]["rows"] += 1
        expected[r["model"]]["tokens"] += sum(int(r[c.quantity]) for c in source.classes if not c.per_request)
    assert unpriced == dict(expected)
    for _, r in focus.iterrows():  # unit price x quantity is the cost, to the pricer's own rounding
        assert (r["ListUnitPrice"] * r["PricingQuantity"]).quantize(NANO, ROUND_HALF_EVEN) == r["ListCost"]
        assert r["ConsumedQuantity"] > 0 and r["ConsumedQuantity"] == int(r["ConsumedQuantity"])
    to_arrow(focus, focus_schema(), "focus_cost_daily")  # fits the BigQuery schema, NUMERIC exactly
    assert validate_focus(focus) == []


def test_openai_rows_one_per_nonzero_class_and_costs_add_up_exactly():
    cost = price_openai_usage(openai_raw(), OPENAI_PRICES, NOW)
    assert set(cost["pricing_status"]) == {"PRICED", "UNPRICED"}
    focus, unpriced = focus_rows_openai(cost, price_list_rates(OPENAI_PRICES)[0])
    _assert_llm(OPENAI, cost, focus, unpriced)
    assert unpriced == {"gpt-5": {"rows": 2, "tokens": 2 * 1010}, "no-such-model": {"rows": 2, "tokens": 2 * 800}}

    cached = focus[(focus["x_TokenClass"] == "cached_input") & (focus["x_Model"] == "gpt-5")].iloc[0]
    assert cached["SkuId"] == "gpt-5/cached_input" and cached["SkuPriceId"] == "gpt-5:batch@2025-08-07/cached_input"
    assert (cached["PricingUnit"], cached["PricingQuantity"], cached["ConsumedUnit"], cached["ConsumedQuantity"]) == \
        ("1000000 Tokens", Decimal("0.001001"), "Tokens", Decimal(1001))
    assert cached["ListUnitPrice"] == cached["ContractedUnitPrice"] == Decimal("0.0625")
    assert cached["ListCost"] == Decimal("0.000062562")  # 1001 x $0.0625/MTok = 0.0000625625, half-even
    assert (cached["ChargeCategory"], cached["ChargeFrequency"], cached["PricingCategory"]) == ("Usage", "Usage-Based", "Standard")
    assert (cached["ServiceCategory"], cached["ServiceSubcategory"]) == ("AI and Machine Learning", "Generative AI")
    assert (cached["ChargePeriodStart"], cached["ChargePeriodEnd"]) == (pd.Timestamp("2026-11-19", tz="UTC"),
                                                                        pd.Timestamp("2026-11-20", tz="UTC"))
    assert (cached["BillingPeriodStart"], cached["BillingPeriodEnd"]) == (pd.Timestamp("2026-11-01", tz="UTC"),
                                                                          pd.Timestamp("2026-12-01", tz="UTC"))
    assert (cached["BillingAccountId"], cached["SubAccountId"], cached["SubAccountType"]) == ("convergence:acme", "proj_a", "Project")
    write = focus[focus["x_TokenClass"] == "cache_write_30m"].iloc[0]
    assert write["SkuId"] == "gpt-6.1-terra/cache_write_30m" and write["ListUnitPrice"] == Decimal("2.5")  # priority tier
    no_project = focus[focus["x_Model"] == "gpt-realtime"]
    assert no_project["SubAccountId"].isna().all() and no_project["SubAccountType"].isna().all()
    assert set(no_project["x_TokenClass"]) == {"input", "cached_input", "audio_input", "cached_audio_input", "image_input",
                                               "output", "audio_output"}


def test_anthropic_rows_with_us_geo_default_workspace_and_web_search():
    cost = price_anthropic_usage(anthropic_raw(), ANTHROPIC_PRICES, NOW)
    assert set(cost["pricing_status"]) == {"PRICED", "UNPRICED", "PRIORITY_TIER"}
    focus, unpriced = focus_rows_anthropic(cost, price_list_rates(ANTHROPIC_PRICES)[0])
    _assert_llm(ANTHROPIC, cost, focus, unpriced)
    assert unpriced == {"claude-sonnet-4-5-20250929": {"rows": 2, "tokens": 2 * 5100},
                        "claude-unknown-1": {"rows": 2, "tokens": 2 * 4400}}

    us = focus[(focus["RegionId"] == "us") & (focus["x_TokenClass"] == "input") & (focus["SkuId"] == "claude-sonnet-4-5/input")]
    assert len(us) == 2 and set(us["RegionName"]) == {"United States"}
    assert set(us["ListUnitPrice"]) == {Decimal("3.3")}  # $3/MTok x 1.1
    assert set(us["SkuPriceId"]) == {"claude-sonnet-4-5:standard@2025-09-29/input/inference_geo=us"}
    search = focus[(focus["x_TokenClass"] == "web_search") & (focus["RegionId"] == "us")].iloc[0]  # requests are not multiplied
    assert (search["PricingUnit"], search["PricingQuantity"], search["ListUnitPrice"], search["ListCost"]) == \
        ("Requests", Decimal(3), Decimal("0.01"), Decimal("0.03"))
    assert focus[focus["RegionId"].isna()]["RegionName"].isna().all()
    default = focus[focus["SkuId"].str.startswith("claude-opus-5-5") & (focus["x_PriceVersion"].str.contains("batch"))]
    assert set(default["SubAccountId"]) == {"default"} and set(default["SubAccountType"]) == {"Workspace"}
    long = focus[focus["x_PriceVersion"].str.contains("long_context")]
    assert set(long["x_TokenClass"]) == {"input", "output"} and set(long["x_ApiKeyId"].isna()) == {True}


def test_an_org_override_is_the_contracted_price_and_the_default_list_stays_the_list_price():
    override = TokenPrice("gpt-5", "default", date(2026, 11, 1), {"input_usd_per_mtok": Decimal("1"),
                                                                  "output_usd_per_mtok": Decimal("8")}, org_slug="acme")
    prices = OPENAI_PRICES.with_overrides([override])
    raw = pd.DataFrame([openai_usage("gpt-5", DAYS[0], 3 * M + 1, output=M + 1), openai_usage("gpt-5", DAYS[0], M, output=M, org="globex")])
    cost = price_openai_usage(raw, prices, NOW)
    assert cost["price_version"].tolist() == ["gpt-5:default@2026-11-01:org=acme", "gpt-5:default@2025-08-07"]
    with pytest.raises(ValueError, match="contracted_rate"):
        focus_rows_openai(cost, price_list_rates(prices)[0])
    focus, _ = focus_rows_openai(cost, *price_list_rates(prices))
    acme = focus[focus["BillingAccountId"] == "convergence:acme"].set_index("x_TokenClass")
    assert acme.loc["input", "ContractedUnitPrice"] == Decimal(1) and acme.loc["input", "ListUnitPrice"] == Decimal("1.25")
    assert acme.loc["input", "ContractedCost"] == acme.loc["input", "BilledCost"] == Decimal("3.000001")
    assert acme.loc["input", "ListCost"] == Decimal("3.75000125")
    assert acme.loc["output", "ContractedCost"] == Decimal("8.000008") and acme.loc["output", "ListCost"] == Decimal("10.00001")
    assert acme.loc["input", "SkuPriceId"] == "gpt-5:default@2026-11-01:org=acme/input"
    globex = focus[focus["BillingAccountId"] == "convergence:globex"]
    assert (globex["ListCost"] == globex["ContractedCost"]).all()
    assert _sum(focus["BilledCost"]) == _sum(cost["total_cost_usd"])
    assert validate_focus(focus) == []


@pytest.fixture(scope="module")
def gcp_flat() -> pa.Table:
    export = generate_export("acme", date(2026, 1, 31), 3, 1200)  # Jan 29-31: a month-end day billed across two months
    return Flattener(WITH_CREDITS)(export, "acme", "run-3", NOW)


def test_gcp_billed_cost_per_project_and_day_is_the_net_cost_and_credits_stay_visible(gcp_flat):
    focus = focus_rows_gcp(gcp_flat).to_pandas()
    flat = gcp_flat.to_pandas()
    assert list(focus.columns) == column_order()
    key = ["project_id", "usage_date", "currency"]
    net = flat.groupby(key)["net_cost"].agg(_sum)
    billed = focus.groupby(["SubAccountId", "x_ChargeDate", "BillingCurrency"])["BilledCost"].agg(_sum)
    assert billed.rename_axis(key).to_dict() == net.to_dict()

    credits = [c for cs in flat["credits"].map(json.loads) for c in cs]
    after_the_fact = [c for c in credits if c["type"] in ("SUSTAINED_USAGE_DISCOUNT", "PROMOTION")]
    credit_rows = focus[focus["ChargeCategory"] == "Credit"]
    assert len(credit_rows) == len(after_the_fact) > 0
    assert set(credit_rows["x_CreditType"]) == {"SUSTAINED_USAGE_DISCOUNT", "PROMOTION"}
    assert (credit_rows["BilledCost"] < 0).all() and credit_rows["SkuId"].isna().all() and credit_rows["PricingQuantity"].isna().all()
    assert (credit_rows["ListCost"] == credit_rows["BilledCost"]).all()
    assert _sum(credit_rows["BilledCost"]) == _sum(Decimal(repr(c["amount"])) for c in after_the_fact)

    committed = focus[focus["CommitmentDiscountId"].notna()]
    assert len(committed) > 0 and set(committed["PricingCategory"]) == {"Committed"}
    assert set(committed["CommitmentDiscountStatus"]) == {"Used"} and set(committed["CommitmentDiscountCategory"]) == {"Usage"}
    assert set(focus["ChargeCategory"]) == {"Usage", "Tax", "Adjustment", "Credit"}
    usage = focus[focus["ChargeCategory"] == "Usage"]
    assert (usage["ContractedCost"] >= usage["BilledCost"]).all() and usage["ListUnitPrice"].notna().all()
    assert set(focus.loc[focus["ServiceName"] == "Vertex AI", "ServiceSubcategory"]) == {"Generative AI"}

    late = flat[flat["invoice_month"] == "202602"]
    assert len(late) > 0
    moved = focus[focus["x_SourceRowKey"].isin(late["row_key"])]
    assert set(moved["BillingPeriodStart"]) == {pd.Timestamp("2026-02-01", tz="UTC")}
    corrections = focus[focus["ChargeClass"] == "Correction"]
    assert set(corrections["x_CostType"]) <= {"adjustment"}
    assert set(corrections["x_SourceRowKey"]) <= set(late["row_key"])
    tagged = focus[focus["Tags"].notna()]
    assert tagged["Tags"].map(lambda t: t.startswith("{")).all()
    assert focus["x_RowKey"].is_unique

    table = to_arrow(focus, focus_schema(), "focus_cost_daily")
    assert table.schema.field("BilledCost").type == pa.decimal128(38, 9)
    assert validate_focus(focus) == [] and validate_focus(table) == []


def test_gcp_without_the_credit_breakdown_still_adds_up_and_shows_credits(gcp_flat):
    plain = Flattener()(generate_export("acme", date(2026, 1, 31), 1, 300), "acme", "run-3", NOW)
    assert "credits" not in plain.column_names
    focus = focus_rows_gcp(plain).to_pandas()
    flat = plain.to_pandas()
    assert _sum(focus["BilledCost"]) == _sum(flat["net_cost"])
    credit_rows = focus[focus["ChargeCategory"] == "Credit"]
    assert _sum(credit_rows["BilledCost"]) == _sum(flat["credits_total"]) and credit_rows["x_CreditType"].isna().all()
    assert validate_focus(focus) == []


def test_all_providers_in_one_dataset_validate_clean(gcp_flat):
    openai, _ = focus_rows_openai(price_openai_usage(openai_raw(), OPENAI_PRICES, NOW), price_list_rates(OPENAI_PRICES)[0])
    anthropic, _ = focus_rows_anthropic(price_anthropic_usage(anthropic_raw(), ANTHROPIC_PRICES, NOW),
                                        price_list_rates(ANTHROPIC_PRICES)[0])
    gcp = focus_rows_gcp(gcp_flat).to_pandas()
    table = to_arrow(pd.concat([openai, anthropic, gcp], ignore_index=True), focus_schema(), "focus_cost_daily")
    assert validate_focus(table) == []


def test_a_table_already_in_the_schema_is_not_cast_again_but_still_checked(gcp_flat):
    table = to_arrow(focus_rows_gcp(gcp_flat).to_pandas(), focus_schema(), "focus_cost_daily")
    assert to_arrow(table, focus_schema(), "focus_cost_daily") is table, "a run's slice of a cast batch passes as it is"
    required = next(f for f in table.schema if not f.nullable)
    broken = table.set_column(table.schema.get_field_index(required.name), required, pa.nulls(table.num_rows, required.type))
    with pytest.raises(WarehouseError, match=f"REQUIRED column '{required.name}' has NULL values"):
        to_arrow(broken, focus_schema(), "focus_cost_daily")


# ---- the validator on broken data ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good() -> pd.DataFrame:
    cost = price_anthropic_usage(anthropic_raw(), ANTHROPIC_PRICES, NOW)
    frame, _ = focus_rows_anthropic(cost, price_list_rates(ANTHROPIC_PRICES)[0])
    assert validate_focus(frame) == []
    return frame


def _broken(frame: pd.DataFrame, change) -> pd.DataFrame:
    frame = frame.copy()
    change(frame)
    return frame


def _set(column, value, row=0):
    def change(frame):
        frame[column] = frame[column].astype(object)
        frame.at[row, column] = value
    return change


BROKEN = {
    "wrong-case ChargeCategory": (_set("ChargeCategory", "usage"), "ChargeCategory", "allowed values"),
    "null BilledCost": (_set("BilledCost", None), "BilledCost", "MUST NOT be null"),
    "unprefixed extra column": (lambda f: f.insert(len(f.columns), "TeamName", "x"), "TeamName", "prefixed with 'x_'"),
    "ChargePeriodEnd before Start": (lambda f: f.__setitem__("ChargePeriodEnd", f["ChargePeriodStart"] - pd.Timedelta(hours=1)),
                                     "ChargePeriodEnd", "exclusive end"),
    "float where Decimal is required": (lambda f: f.__setitem__("ListCost", f["ListCost"].astype(float)), "ListCost", "Decimal"),
    "missing mandatory column": (lambda f: f.drop(columns=["InvoiceIssuerName"], inplace=True), "InvoiceIssuerName", "present"),
    "wrong-case spec column name": (lambda f: f.rename(columns={"BilledCost": "Billedcost"}, inplace=True), "Billedcost", "Pascal"),
    "conditional null: no unit price on Usage": (_set("ListUnitPrice", None), "ListUnitPrice", "MUST NOT be null when ChargeCategory"),
    "conditional null: RegionName without RegionId": (_set("RegionName", "Mars"), "RegionName", "MUST be null when RegionId is null"),
    "subcategory of another category": (_set("ServiceSubcategory", "Virtual Machines"), "ServiceSubcategory", "parent ServiceCategory"),
    "currency not ISO 4217": (_set("BillingCurrency", "usd"), "BillingCurrency", "ISO 4217"),
    "unit price x quantity is not the cost": (_set("ListCost", Decimal("123.000000001")), "ListCost", "MUST match"),
    "Tags not a flat JSON object": (_set("Tags", '{"team": {"name": "data"}}'), "Tags", "KeyValueFormat"),
    "empty string for null": (_set("SubAccountName", ""), "SubAccountName", "empty strings"),
    "negative unit price": (_set("ContractedUnitPrice", Decimal("-1")), "ContractedUnitPrice", "non-negative"),
    "naive timestamps": (lambda f: f.__setitem__("BillingPeriodStart", f["BillingPeriodStart"].dt.tz_localize(None)),
                         "BillingPeriodStart", "UTC"),
    "ConsumedQuantity on a Credit": (_set("ChargeCategory", "Credit"), "ConsumedQuantity", "MUST be null when ChargeCategory"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_broken_thing_is_a_finding_naming_its_column(good, case):
    change, column, words = BROKEN[case]
    findings = validate_focus(_broken(good, change))
    named = [f for f in findings if f.column == column]
    assert named, findings
    assert any(words in f.rule or words in f.detail for f in named), named
    assert all(f.severity in ("error", "warning") for f in findings)


def test_broken_data_is_also_caught_in_arrow_form(good):
    table = to_arrow(good, focus_schema(), "focus_cost_daily")
    bad = table.set_column(table.schema.get_field_index("ChargeCategory"), "ChargeCategory",
                           pa.array(["usage"] * len(table), pa.string()))
    bad = bad.append_column("extra", pa.array([1] * len(table)))
    findings = validate_focus(bad)
    assert {f.column for f in findings} >= {"ChargeCategory", "extra"}


def test_the_validator_reads_its_rules_from_the_yaml():
    columns = focus_columns()
    assert len(columns) == 57 and columns["ChargeCategory"].allowed_values == ("Usage", "Purchase", "Tax", "Credit", "Adjustment")
    parsed = {(r.column, r.text) for r in null_rules()}
    assert ("ListUnitPrice", "MUST NOT be null when ChargeCategory in ('Usage','Purchase') and ChargeClass != 'Correction'") in parsed
    assert ("CommitmentDiscountQuantity", "MUST be null in all other cases") in parsed
    assert not any("the charge is" in text for _, text in parsed)  # prose is not guessed at
    assert {f.name for f in focus_schema().fields if not f.name.startswith("x_")} == set(columns)


def test_unpriced_usage_is_counted_per_run_as_for_each_run_alone():
    from beam_pipelines.focus.llm import _unpriced, unpriced_by_run

    raw = pd.concat([openai_raw().assign(run_id="r1"), openai_raw().assign(run_id="r2").head(2)], ignore_index=True)
    raw.loc[[0, 2], "model"] = ["no-such-model", None]
    cost = price_openai_usage(raw, OPENAI_PRICES, NOW)
    per_run = unpriced_by_run(OPENAI, cost)
    for run_id, rows in cost.groupby("run_id"):
        alone = _unpriced(OPENAI, rows[rows["pricing_status"] != "PRICED"])
        assert per_run.get(run_id, {}) == alone
    assert set(per_run) == {"r1"} and {"no-such-model", "(none)"} <= set(per_run["r1"]), "a missing model is unpriced, not an error"


def test_focus_rows_built_straight_in_arrow_equal_the_frame_cast_to_the_table():
    from beam_pipelines.focus.llm import focus_rows

    for source, cost, prices in (
        (OPENAI, price_openai_usage(openai_raw(), OPENAI_PRICES, NOW), OPENAI_PRICES),
        (ANTHROPIC, price_anthropic_usage(anthropic_raw(), ANTHROPIC_PRICES, NOW), ANTHROPIC_PRICES),
    ):
        frame, unpriced = focus_rows(source, cost, *price_list_rates(prices), loaded_at=NOW)
        table, same = focus_rows(source, cost, *price_list_rates(prices), loaded_at=NOW, as_arrow=True)
        assert unpriced == same and table.num_rows == len(frame) > 0
        assert table.equals(to_arrow(frame, focus_schema(), "focus_cost_daily")), source.key
        empty, _ = focus_rows(source, cost.head(0), *price_list_rates(prices), loaded_at=NOW, as_arrow=True)
        assert empty.num_rows == 0 and empty.schema.equals(table.schema)


def test_rows_of_many_orgs_priced_together_are_the_rows_each_org_gets_alone():
    """Prices, SKUs and descriptions are worked out once per pricing key and shared by every row with it;
    an org's override is part of its key, so a neighbour with the same model and day keeps the list price."""
    from beam_pipelines.focus.llm import focus_rows

    override = TokenPrice("gpt-5", "default", date(2026, 11, 1), {"input_usd_per_mtok": Decimal("1"),
                                                                  "output_usd_per_mtok": Decimal("8")}, org_slug="acme")
    prices = OPENAI_PRICES.with_overrides([override])
    raw = pd.concat([pd.concat([openai_raw(), pd.DataFrame([openai_usage("gpt-5", DAYS[0], 3 * M + 1, output=M + 1)])])
                     .assign(org_slug=org, run_id=f"run-{org}") for org in ("acme", "globex", "initech")], ignore_index=True)
    cost = price_openai_usage(raw, prices, NOW)
    together, _ = focus_rows(OPENAI, cost, *price_list_rates(prices), loaded_at=NOW, as_arrow=True)
    alone = pa.concat_tables([focus_rows(OPENAI, rows, *price_list_rates(prices), loaded_at=NOW, as_arrow=True)[0]
                              for _, rows in cost.groupby("org_slug", sort=True)])
    assert together.num_rows == alone.num_rows > 0
    assert together.sort_by("x_RowKey").equals(alone.sort_by("x_RowKey"))
    rows = together.to_pandas()
    default_tier = rows["SkuPriceId"].str.startswith("gpt-5:default@") & (rows["x_TokenClass"] == "input")
    units = rows[default_tier].groupby("BillingAccountId")
    assert units["ContractedUnitPrice"].agg(set).to_dict() == {
        "convergence:acme": {Decimal(1)}, "convergence:globex": {Decimal("1.25")}, "convergence:initech": {Decimal("1.25")}}


def test_a_coded_column_is_its_values_taken_by_index_in_frames_and_tables():
    import numpy as np

    from beam_pipelines.focus.columns import Coded, build_frame, build_table

    sku = Coded(np.array(["a/input", "b/output", None], dtype=object), np.array([2, 0, 0, 1]))
    price = Coded(np.array([Decimal("1.25"), None], dtype=object), np.array([0, 1, 0, 0]))
    expanded = {"SkuId": np.array([None, "a/input", "a/input", "b/output"], dtype=object),
                "ListUnitPrice": np.array([Decimal("1.25"), None, Decimal("1.25"), Decimal("1.25")], dtype=object)}
    pd.testing.assert_frame_equal(build_frame({"SkuId": sku, "ListUnitPrice": price}, 4), build_frame(expanded, 4))
    table = build_table({"SkuId": sku, "ListUnitPrice": price}, 4)
    assert table.equals(build_table(expanded, 4))
    assert table.column("SkuId").to_pylist() == list(expanded["SkuId"])
