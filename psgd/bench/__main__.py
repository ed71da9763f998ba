"""python -m psgd.bench {round,compress} [options]: measure, print JSON (or with --table a text
table), optionally save the JSON."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

BENCHES = {"round": "psgd.bench.round", "compress": "psgd.bench.compress"}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m psgd.bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    for name, path in BENCHES.items():
        module = importlib.import_module(path)
        p = sub.add_parser(name, help=module.__doc__.splitlines()[0])
        p.add_argument("--out", help="also write the JSON to this file")
        p.add_argument("--table", action="store_true", help="print a text table instead of the JSON")
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    module = importlib.import_module(BENCHES[args.bench])
    result = module.run(args)
    text = json.dumps(result, indent=2)
    print(module.table(result) if args.table else text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
