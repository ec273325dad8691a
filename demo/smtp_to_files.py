#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""A local SMTP server that saves every message it receives as a file.

    python demo/smtp_to_files.py FOLDER [--port PORT] [--port-file FILE]

Each message is written to FOLDER/NNNN-RECIPIENT.eml, one file per recipient,
exactly as the server received it (what a mail client would open).
The server listens on 127.0.0.1; with --port 0, or when the port is taken,
the system picks a free port.  The port is written to --port-file once the
server accepts connections.  SIGINT or SIGTERM stops it."""
import argparse
import asyncio
import errno
import itertools
import os
import re
import signal
import sys
from functools import partial

from aiosmtpd.smtp import SMTP


class SaveToFiles:
    "The aiosmtpd handler that writes the messages into a folder"

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        numbers = [
            int(name.split('-', 1)[0]) for name in os.listdir(folder)
            if re.match(r'^\d+-', name)]
        self.counter = itertools.count(max(numbers, default=0) + 1)

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode('utf-8')
        for recipient in envelope.rcpt_tos:
            name = '%04d-%s.eml' % (
                next(self.counter),
                re.sub(r'[^\w.@+-]', '_', recipient)[:100])
            path = os.path.join(self.folder, name)
            # Written aside then renamed, so nobody reads half a message.
            with open(path + '.part', 'wb') as file:
                file.write(content)
            os.replace(path + '.part', path)
            print('saved %s (from %s)' % (name, envelope.mail_from),
                flush=True)
        return '250 Message accepted for delivery'


async def serve(folder, port, port_file):
    loop = asyncio.get_running_loop()
    factory = partial(
        SMTP, SaveToFiles(folder), enable_SMTPUTF8=True,
        hostname='localhost')
    try:
        server = await loop.create_server(factory, '127.0.0.1', port)
    except OSError as exception:
        if exception.errno != errno.EADDRINUSE or not port:
            raise
        print('port %s is taken, letting the system choose' % port,
            flush=True)
        server = await loop.create_server(factory, '127.0.0.1', 0)
    port = server.sockets[0].getsockname()[1]
    print('SMTP server on 127.0.0.1:%s, saving into %s' % (port, folder),
        flush=True)
    if port_file:
        with open(port_file + '.part', 'w') as file:
            file.write('%s\n' % port)
        os.replace(port_file + '.part', port_file)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()
    print('SMTP server stopped', flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('folder')
    parser.add_argument('--port', type=int, default=8025)
    parser.add_argument('--port-file')
    args = parser.parse_args(argv)
    asyncio.run(serve(os.path.abspath(args.folder), args.port, args.port_file))


if __name__ == '__main__':
    sys.exit(main())
