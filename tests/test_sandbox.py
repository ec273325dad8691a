# SPDX-License-Identifier: GPL-3.0-or-later
"""What the templates of marketers may do, and what the sandbox refuses.

Email titles and bodies are Genshi templates written by users of the
Marketing group, who are not administrators, and rendered by the cron.
The unit tests render plain contexts through ``mailing``: what an ordinary
template may use, what is refused when the template is saved, and what is
refused when it renders.  ``EscapeCorpusTestCase`` runs a corpus of escape
attempts through the real path: a marketer saves each of them with the
access checks on, those refused are stored anyway (as a template saved
before the checks existed would be), the crons run, and a real SMTP server
receives what is sent.
"""
import datetime as dt
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import unittest
from collections import namedtuple
from decimal import Decimal

from trytond.config import config
from trytond.model.exceptions import ValidationError
from trytond.modules.marketing_automation import mailing, sandbox
from trytond.pool import Pool
from trytond.pyson import PYSONEncoder
from trytond.tests.test_tryton import (
    DB_NAME, TestCase, activate_module, drop_db)
from trytond.transaction import Transaction

from .tools import SendingTestMixin, SMTPServer, committed, parse_message

MAX_RANGE = sandbox.MAX_RANGE


def render(body='<p/>', title="Hello", **context):
    "Render the templates with context as the cron renders them"
    context.setdefault('datetime', sandbox.DATETIME)
    return mailing.render(mailing.compile_templates(title, body), context)


def subject(title, **context):
    "The subject that the title gives with context"
    return render(title=title, **context).subject


class OrdinaryTemplatesTestCase(unittest.TestCase):
    "What an ordinary template may use"

    def test_text_methods(self):
        "Text can be cut, joined, cased and searched"
        self.assertEqual(subject(
                "${name.upper()}|${name.title()}|${name.split()[0]}|"
                "${name[:3]}|${name.strip().capitalize()}|"
                "${name.replace('ann', 'anne')}|${'-'.join(['a', 'b'])}|"
                "${name.startswith('ann')}|${name.find('archer')}|"
                "${name.center(12, '*')}|${name.zfill(11)}|"
                "${name.count('a')}",
                name="ann archer"),
            "ANN ARCHER|Ann Archer|ann|ann|Ann archer|anne archer|a-b|"
            "True|4|*ann archer*|0ann archer|2")

    def test_numbers(self):
        "Integers, floats and decimals compute and round"
        self.assertEqual(subject(
                "${1 + 2 * 3}|${7 // 2}|${7 % 3}|${2 * 512}|${round(2.5)}|"
                "${round(3.14159, 2)}|${abs(-4)}|${int('42') + 1}|"
                "${float('1.5') * 2}|${str(divmod(7, 2))}|${max(3, 9)}|"
                "${(0.5).is_integer()}"),
            "7|3|1|1024|2|3.14|4|43|3.0|(3, 1)|9|False")

    def test_decimal(self):
        "Amounts stay decimals and may be quantized"
        amount, cent = Decimal('12.345'), Decimal('0.01')
        self.assertEqual(subject(
                "${amount * 2}|${amount.quantize(cent)}|${amount + 1}|"
                "${int(amount)}|${amount > 10}|${amount.normalize()}",
                amount=amount, cent=cent),
            "24.690|12.34|13.345|12|True|12.345")

    def test_percent_formatting(self):
        "% formats plain values, positionally or by key"
        self.assertEqual(subject(
                "${'%s has %d points (%.1f%%)' % (name, 3, 42.25)}|"
                "${'%05.2f' % amount}|${'%(city)s, %(zip)s' % address}|"
                "${'%-4s' % 'ab'}|${'%x' % 255}",
                name="Ann", amount=Decimal('3.14159'),
                address={'city': "Liège", 'zip': '4000'}),
            "Ann has 3 points (42.2%)|03.14|Liège, 4000|ab |ff")

    def test_format_builtin(self):
        "format() takes a format specification, not a format string"
        self.assertEqual(subject(
                "${format(1234.5, ',.2f')}|${format(amount, '.1f')}|"
                "${format(day, '%d/%m/%Y')}|${format(7, '03d')}",
                amount=Decimal('2.25'), day=dt.date(2024, 2, 29)),
            "1,234.50|2.2|29/02/2024|007")

    def test_dates(self):
        "Dates, times and durations compute through the datetime classes"
        self.assertEqual(subject(
                "${datetime.date(2024, 2, 28) + datetime.timedelta(days=2)}|"
                "${(datetime.date(2024, 3, 1) - datetime.date(2024, 1, 1)"
                ").days}|"
                "${datetime.date(2024, 5, 1).strftime('%d %m %Y')}|"
                "${datetime.date(2024, 5, 1).isoformat()}|"
                "${datetime.date(2024, 5, 1).weekday()}|"
                "${datetime.datetime(2024, 5, 1, 8, 30).time().hour}|"
                "${datetime.datetime.combine(datetime.date(2024, 5, 1), "
                "datetime.time(9)).isoformat()}|"
                "${datetime.timedelta(hours=36).total_seconds()}|"
                "${datetime.date.fromisoformat('2024-02-29').replace("
                "year=2028)}|"
                "${datetime.datetime(2024, 1, 1, "
                "tzinfo=datetime.timezone.utc).isoformat()}|"
                "${day.year}-${day.month}-${day.day}|"
                "${datetime.timedelta(days=2).days}"
                "", day=dt.date(2024, 7, 14)),
            "2024-03-01|60|01 05 2024|2024-05-01|2|8|2024-05-01T09:00:00|"
            "129600.0|2028-02-29|2024-01-01T00:00:00+00:00|2024-7-14|2")

    def test_today(self):
        "Today is datetime.date.today(), and now is datetime.datetime.now()"
        before = dt.date.today()
        today, now_date = subject(
            "${datetime.date.today()} "
            "${datetime.datetime.now().date().isoformat()}").split()
        after = dt.date.today()
        self.assertIn(today, {before.isoformat(), after.isoformat()})
        self.assertIn(now_date, {before.isoformat(), after.isoformat()})
        self.assertEqual(
            subject("${datetime.date.today() + datetime.timedelta(days=2) "
                "> datetime.date.today()}"), "True")

    def test_dictionaries(self):
        "Dictionaries are read by key and by dot"
        person = {
            'name': "Ann", 'phone': None,
            'address': {'city': "Liège", 'lines': ["Rue 1", "Box 2"]},
            }
        self.assertEqual(subject(
                "${person['name']}|${person.name}|${person.address.city}|"
                "${person['address']['lines'][1]}|"
                "${person.get('email', 'none')}|"
                "${str(sorted(person.keys()))}|${len(person)}|"
                "${str([k for k, v in sorted(person.items()) if v])}|"
                "${'name' in person}",
                person=person),
            "Ann|Ann|Liège|Box 2|none|['address', 'name', 'phone']|3|"
            "['address', 'name']|True")

    def test_lists(self):
        "Lists are counted, sorted, summed, sliced and walked"
        self.assertEqual(subject(
                "${len(items)}|${str(sorted(items))}|${sum(numbers)}|"
                "${min(numbers)}|${items[-1]}|${str(items[1:])}|"
                "${str([n * 2 for n in numbers])}|${', '.join(items)}|"
                "${str(list(enumerate(items, 1))[0])}|"
                "${str(list(zip(items, numbers))[1])}|"
                "${str(list(reversed(numbers)))}|"
                "${any(n > 2 for n in numbers)}|${all(numbers)}|"
                "${str(list(map(str, numbers)))}|"
                "${str(list(filter(None, [0, 1])))}|"
                "${items.index('b')}|${numbers.count(1)}|"
                "${str(sorted(set(numbers)))}|${str(tuple(numbers))}|"
                "${str(sorted(items, key=lambda i: -ord(i)))}|"
                "${next(iter(items))}|${str(dict(a=1))}|${chr(65)}",
                items=['c', 'b', 'a'], numbers=[3, 1, 1]),
            "3|['a', 'b', 'c']|5|1|a|['b', 'a']|[6, 2, 2]|c, b, a|(1, 'c')|"
            "('b', 1)|[1, 1, 3]|True|True|['3', '1', '1']|[1]|1|2|[1, 3]|"
            "(3, 1, 1)|['c', 'b', 'a']|c|{'a': 1}|A")

    def test_bounded_operations(self):
        """Repetition, padding, widths, join, replace, shifts and products
        work within their bounds"""
        self.assertEqual(subject(
                "${'ab' * 3}|${str([0] * 3)}|${'7'.zfill(3)}|"
                "${'a'.ljust(3, '.')}|${'a'.rjust(3, '.')}|"
                "${'a'.center(5, '*')}|${'%05.1f' % 2.25}|"
                "${'%-3s|' % 'x'}|${format(42, '>6')}|${format(3, '08b')}|"
                "${'-'.join(items)}|${'a-b'.replace('-', ' and ')}|"
                "${1 << 10}|${big * big > 0}|${sum([1.5, 2])}|"
                "${str(list(iter(items)))}|${7 % 4}|${str(items * 2)}",
                items=['x', 'y'], big=2 ** 1000),
            # the subject collapses its spaces
            "ababab|[0, 0, 0]|007|a..|..a|**a**|002.2|x || 42|00000011|"
            "x-y|a and b|1024|True|3.5|['x', 'y']|3|"
            "['x', 'y', 'x', 'y']")

    def test_range(self):
        "range() gives up to MAX_RANGE numbers"
        self.assertEqual(subject(
                "${str(list(range(3)))}|${len(range(max_range))}|"
                "${len(range(0, 2 * max_range, 2))}",
                max_range=MAX_RANGE),
            f"[0, 1, 2]|{MAX_RANGE}|{MAX_RANGE}")

    def test_body_directives(self):
        "py:if, py:for, py:with, py:def, py:choose and py:attrs work"
        html = render(
            '<p py:if="vip">VIP</p><p py:if="not vip">Regular</p>'
            '<ul><li py:for="i, item in enumerate(items)">'
            '${i}:${item}</li></ul>'
            '<p py:with="total=sum(numbers); half=total / 2">'
            '${total} ${half}</p>'
            '<span py:def="greet(who, mark=\'!\')">Hi ${who}${mark}</span>'
            '${greet(name)}${greet("Bob", mark="?")}'
            '<div py:choose="len(items)">'
            '<b py:when="0">none</b><b py:when="2">two</b>'
            '<b py:otherwise="">many</b></div>'
            '<a py:attrs="{\'title\': name}" href="#top">top</a>'
            '<i py:content="name.upper()">x</i>'
            '<s py:replace="name.lower()">x</s>'
            '<em py:strip="True">stripped</em>',
            vip=True, items=["tea", "cake"], numbers=[3, 4], name="Ann"
            ).html
        self.assertIn(
            '<p>VIP</p><ul><li>0:tea</li><li>1:cake</li></ul>'
            '<p>7 3.5</p><span>Hi Ann!</span><span>Hi Bob?</span>'
            '<div><b>two</b></div><a href="#top" title="Ann">top</a>'
            '<i>ANN</i>annstripped', html)

    def test_title_directives(self):
        "The title has the directives of text templates"
        self.assertEqual(subject(
                "{% if vip %}VIP {% end %}{% for i in items %}${i}, "
                "{% end %}{% with n=len(items) %}${n} items{% end %}"
                "{% choose %}{% when n == 0 %}!{% end %}"
                "{% otherwise %}.{% end %}{% end %}",
                vip=True, items=["tea", "cake"], n=1),
            "VIP tea, cake, 2 items.")

    def test_genshi_helpers(self):
        "defined() and value_of() tell about the variables"
        self.assertEqual(subject(
                "${defined('name')} ${defined('missing')} "
                "${value_of('missing', 'default')} ${value_of('name')}",
                name="Ann"),
            "True False default Ann")

    def test_functions_of_the_context(self):
        "The functions of the context are called with their arguments"
        self.assertEqual(subject(
                "${shout(name)} ${shout(name, mark='?')}",
                name="Ann", shout=lambda text, mark='!': text + mark),
            "Ann! Ann?")


class RefusedOnSaveTestCase(unittest.TestCase):
    "What the checks refuse when a template is saved, naming it"

    def assertRefused(self, check, source, needle):
        with self.subTest(source=source):
            with self.assertRaises(mailing.TemplateError) as cm:
                check(source)
            self.assertIn(needle, str(cm.exception))

    def test_message_names_the_expression(self):
        "The marketer learns which expression to fix and why"
        with self.assertRaises(mailing.TemplateError) as cm:
            mailing.check_body(
                "<p>Hello ${record.name}</p><p>${record.__class__}</p>")
        self.assertEqual(
            str(cm.exception),
            "${record.__class__}: attributes starting with '_' are not "
            "allowed ('__class__')")

    def test_attributes(self):
        "Private attributes, classes, frames and record methods are refused"
        for source, needle in [
                ('record.__class__', '__class__'),
                ('record.__class__.__mro__', '__mro__'),
                ('().__class__.__bases__[0].__subclasses__()',
                    '__subclasses__'),
                ('record.__init__.__globals__', '__globals__'),
                ('record.__reduce_ex__(2)', '__reduce_ex__'),
                ('record.__dict__', '__dict__'),
                ('record._values', '_values'),
                ('record._record', '_record'),
                ('datetime.date.__module__', '__module__'),
                ('datetime.datetime.mro()', 'mro'),
                ('format_date.__self__', '__self__'),
                ('format_date.__func__.__globals__', '__globals__'),
                ('datetime.datetime.now.__self__', '__self__'),
                ('(x for x in [1]).gi_frame.f_globals', 'gi_frame'),
                ('(lambda: 0).__globals__', '__globals__'),
                ('(lambda: 0).__code__', '__code__'),
                ('record.write([record], {})', 'write'),
                ('record.search([])', 'search'),
                ('record.save()', 'save'),
                ('record.delete([record])', 'delete'),
                ('record.browse([1])', 'browse'),
                ('record.copy([record])', 'copy'),
                ('record.read([1], ["name"])', 'read'),
                ('record.pool', 'pool'),
                ('record.transaction', 'transaction'),
                ]:
            self.assertRefused(
                mailing.check_body, f'<p>${{{source}}}</p>', needle)
            self.assertRefused(mailing.check_title, f'${{{source}}}', needle)

    def test_string_formatting(self):
        "str.format and format_map, which walk attributes, are refused"
        for source in [
                "'{0.__class__}'.format(record)",
                "'{0.create_uid.password_hash}'.format(record)",
                "'{x}'.format_map({'x': record})",
                "str.format('{0.__class__}', record)",
                "name.format",
                ]:
            self.assertRefused(
                mailing.check_body, f'<p>${{{source}}}</p>', 'format')

    def test_builtins(self):
        "The builtins that reach code, files or attributes are refused"
        for source, needle in [
                ("open('/etc/passwd').read()", 'open'),
                ("__import__('os')", '__import__'),
                ("eval('1')", 'eval'),
                ("exec('1')", 'exec'),
                ("getattr(record, 'name')", 'getattr'),
                ("setattr(record, 'name', 1)", 'setattr'),
                ("vars(record)", 'vars'),
                ("globals()", 'globals'),
                ("locals()", 'locals'),
                ("type(record)", 'type'),
                ("dir(record)", 'dir'),
                ("compile('1', 'x', 'eval')", 'compile'),
                ("object", 'object'),
                ("breakpoint()", 'breakpoint'),
                ("Markup('x')", 'Markup'),
                ("UndefinedError", 'UndefinedError'),
                # a comprehension's iterable named like its target is one
                # that Genshi leaves to Python
                ("[e for eval in [eval] for e in [eval]]", 'eval'),
                ("(lambda open=open: open)()", 'open'),
                ]:
            self.assertRefused(
                mailing.check_body, f'<p>${{{source}}}</p>', needle)

    def test_work_of_c_code(self):
        """What Python's C code would compute at once from constants, with
        no time limit to stop it, is refused with the bound it passes"""
        for source, needle in [
                ("'x' * 20000000", "the repetition would hold 20,000,000"),
                ("'%0999999999d' % 0", "the width '%0999999999d'"),
                ("'%.999999999f' % x", "the precision"),
                ("'%*d' % (999999999, 0)", "'*'"),
                ("format(0, '0999999999')", "the width of '0999999999'"),
                ("format(1.5, '.999999999f')", "the precision"),
                ("name.zfill(999999999)", "zfill()"),
                ("name.ljust(999999999)", "ljust()"),
                ("name.center(999999999, '-')", "center()"),
                ]:
            self.assertRefused(
                mailing.check_body, f'<p>${{{source}}}</p>', needle)
        self.assertRefused(
            mailing.check_title, '${(1 << 24000000) > 0}',
            "${(1 << 24000000) > 0}: the shift would make a number of "
            "24,000,001 bits")
        self.assertRefused(
            mailing.check_title, '${(2 ** 2) * 1}', 'power operator')

    def test_python_syntax(self):
        "f-strings, assignment expressions and comprehensions of sets"
        for source, needle in [
                ("f'{record.__class__}'", "formatted strings"),
                ("f'{name}'", "formatted strings"),
                ("(c := record)", "assignment expressions"),
                ("{c for c in name}", "set comprehensions"),
                ("{c: c for c in name}", "dictionary comprehensions"),
                ("2 ** 10 ** 8", "power operator"),
                ]:
            self.assertRefused(
                mailing.check_body, f'<p>${{{source}}}</p>', needle)

    def test_directives(self):
        "The expressions of every directive are checked"
        for source in [
                '<p py:with="c=record.__class__">${c}</p>',
                '<p py:for="c in record.__class__">${c}</p>',
                '<p py:def="leak(c=record.__class__)">${c}</p>',
                '<p py:attrs="{\'title\': record.__class__}">x</p>',
                '<p py:content="record.__class__">x</p>',
                '<p py:replace="record.__class__">x</p>',
                '<p py:strip="record.__class__">x</p>',
                '<p py:if="record.__class__">x</p>',
                '<div py:choose="record.__class__">'
                '<p py:when="1">x</p></div>',
                '<div py:choose=""><p py:when="record.__class__">x</p>'
                '</div>',
                '<a href="${record.__class__}">x</a>',
                ]:
            self.assertRefused(mailing.check_body, source, '__class__')

    def test_title_directives(self):
        "The title's directives are checked as the body's"
        for source in [
                "{% with c=record.__class__ %}${c}{% end %}",
                "{% for c in record.__class__ %}${c}{% end %}",
                "{% def leak(c=record.__class__) %}${c}{% end %}",
                "{% if record.__class__ %}x{% end %}",
                "{% choose record.__class__ %}{% when 1 %}x{% end %}"
                "{% end %}",
                ]:
            self.assertRefused(mailing.check_title, source, '__class__')

    def test_python_blocks(self):
        "Neither the body nor the title may run a Python block"
        self.assertRefused(
            mailing.check_body, '<?python x = 1 ?><p>${x}</p>',
            'Python code blocks')
        for source in [
                "{% python x = 1 %}${x}",
                "{% if True %}{% python x = 1 %}{% end %}",
                "{% python s = [o for open in [open] for o in [open]][0]"
                "('/etc/passwd').read() %}${s}",
                "{% python s = '{0._record}'.format(record) %}${s}",
                ]:
            self.assertRefused(mailing.check_title, source, 'python')

    def test_includes(self):
        "Templates include no file"
        self.assertRefused(
            mailing.check_body,
            '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
            'href="/etc/passwd" parse="text"/>', '/etc/passwd')
        self.assertRefused(
            mailing.check_title, "{% include /etc/passwd %}", '/etc/passwd')

    def test_external_entity(self):
        "An XML entity does not read a file"
        self.assertRefused(
            mailing.check_body,
            '<!DOCTYPE html [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
            '<html xmlns="http://www.w3.org/1999/xhtml"><body>&e;</body>'
            '</html>', 'not well-formed')
        self.assertRefused(
            mailing.check_body, '<p>&e;</p>', 'undefined entity')

    @unittest.skipUnless(mailing.mrml, "mrml is not installed")
    def test_mjml(self):
        "An MJML template includes no file and is checked as the others"
        self.assertRefused(
            mailing.check_body,
            '<mjml><mj-body><mj-include path="/etc/passwd"/></mj-body>'
            '</mjml>', 'MJML')
        self.assertRefused(
            mailing.check_body,
            '<mjml><mj-body><mj-section><mj-column><mj-text>'
            '${record.__class__}</mj-text></mj-column></mj-section>'
            '</mj-body></mjml>', '__class__')


class RefusedOnRenderTestCase(unittest.TestCase):
    """What only rendering can tell: refused as a fault of the template,
    whoever the recipient"""

    def assertFault(self, source, needle):
        with self.subTest(source=source):
            templates = mailing.compile_templates(
                "Hello", f'<p>${{{source}}}</p>')
            with self.assertRaises(mailing.RenderError) as cm:
                mailing.render(templates, {
                        'datetime': sandbox.DATETIME,
                        'name': "Ann",
                        'items': [1],
                        'person': {'name': "Ann"},
                        'shout': lambda text: text + '!',
                        'record': Record(),
                        })
            self.assertTrue(cm.exception.fault, msg=str(cm.exception))
            self.assertIn(f'${{{source}}}', str(cm.exception))
            self.assertIn(needle, str(cm.exception))

    def test_datetime_is_no_module(self):
        "datetime gives its classes, not the module and what it imports"
        self.assertFault("datetime.sys.modules['os']", "'sys'")
        self.assertFault("datetime.sys", "'sys'")
        self.assertFault("datetime.date.fromtimestamp(0)", 'fromtimestamp')
        self.assertFault("datetime.timezone.utc.utcoffset(None)", 'utcoffset')
        self.assertFault("datetime.datetime.now().tzinfo", 'tzinfo')
        self.assertFault("datetime['date']", 'items')

    def test_unlisted_attributes(self):
        "What is on no list is refused"
        self.assertFault("name.encode('utf-8')", 'encode')
        self.assertFault("items.append(1)", 'append')
        self.assertFault("(1).bit_length()", 'bit_length')
        self.assertFault("(x for x in [1]).send", 'generator')
        self.assertFault("short.func", 'partial')
        self.assertFault("shout.x", 'function')
        self.assertFault("shout['x']", 'items')
        self.assertFault("unknown_name", 'unknown_name')

    def test_items_are_read_as_attributes(self):
        "An item of a value is refused as its attribute would be"
        self.assertFault("record['__class__']", '__class__')
        self.assertFault("record['write']", 'write')
        self.assertFault("record[1]", 'names of its fields')

    def test_range(self):
        "range() of more than MAX_RANGE numbers is refused"
        self.assertFault("range(1000000000)", 'range()')
        self.assertFault(f"range({MAX_RANGE + 1})", 'range()')

    def test_work_of_c_code(self):
        """What Python's C code would compute at once is refused before it
        starts, as a fault of the template that names the expression"""
        self.assertFault("any(iter(int, 1))", "iter() with a sentinel")
        self.assertFault("name * 10000000", "the repetition")
        self.assertFault("items * 10000000", "the repetition")
        for source, needle in [
                ("len(name) << 24000000", "the shift"),
                ("int('9' * 4000) * (1 << 60000)", "the product would make"),
                ]:
            # a text template, where '<' needs no escaping
            templates = mailing.compile_templates(f"${{{source}}}", "<p/>")
            with self.assertRaises(mailing.RenderError) as cm:
                mailing.render(templates, {'name': "Ann"})
            self.assertTrue(cm.exception.fault)
            self.assertIn(f"${{{source}}}: {needle}", str(cm.exception))
        self.assertFault("(name[:0] + '%0999999999d') % 0", "the width")
        self.assertFault("format(0, name[:0] + '09999999')", "the width")
        self.assertFault("name.zfill(len(name) * 99999999)", "zfill()")
        self.assertFault("'-'.join(['x'] * 3000000)", "the join")
        self.assertFault("name.replace('', 'x' * 4000000)", "replacement")
        self.assertFault("sum([[0]] * 3, [])", "sum() adds numbers only")
        self.assertFault("sum(items, name)", "sum() adds numbers only")

    def test_time_limit_stays_in_its_block(self):
        """A timeout raised by the watchdog while the rendering leaves its
        block is withdrawn: it never surfaces in the code that follows"""
        watchdog = sandbox._Watchdog()
        thread = threading.get_ident()

        def fire_while_released():
            # the deadline passes just as the thread leaves the block, while
            # it waits to stop being watched
            with watchdog._lock:
                while sys._current_frames()[thread].f_code.co_name != (
                        'release'):
                    time.sleep(0.001)
                watchdog._fire(thread)

        helper = threading.Thread(target=fire_while_released)
        watchdog.watch(60)
        helper.start()
        try:
            watchdog.release()
            # what runs after the rendering
            total = sum(range(100000))
        except sandbox.RenderTimeout:
            self.fail("the timeout surfaced after its block")
        finally:
            helper.join()
        self.assertEqual(total, 4999950000)

    def test_include_of_an_expression(self):
        "An include whose target is computed is refused when rendering"
        templates = mailing.compile_templates(
            "Hello",
            '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" '
            'href="${\'/etc/\' + \'passwd\'}" parse="text"/>')
        with self.assertRaises(mailing.RenderError) as cm:
            mailing.render(templates, {})
        self.assertTrue(cm.exception.fault)
        self.assertIn('/etc/passwd', str(cm.exception))

    def test_shadowed_builtins(self):
        """A name that Genshi leaves to Python finds no builtin but those
        of templates"""
        self.assertFault(
            "[x for repr in [repr] for x in [repr(name)]]", 'repr')
        self.assertFault("(lambda hash=hash: hash)()(name)", 'hash')
        self.assertFault(
            "[x for Exception in [Exception] for x in [Exception]]",
            'Exception')

    def test_time_limit(self):
        """A template whose loops take longer than its time limit is
        stopped, as a fault of the template"""
        for source in [
                '<div><py:for each="i in range(10000)">'
                '<py:for each="j in range(10000)"/></py:for></div>',
                '<p>${len([1 for a in range(10000) '
                'for b in range(10000)])}</p>',
                ]:
            with self.subTest(source=source):
                templates = mailing.compile_templates("Hello", source)
                start = time.monotonic()
                with self.assertRaises(mailing.RenderError) as cm:
                    mailing.render(templates, {}, timeout=0.3)
                self.assertTrue(cm.exception.fault)
                self.assertIn("too long", str(cm.exception))
                self.assertLess(time.monotonic() - start, 5)
        # the limit ends with its rendering
        templates = mailing.compile_templates("Hello", '<p>${name}</p>')
        mailing.render(templates, {'name': "Ann"}, timeout=0.2)
        time.sleep(0.5)

    def test_error_of_a_value_is_no_fault(self):
        "A value that fails for one recipient is that recipient's error"
        for source, context in [
                ("1 / zero", {'zero': 0}),
                ("'%(name)s' % person", {'person': ['Ann']}),
                ("format(name, '{0.__class__}')", {'name': "Ann"}),
                ]:
            with self.subTest(source=source):
                templates = mailing.compile_templates(
                    "Hello", f'<p>${{{source}}}</p>')
                with self.assertRaises(mailing.RenderError) as cm:
                    mailing.render(templates, context)
                self.assertFalse(cm.exception.fault)


class Record(sandbox.Exposed):
    "A value that, as records, tells the sandbox itself what may be read"
    __slots__ = ()

    def expose(self, name):
        if name == 'name':
            return "Ann"
        raise sandbox.UnknownName(name)


# The escape corpus.  PROOF is a file that an escape would create, SECRET a
# file whose content must reach no email; both are replaced by paths in a
# temporary directory.
Attempt = namedtuple('Attempt', ['kind', 'stage', 'title', 'body', 'needle'])
SAVE, RENDER = 'save', 'render'
TITLE, BODY = "Offer", "<p>Our offer</p>"
XI = 'xmlns:xi="http://www.w3.org/2001/XInclude"'
XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'
SYSTEM_ID = 'id > PROOF'
SHELL = f"__import__('os').system('{SYSTEM_ID}')"
# real builtins through a comprehension whose iterable Genshi leaves to
# Python when it is named like the target
EVAL = '[e for eval in [eval] for e in [eval]][0]'
OPEN = '[o for open in [open] for o in [open]][0]'
POOL = "__import__('trytond.pool', fromlist=['Pool']).Pool()"
RENAME_ZED = (
    "(lambda P: P.write(P.search([('name', '=', 'Zed Zimmer')]), "
    "{'name': 'Pwned'}))(" + POOL + ".get('party.party'))")
ADMIN_PASSWORD = (
    "(lambda U: U.write(U.search([('login', '=', 'admin')]), "
    "{'password': 'Pwned-4-ever!Xq9'}))(" + POOL + ".get('res.user'))")


def expression(kind, stage, source, needle=None):
    "The attempt of the expression source in the body"
    return Attempt(kind, stage, TITLE, f'<p>${{{source}}}</p>',
        needle or f'${{{source}}}')


def body(kind, stage, template, needle):
    return Attempt(kind, stage, TITLE, template, needle)


def title(kind, stage, template, needle):
    return Attempt(kind, stage, template, BODY, needle)


CORPUS = [
    # Attribute walks to classes, modules and globals
    expression('attribute', SAVE, 'record.__class__'),
    expression('attribute', SAVE, 'record.__class__.__mro__', '__mro__'),
    expression('attribute', SAVE,
        '().__class__.__bases__[0].__subclasses__()', '__subclasses__'),
    expression('attribute', SAVE, 'record.__init__.__globals__',
        '__globals__'),
    expression('attribute', SAVE, 'record.__reduce_ex__(2)',
        '__reduce_ex__'),
    expression('attribute', SAVE, 'record.__dict__', '__dict__'),
    expression('attribute', SAVE, 'record._values', '_values'),
    expression('attribute', SAVE,
        'record._record.create_uid.password_hash', '_record'),
    expression('attribute', SAVE, 'record.__class__.__name__'),
    expression('attribute', RENDER,
        f"datetime.sys.modules['os'].system('{SYSTEM_ID}')",
        "datetime has no 'sys'"),
    expression('attribute', SAVE, 'datetime.date.__module__',
        '__module__'),
    expression('attribute', SAVE, 'datetime.datetime.mro()'),
    expression('attribute', SAVE, 'format_date.__self__', '__self__'),
    expression('attribute', SAVE, "format_date.__func__.__globals__",
        '__globals__'),
    expression('attribute', SAVE, 'datetime.datetime.now.__self__',
        '__self__'),
    expression('attribute', SAVE, 'format_date.__wrapped__',
        '__wrapped__'),
    expression('attribute', SAVE, "record.lang.__class__.search([])"),
    expression('attribute', SAVE, "record.addresses[0].__class__"),
    expression('attribute', RENDER, 'short.func'),
    expression('attribute', SAVE, "record.__getattribute__('__class__')",
        '__getattribute__'),
    expression('attribute', SAVE, "''.join.__self__", '__self__'),
    expression('attribute', RENDER, "record | attr('__class__')",
        "'attr' is not defined"),
    # String formatting that walks attributes and items
    expression('formatting', SAVE, "'{0.__class__}'.format(record)"),
    expression('formatting', SAVE,
        "'{0.create_uid.password_hash}'.format(record)"),
    expression('formatting', SAVE,
        "'{0.__init__.__globals__}'.format(record)"),
    expression('formatting', SAVE,
        "'{x.__class__}'.format_map({'x': record})"),
    expression('formatting', SAVE, "str.format('{0.__class__}', record)"),
    expression('formatting', RENDER, "'%(name)s' % record"),
    expression('formatting', RENDER, "format(record, '{0.__class__}')"),
    expression('formatting', RENDER,
        "'%s' % record.create_uid.password_hash"),
    # Builtins that reach code, files and attributes
    expression('builtin', SAVE, "open('SECRET').read()"),
    expression('builtin', SAVE, SHELL, '__import__'),
    expression('builtin', SAVE, f'eval("{SHELL}")'),
    expression('builtin', SAVE, f'exec("{SHELL}")'),
    expression('builtin', SAVE, "getattr(record, '__class__')"),
    expression('builtin', SAVE, 'vars(record)'),
    expression('builtin', SAVE, 'globals()'),
    expression('builtin', SAVE, 'locals()'),
    expression('builtin', SAVE, 'type(record)'),
    expression('builtin', SAVE, 'dir(record)'),
    expression('builtin', SAVE, "compile('1', 'x', 'eval')"),
    expression('builtin', SAVE, 'object.__subclasses__()',
        '__subclasses__'),
    expression('builtin', SAVE, 'breakpoint()'),
    expression('builtin', SAVE, f'{EVAL}("{SHELL}")'),
    expression('builtin', SAVE, f"{OPEN}('SECRET').read()"),
    expression('builtin', RENDER,
        '[r for repr in [repr] for r in [repr(record)]]', "'repr'"),
    expression('builtin', RENDER, "(lambda print=print: print)()('x')",
        "'print'"),
    # Generators, frames and functions
    expression('frame', SAVE, '(x for x in [1]).gi_frame.f_globals'),
    expression('frame', SAVE, '(lambda: 0).__globals__', '__globals__'),
    expression('frame', SAVE, '(lambda: 0).__code__', '__code__'),
    expression('frame', SAVE, 'sorted([record], key=lambda r: r.__class__)'),
    expression('frame', RENDER, '(x for x in [record]).send'),
    # Record methods that write, search or delete
    expression('method', SAVE, "record.write([record], {'name': 'Pwned'})"),
    expression('method', SAVE, 'record.search([])'),
    expression('method', SAVE, 'record.save()'),
    expression('method', SAVE, 'record.delete([record])'),
    expression('method', SAVE,
        "record.create_uid.__class__.write("
        "record.create_uid.__class__.search([('login', '=', 'admin')]), "
        "{'password': 'Pwned-4-ever!Xq9'})"),
    expression('method', SAVE, 'record.__class__.search([])'),
    expression('method', SAVE, 'record.browse([1])'),
    expression('method', SAVE, 'record.pool'),
    expression('method', RENDER,
        "record.create_uid.set_preferences({'name': 'Pwned'})",
        'set_preferences'),
    expression('method', RENDER, 'record.get_rec_name(None)',
        'get_rec_name'),
    # Fields that no template reads
    expression('field', RENDER, 'record.create_uid.password_hash',
        'password_hash'),
    expression('field', RENDER, 'record.create_uid.password_reset',
        'password_reset'),
    expression('field', RENDER, 'record.create_uid.login', "'login'"),
    expression('field', RENDER, 'record.create_uid.groups', "'groups'"),
    expression('field', RENDER, 'record.write_uid.password',
        "'password'"),
    # Items
    expression('item', RENDER, "record['__class__']"),
    expression('item', RENDER, "record['write']"),
    expression('item', RENDER, "format_date['x']"),
    expression('item', RENDER, "datetime['sys']"),
    # Genshi features of the body
    body('genshi', SAVE, f"<?python import os; os.system('{SYSTEM_ID}') ?>",
        'Python code blocks'),
    body('genshi', SAVE,
        f'<xi:include {XI} href="SECRET" parse="text"/>', 'include'),
    body('genshi', RENDER,
        f'<xi:include {XI} href="${{\'SECRET\'}}" parse="text"/>',
        'include'),
    body('genshi', SAVE,
        '<p py:with="c=record.__class__">${c.search([])}</p>', '__class__'),
    body('genshi', SAVE,
        '<p py:for="c in record.__class__.__mro__">${c}</p>', '__mro__'),
    body('genshi', SAVE,
        '<p py:def="leak(c=record.__class__)">${c}</p>${leak()}',
        '__class__'),
    body('genshi', SAVE,
        '<p py:attrs="{\'title\': record.__class__}">x</p>', '__class__'),
    body('genshi', SAVE,
        '<p py:content="record.create_uid.__class__">x</p>', '__class__'),
    body('genshi', SAVE, '<p py:if="record.__dict__">x</p>', '__dict__'),
    body('genshi', SAVE, '<a href="${record.__class__}">x</a>',
        '__class__'),
    # The title, a text template
    title('title', SAVE, '${record.__class__}', '${record.__class__}'),
    title('title', SAVE, f"{{% python import os; os.system('{SYSTEM_ID}') %}}",
        'import'),
    title('title', SAVE, f'{{% python {EVAL}("{SHELL}") %}}done', 'python'),
    title('title', SAVE,
        f"{{% python s = {OPEN}('SECRET').read() %}}${{s}}", 'python'),
    title('title', SAVE,
        "{% python s = '{0._record.create_uid.password_hash}'"
        ".format(record) %}${s}", 'python'),
    title('title', SAVE, f'{{% python {EVAL}("{RENAME_ZED}") %}}done',
        'python'),
    title('title', SAVE, f'{{% python {EVAL}("{ADMIN_PASSWORD}") %}}done',
        'python'),
    title('title', SAVE, '{% include SECRET %}', 'include'),
    title('title', RENDER, "{% include ${'SECRET'} %}", 'include'),
    title('title', SAVE, '{% with c=record.__class__ %}${c}{% end %}',
        '__class__'),
    # What the parsers could read from the disk
    body('parser', SAVE,
        f'<!DOCTYPE html [<!ENTITY e SYSTEM "file://SECRET">]>'
        f'<html {XHTML}><body><p>&e;</p></body></html>', 'not well-formed'),
    body('parser', SAVE,
        '<mjml><mj-body><mj-include path="SECRET"/></mj-body></mjml>',
        'MJML'),
    body('parser', SAVE,
        '<mjml><mj-body><mj-section><mj-column><mj-text>'
        '${record.__class__}</mj-text></mj-column></mj-section></mj-body>'
        '</mjml>', '${record.__class__}'),
    # Python syntax that Genshi does not translate
    expression('syntax', SAVE, "f'{record.__class__}'",
        'formatted strings'),
    expression('syntax', SAVE, '(c := record.create_uid)',
        'assignment expressions'),
    expression('syntax', SAVE, '{c for c in record.addresses}',
        'set comprehensions'),
    # Work without end
    expression('resource', RENDER, 'range(1000000000)', 'range()'),
    expression('resource', RENDER, 'list(range(100000))', 'range()'),
    expression('resource', SAVE, '10 ** 10 ** 8', 'power operator'),
    # Work that Python's C code does at once, where no time limit reaches
    expression('c-level', RENDER, 'any(iter(int, 1))',
        'iter() with a sentinel'),
    body('c-level', RENDER, '<p py:for="i in iter(int, 1)">x</p>',
        'iter() with a sentinel'),
    expression('c-level', RENDER, "(' ' + chr(0)) * 6000000",
        'the repetition'),
    expression('c-level', SAVE, "'x' * 20000000", 'the repetition'),
    expression('c-level', RENDER, "'x' * 10 * 1000000000", 'the repetition'),
    title('c-level', SAVE,
        '${((1 << 24000000) - 1) * ((1 << 24000000) - 3) > 0}',
        'the shift'),
    title('c-level', RENDER, '${len(record.name) << 24000000}',
        'the shift'),
    title('c-level', RENDER, "${int('9' * 4000) * (1 << 60000) > 0}",
        'the product'),
    expression('c-level', SAVE, "'%0999999999d' % 0", 'width'),
    expression('c-level', SAVE, "'%.999999999f' % 0", 'precision'),
    expression('c-level', SAVE, "'%*d' % (999999999, 0)", "'*'"),
    expression('c-level', RENDER, "(record.name[:0] + '%0999999999d') % 0",
        'width'),
    expression('c-level', SAVE, "format(0, '0999999999')", 'width'),
    expression('c-level', SAVE, "format(1.5, '.999999999f')", 'precision'),
    expression('c-level', SAVE, "'a'.zfill(999999999)", 'zfill()'),
    expression('c-level', SAVE, "'a'.ljust(999999999)", 'ljust()'),
    expression('c-level', SAVE, "'a'.center(999999999)", 'center()'),
    expression('c-level', SAVE, "record.name.rjust(999999999)",
        'rjust()'),
    expression('c-level', RENDER, "'-'.join(['x'] * 3000000)", 'the join'),
    expression('c-level', RENDER, "record.name.replace('', 'x' * 4000000)",
        'the replacement'),
    expression('c-level', RENDER, 'sum([[0] * 100] * 100, [])', 'sum()'),
    # what the guards let through: stopped by the render box
    expression('c-level', RENDER,
        '[[0] * 5000000] * 5000000 == [[0] * 5000000] * 5000000',
        'too long'),
    expression('c-level', RENDER, 'str([[0] * 5000000] * 5000000)',
        'render'),
    # An email too heavy to send
    expression('size', RENDER, "'x' * 4000000", 'weighs more than'),
    body('size', RENDER,
        '<p py:for="i in range(10000)">${record.name * 100}</p>',
        '${record.name * 100} (line 1)'),
    ]

ORDINARY_TITLE = "Hello ${record.name}"
ORDINARY_BODY = (
    '<p>Dear ${record.rec_name},</p>'
    '<p py:if="record.lang">Language: ${record.lang.name}</p>'
    '<ul><li py:for="category in record.categories">${category.name}</li>'
    '</ul>'
    '<p py:for="address in record.addresses">City: ${address.city}</p>'
    '<p py:with="first=record.name.split()[0]">'
    'First name: ${first.upper()}</p>'
    '<p>Date: ${format_date(datetime.date(2024, 5, 1))}</p>'
    '<p>Later: ${format_date(datetime.date(2024, 5, 1)'
    ' + datetime.timedelta(days=2))}</p>'
    '<p>Amount: ${format_number(1234.5, None, 2)}</p>'
    '<p py:choose="">'
    '<span py:when="record.id > 0">Known</span>'
    '<span py:otherwise="">New</span></p>'
    '<p><a href="https://shop.example.com/">Shop</a> '
    '<a href="unsubscribe">Unsubscribe</a></p>')


class EscapeCorpusTestCase(SendingTestMixin, TestCase):
    """Escape attempts saved by a marketer and run by the crons are refused
    and have no effect"""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        drop_db()
        cls.addClassCleanup(drop_db)
        activate_module('marketing_automation')

    def setUp(self):
        super().setUp()
        self.smtp = SMTPServer().start()
        self.addCleanup(self.smtp.stop)
        self.configure({
                ('email', 'uri'): self.smtp.uri(timeout=5),
                ('marketing', 'automation_base'): 'http://localhost:8000',
                ('marketing', 'email_from'): 'news@example.com',
                # the render box stops what the guards let through
                ('marketing', 'render_timeout'): '2',
                })
        self.addCleanup(self.stop_scenarios)
        directory = tempfile.mkdtemp(prefix='marketing-sandbox-')
        self.addCleanup(shutil.rmtree, directory, ignore_errors=True)
        self.directory = directory
        self.proof = os.path.join(directory, 'proof.txt')
        self.secret = 'secret-' + secrets.token_hex(16)
        self.secret_path = os.path.join(directory, 'secret.txt')
        with open(self.secret_path, 'w') as file:
            file.write(self.secret)

    def aimed(self, text):
        "The text of an attempt aimed at the files of this test"
        return text.replace('PROOF', self.proof).replace(
            'SECRET', self.secret_path)

    def create_people(self, login='mia'):
        """Create Ann and Bob, who enter the scenario, Zed, who does not,
        and a marketer of login; give the administrator a password"""
        with committed():
            pool = Pool()
            Party = pool.get('party.party')
            Category = pool.get('party.category')
            Lang = pool.get('ir.lang')
            User = pool.get('res.user')
            ModelData = pool.get('ir.model.data')
            vip, = Category.search([('name', '=', "VIP")]) or (
                Category.create([{'name': "VIP"}]))
            english, = Lang.search([('code', '=', 'en')])
            ann, bob, zed = Party.create([{
                        'name': "Ann Archer",
                        'lang': english.id,
                        'categories': [('add', [vip.id])],
                        'addresses': [('create', [{'city': "Liège"}])],
                        'contact_mechanisms': [('create', [{
                                        'type': 'email',
                                        'value': 'ann@example.com',
                                        }])],
                        }, {
                        'name': "Bob Baker",
                        'addresses': [('create', [{'city': "Namur"}])],
                        'contact_mechanisms': [('create', [{
                                        'type': 'email',
                                        'value': 'bob@example.com',
                                        }])],
                        }, {
                        'name': "Zed Zimmer",
                        'contact_mechanisms': [('create', [{
                                        'type': 'email',
                                        'value': 'zed@example.com',
                                        }])],
                        }])
            marketer, = User.create([{
                        'name': "Mia Marketer",
                        'login': login,
                        'password': 'Hx3&nB8*tR5^yJ1%',
                        'groups': [('add', [ModelData.get_id(
                                        'marketing', 'group_marketing')])],
                        }])
            admin, = User.search([('login', '=', 'admin')])
            User.write([admin], {'password': 'Fd6!sW9#cE2@uM7$'})
            return ann.id, bob.id, zed.id, marketer.id

    def as_marketer(self, marketer):
        """A transaction of the marketer with the access checks on, committed
        at the end unless rolled back"""
        return Transaction().start(
            DB_NAME, marketer, context={'_check_access': True})

    def save_attempts(self, marketer, scenario):
        """Let the marketer save each attempt, and store those refused as
        templates saved before the checks existed would be

        Return the activity id of each attempt and the message of each
        refusal by the index of its attempt."""
        names = [f"Attempt {i}" for i in range(len(CORPUS))]
        refusals, refused = {}, []
        for name, attempt in zip(names, CORPUS):
            title, body = self.aimed(attempt.title), self.aimed(attempt.body)
            with self.as_marketer(marketer) as transaction:
                Activity = Pool().get('marketing.automation.activity')
                try:
                    Activity.create([{
                                'name': name,
                                'parent': scenario,
                                'action': 'send_email',
                                'email_title': title,
                                'email_template': body,
                                }])
                except ValidationError as exception:
                    transaction.rollback()
                    refusals[name] = exception.message
                    refused.append(
                        [marketer, dt.datetime.now(), name, scenario,
                            'send_email', title, body, False, 'scenario'])
                else:
                    transaction.commit()
        with committed():
            Activity = Pool().get('marketing.automation.activity')
            table = Activity.__table__()
            cursor = Transaction().connection.cursor()
            # as written before the checks, through the table
            cursor.execute(*table.insert([
                        table.create_uid, table.create_date, table.name,
                        table.parent, table.action, table.email_title,
                        table.email_template, table.negative,
                        table.send_window], refused))
            ids = {a.name: a.id for a in Activity.search([
                        ('parent', '=', scenario)])}
        return ([ids[n] for n in names],
            {i: refusals[n] for i, n in enumerate(names) if n in refusals})

    def observe(self, zed, marketer):
        "What an escape could change"
        with Transaction().start(DB_NAME, 0, readonly=True):
            pool = Pool()
            User = pool.get('res.user')
            Party = pool.get('party.party')
            user = User.__table__()
            cursor = Transaction().connection.cursor()
            cursor.execute(*user.select(
                    user.id, user.login, user.password_hash, user.name,
                    order_by=[user.id]))
            users = cursor.fetchall()
            return {
                'users': users,
                'groups': sorted(g.id for g in User(marketer).groups),
                'zed': Party(zed).name,
                'parties': Party.search([], count=True),
                'files': sorted(os.listdir(self.directory)),
                }

    def start_scenario(self, marketer, party_ids):
        """Let the marketer save a scenario over the parties with the corpus
        and the ordinary activity, and run it

        Return the activity ids of the corpus, the refusals on save by the
        index of their attempt and the ordinary activity id."""
        with self.as_marketer(marketer) as transaction:
            Scenario = Pool().get('marketing.automation.scenario')
            scenario, = Scenario.create([{
                        'name': "Spring",
                        'model': 'party.party',
                        'domain': PYSONEncoder().encode(
                            [('id', 'in', party_ids)]),
                        }])
            transaction.commit()
        ids, refusals = self.save_attempts(marketer, str(scenario))
        with self.as_marketer(marketer) as transaction:
            pool = Pool()
            Activity = pool.get('marketing.automation.activity')
            Scenario = pool.get('marketing.automation.scenario')
            ordinary, = Activity.create([{
                        'name': "Ordinary",
                        'parent': str(scenario),
                        'action': 'send_email',
                        'email_title': ORDINARY_TITLE,
                        'email_template': ORDINARY_BODY,
                        }])
            Scenario.run([Scenario(scenario.id)])
            transaction.commit()
        return ids, refusals, ordinary.id

    def run_crons(self):
        "Run the crons as trytond-cron does, and the tasks they queue"
        with committed(user=0):
            Pool().get('marketing.automation.scenario').trigger()
        with committed(user=0):
            Pool().get('marketing.automation.record.activity').process()

    def test_escape_corpus(self):
        """Every escape attempt is refused, on save when the checks can see
        it and always when the cron renders it, with no effect; the
        ordinary template is sent"""
        self.assertGreaterEqual(len(CORPUS), 40)
        ann, bob, zed, marketer = self.create_people()
        before = self.observe(zed, marketer)
        admin_hash = dict((u[1], u[2]) for u in before['users'])['admin']
        self.assertTrue(admin_hash)

        ids, refusals, ordinary = self.start_scenario(marketer, [ann, bob])
        for index, attempt in enumerate(CORPUS):
            with self.subTest(attempt=index, stage='save', kind=attempt.kind,
                    title=attempt.title, body=attempt.body):
                if attempt.stage == SAVE:
                    self.assertIn(index, refusals, msg="saved")
                if index in refusals:
                    self.assertIn(
                        self.aimed(attempt.needle), refusals[index])

        # each paused activity logs its error once
        with self.assertLogs('trytond.modules.marketing_automation', 'ERROR'):
            self.run_crons()

        after = self.observe(zed, marketer)
        with self.subTest(effect="command"):
            self.assertFalse(os.path.exists(self.proof), msg=self.proof)
        for name in before:
            with self.subTest(effect=name):
                self.assertEqual(after[name], before[name])

        received = self.smtp.received()
        self.assertNoLeak(received, [
                self.secret, admin_hash, config.get('database', 'uri'),
                'uid=', '<class', 'Pwned'])
        self.assertEqual(
            sorted(r for m in received for r in m.rcpt_tos),
            ['ann@example.com', 'bob@example.com'],
            msg=[parse_message(m.data)['Subject'] for m in received])
        self.assertOrdinaryEmails(received)

        with Transaction().start(DB_NAME, 0, readonly=True):
            pool = Pool()
            Activity = pool.get('marketing.automation.activity')
            RecordActivity = pool.get('marketing.automation.record.activity')
            entries = RecordActivity.search([('activity', '=', ordinary)])
            self.assertEqual(
                [(e.state, e.email_sent) for e in entries],
                [('done', True)] * 2)
            self.assertFalse(Activity(ordinary).error)
            for index, attempt in enumerate(CORPUS):
                with self.subTest(attempt=index, stage='render',
                        kind=attempt.kind, title=attempt.title,
                        body=attempt.body):
                    activity = Activity(ids[index])
                    self.assertTrue(activity.error, msg="not paused")
                    self.assertIn(
                        self.aimed(attempt.needle), activity.error)
                    entries = RecordActivity.search([
                            ('activity', '=', activity.id)])
                    self.assertEqual(
                        [(e.state, e.email_sent) for e in entries],
                        [('waiting', False)] * 2)

    def test_records_outside_the_rights_are_not_shown(self):
        """A template shows nothing of the records its author may not read:
        not their fields, not their ids, not how many there are"""
        ann, bob, zed, marketer = self.create_people(login='max')
        with committed():
            pool = Pool()
            Category = pool.get('party.category')
            Party = pool.get('party.party')
            RuleGroup = pool.get('ir.rule.group')
            ModelData = pool.get('ir.model.data')
            vip, = Party(ann).categories
            secret, = Category.create([{'name': "Secret"}])
            Category.write([vip], {'parent': secret.id})
            Party.write([Party(ann)], {
                    'categories': [('add', [secret.id])]})
            RuleGroup.create([{
                        'name': "Marketing reads no secret category",
                        'model': 'party.category',
                        'global_p': False,
                        'default_p': False,
                        'groups': [('add', [ModelData.get_id(
                                        'marketing', 'group_marketing')])],
                        'rules': [('create', [{
                                        'domain': PYSONEncoder().encode(
                                            [('name', '!=', "Secret")]),
                                        }])],
                        }])
            secret_id, vip_id = secret.id, vip.id
        with self.as_marketer(marketer) as transaction:
            pool = Pool()
            Scenario = pool.get('marketing.automation.scenario')
            scenario, = Scenario.create([{
                        'name': "Categories",
                        'model': 'party.party',
                        'domain': PYSONEncoder().encode(
                            [('id', 'in', [ann, bob])]),
                        'activities': [('create', [{
                                        'name': "Counted",
                                        'action': 'send_email',
                                        'email_title': (
                                            "${len(record.categories)}|"
                                            "${str(record.categories)}"),
                                        'email_template': (
                                            '<p py:for="c in '
                                            'record.categories">${c.name}'
                                            '</p>'),
                                        }, {
                                        'name': "Parent",
                                        'action': 'send_email',
                                        'email_title': "Parent",
                                        'email_template': (
                                            '<p py:for="c in '
                                            'record.categories">'
                                            '${c.parent}</p>'),
                                        }])],
                        }])
            Scenario.run([scenario])
            transaction.commit()

        self.run_crons()

        mails = {}
        for received in self.smtp.received():
            parsed = parse_message(received.data)
            mails[received.rcpt_tos[0], parsed['Subject']] = parsed
        self.assertEqual(sorted(mails), [
                ('ann@example.com', f"1|(party.category,{vip_id},)"),
                ('bob@example.com', "0|()"),
                ('bob@example.com', "Parent"),
                ])
        text = mails['ann@example.com', f"1|(party.category,{vip_id},)"
            ].get_body(('plain',)).get_content()
        self.assertEqual(text.split(), ["VIP"])
        self.assertNoLeak(self.smtp.received(), [
                "Secret", f"party.category,{secret_id}"])
        with Transaction().start(DB_NAME, 0, readonly=True):
            RecordActivity = Pool().get(
                'marketing.automation.record.activity')
            entry, = RecordActivity.search([
                    ('activity.name', '=', "Parent"),
                    ('record.record', '=', f'party.party,{ann}'),
                    ])
            self.assertEqual(entry.email_sent, False)
            self.assertIn(
                "may not read this party.category record", entry.error)
            self.assertNotIn(str(secret_id), entry.error)

    def assertNoLeak(self, received, leaks):
        "Assert that no text of leaks shows in the received messages"
        for message in received:
            parsed = parse_message(message.data)
            shown = '\n'.join([
                    message.data.decode('ascii', 'replace'),
                    str(parsed['Subject'])] + [
                    p.get_content() for p in parsed.walk()
                    if not p.is_multipart()])
            for leak in filter(None, leaks):
                with self.subTest(effect="leak", leak=leak):
                    self.assertNotIn(leak, shown)

    def assertOrdinaryEmails(self, received):
        "Assert that Ann and Bob read the ordinary email made for each"
        mails = {m.rcpt_tos[0]: parse_message(m.data) for m in received}
        ann, bob = mails['ann@example.com'], mails['bob@example.com']
        self.assertEqual(ann['Subject'], "Hello Ann Archer")
        self.assertEqual(bob['Subject'], "Hello Bob Baker")
        ann_text = ann.get_body(('plain',)).get_content()
        bob_text = bob.get_body(('plain',)).get_content()
        for line in [
                "Dear Ann Archer,", "Language: English", "* VIP",
                "City: Liège", "First name: ANN", "Date: 05/01/2024",
                "Later: 05/03/2024", "Amount: 1,234.50", "Known"]:
            self.assertIn(line, ann_text)
        for line in [
                "Dear Bob Baker,", "City: Namur", "First name: BOB",
                "Amount: 1,234.50"]:
            self.assertIn(line, bob_text)
        self.assertNotIn("Language:", bob_text)
        self.assertNotIn("VIP", bob_text)
        self.assertIn(
            "Dear Ann Archer,", ann.get_body(('html',)).get_content())
