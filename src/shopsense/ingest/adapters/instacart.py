"""Instacart sample: all prior orders of 592 shoppers, with the full product catalogue.

Instacart gives no dates, only each order's day gap to the previous one and its hour.
Each shopper's orders are laid on a calendar ending at 2017-05-01 (the last prior order
falls on that day, earlier ones ``days_since_prior_order`` apart, at ``order_hour_of_day``),
so a global time split behaves like "the most recent orders". The weekday in the data is
kept in ``context.order_dow``; the derived dates do not reproduce it.
Products carry the category path ``department > aisle``. There are no prices.
"""

from __future__ import annotations

from pathlib import Path

from shopsense.domain import RecordKind
from shopsense.errors import InputError
from shopsense.ingest.adapters.base import Plan, Step, csv, find_files
from shopsense.ingest.mapping import Mapping

_FILES = ["products.csv", "aisles.csv", "departments.csv", "orders_products_prior_sample.csv.gz"]
END = "2017-05-01"


class Instacart:
    """Adapter for the Instacart sample folder."""

    name = "instacart"
    folder = "instacart"
    summary = "Instacart sample (orders -> purchases with derived times, department > aisle categories)"

    def plan(self, paths: list[Path]) -> Plan:
        """Products (with aisles and departments) first, then the orders' lines."""
        files = {f.name: f for f in find_files(paths, _FILES, self.name)}
        missing = [n for n in _FILES if n not in files]
        if missing:
            raise InputError(", ".join(str(p) for p in paths), f"instacart needs {', '.join(missing)} as well")
        products = f"""SELECT p.product_id AS item_id, p.product_name AS title,
                concat_ws(' > ', d.department, a.aisle) AS category,
                json_object('aisle_id', p.aisle_id, 'department_id', p.department_id) AS attributes
            FROM {csv(files["products.csv"])} p
            LEFT JOIN {csv(files["aisles.csv"])} a USING (aisle_id)
            LEFT JOIN {csv(files["departments.csv"])} d USING (department_id)"""
        lines = csv(files["orders_products_prior_sample.csv.gz"])
        orders = f"""SELECT user_id, order_id, order_number, order_dow, order_hour_of_day,
                sum(coalesce(TRY_CAST(days_since_prior_order AS DOUBLE), 0)) OVER (
                    PARTITION BY user_id ORDER BY TRY_CAST(order_number AS INTEGER)) AS day
            FROM (SELECT DISTINCT user_id, order_id, order_number, order_dow, order_hour_of_day,
                         days_since_prior_order FROM {lines})"""
        events = f"""WITH o AS ({orders}),
            span AS (SELECT user_id, max(day) AS last_day FROM o GROUP BY user_id)
            SELECT l.user_id, l.product_id AS item_id, 'purchase' AS type,
                CAST(TIMESTAMP '{END}' - to_days(CAST(span.last_day - o.day AS INTEGER))
                     + to_hours(TRY_CAST(o.order_hour_of_day AS INTEGER)) AS VARCHAR) AS timestamp,
                'app' AS channel, l.order_id AS session_id, '1' AS quantity,
                json_object('order_number', TRY_CAST(l.order_number AS INTEGER),
                            'order_dow', TRY_CAST(l.order_dow AS INTEGER),
                            'add_to_cart_order', TRY_CAST(l.add_to_cart_order AS INTEGER),
                            'reordered', l.reordered = '1') AS context
            FROM {lines} l JOIN o USING (user_id, order_id) JOIN span USING (user_id)"""
        return Plan(
            self.name,
            [
                Step(RecordKind.ITEMS, str(files["products.csv"]), products, Mapping(kind=RecordKind.ITEMS)),
                Step(RecordKind.EVENTS, str(files["orders_products_prior_sample.csv.gz"]), events, Mapping()),
            ],
        )
