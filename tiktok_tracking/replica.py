"""Reports read from a read replica: the router, and whether the replica had caught up.

With ``TIKTOK_TRACKING["REPLICA_DATABASE"] = "replica"`` and ``ReplicaRouter`` in
``DATABASE_ROUTERS``, the app's reports (the admin's lists, the dashboard, the readiness run
and feed, ``tiktok_reconcile``) read from that alias; every write, and every read of the
delivery path (the outbox claim, the sweeper), stays on the primary. The router has no opinion
outside the app's reports, so the shop's own routing is untouched.

A replica replays the primary's changes a moment later. Before reading, a report asks where
the primary's write-ahead log stands and waits, a little, for the replica to replay that far.
If it does, the report is as fresh as a read of the primary at that instant; if not, what it
shows is labelled as read from a replica that had not caught up, with the time of the newest
change it had (``ReadSource``). On a database other than PostgreSQL the lag cannot be read,
and the label says so.
"""

import contextlib
import contextvars
import time
from dataclasses import dataclass
from datetime import datetime

from django.db import connections

from tiktok_tracking import conf

# The alias the app's reports read from in this context (None: no opinion).
_reading_from = contextvars.ContextVar("tiktok_tracking_replica", default=None)
POLL_SECONDS = 0.02
BATCH_MAX_WAIT = 10.0


def replica_alias():
    """The configured replica alias, or None."""
    return conf.get("REPLICA_DATABASE") or None


class ReplicaRouter:
    """Sends the reads of the app's reports to ``REPLICA_DATABASE`` while one is running."""

    def db_for_read(self, model, **hints):
        return _reading_from.get()

    def db_for_write(self, model, **hints):
        return None

    def allow_relation(self, obj1, obj2, **hints):
        # An object read from the replica is the same row as on the primary.
        alias = replica_alias()
        if alias and {obj1._state.db, obj2._state.db} <= {"default", alias}:
            return True
        return None

    def allow_migrate(self, db, app_label, **hints):
        # The replica gets its tables by replication, never by migrate.
        return False if db == replica_alias() else None


@dataclass(frozen=True)
class ReadSource:
    """Where a report's figures were read, and how fresh they are."""

    alias: str
    replica: bool
    # True: the replica had replayed everything the primary had written when the report began.
    # False: it had not (the figures may miss the latest changes). None: not measurable.
    caught_up: bool | None
    # The commit time of the newest change the replica had replayed.
    replayed_until: datetime | None = None
    # How much of the primary's write-ahead log it had yet to replay.
    behind_bytes: int | None = None

    def as_dict(self):
        return {
            "database": self.alias,
            "replica": self.replica,
            "caught_up": self.caught_up,
            "replayed_until": self.replayed_until.isoformat() if self.replayed_until else None,
            "behind_bytes": self.behind_bytes,
        }

    @property
    def lagging(self):
        """Whether the figures must be read as possibly out of date."""
        return self.replica and self.caught_up is not True

    def label(self):
        """One sentence for a page; empty when the figures are the primary's own."""
        if not self.replica:
            return ""
        if self.caught_up:
            return f"Read from the replica ({self.alias}), which had caught up with the primary."
        if self.caught_up is None:
            return (
                f"Read from the replica ({self.alias}), whose lag cannot be measured: the "
                "latest changes may be missing."
            )
        newest = ""
        if self.replayed_until:
            newest = f"; its newest change was committed at {self.replayed_until:%H:%M:%S %Z}"
        return (
            f"Read from the replica ({self.alias}), which had not caught up with the primary "
            f"({self.behind_bytes:,} bytes behind{newest}): the latest changes are missing."
        )


PRIMARY = ReadSource(alias="default", replica=False, caught_up=True)
# How fresh the report being read in this context is.
_current_source = contextvars.ContextVar("tiktok_tracking_replica_source", default=PRIMARY)


def _postgres(alias):
    return connections[alias].vendor == "postgresql"


def catch_up(alias, max_wait):
    """Wait up to ``max_wait`` seconds for ``alias`` to replay what the primary has written by
    now; the ReadSource that says whether it did."""
    if not (_postgres(alias) and _postgres("default")):
        return ReadSource(alias=alias, replica=True, caught_up=None)
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        target = cursor.fetchone()[0]
    deadline = time.monotonic() + max_wait
    with connections[alias].cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())::bigint,"
                " pg_last_xact_replay_timestamp()",
                [target],
            )
            behind, replayed_until = cursor.fetchone()
            if behind is None:
                # Not a standby (no replay position): it is the primary, or a copy of it.
                return ReadSource(alias=alias, replica=True, caught_up=True)
            if behind <= 0 or time.monotonic() >= deadline:
                return ReadSource(
                    alias=alias,
                    replica=True,
                    caught_up=behind <= 0,
                    replayed_until=replayed_until,
                    behind_bytes=max(int(behind), 0),
                )
            time.sleep(POLL_SECONDS)


@contextlib.contextmanager
def reports_read(*, batch=False):
    """Read the app's report in this block from the replica, if one is configured; yields the
    ReadSource that says how fresh the figures are (``PRIMARY`` without a replica).

    A page waits ``REPLICA_MAX_WAIT`` for the replica to catch up; a ``batch`` job (the
    readiness run, ``tiktok_reconcile``) at least BATCH_MAX_WAIT, as nobody waits on it.
    """
    alias = replica_alias()
    if not alias or _reading_from.get() is not None:
        yield PRIMARY if not alias else _current_source.get()
        return
    wait = float(conf.get("REPLICA_MAX_WAIT"))
    source = catch_up(alias, max(wait, BATCH_MAX_WAIT) if batch else wait)
    token = _reading_from.set(alias)
    source_token = _current_source.set(source)
    try:
        yield source
    finally:
        _reading_from.reset(token)
        _current_source.reset(source_token)
