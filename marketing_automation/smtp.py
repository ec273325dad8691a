# SPDX-License-Identifier: GPL-3.0-or-later
"""The SMTP transport: one connection to the mail server, the messages sent
over it one by one, and what the server answered to each.

Both the outbox (``Email.deliver``) and the test emails of the preview
(``deliver_tests``) send through a ``Transport``; each decides what an
answer means for its messages.  An answer is a ``Reply`` whose ``outcome``
is one of:

``ACCEPTED``
   The server took the message.
``REFUSED``
   The server refused the message for good (a 5xx answer for the recipient
   or the data).
``DEFERRED``
   The server refused the message for now (a 4xx answer): another attempt
   may succeed.
``SENDER_REFUSED``
   The server refused the sender (any answer to ``MAIL FROM`` but 250):
   no recipient's fault.
``LOGIN_REFUSED``
   The connection was refused at the login: no recipient's fault.
``UNREACHABLE``
   The connection could not be opened, or was lost: the message and those
   after it wait; ``unsure`` tells that the message was on its way when the
   connection was lost, so it may have left all the same.
"""
import email
import email.policy
import smtplib
import socket
from collections import namedtuple

from trytond import sendmail
from trytond.sendmail import get_smtp_server
from trytond.transaction import Transaction

from . import marketing_automation

ACCEPTED = 'accepted'
REFUSED = 'refused'
DEFERRED = 'deferred'
SENDER_REFUSED = 'sender_refused'
LOGIN_REFUSED = 'login_refused'
UNREACHABLE = 'unreachable'

Reply = namedtuple('Reply', ['outcome', 'error', 'unsure'])
Reply.__new__.__defaults__ = (None, False)


def describe_delivery_error(exception):
    """Why the mail server did not take a message, as the outbox and the
    test sends show it: the SMTP reply, or the exception"""
    if isinstance(exception, smtplib.SMTPResponseException):
        error = exception.smtp_error
        if isinstance(error, bytes):
            error = error.decode('utf-8', 'replace')
        return '%s %s' % (exception.smtp_code, error)
    if isinstance(exception, socket.timeout):
        return 'timeout'
    return '%s: %s' % (type(exception).__name__, exception)


def smtp_server():
    """The connection to the mail server that sends the messages

    A test written for Tryton's own module replaces
    send_message_transactional of marketing_automation.py to keep its
    emails from leaving: the messages then go to the replacement, as
    Tryton's module gives them, and count as accepted."""
    send = marketing_automation.send_message_transactional
    if send is not sendmail.send_message_transactional:
        return TransactionalServer(send, Transaction().join(
                marketing_automation.SMTPDataManager()))
    return get_smtp_server(strict=True)


class TransactionalServer:
    "An SMTP connection that gives each message to send_message_transactional"

    sock = True

    def __init__(self, send, datamanager):
        self.send = send
        self.datamanager = datamanager

    def sendmail(self, from_addr, to_addrs, message):
        self.send(
            email.message_from_bytes(message, policy=email.policy.default),
            datamanager=self.datamanager)

    def quit(self):
        pass


def _refusal(code, text):
    error = describe_delivery_error(smtplib.SMTPResponseException(code, text))
    return Reply(DEFERRED if 400 <= code < 500 else REFUSED, error)


class Transport:
    """The messages sent over one connection, opened at the first message
    (by connect, smtp_server by default) and again after the server closed
    it with its answer (421)

    Use it as a context manager: the connection is closed at the end."""

    def __init__(self, connect=smtp_server):
        self.connect = connect
        self.server = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        if self.server is not None:
            server, self.server = self.server, None
            try:
                server.quit()
            except (OSError, smtplib.SMTPException):
                pass

    def send(self, sender, to, message):
        "Send the message (bytes or str) from sender to the address to"
        if self.server is None:
            try:
                self.server = self.connect()
            except smtplib.SMTPAuthenticationError as exception:
                return Reply(
                    LOGIN_REFUSED, describe_delivery_error(exception))
            except (OSError, smtplib.SMTPException) as exception:
                return Reply(UNREACHABLE, describe_delivery_error(exception))
        server = self.server
        connected = server.sock is not None
        try:
            server.sendmail(sender, [to], message)
        except smtplib.SMTPRecipientsRefused as exception:
            code, text = next(iter(exception.recipients.values()))
            reply = _refusal(code, text)
        except smtplib.SMTPSenderRefused as exception:
            reply = Reply(SENDER_REFUSED, describe_delivery_error(exception))
        except smtplib.SMTPDataError as exception:
            reply = _refusal(exception.smtp_code, exception.smtp_error)
        except (OSError, smtplib.SMTPException) as exception:
            # the connection is lost: the message may have left
            self.server = None
            return Reply(
                UNREACHABLE, describe_delivery_error(exception), connected)
        else:
            reply = Reply(ACCEPTED)
        if server.sock is None:
            # the server closed the connection with its answer (421): the
            # next message opens a new one
            self.server = None
        return reply
