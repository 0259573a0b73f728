"""The command-line stages (`python -m components.<stage>`, `handops <stage>`)."""

import os
import sys

# Progress bars: into a log file or a ClearML agent's console (stderr not a terminal) tqdm would
# write every update, one long line of carriage returns; there one update every 10 s is enough.
# A user's own TQDM_MININTERVAL wins. (Read by tqdm at import: set before any stage imports it.)
if not sys.stderr.isatty():
    os.environ.setdefault("TQDM_MININTERVAL", "10")
