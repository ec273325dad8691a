# SPDX-License-Identifier: GPL-3.0-or-later
"""The Tryton web client (sao) in a real browser, driven like a marketer.

    python tests/browser/web_client.py [--artifacts DIR] [--sao DIR]
        [--no-install] [--keep]

It is not part of the unit test suite (it needs Chromium, sao and a
running server): ``tox -e browser`` and ``bash scripts/browser-test`` run it.

It makes a fresh SQLite database with the module activated, a user
"marketer" of the marketing group and a few parties, starts an SMTP server
on the loopback and ``trytond`` serving the web client, then drives headless
Chromium (selenium with the system chromedriver) through STEPS: log in as
the marketer, open Marketing > Scenarios, create a scenario with a root
"Send Email" activity, add it a child "On email clicked", read who the
scenario will reach and list the parties without an email address, preview
the email of the activity for a party (and open it in a browser window),
send it to herself as a test email, run the scenario, let the
scheduled actions work (called here as trytond-cron does; two recipients
follow the link of their email), read the counts in the activity tree, open
the scenario's reporting and the activity's reporting (from its form) as
lists and graphs, and Marketing > Reporting > Activities; last, neither the
browser's console nor trytond's log may show an error.

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
import email
import email.policy
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
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
SAO_SERIES = '8.0'
CHROMIUM_FLAGS = [
    '--headless', '--no-sandbox', '--disable-gpu',
    '--disable-background-networking', '--no-first-run', '--disable-sync',
    '--disable-component-update', '--disable-dev-shm-usage',
    '--window-size=1280,800', '--lang=en-US',
    ]
# a laptop's screen: the forms must fit it without scrolling sideways
WINDOW = (1280, 800)
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
# what a person's browser says it is
BROWSER_AGENT = (
    'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) '
    'Chrome/130.0.0.0 Safari/537.36')
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
        self.running = True

    def stop(self):
        if getattr(self, 'running', False):
            self.running = False
            self.controller.stop()

    def received(self):
        with self.lock:
            return list(self.messages)

    def clear(self):
        with self.lock:
            del self.messages[:]


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
            # the recipients of this test click seconds after delivery,
            # when only the scanners of mail servers do
            'event_early_window': '0',
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
        try:
            if self.server is not None:
                stop_group(self.server)
                self.server = None
        finally:
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

    def activities(self, scenario_id):
        """The activities of the scenario in the database, parents first, as
        (name, 'scenario' or 'activity', event, action)"""
        from trytond.transaction import Transaction
        Activity = self.pool.get('marketing.automation.activity')
        with Transaction().start(DATABASE, 0, readonly=True):
            result = []
            activities = Activity.search([
                    ('parent', '=', ('marketing.automation.scenario',
                            scenario_id))], order=[('id', 'ASC')])
            while activities:
                activity = activities.pop(0)
                result.append((
                        activity.name, activity.parent.__name__.split('.')[-1],
                        activity.event, activity.action))
                activities.extend(activity.children)
            return result

    def click(self, address):
        """Follow the tracked link of the welcome email to address as the
        recipient's mail client would, without going on to the shop"""
        for rcpt_tos, data in self.smtp.received():
            if address in rcpt_tos:
                break
        else:
            raise AssertionError(f"no email to {address}")
        import lxml.html
        message = email.message_from_bytes(data, policy=email.policy.default)
        html = lxml.html.document_fromstring(
            message.get_body(('html',)).get_content())
        links = [(a.text_content().strip(), a.get('href'))
            for a in html.iter('a')]
        tracked = [href for text, href in links
            if text == "our shop" and href.startswith(self.url)]
        if not tracked:
            raise AssertionError(f"no tracked link to the shop in {links}")

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None
        opener = urllib.request.build_opener(NoRedirect)
        # the user agent of a person's browser, not of a script
        opener.addheaders = [('User-Agent', BROWSER_AGENT)]
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

def start_browser(profile, log, home):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f'--user-data-dir={profile}')
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    # chromedriver and the browser in a process group of their own, so that
    # none of them outlives the run
    # Chromium keeps its crash reports in XDG_CONFIG_HOME: in the runtime
    # folder, not in the user's own; and its own log out of chromedriver's
    service = Service(
        executable_path=CHROMEDRIVER, log_output=log,
        service_args=['--log-level=WARNING'],
        env=dict(
            os.environ, XDG_CONFIG_HOME=home, XDG_CACHE_HOME=home,
            CHROME_LOG_FILE=os.path.join(home, 'chromium.log')),
        popen_kw={'start_new_session': True})
    driver = webdriver.Chrome(service=service, options=options)
    # the page gets WINDOW: the window's frame comes on top
    driver.set_window_size(*WINDOW)
    inner = driver.execute_script(
        'return [window.innerWidth, window.innerHeight]')
    driver.set_window_size(*(
            2 * size - shown for size, shown in zip(WINDOW, inner)))
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


UPPER = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'
LOWER = 'abcdefghijklmnopqrstuvwxyz'


def text_is(text):
    "An XPath condition: the text of the node is text, in any case"
    return (f'translate(normalize-space(), "{UPPER}", "{LOWER}")='
        f'"{text.lower()}"')


# The rows of a tree (list) widget as the page shows them: one dictionary
# per visible row, from the column titles to the texts of the cells.
TREE_ROWS = '''
const table = arguments[0];
const titles = Array.from(table.querySelectorAll('thead > tr > th'))
    .map(th => th.innerText.trim());
return Array.from(table.querySelectorAll('tbody > tr'))
    .filter(tr => tr.offsetParent !== null)
    .map(tr => {
        const row = {};
        Array.from(tr.children).forEach((td, i) => {
            if (titles[i]) {
                row[titles[i]] = td.innerText.replace(/\\s+/g, ' ').trim();
            }
        });
        return row;
    });
'''

# What a graph of the page draws: its legend, the labels of its x axis, the
# heights of its bars and the number of points of its lines.
GRAPH = '''
const graph = arguments[0];
const texts = selector => Array.from(graph.querySelectorAll(selector))
    .map(e => e.textContent.trim());
return {
    legend: texts('.bb-legend-item text'),
    x: texts('.bb-axis-x .tick text'),
    y: texts('.bb-axis-y .tick text'),
    bars: Array.from(graph.querySelectorAll('path.bb-bar'))
        .map(p => p.getBBox().height),
    points: graph.querySelectorAll('.bb-circles circle').length,
    lines: graph.querySelectorAll('path.bb-line').length,
};
'''

# What of a form goes past the right edge of its tab or dialog, or makes a
# part of it scroll sideways: a list of descriptions, empty when it fits.
# The content of a part that scrolls or clips is not looked into further.
OVERFLOW = '''
const root = arguments[0];
const right = root.getBoundingClientRect().right;
const found = [];
const describe = e => {
    let text = e.tagName.toLowerCase();
    if (typeof e.className == 'string' && e.className.trim()) {
        text += '.' + e.className.trim().split(/\\s+/).join('.');
    }
    const label = (e.innerText || '').trim().split('\\n')[0].slice(0, 40);
    return label ? `${text} "${label}"` : text;
};
// what sticks out of a part that scrolls, by how much, and the widest: the
// handles that resize the columns of a list do not count, the client lets
// the last one stick out when the list was drawn on a hidden page
const overhang = element => {
    const edge = element.getBoundingClientRect().right;
    let most = 0, widest = null;
    for (const e of element.querySelectorAll('*')) {
        if (e.closest('.resizer') || !e.getClientRects().length) {
            continue;
        }
        const beyond = e.getBoundingClientRect().right - edge;
        if (beyond > most) {
            most = beyond;
            widest = e;
        }
    }
    return [Math.round(most), widest];
};
const page = document.scrollingElement;
if (page.scrollWidth > page.clientWidth + 1) {
    found.push(`the page scrolls sideways by `
        + `${page.scrollWidth - page.clientWidth}px`);
}
const look = (element, limit) => {
    for (const child of element.children) {
        const style = getComputedStyle(child);
        if (!child.getClientRects().length || style.visibility == 'hidden') {
            continue;
        }
        const box = child.getBoundingClientRect();
        // a row of Bootstrap's grid, and what it holds, reach into the
        // gutter of its parent
        const end = limit + (child.classList.contains('row') ? 15 : 0);
        if (box.width > 0 && box.right > end + 1) {
            found.push(`${describe(child)} ends `
                + `${Math.round(box.right - right)}px past the right edge`);
        } else if (['auto', 'scroll'].includes(style.overflowX)
                && child.scrollWidth > child.clientWidth + 1
                && overhang(child)[0] > 1) {
            const [beyond, widest] = overhang(child);
            found.push(`${describe(child)} scrolls sideways by `
                + `${beyond}px (widest: ${describe(widest)})`);
        } else if (!['hidden', 'clip'].includes(style.overflowX)) {
            look(child, end);
        }
    }
};
look(root, right);
return found;
'''


class Client:
    "What a marketer does in the web client, with explicit waits"

    def __init__(self, driver, timeout=WAIT):
        from selenium.common.exceptions import (
            NoSuchElementException, StaleElementReferenceException)
        from selenium.webdriver.support.ui import WebDriverWait
        self.driver = driver
        self.timeout = timeout
        # sao draws its widgets again as it likes: an element found a
        # moment ago may be gone, look for it again
        self.ignored = [
            NoSuchElementException, StaleElementReferenceException]
        self.wait = WebDriverWait(
            driver, timeout, ignored_exceptions=self.ignored)

    def until(self, condition, message='', timeout=None):
        "Wait until condition() returns a true value and return it"
        wait = self.wait
        if timeout is not None:
            from selenium.webdriver.support.ui import WebDriverWait
            wait = WebDriverWait(
                self.driver, timeout, ignored_exceptions=self.ignored)
        return wait.until(lambda _: condition(), message)

    def visible(self, elements):
        for element in elements:
            if element.is_displayed():
                return element
        return False

    def idle(self):
        "Wait until the client has no request running"
        time.sleep(0.2)
        self.until(
            lambda: self.driver.execute_script(
                'return window.jQuery ? jQuery.active : 1') == 0,
            "the client is still waiting for the server")

    def by_xpath(self, root, xpath):
        from selenium.webdriver.common.by import By
        return root.find_elements(By.XPATH, xpath)

    def by_css(self, root, css):
        from selenium.webdriver.common.by import By
        return root.find_elements(By.CSS_SELECTOR, css)

    def tab(self):
        "The tab shown"
        return self.until(lambda: self.visible(self.by_css(
                    self.driver, '#tabcontent > .tab-pane.active')),
            "no tab is open")

    def dialog(self):
        "The dialog on top, None if there is none"
        dialogs = [
            d for d in self.by_css(self.driver, '.modal.in')
            if d.is_displayed()]
        return dialogs[-1] if dialogs else None

    def root(self, root):
        if root is None:
            return self.tab()
        return root

    def tab_title(self):
        return self.tab().find_element(
            'css selector', 'nav.toolbar .title').text.strip()

    def toolbar(self, title):
        "The enabled button of the tab's toolbar with this title"
        return self.until(lambda: self.visible(
                b for b in self.by_css(
                    self.tab(), f'nav.toolbar button[title="{title}"]')
                if b.is_enabled()),
            f'no button "{title}" in the toolbar')

    def button(self, text, root=None):
        "The enabled button that reads text (a form's button or link)"
        return self.until(lambda: self.visible(
                b for b in self.by_xpath(
                    self.root(root), f'.//button[{text_is(text)}]')
                if b.is_enabled()),
            f'no button "{text}"')

    def link(self, text, root=None):
        "The enabled link button of a form whose title is text"
        return self.until(lambda: self.visible(
                b for b in self.by_css(
                    self.root(root), f'button.form-link[title="{text}"]')
                if b.is_enabled()),
            f'no link "{text}"')

    def dialog_button(self, text):
        return self.until(lambda: self.visible(
                b for b in self.by_xpath(
                    self.dialog(), './/div[contains(@class, "modal-footer")]'
                    f'//button[{text_is(text)}]')
                if b.is_enabled()),
            f'no button "{text}" in the dialog')

    def field(self, label, root=None, editable=False):
        "The input of the field labelled label (once editable if asked)"
        def find():
            for element in self.by_xpath(
                    self.root(root),
                    f'.//label[normalize-space()="{label}:" '
                    f'or normalize-space()="{label}"][@for]'):
                if element.is_displayed():
                    # the login dialog has a hidden twin of its input
                    target = self.visible(self.by_xpath(
                            self.driver,
                            f'//*[@id="{element.get_attribute("for")}"]'))
                    if target and (not editable or (
                                target.is_enabled()
                                and not target.get_attribute('readonly'))):
                        return target
            return False
        return self.until(find, f'no field "{label}"'
            + (' to edit' if editable else ''))

    def value(self, label, root=None):
        from selenium.webdriver.support.ui import Select
        element = self.field(label, root)
        if element.tag_name == 'select':
            return Select(element).first_selected_option.text
        return element.get_property('value')

    def type(self, label, text, root=None):
        "Type text in the field labelled label, and leave it"
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.common.keys import Keys
        for _ in range(3):
            self.idle()
            try:
                element = self.field(label, root, editable=True)
                element.clear()
                element.send_keys(text)
                element.send_keys(Keys.TAB)
            except WebDriverException:
                # drawn again meanwhile
                continue
            self.idle()
            if self.value(label, root) == text:
                return
        raise AssertionError(
            f'the field "{label}" shows {self.value(label, root)!r}, '
            f'not {text!r}')

    def select(self, label, text, root=None):
        "Choose text in the selection field labelled label"
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import Select
        for _ in range(3):
            self.idle()
            try:
                element = self.field(label, root, editable=True)
                self.until(
                    lambda: text in [
                        o.text for o in Select(element).options],
                    f'no choice "{text}" for "{label}"')
                Select(element).select_by_visible_text(text)
            except WebDriverException:
                continue
            # A change answered by the server may show the record again:
            # check that the choice stays.
            self.idle()
            if self.value(label, root) == text:
                return
        raise AssertionError(
            f'the field "{label}" shows {self.value(label, root)!r}, '
            f'not {text!r}')

    def one2many(self, label, root=None):
        return self.until(lambda: self.visible(self.by_xpath(
                    self.root(root),
                    './/div[contains(@class, "form-one2many ")]'
                    '[./div[contains(@class, "form-one2many-menu")]'
                    f'/label[normalize-space()="{label}"]]')),
            f'no list "{label}"')

    def one2many_button(self, label, title, root=None):
        widget = self.one2many(label, root)
        return self.until(lambda: self.visible(
                b for b in self.by_css(widget, f'button[title="{title}"]')
                if b.is_enabled()),
            f'no button "{title}" for "{label}"')

    def page(self, name, root=None):
        "Show the page name of a notebook"
        self.until(lambda: self.visible(self.by_xpath(
                    self.root(root),
                    './/ul[contains(@class, "nav-tabs")]/li'
                    f'/a[normalize-space()="{name}"]')),
            f'no page "{name}"').click()

    def rows(self, root=None):
        "The rows of the first visible list of root"
        table = self.until(lambda: self.visible(
                self.by_css(self.root(root), 'table.tree')),
            "no list")
        return self.driver.execute_script(TREE_ROWS, table)

    def row(self, name, root=None):
        "The row element of a list whose cells read name"
        return self.until(lambda: self.visible(self.by_xpath(
                    self.root(root),
                    f'.//table[contains(@class, "tree")]/tbody/tr'
                    f'[./td//*[normalize-space()="{name}"]]')),
            f'no row "{name}"')

    def open_row(self, label, name, root=None):
        """Open the row whose cells read name of the list labelled label:
        make it the current record, then click Open"""
        from selenium.common.exceptions import TimeoutException
        widget = self.one2many(label, root)

        def button():
            return self.visible(
                b for b in self.by_css(widget, 'button[title="Open"]')
                if b.is_enabled())
        for _ in range(3):
            # a click on the current row may unselect it: then click again
            self.row(name, widget).find_element(
                'xpath', f'.//*[normalize-space()="{name}"]').click()
            try:
                self.until(button, timeout=3).click()
            except TimeoutException:
                continue
            return
        raise AssertionError(f'the row "{name}" of "{label}" does not open')

    def menu_entry(self, name):
        "The row of the menu whose entry reads name, False if not shown"
        return self.visible(self.by_xpath(
                self.driver,
                '//div[@id="menu"]//tr[.//div[contains(@class, "column-char")]'
                f'[normalize-space()="{name}"]]'))

    def menu(self, *path):
        "Open the entry of the menu at path, unfolding its parents"
        for parent, child in zip(path, path[1:]):
            row = self.until(lambda: self.menu_entry(parent),
                f'no menu entry "{parent}"')
            # the expander also folds an unfolded entry
            if not self.menu_entry(child):
                row.find_element('css selector', '.expander img').click()
        self.until(lambda: self.menu_entry(path[-1]),
            f'no menu entry "{path[-1]}"').find_element(
            'css selector', '.column-char').click()

    def tabs(self):
        "The titles of the open tabs, as {title: the tab's element}"
        return {
            s.get_attribute('title'): s
            for s in self.by_css(self.driver, '#tablist > li > a > span')}

    def show_tab(self, title):
        """Show the tab whose title is title, once it is open.

        sao may open a second tab for the same action from the address it
        has just set (a race of its "hashchange" handler): the test looks
        for its tab by title, not for the last tab opened."""
        self.until(lambda: self.tabs().get(title), f'no tab "{title}"').click()
        self.until(lambda: title in self.tab_title(),
            f'the tab "{title}" is not shown')

    def tab_domain(self, name):
        "The tab of the list of the tab shown whose name starts with name"
        return self.until(lambda: self.visible(
                a for a in self.by_css(
                    self.tab(), '.tab-domain ul.nav-tabs > li > a')
                if a.text.strip().startswith(name)),
            f'no tab "{name}" above the list')

    def overflow(self, root=None):
        "What of root goes past its right edge or scrolls sideways"
        self.idle()
        return self.driver.execute_script(OVERFLOW, self.root(root))

    def pages(self, root=None):
        "The names of the pages of the notebooks shown in root"
        return [a.text.strip() for a in self.by_css(
                self.root(root), '.form-notebook > ul.nav-tabs > li > a')
            if a.is_displayed() and a.text.strip()]

    def graph(self, root=None):
        "What the graph of root shows, once it has drawn something"
        graph = self.until(lambda: self.visible(
                self.by_css(self.root(root), '.graph')),
            "no graph")
        return self.until(lambda: (lambda g: g if g['legend'] else False)(
                self.driver.execute_script(GRAPH, graph)),
            "the graph draws nothing")


# ---------------------------------------------------------------------------
# The steps

class Steps:
    "The steps of the marketer, each one a test"

    def __init__(self, site, artifacts, runtime):
        self.site = site
        self.artifacts = artifacts
        self.runtime = runtime
        self.driver = None
        self.client = None
        self.scenario_id = None
        self.activity_dialog = self.wizard = None
        self.screenshots = []
        self.console = []
        # what does not fit the window, of every form looked at
        self.overflows = []

    def screenshot(self, name):
        path = os.path.join(self.artifacts, name)
        self.driver.save_screenshot(path)
        self.screenshots.append(path)
        return path

    def check(self, condition, message):
        if not condition:
            raise AssertionError(message)

    def step_site(self):
        "a fresh database with the module, the marketer, parties; trytond"
        self.site.configure()
        self.site.create_database()
        self.site.open_pool()
        self.site.fill()
        self.site.start()

    def step_browser(self):
        "headless Chromium driven by the system chromedriver"
        self.driver = start_browser(
            os.path.join(self.runtime, 'chromium-profile'),
            os.path.join(self.artifacts, 'chromedriver.log'),
            os.path.join(self.runtime, 'chromium-home'))
        self.client = Client(self.driver)

    def step_login(self):
        "log in as the marketer"
        c = self.client
        self.driver.get(f'{self.site.url}#{DATABASE}')
        dialog = c.until(c.dialog, "no login dialog")
        c.until(lambda: c.value('Database', dialog) == DATABASE,
            "the login dialog does not show the database")
        c.type('User name', MARKETER, dialog)
        c.button('Login', dialog).click()
        password = c.until(lambda: c.visible(c.by_css(
                    c.driver, '.modal.in input[type="password"]')),
            "no password asked")
        password.send_keys(MARKETER_PASSWORD + '\n')
        c.until(lambda: c.visible(c.by_xpath(
                    c.driver, '//*[@id="menu"]//div[contains(@class, '
                    '"column-char")][normalize-space()="Marketing"]')),
            "no Marketing menu after the login")
        self.cancel_module_configuration()
        c.until(lambda: c.visible(c.by_xpath(
                    c.driver, '//nav//*[normalize-space()="Mary Marketer"]')),
            "the name of the marketer is not shown")

    def cancel_module_configuration(self):
        "Cancel the wizard that admin sees at his first login"
        c = self.client
        time.sleep(0.5)
        c.idle()
        dialog = c.dialog()
        if dialog is not None and 'Module Configuration' in dialog.text:
            c.dialog_button('Cancel').click()
            c.until(lambda: c.dialog() is None, "the wizard stays")

    def step_open_scenarios(self):
        "open Marketing > Scenarios, on the tab of all the scenarios"
        c = self.client
        c.menu('Marketing', 'Scenarios')
        c.until(lambda: '/model/marketing.automation.scenario'
            in self.driver.current_url, "the scenarios are not opened")
        c.until(lambda: 'Scenarios' in c.tab_title(),
            "the tab is not the scenarios'")
        c.idle()
        tabs = [a.text.strip() for a in c.by_css(
                c.tab(), '.tab-domain ul.nav-tabs > li > a')]
        active = [a.text.strip() for a in c.by_css(
                c.tab(), '.tab-domain ul.nav-tabs > li.active > a')]
        self.check(tabs[:1] == ['All'] and active == ['All'],
            f"the scenarios open on the tab {active} of {tabs}, not on All")
        self.check(c.rows() == [], f"scenarios already exist: {c.rows()}")

    def preview_hint(self, dialog):
        """The hint shown under the greyed-out Preview button of the activity
        of dialog, None when the button works and says nothing"""
        c = self.client
        button = c.visible(c.by_xpath(
                dialog, f'.//button[{text_is("Preview")}]'))
        self.check(button, "no Preview button")
        hint = c.visible(c.by_xpath(
                dialog, './/label[contains(normalize-space(), '
                '"Save the scenario to preview")]'))
        if button.is_enabled():
            return None if not hint else hint.text
        return hint.text if hint else ''

    def step_create_scenario(self):
        "create a scenario with a root activity that sends an email; save"
        c = self.client
        c.toolbar('New').click()
        c.idle()
        c.type('Name', SCENARIO)
        self.check(c.value('Model') == 'Party',
            f"the model is {c.value('Model')!r}, not Party")
        self.check(c.value('Domain') == '[]',
            f"the domain is {c.value('Domain')!r}, not []")
        self.check(c.value('State') == 'Draft',
            f"the state is {c.value('State')!r}, not Draft")

        c.one2many_button('Activities', 'New').click()
        dialog = c.until(c.dialog, "no dialog for the new activity")
        c.type('Name', WELCOME, dialog)
        c.select('Action', 'Send Email', dialog)
        # the page of the email shows once the action is chosen
        c.page('Email', dialog)
        c.type('Email Title', WELCOME_TITLE, dialog)
        c.type('Email Template', WELCOME_TEMPLATE, dialog)
        # the preview reads the saved activity: its button says why it waits
        self.check(self.preview_hint(dialog),
            "a new activity does not say why its preview is greyed out")
        self.fits('the form of a new activity', dialog)
        c.dialog_button('Add').click()
        c.until(lambda: c.dialog() is None, "the dialog stays open")
        c.row(WELCOME)

        c.toolbar('Save').click()
        c.idle()
        match = c.until(lambda: re.search(
                r'/model/marketing\.automation\.scenario/(\d+)',
                self.driver.current_url),
            "the scenario has no id: not saved")
        self.scenario_id = int(match.group(1))
        rows = c.rows(c.one2many('Activities'))
        self.check(
            [(r['Name'], r['Action']) for r in rows]
            == [(WELCOME, 'Send Email')],
            f"the activities show {rows}")

    def step_add_child(self):
        "add the child activity 'On email clicked' to the root one; save"
        c = self.client
        c.open_row('Activities', WELCOME)
        root = c.until(c.dialog, "no dialog for the activity")
        self.check(c.value('Name', root) == WELCOME,
            f"the dialog shows {c.value('Name', root)!r}")
        c.page('Children', root)
        c.one2many_button('Children', 'New', root).click()
        child = c.until(lambda: (lambda d: d if d != root else None)(
                c.dialog()), "no dialog for the child activity")
        c.type('Name', THANKS, child)
        c.select('On', 'Email Clicked', child)
        c.select('Action', 'Send Email', child)
        c.page('Email', child)
        c.type('Email Title', THANKS_TITLE, child)
        c.type('Email Template', THANKS_TEMPLATE, child)
        c.dialog_button('Add').click()
        c.until(lambda: c.dialog() == root, "the child's dialog stays open")
        c.row(THANKS, root)
        c.dialog_button('Apply changes').click()
        c.until(lambda: c.dialog() is None, "the dialog stays open")
        c.toolbar('Save').click()
        c.idle()
        c.until(lambda: not any(
                b.is_enabled() for b in c.by_css(
                    c.tab(), 'nav.toolbar button[title="Save"]')),
            "the scenario is not saved")
        activities = c.one2many('Activities')
        c.row(THANKS, activities)
        rows = {r['Name']: r for r in c.rows(activities)}
        self.check(set(rows) == {WELCOME, THANKS},
            f"the activities show {list(rows)}")
        self.check(rows[THANKS]['On'] == 'Email Clicked',
            f"the child activity is on {rows[THANKS]['On']!r}")
        self.check(self.site.activities(self.scenario_id) == [
                (WELCOME, 'scenario', None, 'send_email'),
                (THANKS, 'activity', 'email_clicked', 'send_email')],
            "the database has the activities "
            f"{self.site.activities(self.scenario_id)}")
        self.screenshot('scenario-form.png')

    def step_audience(self):
        """the audience of the draft scenario: who it will reach; list the
        parties without an email address"""
        c = self.client
        c.page('Audience')
        expected = {
            'Selected': str(len(PARTIES)),
            'Unsubscribed or Blocked': '0',
            'No Email Address': str(len(PARTIES) - WITH_EMAIL),
            'Reachable': str(WITH_EMAIL),
            }
        c.until(lambda: c.value('Selected') == expected['Selected'],
            "the audience is not counted")
        shown = {label: c.value(label) for label in expected}
        self.check(shown == expected,
            f"the audience shows {shown}, not {expected}")
        self.screenshot('scenario-audience.png')
        c.button('List without Email').click()
        c.show_tab(f'No Email Address ({SCENARIO})')
        c.idle()
        names = c.until(lambda: [r.get('Name') for r in c.rows()],
            "the list of the parties without an email address is empty")
        without = [name for name, email in PARTIES if not email]
        self.check(names == without,
            f"the parties without an email address are {names}, "
            f"not {without}")
        c.show_tab('Marketing / Scenarios')

    def step_preview(self):
        """preview the welcome email for the first party, and open it in a
        browser window: its links go to their targets"""
        c = self.client
        c.page('Activities')
        c.open_row('Activities', WELCOME)
        activity = c.until(c.dialog, "no dialog for the activity")
        self.activity_dialog = activity
        c.page('Email', activity)
        self.check(self.preview_hint(activity) is None,
            "a saved activity says that its preview is greyed out")
        c.button('Preview', activity).click()
        wizard = c.until(lambda: (lambda d: d if d != activity else None)(
                c.dialog()), "the preview does not open")
        self.wizard = wizard
        name, address = PARTIES[0]
        expected = {
            'Subject': f"Welcome, {name}",
            'From': 'Browser Shop <shop@example.com>',
            'To': f'{name} <{address}>',
            }
        c.until(lambda: c.value('Subject', wizard) == expected['Subject'],
            "the preview shows no subject")
        shown = {label: c.value(label, wizard) for label in expected}
        self.check(shown == expected,
            f"the preview shows {shown}, not {expected}")
        # the text of the page "Plain Text", shown first
        text = c.until(lambda: c.visible(c.by_css(
                    wizard, '.tab-pane.active textarea')),
            "the preview shows no plain text").get_property('value')
        self.check('our shop (https://example.com/shop)' in text,
            f"the plain text does not link the shop: {text!r}")
        self.screenshot('preview-wizard.png')
        self.fits('the preview wizard', wizard)
        c.page('Plain Text', wizard)

        main = self.driver.current_window_handle
        before = set(self.driver.window_handles)
        c.dialog_button('Open in Browser').click()
        handle, = c.until(
            lambda: set(self.driver.window_handles) - before,
            "the preview does not open in the browser")
        self.driver.switch_to.window(handle)
        try:
            c.until(lambda: f'Hello {name}' in self.driver.find_element(
                    'tag name', 'body').text,
                "the browser does not show the email")
            links = {a.text.strip(): a.get_attribute('href')
                for a in self.driver.find_elements('tag name', 'a')}
            self.check(links.get('our shop') == 'https://example.com/shop',
                f"the shop link of the preview is {links.get('our shop')}")
            self.check('/unsubscribe/test?' in links.get('Unsubscribe', ''),
                "the unsubscribe link of the preview is "
                f"{links.get('Unsubscribe')}")
            self.screenshot('preview-browser.png')
        finally:
            self.driver.close()
            self.driver.switch_to.window(main)

    def step_test_email(self):
        """send the email to the marketer as a test: marked [Test], its
        links untracked; it is not counted"""
        c = self.client
        smtp = self.site.smtp
        wizard = self.wizard
        self.check(c.value('Send a Test To', wizard) == 'mary@example.com',
            "the test goes to "
            f"{c.value('Send a Test To', wizard)!r}, not to the marketer")
        c.dialog_button('Send Test').click()
        c.until(lambda: 'mary@example.com' in c.value('Test Email', wizard),
            "the wizard does not say that the test was sent")
        deadline = time.monotonic() + WAIT
        while not smtp.received() and time.monotonic() < deadline:
            time.sleep(0.1)
        (rcpt_tos, data), = smtp.received()
        self.check(rcpt_tos == ['mary@example.com'],
            f"the test email went to {rcpt_tos}")
        message = email.message_from_bytes(
            data, policy=email.policy.default)
        name = PARTIES[0][0]
        self.check(message['Subject'] == f"[Test] Welcome, {name}",
            f"the test email's subject is {message['Subject']!r}")
        import lxml.html
        html = lxml.html.document_fromstring(
            message.get_body(('html',)).get_content())
        links = {a.text_content().strip(): a.get('href')
            for a in html.iter('a')}
        self.check(links.get('our shop') == 'https://example.com/shop',
            f"the shop link of the test email is {links.get('our shop')}")
        self.screenshot('preview-test-sent.png')
        # the later steps count the emails of the scenario only
        smtp.clear()
        c.dialog_button('Close').click()
        c.until(lambda: c.dialog() == self.activity_dialog,
            "the preview stays open")
        c.dialog_button('Discard changes').click()
        c.until(lambda: c.dialog() is None, "the activity stays open")

    def step_run(self):
        "run the scenario"
        c = self.client
        c.button('Run').click()
        c.idle()
        c.until(lambda: c.value('State') == 'Running',
            "the scenario is not running")
        c.button('Stop')

    def step_crons(self):
        """the scheduled actions send the emails; two recipients click;
        they send the emails of the child activity"""
        smtp = self.site.smtp
        self.site.run_crons()
        deadline = time.monotonic() + WAIT
        while (len(smtp.received()) < WITH_EMAIL
                and time.monotonic() < deadline):
            time.sleep(0.1)
        received = smtp.received()
        self.check(len(received) == WITH_EMAIL,
            f"{len(received)} emails sent, not {WITH_EMAIL}")
        for address in CLICKERS:
            self.site.click(address)
        # the process cron decides the clicks once no hit of the trap link
        # can come any more: the clock of the ledger is moved on
        from trytond.modules.marketing_automation import (
            marketing_automation_event as events)
        real = events.ledger_now
        later = dt.timedelta(minutes=10)
        with mock.patch.object(
                events, 'ledger_now', lambda: real() + later):
            self.site.run_crons()
        received = smtp.received()
        thanks = sorted(r for rcpt_tos, _ in received[WITH_EMAIL:]
            for r in rcpt_tos)
        self.check(thanks == sorted(CLICKERS),
            f"the child activity wrote to {thanks}, not {CLICKERS}")

    def step_activity_tree(self):
        "the activity tree of the reloaded scenario shows the counts"
        c = self.client
        c.toolbar('Reload/Undo').click()
        c.idle()

        def counted():
            rows = {r.get('Name'): r
                for r in c.rows(c.one2many('Activities'))}
            if rows.get(WELCOME, {}).get('Records') == str(len(PARTIES)):
                return rows
        rows = c.until(counted, "the activity tree shows no records")
        # the counts of opens and clicks are optional columns, hidden: the
        # rates are shown, and the tree fits the form
        expected = {
            WELCOME: {
                'Records': str(len(PARTIES)),
                'Open Rate': percent(len(CLICKERS), WITH_EMAIL),
                'Click Rate': percent(len(CLICKERS), WITH_EMAIL),
                },
            THANKS: {
                'Records': str(len(CLICKERS)),
                'Open Rate': percent(0, len(CLICKERS)),
                'Click Rate': percent(0, len(CLICKERS)),
                },
            }
        if 'Emails Sent' in rows[WELCOME]:
            # the rates are over the emails sent: a column of the tree
            # since the views show it
            expected[WELCOME]['Emails Sent'] = str(WITH_EMAIL)
            expected[THANKS]['Emails Sent'] = str(len(CLICKERS))
        for name, values in expected.items():
            shown = {k: rows[name].get(k) for k in values}
            self.check(shown == values,
                f"the row {name!r} shows {shown}, not {values}")
        self.screenshot('activity-tree.png')

    def step_scenario_reporting(self):
        "the scenario's reporting, as a list then as a graph"
        c = self.client
        c.link('Scenarios Reporting').click()
        c.show_tab(f'Scenarios Reporting ({SCENARIO})')
        c.idle()
        month = dt.date.today().replace(day=1)
        rows = c.until(lambda: [r for r in c.rows()
                if r.get('Records') == str(len(PARTIES))],
            "the reporting does not count the records")
        self.check(len(rows) == 1 and month.strftime('%m/%d/%Y')
            == rows[0]['Date'], f"the reporting shows {rows}")
        c.toolbar('Switch').click()
        c.idle()
        graph = c.graph()
        legend = ['Records', 'Records Blocked', 'Records Converted']
        self.check(graph['legend'] == legend,
            f"the graph's legend is {graph['legend']}, not {legend}")
        self.check(graph['bars'] and max(graph['bars']) > 0,
            f"the graph has no bar: {graph}")
        self.check(month.strftime('%m/%d/%Y') in graph['x'],
            f"the graph's axis shows {graph['x']}")
        self.screenshot('scenario-reporting-graph.png')

    def step_activity_reporting(self):
        """the reporting of the root activity, opened from it, as a list then
        as graphs"""
        c = self.client
        c.show_tab('Marketing / Scenarios')
        c.open_row('Activities', WELCOME)
        dialog = c.until(c.dialog, "no dialog for the activity")
        c.page('Statistics', dialog)
        self.check(c.value('Emails Opened', dialog) == str(len(CLICKERS)),
            "the statistics show "
            f"{c.value('Emails Opened', dialog)!r} emails opened")
        c.link('Activities Reporting', dialog).click()
        # The reporting opens in a tab behind the dialog
        c.until(lambda: f'Activities Reporting ({WELCOME})' in c.tabs(),
            "the activity's reporting is not opened")
        c.dialog_button('Discard changes').click()
        c.until(lambda: c.dialog() is None, "the dialog stays open")
        c.show_tab(f'Activities Reporting ({WELCOME})')
        c.idle()
        expected = {
            'Activity': WELCOME,
            'Emails Sent': str(WITH_EMAIL),
            'Emails Opened': str(len(CLICKERS)),
            'Emails Clicked': str(len(CLICKERS)),
            'Email Open Rate': percent(len(CLICKERS), WITH_EMAIL),
            'Email Click-Through Rate': percent(
                len(CLICKERS), len(CLICKERS)),
            }

        def listed():
            rows = c.rows()
            if rows and rows[0].get('Emails Sent'):
                return rows
        rows = c.until(listed, "the reporting does not count the emails")
        shown = [{k: r.get(k) for k in expected} for r in rows]
        self.check(shown == [expected],
            f"the reporting shows {shown}, not {[expected]}")

        c.toolbar('Switch').click()
        c.idle()
        graph = c.graph()
        self.check(
            graph['legend']
            == ['Emails Sent', 'Emails Opened', 'Emails Clicked'],
            f"the graph's legend is {graph['legend']}")
        self.check(len(graph['bars']) == 3 and min(graph['bars']) > 0,
            f"the graph has not 3 bars: {graph}")
        self.screenshot('activity-reporting-graph.png')

        c.toolbar('Switch').click()
        c.idle()
        legend = [
            'Email Open Rate (%)', 'Email Click Rate (%)',
            'Email Click-Through Rate (%)']
        graph = c.until(lambda: (lambda g: g if g['legend'] == legend
                else False)(c.graph()),
            f"the rates graph is not shown with the legend {legend}")
        self.check(graph['lines'] == 3 and graph['points'] == 3,
            f"the rates graph has not 3 lines of a point: {graph}")
        # in percent, as the lists show them: 50 and 100, not 0.5 and 1
        top = max(float(t.replace(',', '')) for t in graph['y'] if t)
        self.check(100 <= top <= 110,
            f"the axis of the rates graph runs to {top}, not to 100")
        self.screenshot('activity-reporting-rates.png')

    def step_reporting_menu(self):
        "Marketing > Reporting > Activities lists both activities"
        c = self.client
        c.menu('Marketing', 'Reporting', 'Activities')
        c.show_tab('Marketing / Reporting / Activities')
        c.idle()

        def listed():
            rows = {r.get('Activity'): r for r in c.rows()}
            if {WELCOME, THANKS} <= set(rows):
                return rows
        rows = c.until(listed, "the reporting does not list the activities")
        expected = {
            WELCOME: {
                'Emails Sent': str(WITH_EMAIL),
                'Emails Opened': str(len(CLICKERS)),
                'Emails Clicked': str(len(CLICKERS)),
                },
            THANKS: {
                'Emails Sent': str(len(CLICKERS)),
                'Emails Opened': '0',
                'Emails Clicked': '0',
                },
            }
        for name, values in expected.items():
            shown = {k: rows[name].get(k) for k in values}
            self.check(shown == values,
                f"the row {name!r} shows {shown}, not {values}")

    def fits(self, what, root=None):
        """Look at every page of the form of root: return what goes past
        its right edge or scrolls sideways, each line prefixed by what"""
        c = self.client
        problems = []
        for name in [None, *c.pages(root)]:
            if name:
                c.page(name, root)
            found = c.overflow(root)
            if found:
                where = f'{what}, page {name}' if name else what
                problems += [f'{where}: {p}' for p in found]
                self.screenshot('overflow-%s.png' % re.sub(
                        r'\W+', '-', where.lower()))
        self.overflows.extend(problems)
        return problems

    def show_opened(self, name):
        "Show the tab of the action name opened from a form"
        c = self.client
        title = c.until(lambda: next(
                (t for t in c.tabs() if t.startswith(name)), None),
            f'no tab "{name}" in {list(c.tabs())}')
        c.show_tab(title)
        c.idle()

    def open_first_row(self):
        "Show the first row of the list of the tab in the form"
        c = self.client
        # its last cell shown: the first may be a link to the record it
        # shows
        c.until(lambda: c.visible(reversed(c.by_css(
                        c.tab(), 'table.tree > tbody > tr:first-child > td'))),
            "the list is empty").click()
        c.toolbar('Switch').click()
        c.until(lambda: c.visible(c.by_css(c.tab(), 'div.form')),
            "the form is not shown")
        c.idle()

    def step_forms_fit(self):
        """the forms of a scenario, an activity, a record, a record activity
        and an email event, and the list of the email events, fit the window
        (1280 × 800) without scrolling sideways; the preview wizard and the
        form of a new activity did too"""
        c = self.client
        size = self.driver.execute_script(
            'return [window.innerWidth, window.innerHeight]')
        self.check(size == list(WINDOW),
            f"the window shows {size[0]} × {size[1]} pixels, not "
            f"{WINDOW[0]} × {WINDOW[1]}")
        c.show_tab('Marketing / Scenarios')
        self.fits('the scenario form')
        c.page('Activities')
        c.open_row('Activities', WELCOME)
        dialog = c.until(c.dialog, "no dialog for the activity")
        self.fits('the activity form', dialog)
        c.dialog_button('Discard changes').click()
        c.until(lambda: c.dialog() is None, "the dialog stays open")

        c.link('Records').click()
        self.show_opened('Records')
        self.open_first_row()
        self.fits('the record form')
        c.link('Record Activities').click()
        self.show_opened('Record Activities')
        c.tab_domain('All').click()
        self.open_first_row()
        self.fits('the record activity form')

        c.menu('Marketing', 'Scenarios', 'Email Events')
        c.show_tab('Marketing / Scenarios / Email Events')
        c.idle()
        self.fits('the list of the email events')
        rows = c.rows()
        self.check(
            [(r.get('Kind'), r.get('Link')) for r in rows]
            == [('Click', 'https://example.com/shop')] * len(CLICKERS),
            f"the email events show {rows}")
        self.open_first_row()
        self.fits('the form of an email event')
        self.check(not self.overflows,
            "parts of the forms do not fit (see the screenshots "
            "overflow-*.png):\n" + '\n'.join(self.overflows))

    def read_console(self):
        "Add what the browser's console got since the last call"
        if self.driver is not None:
            self.console.extend(self.driver.get_log('browser'))
        return self.console

    def step_no_errors(self):
        "no error in the browser's console nor in trytond's log"
        # sao asks for translations of English that do not exist
        errors = [e['message'] for e in self.read_console()
            if e['level'] == 'SEVERE'
            and not re.search(r'/locale/en(_US)?\.json .* 405', e['message'])]
        self.check(not errors, "the browser's console has errors:\n"
            + '\n'.join(errors))
        with open(self.site.log) as fp:
            log = fp.read()
        errors = [line for line in log.splitlines()
            if ' ERROR ' in line or ' CRITICAL ' in line
            or line.startswith('Traceback')]
        self.check(not errors,
            "trytond's log has errors:\n" + '\n'.join(errors))

    def stop(self):
        "Stop the browser, trytond and the SMTP server, whatever happens"
        try:
            if self.driver is not None:
                try:
                    self.read_console()
                except Exception:
                    pass
                with open(os.path.join(
                            self.artifacts, 'browser-console.log'),
                        'w') as fp:
                    for entry in self.console:
                        fp.write(f"{entry['level']} {entry['message']}\n")
                stop_browser(self.driver)
                self.driver = None
        finally:
            self.site.stop()

    def failed(self, name):
        "Keep what the page showed when the step name failed"
        if self.driver is None:
            return
        try:
            self.screenshot(f'failed-{name}.png')
            with open(os.path.join(
                        self.artifacts, f'failed-{name}.html'), 'w') as fp:
                fp.write(self.driver.page_source)
        except Exception:
            pass


def percent(part, whole):
    "A rate as the web client shows it, with factor 100 and a suffix"
    return f'{round(100 * part / whole)} %'


STEPS = [
    'site', 'browser', 'login', 'open_scenarios', 'create_scenario',
    'add_child', 'audience', 'preview', 'test_email', 'run', 'crons',
    'activity_tree', 'scenario_reporting', 'activity_reporting',
    'reporting_menu', 'forms_fit', 'no_errors',
    ]


# ---------------------------------------------------------------------------
# The run

def ensure_tools(sao, install):
    "Install what is missing; return why it cannot run, None if it can"
    missing = [p for p in [CHROMIUM, CHROMEDRIVER] if not os.path.exists(p)]
    if not sao_ready(sao):
        missing.append(sao)
    if missing and install:
        say(f"Installing {', '.join(missing)} (tests/browser/ensure-tools)")
        process = subprocess.run(
            ['bash', os.path.join(HERE, 'ensure-tools'), sao],
            stdin=subprocess.DEVNULL)
        if process.returncode:
            return "tests/browser/ensure-tools could not install them"
        missing = [
            p for p in [CHROMIUM, CHROMEDRIVER] if not os.path.exists(p)]
        if not sao_ready(sao):
            missing.append(sao)
    if missing:
        return f"missing: {', '.join(missing)}"
    for name in ['custom.js', 'custom.css']:
        path = os.path.join(sao, name)
        if not os.path.exists(path):
            open(path, 'a').close()
    for module in ['selenium', 'aiosmtpd']:
        try:
            __import__(module)
        except ImportError:
            return f"the Python package {module} is not installed"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0])
    parser.add_argument(
        '--artifacts', default=os.path.join(HERE, 'artifacts'),
        help="where to save the screenshots and logs (default: %(default)s)")
    parser.add_argument(
        '--sao', default=os.environ.get('MA_SAO') or default_sao_folder(),
        help="the folder of the web client (default: %(default)s)")
    parser.add_argument(
        '--no-install', dest='install', action='store_false',
        help="fail instead of installing what is missing")
    parser.add_argument(
        '--keep', action='store_true',
        help="keep the runtime folder (database, configuration)")
    return parser.parse_args(argv)


def terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(argv=None):
    args = parse_args(argv)
    start = time.monotonic()
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    os.environ.setdefault('SE_OFFLINE', 'true')

    problem = ensure_tools(args.sao, args.install)
    if problem:
        say(f"browser ... FAIL (cannot run: {problem})")
        say("0 passed, 1 failed")
        return 1

    artifacts = args.artifacts
    os.makedirs(artifacts, exist_ok=True)
    for name in os.listdir(artifacts):
        if name.endswith(('.png', '.html', '.log')):
            os.remove(os.path.join(artifacts, name))
    runtime = tempfile.mkdtemp(prefix='ma-browser-')
    site = Site(runtime, args.sao, artifacts)
    steps = Steps(site, artifacts, runtime)
    passed = failed = 0
    problems = []
    try:
        for name in STEPS:
            method = getattr(steps, f'step_{name}')
            doc = ' '.join(method.__doc__.split())
            if failed:
                say(f"browser.{name} ... not run ({doc})")
                failed += 1
                continue
            started = time.monotonic()
            try:
                method()
            except Exception:
                failed += 1
                problems.append((name, traceback.format_exc()))
                steps.failed(name)
                outcome = 'FAIL'
            else:
                passed += 1
                outcome = 'ok'
            say(f"browser.{name} ... {outcome} ({doc}) "
                f"[{time.monotonic() - started:.2f}s]")
    finally:
        try:
            steps.stop()
        except Exception:
            failed += 1
            problems.append(('stop', traceback.format_exc()))
        if args.keep:
            say(f"The runtime folder is kept: {runtime}")
        else:
            shutil.rmtree(runtime, ignore_errors=True)
    for name, text in problems:
        say('=' * 70)
        say(f"FAIL: browser.{name}")
        say('-' * 70)
        say(text)
    if steps.screenshots:
        say("Screenshots: " + ', '.join(
                os.path.relpath(p) for p in steps.screenshots))
    say(f"Artifacts in {os.path.relpath(artifacts)}; "
        f"{time.monotonic() - start:.1f}s in all")
    say(f"{passed} passed, {failed} failed")
    return 0 if not failed and passed else 1


if __name__ == '__main__':
    sys.exit(main())
