"""The hot-path row helpers read and write exactly what the ORM would, on either database."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from conversations.models import Contact, Conversation, ConversationStatus
from core.rows import insert_row, lock_row, update_row, update_rows
from tests import factories


@pytest.mark.django_db
def test_insert_values_are_prepared_as_the_fields_would_prepare_them():
    from django.db import connection

    from conversations.models import Attachment, Direction, Message
    from core.rows import _insert_params, _plain_type, _statement

    inbox = factories.InboxFactory()
    conversation = factories.ConversationFactory(inbox=inbox)
    message = Message(
        pk=10**12, conversation=conversation, inbox=inbox, direction=Direction.IN, message_id="m@x", subject="Hé",
        text="body", html="", from_address="a@x", to=["b@x"], cc=[], is_automatic=True, raw_size=2**40,
        imap_uid=7, imap_uidvalidity=None, sent_at=timezone.now(), raw="raw/k.eml", priority=3,
    )
    attachment = Attachment(message=message, file="attachments/k", filename="f.pdf", size=12, inline=False)
    taken = set()
    for obj, with_pk in [(message, True), (message, False), (attachment, False), (conversation, False)]:
        _sql, fields = _statement(type(obj), "default", with_pk)
        params = _insert_params(obj, "default", with_pk)
        # The values taken as they are (the others are asked of their fields, as save() does).
        for field, value in zip(fields, params, strict=True):
            if _plain_type(field) is not None:
                expected = field.get_db_prep_save(field.pre_save(obj, True), connection)
                assert (value, type(value)) == (expected, type(expected)), field
                taken.add(type(field).__name__)
    assert {"CharField", "TextField", "BooleanField", "ForeignKey", "PositiveBigIntegerField"} <= taken


@pytest.mark.django_db
def test_insert_row_stores_what_save_would():
    inbox = factories.InboxFactory()
    contact = Contact(address="ada@example.com", name="Ada")
    insert_row(contact)
    when = timezone.now() - dt.timedelta(days=3)
    conversation = Conversation(inbox=inbox, department_id=inbox.department_id, contact=contact, subject="Hi",
                                created_at=when, last_message_at=when)
    insert_row(conversation)

    stored = Conversation.objects.get(pk=conversation.pk)
    assert stored.public_id == conversation.public_id
    assert stored.contact.address == "ada@example.com"
    assert stored.created_at == when
    assert stored.updated_at is not None  # auto_now, as save() sets it
    assert Contact.objects.get(pk=contact.pk).created_at is not None  # auto_now_add


@pytest.mark.django_db
def test_lock_row_loads_typed_values_and_update_row_is_conditional():
    closed = timezone.now() - dt.timedelta(hours=5)
    conversation = factories.ConversationFactory(status=ConversationStatus.CLOSED, closed_at=closed)

    row = lock_row(Conversation, conversation.pk, ("public_id", "status", "closed_at", "last_message_at"))

    assert row.public_id == conversation.public_id  # a UUID, not its text
    assert row.closed_at == closed
    assert row.closed_at.tzinfo is not None
    assert row.status == ConversationStatus.CLOSED
    assert update_row(Conversation, conversation.pk, where='"status" = %s', where_params=("open",),
                      status=ConversationStatus.OPEN) == 0
    assert update_row(Conversation, conversation.pk, where='"closed_at" = %s', where_params=(closed,),
                      status=ConversationStatus.OPEN, closed_at=None) == 1
    conversation.refresh_from_db()
    assert (conversation.status, conversation.closed_at) == (ConversationStatus.OPEN, None)
    with pytest.raises(Conversation.DoesNotExist):
        lock_row(Conversation, conversation.pk + 1000, ("status",))


@pytest.mark.django_db
def test_update_rows_gives_each_row_its_own_values_in_one_statement(django_assert_num_queries):
    from conversations.models import DeliveryStatus, Message

    first, second, untouched = (factories.MessageFactory(delivery_status=DeliveryStatus.SENDING,
                                                         delivery_history=[{"to": "sending"}]) for _ in range(3))
    sent_at = timezone.now() - dt.timedelta(seconds=3)
    with django_assert_num_queries(1):
        changed = update_rows(Message, {
            first.pk: {"delivery_status": DeliveryStatus.SENT, "delivered_at": sent_at,
                       "delivery_history": [{"to": "sending"}, {"to": "sent"}], "delivery_server_reply": "250 ok"},
            second.pk: {"data_sent_at": sent_at, "delivery_history": [{"to": "sending", "note": "data"}]},
        }, where='"delivery_status" = %s', where_params=(DeliveryStatus.SENDING,))

    assert changed == 2
    first.refresh_from_db()
    second.refresh_from_db()
    untouched.refresh_from_db()
    assert (first.delivery_status, first.delivered_at, first.data_sent_at) == (DeliveryStatus.SENT, sent_at, None)
    assert first.delivery_history == [{"to": "sending"}, {"to": "sent"}]
    assert first.delivery_server_reply == "250 ok"
    assert (second.delivery_status, second.data_sent_at, second.delivered_at) == (
        DeliveryStatus.SENDING, sent_at, None)
    assert second.delivery_history == [{"to": "sending", "note": "data"}]
    assert (untouched.delivery_status, untouched.delivery_history) == (DeliveryStatus.SENDING, [{"to": "sending"}])
    # The condition holds per row: the one already sent is left alone.
    assert update_rows(Message, {first.pk: {"delivery_status": DeliveryStatus.FAILED},
                                 second.pk: {"delivery_status": DeliveryStatus.SENT}},
                       where='"delivery_status" = %s', where_params=(DeliveryStatus.SENDING,)) == 1
    first.refresh_from_db()
    assert first.delivery_status == DeliveryStatus.SENT


@pytest.mark.django_db
def test_rows_named_by_primary_key_are_looked_up_by_it():
    from django.db import connection

    from conversations.models import Message
    from core.rows import by_primary_key

    table = connection.ops.quote_name(Message._meta.db_table)
    if connection.vendor != "sqlite":  # PostgreSQL's planner picks the key by itself: nothing added
        assert by_primary_key(table, connection) == table
        return
    with connection.cursor() as cursor:
        sql = (f'EXPLAIN QUERY PLAN UPDATE {by_primary_key(table, connection)} '  # noqa: S608
               'SET "delivery_status" = %s WHERE "id" IN (%s, %s) AND "delivery_status" = %s')
        cursor.execute(sql, ["sent", 1, 2, "sending"])
        plan = " ".join(str(row) for row in cursor.fetchall())
    assert "PRIMARY KEY" in plan, plan


@pytest.mark.django_db(transaction=True)
def test_reserved_keys_become_the_rows_keys():
    from django.db import connection

    from core.rows import ReservedIds

    existing = factories.ContactFactory()
    ids = ReservedIds({Contact: 2, Conversation: 0})
    keys = [ids.take(Contact), ids.take(Contact)]

    assert ids.take(Contact) is None  # used up: the INSERT reads its key back
    assert ids.take(Conversation) is None
    if connection.vendor == "postgresql":  # from the table's own sequence, after the rows it has
        assert keys[0] > existing.pk
        assert keys[1] > keys[0]
    else:  # no sequences: every key is read back
        assert keys == [None, None]
    contacts = [Contact(pk=key, address=f"c{n}@example.com") for n, key in enumerate(keys)]
    for contact in contacts:
        insert_row(contact)
    assert [c.pk for c in contacts] == [c.pk for c in Contact.objects.exclude(pk=existing.pk).order_by("pk")]
    assert all(contact.pk > existing.pk for contact in contacts)
    # The sequence moved past them: a row saved the usual way gets a key of its own.
    assert factories.ContactFactory().pk > max(c.pk for c in contacts)


@pytest.mark.django_db(transaction=True)
def test_a_pipelined_transaction_commits_its_rows_and_then_runs_its_hooks():
    from django.db import connection, transaction

    from core.rows import ReservedIds, atomic_pipelined

    ids = ReservedIds({Contact: 3})
    ran = []
    with atomic_pipelined(Contact):
        for n in range(3):
            insert_row(Contact(pk=ids.take(Contact), address=f"c{n}@example.com"))
        transaction.on_commit(lambda: ran.append(Contact.objects.count()))

    assert ran == [3]  # once, after the commit, which every row was part of
    assert connection.get_autocommit()
    assert not connection.in_atomic_block
    assert sorted(Contact.objects.values_list("address", flat=True)) == [
        "c0@example.com", "c1@example.com", "c2@example.com"]


@pytest.mark.django_db(transaction=True)
def test_a_failing_statement_rolls_back_the_whole_pipelined_transaction():
    from django.db import IntegrityError, transaction

    from core.rows import ReservedIds, atomic_pipelined

    factories.ContactFactory(address="taken@example.com")
    ids = ReservedIds({Contact: 2})
    ran = []

    def store_both() -> None:
        with atomic_pipelined(Contact):
            insert_row(Contact(pk=ids.take(Contact), address="new@example.com"))
            insert_row(Contact(pk=ids.take(Contact), address="TAKEN@example.com"))  # unique, case-insensitive
            transaction.on_commit(lambda: ran.append("committed"))

    with pytest.raises(IntegrityError):  # Django's error, as outside a pipeline
        store_both()

    assert ran == []
    assert list(Contact.objects.values_list("address", flat=True)) == ["taken@example.com"]
    # The connection is clean for what follows.
    with atomic_pipelined(Contact):
        insert_row(Contact(address="after@example.com"))
    assert Contact.objects.filter(address="after@example.com").exists()


@pytest.mark.django_db(transaction=True)
def test_meanwhile_runs_once_while_the_commit_travels_and_before_the_hooks():
    from django.db import connection, transaction

    from core.rows import ReservedIds, atomic_pipelined

    ids = ReservedIds({Contact: 1})
    ran, seen = [], []

    def meanwhile() -> None:
        seen.append((connection.in_atomic_block, list(ran)))

    with atomic_pipelined(Contact, meanwhile=meanwhile):
        insert_row(Contact(pk=ids.take(Contact), address="m@example.com"))
        transaction.on_commit(lambda: ran.append("hook"))

    if connection.vendor == "postgresql":
        # Still inside the transaction: the COMMIT has left, its answer is not read yet.
        assert seen == [(True, [])]
    else:
        assert seen == [(False, ["hook"])]  # nothing to overlap: after the commit
    assert ran == ["hook"]
    assert Contact.objects.filter(address="m@example.com").exists()


@pytest.mark.django_db
def test_a_status_condition_never_leads_postgresql_away_from_the_key():
    import json

    from django.db import connection

    from conversations.models import DeliveryStatus, Message
    from core.rows import only_filter

    if connection.vendor != "postgresql":  # SQLite: by_primary_key (NOT INDEXED) does it, tested above
        assert only_filter('"delivery_status" = %s', connection) == '("delivery_status" = %s)'
        return
    conversation = factories.ConversationFactory()
    messages = [factories.MessageFactory(conversation=conversation, delivery_status=DeliveryStatus.SENT)
                for _ in range(300)]
    table = connection.ops.quote_name(Message._meta.db_table)
    with connection.cursor() as cursor:
        # Statistics taken when no message was sending: the status index then looks the
        # cheapest way to the rows, however many dead entries it holds.
        cursor.execute(f"ANALYZE {table}")

        def indexes(condition: str) -> set[str]:
            cursor.execute(f'EXPLAIN (FORMAT JSON) UPDATE {table} SET "data_sent_at" = NULL '  # noqa: S608
                           f'WHERE "id" IN (%s, %s) AND {condition}',
                           [messages[0].pk, messages[1].pk, DeliveryStatus.SENDING])
            plan = cursor.fetchone()[0]
            text = plan if isinstance(plan, str) else json.dumps(plan)
            return {name for name in _index_names(cursor, table) if name in text}

        # The key, or (on a table this small) no index at all; never the status index, which
        # the plain condition gets here.
        assert indexes(only_filter('"delivery_status" = %s', connection)) <= {f"{Message._meta.db_table}_pkey"}


def _index_names(cursor, table: str) -> list[str]:
    cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s", [table.strip('"')])
    return [row[0] for row in cursor.fetchall()]


def _prepared_statements(wrapper) -> list[str]:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db
@pytest.mark.parametrize("prepared", [True, False])
def test_the_hot_statements_are_prepared_unless_turned_off(prepared):
    from django.db import connections

    from core.rows import prepared_cursor

    wrapper = connections.create_connection("default")  # a connection of its own, with these OPTIONS
    if wrapper.vendor == "postgresql" and not prepared:
        options = {**wrapper.settings_dict.get("OPTIONS", {}), "prepare_threshold": None}
        wrapper.settings_dict = {**wrapper.settings_dict, "OPTIONS": options}
    try:
        for number in range(7):
            with prepared_cursor(wrapper) as cursor:
                cursor.execute("SELECT CAST(%s AS integer) + 1", [number])
                assert cursor.fetchone() == (number + 1,)
        if wrapper.vendor != "postgresql":  # SQLite prepares every statement itself
            return
        hot = [statement for statement in _prepared_statements(wrapper) if "+ 1" in statement]
        assert len(hot) == (1 if prepared else 0)
    finally:
        wrapper.close()


@pytest.mark.django_db
def test_prepared_statements_write_and_read_what_the_orm_does():
    # Past psycopg's threshold (5 runs) the statements are prepared: the values must not change.
    conversation = factories.ConversationFactory()
    written = []
    for minute in range(8):
        when = timezone.now().replace(microsecond=0) - dt.timedelta(minutes=minute)
        contact = Contact(address=f"p{minute}@example.com", name="Zoë")
        insert_row(contact)
        update_row(Conversation, conversation.pk, last_message_at=when)
        row = lock_row(Conversation, conversation.pk, ("status", "last_message_at"))
        written.append((contact.pk, when, row.last_message_at))

    for pk, when, read in written:
        assert Contact.objects.get(pk=pk).name == "Zoë"
        assert read == when
        assert read.tzinfo is not None


@pytest.mark.django_db(transaction=True)
def test_pipelined_transactions_commit_in_turn_and_none_after_a_failed_one():
    from django.db import IntegrityError, connection

    from core.rows import ReservedIds, TransactionPipeline

    factories.ContactFactory(address="taken@example.com")
    ids = ReservedIds({Contact: 4})  # keys known: no INSERT waits for its answer
    pipeline = TransactionPipeline.start(Contact)
    if connection.vendor != "postgresql":
        assert pipeline is None  # statements cost no round trip there: one transaction at a time
        return
    commits = []
    try:
        for addresses in (["a@example.com"], ["b@example.com", "TAKEN@example.com"], ["c@example.com"]):
            with pipeline.transaction() as commit:
                for address in addresses:
                    insert_row(Contact(pk=ids.take(Contact), address=address))
            commits.append(commit)
    except IntegrityError:
        pass  # the refusal may surface at any later statement: the Commits tell the outcome
    error = pipeline.end()

    assert error is None or isinstance(error, IntegrityError)
    assert [commit.committed for commit in commits] == [True, False, False][:len(commits)]
    # Sent after the failure, the third was skipped whole, though it broke no rule of its own.
    assert sorted(Contact.objects.values_list("address", flat=True)) == ["a@example.com", "taken@example.com"]
    assert connection.get_autocommit()
    assert not connection.in_atomic_block
    insert_row(Contact(address="after@example.com"))  # the connection is clean for what follows
    assert Contact.objects.filter(address="after@example.com").exists()
