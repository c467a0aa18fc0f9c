"""Regenerate the efficiency report and plots next to a JSON the suite wrote.

Usage: ``python eval/efficiency/report.py eval/results/efficiency/efficiency.json``.
"""

import argparse
import json
from pathlib import Path

from modeling_lact_audio.benchmarks.report import write_report


def main(argv=None) -> Path:
    """Write ``REPORT[...].md`` and the plots for the JSON named in ``argv``; returns the report's path."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", type=Path, help="efficiency[_quick|_smoke].json")
    args = parser.parse_args(argv)
    path = write_report(json.loads(args.json.read_text()), args.json.parent, args.json.stem)
    print(path)
    return path


if __name__ == "__main__":
    main()
