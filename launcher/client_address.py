"""The client address used for per-IP limits, as far as the network in front can vouch for it.

Without a proxy the TCP peer is the client. On Cloud Run the peer is Google's front end, and the
client is the entry that front end appended to ``X-Forwarded-For``: the rightmost one (Google's
documented format appends on the right; everything to its left is whatever the client sent and
can be forged). ``FORWARDED_TRUSTED_HOPS`` says how many proxies append on the right (1 on Cloud
Run, 2 behind a load balancer in front of Cloud Run): the address is then the entry that many
places from the right. 0, the default, ignores the header. uvicorn's ``--forwarded-allow-ips *``
takes the *leftmost* entry instead, which is why the launcher refuses that setting.
"""
from __future__ import annotations

import ipaddress

from starlette.requests import Request

UNKNOWN = "unknown"


def client_address(request: Request, trusted_hops: int) -> str:
    peer = request.client.host if request.client else UNKNOWN
    if trusted_hops <= 0:
        return peer
    entries = [e.strip() for e in request.headers.get("x-forwarded-for", "").split(",") if e.strip()]
    if len(entries) < trusted_hops:
        return peer  # fewer hops than the proxies we trust: the request did not come through them
    candidate = entries[-trusted_hops]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer
