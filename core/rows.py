"""Inserting, updating and locking one row without rebuilding the statement each time.

`Model.save()` compiles the statement anew for every row: for a Message (~50 columns) that
took longer than SQLite took to store it. Ingest inserts a few rows per message, so it uses
`insert_row`, which caches the statement per model and database and prepares the values with
the model's own fields (defaults, auto_now, JSON and file fields behave as in save()). It is
for models without signals or multi-table inheritance; none of ours has either. Delivery's
state changes and ingest's conversation lock are the same kind of hot, fixed statement.

On PostgreSQL, where each statement is a round trip, `ReservedIds` and `atomic_pipelined`
let a transaction of such statements go out, with its COMMIT, in one; `TransactionPipeline`
lets the next transaction follow without waiting for that COMMIT's answer; `prepared_cursor`
has the server prepare them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

from django.db import DatabaseError, connections, models, router, transaction


def prepared_cursor(connection: object) -> object:
    """A cursor for this module's fixed statements, which a worker runs thousands of times.

    On PostgreSQL through psycopg 3 it binds values on the server, so psycopg prepares each
    statement once it has run a few times on the connection (OPTIONS' prepare_threshold, set
    from DATABASE_PREPARED_STATEMENTS): the server then no longer parses and plans each INSERT
    of ~50 values. In ingest that took the server's CPU for a message from ~0.95 to ~0.7 ms.
    Every other query keeps Django's default, client-side binding, which some ORM queries need.
    With preparing off, while queries are logged (DEBUG, tests counting queries: Django logs
    a query's text only from client-side binding), and elsewhere, this is Django's usual
    cursor. Errors are Django's either way (IntegrityError...).
    """
    if connection.vendor != "postgresql" or connection.queries_logged:
        return connection.cursor()
    with connection.wrap_database_errors:
        connection.ensure_connection()
        if not _is_psycopg3(type(connection.connection)) or connection.connection.prepare_threshold is None:
            return connection.cursor()
        import psycopg
        from django.db.backends.postgresql.psycopg_any import register_tzloader

        cursor = psycopg.Cursor(connection.connection)
        # As Django's own cursors: timestamps read in the connection's current time zone.
        oid = psycopg.adapters.types["timestamptz"].oid
        if connection.timezone != connection.connection.adapters.get_loader(oid, psycopg.pq.Format.TEXT).timezone:
            register_tzloader(connection.timezone, cursor)
    return connection.make_cursor(cursor)


@cache
def _is_psycopg3(driver_connection: type) -> bool:
    """The driver is psycopg 3 (not psycopg2, which has neither pipelines nor server-side binding)."""
    try:
        import psycopg
    except ImportError:
        return False
    return issubclass(driver_connection, psycopg.Connection)


@cache
def _statement(model: type[models.Model], alias: str, with_pk: bool) -> tuple[str, tuple[models.Field, ...]]:
    connection = connections[alias]
    quote = connection.ops.quote_name
    fields = tuple(field for field in model._meta.local_concrete_fields if with_pk or not field.primary_key)
    pk = model._meta.pk
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    # Identifiers come from the model; every value is a parameter.
    sql = f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608
    if not with_pk:
        sql += f" RETURNING {quote(pk.column)}"
    return sql, fields


@cache
def _plain_values(model: type[models.Model], alias: str, with_pk: bool) -> tuple[tuple[str, type | None, str], ...]:
    """For each field of the INSERT: its attribute; the one Python type whose values the field
    hands to the database as they are (None: always ask the field); for an integer field, its
    internal type, which the backend may adapt the value to."""
    _sql, fields = _statement(model, alias, with_pk)
    return tuple((field.attname, kind := _plain_type(field),
                  field.get_internal_type() if kind is int and not field.is_relation else "") for field in fields)


_PLAIN_FIELDS = (
    (models.BooleanField, bool), (models.IntegerField, int), (models.CharField, str), (models.TextField, str),
)
_PREPARATION = ("pre_save", "get_db_prep_save", "get_db_prep_value", "get_prep_value")


def _plain_type(field: models.Field) -> type | None:
    """str for a text field, int for an integer field or a key to an auto field, bool for a
    boolean: they prepare such a value by leaving it as it is (integers: see _plain_values).
    None for anything else (dates, JSON, files, UUIDs, subclasses that prepare values their own way)."""
    if isinstance(field, models.ForeignKey):
        unchanged = type(field).get_db_prep_save is models.ForeignKey.get_db_prep_save
        target = field.target_field
        return int if unchanged and type(field).pre_save is models.Field.pre_save and _key_type(target) else None
    for base, kind in _PLAIN_FIELDS:
        if isinstance(field, base):
            same = all(getattr(type(field), name) is getattr(base, name) for name in _PREPARATION)
            return kind if same else None
    return None


def _key_type(field: models.Field) -> bool:
    # An auto field's value goes to the database as int() of it; the backends we run on check nothing more.
    return isinstance(field, (models.AutoField, models.BigAutoField, models.SmallAutoField))


def _insert_params(obj: models.Model, alias: str, with_pk: bool) -> list:
    """The INSERT's values, as `field.get_db_prep_save(field.pre_save(obj, True))` gives them.

    Most values need no preparing, and asking each of a Message's ~50 fields cost more than
    SQLite took to store the row: a value of its field's plain type is taken as it is.
    """
    model = type(obj)
    connection = connections[alias]
    _sql, fields = _statement(model, alias, with_pk)
    adapt_integer = connection.ops.adapt_integerfield_value
    params = []
    for field, (attname, kind, integer_type) in zip(fields, _plain_values(model, alias, with_pk), strict=True):
        value = getattr(obj, attname) if kind is not None else None
        if kind is not None and (value is None or type(value) is kind):
            params.append(adapt_integer(value, integer_type) if integer_type and value is not None else value)
        else:
            params.append(field.get_db_prep_save(field.pre_save(obj, True), connection))
    return params


def insert_row(obj: models.Model) -> None:
    """INSERT `obj` as a new row and set its primary key, as `obj.save(force_insert=True)` would.

    When `obj` already has its primary key (from `ReservedIds`), nothing is read back: inside
    `atomic_pipelined()` the INSERT then leaves without waiting for the server's answer.
    """
    model = type(obj)
    alias = router.db_for_write(model, instance=obj)
    connection = connections[alias]
    with_pk = obj.pk is not None
    sql, _fields = _statement(model, alias, with_pk)
    with prepared_cursor(connection) as cursor:
        cursor.execute(sql, _insert_params(obj, alias, with_pk))
        if not with_pk:
            (pk,) = cursor.fetchone()
            obj.pk = model._meta.pk.to_python(pk)
    obj._state.adding = False
    obj._state.db = alias


class ReservedIds:
    """Primary keys taken ahead from the tables' own sequences, where the database has them (PostgreSQL).

    A row inserted with its key known needs no answer from the server before the next statement
    (see `atomic_pipelined`). One query reserves the keys of a whole batch; keys of rows that end up not
    stored are simply never used (sequences have gaps anyway). Elsewhere, or once a model's keys
    are used up, `take` returns None and the INSERT reads its key back as usual.
    """

    def __init__(self, counts: dict[type[models.Model], int]) -> None:
        self._ids: dict[type[models.Model], list[int]] = {}
        wanted = [(model, count) for model, count in counts.items() if count > 0]
        if not wanted:
            return
        connection = connections[router.db_for_write(wanted[0][0])]
        if connection.vendor != "postgresql":
            return
        parts, params = [], []
        for number, (model, count) in enumerate(wanted):
            parts.append("SELECT %s, nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)")
            params += [number, connection.ops.quote_name(model._meta.db_table), model._meta.pk.column, count]
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(parts), params)
            rows = cursor.fetchall()
        for number, (model, _count) in enumerate(wanted):
            # None where the key has no sequence (not an auto field): those INSERTs read it back.
            self._ids[model] = sorted((value for index, value in rows if index == number and value is not None),
                                      reverse=True)

    def take(self, model: type[models.Model]) -> int | None:
        ids = self._ids.get(model)
        return ids.pop() if ids else None


@contextmanager
def atomic_pipelined(model: type[models.Model], *, meanwhile: Callable[[], object] | None = None) -> Iterator[None]:
    """`transaction.atomic()`, whose statements and COMMIT go to PostgreSQL together (libpq pipeline mode).

    On PostgreSQL the round trip, not the statement, was the cost of ingest's small writes:
    BEGIN, three or four INSERTs and COMMIT made six, and with the worker and the server sharing
    two cores each waited ~0.5 ms. In a pipeline, statements whose result nobody reads (inserts
    with reserved keys, updates whose count is ignored) go out at once, and one Sync collects every
    answer with the COMMIT's: one round trip. A statement whose result is read (a row lock) waits
    for the answers so far. The COMMIT is queued behind the block's statements, so Django's own
    commit finds the transaction done; an error of any statement aborts the rest, COMMIT
    included, and is raised on leaving the block (or at the next result read), and atomic()
    rolls back as usual. Row counts of updates are not known inside.

    `meanwhile` is called once the COMMIT has left, before its answer is awaited: work that
    needs no database (it must not use this connection) is done while the server commits.

    Nested in another transaction, or on SQLite (where statements cost no round trip), it is
    plain atomic(), and `meanwhile` is called after the commit.
    """
    alias = router.db_for_write(model)
    connection = connections[alias]
    if (connection.vendor != "postgresql" or connection.in_atomic_block or not connection.get_autocommit()
            or not _has_pipeline(connection.connection)):
        with transaction.atomic(using=alias):
            yield
        if meanwhile is not None:
            meanwhile()
        return
    # Errors raised on leaving the pipeline become Django's (IntegrityError...), as at execute().
    with transaction.atomic(using=alias), connection.wrap_database_errors, connection.connection.pipeline():
        yield
        if not connection.needs_rollback:
            with connection.cursor() as cursor:
                cursor.execute("COMMIT")
            if meanwhile is not None:
                meanwhile()


class Commit:
    """One transaction of a TransactionPipeline: whether its COMMIT took effect, once answered."""

    def __init__(self) -> None:
        self._cursor = None  # the driver cursor that ran the COMMIT

    @property
    def committed(self) -> bool:
        # A COMMIT in an aborted transaction answers "ROLLBACK"; one not answered yet, or
        # skipped after an error, has no status.
        return self._cursor is not None and self._cursor.statusmessage == "COMMIT"


class TransactionPipeline:
    """Transactions sent one after another on one PostgreSQL connection, each COMMIT confirmed later.

    atomic_pipelined sends a transaction in one round trip but still waits for its COMMIT's
    answer before the next one starts; while the server executed and flushed it, the worker
    waited. Here the next transaction follows at once (libpq pipeline mode) and answers are
    read as they arrive: `Commit.committed` says, per transaction, whether it took effect.

    Nothing is lost to an error: within a pipeline the server skips every statement after
    a failed one, later transactions included, until `end()` reads all answers. So a
    transaction decided on the assumption that earlier ones committed never commits unless
    they did, and the caller does again, the ordinary way, each one whose Commit says no.

    Django does not see these transactions: its connection stays in autocommit, so on_commit
    hooks would run at once. The caller runs what must follow a commit once `committed` is
    true. Statements whose results are read (a row lock, a query) wait for every earlier
    answer, as in atomic_pipelined. `start()` is None where this does not apply (SQLite,
    inside a transaction, a driver without pipelines).
    """

    def __init__(self, connection: object) -> None:
        self._connection = connection
        self._context = connection.connection.pipeline()
        with connection.wrap_database_errors:
            self._pipeline = self._context.__enter__()

    @classmethod
    def start(cls, model: type[models.Model]) -> TransactionPipeline | None:
        connection = connections[router.db_for_write(model)]
        if connection.vendor != "postgresql" or connection.in_atomic_block or not connection.get_autocommit():
            return None
        connection.ensure_connection()
        return cls(connection) if _has_pipeline(connection.connection) else None

    @contextmanager
    def transaction(self) -> Iterator[Commit]:
        """BEGIN, the block's statements, COMMIT — sent, not awaited. An error in the block
        propagates with the transaction left open: call `end()`."""
        commit = Commit()
        cursor = self._connection.connection.cursor()
        with self._connection.wrap_database_errors:
            cursor.execute("BEGIN")
        yield commit
        with self._connection.wrap_database_errors:
            cursor.execute("COMMIT")
        commit._cursor = cursor

    def end(self) -> BaseException | None:
        """Read every answer and leave the pipeline, rolling back a transaction left open or
        aborted. Returns the first error the answers held (Django's), instead of raising it: the
        Commits tell what took effect. A connection that fails now raises."""
        connection = self._connection
        error = None
        try:
            with connection.wrap_database_errors:
                self._pipeline.sync()
        except DatabaseError as exc:
            error = exc
        with connection.wrap_database_errors:
            self._context.__exit__(None, None, None)
            if connection.connection.info.transaction_status != _IDLE:
                connection.connection.execute("ROLLBACK")
        return error


_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE


def _has_pipeline(database_connection: object) -> bool:
    return _driver_has_pipeline(type(database_connection))


@cache
def _driver_has_pipeline(driver_connection: type) -> bool:
    """psycopg 3 over libpq 14 or newer (psycopg's binary wheels carry a recent one); not psycopg2."""
    if not _is_psycopg3(driver_connection):
        return False
    import psycopg

    return psycopg.Pipeline.is_supported()


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
    return _update(connection, sql, [*params, pk], where, where_params, prepare=True)


def _update(connection: object, sql: str, params: list, where: str, where_params: tuple, *,
            prepare: bool = False) -> int:
    """Run an UPDATE, with the caller's extra SQL condition and its values; the number of rows changed."""
    if where:
        sql += f" AND {only_filter(where, connection)}"
    where_values = [connection.ops.adapt_datetimefield_value(value) if isinstance(value, dt.datetime) else value
                    for value in where_params]
    with prepared_cursor(connection) if prepare else connection.cursor() as cursor:
        cursor.execute(sql, [*params, *where_values])
        return cursor.rowcount


def by_primary_key(table: str, connection: object) -> str:
    """`table` in an UPDATE whose rows are named by primary key, for the planner to look them up by it.

    Given "id IN (...) AND status = ...", SQLite without statistics may prefer an index on
    status and scan every row in that status (thousands of queued replies) instead of
    looking up the few named; NOT INDEXED leaves it the rowid. On PostgreSQL see only_filter.
    """
    return f"{table} NOT INDEXED" if connection.vendor == "sqlite" else table


def only_filter(condition: str, connection: object) -> str:
    """`condition` in such an UPDATE, as a check of the rows found by key that no index can serve.

    PostgreSQL's planner, with statistics from when few messages were in "sending", preferred
    the index on delivery_status to the primary key, and visited every version of every
    message that had passed through sending since the last vacuum (dead index entries): a
    drain's two-row UPDATE took 0.35 ms in the database instead of 0.02, and grew with traffic.
    `(condition) IS TRUE` holds for the same rows, but no index matches it. SQLite: see
    by_primary_key.
    """
    return f"(({condition}) IS TRUE)" if connection.vendor == "postgresql" else f"({condition})"


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
    with prepared_cursor(connection) as cursor:
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
