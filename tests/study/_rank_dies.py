"""torchrun entry for the fault tests: ``python -m sedlib.cache``, except that rank 1 dies after K chunks.

    torchrun --nproc-per-node 2 tests/study/_rank_dies.py K params/smoke.yaml --run-dir DIR ...

Rank 1 ends its process with ``os._exit`` when it is about to compute its chunk K + 1, as a SIGKILL
would: no file is closed and nothing is cleaned up, and torchrun then stops the other ranks.
"""

import os
import sys

import sedlib.features.writing
from sedlib.study.extract import main


def die_after(chunks: int) -> None:
    """Make this process exit abruptly when `write_split` asks for chunk ``chunks + 1``."""
    fill = sedlib.features.writing._fill
    computed = 0

    def dying_fill(handle, partial, manifest, compute, chunk_rows, progress):
        def counted(*args):
            nonlocal computed
            if computed == chunks:
                os._exit(9)
            computed += 1
            return compute(*args)

        return fill(handle, partial, manifest, counted, chunk_rows, progress)

    sedlib.features.writing._fill = dying_fill


if __name__ == "__main__":
    chunks = int(sys.argv.pop(1))
    if os.environ.get("RANK") == "1":
        die_after(chunks)
    sys.exit(main(sys.argv[1:]))
