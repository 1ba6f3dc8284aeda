"""`python -m bench [case ...]`: run every case (or those named), print figures, write bench-results.json
(the cases run replace their own entries; the others stay)."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from bench import fleet, gcp_billing, launcher, openai_cost

CASES = {"openai_cost_stage": openai_cost.run, "gcp_billing": gcp_billing.run, "launcher": launcher.run,
         "fleet": fleet.run}


def main(argv: list[str]) -> int:
    selected = argv or list(CASES)
    results = {}
    with tempfile.TemporaryDirectory(prefix="convergence-bench-") as tmp:
        for name in selected:
            results[name] = CASES[name](Path(tmp) / name)
    out = Path("bench-results.json")
    previous = json.loads(out.read_text()) if argv and out.exists() else {}  # one case re-run keeps the others
    out.write_text(json.dumps({**previous, **results}, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
