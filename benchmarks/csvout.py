"""What the benchmark scripts share without importing torch: CSV output (temp file + rename, floats to 4
significant digits) and the check of their count arguments."""

from __future__ import annotations

import csv
import io
from pathlib import Path


def write_csv(path: Path, rows: list[dict], replace_by: tuple[str, ...] = ()) -> None:
    """Write ``rows``. With ``replace_by`` (column names), rows already in ``path`` are kept unless a new
    row has the same values in those columns, so runs of other methods or configs stay in the table."""
    from ssl_bench.atomic import write_text

    if replace_by and path.exists():
        new = {tuple(str(r[k]) for k in replace_by) for r in rows}
        with path.open() as f:
            old = [r for r in csv.DictReader(f) if tuple(r[k] for k in replace_by) not in new]
        rows = old + rows
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = list(dict.fromkeys(c for r in rows for c in r))  # every column of old and new rows
    w.writerow(cols)
    w.writerows([f"{r[c]:.4g}" if isinstance(r.get(c), float) else r.get(c, "") for c in cols] for r in rows)
    write_text(path, buf.getvalue())


def at_least(low: int):
    """An argparse ``type``: an integer >= ``low``, else a one-line error naming the value and what is valid."""
    import argparse

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not valid: give an integer >= {low}")
        return v

    return parse
