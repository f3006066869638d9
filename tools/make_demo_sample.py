"""Write the demo's Online Retail sample: whole histories of a seeded draw of customers.

The demo must show a model that learned something, so it needs whole customer histories over the
full year (repeat purchases, a label window with buyers), not the first lines of the file. Online
Retail is CC BY 4.0 (UCI, Chen, Sain & Guo 2012), so the slice may ship with shopsense.

    .venv/bin/python tools/make_demo_sample.py  # reads ../shared/datasets/online_retail/online_retail.csv.gz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb

SOURCE = Path("../shared/datasets/online_retail/online_retail.csv.gz")
TARGET = Path("src/shopsense/data/online_retail_demo.csv.gz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, default=TARGET)
    parser.add_argument("--customers", type=int, default=1000, help="customers drawn (17850, the demo's, always)")
    parser.add_argument("--guest-invoices", type=int, default=300, help="guest invoices drawn")
    parser.add_argument("--seed", default="shopsense-demo", help="salt of the hash that orders the draw")
    args = parser.parse_args()
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE lines AS SELECT row_number() OVER () AS line, *"
        " FROM read_csv(?, all_varchar = true, header = true)",
        [str(args.source)],
    )
    con.execute(
        """CREATE TABLE chosen AS
           SELECT CustomerID FROM (
               SELECT DISTINCT CustomerID FROM lines WHERE CustomerID IS NOT NULL AND CustomerID <> '17850'
           ) ORDER BY md5(CustomerID || ?) LIMIT ? """,
        [args.seed, args.customers - 1],
    )
    con.execute("INSERT INTO chosen VALUES ('17850')")
    con.execute(
        """CREATE TABLE guests AS
           SELECT InvoiceNo FROM (SELECT DISTINCT InvoiceNo FROM lines WHERE CustomerID IS NULL)
           ORDER BY md5(InvoiceNo || ?) LIMIT ?""",
        [args.seed, args.guest_invoices],
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"""COPY (SELECT * EXCLUDE (line) FROM lines
                 WHERE CustomerID IN (SELECT CustomerID FROM chosen) OR InvoiceNo IN (SELECT InvoiceNo FROM guests)
                 ORDER BY line)
            TO '{args.out}' (HEADER, DELIMITER ',', COMPRESSION gzip)"""
    )
    rows, customers = con.execute(
        f"SELECT count(*), count(DISTINCT CustomerID) FROM read_csv('{args.out}', all_varchar = true)"
    ).fetchone() or (0, 0)
    print(f"wrote {args.out}: {rows:,} lines, {customers:,} customers, {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
