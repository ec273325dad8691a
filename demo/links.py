#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""List the links of a saved email, with the curl commands that follow them.

    python demo/links.py FILE.eml [FILE.eml ...]

The bodies of the emails are quoted-printable, so their links cannot be
cut out of the file with grep: this reads them as a mail client does."""
import argparse
import email
import email.policy
import shlex
import sys
from html.parser import HTMLParser


class Links(HTMLParser):
    "The links and the images of an HTML body, with the text of each link"

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links, self.images = [], []
        self._current = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'a' and attrs.get('href'):
            self._current = [attrs['href'], '']
            self.links.append(self._current)
        elif tag == 'img' and attrs.get('src'):
            self.images.append(attrs['src'])

    def handle_endtag(self, tag):
        if tag == 'a':
            self._current = None

    def handle_data(self, data):
        if self._current is not None:
            self._current[1] += data


def show(path):
    with open(path, 'rb') as file:
        message = email.message_from_bytes(
            file.read(), policy=email.policy.default)
    print('%s\n  To: %s\n  Subject: %s' % (
            path, message['To'], message['Subject']))
    html = message.get_body(preferencelist=('html',))
    parser = Links()
    parser.feed(html.get_content() if html else '')
    tracked = [(u, ' '.join(t.split())) for u, t in parser.links
        if '/unsubscribe' not in u]
    unsubscribe = [u for u, _ in parser.links if '/unsubscribe' in u]
    header = (message['List-Unsubscribe'] or '').strip('<> ')
    q = shlex.quote
    # a GET: the HEAD of "curl -I" is what link scanners send, and it
    # records nothing
    follow = 'curl -s -o /dev/null -w "%{http_code} %{redirect_url}\\n" '
    for url, text in tracked:
        print('  link "%s" (a click, which counts as an open too):' % text)
        print('    ' + follow + q(url))
    for url in parser.images:
        print('  open-tracking image (an open):')
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('files', nargs='+')
    args = parser.parse_args(argv)
    for path in args.files:
        show(path)


if __name__ == '__main__':
    sys.exit(main())
