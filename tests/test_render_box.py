# SPDX-License-Identifier: GPL-3.0-or-later
"""Templates run in a render box that a runaway cannot outlive.

A box is a child process of trytond with hard limits on its memory and CPU
time, killed at the deadline of each email; the caller waits for it
without holding the interpreter.  These tests drive boxes directly, with a
server of their own in place of the records of a database: what the box
renders, what it asks, what stops it, and what it cannot make its caller
do.
"""
import datetime as dt
import os
import threading
import time
import unittest
from decimal import Decimal

from trytond.modules.marketing_automation import mailing, render_box, sandbox

# Work of C code that the guards of the sandbox let through: a comparison
# of 25 million million items
RUNAWAY = '[[0] * 5000000] * 5000000 == [[0] * 5000000] * 5000000'


def record(number, label, **given):
    "The wire of a record of the caller, with fields given ahead"
    return render_box.to_wire(render_box.Handle(
            'record', number, label,
            {k: render_box.to_wire(v) for k, v in given.items()}))


class Server(render_box.Server):
    "The caller's side: the fields of its records, and what was asked"

    def __init__(self, fields=None):
        self.fields = fields or {}
        self.asked = []

    def read(self, number, name):
        self.asked.append((number, name))
        try:
            value = self.fields[number, name]
        except KeyError:
            raise render_box.Refusal('unknown', f"no field {name!r}")
        if isinstance(value, render_box.Refusal):
            raise value
        return render_box.to_wire(value)

    def call(self, number, args, kwargs):
        self.asked.append((number, 'call'))
        args = render_box.from_wire(args)
        return render_box.to_wire('-'.join(map(str, args)))


class RenderBoxTestCase(unittest.TestCase):
    "A box renders, asks and stops as its caller wants"

    settings = render_box.Settings(timeout=2, memory=512)

    def render(self, body, contexts, server=None, title="Hi", settings=None):
        with render_box.lease(settings or self.settings) as box:
            key, paths = box.prepare(title, body)
            results = list(box.render(key, contexts, server or Server()))
        return results, paths

    def test_renders_a_batch_in_order(self):
        "Each context gets its email, in order, its links as placeholders"
        results, _ = self.render(
            '<p>Hello ${name}</p><a href="https://example.com/">Go</a>',
            [{'name': "Ann"}, {'name': "Bob"}])
        (ann, error), (bob, _) = results
        self.assertIsNone(error)
        self.assertIn("Hello Ann", ann['html'])
        self.assertIn("Hello Bob", bob['html'])
        self.assertEqual(
            ann['links'], [['click', 'https://example.com/'], ['open', None]])
        self.assertIn(mailing.placeholder(), ann['html'])

    def test_usual_template_asks_nothing(self):
        """The fields that the expressions read are given ahead: the box asks
        its caller nothing to render them"""
        server = Server()
        results, paths = self.render(
            '<p>Dear ${record.rec_name} of ${record.party.name}</p>',
            [{'record': record(
                        0, 'party.party,1', rec_name="Ann",
                        party=render_box.Handle(
                            'record', 1, 'party.party,2',
                            {'name': "Acme"}))}],
            server)
        self.assertEqual(
            sorted(paths), [
                ('record', 'party'), ('record', 'party', 'name'),
                ('record', 'rec_name')])
        (rendered, error), = results
        self.assertIsNone(error)
        self.assertIn("Dear Ann of Acme", rendered['html'])
        self.assertEqual(server.asked, [])

    def test_other_fields_are_asked(self):
        "A field not given ahead is asked once per record of the batch"
        server = Server({(0, 'city'): "Liège"})
        results, _ = self.render(
            '<p py:for="address in record.addresses">${address.city} '
            '${address.city}</p>',
            [{'record': record(
                        9, 'party.party,1', addresses=(render_box.Handle(
                                'record', 0, 'party.address,5'),))}] * 2,
            server)
        for rendered, _ in results:
            self.assertTrue(
                rendered['html'].startswith('<p>Liège Liège</p>'))
        self.assertEqual(server.asked, [(0, 'city')])

    def test_refusals_of_the_caller(self):
        """What the caller refuses is the fault of the template, or the
        error of this recipient's value"""
        server = Server({
                (0, 'secret'): render_box.Refusal(
                    'refused', "party.party 'secret' is not available"),
                (0, 'broken'): render_box.Refusal(
                    'error', "ValueError: no rate"),
                })
        context = {'record': record(0, 'party.party,1')}
        for source, fault, message in [
                ('record.secret', True,
                    "${record.secret}: party.party 'secret' is not "
                    "available"),
                ('record.nmae', True, "${record.nmae}: no field 'nmae'"),
                ('record.broken', False,
                    "${record.broken}: ValueError: no rate"),
                ]:
            with self.subTest(source=source):
                results, _ = self.render(
                    f'<p>${{{source}}}</p>', [context], server)
                (rendered, (text, is_fault)), = results
                self.assertIsNone(rendered)
                self.assertEqual((text, is_fault), (message, fault))

    def test_functions_of_the_caller(self):
        "A function is called by the caller with the values of the template"
        server = Server()
        context = {
            'join': render_box.to_wire(render_box.Handle('function', 3)),
            'name': "Ann",
            'amount': render_box.to_wire(Decimal('2.50')),
            }
        results, _ = self.render(
            '<p>${join(1, name, amount)}</p>', [context], server)
        (rendered, _), = results
        self.assertIn("1-Ann-2.50", rendered['html'])
        self.assertEqual(server.asked, [(3, 'call')])

    def test_runaway_is_killed_at_the_deadline(self):
        """A template that loops in C is stopped at its deadline, as a fault
        of the template; a new box renders the next batch"""
        with render_box.lease(self.settings) as box:
            key, _ = box.prepare("Hi", f'<p>${{{RUNAWAY}}}</p>')
            start = time.monotonic()
            (rendered, error), = box.render(key, [{}, {}], Server())
            waited = time.monotonic() - start
            self.assertEqual(
                error, ("the template takes too long to render", True))
            self.assertFalse(box.alive)
        self.assertLess(waited, self.settings.timeout + 5)

        results, _ = self.render('<p>${name}</p>', [{'name': "Ann"}])
        (rendered, error), = results
        self.assertIsNone(error)

    def test_memory_limit(self):
        """A template that needs more memory than a box has stops that box,
        as a fault of the template"""
        results, _ = self.render(
            "<p>${len([name * 4000000 + str(i) for i in range(100)])}</p>",
            [{'name': 'x'}],
            settings=render_box.Settings(timeout=30, memory=256))
        (rendered, (message, fault)), = results
        self.assertIsNone(rendered)
        self.assertTrue(fault)
        self.assertIn("more memory or time", message)

    def test_compile_errors(self):
        "The box refuses what does not compile, with the sandbox's reason"
        with render_box.lease(self.settings) as box:
            self.assertEqual(
                box.check('body', '<p>${record.__class__}</p>'),
                "${record.__class__}: attributes starting with '_' are not "
                "allowed ('__class__')")
            self.assertIsNone(box.check('title', 'Hello ${name}'))
            with self.assertRaises(render_box.Failure):
                box.prepare("Hi", '<p>${x.__class__}</p>')

    def test_box_knows_no_secret(self):
        "A box runs with no configuration nor credential of its caller"
        os.environ['TRYTOND_DATABASE__URI'] = 'postgresql://u:secret@db/'
        try:
            with render_box.lease(render_box.Settings(timeout=2)) as box:
                with open(f'/proc/{box.process.pid}/environ', 'rb') as file:
                    environment = file.read()
        finally:
            del os.environ['TRYTOND_DATABASE__URI']
        self.assertNotIn(b'TRYTOND', environment)
        self.assertNotIn(b'secret', environment)

    def test_pool_keeps_boxes(self):
        "A box that rendered waits for the next batch of its process"
        with render_box.lease(self.settings) as first:
            key, _ = first.prepare("Hi", '<p>${name}</p>')
            contexts = [{'name': "Ann"}, {'name': "Bob"}]
            # zip takes no more from the box than the last email
            for name, (rendered, _) in zip(
                    ["Ann", "Bob"], first.render(key, contexts, Server())):
                self.assertIn(name, rendered['html'])
        self.assertTrue(first.alive)
        with render_box.lease(self.settings) as second:
            self.assertIs(second, first)
        render_box.close_boxes()
        self.assertFalse(first.alive)

    def test_contexts_are_sent_as_they_are_made(self):
        """The box renders the first contexts while the next ones are made,
        and answers its questions in between, in order, also for a caller
        slower than the box; then it renders the next batch"""
        server = Server({(0, 'city'): "Liège"})
        events = []

        def contexts():
            for index in range(40):
                events.append(('made', index))
                yield {'index': index, 'record': record(
                        0, 'party.address,5')}
        with render_box.lease(self.settings) as box:
            key, _ = box.prepare("Hi", '<p>${index} ${record.city}</p>')
            for index, (rendered, error) in enumerate(
                    box.render(key, contexts(), server)):
                self.assertIsNone(error)
                self.assertTrue(rendered['html'].startswith(
                        f'<p>{index} Liège</p>'))
                events.append(('rendered', index))
                # the box renders all it was sent meanwhile
                time.sleep(0.01)
            self.assertEqual(index, 39)
            self.assertLess(
                events.index(('rendered', 0)), events.index(('made', 39)))
            self.assertEqual(server.asked, [(0, 'city')])
            results = list(box.render(key, [{
                            'index': 'next', 'record': record(
                                0, 'party.address,5')}], server))
        (rendered, error), = results
        self.assertTrue(rendered['html'].startswith('<p>next Liège</p>'))

    def test_runaway_with_a_full_pipe(self):
        """A box stuck in a template while its caller sends it more than its
        pipe holds is killed at the deadline all the same"""
        heavy = 'x' * 200000
        results = []

        def render():
            results.extend(self.render(
                    f'<p>${{{RUNAWAY}}}${{len(name)}}</p>',
                    [{'name': heavy}] * 8)[0])
        start = time.monotonic()
        thread = threading.Thread(target=render, daemon=True)
        thread.start()
        thread.join(self.settings.timeout * 3 + 10)
        self.assertFalse(thread.is_alive())
        self.assertLess(
            time.monotonic() - start, self.settings.timeout * 3 + 5)
        (rendered, error), = results
        self.assertEqual(
            error, ("the template takes too long to render", True))


class WireTestCase(unittest.TestCase):
    "What crosses between a box and its caller, and what does not"

    def test_round_trip(self):
        values = [
            None, True, 3, -2.5, "Liège", [1, (2, 3)], {'a': {1: 'b'}},
            {1, 2}, Decimal('1.10'), dt.date(2024, 2, 29),
            dt.datetime(2024, 5, 1, 8, 30, tzinfo=dt.timezone.utc),
            dt.time(8, 30), dt.timedelta(days=1, seconds=3), b'\x00\xff',
            dt.date, float('inf'),
            ]
        for value in values:
            with self.subTest(value=value):
                self.assertEqual(
                    render_box.from_wire(render_box.to_wire(value)), value)
        namespace = render_box.from_wire(
            render_box.to_wire(sandbox.DATETIME))
        self.assertIs(sandbox.attribute(namespace, 'date'), dt.date)

    def test_refused_shapes(self):
        "What the box sends is data: any other shape is refused"
        for data in [
                {'object': 'os.system'}, {'class': 'type'},
                {'list': 'x'}, {'dict': [[1]]}, {'a': 1, 'b': 2},
                {'handle': ['record', 1, None, {}]},
                {'timedelta': [1, 'x', 3]}, ['not tagged'],
                ]:
            with self.subTest(data=data):
                with self.assertRaises(ValueError):
                    render_box.from_wire(data)
        with self.assertRaises(TypeError):
            render_box.to_wire(object())

    def test_malformed_messages(self):
        "A channel refuses what is not one JSON object a line"
        for garbage in [b'not json\n', b'[1, 2]\n', b'{"a": \n']:
            with self.subTest(garbage=garbage):
                read, write = os.pipe()
                os.write(write, garbage)
                os.close(write)
                channel = render_box._Channel(read, None)
                with self.assertRaises(render_box.BoxError):
                    channel.receive(time.monotonic() + 1)
                os.close(read)
