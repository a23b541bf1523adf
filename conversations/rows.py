"""Inserting, updating and locking one row without rebuilding the statement each time.

`Model.save()` compiles the statement anew for every row: for a Message (~50 columns) that
took longer than SQLite took to store it. Ingest inserts a few rows per message, so it uses
`insert_row`, which caches the statement per model and database and prepares the values with
the model's own fields (defaults, auto_now, JSON and file fields behave as in save()). It is
for models without signals or multi-table inheritance; none of ours has either. Delivery's
state changes and ingest's conversation lock are the same kind of hot, fixed statement.
"""

from __future__ import annotations

import datetime as dt
from functools import cache

from django.db import connections, models, router


@cache
def _statement(model: type[models.Model], alias: str) -> tuple[str, tuple[models.Field, ...]]:
    connection = connections[alias]
    quote = connection.ops.quote_name
    fields = tuple(field for field in model._meta.local_concrete_fields if not field.primary_key)
    pk = model._meta.pk
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    # Identifiers come from the model; every value is a parameter.
    sql = (f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({placeholders}) "  # noqa: S608
           f"RETURNING {quote(pk.column)}")
    return sql, fields


def insert_row(obj: models.Model) -> None:
    """INSERT `obj` as a new row and set its primary key, as `obj.save(force_insert=True)` would."""
    model = type(obj)
    alias = router.db_for_write(model, instance=obj)
    connection = connections[alias]
    sql, fields = _statement(model, alias)
    params = [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        (pk,) = cursor.fetchone()
    obj.pk = model._meta.pk.to_python(pk)
    obj._state.adding = False
    obj._state.db = alias


def update_row(model: type[models.Model], pk: int, *, where: str = "", where_params: tuple = (),
               increment: str = "", **values: object) -> int:
    """UPDATE one row, only while the SQL condition `where` holds; the number of rows changed (0 or 1).

    `values` are prepared by the model's fields; `increment` names a column to add one to.
    """
    alias = router.db_for_write(model)
    connection = connections[alias]
    quote = connection.ops.quote_name
    fields = [model._meta.get_field(name) for name in values]
    assignments = [f"{quote(field.column)} = %s" for field in fields]
    if increment:
        assignments.append(f"{quote(increment)} = {quote(increment)} + 1")
    params = [field.get_db_prep_save(values[field.name], connection) for field in fields]
    # Identifiers come from the model and our own code; every value is a parameter.
    sql = (f"UPDATE {quote(model._meta.db_table)} SET {', '.join(assignments)} "  # noqa: S608
           f"WHERE {quote(model._meta.pk.column)} = %s")
    return _update(connection, sql, [*params, pk], where, where_params)


def _update(connection: object, sql: str, params: list, where: str, where_params: tuple) -> int:
    """Run an UPDATE, with the caller's extra SQL condition and its values; the number of rows changed."""
    if where:
        sql += f" AND ({where})"
    where_values = [connection.ops.adapt_datetimefield_value(value) if isinstance(value, dt.datetime) else value
                    for value in where_params]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *where_values])
        return cursor.rowcount


def by_primary_key(table: str, connection: object) -> str:
    """`table` in an UPDATE whose rows are named by primary key, for the planner to look them up by it.

    Given "id IN (...) AND status = ...", SQLite without statistics may prefer an index on
    status and scan every row in that status (thousands of queued replies) instead of
    looking up the few named; NOT INDEXED leaves it the rowid. PostgreSQL picks the key.
    """
    return f"{table} NOT INDEXED" if connection.vendor == "sqlite" else table


def update_rows(model: type[models.Model], changes: dict[int, dict[str, object]], *, where: str = "",
                where_params: tuple = ()) -> int:
    """UPDATE several rows, each with values of its own, in one statement; the number of rows changed.

    One statement is one transaction even in autocommit, without BEGIN and COMMIT round trips.
    Each column is a CASE on the primary key; a row that does not set a column keeps its value.
    `where` is an SQL condition every changed row must meet, as in update_row.
    """
    if len(changes) == 1:
        [(pk, values)] = changes.items()
        return update_row(model, pk, where=where, where_params=where_params, **values)
    alias = router.db_for_write(model)
    connection = connections[alias]
    quote = connection.ops.quote_name
    pk_column = quote(model._meta.pk.column)
    assignments, params = [], []
    names = list(dict.fromkeys(name for values in changes.values() for name in values))
    for name in names:
        field = model._meta.get_field(name)
        column = quote(field.column)
        cases = [(pk, values[name]) for pk, values in changes.items() if name in values]
        assignments.append(f"{column} = CASE {pk_column} {' '.join(['WHEN %s THEN %s'] * len(cases))} "
                           f"ELSE {column} END")
        for pk, value in cases:
            params += [pk, field.get_db_prep_save(value, connection)]
    # Identifiers come from the model and our own code; every value is a parameter.
    sql = (f"UPDATE {by_primary_key(quote(model._meta.db_table), connection)} "  # noqa: S608
           f"SET {', '.join(assignments)} WHERE {pk_column} IN ({', '.join(['%s'] * len(changes))})")
    return _update(connection, sql, [*params, *changes], where, where_params)


@cache
def columns_and_converters(model: type[models.Model], fields: tuple[str, ...], alias: str) -> tuple[list, list]:
    """The columns of `fields` and, for each, what the ORM's compiler applies to its values."""
    connection = connections[alias]
    table = model._meta.db_table
    columns = [model._meta.get_field(name).get_col(table) for name in fields]
    # The backend's converters, then the field's.
    converters = [connection.ops.get_db_converters(column) + column.get_db_converters(connection)
                  for column in columns]
    return columns, converters


def convert(row: tuple | list, columns: list, converters: list, alias: str) -> list:
    """A row's raw values as the ORM would have them (datetimes, JSON, UUIDs...)."""
    connection = connections[alias]
    values = []
    for value, column, column_converters in zip(row, columns, converters, strict=True):
        for converter in column_converters:
            value = converter(value, column, connection)
        values.append(value)
    return values


@cache
def _select(model: type[models.Model], fields: tuple[str, ...], lock: bool, alias: str) -> tuple[str, list, list]:
    connection = connections[alias]
    quote = connection.ops.quote_name
    table = model._meta.db_table
    concrete = [model._meta.get_field(name) for name in fields]
    columns, converters = columns_and_converters(model, fields, alias)
    sql = (f"SELECT {', '.join(quote(field.column) for field in concrete)} FROM {quote(table)} "  # noqa: S608
           f"WHERE {quote(model._meta.pk.column)} = %s")
    if lock and connection.features.has_select_for_update:
        sql += " " + connection.ops.for_update_sql()
    return sql, columns, converters


def lock_row(model: type[models.Model], pk: int, fields: tuple[str, ...]) -> models.Model:
    """The row `pk` with only `fields` loaded, locked until the transaction ends where the database
    locks rows (PostgreSQL: SELECT ... FOR UPDATE; SQLite's write transaction already excludes
    other writers). Raises model.DoesNotExist when there is no such row."""
    alias = router.db_for_write(model)
    connection = connections[alias]
    sql, columns, converters = _select(model, fields, True, alias)
    with connection.cursor() as cursor:
        cursor.execute(sql, [pk])
        row = cursor.fetchone()
    if row is None:
        raise model.DoesNotExist(f"{model.__name__} {pk} does not exist")
    values = convert(row, columns, converters, alias)
    loaded = {model._meta.pk.attname: pk} | {
        model._meta.get_field(name).attname: value for name, value in zip(fields, values, strict=True)}
    # from_db takes the values in the model's field order.
    names = [field.attname for field in model._meta.concrete_fields if field.attname in loaded]
    return model.from_db(alias, names, [loaded[name] for name in names])
