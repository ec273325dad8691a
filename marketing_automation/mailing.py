# SPDX-License-Identifier: GPL-3.0-or-later
"""The email pipeline of marketing activities, free of the database.

The templates of an activity are compiled once per batch and language::

    templates = compile_templates(title, template)

and each recipient costs one Genshi rendering::

    rendered = render(templates, context, max_size=...)

The HTML of ``rendered`` holds no real URL yet: every rewritten ``<a href>``
and the open-tracking image carry a placeholder, and ``rendered.links`` says
what each stands for, in placeholder order:

- ``Link(CLICK, url)``: a tracked link that redirects to ``url``;
- ``Link(UNSUBSCRIBE, next)``: the unsubscribe URL, with the ``next`` of
  ``unsubscribe|NEXT`` or None;
- ``Link(OPEN, None)``: the 1×1 image that records an open;
- ``Link(TRAP, None)``: with ``render(…, trap=True)``, a link that no person
  can see nor reach, which only the link scanners follow.

So the engine renders a whole batch, creates the short links of all its
recipients together, and then puts each URL in place with one string
substitution::

    html = fill(rendered.html, urls)  # urls[i] stands for rendered.links[i]
    text = fill(rendered.text, urls, quote=False)
    message = build_message(
        sender, recipient, rendered.subject, html, text,
        message_id=..., unsubscribe=..., language=...)

``check_link`` refuses the link targets an email must not carry (scripts,
control characters, whitespace, relative URLs); ``check_links`` applies it
to the constant links of a compiled body, and rendering to the others.
``sign`` signs the ``next`` URL of an unsubscribe link (see ``urls.py``) and
``checked_next`` follows only a usable ``next`` this server signed, so the
route is no open redirect.
``new_token`` gives tracked links identifiers that cannot be guessed from one
another, and ``is_token`` and ``is_uuid`` let the routes turn garbage away
before they touch the database.
"""

import base64
import binascii
import hashlib
import hmac
import html as html_escaping
import re
import secrets
import unicodedata
from collections import defaultdict, namedtuple
from datetime import datetime, timezone
from email.header import Header
from email.headerregistry import Address
from email.utils import format_datetime, formataddr, parseaddr
from functools import partial
from io import StringIO
from itertools import chain
from urllib.parse import urlsplit

from genshi.core import DOCTYPE, END, START, TEXT, Attrs, Markup, QName, Stream
from genshi.input import HTMLParser, ParseError
from genshi.template import MarkupTemplate, NewTextTemplate
from genshi.template import TemplateError as GenshiTemplateError
from genshi.template.base import SUB

from . import sandbox
from .exceptions import TemplateError

# MJML compilers: mrml (trytond's "mjml" extra) or mjml-python
try:
    import mrml
except ImportError:
    mrml = None
try:
    from mjml import mjml2html
except ImportError:
    mjml2html = None

__all__ = [
    'TemplateError', 'TooHeavy', 'RenderError', 'Templates', 'Rendered',
    'Link', 'Weight', 'weight',
    'CLICK', 'UNSUBSCRIBE', 'OPEN', 'TRAP',
    'compile_title', 'compile_body', 'compile_templates', 'check_title',
    'check_body', 'render', 'fill',
    'format_recipient', 'parse_addresses', 'check_sender', 'message_id',
    'build_message',
    'LinkError', 'check_link', 'check_links', 'is_web_url',
    'sign', 'verify', 'checked_next',
    'new_secret', 'new_token', 'is_token', 'is_uuid', 'sparkline',
    'placeholder', 'use_placeholder']

CLICK, UNSUBSCRIBE, OPEN, TRAP = 'click', 'unsubscribe', 'open', 'trap'

Templates = namedtuple('Templates', ['title', 'body'])
Rendered = namedtuple(
    'Rendered', ['subject', 'html', 'text', 'links', 'heaviest'],
    defaults=[None])
Rendered.__doc__ = """An email rendered for one recipient: its subject,
HTML and plain text with placeholders for the links, and what weighs most
in it (see Weight)"""
Link = namedtuple('Link', ['kind', 'url'])


class TooHeavy(Exception):
    """The email of a recipient weighs more than it may: the error of this
    recipient, and of the activity when it is so for every recipient"""


class RenderError(Exception):
    """A template failed while rendering for one recipient

    fault tells whether the template is wrong for every recipient (refused by
    the sandbox, a name or field that does not exist) rather than for the
    values of this one."""

    def __init__(self, message, fault=False):
        super().__init__(message)
        self.fault = fault

    @classmethod
    def of(cls, exception):
        "The RenderError of an exception raised while rendering"
        message = str(exception)
        if not isinstance(
                exception, (sandbox.TemplateFault, sandbox.Described)):
            message = f"{type(exception).__name__}: {message}"
        expression = sandbox.expression_of(exception)
        if expression:
            message = f"${{{expression}}}: {message}"
        return cls(
            message, fault=isinstance(exception, sandbox.TemplateFault))


# A body that is not a whole document is wrapped in an element that Genshi
# strips, so fragments with several roots or bare text work and may use py:
# directives without declaring the namespace.  The wrapper sits on the first
# line of the source so the line numbers stay right; the columns of the first
# line are moved back by its length (see _located).
_FRAGMENT_START = (
    '<div xmlns="http://www.w3.org/1999/xhtml" '
    'xmlns:py="http://genshi.edgewall.org/" py:strip="">')
_FRAGMENT_END = '</div>'
_DOCUMENT_START = re.compile(r'\s*<(\?xml|!doctype|html)', re.IGNORECASE)


def compile_title(source):
    "Return the Genshi text template of an email title"
    return _compile(NewTextTemplate, source, written=source)


def compile_body(source):
    "Return the Genshi markup template of an email body (XHTML or MJML)"
    if source.lstrip().startswith('<mjml'):
        # MJML gives HTML, not XML: parse it as HTML and keep its doctype
        html = _mjml_to_html(source)
        return _compile(MarkupTemplate, Stream(chain(
                    [(DOCTYPE, ('html', None, None), (None, 1, 0))],
                    HTMLParser(StringIO(html)))))
    elif not _DOCUMENT_START.match(source):
        return _compile(
            MarkupTemplate, _FRAGMENT_START + source + _FRAGMENT_END,
            written=source, shift=len(_FRAGMENT_START))
    return _compile(MarkupTemplate, source, written=source)


def _compile(template_class, source, written=None, shift=0):
    """Return the template of source, or TemplateError

    written is what the marketer wrote, which starts shift characters after
    the start of source: the errors tell where in it they are."""
    try:
        template = _template(template_class, source)
        sandbox.seal_template(template)
    except (GenshiTemplateError, ParseError) as exception:
        # drop the position of a Python error inside its expression
        message = re.sub(r' \([^()]*, line \d+\)$', '', str(exception.msg))
        if written is not None:
            message = _located(
                message, exception, template_class, written, shift)
        elif 'line' not in message and exception.lineno > 0:
            message += f" (line {exception.lineno})"
        raise TemplateError(message) from exception
    except (ValueError, sandbox.SandboxError) as exception:
        # refused by the sandbox or by the one trytond puts around Genshi
        raise TemplateError(str(exception)) from exception
    except Exception as exception:
        # Genshi refuses the Python it cannot translate with a bare Exception
        raise TemplateError(_unsupported(exception)) from exception
    return template


def _template(template_class, source):
    return template_class(
        source, lookup=sandbox.Lookup, allow_exec=False,
        loader=sandbox.NO_INCLUDES)


# The XML parser's position of an error: a line from 1, a column from 0
_PARSER_POSITION = re.compile(r'line (\d+), column (\d+)')
_DIRECTIVE = re.compile(r'"(\w+)" directive')
# What opens an expression: ${, $, an attribute's quote or a text directive
_OPENING = r'(?:\$\{\s*|\$|["\']\s*|\{%\s*\w+\s+)'


def _located(message, exception, template_class, written, shift):
    """message with the position of its error in written, as
    "line L, column C" (both from 1), or "line L" when only the line is
    known"""
    starts = [0] + [m.end() for m in re.finditer('\n', written)]
    match = _PARSER_POSITION.search(message)
    if match:
        line, column = int(match.group(1)), int(match.group(2))
        if line == 1:
            index = column - shift
        elif line <= len(starts):
            index = starts[line - 1] + column
        else:
            index = len(written)
        # an element left open is found in the closing tag of the wrapper,
        # after the end of what was written
        index = min(max(index, 0), len(written))
        return (message[:match.start()] + _position(written, index)
            + message[match.end():])

    line = exception.lineno
    if template_class is NewTextTemplate:
        line = _text_line(written, str(exception.msg))
    # Genshi gives the line where the text or the element of the error
    # starts: the error is there or after it
    line = min(max(line, 1), len(starts))
    context = exception.__context__
    directive = _DIRECTIVE.search(message)
    if isinstance(context, SyntaxError) and (context.text or '').strip():
        # the expression is after its opening, unless the error is on one
        # of its next lines
        text = re.escape(context.text.strip())
        found = (re.compile(_OPENING + '(%s)' % text).search(
                written, starts[line - 1])
            or re.compile('(%s)' % text).search(written, starts[line - 1]))
    elif directive and template_class is NewTextTemplate:
        found = re.compile(r'\{%%\s*%s\b' % directive.group(1)).search(
            written, starts[line - 1])
    elif directive:
        found = re.compile(r'py:%s\b' % directive.group(1)).search(
            written, starts[line - 1])
    else:
        found = None
    if found:
        index = found.start(found.re.groups)
        return f"{message} ({_position(written, index)})"
    return f"{message} (line {line})"


def _position(written, index):
    "The line and the column of index in written, both from 1"
    line = written.count('\n', 0, index) + 1
    column = index - written.rfind('\n', 0, index)
    return f"line {line}, column {column}"


def _text_line(written, message):
    """The line of the error of message in the text template written

    Genshi counts a line too many for each piece of text or directive before
    the error: the error is on the first line whose end makes the template
    fail with the same message."""
    lines = written.split('\n')
    for count in range(1, len(lines)):
        try:
            _template(NewTextTemplate, '\n'.join(lines[:count]))
        except GenshiTemplateError as exception:
            if str(exception.msg) == message:
                return count
        except Exception:
            pass
    return len(lines)


_UNSUPPORTED = {
    'JoinedStr': "formatted strings (f'...') are not allowed",
    'NamedExpr': "assignment expressions (:=) are not allowed",
    'SetComp': "set comprehensions are not allowed",
    'DictComp': "dictionary comprehensions are not allowed",
    }


def _unsupported(exception):
    message = str(exception)
    for node, explanation in _UNSUPPORTED.items():
        if node in message:
            return explanation
    return message


def _mjml_to_html(source):
    if not mrml and not mjml2html:
        raise TemplateError(
            "The template is MJML but no MJML compiler is installed "
            "(pip install mrml, or pip install mjml-python).")
    try:
        if mrml:
            return mrml.to_html(source).content
        return mjml2html(source)
    except Exception as exception:
        raise TemplateError(f"MJML: {exception}") from exception


def compile_templates(title_source, body_source):
    "Return the Templates of an email, each source parsed once"
    return Templates(compile_title(title_source), compile_body(body_source))


def check_title(source):
    "Raise TemplateError when the title is not a valid template"
    compile_title(source)


def check_body(source):
    """Raise TemplateError when the body is not a valid template or one of
    its links is not acceptable"""
    check_links(compile_body(source))


# A random part makes the placeholders impossible to type into a record
_PLACEHOLDER = 'marketing-automation-link-%s-' % secrets.token_hex(8)
_PLACEHOLDER_RE = re.compile(re.escape(_PLACEHOLDER) + r'(\d+)')


def placeholder():
    "The start of the placeholders of the links of this process"
    return _PLACEHOLDER


def use_placeholder(start):
    """Write the placeholders of links with start, as the process that
    fills them does (a render box renders for another process)"""
    global _PLACEHOLDER, _PLACEHOLDER_RE
    _PLACEHOLDER = start
    _PLACEHOLDER_RE = re.compile(re.escape(start) + r'(\d+)')


_UNTRACKED_SCHEMES = {'mailto', 'tel', 'sms'}


def render(templates, context, timeout=None, trap=False, max_size=None):
    """Return the Rendered subject and HTML for one recipient, with the
    trap link of the scanners if trap

    Raise RenderError when the templates fail with this context, take more
    than timeout seconds, or make more than max_size characters."""
    links = {}
    context = dict(context)
    context.setdefault('short', partial(_placeholder, links, CLICK))
    weight = Weight(max_size, templates.body)
    try:
        with sandbox.time_limit(timeout):
            subject = templates.title.generate(**context).render(
                'text', encoding=None)
            weight.add(len(subject), TITLE)
            events = list(templates.body.generate(**context) | partial(
                    _track, links, weight, trap=trap))
            html = Stream(events).render('html', encoding=None)
            text = _text(events)
    except MemoryError:
        # the process is short of memory: its caller decides
        raise
    except Exception as exception:
        raise RenderError.of(exception) from exception
    return Rendered(
        ' '.join(subject.split()), html, text, tuple(links),
        weight.heaviest())


TITLE = 'title'


class Weight:
    """What an email weighs as it is rendered, counted by the place of the
    template that each part comes from, so that an email too heavy stops as
    soon as it is and its error names what made it so"""
    __slots__ = ('max_size', 'total', 'parts', 'sources')

    def __init__(self, max_size, body):
        self.max_size = max_size
        self.total = 0
        self.parts = defaultdict(int)
        self.sources = _sources(body)

    def add(self, size, pos):
        if not size:
            return
        self.total += size
        self.parts[pos] += size
        if self.max_size and self.total > self.max_size:
            description, heaviest = self.heaviest()
            raise TooHeavy(
                f"the email weighs more than the {weight(self.max_size)} an "
                f"email may: {description} makes {weight(heaviest)} of it")

    def heaviest(self):
        """The description of the place of the template that made the most
        characters, and how many"""
        if not self.parts:
            return None
        pos, size = max(self.parts.items(), key=lambda item: item[1])
        if pos == TITLE:
            description = "the title"
        elif pos in self.sources:
            description = f"${{{self.sources[pos]}}} (line {pos[1]})"
        else:
            description = f"the text of line {pos[1]}"
        return description, size


def weight(size):
    "The size of bytes or characters as a reader reads it"
    if size >= 1_000_000:
        return f"{size / 1_000_000:.1f} MB"
    if size >= 1000:
        return f"{size / 1000:.0f} KB"
    return f"{size} bytes"


def _sources(template):
    """The source of each expression of the compiled template by its place,
    as Genshi gives the place of an expression to the text it makes"""
    sources = getattr(template, '_marketing_sources', None)
    if sources is None:
        sources = {}
        _collect_sources(template.stream, sources)
        template._marketing_sources = sources
    return sources


def _collect_sources(stream, sources):
    for kind, data, pos in stream:
        if kind == 'EXPR':
            sources[pos] = getattr(data, 'source', '?')
        elif kind == 'SUB':
            _collect_sources(data[1], sources)


def _placeholder(links, kind, url):
    if kind == CLICK:
        # a tracked link only redirects to the web, also from short(url)
        _check_web_url(url, url)
    index = links.setdefault(Link(kind, url), len(links))
    return f'{_PLACEHOLDER}{index}'


def _link(links, href):
    """Return the placeholder for href or None to leave it as it is

    Raise LinkError when href is no target for a link."""
    href = href.strip()
    if _PLACEHOLDER_RE.fullmatch(href):
        return None
    check_link(href)
    if href == UNSUBSCRIBE or href.startswith(UNSUBSCRIBE + '|'):
        next_ = href[len(UNSUBSCRIBE) + 1:].strip() or None
        return _placeholder(links, UNSUBSCRIBE, next_)
    if not href or href.startswith('#'):
        return None
    if urlsplit(href).scheme.lower() in _UNTRACKED_SCHEMES:
        return None
    return _placeholder(links, CLICK, href)


def _pixel(links, pos):
    src = _placeholder(links, OPEN, None)
    attrs = Attrs([
            (QName('src'), src),
            (QName('width'), '1'),
            (QName('height'), '1'),
            (QName('alt'), ''),
            (QName('style'), 'display:block;border:0'),
            ])
    yield START, (QName('img'), attrs), pos
    yield END, QName('img'), pos


def _trap(links, pos):
    """The link that only scanners follow: hidden from the eyes
    (display:none, hidden), the keyboard (tabindex) and screen readers
    (aria-hidden), and without text"""
    href = _placeholder(links, TRAP, None)
    attrs = Attrs([
            (QName('href'), href),
            (QName('hidden'), 'hidden'),
            (QName('tabindex'), '-1'),
            (QName('aria-hidden'), 'true'),
            (QName('style'), 'display:none'),
            ])
    yield START, (QName('a'), attrs), pos
    yield END, QName('a'), pos


def _track(links, weight, stream, trap=False):
    """Rewrite the links of the stream and add the open-tracking image (and
    the trap link with trap), weighing what the stream makes"""
    pixel_added = False
    pos = (None, -1, -1)
    for kind, data, pos in stream:
        if kind is TEXT:
            weight.add(len(data), pos)
        elif kind is START:
            tag, attrs = data
            weight.add(sum(len(v) for _, v in attrs), pos)
            href = attrs.get('href') if tag.localname == 'a' else None
            if href is not None and (url := _link(links, href)):
                data = tag, attrs | [(QName('href'), url)]
        elif (kind is END and data.localname == 'body'
                and not pixel_added):
            yield from _pixel(links, pos)
            if trap:
                yield from _trap(links, pos)
            pixel_added = True
        yield kind, data, pos
    if not pixel_added:
        yield from _pixel(links, pos)
        if trap:
            yield from _trap(links, pos)


def fill(content, urls, quote=True):
    """Replace the placeholders of content by urls, in the order of the
    links; quote tells whether content is HTML"""
    escape = html_escaping.escape if quote else str
    return _PLACEHOLDER_RE.sub(
        lambda match: escape(urls[int(match.group(1))]), content)


class LinkError(TemplateError):
    "The target of a link is not one an email may carry"


# What a mail client opens without surprise: no script, no data, no file
_LINK_SCHEMES = {'http', 'https', 'mailto', 'tel', 'sms'}
_WEB_SCHEMES = {'http', 'https'}


def check_link(href):
    """Raise LinkError unless href may be the target of a link of an email

    The targets allowed are http and https URLs with a host, mailto:, tel:
    and sms: URIs, #fragments and ``unsubscribe`` or ``unsubscribe|NEXT``
    where NEXT is an http or https URL.  Whitespace around href is ignored,
    as rendering strips it."""
    if not isinstance(href, str):
        raise LinkError(f"The link {_shown(href)} is not a text.")
    target = href.strip()
    if target == UNSUBSCRIBE or target.startswith(UNSUBSCRIBE + '|'):
        next_ = target[len(UNSUBSCRIBE) + 1:].strip()
        if next_:
            _check_web_url(next_, href)
        return
    _check_characters(target, href)
    if not target or target.startswith('#'):
        return
    scheme = _split(target, href).scheme.lower()
    if not scheme:
        raise LinkError(
            f"The link {_shown(href)} has no scheme: write a whole URL, "
            "such as https://example.com/page.")
    if scheme not in _LINK_SCHEMES:
        raise LinkError(
            f"The link {_shown(href)} uses the scheme {scheme!r}: only "
            "http, https, mailto, tel and sms are allowed.")
    if scheme in _WEB_SCHEMES:
        _check_web_url(target, href)


def is_web_url(url):
    "Tell whether url is an http or https URL that check_link accepts"
    try:
        _check_web_url(url, url)
    except LinkError:
        return False
    return True


def _check_web_url(url, href):
    if not isinstance(url, str):
        raise LinkError(f"The link {_shown(href)} is not a text.")
    _check_characters(url, href)
    parts = _split(url, href)
    if parts.scheme.lower() not in _WEB_SCHEMES:
        raise LinkError(
            f"The link {_shown(href)} must go to an http or https URL.")
    if not parts.hostname:
        raise LinkError(f"The link {_shown(href)} has no host.")
    try:
        # as a Location header carries it
        parts.hostname.encode('idna')
    except UnicodeError as exception:
        raise LinkError(
            f"The link {_shown(href)} has an invalid host name."
            ) from exception


# How the characters refused in a link are called, by Unicode category
_CHARACTER_KINDS = {
    'Cc': "the control character",
    'Cf': "the invisible character",
    'Zs': "the whitespace character",
    'Zl': "the whitespace character",
    'Zp': "the whitespace character",
    }


def _check_characters(url, href):
    # isprintable() is False for the categories Other (controls, format
    # characters such as zero-width spaces) and Separator but the space
    if url.isprintable() and ' ' not in url:
        return
    for character in url:
        category = unicodedata.category(character)
        if category[0] in 'CZ':
            kind = _CHARACTER_KINDS.get(category, "the invalid character")
            name = unicodedata.name(character, '')
            code = f"U+{ord(character):04X}" + (f" ({name})" if name else '')
            raise LinkError(
                f"The link {_shown(href)} contains {kind} {code}.")


def _split(url, href):
    try:
        parts = urlsplit(url)
        # a port that is not a number is only found when it is read
        parts.port
    except ValueError as exception:
        raise LinkError(
            f"The link {_shown(href)} is not a valid URL: {exception}."
            ) from exception
    return parts


def _shown(href):
    text = repr(href)
    return text if len(text) <= 80 else text[:77] + '...'


def check_links(template):
    """Raise LinkError for the first link of a compiled body template whose
    target check_link refuses

    A target made with an expression is only known when rendering, where
    _link checks it for each recipient."""
    _check_stream_links(template.stream)


def _check_stream_links(stream):
    for kind, data, _ in stream:
        if kind is START and data[0].localname == 'a':
            href = data[1].get('href')
            # a target with expressions is a list of events
            if isinstance(href, str):
                check_link(href)
        elif kind is SUB:
            # the elements under py:if, py:for, py:with, py:match…
            _check_stream_links(data[1])


# Elements whose content is not read, and those that break the text
_HIDDEN = {'head', 'script', 'style', 'template', 'title'}
_PARAGRAPHS = {
    'blockquote', 'dl', 'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'hr', 'ol', 'p',
    'pre', 'table', 'ul'}
_LINES = {
    'address', 'dd', 'div', 'dt', 'li', 'section', 'td', 'th', 'tr'}
# Where a paragraph or a line ends: the breaks of nested elements make one
_PARAGRAPH, _LINE = '\x01', '\x00'
_BREAKS = re.compile(r'[ \x00\x01]+')
_SPACES = re.compile(r'[\s\x00\x01]+')


def _break(match):
    "The break that a run of spaces and ends of paragraphs and lines makes"
    run = match.group()
    if _PARAGRAPH in run:
        return '\n\n'
    if _LINE in run:
        return '\n'
    return ' '


def _text(events):
    """Return the plain-text version of the events of an HTML stream: the
    text of the elements, a line per block, a blank line between paragraphs,
    the alternative text of images and each link's URL after its text"""
    parts = []
    links = []
    hidden = 0
    # whether each open element hides its content
    hiding = []
    for kind, data, _ in events:
        if kind is START:
            name = data[0].localname
            hiding.append(
                name in _HIDDEN or data[1].get('aria-hidden') == 'true')
            if hiding[-1]:
                hidden += 1
            elif hidden:
                continue
            elif name == 'a':
                links.append((data[1].get('href'), len(parts)))
            elif name == 'img':
                parts.append(data[1].get('alt') or '')
            elif name == 'br':
                parts.append('\n')
            elif name == 'li':
                parts.append(_LINE + '* ')
            elif name in _PARAGRAPHS:
                parts.append(_PARAGRAPH)
            elif name in _LINES:
                parts.append(_LINE)
        elif kind is END:
            name = data.localname
            if hiding and hiding.pop():
                hidden -= 1
            elif hidden:
                continue
            elif name == 'a' and links:
                href, start = links.pop()
                label = ''.join(parts[start:]).strip()
                if href and not href.startswith('#') and href != label:
                    parts.append(f' ({href})' if label else href)
            elif name in _PARAGRAPHS:
                parts.append(_PARAGRAPH)
            elif name in _LINES:
                parts.append(_LINE)
        elif kind is TEXT and not hidden:
            if isinstance(data, Markup):
                # HTML given by an expression: read its text
                data = data.striptags().unescape()
            parts.append(_SPACES.sub(' ', data))
    # one pass of a single class of characters: linear, whatever the text
    text = _BREAKS.sub(_break, ''.join(parts))
    lines = [line.strip() for line in text.split('\n')]
    return re.sub(r'\n{3,}', '\n\n', '\n'.join(lines)).strip() + '\n'


def _idna(domain):
    try:
        return domain.encode('idna').decode('ascii')
    except UnicodeError as exception:
        raise ValueError(f"Invalid domain: {domain!r}") from exception


def _split_address(address):
    "Return the user name and the IDNA domain of address"
    username, _, domain = address.strip().rpartition('@')
    if not username or not domain:
        raise ValueError(f"Invalid email address: {address!r}")
    return username, _idna(domain)


def format_recipient(name, address):
    "Return 'name <address>' with the domain of address encoded in IDNA"
    return str(Address(name or '', *_split_address(address)))


def message_id(token, domain):
    "Return a Message-ID made of token and domain"
    return f'<{token}@{_idna(domain)}>'


def _header(name, value):
    "Return the header line of name, RFC 2047-encoded and folded if needed"
    if value.isascii() and len(name) + len(value) < 76:
        return '%s: %s' % (name, value)
    charset = 'us-ascii' if value.isascii() else 'utf-8'
    return '%s: %s' % (name, Header(
            value, charset, header_name=name).encode(linesep='\r\n'))


def _address_line(name, address, local=False):
    """Return the header line of name with the address, which may be a bare
    local user name when local is set"""
    display, address = parseaddr(address)
    if local and '@' not in address:
        check_sender(address)
        return '%s: %s' % (name, formataddr((display, address), 'utf-8'))
    username, domain = _split_address(address)
    line = formataddr((display, '%s@%s' % (username, domain)), 'utf-8')
    return '%s: %s' % (name, line)


# The local part of an address: LOCAL_PART takes the characters of an
# unquoted one with dots anywhere, as a sender (or the bare user name of
# trytond's default sender) may have it; DOT_ATOM_LOCAL_PART only the
# dot-atom of RFC 5322 (no dot first, last or doubled), as an address that
# a person types must be to be worth sending to
LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
DOT_ATOM_LOCAL_PART = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def check_sender(sender):
    """Raise ValueError unless sender ('Name <address>' or an address) can
    be the From of a message

    A user name without a domain is accepted: it is trytond's default
    sender (the user running the server), with which Tryton's modules send
    when nothing else is configured; the mail server completes it."""
    if (not sender or not sender.strip()
            or any(not c.isprintable() for c in sender)):
        raise ValueError(f"Invalid sender: {sender!r}")
    if '<' in sender:
        display, address = parseaddr(sender)
    else:
        address = sender.strip()
    local, at, domain = address.rpartition('@') if '@' in address else (
        address, '', '')
    if not LOCAL_PART.fullmatch(local) or (at and not domain):
        raise ValueError(f"Invalid sender: {sender!r}")
    if domain:
        _idna(domain)


def _qp(text):
    "Return text as quoted-printable UTF-8 with CRLF line ends"
    text = text.replace('\r\n', '\n').replace('\r', '\n')
    return binascii.b2a_qp(
        text.encode('utf-8'), istext=True).replace(b'\n', b'\r\n')


# the header names of RFC 5322, and those the message writes itself
_HEADER_NAME = re.compile(r'[!-9;-~]+')
_OWN_HEADERS = {
    'from', 'to', 'subject', 'date', 'message-id', 'auto-submitted',
    'list-unsubscribe', 'list-unsubscribe-post', 'content-language',
    'mime-version', 'content-type', 'content-transfer-encoding'}
_PART = (
    b'Content-Type: text/%s; charset="utf-8"\r\n'
    b'Content-Transfer-Encoding: quoted-printable\r\n\r\n')


def build_message(
        from_addr, to_addr, subject, html, text=None, *, message_id,
        unsubscribe=None, language=None, date=None, headers=()):
    """Return the bytes of an email as SMTP carries them

    from_addr and to_addr are addresses optionally with a name
    ('Name <address>'); text is the plain-text alternative of html;
    unsubscribe is the one-click unsubscribe URL; language is the Tryton
    code of the recipient's language; headers are more (name, value) pairs.
    The message is written by hand: it is the same few lines for every
    recipient, and the generator of the email package costs more than the
    rendering of the template."""
    lines = [
        _address_line('From', from_addr, local=True),
        _address_line('To', to_addr),
        _header('Subject', subject),
        'Date: ' + format_datetime(date or datetime.now(timezone.utc)),
        'Message-ID: ' + message_id,
        'Auto-Submitted: auto-generated',
        ]
    if unsubscribe:
        lines.append('List-Unsubscribe: <%s>' % unsubscribe)
        lines.append('List-Unsubscribe-Post: List-Unsubscribe=One-Click')
    if language:
        lines.append('Content-Language: ' + language.replace('_', '-'))
    for name, value in headers:
        if not _HEADER_NAME.fullmatch(name) or name.lower() in _OWN_HEADERS:
            raise ValueError(f"Invalid header name: {name!r}")
        if any(not c.isprintable() for c in value):
            raise ValueError(f"Invalid value of header {name}: {value!r}")
        lines.append(_header(name, value))
    lines.append('MIME-Version: 1.0')
    if text:
        boundary = '=_' + secrets.token_hex(16)
        lines.append(
            'Content-Type: multipart/alternative; boundary="%s"' % boundary)
        delimiter = b'--' + boundary.encode('ascii')
        body = b''.join([
                delimiter, b'\r\n', _PART % b'plain', _qp(text), b'\r\n',
                delimiter, b'\r\n', _PART % b'html', _qp(html), b'\r\n',
                delimiter, b'--\r\n'])
    else:
        lines.append('Content-Type: text/html; charset="utf-8"')
        lines.append('Content-Transfer-Encoding: quoted-printable')
        body = _qp(html)
    return '\r\n'.join(lines).encode('ascii') + b'\r\n\r\n' + body


EMAIL_DOMAIN_LABEL = re.compile(r'(?!-)[a-z0-9-]{1,63}(?<!-)')


def parse_addresses(text):
    """The (name, address) pairs of the addresses of text, separated by
    commas, semicolons or lines; ValueError with the first one that is not
    a whole email address (a user and a domain with a dot)"""
    pairs, seen = [], set()
    for part in re.split(r'[,;\n]', text or ''):
        part = part.strip()
        if not part:
            continue
        name, address = parseaddr(part)
        # parseaddr drops what it does not understand: the address must be
        # the whole part, or all between its angle brackets
        written = (
            part[part.rfind('<') + 1:-1]
            if part.endswith('>') and '<' in part else part)
        local, at, domain = address.rpartition('@')
        try:
            labels = domain.encode('idna').decode('ascii').lower().split('.')
        except UnicodeError:
            labels = []
        if (written.strip() != address or not at
                or not DOT_ATOM_LOCAL_PART.fullmatch(local)
                or len(labels) < 2
                or not all(
                    EMAIL_DOMAIN_LABEL.fullmatch(label) for label in labels)):
            raise ValueError(part)
        if address.lower() not in seen:
            seen.add(address.lower())
            pairs.append((name, address))
    return pairs


def _digest(secret, parts):
    if isinstance(secret, str):
        secret = secret.encode('utf-8')
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in parts:
        data = part.encode('utf-8', 'surrogatepass')
        mac.update(len(data).to_bytes(8, 'big') + data)
    return mac.digest()[:16]


def sign(secret, *parts):
    "Return the URL-safe signature of the strings parts keyed by secret"
    return base64.urlsafe_b64encode(
        _digest(secret, parts)).decode('ascii').rstrip('=')


def verify(secret, signature, *parts):
    "Tell whether signature is sign(secret, *parts), never raising"
    if not isinstance(signature, str) or not signature.isascii():
        return False
    if not all(isinstance(part, str) for part in parts):
        return False
    return hmac.compare_digest(
        sign(secret, *parts).encode('ascii'), signature.encode('ascii'))


def checked_next(secret, uuid, next, signature):
    "Return next if this server signed it for uuid and it is a web URL"
    if not verify(secret, signature, uuid, next):
        return None
    # signed before the links were checked, it may not fit in a Location
    return next if is_web_url(next) else None


# 16 random bytes make 22 characters of URL-safe base64
_TOKEN_RE = re.compile(r'[A-Za-z0-9_-]{22}')
_UUID_RE = re.compile(r'[0-9a-f]{32}')


def new_secret():
    "Return a new random key for sign"
    return secrets.token_urlsafe(32)


def new_token():
    "Return an unguessable URL-safe token of 128 random bits"
    return secrets.token_urlsafe(16)


def is_token(text):
    "Tell whether text has the shape of a token of new_token"
    return isinstance(text, str) and bool(_TOKEN_RE.fullmatch(text))


def is_uuid(text):
    "Tell whether text has the shape of a record's uuid (hexadecimal)"
    return isinstance(text, str) and bool(_UUID_RE.fullmatch(text))


_BARS = '▁▂▃▄▅▆▇█'


def sparkline(values):
    "Return values as bars scaled between 0 and their maximum"
    values = [max(value or 0, 0) for value in values]
    top = max(values, default=0)
    if not top:
        return _BARS[0] * len(values)
    return ''.join(
        _BARS[int(value / top * (len(_BARS) - 1) + 0.5)] for value in values)
