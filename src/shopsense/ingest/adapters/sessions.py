"""Session-click datasets without (or with few) user ids: YooChoose and Diginetica.

A session with no known user becomes its own user ``session:<id>``, so session-based
models see one history per session; Diginetica sessions of a known user keep that user.
"""

from __future__ import annotations

from pathlib import Path

from shopsense.domain import RecordKind
from shopsense.ingest.adapters.base import Plan, Step, csv, find_files
from shopsense.ingest.mapping import Mapping

TAB = "\t"


class YooChoose:
    """Adapter for the YooChoose 100k click sample (train and test files)."""

    name = "yoochoose"
    folder = "yoochoose_100k"
    summary = "YooChoose click sessions (each session a user, clicks as click events)"

    def plan(self, paths: list[Path]) -> Plan:
        """One events step per file."""
        names = ["yoochoose-clicks-100k_train_full.txt", "yoochoose-clicks-100k_test.txt"]
        steps = []
        for f in find_files(paths, names, self.name):
            sql = f"""SELECT 'session:' || SessionId AS user_id, ItemId AS item_id, 'click' AS type,
                    Time AS timestamp, 'web' AS channel, SessionId AS session_id
                FROM {csv(f, delim=TAB)}"""
            steps.append(Step(RecordKind.EVENTS, str(f), sql, Mapping(timestamp_format="unix_s")))
        return Plan(self.name, steps)


class Diginetica:
    """Adapter for the Diginetica item-view sample."""

    name = "diginetica"
    folder = "diginetica_sample"
    summary = "Diginetica item views (anonymous sessions become session users)"

    def plan(self, paths: list[Path]) -> Plan:
        """One events step; the view time is the event date plus the in-session offset."""
        steps = []
        for f in find_files(paths, ["sample_train-item-views.csv"], self.name):
            sql = f"""SELECT CASE WHEN user_id IS NULL OR user_id = 'NA' THEN 'session:' || session_id
                        ELSE user_id END AS user_id,
                    item_id, 'view' AS type,
                    CASE WHEN TRY_CAST(eventdate AS DATE) IS NULL OR TRY_CAST(timeframe AS BIGINT) IS NULL
                        THEN eventdate
                        ELSE CAST(CAST(eventdate AS DATE) + to_milliseconds(CAST(timeframe AS BIGINT)) AS VARCHAR)
                    END AS timestamp,
                    'web' AS channel, session_id
                FROM {csv(f, delim=";")}"""
            steps.append(Step(RecordKind.EVENTS, str(f), sql, Mapping()))
        return Plan(self.name, steps)
