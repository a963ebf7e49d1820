"""``python -m sedlib.report``: render a run directory's report (`sedlib.pipeline.report.main`)."""

import sys

from sedlib.pipeline.report import main

if __name__ == "__main__":
    sys.exit(main())
