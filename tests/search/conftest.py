"""The search tests run on a synthetic problem (search_fakes): no torch needed."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for path in (HERE.parents[1], HERE):   # the checkout (no install needed) and the fakes
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
