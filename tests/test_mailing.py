# SPDX-License-Identifier: GPL-3.0-or-later
import email
import email.policy
import unittest
from datetime import datetime, timezone
from unittest import mock
from urllib.parse import parse_qs, urlsplit

from trytond.modules.marketing_automation import mailing, urls


def render(body, title="Hello", **context):
    templates = mailing.compile_templates(title, body)
    return mailing.render(templates, context)


def rendered_html(body, **context):
    "Render body and fill each link with a URL telling what it stands for"
    rendered = render(body, **context)
    urls = [
        f'https://s.example/{link.kind}/{link.url}' for link in rendered.links]
    return mailing.fill(rendered.html, urls)


def parse(message):
    "Parse the bytes of message as a mail client does"
    return email.message_from_bytes(message, policy=email.policy.default)


class RenderTestCase(unittest.TestCase):
    "Rendering the title and the body for one recipient"

    def test_title_is_one_line(self):
        rendered = render(
            "<p/>", title="Hello\n  ${name},\r\nnews\n", name="Ann")

        self.assertEqual(rendered.subject, "Hello Ann, news")

    def test_title_is_not_escaped(self):
        rendered = render("<p/>", title="${name} & co", name="<Ann>")

        self.assertEqual(rendered.subject, "<Ann> & co")

    def test_body_values_are_escaped(self):
        html = rendered_html(
            "<p>Hi ${name}</p>", name="<script>alert(1)</script>")

        self.assertIn("Hi &lt;script&gt;alert(1)&lt;/script&gt;", html)
        self.assertNotIn("<script>", html)

    def test_body_fragment(self):
        html = rendered_html(
            "Hi <b>${name}</b>!\n<p py:for='i in range(2)'>${i}</p>",
            name="Ann")

        self.assertTrue(html.startswith("Hi <b>Ann</b>!\n<p>0</p><p>1</p>"))

    def test_body_document(self):
        html = rendered_html(
            '<!DOCTYPE html>\n'
            '<html xmlns="http://www.w3.org/1999/xhtml">'
            '<body><p>${name}<br/></p></body></html>', name="Ann")

        self.assertTrue(html.startswith("<!DOCTYPE html>\n<html>"))
        self.assertIn("<p>Ann<br></p>", html)

    def test_tracked_link(self):
        rendered = render('<a href="https://example.com/?a=1&amp;b=2">Go</a>')
        html = mailing.fill(
            rendered.html, ['https://s.example/x?p=1&q="2"', 'https://i'])

        self.assertEqual(rendered.links, (
                (mailing.CLICK, 'https://example.com/?a=1&b=2'),
                (mailing.OPEN, None)))
        self.assertIn(
            '<a href="https://s.example/x?p=1&amp;q=&quot;2&quot;">Go</a>',
            html)
        self.assertNotIn('example.com', html)

    def test_link_from_an_expression(self):
        rendered = render(
            '<a href="https://example.com/${page}">Go</a>', page='news')

        self.assertEqual(
            rendered.links[0], (mailing.CLICK, 'https://example.com/news'))

    def test_same_link_twice_is_one_link(self):
        rendered = render(
            '<a href="https://example.com">A</a>'
            '<a href="https://example.com">B</a>')

        self.assertEqual(rendered.links, (
                (mailing.CLICK, 'https://example.com'),
                (mailing.OPEN, None)))
        html = mailing.fill(rendered.html, ['https://s/1', 'https://s/2'])
        self.assertEqual(html.count('href="https://s/1"'), 2)

    def test_unsubscribe_links(self):
        rendered = render(
            '<a href="unsubscribe">Stop</a>'
            '<a href="unsubscribe|https://example.com/bye">Stop</a>')

        self.assertEqual(rendered.links, (
                (mailing.UNSUBSCRIBE, None),
                (mailing.UNSUBSCRIBE, 'https://example.com/bye'),
                (mailing.OPEN, None)))

    def test_untracked_links(self):
        body = (
            '<a href="mailto:ann@example.com">Mail</a>'
            '<a href="tel:+3212345678">Call</a>'
            '<a href="#top">Top</a>'
            '<a href="">Empty</a>'
            '<a name="anchor">Anchor</a>')

        rendered = render(body)

        self.assertEqual(rendered.links, ((mailing.OPEN, None),))
        self.assertTrue(
            mailing.fill(rendered.html, ['https://i']).startswith(body))

    def test_pixel_before_end_of_body(self):
        html = rendered_html(
            '<html><body><p>Hi</p></body></html>')

        self.assertEqual(
            html,
            '<html><body><p>Hi</p>'
            '<img src="https://s.example/open/None" width="1" height="1" '
            'alt="" style="display:block;border:0"></body></html>')

    def test_pixel_at_end_of_fragment(self):
        html = rendered_html('<p>Hi</p>')

        self.assertEqual(
            html,
            '<p>Hi</p><img src="https://s.example/open/None" width="1" '
            'height="1" alt="" style="display:block;border:0">')

    def test_rendering_error(self):
        templates = mailing.compile_templates("Hi", "<p>${record.name}</p>")

        with self.assertRaises(mailing.RenderError) as cm:
            mailing.render(templates, {'record': None})

        self.assertIn("UndefinedError", str(cm.exception))
        self.assertIn('None has no member named "name"', str(cm.exception))

    def test_templates_serve_again_after_an_error(self):
        templates = mailing.compile_templates("Hi", "<p>${record.name}</p>")
        with self.assertRaises(mailing.RenderError):
            mailing.render(templates, {'record': None})

        rendered = mailing.render(templates, {'record': {'name': "Ann"}})

        self.assertIn("<p>Ann</p>", rendered.html)

    def test_error_of_a_context_function(self):
        def format_number(value):
            raise ValueError("bad number")
        templates = mailing.compile_templates(
            "${format_number(1)}", "<p/>")

        with self.assertRaisesRegex(
                mailing.RenderError, "ValueError: bad number"):
            mailing.render(templates, {'format_number': format_number})

    def test_error_in_title(self):
        templates = mailing.compile_templates("${missing}", "<p/>")

        with self.assertRaisesRegex(mailing.RenderError, "missing"):
            mailing.render(templates, {})


class CheckTestCase(unittest.TestCase):
    "Templates refused on save"

    def test_valid(self):
        mailing.check_title("Hello ${record.rec_name}")
        mailing.check_body("<p>Hello ${record.rec_name}</p>")

    def assertPointsAt(self, check, source, line, column, marker):
        """Assert that the error of source is at line and column (from 1)
        of what the marketer wrote, where marker starts"""
        with self.assertRaises(mailing.TemplateError) as raised:
            check(source)
        self.assertRegex(
            str(raised.exception), rf"\bline {line}, column {column}\b")
        start = source.split('\n')[line - 1][column - 1:]
        self.assertTrue(start.startswith(marker), msg=start)

    def test_invalid_title(self):
        self.assertPointsAt(mailing.check_title,
            "Hello ${record.rec_name(}", 1, 9, "record.rec_name(")

    def test_invalid_directive_in_title(self):
        "Genshi counts a line too many for each piece of a text template"
        self.assertPointsAt(mailing.check_title,
            "{% for r in records %}${r}{% end %}\nand {% for r %}x{% end %}",
            2, 5, "{% for r %}")

    def test_invalid_body(self):
        self.assertPointsAt(mailing.check_body,
            "<p>\nHello <b>${name}</p>", 2, 19, "p>")

    def test_one_line_body(self):
        """The error of a one-line body points into it, not into the
        element that wraps it on the same line"""
        self.assertPointsAt(mailing.check_body,
            '<p>Hello <b>${record.name}</p>', 1, 29, "p>")
        self.assertPointsAt(mailing.check_body,
            '<p>Fish &amp chips</p>', 1, 13, " chips")

    def test_element_left_open(self):
        "An element that is not closed is reported at the end of the body"
        self.assertPointsAt(mailing.check_body,
            '<p>Hello\n<b>${record.name}</b>', 2, 22, "")

    def test_whole_document(self):
        self.assertPointsAt(mailing.check_body,
            '<html><body><p>Hello</b></p></body></html>', 1, 23, "b>")

    def test_invalid_expression_in_body(self):
        self.assertPointsAt(mailing.check_body,
            "<p>\n<b>${name(}</b></p>", 2, 6, "name(")
        self.assertPointsAt(mailing.check_body,
            '<p>Hello</p><p py:if="record.active and">x</p>', 1, 23,
            "record.active and")

    def test_private_attribute_refused(self):
        for check, source in [
                (mailing.check_title, "${record._values}"),
                (mailing.check_body, "<p>${record.__dict__}</p>"),
                (mailing.check_body, "<?python import os ?><p/>"),
                ]:
            with self.subTest(source=source):
                with self.assertRaisesRegex(
                        mailing.TemplateError, "invalid|not allowed"):
                    check(source)

    def test_errors_are_value_errors(self):
        self.assertTrue(issubclass(mailing.TemplateError, ValueError))


class MJMLTestCase(unittest.TestCase):
    "Templates written in MJML"

    source = (
        '<mjml><mj-body><mj-section><mj-column>'
        '<mj-text>Hi ${name} <a href="https://example.com">Go</a></mj-text>'
        '<mj-button href="unsubscribe">Stop</mj-button>'
        '</mj-column></mj-section></mj-body></mjml>')

    def test_missing_compiler(self):
        with mock.patch.multiple(mailing, mrml=None, mjml2html=None):
            with self.assertRaisesRegex(
                    mailing.TemplateError, "no MJML compiler is installed"):
                mailing.check_body(self.source)

    def assertConverted(self):
        rendered = render(self.source, name="<Ann>")

        self.assertTrue(rendered.html.startswith('<!DOCTYPE html>'))
        self.assertNotIn('<mj-', rendered.html)
        self.assertIn("Hi &lt;Ann&gt;", rendered.html)
        self.assertEqual(rendered.links, (
                (mailing.CLICK, 'https://example.com'),
                (mailing.UNSUBSCRIBE, None),
                (mailing.OPEN, None)))
        self.assertRegex(rendered.html, r'<img src="[^"]*"[^>]*></body>')

    @unittest.skipUnless(mailing.mrml, "mrml is not installed")
    def test_conversion_with_mrml(self):
        self.assertConverted()

    @unittest.skipUnless(mailing.mjml2html, "mjml-python is not installed")
    def test_conversion_with_mjml_python(self):
        with mock.patch.object(mailing, 'mrml', None):
            self.assertConverted()

    @unittest.skipUnless(
        mailing.mrml or mailing.mjml2html, "no MJML compiler installed")
    def test_invalid_mjml(self):
        with self.assertRaisesRegex(mailing.TemplateError, "MJML"):
            mailing.check_body('<mjml><mj-body><mj-text>')


class WeightTestCase(unittest.TestCase):
    "What an email may weigh"

    def test_too_heavy_names_the_heaviest_expression(self):
        templates = mailing.compile_templates(
            "Hi ${name}",
            '<p>${name}</p>\n<p py:for="i in range(100)">${block}</p>')
        with self.assertRaises(mailing.RenderError) as cm:
            mailing.render(
                templates, {'name': "Ann", 'block': 'x' * 1000},
                max_size=50000)
        self.assertFalse(cm.exception.fault)
        self.assertEqual(
            str(cm.exception),
            "TooHeavy: the email weighs more than the 50 KB an email may: "
            "${block} (line 2) makes 50 KB of it")

    def test_weight_of_a_rendering(self):
        "A rendering tells what weighs most in it, within the limit"
        templates = mailing.compile_templates(
            "${title}", '<p>Hello</p><p>${name}</p>')
        rendered = mailing.render(
            templates, {'title': 't' * 300, 'name': "Ann"}, max_size=50000)
        self.assertEqual(rendered.heaviest, ("the title", 300))
        rendered = mailing.render(
            templates, {'title': "Hi", 'name': 'n' * 300})
        self.assertEqual(rendered.heaviest, ("${name} (line 1)", 300))

    def test_weights_read(self):
        self.assertEqual(
            [mailing.weight(s) for s in [12, 4500, 39_700_000]],
            ["12 bytes", "4 KB", "39.7 MB"])


class TextTestCase(unittest.TestCase):
    "The plain-text part"

    html = (
        '<html><head><title>News</title><style>p {color: red}</style></head>'
        '<body><h1>News</h1><p>Hello Ann,</p>'
        '<p><a href="https://s.example/aVeryLongTokenThatMustNotBeWrapped'
        '?and=some&amp;more=parameters">Read</a></p>'
        '<img src="https://s.example/pixel" width="1" height="1" alt=""/>'
        '</body></html>')

    def text(self, body, **context):
        rendered = render(body, **context)
        urls = [f'https://s.example/{i}' for i in range(len(rendered.links))]
        return mailing.fill(rendered.text, urls, quote=False)

    def test_text(self):
        text = self.text(self.html)
        self.assertEqual(
            text, "News\n\nHello Ann,\n\nRead (https://s.example/0)\n")

    def test_control_characters_of_values(self):
        """The control characters of a value make no line nor paragraph of
        the text; spaces and breaks of any length collapse"""
        text = self.text(
            '<p>${a}</p><div>x</div><p>${b}</p>',
            a="one\x00two\x01three", b=(' ' + chr(0)) * 1000 + "end")
        self.assertEqual(text, "one two three\n\nx\n\nend\n")

    def test_text_of_a_large_value(self):
        """A value of a million spaces and control characters converts
        within the time limit of a rendering (the conversion reads it once)"""
        templates = mailing.compile_templates("Hi", '<p>${t}</p><p>end</p>')
        rendered = mailing.render(
            templates, {'t': (' ' + chr(0)) * 500000}, timeout=5)
        self.assertEqual(rendered.text, "end\n")

    def test_hidden_content(self):
        text = self.text(self.html)
        self.assertNotIn("color", text)
        self.assertEqual(text.count("News"), 1)

    def test_url_unescaped(self):
        rendered = render(self.html)
        text = mailing.fill(rendered.text, [
                'https://s.example/t?and=some&more=parameters', 'pixel'],
            quote=False)
        self.assertIn("(https://s.example/t?and=some&more=parameters)", text)
        self.assertNotIn("pixel", text)

    def test_lines_and_lists(self):
        text = self.text(
            '<p>One\n   two</p><ul><li>A</li><li>B <b>bold</b></li></ul>'
            'x<br/>y<br/><br/>w<div>z</div><table><tr><td>c1</td></tr>'
            '<tr><td>c2</td></tr></table>')
        self.assertEqual(
            text,
            "One two\n\n* A\n* B bold\n\nx\ny\n\nw\nz\n\nc1\nc2\n")

    def test_untracked_links(self):
        text = self.text(
            '<p><a href="mailto:ann@example.com">Write</a> '
            '<a href="#top">Top</a> <a href="tel:+32">+32</a></p>')
        self.assertEqual(
            text, "Write (mailto:ann@example.com) Top +32 (tel:+32)\n")

    def test_link_without_text(self):
        text = self.text('<p><a href="https://shop.example/"></a></p>')
        self.assertEqual(text, "https://s.example/0\n")

    def test_image_alternative(self):
        text = self.text('<p><img src="logo.png" alt="Shop"/> news</p>')
        self.assertEqual(text, "Shop news\n")

    def test_markup_expression(self):
        from genshi.core import Markup
        text = self.text(
            '<p>${html}</p>', html=Markup('<b>Bold</b> &amp; <i>it</i>'))
        self.assertEqual(text, "Bold & it\n")

    def test_escaped_text(self):
        text = self.text('<p>${name}</p>', name='<b>Ann</b> & Bob')
        self.assertEqual(text, "<b>Ann</b> & Bob\n")


class MessageTestCase(unittest.TestCase):
    "The MIME message, read back as a mail client does"

    def build(self, html="<p>Héllo</p>", text="Héllo", **kwargs):
        kwargs.setdefault('message_id', mailing.message_id('abc', 'shop.be'))
        return parse(mailing.build_message(
                'Shop <news@shop.be>', 'Ann <ann@example.com>', "Sübject",
                html, text, **kwargs))

    def test_parts(self):
        message = self.build()

        self.assertEqual(message.get_content_type(), 'multipart/alternative')
        plain, html = message.iter_parts()
        self.assertEqual(plain.get_content_type(), 'text/plain')
        self.assertEqual(plain.get_content(), "Héllo")
        self.assertEqual(html.get_content_type(), 'text/html')
        self.assertEqual(html.get_content(), "<p>Héllo</p>")

    def test_without_text(self):
        message = self.build(text='')

        self.assertEqual(message.get_content_type(), 'text/html')
        self.assertEqual(message.get_content(), "<p>Héllo</p>")

    def test_headers(self):
        date = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
        message = self.build(
            unsubscribe='https://shop.be/m/ZGI/unsubscribe?r=abc',
            language='fr_BE', date=date)

        self.assertEqual(message['From'], 'Shop <news@shop.be>')
        self.assertEqual(message['To'], 'Ann <ann@example.com>')
        self.assertEqual(message['Subject'], "Sübject")
        self.assertEqual(message['Message-ID'], '<abc@shop.be>')
        self.assertEqual(message['Date'].datetime, date)
        self.assertEqual(message['Auto-Submitted'], 'auto-generated')
        self.assertEqual(
            message['List-Unsubscribe'],
            '<https://shop.be/m/ZGI/unsubscribe?r=abc>')
        self.assertEqual(
            message['List-Unsubscribe-Post'], 'List-Unsubscribe=One-Click')
        self.assertEqual(message['Content-Language'], 'fr-BE')

    def test_without_unsubscribe(self):
        message = self.build()

        self.assertNotIn('List-Unsubscribe', message)
        self.assertNotIn('List-Unsubscribe-Post', message)
        self.assertNotIn('Content-Language', message)

    def test_international_recipient(self):
        raw = mailing.build_message(
            'news@shop.be',
            mailing.format_recipient("Zoë Dœ, Jr.", 'zoe@exämple.com'),
            "Ünïcode ✓", "<p/>", message_id='<a@b>')
        message = parse(raw)

        self.assertEqual(message['To'].addresses[0].display_name,
            "Zoë Dœ, Jr.")
        self.assertEqual(message['To'].addresses[0].addr_spec,
            'zoe@xn--exmple-cua.com')
        self.assertEqual(message['Subject'], "Ünïcode ✓")
        self.assertTrue(raw.isascii())

    def test_long_line(self):
        template = '<p>' + ' '.join(["wörd"] * 1000) + '</p>'
        self.assertGreater(len(template), 5000)
        rendered = render(template)
        html = mailing.fill(rendered.html, ['https://s.example/pixel'])
        text = mailing.fill(
            rendered.text, ['https://s.example/pixel'], quote=False)
        subject = ' '.join(["Ünïcode ✓"] * 100)

        raw = mailing.build_message(
            'news@shop.be', 'ann@example.com', subject,
            html, text, message_id='<a@b>')
        message = parse(raw)

        for line in raw.split(b'\r\n'):
            self.assertLessEqual(len(line), 998)
        self.assertNotIn(b'\n', raw.replace(b'\r\n', b''))
        self.assertEqual(message['Subject'], subject)
        self.assertEqual(message.get_body('html').get_content(), html)

    def test_format_recipient(self):
        self.assertEqual(
            mailing.format_recipient("Ann", 'ann@exämple.com'),
            'Ann <ann@xn--exmple-cua.com>')
        self.assertEqual(
            mailing.format_recipient("Doe, Ann", 'ann@example.com'),
            '"Doe, Ann" <ann@example.com>')
        self.assertEqual(
            mailing.format_recipient(None, 'ann@example.com'),
            'ann@example.com')

    def test_format_recipient_invalid(self):
        for address in ['', 'ann', 'ann@', '@example.com']:
            with self.subTest(address=address):
                with self.assertRaises(ValueError):
                    mailing.format_recipient("Ann", address)

    def test_message_id(self):
        self.assertEqual(
            mailing.message_id('a1b2', 'exämple.com'),
            '<a1b2@xn--exmple-cua.com>')


class SignatureTestCase(unittest.TestCase):
    "Signing the unsubscribe next URL"

    secret = b'0123456789abcdef0123456789abcdef'
    uuid = '0123456789abcdef0123456789abcdef'
    next = 'https://shop.be/bye'

    def test_verify(self):
        signature = mailing.sign(self.secret, self.uuid, self.next)

        self.assertTrue(
            mailing.verify(self.secret, signature, self.uuid, self.next))

    def test_tampered(self):
        signature = mailing.sign(self.secret, self.uuid, self.next)

        for secret, uuid, next in [
                (b'another secret', self.uuid, self.next),
                (self.secret, 'f' + self.uuid[1:], self.next),
                (self.secret, self.uuid, 'https://evil.example/'),
                (self.secret, self.uuid + self.next, ''),
                (self.secret, self.uuid, None),
                ]:
            with self.subTest(secret=secret, uuid=uuid, next=next):
                self.assertFalse(mailing.verify(secret, signature, uuid, next))

    def test_garbage_signature(self):
        signature = mailing.sign(self.secret, self.uuid, self.next)

        for garbage in [
                None, '', 'x', signature[:-1], signature + 'A', 'é' * 22,
                '\x00' * 22, 42, signature.encode()]:
            with self.subTest(garbage=garbage):
                self.assertFalse(
                    mailing.verify(self.secret, garbage, self.uuid, self.next))

    def test_unsubscribe_url(self):
        self.assertEqual(
            urls.unsubscribe_url(
                'https://shop.be/', urls.encode_database('db'), self.uuid),
            f'https://shop.be/m/ZGI/unsubscribe?r={self.uuid}')

    def test_unsubscribe_url_with_next(self):
        url = urlsplit(urls.unsubscribe_url(
                'https://shop.be', urls.encode_database('db'), self.uuid,
                next='https://shop.be/bye?a=1&b=2', secret=self.secret))
        query = {k: v for k, [v] in parse_qs(url.query).items()}

        self.assertEqual(url.path, '/m/ZGI/unsubscribe')
        self.assertEqual(query['r'], self.uuid)
        self.assertEqual(query['next'], 'https://shop.be/bye?a=1&b=2')
        self.assertEqual(
            mailing.checked_next(
                self.secret, query['r'], query['next'], query['s']),
            'https://shop.be/bye?a=1&b=2')

    def test_checked_next_unsigned(self):
        self.assertIsNone(
            mailing.checked_next(self.secret, self.uuid, self.next, None))
        self.assertIsNone(
            mailing.checked_next(self.secret, self.uuid, None, None))

    def test_checked_next_refuses_other_schemes(self):
        for next in [
                'javascript:alert(1)', 'JavaScript:alert(1)',
                'data:text/html,x', 'ftp://shop.be/', '//evil.example/',
                '/local', 'http:evil.example', 'http://[broken']:
            signature = mailing.sign(self.secret, self.uuid, next)
            with self.subTest(next=next):
                self.assertIsNone(mailing.checked_next(
                        self.secret, self.uuid, next, signature))

    def test_checked_next_refuses_unusable_urls(self):
        "A next signed before links were checked may not fit in a Location"
        for next in [
                'https://example.org/b\nX: 1',
                'https://example.org/\r\nSet-Cookie: x=1',
                'https://example.org/a b', 'https://example.org/a\tb',
                'https://example.org/\x00', 'https://example.org/a\u2028b',
                'https://example.org/a\u200bb', ' https://example.org/',
                'https://ex\u00e4..mple.org/', 'https://example.org:x/']:
            signature = mailing.sign(self.secret, self.uuid, next)
            with self.subTest(next=next):
                self.assertIsNone(mailing.checked_next(
                        self.secret, self.uuid, next, signature))


class LinkTestCase(unittest.TestCase):
    "The targets of the links of an email"

    refused = [
        # (href, what the message says)
        ('https://example.org/a\r\nSet-Cookie: x=1',
            "the control character U+000D"),
        ('unsubscribe|https://example.org/b\nX: 1',
            "the control character U+000A"),
        ('javascript:alert(1)', "the scheme 'javascript'"),
        ('JavaScript:alert(1)', "the scheme 'javascript'"),
        ('data:text/html,<script>alert(1)</script>', "the scheme 'data'"),
        ('vbscript:msgbox(1)', "the scheme 'vbscript'"),
        ('file:///etc/passwd', "the scheme 'file'"),
        ('ftp://example.org/', "the scheme 'ftp'"),
        ('page.html', "no scheme"),
        ('/local/page', "no scheme"),
        ('//evil.example/', "no scheme"),
        ('https://example.org/a page', "the whitespace character U+0020"),
        ('https://example.org/a\u00a0page', "U+00A0 (NO-BREAK SPACE)"),
        ('https://example.org/a\tpage', "the control character U+0009"),
        ('java\tscript:alert(1)', "the control character U+0009"),
        ('https://example.org/\x00', "the control character U+0000"),
        ('https://example.org/a\x7fb', "the control character U+007F"),
        ('https://example.org/a\u2028b', "U+2028 (LINE SEPARATOR)"),
        ('https://example.org/a\u2029b', "U+2029 (PARAGRAPH SEPARATOR)"),
        ('https://example.org/a\u200bb',
            "the invisible character U+200B (ZERO WIDTH SPACE)"),
        ('https://exa\u200dmple.org/', "the invisible character U+200D"),
        ('https://example.org/\ufeff', "the invisible character U+FEFF"),
        ('https://example.org/\u202e', "the invisible character U+202E"),
        ('https:///path', "no host"),
        ('http:evil.example', "no host"),
        ('https://example.org:port/', "not a valid URL"),
        ('http://[broken', "not a valid URL"),
        ('https://ex\u00e4..mple.org/', "invalid host name"),
        ('unsubscribe|javascript:alert(1)', "an http or https URL"),
        ('unsubscribe|/goodbye', "an http or https URL"),
        ('unsubscribe|https://example.org/a b', "U+0020"),
        ('Unsubscribe', "no scheme"),
        ]
    accepted = [
        'https://example.org/', 'http://example.org/a?b=1&c=2#d',
        'HTTPS://EXAMPLE.ORG', 'https://ex\u00e4mple.org/caf\u00e9',
        'https://[::1]:8000/', 'mailto:ann@example.com', 'tel:+3212345678',
        'sms:+3212345678', '#top', '#', '', 'unsubscribe',
        'unsubscribe|https://example.org/bye', 'unsubscribe|',
        '  https://example.org/\n', ' unsubscribe| https://example.org/ ']

    def test_refused(self):
        for href, problem in self.refused:
            with self.subTest(href=href):
                with self.assertRaises(mailing.LinkError) as cm:
                    mailing.check_link(href)
                self.assertIn(repr(href), str(cm.exception))
                self.assertIn(problem, str(cm.exception))

    def test_accepted(self):
        for href in self.accepted:
            with self.subTest(href=href):
                mailing.check_link(href)

    def test_message(self):
        with self.assertRaises(mailing.LinkError) as cm:
            mailing.check_link('https://example.org/a\r\nSet-Cookie: x=1')

        self.assertEqual(
            str(cm.exception),
            "The link 'https://example.org/a\\r\\nSet-Cookie: x=1' contains "
            "the control character U+000D.")

    def test_long_link_is_shortened(self):
        href = 'javascript:' + 'x' * 1000

        with self.assertRaisesRegex(
                mailing.LinkError, r"^The link 'javascript:x{65}\.\.\. uses"):
            mailing.check_link(href)

    def test_not_a_text(self):
        for href in [None, 42, b'https://example.org/']:
            with self.subTest(href=href):
                with self.assertRaisesRegex(mailing.LinkError, "not a text"):
                    mailing.check_link(href)

    def test_errors_are_template_errors(self):
        self.assertTrue(issubclass(mailing.LinkError, mailing.TemplateError))
        self.assertTrue(issubclass(mailing.LinkError, ValueError))

    def test_is_web_url(self):
        self.assertTrue(mailing.is_web_url('https://example.org/a?b=1'))
        for url in [
                'mailto:ann@example.com', '#top', 'unsubscribe', '',
                ' https://example.org/', 'https://example.org/a b',
                'https://example.org/\r\n', None]:
            with self.subTest(url=url):
                self.assertFalse(mailing.is_web_url(url))

    def test_check_links(self):
        for body, href in [
                ('<p><a href="https://example.org/a&#13;&#10;Set-Cookie: '
                    'x=1">Go</a></p>',
                    'https://example.org/a\r\nSet-Cookie: x=1'),
                ('<a href="unsubscribe|https://example.org/b&#10;X: 1">'
                    'Stop</a>', 'unsubscribe|https://example.org/b\nX: 1'),
                ('<a href="javascript:alert(1)">Go</a>',
                    'javascript:alert(1)'),
                ('<p py:if="record">'
                    '<a py:for="i in range(2)" href="page.html">Go</a></p>',
                    'page.html'),
                ('<py:with vars="x = 1"><py:choose><py:when test="x">'
                    '<a href="data:text/html,x">Go</a>'
                    '</py:when></py:choose></py:with>', 'data:text/html,x'),
                ('<!DOCTYPE html>\n<html xmlns="http://www.w3.org/1999/xhtml">'
                    '<body><a href="//evil.example">Go</a></body></html>',
                    '//evil.example'),
                ]:
            with self.subTest(body=body):
                with self.assertRaises(mailing.LinkError) as cm:
                    mailing.check_links(mailing.compile_body(body))
                self.assertIn(repr(href), str(cm.exception))

    def test_check_links_accepts(self):
        mailing.check_links(mailing.compile_body(
                '<p><a href="https://example.org/">Go</a>'
                '<a href="mailto:ann@example.com">Mail</a>'
                '<a href="#top">Top</a><a name="top">Anchor</a>'
                '<a href="unsubscribe|https://example.org/bye">Stop</a>'
                '<img src="logo.png" alt=""/></p>'))

    def test_check_links_skips_expressions(self):
        "What an expression gives is only known when rendering"
        mailing.check_links(mailing.compile_body(
                '<a href="${url}">Go</a>'
                '<a href="https://example.org/${page}">Go</a>'
                '<a href="${\'javascript:\'}x">Go</a>'))

    def test_render_refuses_an_expression(self):
        "A target given by an expression is checked for each recipient"
        templates = mailing.compile_templates(
            "Hi", '<a href="${url}">Go</a>')

        for url in [
                'javascript:alert(1)', 'https://example.org/\r\nX: 1',
                'page.html', 'https://example.org/a b']:
            with self.subTest(url=url):
                with self.assertRaisesRegex(
                        mailing.RenderError, "LinkError.*" + repr(url)[1:9]):
                    mailing.render(templates, {'url': url})
        rendered = mailing.render(templates, {'url': ' https://ok.example '})
        self.assertEqual(
            rendered.links[0], (mailing.CLICK, 'https://ok.example'))

    def test_render_refuses_a_stored_link(self):
        "A template saved before the links were checked fails to render"
        templates = mailing.compile_templates(
            "Hi", '<a href="unsubscribe|https://example.org/b&#10;X: 1">'
            'Stop</a>')

        with self.assertRaisesRegex(mailing.RenderError, "U\\+000A"):
            mailing.render(templates, {})

    def test_short_goes_to_the_web(self):
        "short(url) makes a tracked link: it only redirects to the web"
        templates = mailing.compile_templates(
            "Hi", '<a href="${short(url)}">Go</a>')

        for url in ['mailto:ann@example.com', 'javascript:alert(1)', None]:
            with self.subTest(url=url):
                with self.assertRaises(mailing.RenderError):
                    mailing.render(templates, {'url': url})
        rendered = mailing.render(
            templates, {'url': 'https://example.org/'})
        self.assertEqual(
            rendered.links[0], (mailing.CLICK, 'https://example.org/'))


class TokenTestCase(unittest.TestCase):
    "Identifiers of the recipient's links"

    def test_new_token(self):
        tokens = {mailing.new_token() for _ in range(100)}

        self.assertEqual(len(tokens), 100)
        self.assertTrue(all(map(mailing.is_token, tokens)))

    def test_is_token_refuses_garbage(self):
        token = mailing.new_token()
        for garbage in [
                None, 42, '', token[:-1], token + 'a', token[:-1] + '/',
                token[:-1] + 'é', "1' OR '1'='1", 'x' * 1000]:
            with self.subTest(garbage=garbage):
                self.assertFalse(mailing.is_token(garbage))

    def test_is_uuid(self):
        self.assertTrue(mailing.is_uuid('0123456789abcdef0123456789abcdef'))
        for garbage in [
                None, '', '0123456789abcdef0123456789abcdeg',
                '0123456789abcdef', '0123456789abcdef0123456789abcdef0']:
            with self.subTest(garbage=garbage):
                self.assertFalse(mailing.is_uuid(garbage))


class SparklineTestCase(unittest.TestCase):
    "The trend of a rate"

    def test_sparkline(self):
        self.assertEqual(mailing.sparkline([0, 1, 2, 3, 4, 5, 6, 7]),
            '▁▂▃▄▅▆▇█')

    def test_scaled_to_maximum(self):
        self.assertEqual(mailing.sparkline([0.1, 0.2]), '▅█')

    def test_none_and_zero(self):
        self.assertEqual(mailing.sparkline([None, 0, 0]), '▁▁▁')

    def test_empty(self):
        self.assertEqual(mailing.sparkline([]), '')
