#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""List the links of a saved email, with the curl commands that follow them.

    python demo/links.py FILE.eml [FILE.eml ...]
    python demo/links.py --as scanner FILE.eml [FILE.eml ...]
    python demo/links.py --as person [--link TEXT] FILE.eml [FILE.eml ...]

The bodies of the emails are quoted-printable, so their links cannot be
cut out of the file with grep: this reads them as a mail client does.
The curl commands send the User-Agent of a browser: the event ledger takes
curl's own for a machine's, and a machine's request counts nothing.

With --as, the requests are made: a scanner (the security gateway of a
mail server) requests every link of the email at once, the hidden trap
link among them, and its image; a person loads the image and follows one
link (the first, or the one whose text is TEXT) from a browser.  The event
ledger tells the first as a machine and the second as a human: only the
person's click makes the "on click" activities due, and the summary of the
demo shows both."""
import argparse
import email
import email.policy
import shlex
import sys
import urllib.error
import urllib.request
from html.parser import HTMLParser

# The user agents sent: the gateways of mail servers present themselves as
# browsers too, it is the trap link and the burst that tell them
BROWSER = (
    'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0')


class Links(HTMLParser):
    "The links and the images of an HTML body, with the text of each link"

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links, self.images = [], []
        self._current = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'a' and attrs.get('href'):
            # the trap link is hidden; its text is None
            self._current = [attrs['href'],
                None if 'hidden' in attrs else '']
            self.links.append(self._current)
        elif tag == 'img' and attrs.get('src'):
            self.images.append(attrs['src'])

    def handle_endtag(self, tag):
        if tag == 'a':
            self._current = None

    def handle_data(self, data):
        if self._current is not None and self._current[1] is not None:
            self._current[1] += data


def read(path):
    """The message of the file, its links (URL, text) but the unsubscribe
    links, the trap links, the unsubscribe links and the images"""
    with open(path, 'rb') as file:
        message = email.message_from_bytes(
            file.read(), policy=email.policy.default)
    html = message.get_body(preferencelist=('html',))
    parser = Links()
    parser.feed(html.get_content() if html else '')
    links = [(u, ' '.join(t.split())) for u, t in parser.links
        if '/unsubscribe' not in u and t is not None]
    traps = [u for u, t in parser.links if t is None]
    unsubscribe = [u for u, _ in parser.links if '/unsubscribe' in u]
    return message, links, traps, unsubscribe, parser.images


def show(path):
    message, tracked, traps, unsubscribe, images = read(path)
    print('%s\n  To: %s\n  Subject: %s' % (
            path, message['To'], message['Subject']))
    print('  (the commands send the User-Agent of a browser: with curl\'s '
        'own, the request counts as a machine\'s)')
    header = (message['List-Unsubscribe'] or '').strip('<> ')
    q = shlex.quote
    # a GET: the HEAD of "curl -I" is what link scanners send, and it
    # records nothing; as a browser: with curl's own User-Agent, the event
    # ledger takes the request for a machine's
    follow = ('curl -s -A %s -o /dev/null '
        '-w "%%{http_code} %%{redirect_url}\\n" ' % q(BROWSER))
    for url, text in tracked:
        print('  link "%s" (a click, which counts as an open too):' % text)
        print('    ' + follow + q(url))
    for url in images:
        print('  open-tracking image (an open):')
        print('    ' + follow + q(url))
    for url in traps:
        print('  hidden trap link (only scanners follow it: the requests '
            'of the email around it are a machine\'s):')
        print('    ' + follow + q(url))
    for url in unsubscribe[:1] or ([header] if header else []):
        print('  unsubscribe link: GET shows the confirmation page, '
            'its button POSTs:')
        print('    curl -s %s' % q(url))
        print('    curl -s -X POST %s' % q(url))
    if header:
        print('  one-click unsubscribe of the mail client (RFC 8058):')
        print('    curl -s -X POST -d List-Unsubscribe=One-Click %s'
            % q(header))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    "Stop at the redirect: the targets of the demo are not to be reached"

    def redirect_request(self, *args, **kwargs):
        return None


def request(url, user_agent):
    "GET url as user_agent; the status and where it redirects"
    opener = urllib.request.build_opener(_NoRedirect)
    opener.addheaders = [('User-Agent', user_agent)]
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, ''
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get('Location', '')
    except OSError as error:
        return 'failed (%s)' % error, ''


def play(path, role, text=None):
    "Make the requests of role (scanner or person) for the email of path"
    message, links, traps, _, images = read(path)
    print('%s (to %s), as a %s:' % (path, message['To'], role))
    if role == 'scanner':
        # everything at once, as the gateways do on delivery
        urls = [u for u, _ in links] + traps + images
    else:
        chosen = [u for u, t in links if text is None or t == text]
        if not chosen:
            print('  no link "%s" in the email' % text)
            return 1
        urls = images + chosen[:1]
    for url in urls:
        status, location = request(url, BROWSER)
        print('  %s %s%s' % (status, url,
                ' -> ' + location if location else ''))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--as', dest='role', choices=['scanner', 'person'],
        help="make the requests of a scanner or of a person, "
        "instead of printing them")
    parser.add_argument(
        '--link', metavar='TEXT',
        help="the text of the link the person follows (the first one)")
    parser.add_argument('files', nargs='+')
    args = parser.parse_args(argv)
    status = 0
    for path in args.files:
        if args.role:
            status |= play(path, args.role, args.link)
        else:
            show(path)
    return status


if __name__ == '__main__':
    sys.exit(main())
