# SPDX-License-Identifier: GPL-3.0-or-later
"""The events of the emails as people made them, not machines.

Every request that reaches a tracked link of an email (a click, the image of
an open, or the trap link that only scanners follow) is written in a ledger
(``marketing.automation.event``) with a verdict:

``human``
   a person made it: it fires its event (the email opened or clicked);
``machine``
   a link scanner or a security gateway made it: it fires nothing;
``proxy``
   a privacy proxy fetched the image of an open at delivery (Apple Mail
   Privacy Protection): it fires the open only for a scenario that asks so;
``undecided``
   not known yet: it fires nothing until a rule decides.

The rules (each configurable in ``[marketing]``):

- the trap link marks the other requests of its message within
  ``event_trap_window`` seconds as machine;
- ``event_burst_links`` different links of a message requested within
  ``event_burst_window`` seconds are machine;
- a request within ``event_early_window`` seconds after the delivery stays
  undecided until a later human request of the same message confirms it;
- the user agent of a known scanner or library is machine, Apple's privacy
  proxy fetching the image within ``event_proxy_window`` of the delivery is
  proxy.

A request answers at once, whatever its verdict: the redirect is never
delayed.  What it triggers is decided set-based by ``Event.decide``, from the
process cron (and from the next request of the same message), once a request
is older than the trap window, so that a trap hit after it can still count.
"""
import datetime
import hashlib
import hmac
import ipaddress
import re
from collections import defaultdict, namedtuple

from sql import Literal, Null
from sql.aggregate import Count, Max
from sql.conditionals import Case

from trytond import backend
from trytond.config import config
from trytond.model import Index, ModelSQL, ModelView, fields
from trytond.pool import Pool, PoolMeta
from trytond.pyson import Eval
from trytond.tools import grouped_slice, reduce_ids
from trytond.transaction import Transaction

from . import tools
from .gates import Gate, Verdict
from .tools import id_batches

VERDICTS = [
    ('human', "Human"),
    ('machine', "Machine"),
    ('proxy', "Proxy"),
    ('undecided', "Undecided"),
    ]
KINDS = [
    ('open', "Open"),
    ('click', "Click"),
    ('trap', "Trap"),
    ]
RULES = [
    (None, ""),
    ('user_agent', "User Agent"),
    ('trap', "Trap Link"),
    ('burst', "Burst of Links"),
    ('early', "At Delivery"),
    ('proxy', "Privacy Proxy"),
    ('confirmed', "Confirmed by a Later Request"),
    ('no_sign', "No Sign of a Machine"),
    ('immediate', "Not Classified"),
    ]

# the events of the email that a request of each kind makes happen
# the events that a request of a kind makes happen (a click makes its email
# opened too), and the method of the record activities that it calls
_EVENTS = {
    'open': ('email_opened',),
    'click': ('email_opened', 'email_clicked'),
    }
_METHODS = {
    'open': 'on_email_opened',
    'click': 'on_email_clicked',
    }

Visitor = namedtuple('Visitor', ['user_agent', 'address'])
Visitor.__doc__ = """Who sent a request to a tracked link: its User-Agent
header and its network address, as the route received them"""

# The families of user agents, first match wins: each pattern applies to the
# User-Agent header (case-insensitive).
_FAMILIES = [
    ('empty', re.compile(r'^\s*$')),
    # Apple Mail Privacy Protection fetches the images with a bare Mozilla
    ('apple_proxy', re.compile(r'^Mozilla/5\.0$')),
    ('google_proxy', re.compile(r'GoogleImageProxy')),
    ('yahoo_proxy', re.compile(r'YahooMailProxy')),
    ('scanner', re.compile(
            r'bot\b|crawl|spider|scan|preview|proofpoint|mimecast|barracuda'
            r'|safelinks|defender|symantec|forcepoint|trend ?micro'
            r'|headless|phantomjs|slurp|facebookexternalhit|linkexpander',
            re.IGNORECASE)),
    ('library', re.compile(
            r'^(curl|wget|python|java|go-http|okhttp|libwww|apache-http'
            r'|axios|node-fetch|werkzeug|httpclient|ruby|perl|php)',
            re.IGNORECASE)),
    ('mail_client', re.compile(
            r'Thunderbird|Outlook|Microsoft Office|Airmail|Mailbird'
            r'|eM Client|Postbox', re.IGNORECASE)),
    ('browser', re.compile(r'^Mozilla/|^Opera/', re.IGNORECASE)),
    ]
MACHINE_FAMILIES = {'scanner', 'library', 'empty'}
FAMILIES = [(None, "")] + [(f, f.replace('_', ' ').title()) for f, _ in [
        *_FAMILIES, ('other', None)]]


def user_agent_family(user_agent):
    "The family of a User-Agent header: browser, scanner, apple_proxy…"
    user_agent = (user_agent or '')[:500]
    for family, pattern in _FAMILIES:
        if pattern.search(user_agent):
            return family
    return 'other'


def network_key(secret, address):
    """A key of the network of address (its /24 or its IPv6 /48), keyed by
    secret: requests from one network can be grouped, and no address can
    be read back from it"""
    try:
        ip = ipaddress.ip_address((address or '').strip())
    except ValueError:
        return None
    prefix = 24 if ip.version == 4 else 48
    network = ipaddress.ip_network(f'{ip}/{prefix}', strict=False)
    return hmac.new(
        secret.encode('utf-8'), str(network).encode('ascii'),
        hashlib.sha256).hexdigest()[:16]


def _seconds(option, default):
    return datetime.timedelta(seconds=config.getfloat(
            'marketing', option, default=default))


def classifying():
    """Whether the events are classified; else every request fires its
    event at once, as Tryton's own module does"""
    return config.getboolean(
        'marketing', 'event_classification', default=True)


def ledger_now():
    """The clock of the ledger: when a request comes, when it is decided

    It is the clock of the module, tools.now(), and it is patched alone:
    the tests and the browser test have requests come, and be decided,
    minutes after a delivery (the ledger tells a scanner from a person by
    that delay) while the engine keeps the real time, so that what a
    decision schedules is due at once, as it is on a site where the
    decision comes later than the delivery."""
    return tools.now()


Request = namedtuple('Request', [
        'id', 'record_activity', 'kind', 'url', 'at', 'family', 'verdict'])


def classify(requests, delivered, now):
    """The (verdict, rule) of the undecided requests of one message that can
    be decided at now, by id

    requests are all the Request of the message; delivered is when the
    message was delivered (or None)."""
    trap_window = _seconds('event_trap_window', 120)
    burst_window = _seconds('event_burst_window', 5)
    burst_links = config.getint('marketing', 'event_burst_links', default=3)
    early_window = _seconds('event_early_window', 10)
    traps = [r.at for r in requests if r.kind == 'trap']
    clicks = [r for r in requests if r.kind == 'click']
    decided = {}

    def burst(request):
        links = {c.url for c in clicks
            if abs(c.at - request.at) <= burst_window}
        return len(links) >= burst_links

    def early(request):
        return delivered is not None and (
            request.at - delivered) < early_window

    undecided = [r for r in requests if r.verdict == 'undecided']
    # the machine signs decide at once, whatever the age of the request
    for request in undecided:
        if any(abs(t - request.at) <= trap_window for t in traps):
            decided[request.id] = ('machine', 'trap')
        elif request.kind == 'click' and burst(request):
            decided[request.id] = ('machine', 'burst')
    # without one, a request is human once a trap hit could no longer come
    humans = [r.at for r in requests if r.verdict == 'human']
    for request in sorted(undecided, key=lambda r: r.at):
        if request.id in decided or request.at > now - trap_window:
            continue
        if early(request):
            continue
        decided[request.id] = ('human', 'no_sign')
        humans.append(request.at)
    # a person who came later tells that the early ones were theirs
    for request in undecided:
        if (request.id not in decided and early(request)
                and any(h > request.at + early_window for h in humans)):
            decided[request.id] = ('human', 'confirmed')
    return decided


class Event(ModelSQL, ModelView):
    "A request to a tracked link of an email, and who made it"
    __name__ = 'marketing.automation.event'

    record_activity = fields.Many2One(
        'marketing.automation.record.activity', "Record Activity",
        required=True, ondelete='CASCADE', readonly=True)
    kind = fields.Selection(KINDS, "Kind", required=True, readonly=True)
    url = fields.Many2One(
        'web.shortened_url', "Tracked Link", readonly=True,
        ondelete='SET NULL', help="The tracked link that was requested.")
    link = fields.Function(fields.Char(
            "Link",
            help="Where the link that was clicked leads (empty for an open "
            "or the trap link, and once the tracked link is purged)."),
        'get_link', searcher='search_link')
    at = fields.DateTime("At", required=True, readonly=True)
    user_agent = fields.Selection(
        FAMILIES, "User Agent", readonly=True,
        help="The family of the User-Agent header of the request.")
    network = fields.Char(
        "Network", readonly=True, strip=False,
        help="A key of the network the request came from (its /24, or its "
        "IPv6 /48), that groups the requests without keeping any address.")
    verdict = fields.Selection(
        VERDICTS, "Verdict", required=True, readonly=True)
    rule = fields.Selection(RULES, "Rule", readonly=True,
        help="The rule that gave the verdict.")
    fired = fields.Boolean(
        "Fired", readonly=True,
        help="Whether the request made its event happen.")
    repeats = fields.Integer(
        "Repeats", readonly=True,
        help="The requests of the same link in the same minute beyond the "
        "limit, counted here rather than written.")

    @classmethod
    def __setup__(cls):
        super().__setup__()
        t = cls.__table__()
        cls._sql_indexes.update({
                Index(t,
                    (t.record_activity, Index.Equality()),
                    (t.at, Index.Range())),
                Index(t, (t.at, Index.Range()),
                    where=t.verdict == 'undecided'),
                Index(t, (t.url, Index.Equality()), (t.at, Index.Range())),
                })
        cls._order.insert(0, ('at', 'DESC'))

    @classmethod
    def default_repeats(cls):
        return 0

    @classmethod
    def get_link(cls, events, name):
        pool = Pool()
        ShortenedURL = pool.get('web.shortened_url')
        table = cls.__table__()
        url = ShortenedURL.__table__()
        cursor = Transaction().connection.cursor()
        links = dict.fromkeys(map(int, events))
        for sub in grouped_slice(events):
            cursor.execute(*table.join(url,
                    condition=table.url == url.id).select(
                    table.id, url.redirect_url,
                    where=reduce_ids(table.id, list(map(int, sub)))
                    & (table.kind == 'click')))
            links.update(cursor)
        return links

    @classmethod
    def search_link(cls, name, clause):
        return [('url.redirect_url', *clause[1:]), ('kind', '=', 'click')]

    @classmethod
    def record(cls, url_id, record_activity_id, kind, visitor):
        """Write the request of a tracked link in the ledger and decide what
        can be of its message; return the id of its row (None when it only
        counts as a repeat)"""
        pool = Pool()
        Secret = pool.get('marketing.automation.email.secret')
        RecordActivity = pool.get('marketing.automation.record.activity')
        table = cls.__table__()
        transaction = Transaction()
        cursor = transaction.connection.cursor()
        now = ledger_now()
        visitor = visitor or Visitor(None, None)

        # one link hammered by a stranger does not grow the ledger
        limit = config.getint('marketing', 'event_rate_limit', default=10)
        cursor.execute(*table.select(
                Count(), Max(table.id),
                where=(table.url == url_id)
                & (table.at >= now - datetime.timedelta(minutes=1))))
        count, last = cursor.fetchone()
        if count >= limit:
            cursor.execute(*table.update(
                    [table.repeats], [table.repeats + 1],
                    where=table.id == last))
            return None

        family = user_agent_family(visitor.user_agent)
        verdict, rule = 'undecided', None
        if kind == 'trap':
            verdict, rule = 'machine', 'trap'
        elif family in MACHINE_FAMILIES:
            verdict, rule = 'machine', 'user_agent'
        elif kind == 'open' and family == 'apple_proxy':
            delivered = cls._delivered([record_activity_id]).get(
                record_activity_id)
            window = _seconds('event_proxy_window', 3600)
            if delivered is None or now - delivered <= window:
                verdict, rule = 'proxy', 'proxy'
        immediate = not classifying()
        if immediate and verdict == 'undecided':
            verdict, rule = 'human', 'immediate'
        columns = [table.create_uid, table.create_date, table.record_activity,
            table.kind, table.url, table.at, table.user_agent, table.network,
            table.verdict, table.rule, table.fired, table.repeats]
        values = [transaction.user, now, record_activity_id, kind, url_id,
            now, family, network_key(Secret.get(), visitor.address),
            verdict, rule, immediate, 0]
        if transaction.database.has_returning():
            cursor.execute(*table.insert(
                    columns, [values], returning=[table.id]))
            event_id, = cursor.fetchone()
        else:
            cursor.execute(*table.insert(columns, [values]))
            cursor.execute(*table.select(
                    Max(table.id), where=table.url == url_id))
            event_id, = cursor.fetchone()
        if immediate:
            if kind != 'trap':
                getattr(RecordActivity, _METHODS[kind])(
                    RecordActivity.browse([record_activity_id]))
        else:
            cls.decide([record_activity_id], now=now)
        if verdict in {'machine', 'proxy'}:
            cls._flag([record_activity_id], [verdict])
        return event_id

    @classmethod
    def _delivered(cls, record_activity_ids):
        "When the emails of the record activities were delivered"
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        table = RecordActivity.__table__()
        cursor = Transaction().connection.cursor()
        delivered = {}
        for sub in grouped_slice(
                record_activity_ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.select(
                    table.id, table.at,
                    where=reduce_ids(table.id, sub)
                    & (table.state == 'done')))
            delivered.update(cursor)
        return delivered

    @classmethod
    def decide(cls, record_activity_ids=None, now=None):
        """Give their verdict to the undecided requests that can be decided
        (of the record activities, or all of them) and fire the events of
        those that are human, set-based"""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        now = now or ledger_now()
        if record_activity_ids is None:
            # an early request that nobody confirms stays undecided: it is
            # looked at for a month, not forever
            cursor.execute(*table.select(
                    table.record_activity,
                    where=(table.verdict == 'undecided')
                    & (table.at >= now - datetime.timedelta(days=30)),
                    group_by=[table.record_activity]))
            record_activity_ids = [i for i, in cursor]
        for sub in grouped_slice(
                record_activity_ids, backend.MAX_QUERY_PARAMS):
            cls._decide(list(sub), now)

    @classmethod
    def _decide(cls, record_activity_ids, now):
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        delivered = cls._delivered(record_activity_ids)
        by_message = defaultdict(list)
        cursor.execute(*table.select(
                table.id, table.record_activity, table.kind, table.url,
                table.at, table.user_agent, table.verdict,
                where=reduce_ids(table.record_activity, record_activity_ids),
                order_by=[table.at, table.id]))
        for row in cursor:
            request = Request(*row)
            by_message[request.record_activity].append(request)
        groups = defaultdict(list)
        for record_activity_id, requests in by_message.items():
            verdicts = classify(
                requests, delivered.get(record_activity_id), now)
            for event_id, verdict in verdicts.items():
                groups[verdict].append(event_id)
        humans = []
        for (verdict, rule), ids in groups.items():
            for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
                cursor.execute(*table.update(
                        [table.verdict, table.rule], [verdict, rule],
                        where=reduce_ids(table.id, sub)
                        & (table.verdict == 'undecided')))
            if verdict == 'human':
                humans.extend(ids)
        cls.fire(humans)
        if any(v != 'human' for v, _ in groups):
            cls._flag(record_activity_ids)

    @classmethod
    def fire(cls, event_ids):
        """Make the events of the requests happen: a click makes its email
        clicked (and opened), an open opened, set-based"""
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        by_events = defaultdict(set)
        for sub in grouped_slice(event_ids, backend.MAX_QUERY_PARAMS):
            cursor.execute(*table.select(
                    table.id, table.record_activity, table.kind,
                    where=reduce_ids(table.id, sub)
                    & (table.fired == Literal(False))))
            fired = []
            for event_id, record_activity_id, kind in cursor.fetchall():
                fired.append(event_id)
                if kind in _METHODS:
                    by_events[_METHODS[kind]].add(record_activity_id)
            if fired:
                cursor.execute(*table.update(
                        [table.fired], [True],
                        where=reduce_ids(table.id, fired)))
        for method, record_activity_ids in by_events.items():
            getattr(RecordActivity, method)(
                RecordActivity.browse(sorted(record_activity_ids)))

    @classmethod
    def _flag(cls, record_activity_ids, verdicts=('machine', 'proxy')):
        """Keep on the record activities whether a machine or a privacy
        proxy reached their email, so that the figures outlive the ledger;
        and fire the proxy opens of the scenarios that count them

        Only the verdicts given are looked for."""
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        Record = pool.get('marketing.automation.record')
        Scenario = pool.get('marketing.automation.scenario')
        table = cls.__table__()
        record_activity = RecordActivity.__table__()
        record = Record.__table__()
        scenario = Scenario.__table__()
        cursor = Transaction().connection.cursor()
        for verdict, column in [
                ('machine', record_activity.email_machine),
                ('proxy', record_activity.email_proxy_opened)]:
            if verdict not in verdicts:
                continue
            cursor.execute(*record_activity.update(
                    [column], [True],
                    where=reduce_ids(record_activity.id, record_activity_ids)
                    & ((column == Null) | (column == Literal(False)))
                    & record_activity.id.in_(table.select(
                            table.record_activity,
                            where=table.verdict == verdict))))
        if 'proxy' not in verdicts:
            return
        cursor.execute(*table.join(record_activity,
                condition=table.record_activity == record_activity.id
                ).join(record,
                condition=record_activity.record == record.id
                ).join(scenario,
                condition=record.scenario == scenario.id
                ).select(
                table.id,
                where=reduce_ids(table.record_activity, record_activity_ids)
                & (table.verdict == 'proxy')
                & (table.fired == Literal(False))
                & (scenario.proxy_opens == Literal(True))))
        cls.fire([i for i, in cursor])

    @classmethod
    def purge(cls):
        """Delete the requests older than [marketing] event_retention days
        (400 by default); their figures stay on the record activities"""
        table = cls.__table__()
        cursor = Transaction().connection.cursor()
        days = config.getint('marketing', 'event_retention', default=400)
        until = ledger_now() - datetime.timedelta(days=days)
        for ids in id_batches(table, table.at < until):
            for sub in grouped_slice(ids, backend.MAX_QUERY_PARAMS):
                cursor.execute(*table.delete(where=reduce_ids(table.id, sub)))


class Scenario(metaclass=PoolMeta):
    __name__ = 'marketing.automation.scenario'

    proxy_opens = fields.Boolean(
        "Count Proxy Opens",
        help="If checked, the images that a privacy proxy fetches when an "
        "email is delivered (Apple Mail) count as opens: they make the "
        "activities waiting for an open due.")

    @classmethod
    def default_proxy_opens(cls):
        return False


class RecordActivity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.record.activity'

    _email_states = {
        'invisible': Eval('activity_action') != 'send_email',
        }

    email_machine = fields.Boolean(
        "Email Reached by a Machine", readonly=True, states=_email_states,
        help="Whether a link scanner or a gateway requested the links or "
        "the image of the email.")
    email_proxy_opened = fields.Boolean(
        "Email Fetched by a Proxy", readonly=True, states=_email_states,
        help="Whether a privacy proxy fetched the image of the email.")
    events = fields.One2Many(
        'marketing.automation.event', 'record_activity', "Events",
        readonly=True, states=_email_states)

    del _email_states

    @classmethod
    def default_email_machine(cls):
        return False

    @classmethod
    def default_email_proxy_opened(cls):
        return False

    @classmethod
    def _new_values(cls):
        values = super()._new_values()
        values.update(email_machine=False, email_proxy_opened=False)
        return values

    @classmethod
    def gates(cls):
        return {**super().gates(), EventGate.name: EventGate}


class EventGate(Gate):
    """Holds the entries that wait for an event not to happen while a
    request of their parent's email that could make it happen is still
    undecided: they go, or are cancelled, once it is decided

    An undecided request younger than the trap window may be a person's
    click; older, it is one at delivery that nobody confirmed, and it holds
    nothing."""
    name = 'event'

    @classmethod
    def periodic(cls, RecordActivity, now):
        "Decide the requests of the emails before the due entries go"
        Pool().get('marketing.automation.event').decide()

    def applies(self):
        return classifying()

    def judge(self, entries):
        pool = Pool()
        Activity = pool.get('marketing.automation.activity')
        Event = pool.get('marketing.automation.event')
        verdict = Verdict()
        event = Event.__table__()
        parent = self.batch.RecordActivity.__table__()
        cursor = Transaction().connection.cursor()
        since = self.batch.now - _seconds('event_trap_window', 120)
        by_activity = defaultdict(list)
        for entry in entries:
            by_activity[self.batch.activity_of[entry.id]].append(entry)
        for activity in Activity.browse(list(by_activity)):
            if not (activity.negative and activity.event
                    and isinstance(activity.parent, Activity)):
                continue
            kinds = [k for k, events in _EVENTS.items()
                if activity.event in events]
            if not kinds:
                # an event of another action, which no request makes
                continue
            held = set()
            for sub in grouped_slice(
                    [e.record for e in by_activity[activity.id]],
                    backend.MAX_QUERY_PARAMS):
                cursor.execute(*event.join(parent,
                        condition=event.record_activity == parent.id
                        ).select(parent.record,
                        where=(parent.activity == activity.parent.id)
                        & reduce_ids(parent.record, sub)
                        & (event.verdict == 'undecided')
                        & event.kind.in_(kinds)
                        & (event.at > since),
                        group_by=[parent.record]))
                held.update(r for r, in cursor)
            for entry in by_activity[activity.id]:
                if entry.record in held:
                    verdict.hold(entry.id)
        return verdict


class Activity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.activity'

    _email_states = {
        'invisible': Eval('action') != 'send_email',
        }

    email_machine = fields.Function(
        fields.Integer(
            "Emails Reached by a Machine", states=_email_states,
            help="The emails sent whose links or image a scanner "
            "requested."),
        'get_event_statistics')
    email_proxy_opened = fields.Function(
        fields.Integer(
            "Emails Fetched by a Proxy", states=_email_states,
            help="The emails sent whose image a privacy proxy fetched."),
        'get_event_statistics')

    del _email_states

    @classmethod
    def get_event_statistics(cls, activities, names):
        pool = Pool()
        RecordActivity = pool.get('marketing.automation.record.activity')
        record_activity = RecordActivity.__table__()
        cursor = Transaction().connection.cursor()
        result = {n: {a.id: 0 for a in activities} for n in names}
        sent = record_activity.email_sent == Literal(True)
        for sub in grouped_slice(activities, backend.MAX_QUERY_PARAMS):
            cursor.execute(*record_activity.select(
                    record_activity.activity,
                    *[Count(Case((sent & getattr(record_activity, n), 1)))
                        for n in names],
                    where=reduce_ids(
                        record_activity.activity, [a.id for a in sub])
                    & (record_activity.state == 'done'),
                    group_by=[record_activity.activity]))
            for activity_id, *counts in cursor:
                for name, count in zip(names, counts):
                    result[name][activity_id] = count or 0
        return result


class ReportingActivity(metaclass=PoolMeta):
    __name__ = 'marketing.automation.reporting.activity'

    _email_states = {
        'invisible': Eval('activity_action') != 'send_email',
        }

    email_machine = fields.Integer(
        "Emails Reached by a Machine", states=_email_states,
        help="The emails sent whose links or image a scanner requested.")
    email_proxy_opened = fields.Integer(
        "Emails Fetched by a Proxy", states=_email_states,
        help="The emails sent whose image a privacy proxy fetched.")

    del _email_states

    @classmethod
    def _columns(cls, tables, withs):
        record_activity = tables['record_activity']
        sent = record_activity.email_sent == Literal(True)
        return super()._columns(tables, withs) + [
            Count(Case((sent & record_activity.email_machine, 1))).as_(
                'email_machine'),
            Count(Case((sent & record_activity.email_proxy_opened, 1))).as_(
                'email_proxy_opened'),
            ]
