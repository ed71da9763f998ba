"""``python -m psgd.report RUN [RUN ...] --out DIR [--link SPEC] [--target VALUE [--metric NAME]]
[--bytes total|up|down] [--payload]``."""

import sys

from psgd.report.cli import main

sys.exit(main())
