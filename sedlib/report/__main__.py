"""``python -m sedlib.report``: render a run directory's report (`sedlib.report.render.main`)."""

import sys

from sedlib.report.render import main

if __name__ == "__main__":
    sys.exit(main())
