# SPDX-License-Identifier: GPL-3.0-or-later
"""The outbox of the send_email action (``marketing.automation.email``).

The action (``marketing_automation_email.py``) stores each message it
renders here; ``Email.deliver`` hands the messages to the mail server
through the SMTP transport (``smtp.py``), committing the acceptance of each
message before sending the next, and then completes their record
activities (``RecordActivity.complete``), logs the sent emails in
``ir.email`` and deletes them.  Transient failures leave a message waiting
for another attempt, with a growing delay (``delivery_backoff``), until
``MAX_ATTEMPTS``; permanent ones fail it; a failure that is no recipient's
(the sender or the login refused) pauses its activity.  ``Email.purge``
forgets the messages and the tracked links once they served.
"""
import datetime
from collections import defaultdict

from sql import Null

from trytond import backend
from trytond.config import config
from trytond.i18n import gettext
from trytond.model import Index, ModelSQL, ModelView, Unique, fields
from trytond.pool import Pool
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction

from . import marketing_automation_email as send_email
from . import smtp, tools
from .tools import for_update, id_batches, queue, quick_commits

MAX_ATTEMPTS = 10


def delivery_backoff(attempts):
    "The delay before the next attempt after attempts failed deliveries"
    return min(
        datetime.timedelta(minutes=5) * 2 ** max(attempts - 1, 0),
        datetime.timedelta(hours=6))


class Email(ModelSQL, ModelView):
    "An email of a record activity on its way to the mail server"
    __name__ = 'marketing.automation.email'

    record_activity = fields.Many2One(
        'marketing.automation.record.activity', "Record Activity",
        required=True, ondelete='CASCADE', readonly=True)
    message_id = fields.Char("Message-ID", readonly=True)
    sender = fields.Char("Sender", readonly=True)
    address = fields.Char("Address", readonly=True)
    recipient = fields.Char("Recipient", readonly=True)
    subject = fields.Char("Subject", readonly=True)
    message = fields.Binary("Message", readonly=True)
    state = fields.Selection([
            ('pending', "Pending"),
            ('sent', "Sent"),
            ('failed', "Failed"),
            ], "State", readonly=True, required=True)
    attempts = fields.Integer("Attempts", readonly=True)
    next_attempt = fields.DateTime("Next Attempt", readonly=True)
    error = fields.Text("Error", readonly=True)

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_constraints += [
            ('record_activity_unique', Unique(t, t.record_activity),
                'marketing_automation.msg_email_record_activity_unique'),
            ]
        cls._sql_indexes.add(Index(t,
                (t.state, Index.Equality(cardinality='low')),
                (t.next_attempt, Index.Range())))

    @classmethod
    def default_state(cls):
        return 'pending'

    @classmethod
    def default_attempts(cls):
        return 0

    @classmethod
    def of_record_activities(cls, record_activity_ids):
        "The ids of the emails of the record activities"
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        ids = []
        for sub in grouped_slice(
                list(record_activity_ids), backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.select(
                    table.id, where=reduce_ids(table.record_activity, sub)))
            ids.extend(i for i, in cursor)
        return ids

    @classmethod
    def ready(cls):
        "Queue the emails that wait for delivery or for their completion"
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        Activity = pool.get('marketing.automation.activity')
        table = cls.__table__()
        record_activity = RecordActivity.__table__()
        activity = Activity.__table__()
        cursor = Transaction().connection.cursor()
        now = datetime.datetime.now()
        cursor.execute(*table.join(record_activity,
                condition=table.record_activity == record_activity.id
                ).join(activity,
                condition=record_activity.activity == activity.id
                ).select(
                table.id,
                where=((table.state == 'pending')
                    & (table.next_attempt <= now)
                    & Activity.runnable(activity, now))
                | (table.state != 'pending'),
                order_by=[table.id.asc]))
        ids = [i for i, in cursor]
        queue(cls.__queue__.deliver, ids)

    @classmethod
    def deliver(cls, emails):
        """Send the pending emails and complete their record activities.

        The acceptance of each message is committed before the next one is
        sent."""
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        table = cls.__table__()
        ids = list(map(int, emails))
        now = datetime.datetime.now()

        # Take the messages for the lease so no other run sends them.
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        Record = pool.get('marketing.automation.record')
        Scenario = pool.get('marketing.automation.scenario')
        Activity = pool.get('marketing.automation.activity')
        record_activity = RecordActivity.__table__()
        record = Record.__table__()
        scenario = Scenario.__table__()
        activity = Activity.__table__()
        for_ = for_update(table)
        pending, blocked = [], []
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.join(record_activity,
                    condition=table.record_activity == record_activity.id
                    ).join(record,
                    condition=record_activity.record == record.id
                    ).join(scenario,
                    condition=record.scenario == scenario.id
                    ).join(activity,
                    condition=record_activity.activity == activity.id
                    ).select(
                    table.id, table.state, table.next_attempt,
                    record.blocked, scenario.state,
                    Activity.runnable(activity, now),
                    where=reduce_ids(table.id, sub),
                    for_=for_))
            for (email_id, state, next_attempt, record_blocked,
                    scenario_state, runnable) in cursor:
                if (state != 'pending' or next_attempt is None
                        or next_attempt > now or not runnable):
                    # a paused activity keeps its emails until it resumes
                    continue
                elif record_blocked:
                    blocked.append(email_id)
                elif scenario_state == 'running':
                    pending.append(email_id)
        cls._lease(pending)
        for sub in grouped_slice(blocked, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.update(
                    [table.state, table.error],
                    ['failed', gettext(
                            'marketing_automation.msg_email_blocked')],
                    where=reduce_ids(table.id, sub)))
        transaction.commit()

        if pending:
            with quick_commits(cursor):
                cls._send(pending)
        cls._complete(ids)

    @classmethod
    def _lease(cls, ids):
        """Keep other runs away from the emails of ids for a while

        The statements of the emails of a batch find them by their ids
        alone: the rows deleted once sent stay in the indexes until the table
        is vacuumed, and a condition on the state could make the database
        read them all."""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        until = datetime.datetime.now() + send_email.LEASE
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.update(
                    [table.next_attempt], [until],
                    where=reduce_ids(table.id, sub)))

    @classmethod
    def _send(cls, ids):
        """Send the leased emails of ids

        A refusal that is not the recipient's (the server refuses the
        sender or the login) pauses the activities concerned and their
        emails wait for them, none is consumed."""
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        table = cls.__table__()
        answered = set()
        activity_of = cls._activities(ids)
        faults, held = {}, []
        # a slow server may take longer than the lease: renew it half-way
        lease = send_email.LEASE
        renewal = datetime.datetime.now() + lease / 2

        def hold(email_ids, error):
            for email_id in email_ids:
                faults.setdefault(activity_of[email_id], error)
                held.append(email_id)
                answered.add(email_id)

        try:
            with smtp.Transport(cls._smtp_server) as transport:
                for sub in grouped_slice(ids, 100):
                    cursor.execute(*table.select(
                            table.id, table.sender, table.address,
                            table.message, table.attempts, table.state,
                            where=reduce_ids(table.id, sub),
                            order_by=[table.id.asc]))
                    rows = [r[:-1] for r in cursor if r[-1] == 'pending']
                    for email_id, sender, address, message, attempts in rows:
                        if activity_of[email_id] in faults:
                            hold([email_id], None)
                            continue
                        if datetime.datetime.now() >= renewal:
                            cls._lease([i for i in ids if i not in answered])
                            renewal = datetime.datetime.now() + lease / 2
                        reply = transport.send(
                            sender, address, bytes(message))
                        if reply.outcome == smtp.LOGIN_REFUSED:
                            hold([i for i in ids if i not in answered],
                                gettext('marketing_automation'
                                    '.msg_activity_fault_smtp_login',
                                    error=reply.error))
                            return
                        elif reply.outcome == smtp.UNREACHABLE:
                            # the server cannot be reached: no recipient's
                            # fault, so no email gives up for it
                            cls._postpone(
                                [i for i in ids if i not in answered],
                                reply.error, final=False)
                            return
                        elif reply.outcome == smtp.SENDER_REFUSED:
                            hold([email_id], gettext(
                                    'marketing_automation'
                                    '.msg_activity_fault_smtp_sender',
                                    sender=sender,
                                    activity=Activity(
                                        activity_of[email_id]).rec_name,
                                    error=reply.error))
                            continue
                        elif reply.outcome == smtp.DEFERRED:
                            cls._postpone([email_id], reply.error)
                        elif reply.outcome == smtp.REFUSED:
                            cursor.execute(*table.update(
                                    [table.state, table.error,
                                        table.attempts],
                                    ['failed', reply.error, attempts + 1],
                                    where=table.id == email_id))
                        else:
                            cursor.execute(*table.update(
                                    [table.state, table.error],
                                    ['sent', Null],
                                    where=table.id == email_id))
                        answered.add(email_id)
                        transaction.commit()
        finally:
            if held:
                cls._hold(held)
                Activity.set_faults(
                    {a: e for a, e in faults.items() if e})
                transaction.commit()

    @classmethod
    def _smtp_server(cls):
        """The connection to the mail server that sends the messages, with
        the hook of the tests of Tryton's own module (see smtp.smtp_server)
        """
        return smtp.smtp_server()

    @classmethod
    def _activities(cls, ids):
        "The activity of each email of ids"
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        table = cls.__table__()
        record_activity = RecordActivity.__table__()
        cursor = Transaction().connection.cursor()
        activities = {}
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.join(record_activity,
                    condition=table.record_activity == record_activity.id
                    ).select(
                    table.id, record_activity.activity,
                    where=reduce_ids(table.id, sub)))
            activities.update(cursor)
        return activities

    @classmethod
    def _hold(cls, ids):
        """Let the pending emails of ids go as soon as their activity runs
        again, their attempts untouched: the failure was not theirs"""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        now = datetime.datetime.now().replace(microsecond=0)
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.update(
                    [table.next_attempt], [now],
                    where=reduce_ids(table.id, sub)))

    @classmethod
    def _postpone(cls, ids, error, final=True):
        """Let the pending emails wait for a later attempt

        With final, an email that has had its attempts fails."""
        transaction = Transaction()
        table = cls.__table__()
        cursor = transaction.connection.cursor()
        now = datetime.datetime.now()
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.select(
                    table.id, table.attempts, table.state,
                    where=reduce_ids(table.id, sub)))
            for email_id, attempts, state in cursor.fetchall():
                if state != 'pending':
                    continue
                attempts += 1
                if final and attempts >= MAX_ATTEMPTS:
                    values = ['failed', attempts, now, gettext(
                            'marketing_automation.msg_email_gave_up',
                            attempts=attempts, error=error)]
                else:
                    values = [
                        'pending', attempts, now + delivery_backoff(attempts),
                        error]
                cursor.execute(*table.update(
                        [table.state, table.attempts, table.next_attempt,
                            table.error],
                        values, where=table.id == email_id))
        transaction.commit()

    @classmethod
    def _complete(cls, ids):
        """Complete the record activities of the sent and failed emails and
        show the errors of the postponed ones"""
        pool = Pool()
        IrEmail = pool.get('ir.email')
        RecordActivity = pool.get('marketing.automation.record.activity')
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        table = cls.__table__()
        finished = []
        postponed = defaultdict(list)
        for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.select(
                    table.id, table.record_activity, table.state, table.error,
                    where=reduce_ids(table.id, sub)))
            for email_id, record_activity, state, error in cursor:
                if state == 'pending':
                    if error:
                        postponed[error].append(record_activity)
                else:
                    finished.append((email_id, record_activity, state, error))
        record_activity_table = RecordActivity.__table__()
        for error, record_activities in postponed.items():
            for sub in grouped_slice(
                    record_activities, backend.MAX_QUERY_PARAMS):
                cursor.execute(*record_activity_table.update(
                        [record_activity_table.error], [error],
                        where=reduce_ids(record_activity_table.id, sub)))
        if finished:
            IrEmail.log_marketing_emails(
                [f[0] for f in finished if f[2] == 'sent'])
            RecordActivity.complete(
                {f[1]: f[3] for f in finished},
                flags={'email_sent': [f[1] for f in finished
                        if f[2] == 'sent']})
            for sub in grouped_slice(
                    [f[0] for f in finished], backend.MAX_QUERY_PARAMS):
                cursor.execute(*table.delete(
                        where=reduce_ids(table.id, sub)))
        transaction.commit()

    @classmethod
    def purge(cls):
        """Forget the messages and the tracked links once they served: the
        figures stay on the record activities"""
        pool = Pool()
        ShortenedURL = pool.get('web.shortened_url')
        cls.purge_messages()
        ShortenedURL.purge_tracking()

    @classmethod
    def purge_messages(cls):
        """Blank the messages of the outbox that the mail server answered,
        and the subject and body of the emails logged, more than [marketing]
        message_retention days ago (30 by default)"""
        pool = Pool()
        IrEmail = pool.get('ir.email')
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        days = config.getint('marketing', 'message_retention', default=30)
        until = tools.now() - datetime.timedelta(days=days)
        # an answered message waits only for its entry to be complete
        for ids in id_batches(table, (table.state != 'pending')
                & (table.message != Null) & (table.create_date < until)):
            for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
                cursor.execute(*table.update(
                        [table.message], [Null],
                        where=reduce_ids(table.id, sub)))
        IrEmail.purge_marketing_messages(until)
