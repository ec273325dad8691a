# SPDX-License-Identifier: GPL-3.0-or-later
"""A marketer sees an email before its recipients do.

Mary, of the Marketing group, logs in over JSON-RPC as the Tryton client
does.  From an activity she opens the preview: the email of a record of the
scenario in its language, with its links going straight to their targets;
she opens its HTML in the browser through the preview route, and sends it
to herself as a test email, which a real SMTP server receives and a mail
client reads.  Nothing of this creates a record, an entry, a tracked link
or an email of the scenario, and nothing is counted.  On the scenario she
reads who will really be reached, and opens each list.

Tom, of no group, can do none of it, and the URLs of the previews work only
for what they were made for, and not for long.
"""
import base64
import datetime as dt
import json
import random
import string
import threading
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import lxml.html
from sql import Literal
from werkzeug.test import Client

from trytond import backend
from trytond.modules.marketing_automation import \
    marketing_automation_preview as preview
from trytond.modules.marketing_automation import render_box
from trytond.modules.marketing_automation import tools as module_tools
from trytond.pool import Pool
from trytond.pyson import PYSONDecoder
from trytond.tests.test_tryton import (
    DB_NAME, TestCase, activate_module, drop_db)
from trytond.transaction import Transaction
from trytond.wsgi import app

from .tools import (
    BASE, DB64, GOODBYE, OFFER, ONE_CLICK, SENDER, Mail, RPCError,
    SendingTestMixin, Session, committed, create_parties, encode, inspecting,
    message, page_text, shared_database, welcome)

WIZARD = 'marketing.automation.activity.preview'
ACTIVITY = 'marketing.automation.activity'
PASSWORDS = {
    'mary': 'Hx3&nB8*tR5^yJ1%',
    'tom': 'Qv7#mZ2@pL9$wK4!',
    }


class Marketer(Session):
    "A user of the web client, calling the server over JSON-RPC"

    def open_preview(self, activity_id):
        """Click the Preview button of the activity: return the session of
        the wizard and the values its form shows"""
        context = {
            'active_model': ACTIVITY,
            'active_id': activity_id,
            'active_ids': [activity_id],
            }
        action = self.call(
            f'model.{ACTIVITY}.preview', [activity_id], {})
        context['action_id'] = action
        self.context = context
        self.session_id, start, _ = self.call(
            f'wizard.{WIZARD}.create', context)
        return self.execute(start, {})

    def execute(self, state, values):
        "Press the button of state with the form's values"
        result = self.call(
            f'wizard.{WIZARD}.execute', self.session_id,
            {'start': values} if values else {}, state, self.context)
        self.actions = result.get('actions', [])
        view = result.get('view')
        if view:
            return {**view['defaults'], **view['values']}

    def change(self, values, field):
        "Change a field of the wizard's form as the client does"
        changes = self.call(
            f'model.{WIZARD}.start.on_change', values, [field],
            self.context)
        return {**values, **changes}


def form(values):
    "The values of the wizard's form that the client sends back"
    return {k: v for k, v in values.items() if '.' not in k}


class PreviewTestCase(SendingTestMixin, TestCase):
    "The preview and the test emails of an activity, and the audience"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')
        with committed(user=0):
            pool = Pool()
            Lang = pool.get('ir.lang')
            User = pool.get('res.user')
            ModelData = pool.get('ir.model.data')
            french, = Lang.search([('code', '=', 'fr')])
            Lang.write([french], {'translatable': True})
            marketing = ModelData.get_id('marketing', 'group_marketing')
            mary, tom = User.create([{
                        'name': "Mary Marketer",
                        'login': 'mary',
                        'password': PASSWORDS['mary'],
                        'email': 'mary@example.com',
                        'groups': [('add', [marketing])],
                        }, {
                        'name': "Tom Outsider",
                        'login': 'tom',
                        'password': PASSWORDS['tom'],
                        'email': 'tom@example.com',
                        }])
            cls.mary, cls.tom = mary.id, tom.id

    def setUp(self):
        super().setUp()
        self.start_sending({
                ('email', 'from'): 'root@server.example.com',
                })

    # Setting things up

    def login(self, login='mary', database=DB_NAME):
        return Marketer(login, PASSWORDS[login], database)

    def named(self, name):
        return f'{name} {self._testMethodName}'

    def create_scenario(self, party_ids, activity=None, **values):
        """Create a draft scenario on the parties with the activity (the
        welcome email by default); return the ids of both"""
        activity = dict(activity or welcome())
        activity['name'] = self.named(activity['name'])
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            scenario, = Scenario.create([{
                        'name': self.named("Spring"),
                        'model': 'party.party',
                        'domain': encode([('id', 'in', party_ids)]),
                        'activities': [('create', [activity])],
                        **values,
                        }])
            return scenario.id, scenario.activities[0].id

    def store(self, activity_id, **values):
        """Write values into the activity and its translations, as saved
        before the checks"""
        with committed():
            pool = Pool()
            Activity = pool.get(ACTIVITY)
            Translation = pool.get('ir.translation')
            table = Activity.__table__()
            translation = Translation.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.update(
                    [getattr(table, f) for f in values],
                    list(values.values()),
                    where=table.id == activity_id))
            for field, value in values.items():
                cursor.execute(*translation.update(
                        [translation.src, translation.value],
                        [value, value],
                        where=(translation.name == f'{ACTIVITY},{field}')
                        & (translation.res_id == activity_id)))

    def translate(self, activity_id, **values):
        "Write the French version of the fields of the activity"
        with committed(context={'language': 'fr'}):
            Activity = Pool().get(ACTIVITY)
            Activity.write([Activity(activity_id)], values)

    def snapshot(self):
        "How many rows of what a preview must not create"
        with inspecting():
            pool = Pool()
            return {
                name: pool.get(name).search([], count=True)
                for name in [
                    'marketing.automation.record',
                    'marketing.automation.record.activity',
                    'marketing.automation.email',
                    'web.shortened_url',
                    'web.shortened_url.access',
                    'party.party-unsubscribed-marketing.automation.scenario',
                    ]}

    def logged_tests(self, activity_id):
        "The test emails of the activity in the log of the emails"
        with inspecting():
            IrEmail = Pool().get('ir.email')
            return [(
                    e.create_uid.login, e.recipients, e.subject,
                    [a.address for a in e.addresses],
                    e.marketing_automation_record)
                for e in IrEmail.search([
                        ('marketing_automation_activity', '=', activity_id),
                        ('marketing_automation_test', '=', True),
                        ], order=[('id', 'ASC')])]

    def statistics(self, scenario_id, activity_id):
        "The figures of the scenario, the activity and their reporting"
        with inspecting():
            pool = Pool()
            Scenario = pool.get('marketing.automation.scenario')
            Activity = pool.get(ACTIVITY)
            ReportingScenario = pool.get(
                'marketing.automation.reporting.scenario')
            ReportingActivity = pool.get(
                'marketing.automation.reporting.activity')
            scenario = Scenario(scenario_id)
            activity = Activity(activity_id)
            return (
                scenario.record_count_blocked, activity.record_count,
                activity.email_sent, activity.email_opened,
                activity.email_clicked,
                ReportingScenario.search(
                    [('scenario', '=', scenario_id)], count=True),
                ReportingActivity.search(
                    [('activity', '=', activity_id)], count=True))

    def assertClientError(self, response, status=None):
        if status is not None:
            self.assertEqual(response.status_code, status)
        self.assertGreaterEqual(response.status_code, 400)
        self.assertLess(response.status_code, 500)

    # The preview

    def test_preview_shows_the_email_of_the_first_record(self):
        "The first record of the domain, in its language, as it gets it"
        ann, bea = create_parties(
            ("Ann Archer", 'ann@example.com'),
            ("Béa Blanc", 'bea@example.fr', 'fr'))
        scenario, activity = self.create_scenario([ann, bea])
        self.translate(
            activity, email_title="Bienvenue ${record.name}",
            email_template=(
                '<p>Bonjour ${record.name},</p>'
                '<p><a href="https://shop.example.com/fr">Nos offres</a></p>'
                '<p><a href="unsubscribe">Se désabonner</a></p>'))
        before = self.snapshot()
        mary = self.login()

        values = mary.open_preview(activity)

        self.assertEqual(values['record'], f'party.party,{ann}')
        self.assertEqual(values['language.'].get('rec_name'), 'English')
        self.assertEqual(values['subject'], "Welcome Ann Archer")
        self.assertEqual(values['sender'], SENDER)
        self.assertEqual(values['to'], "Ann Archer <ann@example.com>")
        self.assertIn("Hello Ann Archer,", values['text'])
        self.assertIn(f"See our offers ({OFFER})", values['text'])
        self.assertFalse(values.get('error'))
        links = values['links'].splitlines()
        self.assertEqual(links, [
                f"See our offers: {OFFER}",
                "Write to us: mailto:help@example.com",
                "Unsubscribe: " + message('msg_preview_unsubscribe'),
                "Leave for good: " + message(
                    'msg_preview_unsubscribe_next', next=GOODBYE),
                ])
        self.assertEqual(values['test_addresses'], 'mary@example.com')

        # Béa reads French
        values = mary.change(
            {**form(values), 'record': f'party.party,{bea}'}, 'record')
        self.assertEqual(values['subject'], "Bienvenue Béa Blanc")
        self.assertEqual(values['to'], "Béa Blanc <bea@example.fr>")
        self.assertIn("Nos offres (https://shop.example.com/fr)",
            values['text'])
        with inspecting():
            Lang = Pool().get('ir.lang')
            self.assertEqual(Lang(values['language']).code, 'fr')

        # in English all the same
        with inspecting():
            english, = Pool().get('ir.lang').search([('code', '=', 'en')])
            english = english.id
        values = mary.change(
            {**form(values), 'language': english}, 'language')
        self.assertEqual(values['subject'], "Welcome Béa Blanc")
        # the choices stay when the form comes back
        values = mary.execute('open_', form(values))
        self.assertEqual(
            (values['record'], values['language'], values['subject']),
            (f'party.party,{bea}', english, "Welcome Béa Blanc"))

        self.assertEqual(self.snapshot(), before)
        self.assertEqual(self.smtp.received(), [])
        self.assertEqual(self.logged_tests(activity), [])

    def test_preview_of_a_record_without_address(self):
        "The record without an address would get nothing: it is said"
        zoe, = create_parties(("Zoé Zeller", None))
        _, activity = self.create_scenario([zoe])
        values = self.login().open_preview(activity)
        self.assertEqual(values['record'], f'party.party,{zoe}')
        self.assertEqual(
            values['error'],
            message('msg_email_no_address', party="Zoé Zeller"))
        self.assertFalse(values['subject'])

    def test_preview_in_the_browser(self):
        "The HTML part, served to the marketer with a signed token"
        ann, = create_parties(("Ann Archer", 'ann@example.com'))
        _, activity = self.create_scenario([ann])
        before = self.snapshot()
        mary = self.login()
        values = mary.open_preview(activity)

        again = mary.execute('open_', form(values))

        # the form stays, with the same choices
        self.assertEqual(again['record'], values['record'])
        (action, _), = mary.actions
        self.assertEqual(action['type'], 'ir.action.url')
        url = urlsplit(action['url'])
        self.assertEqual(
            f'{url.scheme}://{url.netloc}{url.path}',
            f'{BASE}/m/{DB64}/preview')
        response = self.client.get(f'{url.path}?{url.query}')
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.mimetype, 'text/html')
        self.assertEqual(response.headers['Cache-Control'], 'no-store')
        self.assertEqual(response.headers['X-Robots-Tag'], 'noindex')
        self.assertEqual(response.headers['Referrer-Policy'], 'no-referrer')
        self.assertTrue(response.headers['Content-Security-Policy']
            .startswith('sandbox '))
        document = lxml.html.document_fromstring(
            response.get_data(as_text=True))
        links = {
            ' '.join(a.text_content().split()): a.get('href')
            for a in document.iter('a') if a.get('href')}
        self.assertEqual(links["See our offers"], OFFER)
        self.assertEqual(links["Write to us"], 'mailto:help@example.com')
        self.assertTrue(links["Unsubscribe"].startswith(
                f'{BASE}/m/{DB64}/unsubscribe/test?t='))
        images = [img.get('src') for img in document.iter('img')]
        self.assertEqual(images[-1], f'{BASE}/m/empty.gif')
        self.assertFalse(
            [u for u in [*links.values(), *images] if '/s/' in u],
            msg="a tracked link in the preview")
        self.assertIn("Hello Ann Archer,", document.text_content())

        # the same URL does not work for another record nor after its time
        token = parse_qs(url.query)['t'][0]
        payload, signature = token.split('.')
        values = json.loads(base64.urlsafe_b64decode(
                payload + '=' * (-len(payload) % 4)))
        values[2] = 'party.party,%s' % (ann + 1)
        forged = base64.urlsafe_b64encode(
            json.dumps(values).encode()).decode().rstrip('=')
        self.assertClientError(self.client.get(
                f'{url.path}?t={forged}.{signature}'), 404)
        self.assertClientError(self.client.get(
                f'{url.path}?t={token[:-2]}'), 404)
        self.assertClientError(self.client.get(url.path), 404)
        # nor on another database of the server
        other = base64.urlsafe_b64encode(b'nowhere').decode().rstrip('=')
        self.assertClientError(self.client.get(
                f'/m/{other}/preview?{url.query}'))
        with mock.patch.object(
                module_tools, 'now',
                return_value=dt.datetime.fromtimestamp(values[4] + 1)):
            self.assertClientError(
                self.client.get(f'{url.path}?{url.query}'), 410)

        self.assertEqual(self.snapshot(), before)

    def test_preview_expiry_is_configured(self):
        "The URL lives the minutes of [marketing] preview_expiry"
        ann, = create_parties(("Ann Archer", 'ann@example.com'))
        _, activity = self.create_scenario([ann])
        self.configure({('marketing', 'preview_expiry'): '3'})
        mary = self.login()
        values = mary.open_preview(activity)
        with mock.patch.object(
                module_tools, 'now',
                return_value=dt.datetime.fromtimestamp(1_000_000)):
            mary.execute('open_', form(values))
        (action, _), = mary.actions
        url = urlsplit(action['url'])
        for seconds, status in [(179, 200), (181, 410)]:
            with mock.patch.object(
                    module_tools, 'now',
                    return_value=dt.datetime.fromtimestamp(
                        1_000_000 + seconds)):
                response = self.client.get(f'{url.path}?{url.query}')
            self.assertEqual(response.status_code, status, msg=seconds)

    def test_template_error_is_shown_and_nothing_sent(self):
        "The expression that fails is shown; no test email leaves"
        ann, = create_parties(("Ann Archer", 'ann@example.com'))
        _, activity = self.create_scenario([ann])
        self.store(activity, email_template='<p>Hello ${record.nmae}</p>')
        mary = self.login()

        values = mary.open_preview(activity)

        self.assertIn('${record.nmae}', values['error'])
        self.assertFalse(values['subject'])
        with self.assertRaises(RPCError) as raised:
            mary.execute('send', form(values))
        kind, (text, *_) = raised.exception.args
        self.assertEqual(kind, 'UserError')
        self.assertIn('${record.nmae}', text)
        self.assertTrue(text.startswith(
                message('msg_preview_test_not_sent', error='')))
        mary.execute('open_', form(values))
        (action, _), = mary.actions
        url = urlsplit(action['url'])
        response = self.client.get(f'{url.path}?{url.query}')
        self.assertEqual(response.status_code, 422)
        self.assertIn('${record.nmae}', page_text(response))
        self.assertEqual(self.smtp.received(), [])
        self.assertEqual(self.logged_tests(activity), [])

    def test_runaway_template_blocks_no_request(self):
        """A template that loops in C stops at the time limit in the
        preview, and the server answers the other requests meanwhile"""
        self.configure({('marketing', 'render_timeout'): '3'})
        ann, = create_parties(("Ann Archer", 'ann@example.com'))
        _, activity = self.create_scenario([ann])
        self.store(activity, email_template=(
                '<p>${[[0] * 5000000] * 5000000 == '
                '[[0] * 5000000] * 5000000}</p>'))
        mary = self.login()
        values = mary.open_preview(activity)
        self.assertIn("too long", values['error'])
        mary.execute('open_', form(values))
        (action, _), = mary.actions
        url = urlsplit(action['url'])

        rendering = threading.Event()
        render = render_box.Box.render

        def render_and_tell(*args, **kwargs):
            rendering.set()
            yield from render(*args, **kwargs)

        answered = []

        def request_the_image():
            # another request to the same process, in a thread of its own
            # as a server gives it
            if rendering.wait(30):
                response = Client(app).get('/m/empty.gif')
                answered.append((response.status_code, preview_done.is_set()))

        preview_done = threading.Event()
        other = threading.Thread(target=request_the_image)
        other.start()
        with mock.patch.object(render_box.Box, 'render', render_and_tell):
            response = self.client.get(f'{url.path}?{url.query}')
        preview_done.set()
        other.join()

        # the image was served while the preview was still rendering
        self.assertEqual(answered, [(200, False)])
        self.assertEqual(response.status_code, 422)
        self.assertIn("too long", page_text(response))

    def test_error_of_the_record_is_shown(self):
        "A template that fails on a value of this record says so"
        # a name of 9 characters makes the division fail
        ann, = create_parties(("Ann Arche", 'ann@example.com'))
        _, activity = self.create_scenario([ann], {
                'name': "Share",
                'action': 'send_email',
                'email_title': "Your share",
                'email_template': '<p>${100 // (len(record.name) - 9)}</p>',
                })
        values = self.login().open_preview(activity)
        self.assertEqual(values['error'], message(
                'msg_email_render_error',
                exception='${100 // (len(record.name) - 9)}: '
                'ZeroDivisionError: integer division or modulo by zero'))

    # The test email

    def test_send_a_test_email(self):
        """The test email, read as a mail client does: marked, untracked,
        with the headers of the real one; logged and not counted"""
        ann, bob = create_parties(
            ("Ann Archer", 'ann@example.com'),
            ("Bob Baker", 'bob@example.com'))
        scenario, activity = self.create_scenario([ann, bob])
        before = self.snapshot()
        mary = self.login()
        values = mary.open_preview(activity)

        values = mary.execute('send', {
                **form(values),
                'test_addresses': 'mary@example.com, Joe <joe@example.org>',
                })

        self.assertEqual(values['test_result'], message(
                'msg_preview_test_sent',
                addresses='mary@example.com, Joe <joe@example.org>'))
        received = self.smtp.received()
        self.assertEqual(
            sorted(r for m in received for r in m.rcpt_tos),
            ['joe@example.org', 'mary@example.com'])
        mail = Mail(self.smtp.to('joe@example.org')[0])
        self.assertEqual(mail['Subject'], "[Test] Welcome Ann Archer")
        self.assertEqual(mail.envelope_from, 'news@example.com')
        self.assertEqual(str(mail['From']), SENDER)
        self.assertEqual(str(mail['To']), "Joe <joe@example.org>")
        self.assertEqual(mail['Content-Language'], 'en')
        self.assertEqual(mail['List-Unsubscribe-Post'], ONE_CLICK)
        self.assertEqual(mail.link("See our offers"), OFFER)
        self.assertEqual(mail.link("Write to us"), 'mailto:help@example.com')
        self.assertEqual(mail.pixel, f'{BASE}/m/empty.gif')
        self.assertIn(f"See our offers ({OFFER})", mail.text)
        self.assertFalse(
            [u for u, _ in mail.links if '/s/' in u]
            + [u for u in mail.images if '/s/' in u],
            msg="a tracked link in the test email")
        self.assertNotEqual(
            mail['Message-ID'],
            Mail(self.smtp.to('mary@example.com')[0])['Message-ID'])

        # its unsubscribe link says it is a test and changes nothing
        for text in ["Unsubscribe", "Leave for good"]:
            link = urlsplit(mail.link(text))
            self.assertEqual(link.path, f'/m/{DB64}/unsubscribe/test')
            path = f'{link.path}?{link.query}'
            response = self.client.get(path)
            self.assertEqual(response.status_code, 200)
            self.assertEqual(response.headers['Cache-Control'], 'no-store')
            page = page_text(response)
            self.assertIn(message('msg_unsubscribe_test'), page)
            self.assertIn(message('msg_unsubscribe_confirm'), page)
            response = self.client.post(path)
            self.assertEqual(response.status_code, 200)
            page = page_text(response)
            self.assertIn(message('msg_unsubscribe_test'), page)
            self.assertIn(message('msg_unsubscribe_done'), page)
        self.assertIn(
            message('msg_unsubscribe_test_next', next=GOODBYE), page)
        header = urlsplit(mail['List-Unsubscribe'].strip('<>'))
        self.assertEqual(header.path, f'/m/{DB64}/unsubscribe/test')
        response = self.client.post(
            f'{header.path}?{header.query}', data=ONE_CLICK,
            content_type='application/x-www-form-urlencoded')
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.get_data(as_text=True),
            'Test: nothing changed')

        self.assertEqual(self.logged_tests(activity), [
                ('mary', 'mary@example.com', "[Test] Welcome Ann Archer",
                    ['mary@example.com'], None),
                ('mary', 'Joe <joe@example.org>',
                    "[Test] Welcome Ann Archer", ['joe@example.org'], None),
                ])
        self.assertEqual(self.snapshot(), before)
        self.assertEqual(
            self.statistics(scenario, activity), (0, 0, 0, 0, 0, 0, 0))

        # the real email has the same headers and the same content
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            Scenario.write([Scenario(scenario)], {
                    'domain': encode([('id', '=', ann)]),
                    })
            Scenario.run([Scenario(scenario)])
        with committed():
            Pool().get('marketing.automation.scenario').trigger()
        with committed():
            Pool().get('marketing.automation.record.activity').process()
        real = Mail(self.smtp.to('ann@example.com')[0])
        self.assertEqual(sorted(real.message.keys()),
            sorted(mail.message.keys()))
        self.assertEqual(real.text.replace(
                real.link("See our offers"), OFFER).split('Unsubscribe')[0],
            mail.text.split('Unsubscribe')[0])
        self.assertEqual(
            self.statistics(scenario, activity)[:3], (0, 1, 1))

    def test_invalid_addresses_are_refused(self):
        "A test address that is no email address is refused; none is sent"
        ann, = create_parties(("Ann Archer", 'ann@example.com'))
        _, activity = self.create_scenario([ann])
        mary = self.login()
        values = form(mary.open_preview(activity))
        for addresses, refused in [
                ('ok@example.com, not an address', 'not an address'),
                ('mary@localhost', 'mary@localhost'),
                ('<mary@example.com', '<mary@example.com'),
                ('mary@exa mple.com', 'mary@exa mple.com'),
                ]:
            with self.assertRaises(RPCError) as raised:
                mary.execute('send', {**values, 'test_addresses': addresses})
            kind, (text, *_) = raised.exception.args
            self.assertEqual(
                text, message('msg_preview_test_address', address=refused))
        for addresses in ['', ' , ']:
            with self.assertRaises(RPCError) as raised:
                mary.execute('send', {**values, 'test_addresses': addresses})
            self.assertEqual(
                raised.exception.args[1][0],
                message('msg_preview_test_no_address'))
        self.assertEqual(self.smtp.received(), [])
        self.assertEqual(self.logged_tests(activity), [])

    def forget_tests(self):
        "Count none of the test emails sent before by the other tests"
        with committed(user=0):
            IrEmail = Pool().get('ir.email')
            IrEmail.write(IrEmail.search([
                        ('marketing_automation_test', '=', True),
                        ]), {'marketing_automation_test': False})

    def test_limit_of_test_emails(self):
        "A marketer sends at most [marketing] test_email_limit an hour"
        ann, = create_parties(("Ann Archer", 'ann@example.com'))
        _, activity = self.create_scenario([ann])
        self.configure({('marketing', 'test_email_limit'): '3'})
        self.forget_tests()
        mary = self.login()
        values = form(mary.open_preview(activity))
        two = 'a@example.com, b@example.com'

        mary.execute('send', {**values, 'test_addresses': two})
        with self.assertRaises(RPCError) as raised:
            mary.execute('send', {**values, 'test_addresses': two})
        self.assertEqual(raised.exception.args[1][0], message(
                'msg_preview_test_limit', limit=3, sent=2, count=2))
        self.assertEqual(len(self.smtp.received()), 2)

        # an hour later
        with committed(user=0):
            IrEmail = Pool().get('ir.email')
            table = IrEmail.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*table.update(
                    [table.create_date],
                    [dt.datetime.now() - dt.timedelta(minutes=61)],
                    where=table.marketing_automation_test == Literal(True)))
        mary.execute('send', {**values, 'test_addresses': two})
        self.assertEqual(len(self.smtp.received()), 4)

    def test_limit_holds_for_sends_at_once(self):
        """Three test sends of a marketer at the same moment, each in its
        own transaction, deliver no more than the limit between them"""
        ann, = create_parties(("Ann Archer", 'ann@example.com'))
        _, activity = self.create_scenario([ann])
        self.forget_tests()
        count = 3
        with shared_database() as database:
            wizards = [self.login(database=database) for _ in range(count)]
            forms = [form(w.open_preview(activity)) for w in wizards]
            together = threading.Barrier(count)
            outcomes = [None] * count

            def send(i):
                addresses = ', '.join(
                    f'sender{i}.{n}@example.com' for n in range(8))
                together.wait()
                try:
                    wizards[i].execute(
                        'send', {**forms[i], 'test_addresses': addresses})
                    outcomes[i] = 'sent'
                except RPCError as error:
                    outcomes[i] = error.args[1][0]
            threads = [
                threading.Thread(target=send, args=(i,))
                for i in range(count)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)

        # 8 + 8 fit in the limit of 20, and the third 8 does not
        self.assertEqual(len(self.smtp.received()), 16)
        self.assertEqual(sorted(outcomes), [
                message('msg_preview_test_limit', limit=20, sent=16, count=8),
                'sent', 'sent'])

    def test_refused_test_emails_do_not_count(self):
        "A test email that the mail server refuses counts for nothing"
        ann, = create_parties(("Ann Archer", 'ann@example.com'))
        _, activity = self.create_scenario([ann])
        self.configure({('marketing', 'test_email_limit'): '3'})
        self.forget_tests()
        self.smtp.refuse('nobody@example.com', 550)
        self.smtp.refuse('later@example.com', 554, at='DATA')
        mary = self.login()
        values = form(mary.open_preview(activity))

        mary.execute('send', {
                **values,
                'test_addresses': (
                    'nobody@example.com, later@example.com, '
                    'a@example.com')})
        mary.execute('send', {
                **values, 'test_addresses': 'b@example.com, c@example.com'})

        self.assertEqual(
            sorted(r for m in self.smtp.received() for r in m.rcpt_tos),
            ['a@example.com', 'b@example.com', 'c@example.com'])
        self.assertEqual(
            [t[1] for t in self.logged_tests(activity)],
            ['a@example.com', 'b@example.com', 'c@example.com'])

    def test_retried_send_passes_no_limit(self):
        """A send whose transaction fails after its emails left, and that
        the server runs again, lets no more than the limit leave"""
        ann, = create_parties(("Ann Archer", 'ann@example.com'))
        _, activity = self.create_scenario([ann])
        self.configure({('marketing', 'test_email_limit'): '3'})
        self.forget_tests()
        mary = self.login()
        values = form(mary.open_preview(activity))
        deliver = preview.deliver_tests
        failures = []

        def deliver_then_fail(composed):
            result = deliver(composed)
            if not failures:
                # as a concurrent update found at the end of the work
                failures.append(composed)
                raise backend.DatabaseOperationalError("could not serialize")
            return result

        with mock.patch.object(
                preview, 'deliver_tests', side_effect=deliver_then_fail):
            with self.assertRaises(RPCError) as raised:
                mary.execute('send', {
                        **values,
                        'test_addresses': 'a@example.com, b@example.com'})
        self.assertEqual(raised.exception.args[1][0], message(
                'msg_preview_test_limit', limit=3, sent=2, count=2))
        self.assertEqual(len(failures), 1)
        self.assertEqual(len(self.smtp.received()), 2)
        # what left counts once
        mary.execute('send', {**values, 'test_addresses': 'c@example.com'})
        self.assertEqual(len(self.smtp.received()), 3)

    def test_lost_test_email_counts(self):
        """A test email on its way when the connection to the mail server
        is lost counts: it may have left"""
        ann, = create_parties(("Ann Archer", 'ann@example.com'))
        _, activity = self.create_scenario([ann])
        self.configure({
                ('marketing', 'test_email_limit'): '2',
                ('email', 'uri'): self.smtp.uri(timeout=1),
                })
        self.forget_tests()
        mary = self.login()
        values = form(mary.open_preview(activity))
        # the server takes the message and answers after the client gave up
        self.smtp.stall = 2

        values = mary.execute('send', {
                **values, 'test_addresses': 'a@example.com, b@example.com'})
        self.smtp.stall = 0
        self.assertEqual(
            [r for m in self.smtp.received() for r in m.rcpt_tos],
            ['a@example.com'])
        self.assertEqual(len(values['test_result'].splitlines()), 2)
        with self.assertRaises(RPCError) as raised:
            mary.execute('send', {
                    **form(values),
                    'test_addresses': 'c@example.com, d@example.com'})
        self.assertEqual(raised.exception.args[1][0], message(
                'msg_preview_test_limit', limit=2, sent=1, count=2))
        self.assertEqual(len(self.smtp.received()), 1)

    def test_refused_recipient_is_reported(self):
        "The mail server refusing one address: the others are sent"
        ann, = create_parties(("Ann Archer", 'ann@example.com'))
        _, activity = self.create_scenario([ann])
        self.smtp.refuse('nobody@example.com', 550)
        mary = self.login()
        values = form(mary.open_preview(activity))
        values = mary.execute('send', {
                **values,
                'test_addresses': 'nobody@example.com, mary@example.com'})
        result = values['test_result'].splitlines()
        self.assertEqual(result[0], message(
                'msg_preview_test_sent', addresses='mary@example.com'))
        self.assertTrue(result[1].startswith(message(
                    'msg_preview_test_refused',
                    address='nobody@example.com', error='550')))
        self.assertEqual(
            [t[1] for t in self.logged_tests(activity)], ['mary@example.com'])

    # Who may

    def test_outsider_can_neither_preview_nor_send(self):
        "A user outside the Marketing group gets nothing, nor its URL works"
        ann, = create_parties(("Ann Archer", 'ann@example.com'))
        _, activity = self.create_scenario([ann])
        tom = self.login('tom')
        with self.assertRaises(RPCError) as raised:
            tom.call(f'model.{ACTIVITY}.preview', [activity], {})
        self.assertEqual(raised.exception.args[0], 'UserError')
        tom.context = {
            'active_model': ACTIVITY,
            'active_id': activity,
            'active_ids': [activity],
            }
        with self.assertRaises(RPCError):
            tom.call(f'wizard.{WIZARD}.create', tom.context)
        # nor through the form of the wizard, which has no table
        with inspecting():
            english, = Pool().get('ir.lang').search([('code', '=', 'en')])
            english = english.id
        with self.assertRaises(RPCError) as raised:
            tom.change({
                    'activity': activity,
                    'record': f'party.party,{ann}',
                    'language': english,
                    }, 'language')
        self.assertEqual(
            raised.exception.args[1][0], message('msg_preview_access'))

        # a URL made for Mary works for no one once she leaves the group
        mary = self.login()
        values = mary.open_preview(activity)
        mary.execute('open_', form(values))
        (action, _), = mary.actions
        url = urlsplit(action['url'])
        self.assertEqual(
            self.client.get(f'{url.path}?{url.query}').status_code, 200)
        with committed(user=0):
            pool = Pool()
            User = pool.get('res.user')
            ModelData = pool.get('ir.model.data')
            User.write([User(self.mary)], {'groups': [('remove', [
                                ModelData.get_id(
                                    'marketing', 'group_marketing')])]})
        try:
            self.assertClientError(
                self.client.get(f'{url.path}?{url.query}'), 403)
            with self.assertRaises(RPCError):
                mary.execute('send', {
                        **form(values),
                        'test_addresses': 'mary@example.com'})
        finally:
            with committed(user=0):
                User.write([User(self.mary)], {'groups': [('add', [
                                    ModelData.get_id(
                                        'marketing', 'group_marketing')])]})
        self.assertEqual(self.smtp.received(), [])

    def test_preview_only_of_emails(self):
        "An activity that sends no email has no preview"
        ann, = create_parties(("Ann Archer", 'ann@example.com'))
        _, activity = self.create_scenario([ann], {'name': "Wait"})
        mary = self.login()
        # the button is not there
        with self.assertRaises(RPCError):
            mary.open_preview(activity)
        # nor does the wizard show anything
        mary.context = {
            'active_model': ACTIVITY,
            'active_id': activity,
            'active_ids': [activity],
            }
        mary.session_id, start, _ = mary.call(
            f'wizard.{WIZARD}.create', mary.context)
        with self.assertRaises(RPCError) as raised:
            mary.execute(start, {})
        self.assertEqual(raised.exception.args[1][0], message(
                'msg_preview_not_email', activity=self.named("Wait")))

    def test_routes_answer_garbage_with_4xx(self):
        "Random tokens, methods and bodies get a 4xx and change nothing"
        before = self.snapshot()
        generator = random.Random(13)
        alphabet = string.ascii_letters + string.digits + '-_.=%'
        paths = [f'/m/{DB64}/preview', f'/m/{DB64}/unsubscribe/test']
        for _ in range(300):
            token = ''.join(
                generator.choice(alphabet)
                for _ in range(generator.randrange(0, 120)))
            method = generator.choice(['GET', 'POST', 'HEAD', 'PUT'])
            response = self.client.open(
                f'{generator.choice(paths)}?t={token}', method=method,
                data=generator.choice(['', ONE_CLICK, 'x' * 100]))
            self.assertClientError(response)
        for path in paths:
            self.assertClientError(self.client.get(path))
            self.assertClientError(
                self.client.get(path + '?t=' + 'A' * 5000))
        self.assertEqual(self.snapshot(), before)

    # Who will really be reached

    def test_audience(self):
        "The counts of the audience, each opening the list of its records"
        ann, bob, cid, dan, eve, fay, gus = create_parties(
            ("Ann", 'ann@example.com'),
            ("Bob", 'bob@example.com'),
            ("Cid", None),
            ("Dan", 'dan@example.com'),
            ("Eve", 'eve@example.com'),
            ("Fay", 'fay@example.com'),
            ("Gus", 'gus@example.com'))
        scenario, _ = self.create_scenario(
            [ann, bob, cid, dan, eve, fay], unsubscribable=True)
        with committed():
            pool = Pool()
            Mechanism = pool.get('party.contact_mechanism')
            Unsubscribed = pool.get(
                'party.party-unsubscribed-marketing.automation.scenario')
            # Fay's only address is archived
            Mechanism.write(Mechanism.search([('party', '=', fay)]), {
                    'active': False,
                    })
            # Dan unsubscribed from this scenario
            Unsubscribed.create([{'party': dan, 'scenario': scenario}])
        mary = self.login()
        names = [
            'audience_selected', 'audience_unsubscribed', 'audience_no_email',
            'audience_reachable']

        def counts():
            values, = mary.call(
                'model.marketing.automation.scenario.read', [scenario],
                names, {})
            return [values[n] for n in names]

        def listed(button):
            action = mary.call(
                f'model.marketing.automation.scenario.{button}',
                [scenario], {})
            self.assertEqual(action['res_model'], 'party.party')
            decoder = PYSONDecoder()
            ids = mary.call(
                'model.party.party.search',
                decoder.decode(action['pyson_domain']), 0, None,
                [('id', 'ASC')], decoder.decode(action['pyson_context']))
            return ids

        self.assertEqual(counts(), [6, 1, 2, 3])
        self.assertEqual(listed('open_audience_selected'),
            [ann, bob, cid, dan, eve, fay])
        self.assertEqual(listed('open_audience_unsubscribed'), [dan])
        self.assertEqual(listed('open_audience_no_email'), [cid, fay])
        self.assertEqual(listed('open_audience_reachable'), [ann, bob, eve])

        # running, a record of it blocked
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            Scenario.run([Scenario(scenario)])
        with committed():
            Pool().get('marketing.automation.scenario').trigger()
        with committed():
            Record = Pool().get('marketing.automation.record')
            record, = Record.search([
                    ('scenario', '=', scenario),
                    ('record', '=', f'party.party,{eve}'),
                    ])
            Record.write([record], {'blocked': True})
        self.assertEqual(counts(), [6, 2, 2, 2])
        self.assertEqual(listed('open_audience_unsubscribed'), [dan, eve])
        self.assertEqual(listed('open_audience_reachable'), [ann, bob])
        with inspecting(), Transaction().set_context(
                marketing_scenario=scenario):
            Party = Pool().get('party.party')
            self.assertEqual(
                [p.marketing_audience for p in Party.browse(
                        [ann, cid, dan, eve, gus])],
                ['reachable', 'no_email', 'unsubscribed', 'unsubscribed',
                    None])
            self.assertEqual(
                [p.id for p in Party.search([
                            ('marketing_audience', 'not in',
                                ['reachable', 'unsubscribed']),
                            ('id', 'in', [ann, cid, fay, gus]),
                            ], order=[('id', 'ASC')])],
                [cid, fay, gus])

        # stopped, it reaches nobody
        with committed():
            Scenario = Pool().get('marketing.automation.scenario')
            Scenario.stop([Scenario(scenario)])
        self.assertEqual(counts(), [None] * 4)

    # The pure parts

    def test_parse_addresses(self):
        "Addresses separated by commas, semicolons or lines"
        self.assertEqual(preview.parse_addresses(
                'a@example.com; B <b@exämple.com>\nA@example.com,'), [
                ('', 'a@example.com'), ('B', 'b@exämple.com')])
        for text in ['a', 'a@b', '@example.com', 'a..b@example.com',
                'a@-example.com', 'a@example.com>', 'a b@example.com']:
            with self.assertRaises(ValueError, msg=text):
                preview.parse_addresses(text)

    def test_tokens(self):
        "A token serves only its purpose and the secret that signed it"
        ticket = preview.Ticket(1, 2, 'party.party,3', 'fr', 100)
        token = preview.preview_token('secret', ticket)
        self.assertEqual(preview.read_preview_token('secret', token), ticket)
        for secret, text in [
                ('other', token), ('secret', token + 'x'),
                ('secret', token.replace('.', '')), ('secret', None),
                ('secret', 'A' * 5000),
                ('secret', preview.seal(
                        'secret', preview.TEST_UNSUBSCRIBE, list(ticket))),
                ('secret', preview.seal(
                        'secret', preview.PREVIEW, [1, 2, 'x', 'fr', 100])),
                ('secret', preview.seal(
                        'secret', preview.PREVIEW, {'user': 1})),
                ]:
            with self.assertRaises(ValueError, msg=text):
                preview.read_preview_token(secret, text)
