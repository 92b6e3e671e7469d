"""The checkout's own statements: Django's SQL for one INSERT or SELECT, composed once.

The payment request pays for every statement the receiver runs, and most of an ORM call's cost
is composing SQL that is the same for every order. These helpers compose it once per model,
columns and database, and prepare and convert each value through the model fields themselves,
exactly as the ORM does. Databases whose SQL differs (no ``INSERT ... RETURNING``) use the ORM.
"""

from functools import lru_cache

from django.db import connections
from django.db.models import DEFERRED
from django.db.models.constants import OnConflict

# Where these statements are known to be what Django itself would write.
SUPPORTED_VENDORS = frozenset({"postgresql", "sqlite"})


def supported(using):
    connection = connections[using]
    return (
        connection.vendor in SUPPORTED_VENDORS
        and connection.features.can_return_columns_from_insert
    )


@lru_cache(maxsize=32)
def _insert_fields(model):
    """The fields an INSERT writes: every concrete field but an automatic primary key."""
    auto = model._meta.auto_field
    return tuple(field for field in model._meta.concrete_fields if field is not auto)


def _value(field, values, now):
    if field.attname in values:
        return values[field.attname]
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return now
    return field.get_default()


@lru_cache(maxsize=64)
def _insert_sql(model, alias, computed, ignore_conflicts, returning):
    computed = dict(computed)
    connection = connections[alias]
    quote = connection.ops.quote_name
    fields = _insert_fields(model)
    columns, placeholders = [], []
    for field in fields:
        columns.append(quote(field.column))
        placeholders.append(computed.get(field.attname, "%s"))
    on_conflict = OnConflict.IGNORE if ignore_conflicts else None
    sql = (
        f"{connection.ops.insert_statement(on_conflict=on_conflict)} {quote(model._meta.db_table)} "
        f"({', '.join(columns)}) VALUES ({', '.join(placeholders)})"
    )
    if ignore_conflicts:
        sql += " " + connection.ops.on_conflict_suffix_sql(fields, on_conflict, None, None)
    if returning:
        sql += f" RETURNING {quote(model._meta.pk.column)}"
    return sql


def insert(model, values, *, using, now, computed=None, ignore_conflicts=False):
    """INSERT one row of ``model``; returns its instance, or None when a conflict skipped it.

    ``values`` are Python values by field name; the other fields get their default, and
    ``auto_now``/``auto_now_add`` fields ``now``. ``computed`` maps field names to ``(sql,
    params)`` the database computes (a subquery): those fields are left deferred on the
    instance, since only the database knows them.
    """
    computed = computed or {}
    connection = connections[using]
    fields = _insert_fields(model)
    python_values, params = {}, []
    for field in fields:
        if field.attname in computed:
            params.extend(computed[field.attname][1])
            continue
        value = _value(field, values, now)
        python_values[field.attname] = value
        params.append(field.get_db_prep_save(value, connection))
    sql = _insert_sql(
        model,
        using,
        tuple(sorted((name, sql) for name, (sql, _params) in computed.items())),
        ignore_conflicts,
        not ignore_conflicts,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if ignore_conflicts:
            return None
        pk = cursor.fetchone()[0]
    python_values[model._meta.pk.attname] = pk
    return model.from_db(
        using,
        list(python_values),
        [python_values.get(field.attname, DEFERRED) for field in model._meta.concrete_fields],
    )


@lru_cache(maxsize=32)
def _select_plan(model, alias, names, where):
    """The SELECT's SQL, the columns it reads and the field it filters on."""
    quote = connections[alias].ops.quote_name
    table = model._meta.db_table
    columns = tuple(model._meta.get_field(name).get_col(table) for name in names)
    where_field = model._meta.get_field(where)
    # Only the model's own quoted names go into the SQL; the value is a parameter.
    sql = (
        f"SELECT {', '.join(quote(column.target.column) for column in columns)} "  # noqa: S608
        f"FROM {quote(table)} WHERE {quote(where_field.column)} = %s LIMIT 1"
    )
    return sql, columns, where_field


def select_one(model, names, where, value, *, using):
    """``{name: value}`` of the first row of ``model`` whose ``where`` field equals ``value``,
    or None; each value converted as the ORM converts it."""
    # The connection of this thread: the converters below are its own, never another's.
    connection = connections[using]
    sql, columns, where_field = _select_plan(model, using, tuple(names), where)
    with connection.cursor() as cursor:
        cursor.execute(sql, [where_field.get_db_prep_value(value, connection)])
        row = cursor.fetchone()
    if row is None:
        return None
    result = {}
    for name, raw, column in zip(names, row, columns, strict=True):
        for convert in connection.ops.get_db_converters(column) + column.get_db_converters(
            connection
        ):
            raw = convert(raw, column, connection)
        result[name] = raw
    return result
