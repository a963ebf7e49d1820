"""``python -m sedlib.cache``: stage 01 without the notebook, the entry point under torchrun."""

import sys

from sedlib.study.extract import main

if __name__ == "__main__":
    sys.exit(main())
