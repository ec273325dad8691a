# SPDX-License-Identifier: GPL-3.0-or-later
"""What the mail world says back: VERP tokens and the classification of the
messages received on the bounce address.

The corpus of ``tests/feedback`` holds real-shaped messages, each labelled
in ``labels.csv`` with its kind, status, failed or complaining recipients,
the record activity its VERP token names (made with ``CORPUS_SECRET``) and
the Message-ID of the email it is about.
These are unit tests of ``feedback.py``: no database, milliseconds each.
"""
import csv
import os
import random
import time
import unittest
from unittest import mock

from trytond.modules.marketing_automation import feedback

CORPUS = os.path.join(os.path.dirname(__file__), 'feedback')
CORPUS_SECRET = 'corpus secret'
BOUNCE = 'bounce@shop.example.com'
# the share of the corpus that must be classified right (issue 23)
REQUIRED_ACCURACY = 0.95


def corpus():
    "The (label, bytes) of each message of the corpus"
    with open(os.path.join(CORPUS, 'labels.csv'), newline='') as fp:
        labels = list(csv.DictReader(fp))
    for label in labels:
        with open(os.path.join(CORPUS, label['file']), 'rb') as fp:
            yield label, fp.read()


def record_activity(secret, tokens):
    "The id of the first token that secret signed, as the caller finds it"
    ids = (feedback.read_token(secret, token) for token in tokens)
    return next(filter(None, ids), None)


def outcome(result):
    "What a label says of the classification result"
    return {
        'kind': result.kind,
        'status': result.status or '',
        'recipients': ' '.join(result.recipients),
        'activity': str(record_activity(CORPUS_SECRET, result.tokens) or ''),
        'message_id': result.message_ids[0] if result.message_ids else '',
        }


def message(*headers, body='', content_type='text/plain'):
    """The bytes of a small message with headers (lines) and body, in UTF-8
    but for the bytes written as surrogates ('\\udcff' for 0xff)"""
    lines = list(headers) + [
        'MIME-Version: 1.0', f'Content-Type: {content_type}', '', body]
    return '\n'.join(lines).encode('utf-8', 'surrogateescape')


def delivery_report(*blocks, returned_message_id=None, sender=None):
    "A delivery status report (RFC 3464) with the per-recipient blocks"
    returned = ''
    if returned_message_id:
        returned = (
            '--b\nContent-Type: text/rfc822-headers\n\n'
            f'Return-Path: <{sender}>\nMessage-ID: {returned_message_id}\n\n')
    return message(
        'From: MAILER-DAEMON@mx.example.org (Mail Delivery System)',
        'Subject: Undelivered Mail Returned to Sender',
        'Message-ID: <report.1@mx.example.org>',
        content_type=(
            'multipart/report; report-type=delivery-status; boundary="b"'),
        body=(
            '--b\nContent-Type: text/plain\n\nNotification.\n\n'
            '--b\nContent-Type: message/delivery-status\n\n'
            'Reporting-MTA: dns; mx.example.org\n\n'
            + '\n'.join(blocks) + '\n' + returned + '--b--\n'))


def feedback_report(feedback_type):
    "A feedback report (RFC 5965) of feedback_type"
    return message(
        'From: fbl@isp.example', 'Subject: report',
        content_type=(
            'multipart/report; report-type=feedback-report; boundary="f"'),
        body=(
            '--f\nContent-Type: text/plain\n\nA report.\n\n'
            '--f\nContent-Type: message/feedback-report\n\n'
            f'Feedback-Type: {feedback_type}\nUser-Agent: test/1\n'
            'Version: 1\nOriginal-Rcpt-To: <ann@example.org>\n\n'
            '--f--\n'))


class CorpusTestCase(unittest.TestCase):
    "The corpus of real-shaped feedback messages"

    def test_corpus_is_large_and_labelled(self):
        "The corpus holds at least 60 messages, each labelled once"
        labels = [label for label, _ in corpus()]
        files = {
            name for name in os.listdir(CORPUS) if name.endswith('.eml')}

        self.assertGreaterEqual(len(labels), 60)
        self.assertEqual({label['file'] for label in labels}, files)
        self.assertEqual(len(labels), len(files))
        self.assertEqual(
            {label['kind'] for label in labels}, set(feedback.KINDS))

    def test_corpus_accuracy(self):
        "At least 95 % of the corpus is classified as labelled"
        wrong = []
        labels = list(corpus())
        for label, raw in labels:
            result = feedback.classify(raw, bounce_address=BOUNCE)
            got = outcome(result)
            differences = {
                name: (label[name], value) for name, value in got.items()
                if label[name] != value}
            if differences:
                wrong.append((label['file'], result.evidence, differences))
        for name, evidence, differences in wrong:
            print(f"\nmisclassified: {name} ({evidence})")
            for field, (expected, value) in differences.items():
                print(f"    {field}: {value!r}, expected {expected!r}")
        accuracy = 1 - len(wrong) / len(labels)
        print(f"\nfeedback corpus: {accuracy:.1%} of {len(labels)} right")

        self.assertGreaterEqual(accuracy, REQUIRED_ACCURACY)

    def test_corpus_is_read_whole(self):
        """No message of the corpus raises, nor is given up as unreadable
        (classify swallows what it cannot read: a swallowed error would
        hide there)"""
        for label, raw in corpus():
            for bounce_address in [None, BOUNCE]:
                with self.subTest(file=label['file'], bounce=bounce_address):
                    result = feedback.classify(raw, bounce_address)

                    self.assertIn(result.kind, feedback.KINDS)
                    self.assertNotEqual(result.evidence, 'unreadable')

    def test_without_flufl_bounce(self):
        """Without flufl.bounce, every message keeps its kind and status,
        and those of the RFC formats their recipients too"""
        with_flufl = {
            label['file']: feedback.classify(raw, BOUNCE)
            for label, raw in corpus()}

        with mock.patch.object(feedback, 'flufl_bounce', None):
            for label, raw in corpus():
                result = feedback.classify(raw, BOUNCE)
                with self.subTest(file=label['file']):
                    got = outcome(result)
                    self.assertEqual(
                        (got['kind'], got['status'], got['activity']),
                        (label['kind'], label['status'], label['activity']))
                    if with_flufl[label['file']].evidence != 'flufl.bounce':
                        self.assertEqual(got, outcome(
                                with_flufl[label['file']]))

    def test_flufl_bounce_finds_the_addresses_of_other_formats(self):
        "The failed addresses of Exim, qmail and Yahoo come from flufl.bounce"
        for name, address in [
                ('exim-unrouteable.eml', 'gustav@mail.example.de'),
                ('qmail-no-mailbox.eml', 'pieter@example.nl'),
                ('yahoo-old-text.eml', 'zoe_miller88@yahoo.com'),
                ]:
            with open(os.path.join(CORPUS, name), 'rb') as fp:
                result = feedback.classify(fp.read(), BOUNCE)
            with self.subTest(file=name):
                self.assertEqual(result.evidence, 'flufl.bounce')
                self.assertEqual(result.recipients, (address,))


class VerpTestCase(unittest.TestCase):
    "The VERP address and its token"

    secret = 'the secret of this database'

    def test_round_trip(self):
        "A token gives back its record activity"
        for record_activity_id in [1, 42, 35 ** 4, 2 ** 31, 2 ** 63 - 1]:
            token = feedback.make_token(self.secret, record_activity_id)
            with self.subTest(id=record_activity_id):
                self.assertEqual(
                    feedback.read_token(self.secret, token),
                    record_activity_id)

    def test_address(self):
        """The VERP address is the bounce address with the token after a +,
        fits in a local part and has no capital"""
        token = feedback.make_token(self.secret, 2 ** 63 - 1)
        address = feedback.verp_address(BOUNCE, token)

        self.assertEqual(address, f'bounce+{token}@shop.example.com')
        local, _, _ = address.partition('@')
        self.assertLessEqual(len(local), 64)
        self.assertRegex(token, r'^[0-9a-z]+$')

    def test_address_of_an_idna_domain(self):
        "The domain of the VERP address is in IDNA, as SMTP carries it"
        self.assertEqual(
            feedback.verp_address('Retour@Bücher.example', 'abc1'),
            'Retour+abc1@xn--bcher-kva.example')

    def test_tokens_cannot_be_guessed_from_each_other(self):
        "The tokens of two entries share no signature"
        first = feedback.make_token(self.secret, 1000)
        second = feedback.make_token(self.secret, 1001)

        self.assertNotEqual(first[-26:], second[-26:])
        self.assertIsNone(
            feedback.read_token(self.secret, first[:-26] + second[-26:]))

    def test_forged_token(self):
        "A token changed by a single character is refused"
        token = feedback.make_token(self.secret, 1234)
        alphabet = '0123456789abcdefghijklmnopqrstuvwxyz'
        for position in range(len(token)):
            for character in alphabet:
                if character == token[position]:
                    continue
                forged = token[:position] + character + token[position + 1:]
                if feedback.read_token(self.secret, forged) is not None:
                    self.fail(f"{forged} read as a token of {token}")

    def test_token_of_another_database(self):
        "A token that another database made is refused"
        token = feedback.make_token('the secret of another database', 1234)

        self.assertIsNone(feedback.read_token(self.secret, token))

    def test_case_changes(self):
        "A token read back in capitals or in mixed case is the same"
        token = feedback.make_token(self.secret, 98765)

        self.assertEqual(
            feedback.read_token(self.secret, token.upper()), 98765)
        self.assertEqual(
            feedback.read_token(self.secret, token.title()), 98765)

    def test_garbage_tokens(self):
        "read_token refuses garbage without raising"
        token = feedback.make_token(self.secret, 7)
        for garbage in [
                None, 7, b'abc', '', 'x' * 100000, token + 'a', token[:-1],
                '0' + token, token.replace(token[0], 'İ', 1), '\x00' * 30,
                'bounce+' + token, token + '@shop.example.com']:
            with self.subTest(garbage=repr(garbage)[:40]):
                self.assertIsNone(feedback.read_token(self.secret, garbage))

    def test_lookalike_letters(self):
        "A Unicode letter that lowercases to a letter of a token is refused"
        token = feedback.make_token(self.secret, 20)
        self.assertEqual(token[0], 'k')

        self.assertIsNone(
            feedback.read_token(self.secret, '\u212a' + token[1:]))

    def test_invalid_ids(self):
        "Only the ids of records are made into tokens"
        for invalid in [0, -1, True, 1.0, '12', None, 2 ** 63]:
            with self.subTest(id=invalid), self.assertRaises(ValueError):
                feedback.make_token(self.secret, invalid)

    def test_invalid_bounce_addresses(self):
        "A bounce address with a + or no domain, or a bad token, is refused"
        for bounce_address, token in [
                ('bounce+x@shop.example.com', 'abc'),
                ('bounce', 'abc'),
                ('@shop.example.com', 'abc'),
                ('bou nce@shop.example.com', 'abc'),
                (None, 'abc'),
                (BOUNCE, 'ABC'),
                (BOUNCE, 'a-b'),
                (BOUNCE, ''),
                ('a' * 40 + '@shop.example.com', 'b' * 30),
                ]:
            with self.subTest(address=bounce_address, token=token):
                with self.assertRaises(ValueError):
                    feedback.verp_address(bounce_address, token)

    def test_find_tokens_as_mail_servers_write_addresses(self):
        """The token is found whatever case, quoting, IDNA, names and report
        field types the mail servers put around the address"""
        token = feedback.make_token(self.secret, 4321)
        for value in [
                f'bounce+{token}@shop.example.com',
                f'<BOUNCE+{token.upper()}@SHOP.EXAMPLE.COM>',
                f'"Shop" <bounce+{token}@shop.example.com.>',
                f'"bounce+{token}"@shop.example.com',
                f'rfc822; bounce+{token}@shop.example.com',
                f'bounce+{token}@shop.example.com (Shop bounces)',
                f'Shop <bounce+{token}@shop.example.com>, other@example.org',
                f'SRS0=Ab1c=KS=shop.example.com=bounce+{token}'
                '@forwarder.example',
                ]:
            with self.subTest(value=value):
                tokens = feedback.find_tokens(BOUNCE, [value])

                self.assertEqual(
                    record_activity(self.secret, tokens), 4321)

    def test_find_tokens_of_an_idna_domain(self):
        "A Unicode domain and its IDNA form are the same domain"
        for bounce_address, value in [
                ('bounce@bücher.example', 'bounce+abc@xn--bcher-kva.example'),
                ('bounce@xn--bcher-kva.example', 'bounce+abc@BÜCHER.example'),
                ]:
            with self.subTest(value=value):
                self.assertEqual(
                    feedback.find_tokens(bounce_address, [value]), ('abc',))

    def test_find_tokens_of_this_bounce_address_only(self):
        "Other local parts, domains and separators give no token"
        self.assertEqual(feedback.find_tokens(BOUNCE, [
                    'bounce@shop.example.com',
                    'bounce+abc@other.example.com',
                    'bounces+abc@shop.example.com',
                    'news+abc@shop.example.com',
                    'bounce-abc@shop.example.com',
                    'bounce+a.b@shop.example.com',
                    'bounce+@shop.example.com',
                    None, 42,
                    ]), ())

    def test_find_tokens_in_order(self):
        "Each token is given once, in the order of the addresses"
        self.assertEqual(feedback.find_tokens(BOUNCE, [
                    'bounce+b@shop.example.com',
                    'BOUNCE+A@shop.example.com, bounce+b@shop.example.com',
                    ]), ('b', 'a'))


class ClassifyTestCase(unittest.TestCase):
    "The rules of the classification, each on a small message"

    def classify(self, raw):
        return feedback.classify(raw, bounce_address=BOUNCE)

    def test_hard_bounce(self):
        "A failure with a 5.x.x status is a hard bounce of its recipient"
        result = self.classify(delivery_report(
                'Final-Recipient: rfc822; Ann@Example.org\nAction: failed\n'
                'Status: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 unknown\n',
                returned_message_id='<a.7@shop.example.com>',
                sender='bounce+abc@shop.example.com'))

        self.assertEqual(result.kind, feedback.HARD_BOUNCE)
        self.assertEqual(result.status, '5.1.1')
        self.assertEqual(result.message_id, '<report.1@mx.example.org>')
        self.assertEqual(result.diagnostic, '550 5.1.1 unknown')
        self.assertEqual(result.recipients, ('ann@example.org',))
        self.assertEqual(result.message_ids, ('<a.7@shop.example.com>',))
        self.assertEqual(result.tokens, ('abc',))

    def test_soft_bounces(self):
        "A failure with a 4.x.x status or a full mailbox is a soft bounce"
        for block in [
                'Action: failed\nStatus: 4.4.7\n',
                'Action: failed\nStatus: 5.2.2\n',
                'Action: failed\nStatus: 5.0.0\n'
                'Diagnostic-Code: smtp; 552 Mailbox is full\n',
                ]:
            with self.subTest(block=block):
                result = self.classify(delivery_report(
                        'Final-Recipient: rfc822; ann@example.org\n' + block))

                self.assertEqual(result.kind, feedback.SOFT_BOUNCE)

    def test_delay_is_not_a_failure(self):
        "A delay warning is a delay, neither a hard nor a soft bounce"
        result = self.classify(delivery_report(
                'Final-Recipient: rfc822; ann@example.org\n'
                'Action: delayed\nStatus: 4.4.1\n'))

        self.assertEqual(result.kind, feedback.DELAY)
        self.assertEqual(result.status, '4.4.1')

    def test_failure_wins_over_delay(self):
        "A report of a failure and a delay is the failure"
        result = self.classify(delivery_report(
                'Final-Recipient: rfc822; bob@example.org\n'
                'Action: delayed\nStatus: 4.4.1\n',
                'Final-Recipient: rfc822; ann@example.org\n'
                'Action: failed\nStatus: 5.1.1\n'))

        self.assertEqual(result.kind, feedback.HARD_BOUNCE)
        self.assertEqual(result.recipients, ('ann@example.org',))

    def test_status_from_the_diagnostic(self):
        "Without Status, the code of the diagnostic gives the status"
        result = self.classify(delivery_report(
                'Final-Recipient: rfc822; ann@example.org\nAction: failed\n'
                'Diagnostic-Code: smtp; 550 Requested action not taken\n'))

        self.assertEqual(result.kind, feedback.HARD_BOUNCE)
        self.assertEqual(result.status, '5.0.0')

    def test_delivered(self):
        "A report of delivery has no effect"
        result = self.classify(delivery_report(
                'Final-Recipient: rfc822; ann@example.org\n'
                'Action: delivered\nStatus: 2.0.0\n'))

        self.assertEqual(result.kind, feedback.OTHER)

    def test_complaints(self):
        "Abuse and fraud reports are complaints, not-spam and others not"
        for feedback_type, kind in [
                ('abuse', feedback.COMPLAINT),
                ('Fraud', feedback.COMPLAINT),
                ('not-spam', feedback.OTHER),
                ('auth-failure', feedback.OTHER),
                ('virus', feedback.OTHER),
                ]:
            with self.subTest(feedback_type=feedback_type):
                result = self.classify(feedback_report(feedback_type))

                self.assertEqual(result.kind, kind)
                self.assertEqual(result.feedback_type, feedback_type.lower())
                self.assertEqual(result.recipients, ('ann@example.org',))

    def test_exim_bounce_is_no_auto_reply(self):
        "Exim marks its bounces as auto-replies: they are bounces"
        result = self.classify(message(
                'From: Mail Delivery System <Mailer-Daemon@mx.example.org>',
                'To: bounce+abc@shop.example.com',
                'Subject: Mail delivery failed: returning message to sender',
                'Auto-Submitted: auto-replied',
                'X-Failed-Recipients: ann@example.org',
                body=(
                    'A message that you sent could not be delivered to one '
                    'or more of its\nrecipients. This is a permanent error. '
                    'The following address(es) failed:\n\n'
                    '  ann@example.org\n'
                    '    550 5.1.1 <ann@example.org>: User unknown\n')))

        self.assertEqual(result.kind, feedback.HARD_BOUNCE)
        self.assertEqual(result.status, '5.1.1')
        self.assertEqual(result.tokens, ('abc',))

    def test_auto_replies(self):
        "The headers of RFC 3834 and the usual others make an auto-reply"
        for header in [
                'Auto-Submitted: auto-replied',
                'Auto-Submitted: auto-generated',
                'X-Autoreply: yes',
                'X-Autorespond: Your message',
                'Precedence: auto_reply',
                'X-MS-Exchange-Inbox-Rules-Loop: ann@example.org',
                ]:
            with self.subTest(header=header):
                result = self.classify(message(
                        'From: Ann <ann@example.org>',
                        'To: news@shop.example.com', 'Subject: Hello',
                        header, body='Away.'))

                self.assertEqual(result.kind, feedback.AUTO_REPLY)
                self.assertEqual(result.sender, 'ann@example.org')

    def test_auto_submitted_no(self):
        "Auto-Submitted: no is a person's message"
        result = self.classify(message(
                'From: Ann <ann@example.org>', 'Subject: Re: Hello',
                'In-Reply-To: <a.7@shop.example.com>',
                'Auto-Submitted: no', body='Thanks!'))

        self.assertEqual(result.kind, feedback.REPLY)

    def test_weak_signs_need_a_reference(self):
        """An out-of-office subject or Precedence: bulk make an auto-reply
        of a message that refers to an email, and spam of another"""
        for header in [
                'Subject: Out of Office: Hello', 'Subject: Abwesenheitsnotiz',
                'Precedence: bulk', 'Precedence: junk']:
            with self.subTest(header=header):
                refers = self.classify(message(
                        'From: ann@example.org', header,
                        'In-Reply-To: <a.7@shop.example.com>', body='Away.'))
                unrelated = self.classify(message(
                        'From: promo@spam.example', header,
                        'To: bounce@shop.example.com', body='Buy now.'))

                self.assertEqual(refers.kind, feedback.AUTO_REPLY)
                self.assertEqual(unrelated.kind, feedback.OTHER)

    def test_reply_quoting_an_out_of_office_subject(self):
        "A person's Re: whose subject has the words of an auto-reply"
        result = self.classify(message(
                'From: ann@example.org',
                'Subject: Re: Going on holiday? Out of office sale',
                'In-Reply-To: <a.7@shop.example.com>', body='Price?'))

        self.assertEqual(result.kind, feedback.REPLY)

    def test_reply(self):
        """A person's message that refers to an email is a reply; its
        In-Reply-To comes before its References, newest first"""
        result = self.classify(message(
                'From: "Ann Baker" <Ann.Baker@Example.org>',
                'Subject: Re: Hello',
                'References: <old@example.org> <a.7@shop.example.com>',
                'In-Reply-To: <a.7@shop.example.com>', body='Thanks!'))

        self.assertEqual(result.kind, feedback.REPLY)
        self.assertEqual(result.sender, 'ann.baker@example.org')
        self.assertEqual(
            result.message_ids,
            ('<a.7@shop.example.com>', '<old@example.org>'))

    def test_reply_to_a_verp_address(self):
        """A message that only reached a VERP address is a reply when the
        bounce address is known"""
        raw = message(
            'From: ann@example.org', 'To: bounce+abc1@shop.example.com',
            'Subject: A question', body='Hello?')

        self.assertEqual(self.classify(raw).kind, feedback.REPLY)
        self.assertEqual(self.classify(raw).tokens, ('abc1',))
        self.assertEqual(feedback.classify(raw).kind, feedback.OTHER)

    def test_unrelated(self):
        "A message that refers to nothing is other, with no token"
        result = self.classify(message(
                'From: someone@example.org', 'To: bounce@shop.example.com',
                'Subject: Hello', body='Hello.'))

        self.assertEqual(result.kind, feedback.OTHER)
        self.assertEqual(result.tokens, ())

    def test_invalid_bounce_address(self):
        "classify refuses a bounce address it cannot use"
        with self.assertRaises(ValueError):
            feedback.classify(b'', bounce_address='bounce+x@example.org')

    def test_what_is_not_bytes(self):
        "Text is read as its UTF-8 bytes, anything else is unreadable"
        self.assertEqual(feedback.classify(
                'From: ann@example.org\nIn-Reply-To: <a@b>\n\nMerci').kind,
            feedback.REPLY)
        for raw in [None, 42, ['a'], object()]:
            with self.subTest(raw=raw):
                self.assertEqual(
                    feedback.classify(raw), feedback.Feedback(
                        feedback.OTHER, evidence='unreadable'))


class FuzzTestCase(unittest.TestCase):
    "Broken and huge messages: classify stays fast and never raises"

    # seconds: a message takes about a millisecond, the machine is shared
    slow = 2

    def assert_feedback(self, result):
        "result is a Feedback with values of the types documented"
        self.assertIsInstance(result, feedback.Feedback)
        self.assertIn(result.kind, feedback.KINDS)
        for name in ['recipients', 'message_ids', 'addresses', 'tokens']:
            values = getattr(result, name)
            self.assertIsInstance(values, tuple)
            self.assertTrue(all(isinstance(v, str) for v in values))
            self.assertLessEqual(len(values), feedback.MAX_ADDRESSES)
        for name in [
                'status', 'diagnostic', 'feedback_type', 'sender',
                'subject', 'evidence']:
            value = getattr(result, name)
            self.assertTrue(value is None or isinstance(value, str))
        if result.diagnostic:
            self.assertLessEqual(
                len(result.diagnostic), feedback.MAX_DIAGNOSTIC)

    def assert_fast(self, raw):
        start = time.perf_counter()
        result = feedback.classify(raw, bounce_address=BOUNCE)
        duration = time.perf_counter() - start
        self.assert_feedback(result)
        self.assertLess(duration, self.slow)
        return result

    def test_huge_messages(self):
        "Messages of 10 MB are classified in a moment"
        megabytes = 10 * 1024 * 1024
        path = os.path.join(CORPUS, 'postfix-user-unknown.eml')
        with open(path, 'rb') as fp:
            report = fp.read()
        end = report.rstrip().rsplit(b'\n', 1)[-1]
        attachment = (
            end[:-2] + b'\nContent-Type: application/octet-stream\n'
            b'Content-Transfer-Encoding: base64\n\n'
            + b'QUJDRA==\n' * (megabytes // 9) + end + b'\n')
        huge_report = report.replace(end, attachment)
        self.assertGreater(len(huge_report), megabytes)

        self.assertEqual(
            self.assert_fast(huge_report).kind, feedback.HARD_BOUNCE)
        for raw in [
                b'Subject: ' + b'a' * megabytes + b'\n\nbody',
                b'To: ' + b'bounce+a@shop.example.com, ' * (megabytes // 28),
                b'\n' * megabytes,
                b'\r' * megabytes,
                b'From: MAILER-DAEMON@example.org\n'
                b'X-Failed-Recipients: a@b\n\n' + b'x@' * (megabytes // 2),
                b'From: MAILER-DAEMON@example.org\n\n'
                + b'550 5.1.1 <a@example.org> unknown\n' * (megabytes // 34),
                random.Random(23).randbytes(megabytes),
                ]:
            with self.subTest(start=raw[:30]):
                self.assert_fast(raw)

    def test_deep_nesting(self):
        "Deeply nested multiparts and messages are classified in a moment"
        for raw in [
                b'Content-Type: multipart/mixed; boundary="b"\n\n'
                + b'--b\nContent-Type: multipart/mixed; boundary="b"\n\n'
                * 100000,
                b''.join(
                    b'Content-Type: multipart/mixed; boundary="%d"\n\n--%d\n'
                    % (i, i) for i in range(20000)),
                b'Content-Type: message/rfc822\n\n' * 100000,
                b'Content-Type: multipart/report; boundary="b"\n\n'
                + b'--b\nContent-Type: message/delivery-status\n\n'
                + b'Action: failed\nStatus: 5.1.1\n\n' * 20000,
                ]:
            with self.subTest(start=raw[:60]):
                self.assert_fast(raw)

    def test_broken_corpus(self):
        """The messages of the corpus, cut, with bytes changed, lines
        dropped or repeated, are classified without raising"""
        generator = random.Random(3464)
        garbage = [
            b'\x00', b'\xff\xfe', b'=?', b'?=', b'--', b'\r', b'\n\n',
            b'Content-Type: multipart/mixed; boundary=', b'charset=',
            b'; charset="a\x00b"', b'=?x-unknown?B?////?=', b'<', b'@',
            b'"', b'\\', b';', b'\nFrom:\n',
            b'\nContent-Type: message/rfc822\n\n']
        for label, raw in corpus():
            for _ in range(6):
                broken = bytearray(raw)
                for _ in range(generator.randint(1, 8)):
                    position = generator.randrange(len(broken) + 1)
                    choice = generator.randrange(4)
                    if choice == 0:
                        del broken[position:]
                    elif choice == 1:
                        broken[position:position] = generator.choice(garbage)
                    elif choice == 2:
                        broken[position:position + 1] = bytes(
                            [generator.randrange(256)])
                    else:
                        lines = bytes(broken).split(b'\n')
                        index = generator.randrange(len(lines))
                        lines[index:index + 1] = [lines[index]] * (
                            generator.randrange(3))
                        broken = bytearray(b'\n'.join(lines))
                with self.subTest(file=label['file']):
                    result = feedback.classify(bytes(broken), BOUNCE)

                    self.assert_feedback(result)
                    self.assertNotEqual(result.evidence, 'unreadable')

    def test_bad_charsets(self):
        "Unknown, invalid and lying charsets give text, never an error"
        for charset in [
                'x-unknown', 'utf-8\x00', 'a"b', 'utf-32', 'unicode-escape',
                'rot13', 'idna', 'uu', 'base64', 'punycode', '']:
            raw = message(
                'From: =?%s?B?/w==?= <ann@example.org>' % charset,
                'In-Reply-To: <a.7@shop.example.com>',
                'Subject: Re: caf\udce9', body='caf\xe9 \udcff',
                content_type=f'text/plain; charset="{charset}"')
            with self.subTest(charset=charset):
                result = feedback.classify(raw, BOUNCE)

                self.assert_feedback(result)
                self.assertEqual(result.kind, feedback.REPLY)
                self.assertEqual(result.sender, 'ann@example.org')

    def test_classify_is_fast(self):
        "The corpus is classified at hundreds of messages per second"
        messages = [raw for _, raw in corpus()]
        start = time.perf_counter()
        for raw in messages:
            feedback.classify(raw, BOUNCE)
        duration = time.perf_counter() - start

        self.assertLess(duration / len(messages), 0.05)
