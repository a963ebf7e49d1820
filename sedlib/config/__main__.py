"""``python -m sedlib.config --schema | --check FILE...`` (`sedlib.config.schema.main`)."""

import sys

from sedlib.config.schema import main

sys.exit(main())
