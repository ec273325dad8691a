# SPDX-License-Identifier: GPL-3.0-or-later
"""The Tryton web client (sao) in a real browser, driven like a marketer.

    python tests/browser/web_client.py [--artifacts DIR] [--no-install]

It is not part of the unit test suite (it needs Chromium, sao and a
running server): ``tox -e browser`` and ``bash scripts/browser-test`` run it.

It makes a fresh SQLite database with the module activated, a user
"marketer" of the marketing group and a few parties, starts an SMTP server
on the loopback and ``trytond`` serving the web client, then drives headless
Chromium (selenium with the system chromedriver) through the steps of
STEPS: log in, open Marketing > Scenarios, create a scenario with a root
"Send Email" activity and a child "On email clicked", run it, let the
scheduled actions work (called here as trytond-cron would), read the counts
in the activity tree and open the scenario's reporting graphs.

Each step is a test: its outcome is printed on a line and the last line
reads "N passed, N failed"; once a step fails the next ones are not run and
count as failed.  Screenshots of the steps and the server's log are saved in
the artifacts folder (tests/browser/artifacts by default).

What it needs, installed by tests/browser/ensure-tools when missing (unless
--no-install): /usr/bin/chromium and /usr/bin/chromedriver (Debian's
chromium and chromium-driver) and the npm package tryton-sao 8.0 with its
dependencies, kept in ~/.cache/marketing_automation/sao-8.0.
"""
import argparse
import configparser
import datetime as dt
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
SAO_SERIES = '8.0'
CHROMIUM_FLAGS = [
    '--headless', '--no-sandbox', '--disable-gpu',
    '--disable-background-networking', '--no-first-run', '--disable-sync',
    '--disable-component-update', '--disable-dev-shm-usage',
    '--window-size=1920,1080', '--lang=en-US',
    ]
DATABASE = 'browser'
MARKETER = 'marketer'
# trytond asks for 8 characters, most of them different
MARKETER_PASSWORD = 'Mk7-tr!pLe9q'
ADMIN_PASSWORD = 'aD4#nM9_xQ2z'
PARTIES = [
    ("Alice Johnson", "alice.johnson@example.com"),
    ("Benjamin Carter", "ben.carter@example.org"),
    ("Chloé Martin", "chloe.martin@example.fr"),
    ("Daniel Kim", "daniel.kim@example.com"),
    ("Zoe Adams", None),
    ]
WITH_EMAIL = sum(1 for _, e in PARTIES if e)
SCENARIO = "Browser Welcome"
WELCOME = "Welcome email"
WELCOME_TITLE = "Welcome, ${record.rec_name}"
WELCOME_TEMPLATE = (
    '<p>Hello ${record.rec_name}, have a look at '
    '<a href="https://example.com/shop">our shop</a>.</p>'
    '<p><a href="unsubscribe">Unsubscribe</a></p>')
THANKS = "On email clicked"
THANKS_TITLE = "Thanks for your visit"
THANKS_TEMPLATE = '<p>Thanks for your click, ${record.rec_name}.</p>'
# The recipients who click the link of their welcome email
CLICKERS = ["alice.johnson@example.com", "chloe.martin@example.fr"]
WAIT = 30


def default_sao_folder():
    cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(
        os.path.expanduser('~'), '.cache')
    return os.path.join(cache, 'marketing_automation', f'sao-{SAO_SERIES}')


def sao_ready(folder):
    return all(os.path.isfile(os.path.join(folder, p)) for p in [
            'index.html', 'dist/tryton-sao.js',
            'node_modules/jquery/dist/jquery.js'])


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def say(*args):
    print(*args, flush=True)


# ---------------------------------------------------------------------------
# The site: an SMTP server, a database and trytond

class SMTPServer:
    "A mail server on the loopback that keeps what it accepts"

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages = []
        self.lock = threading.Lock()
        server = self

        class Handler:
            async def handle_DATA(self, smtp, session, envelope):
                with server.lock:
                    server.messages.append(
                        (list(envelope.rcpt_tos), envelope.original_content))
                return '250 2.0.0 Message accepted for delivery'

        self.port = free_port()
        self.controller = Controller(
            Handler(), hostname='127.0.0.1', port=self.port)

    def start(self):
        self.controller.start()

    def stop(self):
        self.controller.stop()

    def received(self):
        with self.lock:
            return list(self.messages)


class Site:
    "A fresh database served by trytond with the web client"

    def __init__(self, runtime, sao, artifacts):
        self.runtime = runtime
        self.sao = sao
        self.artifacts = artifacts
        self.bin = os.path.dirname(sys.executable)
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}/'
        self.conf = os.path.join(runtime, 'trytond.conf')
        self.log = os.path.join(artifacts, 'trytond.log')
        self.smtp = SMTPServer()
        self.server = None
        self.pool = None

    def command(self, name):
        path = os.path.join(self.bin, name)
        if not os.path.exists(path):
            path = shutil.which(name)
        return [path]

    def configure(self):
        config = configparser.ConfigParser(interpolation=None)
        config['database'] = {
            'uri': 'sqlite://',
            'path': os.path.join(self.runtime, 'db'),
            }
        config['web'] = {
            'listen': f'127.0.0.1:{self.port}',
            'root': self.sao,
            }
        config['email'] = {
            'uri': f'smtp://127.0.0.1:{self.smtp.port}',
            'from': 'Browser Shop <shop@example.com>',
            }
        config['queue'] = {'worker': 'False'}
        config['marketing'] = {
            'automation_base': self.url.rstrip('/'),
            'email_from': 'Browser Shop <shop@example.com>',
            }
        os.makedirs(os.path.join(self.runtime, 'db'))
        with open(self.conf, 'w') as fp:
            config.write(fp)

    def create_database(self):
        # On SQLite, the database file must exist before it is initialised.
        open(os.path.join(self.runtime, 'db', f'{DATABASE}.sqlite'),
            'w').close()
        password = os.path.join(self.runtime, 'admin-password')
        with open(password, 'w') as fp:
            fp.write(ADMIN_PASSWORD + '\n')
        env = dict(os.environ, TRYTONPASSFILE=password)
        log = os.path.join(self.artifacts, 'trytond-admin.log')
        with open(log, 'w') as output:
            process = subprocess.run(
                self.command('trytond-admin') + [
                    '-c', self.conf, '-d', DATABASE,
                    '-u', 'marketing_automation', '--activate-dependencies',
                    '--email', 'admin@example.com'],
                stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, env=env)
        if process.returncode:
            with open(log) as fp:
                tail = fp.read()[-3000:]
            raise RuntimeError(f"trytond-admin failed:\n{tail}")

    def open_pool(self):
        "Load the database's pool in this process to act as trytond-cron"
        from trytond.config import update_etc
        update_etc(self.conf)
        from trytond.pool import Pool
        from trytond.transaction import Transaction
        Pool.start()
        self.pool = Pool(DATABASE)
        with Transaction().start(DATABASE, 0, readonly=True):
            self.pool.init()

    def fill(self):
        "Create the marketer and the parties"
        from trytond.transaction import Transaction
        pool = self.pool
        with Transaction().start(DATABASE, 0) as transaction:
            User = pool.get('res.user')
            Group = pool.get('res.group')
            ModelData = pool.get('ir.model.data')
            Party = pool.get('party.party')
            group = Group(ModelData.get_id('marketing', 'group_marketing'))
            User.create([{
                        'name': "Mary Marketer",
                        'login': MARKETER,
                        'password': MARKETER_PASSWORD,
                        'email': 'mary@example.com',
                        'groups': [('add', [group.id])],
                        }])
            Party.create([{
                        'name': name,
                        'contact_mechanisms': [('create', [{
                                        'type': 'email', 'value': email,
                                        }])] if email else [],
                        } for name, email in PARTIES])
            transaction.commit()

    def start(self):
        self.smtp.start()
        output = open(self.log, 'w')
        self.server = subprocess.Popen(
            self.command('trytond') + ['-v', '-c', self.conf, '-d', DATABASE],
            stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True)
        output.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(
                    "trytond stopped, see " + self.log)
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if b'sao' in response.read():
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"trytond does not answer on {self.url}")

    def stop(self):
        if self.server is not None:
            stop_group(self.server)
            self.server = None
        self.smtp.stop()

    def run_crons(self):
        """Run the module's two scheduled actions as trytond-cron does (the
        queued tasks included, there is no queue worker); return the number
        of tasks run"""
        from trytond.transaction import Transaction
        from trytond.worker import run_task
        Cron = self.pool.get('ir.cron')
        count = 0
        for method in [
                'marketing.automation.scenario|trigger',
                'marketing.automation.record.activity|process']:
            with Transaction().start(
                    DATABASE, 0,
                    context={'_skip_warnings': True}) as transaction:
                cron, = Cron.search([('method', '=', method)])
                with transaction.set_context(_cron=method):
                    cron.run_once()
                transaction.commit()
            # The tasks queued by the transaction, and by these tasks
            tasks = Transaction().tasks
            while tasks:
                run_task(DATABASE, tasks.pop())
                count += 1
        return count

    def scenario_counts(self, name):
        from trytond.transaction import Transaction
        Scenario = self.pool.get('marketing.automation.scenario')
        with Transaction().start(DATABASE, 0, readonly=True):
            scenario, = Scenario.search([('name', '=', name)])
            return scenario.state, {
                a.name: a.record_count for a in scenario.activities}

    def click(self, address):
        """Follow the tracked link of the welcome email to address as the
        recipient's mail client would, without going on to the shop"""
        for rcpt_tos, data in self.smtp.received():
            if address in rcpt_tos:
                break
        else:
            raise AssertionError(f"no email to {address}")
        import email
        import email.policy
        message = email.message_from_bytes(data, policy=email.policy.default)
        html = message.get_body(('html',)).get_content()
        links = re.findall(r'href="([^"]+)"', html)
        tracked = [l.replace('&amp;', '&') for l in links
            if l.startswith(self.url) and 'unsubscribe' not in l]
        if not tracked:
            raise AssertionError(f"no tracked link in {links}")

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None
        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(tracked[0], timeout=10)
        except urllib.error.HTTPError as error:
            if error.code not in {301, 302, 303, 307}:
                raise
        return tracked[0]


def stop_group(process, timeout=10):
    "Stop process and every process of its group"
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


# ---------------------------------------------------------------------------
# The browser

def start_browser(profile):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f'--user-data-dir={profile}')
    # chromedriver and the browser in a process group of their own, so that
    # none of them outlives the run
    service = Service(
        executable_path=CHROMEDRIVER,
        popen_kw={'start_new_session': True})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_window_size(1920, 1080)
    return driver


def stop_browser(driver):
    process = driver.service.process
    try:
        driver.quit()
    except Exception:
        pass
    if process is not None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
