"""`python -m bench`: run every case, print figures, write bench-results.json."""
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
    Path("bench-results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
