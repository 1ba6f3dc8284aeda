"""Read the simulator's bills (OpenAI costs, Anthropic cost report) per day and model, over HTTP."""
from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

import requests

from beam_pipelines.providers.openai import unix
from beam_pipelines.testing.simulator.openai_data import LONG_CONTEXT_LINE


def _pages(url: str, params: list[tuple[str, object]], headers: dict) -> list[dict]:
    """Every page of a report, following ``next_page`` until ``has_more`` is false."""
    pages, cursor = [], None
    while True:
        page = requests.get(url, params=params + ([("page", cursor)] if cursor else []), headers=headers, timeout=30)
        page.raise_for_status()
        pages.append(page.json())
        if not pages[-1]["has_more"]:
            return pages
        cursor = pages[-1]["next_page"]


def openai_bill(base_url: str, admin_key: str, start: date, end: date) -> dict[tuple[date, str], list[float]]:
    """(day, model) → [USD at the rates usage shows, USD extra that only the bill shows (long prompts)]."""
    params = [("start_time", unix(start)), ("end_time", unix(end + timedelta(days=1))), ("group_by", "line_item")]
    bill: dict = defaultdict(lambda: [0.0, 0.0])
    for page in _pages(f"{base_url}/organization/costs", params, {"Authorization": f"Bearer {admin_key}"}):
        for bucket in page["data"]:
            day = datetime.fromtimestamp(bucket["start_time"], timezone.utc).date()
            for result in bucket["results"]:
                model = result["line_item"].split(", ")[0]
                bill[day, model][1 if result["line_item"].endswith(LONG_CONTEXT_LINE) else 0] += result["amount"]["value"]
    return dict(bill)


def anthropic_bill(base_url: str, admin_key: str, start: date, end: date) -> dict[tuple[date, str], float]:
    """(day, model) → USD, from the cost report grouped by description."""
    params = [("starting_at", f"{start}T00:00:00Z"), ("ending_at", f"{end + timedelta(days=1)}T00:00:00Z"),
              ("group_by[]", "description")]
    headers = {"x-api-key": admin_key, "anthropic-version": "2023-06-01"}
    bill: dict = defaultdict(float)
    for page in _pages(f"{base_url}/v1/organizations/cost_report", params, headers):
        for bucket in page["data"]:
            day = date.fromisoformat(bucket["starting_at"][:10])
            for result in bucket["results"]:
                bill[day, result["model"]] += float(result["amount"]) / 100
    return dict(bill)
