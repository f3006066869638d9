"""UCI Online Retail (2010-11) and Online Retail II (2009-10): invoice lines of a UK e-shop.

Mapping decisions (also in the README):
- each invoice line is one event; the invoice number is the session;
- invoices starting with ``C`` and negative quantities are ``return`` events with the
  quantity and value as positive amounts (net figures subtract them);
- ``A`` invoices ("Adjust bad debt", stock code ``B``) are accounting entries, not
  behaviour: they are excluded and counted in the report;
- guest lines without a CustomerID get a per-invoice user ``guest:<invoice>`` with
  attribute ``guest: true``, so their baskets still count for item statistics;
- times are UK local (Europe/London) and stored in UTC;
- StockCode/Description/UnitPrice become items (most frequent description, latest
  positive price, GBP); postage, fees and manual lines are tagged ``kind: service``.
Both files overlap for 2010-12-01..09 with identical lines; each file is its own step,
so the second import finds those events stored already and skips them.
"""

from __future__ import annotations

from pathlib import Path

from shopsense.domain import RecordKind
from shopsense.ingest.adapters.base import Plan, Step, csv, find_files
from shopsense.ingest.mapping import Mapping

SERVICE_CODES = ("POST", "DOT", "M", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "B", "23444")
"""Postage (POST, DOT), carriage (C2; 23444 is "Next Day Carriage"), manual lines, discounts, samples and fees."""
SERVICE_PREFIXES = ("ADJUST", "TEST")
"""Book-keeping adjustments and test products, numbered (ADJUST2, TEST001)."""
_FILES = ["online_retail_ii_2009_2010.csv.gz", "online_retail.csv.gz"]


def _lines(path: Path) -> str:
    """One file's lines with the two files' column names made the same."""
    return f"""SELECT
        trim(COLUMNS('^(InvoiceNo|Invoice)$')) AS invoice, trim(StockCode) AS stock_code, Description AS description,
        Quantity AS quantity, InvoiceDate AS invoice_date, COLUMNS('^(UnitPrice|Price)$') AS price,
        regexp_replace(COLUMNS('^(CustomerID|Customer ID)$'), '\\.0$', '') AS customer, Country AS country
    FROM {csv(path)}"""


def _user() -> str:
    return """CASE WHEN nullif(trim(customer), '') IS NULL THEN 'guest:' || invoice ELSE trim(customer) END"""


class OnlineRetail:
    """Adapter for both Online Retail files."""

    name = "online-retail"
    folder = "online_retail"
    summary = "UCI Online Retail I + II (invoices -> purchases, C invoices -> returns)"

    def plan(self, paths: list[Path]) -> Plan:
        """Each file staged once; items and users from all files, then one events step per file."""
        files = find_files(paths, _FILES, self.name)
        tables = {f"retail_lines_{n}": _lines(f) for n, f in enumerate(files)}
        union = " UNION ALL ".join(f"SELECT * FROM {t}" for t in tables)
        kept = f"SELECT * FROM ({union}) WHERE invoice NOT LIKE 'A%'"
        label = ", ".join(str(f) for f in files)
        items = f"""SELECT stock_code AS item_id,
                mode(nullif(trim(description), '')) AS title,
                arg_max(TRY_CAST(price AS DOUBLE), invoice_date)
                    FILTER (WHERE TRY_CAST(price AS DOUBLE) > 0 AND TRY_CAST(quantity AS BIGINT) > 0) AS price,
                'GBP' AS currency,
                CASE WHEN upper(stock_code) IN {SERVICE_CODES}
                    OR {" OR ".join(f"upper(stock_code) LIKE '{p}%'" for p in SERVICE_PREFIXES)}
                    THEN '{{"kind": "service"}}' END AS attributes,
                min(invoice_date) AS first_seen
            FROM ({kept}) WHERE nullif(stock_code, '') IS NOT NULL GROUP BY stock_code"""
        users = f"""SELECT {_user()} AS user_id,
                json_object('country', mode(country), 'guest', bool_or(nullif(trim(customer), '') IS NULL))
                    AS attributes,
                min(invoice_date) AS first_seen
            FROM ({kept}) GROUP BY 1"""
        london = Mapping(kind=RecordKind.ITEMS, timezone="Europe/London")
        steps = [
            Step(RecordKind.ITEMS, f"{label} (items)", items, london),
            Step(RecordKind.USERS, f"{label} (users)", users, london.model_copy(update={"kind": RecordKind.USERS})),
        ]
        for f, table in zip(files, tables, strict=True):
            events = f"""SELECT {_user()} AS user_id, stock_code AS item_id,
                    CASE WHEN invoice LIKE 'C%' OR TRY_CAST(quantity AS BIGINT) < 0 THEN 'return' ELSE 'purchase' END
                        AS type,
                    invoice_date AS timestamp, 'web' AS channel, invoice AS session_id,
                    ltrim(trim(quantity), '-') AS quantity,
                    CASE WHEN TRY_CAST(quantity AS DOUBLE) IS NULL OR TRY_CAST(price AS DOUBLE) IS NULL THEN price
                        ELSE CAST(round(abs(TRY_CAST(quantity AS DOUBLE)) * TRY_CAST(price AS DOUBLE), 4) AS VARCHAR)
                    END AS value
                FROM {table} WHERE invoice NOT LIKE 'A%'"""
            excluded = {
                "bad-debt adjustment (A invoice), not customer behaviour": (
                    f"SELECT count(*) FROM {table} WHERE invoice LIKE 'A%'"
                ),
            }
            mapping = Mapping(kind=RecordKind.EVENTS, timezone="Europe/London")
            steps.append(Step(RecordKind.EVENTS, str(f), events, mapping, excluded))
        return Plan(label, steps, tables)
