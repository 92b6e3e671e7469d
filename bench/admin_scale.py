"""Admin at scale: a month of events in PostgreSQL, archived as beat would, each page timed."""

import argparse
import atexit
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

from bench.common import create_postgres_database, database_name, setup_django

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tiktok_bench"
DEFAULT_ROWS = 1_000_000
# Bump when the generated data changes, so that a kept dataset of an older shape is reloaded.
DATASET_VERSION = 3
DATASET_DAYS = 30
MARKER_TABLE = "bench_admin_scale_dataset"
EVENT_TABLE = "tiktok_tracking_trackedevent"
ARCHIVE_TABLE = "tiktok_tracking_archivedevent"
ATTEMPT_TABLE = "tiktok_tracking_deliveryattempt"
ANSWER_TABLE = "tiktok_tracking_deliveryanswer"
RECEIPT_TABLE = "tiktok_tracking_browserreceipt"
ROLLUP_TABLE = "tiktok_tracking_dailyrollup"
TABLES = (
    f"{EVENT_TABLE}, {ARCHIVE_TABLE}, {ATTEMPT_TABLE}, {ANSWER_TABLE}, {RECEIPT_TABLE}, "
    f"{ROLLUP_TABLE}"
)
# Rows still in flight after this long would have been failed by the retry window.
IN_FLIGHT_HOURS = 1

TARGET_MS = 300
# The readiness feed is read by machines, often: it answers from the stored report.
TARGET_MS_BY_KIND = {"feed": 100}
TIMED_RUNS = 5
SQL_SHOWN = 200
BENCH_USERNAME = "bench-admin"
PIXEL_ID = "CTESTPIXEL0001"

# Countries from most to least frequent (a power law skews the draw towards the first), with the
# locale and currency an order from there carries.
COUNTRIES = (
    ("DE", "de-DE", "EUR"), ("US", "en-US", "USD"), ("GB", "en-GB", "GBP"),
    ("FR", "fr-FR", "EUR"), ("NL", "nl-NL", "EUR"), ("AT", "de-AT", "EUR"),
    ("ES", "es-ES", "EUR"), ("IT", "it-IT", "EUR"), ("CH", "de-CH", "CHF"),
    ("BE", "nl-BE", "EUR"), ("PL", "pl-PL", "PLN"), ("SE", "sv-SE", "SEK"),
    ("CA", "en-CA", "CAD"), ("DK", "da-DK", "DKK"), ("IE", "en-IE", "EUR"),
    ("AU", "en-AU", "AUD"), ("NO", "nb-NO", "NOK"), ("FI", "fi-FI", "EUR"),
    ("PT", "pt-PT", "EUR"), ("CZ", "cs-CZ", "CZK"), ("JP", "ja-JP", "JPY"),
    ("MX", "es-MX", "MXN"), ("BR", "pt-BR", "BRL"), ("HU", "hu-HU", "HUF"),
    ("RO", "ro-RO", "RON"), ("GR", "el-GR", "EUR"), ("SK", "sk-SK", "EUR"),
    ("SI", "sl-SI", "EUR"), ("LU", "fr-LU", "EUR"), ("EE", "et-EE", "EUR"),
)  # fmt: skip
OPT_IN_COUNTRIES = (
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
    "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
    "IS", "LI", "NO", "GB", "CH",
)  # fmt: skip
USER_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Mobile/15E148 musical_ly_35.1.0 JsSdk/2.0 NetType/WIFI Channel/App Store",
    "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15",
)
PRODUCTS = ("Mug", "T-shirt", "Hoodie", "Poster", "Tote bag", "Sticker set", "Cap", "Notebook")
# Each match key (bit i of match_keys, in events.MATCH_KEYS order) and how often orders carry it.
MATCH_KEY_SHARES = (0.97, 0.55, 0.70, 0.20, 0.75, 0.99, 0.99)
FAILURES = (
    # (share of failed rows, HTTP status, TikTok code, message, last_error)
    (0.30, 200, 40002, "Invalid parameter: properties.value must be a number", None),
    (0.20, 200, 40002, "Invalid parameter: event_time is more than 7 days in the past", None),
    (0.30, 200, 40001, "No permission to operate pixel code: " + PIXEL_ID, None),
    (0.20, 502, None, "", "Retry window of 24 h exhausted; last error: HTTP 502"),
)


class PageError(Exception):
    """An admin page answered with something other than 200: the benchmark cannot go on."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.admin_scale",
        description="Load TrackedEvent rows into PostgreSQL and time the admin pages.",
    )
    parser.add_argument(
        "--rows", type=int, default=DEFAULT_ROWS, help=f"rows to load (default {DEFAULT_ROWS:,})"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help=f"PostgreSQL database to use (default $BENCH_DATABASE_URL or {DEFAULT_DATABASE_URL}); "
        "its name must contain 'bench', as its tables are truncated",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the rows afterwards, so that the next run with as many rows skips the load",
    )
    args = parser.parse_args(argv)
    if args.rows < 1000:
        parser.error("--rows must be at least 1000")
    return args


# --- database and Django ------------------------------------------------------------------------


# --- the dataset --------------------------------------------------------------------------------


def _uniform(key, row="g"):
    """SQL for a number in [0, 1) drawn from the row number and ``key``: the same on every load."""
    return f"((hashint8extended({row}, {key}) & 4294967295)::float8 / 4294967296.0)"


def _sql_text(value):
    return "'" + value.replace("'", "''") + "'"


def _sql_array(values):
    return "ARRAY[" + ", ".join(_sql_text(v) for v in values) + "]"


def _match_keys_sql():
    return " + ".join(
        f"(CASE WHEN {_uniform(20 + bit)} < {share} THEN {1 << bit} ELSE 0 END)"
        for bit, share in enumerate(MATCH_KEY_SHARES)
    )


def _failure_sql(column):
    """A CASE over u_code choosing ``column`` (1 http, 2 code, 3 message, 4 error) of FAILURES."""
    branches, upto = [], 0.0
    for failure in FAILURES:
        upto += failure[0]
        value = failure[column]
        if column == 4 and value is None:  # TikTok's answer: "HTTP 200, code 40002, <message>"
            value = f"HTTP {failure[1]}, code {failure[2]}, {failure[3]}"
        literal = "NULL" if value is None else (str(value) if column < 3 else _sql_text(value))
        branches.append(f"WHEN u_code < {min(upto, 1.0):.4f} THEN {literal}")
    return "CASE " + " ".join(branches) + " END"


def events_insert_sql():
    """One INSERT ... SELECT generating every TrackedEvent row in the database itself."""
    countries = _sql_array(c for c, _, _ in COUNTRIES)
    locales = _sql_array(loc for _, loc, _ in COUNTRIES)
    currencies = _sql_array(cur for _, _, cur in COUNTRIES)
    opt_in = ", ".join(_sql_text(c) for c in OPT_IN_COUNTRIES)
    agents = _sql_array(USER_AGENTS)
    products = _sql_array(PRODUCTS)
    n = len(COUNTRIES)
    # Table and column names are constants of this module; the values travel as parameters.
    return f"""
    INSERT INTO {EVENT_TABLE} (
        pixel_id, event, event_id, order_id, status, payload, event_time, test_event_code,
        attempts, next_attempt_at, lease_expires_at, claim_token, last_http_status, last_code,
        last_message, last_request_id, last_error, suppressed_reason, visitor_id, country,
        consent_status, match_keys, browser_seen_at, delivered_at, personal_data_purged_at,
        created_at, updated_at
    )
    WITH drawn AS (
        SELECT g,
            {_uniform(1)} AS u_time, {_uniform(2)} AS u_status, {_uniform(3)} AS u_event,
            {_uniform(3, "g + 1")} AS u_next_event, {_uniform(4)} AS u_country,
            {_uniform(5)} AS u_consent, {_uniform(6)} AS u_seen, {_uniform(7)} AS u_code,
            {_uniform(8)} AS u_value, {_uniform(9)} AS u_agent, {_uniform(10)} AS u_delay,
            {_uniform(11)} AS u_blank,
            ({_match_keys_sql()}) AS match_keys
        FROM generate_series(1, %(rows)s::bigint) AS g
    ), shaped AS (
        SELECT drawn.*,
            CASE WHEN u_event < 0.85 THEN 'Purchase' ELSE 'InitiateCheckout' END AS event,
            -- A checkout is recorded for the order whose purchase comes next, if one does.
            (1000000 + g + CASE WHEN u_event >= 0.85 AND u_next_event < 0.85 THEN 1 ELSE 0 END
            )::text AS order_id,
            CASE WHEN u_status < 0.90 THEN 'delivered' WHEN u_status < 0.94 THEN 'failed'
                 WHEN u_status < 0.97 THEN 'suppressed' WHEN u_status < 0.99 THEN 'pending'
                 ELSE 'sending' END AS drawn_status,
            1 + least({n - 1}, floor({n} * power(u_country, 2.2)))::int AS country_no,
            %(start)s::timestamptz + (g - 1 + u_time) * make_interval(secs => %(step)s)
                AS created_at,
            mod(g, 100) = 0 AS retried
        FROM drawn
    ), placed AS (
        SELECT shaped.*,
            -- Only recent rows are still in flight: older ones ran out of retry window.
            CASE WHEN drawn_status IN ('pending', 'sending')
                      AND created_at < %(now)s::timestamptz - make_interval(hours => %(in_flight)s)
                 THEN 'failed' ELSE drawn_status END AS status,
            CASE WHEN u_blank < 0.02 THEN '' ELSE ({countries})[country_no] END AS country,
            ({locales})[country_no] AS locale,
            ({currencies})[country_no] AS currency,
            round((4.5 + 145 * u_value * u_value)::numeric, 2) AS price,
            1 + (mod(g, 5) = 0)::int AS quantity
        FROM shaped
    ), consented AS (
        SELECT placed.*,
            CASE
                WHEN status = 'suppressed' THEN
                    CASE WHEN u_consent < 0.5 OR country NOT IN ('', {opt_in})
                         THEN 'denied' ELSE '' END
                WHEN country IN ('', {opt_in}) THEN 'granted'
                WHEN u_consent < 0.62 THEN 'granted'
                WHEN u_consent < 0.95 OR country <> 'US' THEN ''
                ELSE 'denied'
            END AS consent_status,
            CASE status
                WHEN 'delivered' THEN created_at + CASE WHEN retried
                    THEN make_interval(secs => 31 + 30 * u_delay)
                    ELSE make_interval(secs => 0.2 + 4 * u_delay) END
                WHEN 'failed' THEN created_at + CASE
                    WHEN u_code >= 0.8 THEN interval '24 hours'
                    WHEN retried THEN make_interval(secs => 35 + 30 * u_delay)
                    ELSE make_interval(secs => 0.2 + 4 * u_delay) END
                WHEN 'pending' THEN created_at + make_interval(secs => 2 * u_delay)
                WHEN 'sending' THEN created_at + make_interval(secs => 0.5)
                ELSE created_at
            END AS finished_at,
            CASE status
                WHEN 'delivered' THEN CASE WHEN retried THEN 2 ELSE 1 END
                WHEN 'failed' THEN CASE WHEN retried THEN 2 WHEN u_code >= 0.8 THEN 9 ELSE 1 END
                WHEN 'pending' THEN floor(3 * u_delay)::int
                WHEN 'sending' THEN 1
                ELSE 0
            END AS attempts
        FROM placed
    ), finished AS (
        SELECT consented.*,
            status IN ('delivered', 'failed', 'suppressed')
                AND finished_at < %(now)s::timestamptz - interval '7 days' AS purged,
            created_at - make_interval(secs => 3 * u_delay) AS event_time,
            CASE WHEN event = 'Purchase' THEN 'order_' || order_id
                 ELSE 'order_' || order_id || '_initiatecheckout' END AS event_id,
            CASE WHEN event = 'Purchase' AND (
                (status = 'delivered' AND u_seen < 0.5)
                OR (status = 'failed' AND u_seen < 0.3)
                OR (status IN ('pending', 'sending') AND u_seen < 0.4)
            ) THEN created_at + make_interval(secs => 1 + 20 * u_seen) END AS browser_seen_at
        FROM consented
    )
    SELECT
        %(pixel)s, event, event_id, order_id, status,
        jsonb_build_object(
            'event', event,
            'event_time', floor(extract(epoch FROM event_time))::bigint,
            'event_id', event_id,
            'user', jsonb_strip_nulls(jsonb_build_object(
                'email', CASE WHEN match_keys & 1 > 0 THEN encode(sha256(convert_to(
                    'customer' || (g / 2) || '@example.com', 'UTF8')), 'hex') END,
                'phone', CASE WHEN match_keys & 2 > 0 THEN encode(sha256(convert_to(
                    '+491550' || lpad((g / 2)::text, 7, '0'), 'UTF8')), 'hex') END,
                'external_id', CASE WHEN match_keys & 4 > 0 THEN encode(sha256(convert_to(
                    'customer-' || (g / 2), 'UTF8')), 'hex') END,
                'ttclid', CASE WHEN match_keys & 8 > 0 THEN
                    'E.C.P.' || md5('click' || g) || md5('ad' || g) END,
                'ttp', CASE WHEN match_keys & 16 > 0 THEN
                    substr(md5('ttp' || (g / 3)), 1, 27) END,
                'ip', CASE WHEN match_keys & 32 > 0 AND NOT purged THEN
                    '203.0.113.' || (1 + mod(g, 254)) END,
                'user_agent', CASE WHEN match_keys & 64 > 0 AND NOT purged THEN
                    ({agents})[1 + floor(4 * u_agent)::int] END,
                'locale', locale
            )),
            'properties', jsonb_build_object(
                'currency', currency,
                'value', (price * quantity)::float8,
                'content_type', 'product',
                'contents', jsonb_build_array(jsonb_build_object(
                    'content_id', 'SKU-' || (100 + mod(g * 7, 500)),
                    'content_name', ({products})[1 + mod(g, {len(PRODUCTS)})::int],
                    'quantity', quantity,
                    'price', price::float8
                )),
                'order_id', order_id
            ),
            'page', jsonb_build_object(
                'url', CASE WHEN event = 'Purchase' THEN 'https://shop.example/thanks/'
                            ELSE 'https://shop.example/checkout/' END,
                'referrer', CASE WHEN match_keys & 8 > 0 THEN 'https://www.tiktok.com/'
                                 ELSE 'https://shop.example/cart/' END
            ),
            'limited_data_use', country = 'US' AND consent_status = 'denied'
        ),
        event_time,
        '',
        attempts,
        CASE WHEN status = 'pending'
             THEN finished_at + make_interval(secs => 30 * power(2, attempts))
             ELSE created_at END,
        CASE WHEN status = 'sending' THEN finished_at + interval '120 seconds' END,
        CASE WHEN status = 'sending' THEN md5('claim' || g) ELSE '' END,
        CASE WHEN status = 'delivered' THEN 200
             WHEN status = 'failed' THEN {_failure_sql(1)}
             WHEN status = 'pending' AND attempts > 0 THEN 503 END,
        CASE WHEN status = 'delivered' THEN 0 WHEN status = 'failed' THEN {_failure_sql(2)} END,
        CASE WHEN status = 'delivered' THEN 'OK'
             WHEN status = 'failed' THEN {_failure_sql(3)} ELSE '' END,
        CASE WHEN status = 'delivered' OR (status = 'failed' AND u_code < 0.8) THEN
            to_char(finished_at AT TIME ZONE 'UTC', 'YYYYMMDDHH24MISS')
                || upper(substr(md5('request' || g), 1, 18))
            ELSE '' END,
        CASE WHEN status = 'failed' THEN {_failure_sql(4)}
             WHEN status = 'pending' AND attempts > 0 THEN 'HTTP 503, Service Unavailable'
             ELSE '' END,
        CASE WHEN status <> 'suppressed' THEN ''
             WHEN consent_status = 'denied' THEN
                'consent denied (' || coalesce(nullif(country, ''), 'unknown country') || ')'
             ELSE 'no consent in an opt-in region ('
                || coalesce(nullif(country, ''), 'unknown country') || ')' END,
        substr(md5('visitor' || (g / 3)), 1, 32),
        country,
        consent_status,
        match_keys,
        browser_seen_at,
        CASE WHEN status = 'delivered' THEN finished_at END,
        CASE WHEN purged THEN least(
            %(now)s::timestamptz,
            finished_at + interval '7 days' + make_interval(secs => 3600 * u_agent)
        ) END,
        created_at,
        finished_at
    FROM finished
    """  # noqa: S608


# Two answers for each retried row, a 503 first, then the row's final answer, each logged as
# an answer (ids 2n and 2n + 1 for event n) and the event's attempt naming it.
ANSWERS_INSERT_SQL = f"""
    INSERT INTO {ANSWER_TABLE} (
        id, attempted_at, outcome, batch_size, http_status, code, message, request_id,
        duration_ms
    )
    SELECT 2 * id, created_at + interval '0.4 seconds', 'transient', 1 + mod(id, 37), 503,
           NULL, 'Service Unavailable', '', 10000
    FROM {EVENT_TABLE}
    WHERE attempts = 2 AND status IN ('delivered', 'failed')
    UNION ALL
    SELECT 2 * id + 1, updated_at,
           CASE WHEN status = 'delivered' THEN 'delivered'
                WHEN last_code IS NULL THEN 'transient' ELSE 'permanent' END,
           1 + mod(id, 41), last_http_status, last_code, last_message, last_request_id,
           120 + mod(id, 400)
    FROM {EVENT_TABLE}
    WHERE attempts = 2 AND status IN ('delivered', 'failed')
"""  # noqa: S608
ATTEMPTS_INSERT_SQL = f"""
    INSERT INTO {ATTEMPT_TABLE} (tracked_event_id, answer_id)
    SELECT id, 2 * id FROM {EVENT_TABLE} WHERE attempts = 2 AND status IN ('delivered', 'failed')
    UNION ALL
    SELECT id, 2 * id + 1 FROM {EVENT_TABLE}
    WHERE attempts = 2 AND status IN ('delivered', 'failed')
"""  # noqa: S608


# The thank-you page's receipt behind each browser_seen_at, plus purchases only the browser
# reported (the shop's webhook never recorded them): one per hundred server rows.
RECEIPTS_INSERT_SQL = f"""
    INSERT INTO {RECEIPT_TABLE} (pixel_id, event, event_id, received_at)
    SELECT pixel_id, event, event_id, received_at FROM (
        SELECT pixel_id, event, event_id, browser_seen_at AS received_at
        FROM {EVENT_TABLE}
        WHERE browser_seen_at IS NOT NULL
        UNION ALL
        SELECT %(pixel)s, 'Purchase', 'order_' || (9000000 + g),
               %(start)s::timestamptz + (g - 0.5) * make_interval(secs => 100 * %(step)s)
        FROM generate_series(1, %(rows)s::bigint / 100) AS g
    ) AS receipts
    ORDER BY received_at
"""  # noqa: S608


def dataset_is_loaded(cursor, rows):
    """Whether a kept dataset of ``rows`` rows and this generator's version is in place."""
    cursor.execute("SELECT to_regclass(%s)", [MARKER_TABLE])
    if cursor.fetchone()[0] is None:
        return None
    cursor.execute(f"SELECT rows, version, loaded_at FROM {MARKER_TABLE}")  # noqa: S608
    marker = cursor.fetchone()
    if not marker or marker[0] != rows or marker[1] != DATASET_VERSION:
        return None
    cursor.execute(
        f"SELECT (SELECT count(*) FROM {EVENT_TABLE}) + (SELECT count(*) FROM {ARCHIVE_TABLE})"  # noqa: S608
    )
    return marker[2] if cursor.fetchone()[0] == rows else None


def load_dataset(rows):
    """Truncate the tables and generate ``rows`` events in SQL; returns {step: seconds}."""
    from django.db import connection, transaction

    timings = {}
    now = datetime.now(timezone.utc)
    params = {
        "rows": rows,
        "start": now - timedelta(days=DATASET_DAYS),
        "step": DATASET_DAYS * 86400 / rows,
        "now": now,
        "pixel": PIXEL_ID,
        "in_flight": IN_FLIGHT_HOURS,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute("SET LOCAL maintenance_work_mem = '1GB'")
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute(f"DROP TABLE IF EXISTS {MARKER_TABLE}")
        cursor.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        # Secondary indexes are built once after the load rather than updated row by row; the
        # primary key and the unique constraint stay, so the load still proves uniqueness.
        cursor.execute(
            """
            SELECT i.relname, pg_get_indexdef(i.oid)
            FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
            WHERE x.indrelid = %s::regclass
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
            ORDER BY i.relname
            """,
            [EVENT_TABLE],
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')

        started = time.perf_counter()
        cursor.execute(events_insert_sql(), params)
        timings[f"insert {rows:,} events"] = time.perf_counter() - started

        started = time.perf_counter()
        for _, definition in indexes:
            cursor.execute(definition)
        timings[f"build {len(indexes)} indexes"] = time.perf_counter() - started

        started = time.perf_counter()
        cursor.execute(ANSWERS_INSERT_SQL)
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{ANSWER_TABLE}', 'id'), "  # noqa: S608
            f"(SELECT coalesce(max(id), 0) + 1 FROM {ANSWER_TABLE}), false)"
        )
        cursor.execute(ATTEMPTS_INSERT_SQL)
        timings[f"insert {cursor.rowcount:,} delivery attempts and their answers"] = (
            time.perf_counter() - started
        )

        started = time.perf_counter()
        cursor.execute(RECEIPTS_INSERT_SQL, params)
        timings[f"insert {cursor.rowcount:,} browser receipts"] = time.perf_counter() - started

    # What beat does on a live shop: the hourly archive moves the finished rows past
    # OUTBOX_RETENTION_HOURS out of the outbox (with the app's own code), the rollup task
    # rolls up the closed days.
    from tiktok_tracking import archive, rollups

    started = time.perf_counter()
    moved = archive.archive_finished(now=now)
    elapsed = time.perf_counter() - started
    timings[f"archive {moved:,} finished rows ({moved / elapsed:,.0f} rows/s)"] = elapsed

    started = time.perf_counter()
    with connection.cursor() as cursor:
        # The month was recorded at once and most of it archived at once: the outbox's pages
        # are nine tenths empty. On a live shop the archive runs hourly and new rows reuse
        # that space, so the table stays the size of what it holds; compacting it once gives
        # that steady state (an outbox upgraded from the one-table layout needs it once too).
        cursor.execute(f"VACUUM FULL {EVENT_TABLE}")
    timings["compact the outbox (VACUUM FULL)"] = time.perf_counter() - started

    started = time.perf_counter()
    days = rollups.refresh_rollups(now=now)
    timings[f"roll up {len(days)} closed days"] = time.perf_counter() - started

    started = time.perf_counter()
    with connection.cursor() as cursor:
        # Outside a transaction: VACUUM also fills the visibility map, as on a long-lived table.
        cursor.execute(f"VACUUM (ANALYZE) {TABLES}")
    timings["vacuum and analyze"] = time.perf_counter() - started

    # Last: a run stopped before this point leaves no marker, and the next one loads again.
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {MARKER_TABLE} (rows bigint, version int, loaded_at timestamptz)"
        )
        cursor.execute(
            f"INSERT INTO {MARKER_TABLE} VALUES (%s, %s, %s)",  # noqa: S608
            [rows, DATASET_VERSION, now],
        )
    return timings


def drop_dataset():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {MARKER_TABLE}")
        cursor.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")


# --- timing the pages ---------------------------------------------------------------------------


def sample_rows():
    """The pk of an archived retried row (for the detail page) and an order id with two events."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT id FROM {ARCHIVE_TABLE}
            WHERE attempts = 2 AND status = 'delivered'
            ORDER BY created_at DESC LIMIT 1
            """  # noqa: S608
        )
        row = cursor.fetchone()
        if row is None:
            cursor.execute(f"SELECT max(id) FROM {ARCHIVE_TABLE}")  # noqa: S608
            row = cursor.fetchone()
        cursor.execute(
            f"""
            SELECT order_id FROM {ARCHIVE_TABLE}
            WHERE event = 'InitiateCheckout' AND created_at > now() - interval '10 days'
            ORDER BY created_at LIMIT 1
            """  # noqa: S608
        )
        order = cursor.fetchone()
    return row[0], (order[0] if order else "1000001")


def admin_client():
    from django.contrib.auth import get_user_model
    from django.test import Client

    user_model = get_user_model()
    user = user_model.objects.filter(username=BENCH_USERNAME).first()
    if user is None:
        user = user_model.objects.create_superuser(BENCH_USERNAME, "", None)
    client = Client()
    client.force_login(user)
    return client


def judge_readiness():
    """Run the periodic readiness task once (the feed serves what it stores); its figures."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tiktok_tracking.readiness import store

    with CaptureQueriesContext(connection) as captured:
        started = time.perf_counter()
        stored = store.assess()
        seconds = time.perf_counter() - started
    markets = len(stored.document["markets"])
    return (
        f"Readiness task (what the feed serves): {markets} markets judged over 1, 7 and 30 "
        f"days in {seconds * 1000:.0f} ms, {len(captured)} queries"
    )


def pages(detail_pk, order_id):
    from django.urls import reverse

    archive = reverse("admin:tiktok_tracking_archivedevent_changelist")
    outbox = reverse("admin:tiktok_tracking_trackedevent_changelist")
    dashboard = reverse("admin:tiktok_tracking_trackedevent_dashboard")
    detail = reverse("admin:tiktok_tracking_archivedevent_change", args=[detail_pk])
    feed = reverse("tiktok_tracking:health")
    return [
        ("archive", "archive list", archive, {}),
        ("archive ?status=failed", "archive list", archive, {"status__exact": "failed"}),
        ("archive ?verdict=merged", "archive list", archive, {"verdict": "merged"}),
        ("archive ?country=DE", "archive list", archive, {"country": "DE"}),
        ("archive ?last_code=40001", "archive list", archive, {"last_code": "40001"}),
        ("archive ?q=<order id>", "archive list", archive, {"q": order_id}),
        ("archive <pk>/change/", "detail", detail, {}),
        ("outbox", "outbox list", outbox, {}),
        ("outbox ?status=failed", "outbox list", outbox, {"status__exact": "failed"}),
        ("outbox ?country=DE", "outbox list", outbox, {"country": "DE"}),
        ("outbox ?verdict=merged", "outbox list", outbox, {"verdict": "merged"}),
        ("dashboard ?days=1", "dashboard", dashboard, {"days": "1"}),
        ("dashboard ?days=7", "dashboard", dashboard, {"days": "7"}),
        ("dashboard ?days=30", "dashboard", dashboard, {"days": "30"}),
        ("readiness feed", "feed", feed, {}),
        ("readiness feed ?market=DE", "feed", feed, {"market": "DE"}),
    ]


_LITERAL = re.compile(r"'(?:[^']|'')*'")
LONG_LITERAL = 20
_SELECT_LIST = re.compile(r"^SELECT (?:DISTINCT )?(.{60,}?) FROM ", re.DOTALL)


def shown_sql(sql):
    """The query shortened for the report: long literals (session keys) and long column lists
    collapsed, then cut to SQL_SHOWN characters."""
    sql = " ".join(sql.split())
    sql = _LITERAL.sub(lambda m: "'…'" if len(m.group()) > LONG_LITERAL else m.group(), sql)
    match = _SELECT_LIST.match(sql)
    if match and "(" not in match.group(1) and match.group(1).count(",") >= 3:
        sql = sql[: match.start(1)] + "…" + sql[match.end(1) :]
    return sql if len(sql) <= SQL_SHOWN else sql[: SQL_SHOWN - 1] + "…"


class QueryTimer:
    """An execute wrapper timing each query to the microsecond (the captured times are in ms)."""

    def __init__(self):
        self.durations = []

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.durations.append((time.perf_counter() - started) * 1000)


def time_page(client, url, params):
    """Warm the page once, then time it TIMED_RUNS times; returns the figures."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url, params)
    if response.status_code != 200:
        raise PageError(f"GET {url} {params} answered {response.status_code}, not 200")
    runs = []
    for _ in range(TIMED_RUNS):
        timer = QueryTimer()
        with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(timer):
            started = time.perf_counter()
            response = client.get(url, params)
            elapsed_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise PageError(f"GET {url} {params} answered {response.status_code}, not 200")
        sqls = [query["sql"] for query in captured.captured_queries]
        if len(timer.durations) == len(sqls):
            queries = list(zip(timer.durations, sqls, strict=True))
        else:  # should not happen; fall back on the captured, millisecond-rounded times
            queries = [(float(q["time"]) * 1000, q["sql"]) for q in captured.captured_queries]
        runs.append((elapsed_ms, queries))
    times = [ms for ms, _ in runs]
    median_ms = statistics.median(times)
    # The slowest query of the run closest to the median: what bounds a typical load.
    _, typical = min(runs, key=lambda run: abs(run[0] - median_ms))
    ranked = sorted(typical, key=lambda q: q[0], reverse=True)
    return {
        "median": median_ms,
        "max": max(times),
        "queries": sorted({len(queries) for _, queries in runs}),
        "sql_ms": statistics.median(sum(ms for ms, _ in queries) for _, queries in runs),
        "slowest_ms": ranked[0][0] if ranked else 0.0,
        # The slowest query, and the next ones when they weigh too (>= 10 ms).
        "slowest": [
            (ms, shown_sql(sql))
            for rank, (ms, sql) in enumerate(ranked[:3])
            if not rank or ms >= 10
        ],
    }


# --- the report ---------------------------------------------------------------------------------


def server_facts():
    from django.db import connection

    def count(table):
        cursor.execute(f"SELECT count(*) FROM {table}")  # noqa: S608
        return cursor.fetchone()[0]

    def size(table):
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size(%s))", [table])
        return cursor.fetchone()[0]

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
        return {
            "version": version,
            "outbox": count(EVENT_TABLE),
            "outbox_size": size(EVENT_TABLE),
            "archive": count(ARCHIVE_TABLE),
            "archive_size": size(ARCHIVE_TABLE),
            "attempts": count(ATTEMPT_TABLE),
            "answers": count(ANSWER_TABLE),
            "receipts": count(RECEIPT_TABLE),
        }


def outbox_bound(archived_at):
    """The most rows the outbox may hold after the archive ran at ``archived_at``: those
    changed within the retention before it, and those in flight."""
    from django.db import connection

    from tiktok_tracking import conf

    hours = conf.get("OUTBOX_RETENTION_HOURS")

    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT count(*) FILTER (WHERE updated_at >= %s - make_interval(hours => %s)
                                    OR status IN ('pending', 'sending')),
                   count(*)
            FROM (SELECT updated_at, status FROM {EVENT_TABLE}
                  UNION ALL SELECT updated_at, status FROM {ARCHIVE_TABLE}) AS events
            """,  # noqa: S608
            [archived_at, hours],
        )
        recent, total = cursor.fetchone()
    return hours, recent, total


def print_report(results, load_note, archived_at):
    import django

    facts = server_facts()
    hours, bound, total = outbox_bound(archived_at)
    print()
    print("Admin at scale")
    print(f"  date        {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"  data        {total:,} events over {DATASET_DAYS} days:")
    print(f"              outbox  {facts['outbox']:,} rows ({facts['outbox_size']} with indexes)")
    print(f"              archive {facts['archive']:,} rows ({facts['archive_size']} with indexes)")
    print(
        f"              {facts['attempts']:,} DeliveryAttempt rows naming "
        f"{facts['answers']:,} DeliveryAnswer rows, {facts['receipts']:,} BrowserReceipt rows"
    )
    held = "ok" if facts["outbox"] <= bound else "MISS"
    print(
        f"  outbox      {facts['outbox']:,} rows against a bound of {bound:,} (changed within "
        f"OUTBOX_RETENTION_HOURS = {hours} h, or in flight): {held}"
    )
    print(f"  load        {load_note}")
    python = sys.version.split()[0]
    print(f"  PostgreSQL  {facts['version']}; Django {django.get_version()}; Python {python}")
    print(f"  method      Django test Client in-process, 1 warm-up + {TIMED_RUNS} timed GETs")
    print(
        f"  target      <= {TARGET_MS} ms per page (median; the readiness feed "
        f"<= {TARGET_MS_BY_KIND['feed']} ms), query count constant"
    )
    print()
    header = (
        f"{'page':<26} {'median ms':>9} {'max ms':>8} {'queries':>7} {'SQL ms':>7} "
        f"{'slowest q ms':>12}  target"
    )
    print(header)
    print("-" * len(header))
    misses = [] if held == "ok" else ["outbox bound"]
    for name, kind, result in results:
        queries = "/".join(str(n) for n in result["queries"])
        verdict = "ok"
        target = TARGET_MS_BY_KIND.get(kind, TARGET_MS)
        if result["median"] > target:
            verdict = f"MISS (> {target} ms)"
            misses.append(name)
        elif result["max"] > target:
            verdict = "ok (max over)"
        if len(result["queries"]) > 1:
            verdict += ", MISS (query count varies)"
            misses.append(name)
        print(
            f"{name:<26} {result['median']:>9.1f} {result['max']:>8.1f} {queries:>7} "
            f"{result['sql_ms']:>7.1f} {result['slowest_ms']:>12.1f}  {verdict}"
        )
    print()
    print("Query count per kind of page (must not depend on the rows shown or the period):")
    for kind in ("archive list", "outbox list", "detail", "dashboard", "feed"):
        counts = sorted({n for _, k, r in results if k == kind for n in r["queries"]})
        constant = len(counts) == 1
        if not constant:
            misses.append(f"{kind} query count")
        shown = "/".join(str(n) for n in counts)
        print(f"  {kind:<11} {shown:>7}  {'constant' if constant else 'MISS: varies by page'}")
    print()
    print("Slowest query of each page (run nearest the median; next ones if >= 10 ms):")
    for name, _, result in results:
        print(f"  {name}: SQL {result['sql_ms']:.1f} ms in {result['queries'][-1]} queries")
        for rank, (ms, sql) in enumerate(result["slowest"]):
            print(f"    {'slowest' if not rank else 'next':>7} {ms:7.1f} ms  {sql}")
    print()
    if misses:
        print(f"TARGET MISSED: {', '.join(dict.fromkeys(misses))}")
    else:
        print(f"All pages within target (<= {TARGET_MS} ms median, constant query count).")


def main(argv=None):
    args = parse_args(argv)
    name = database_name(args.database_url, "truncates its tables")
    if create_postgres_database(args.database_url, name):
        print(f"Created database {name}.")
    run_dir = tempfile.mkdtemp(prefix="tiktok-bench-")
    atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
    setup_django(args.database_url, run_dir)
    from django.db import connection

    with connection.cursor() as cursor:
        loaded_at = dataset_is_loaded(cursor, args.rows)
    if loaded_at is not None:
        age = datetime.now(timezone.utc) - loaded_at
        load_note = f"reused the kept dataset loaded {age.total_seconds() / 3600:.1f} h ago"
        print(f"Reusing the {args.rows:,} rows kept by an earlier run (--keep).")
    else:
        print(f"Loading {args.rows:,} rows (SQL INSERT ... SELECT generate_series) ...")
        started = time.perf_counter()
        timings = load_dataset(args.rows)
        total = time.perf_counter() - started
        for step, seconds in timings.items():
            print(f"  {step:<40} {seconds:7.1f} s")
        load_note = (
            f"{total:.1f} s this run ("
            + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in timings.items())
            + ")"
        )

    with connection.cursor() as cursor:
        # The dataset's "now": when the archive ran, as it would have in beat's hourly run.
        archived_at = dataset_is_loaded(cursor, args.rows)
    detail_pk, order_id = sample_rows()
    assess_note = judge_readiness()
    client = admin_client()
    results = []
    for name, kind, url, params in pages(detail_pk, order_id):
        print(f"Timing {name} ...", flush=True)
        results.append((name, kind, time_page(client, url, params)))
    print_report(results, load_note, archived_at)
    print(assess_note)

    if not args.keep:
        drop_dataset()
        print("Rows removed (run with --keep to reuse them next time).")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except PageError as exc:
        sys.exit(f"Benchmark aborted: {exc}")
