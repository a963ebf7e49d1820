"""``python -m sedlib.run``: run a study: the five notebooks, then the report (`sedlib.pipeline.runner.main`)."""

import sys

from sedlib.pipeline.runner import main

if __name__ == "__main__":
    sys.exit(main())
