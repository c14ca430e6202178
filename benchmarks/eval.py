"""Evaluate GGRO against greedy and Best-of-N on the repository's prompt suites, in one run.

    python benchmarks/eval.py --split test --out benchmarks/results/eval/before
    python benchmarks/eval.py --model tiny --limit 1        # tiny random models, seconds

Everything lives in ``ggro_integrations.evaluation`` (``python -m ggro_integrations.evaluation``
is the same command); see docs/evaluation.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ggro_integrations.evaluation.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
