"""The org slug: one rule for every entry point (CLI, launcher, template parameters, datasets)."""
from __future__ import annotations

import re

from beam_pipelines.errors import ConvergenceError

ORG_SLUG_PATTERN = r"[a-z][a-z0-9_]{2,49}"
ORG_SLUG = re.compile(rf"^{ORG_SLUG_PATTERN}$")
ORG_SLUG_RULE = "3-50 characters of [a-z0-9_], starting with a letter"


class InvalidOrgSlug(ConvergenceError):
    pass


def check_org_slug(slug: str) -> str:
    if not isinstance(slug, str) or not ORG_SLUG.match(slug):
        raise InvalidOrgSlug(f"org slug {slug!r}: use {ORG_SLUG_RULE}")
    return slug


def is_org_slug(slug: str) -> bool:
    return isinstance(slug, str) and bool(ORG_SLUG.match(slug))
