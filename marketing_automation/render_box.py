# SPDX-License-Identifier: GPL-3.0-or-later
"""The box in which the templates of marketers are compiled and rendered.

A template is hostile input: a loop of Python's C code, such as
``any(iter(int, 1))`` without the guards of the sandbox, never returns to
the interpreter, so no time limit inside the process can stop it.  So
templates never run in a process of trytond: they run in a child process
of it, a *box*, with hard limits on its memory and CPU time, that is killed
at the deadline of each email.  The process that serves requests only
waits for its answer, without holding the interpreter.

A box is started once and renders many emails per round trip:

1. ``prepare`` sends the sources of a title and a body; the box compiles and
   seals them (``mailing.compile_templates``) and keeps them, and answers
   the chains of attributes their expressions read, which the caller may
   give ahead with each recipient;
2. ``render`` sends the contexts of a batch of recipients; the box renders
   them one after the other and streams each ``mailing.Rendered`` back as
   soon as it is made, so that the caller builds the message of one
   recipient while the box renders the next.

The box knows no database.  A context holds plain values, and *handles* in
place of what the caller keeps: the records (any ``sandbox.Exposed``) and
the functions.  When a template reads a field that was not given ahead, or
calls a function, the box asks the caller (``Server.read``,
``Server.call``), who answers with the rights it checks.  Everything
crosses as JSON (`to_wire`, `from_wire`): the box cannot make the caller
run anything but what a server answers.

The module imports no part of trytond, so that a box starts in a fraction of
a second: it loads this file, ``mailing.py`` and ``sandbox.py`` only.
"""
import atexit
import datetime
import decimal
import json
import math
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
from base64 import b64decode, b64encode
from collections import OrderedDict, deque
from contextlib import contextmanager

from . import mailing, sandbox

__all__ = [
    'BoxError', 'Settings', 'Server', 'Box', 'lease', 'close_boxes',
    'to_wire', 'from_wire',
    'Handle', 'Refusal', 'Failure', 'MAX_MESSAGE']

# What one message between a box and its caller may weigh: an email of the
# largest size that may be configured, with its plain text
MAX_MESSAGE = 64 * 1024 * 1024
# The templates a box keeps compiled, the most recent ones
KEPT_TEMPLATES = 32
# The chains of attributes a template may have read ahead, and their length
MAX_PATHS, MAX_DEPTH = 64, 4
# The contexts sent in the first message of a rendering, in each next one,
# and at most ahead of the renderings received
FIRST_CONTEXTS, MORE_CONTEXTS, AHEAD_CONTEXTS = 1, 4, 16


class BoxError(Exception):
    """The box did not answer: killed at the deadline, or stopped by its
    limits (a runaway template), or broken"""


class Settings:
    "The limits of the boxes: [marketing] render_timeout and render_memory"
    __slots__ = ('timeout', 'memory', 'max_size', 'python')

    def __init__(self, timeout=10, memory=1024, max_size=None, python=None):
        # seconds for one email, megabytes for a box, characters for one
        # email, and the interpreter that runs the boxes
        self.timeout = timeout
        self.memory = memory
        self.max_size = max_size
        self.python = python or sys.executable


# The wire: JSON, with the types of template values tagged

class Handle:
    """What the caller keeps and the box names by a number: a record (any
    Exposed value) or a function"""
    __slots__ = ('kind', 'number', 'label', 'given')

    def __init__(self, kind, number, label=None, given=None):
        self.kind = kind
        self.number = number
        self.label = label
        # the fields read ahead: name → wire value or Refusal
        self.given = given or {}


class Refusal(Exception):
    """Why the caller refused to read a field or to call a function, with
    the kind of error the template gets: 'unknown' (a name that does not
    exist), 'refused' (the sandbox refuses it), both faults of the
    template, or 'error' (the error of this recipient's value)"""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


class Failure(sandbox.Described):
    "An error of the caller, already described for the marketer"


_CLASSES = {
    'date': datetime.date, 'datetime': datetime.datetime,
    'time': datetime.time, 'timedelta': datetime.timedelta,
    'timezone': datetime.timezone,
    }
_CLASS_NAMES = {v: k for k, v in _CLASSES.items()}


def to_wire(value, on_other=None):
    """value as JSON can carry it, calling on_other for what the wire does
    not know (it returns its wire value or raises TypeError)"""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return {'float': repr(value)}
    if isinstance(value, list):
        return {'list': [to_wire(v, on_other) for v in value]}
    if isinstance(value, tuple):
        return {'tuple': [to_wire(v, on_other) for v in value]}
    if isinstance(value, dict):
        return {'dict': [
                [to_wire(k, on_other), to_wire(v, on_other)]
                for k, v in value.items()]}
    if isinstance(value, (set, frozenset)):
        return {'set': [to_wire(v, on_other) for v in value]}
    if isinstance(value, decimal.Decimal):
        return {'decimal': str(value)}
    if isinstance(value, datetime.datetime):
        return {'datetime': value.isoformat()}
    if isinstance(value, datetime.date):
        return {'date': value.isoformat()}
    if isinstance(value, datetime.time):
        return {'time': value.isoformat()}
    if isinstance(value, datetime.timedelta):
        return {'timedelta': [
                value.days, value.seconds, value.microseconds]}
    if isinstance(value, bytes):
        return {'bytes': b64encode(value).decode('ascii')}
    if isinstance(value, type) and value in _CLASS_NAMES:
        return {'class': _CLASS_NAMES[value]}
    if isinstance(value, sandbox.Namespace):
        return {'namespace': [value._name, {
                    k: to_wire(v, on_other)
                    for k, v in value._members.items()}]}
    if isinstance(value, Handle):
        return {'handle': [
                value.kind, value.number, value.label,
                {k: _given_to_wire(v) for k, v in value.given.items()}]}
    if on_other is not None:
        return on_other(value)
    raise TypeError(f"a value of type {type(value).__name__} cannot be "
        "given to templates")


def _given_to_wire(value):
    if isinstance(value, Refusal):
        return {'refusal': [value.kind, value.message]}
    return value


def from_wire(data, on_handle=None):
    """The value of a wire value; on_handle makes the value of a Handle

    Whatever the box sends is read as data only: any other shape raises
    ValueError."""
    if data is None or isinstance(data, (bool, str, int, float)):
        return data
    if not isinstance(data, dict) or len(data) != 1:
        raise ValueError("not a wire value")
    (tag, payload), = data.items()
    if tag == 'list':
        return [from_wire(v, on_handle) for v in _list(payload)]
    if tag == 'tuple':
        return tuple(from_wire(v, on_handle) for v in _list(payload))
    if tag == 'set':
        return {from_wire(v, on_handle) for v in _list(payload)}
    if tag == 'dict':
        result = {}
        for pair in _list(payload):
            key, value = _list(pair, 2)
            result[from_wire(key, on_handle)] = from_wire(value, on_handle)
        return result
    if tag == 'float':
        return float(_text(payload))
    if tag == 'decimal':
        return decimal.Decimal(_text(payload))
    if tag == 'datetime':
        return datetime.datetime.fromisoformat(_text(payload))
    if tag == 'date':
        return datetime.date.fromisoformat(_text(payload))
    if tag == 'time':
        return datetime.time.fromisoformat(_text(payload))
    if tag == 'timedelta':
        days, seconds, microseconds = map(_number, _list(payload, 3))
        return datetime.timedelta(days, seconds, microseconds)
    if tag == 'bytes':
        return b64decode(_text(payload), validate=True)
    if tag == 'class':
        try:
            return _CLASSES[payload]
        except (KeyError, TypeError):
            raise ValueError("not a class of templates")
    if tag == 'namespace':
        name, members = _list(payload, 2)
        if not isinstance(members, dict):
            raise ValueError("not a namespace")
        return sandbox.Namespace(_text(name), **{
                _text(k): from_wire(v, on_handle)
                for k, v in members.items()})
    if tag == 'handle' and on_handle is not None:
        kind, number, label, given = _list(payload, 4)
        if (kind not in {'record', 'function'} or not _is_number(number)
                or not isinstance(label, (str, type(None)))
                or not isinstance(given, dict)):
            raise ValueError("not a handle")
        return on_handle(Handle(kind, number, label, given))
    raise ValueError(f"unknown wire tag {tag!r}")


def _list(value, length=None):
    if not isinstance(value, list) or (
            length is not None and len(value) != length):
        raise ValueError("not a wire list")
    return value


def _text(value):
    if not isinstance(value, str):
        raise ValueError("not a wire text")
    return value


def _is_number(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value):
    if not _is_number(value):
        raise ValueError("not a wire number")
    return value


def _encode(message):
    return json.dumps(
        message, ensure_ascii=False, separators=(',', ':'),
        check_circular=False).encode('utf-8') + b'\n'


class _Channel:
    """Messages (JSON objects, one a line) over a pair of file descriptors,
    read with a deadline"""

    def __init__(self, read_fd, write_fd):
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.buffer = bytearray()
        self.poll = select.poll()
        self.poll.register(read_fd, select.POLLIN | select.POLLHUP)

    def send(self, message):
        data = memoryview(_encode(message))
        while data:
            written = os.write(self.write_fd, data)
            data = data[written:]

    def send_reading(self, message, deadline):
        """Send message, reading what the other end sends meanwhile: two
        ends that write at once never wait for each other (the write end
        must not block); BoxError at the deadline (a monotonic time), when
        the other end reads nothing"""
        data = memoryview(_encode(message))
        poll = None
        while data:
            try:
                written = os.write(self.write_fd, data)
            except BlockingIOError:
                written = 0
            data = data[written:]
            if not data:
                break
            if poll is None:
                poll = select.poll()
                poll.register(self.write_fd, select.POLLOUT)
                poll.register(self.read_fd, select.POLLIN | select.POLLHUP)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BoxError("timeout")
            for fd, _ in poll.poll(max(int(remaining * 1000), 1)):
                if fd == self.read_fd:
                    self._read()

    def ready(self):
        "Whether a message or the end of the other end waits to be read"
        return b'\n' in self.buffer or bool(self.poll.poll(0))

    def _read(self):
        if len(self.buffer) > MAX_MESSAGE:
            raise BoxError("the box sent a message too big")
        chunk = os.read(self.read_fd, 1 << 16)
        if not chunk:
            raise BoxError("the box stopped")
        self.buffer += chunk

    def receive(self, deadline=None):
        """The next message, or BoxError at the deadline (a monotonic time)
        or when the other end is gone"""
        while True:
            end = self.buffer.find(b'\n')
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[:end + 1]
                try:
                    message = json.loads(line)
                except (ValueError, RecursionError):
                    raise BoxError("the box sent a malformed message")
                if not isinstance(message, dict):
                    raise BoxError("the box sent a malformed message")
                return message
            if len(self.buffer) > MAX_MESSAGE:
                raise BoxError("the box sent a message too big")
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BoxError("timeout")
                if not self.poll.poll(max(int(remaining * 1000), 1)):
                    continue
            self._read()


# The caller's side

class Server:
    """What answers the questions of a box while it renders: the fields of
    the records of the contexts and the functions, by their handle

    Each method returns a wire value or raises Refusal."""

    def read(self, handle, name):
        raise Refusal('refused', f"{name!r} cannot be read")

    def call(self, handle, args, kwargs):
        raise Refusal('refused', "this function cannot be called")


# The interpreter runs the box with nothing of the caller's environment but
# its path (no configuration, no password): it loads the three files of
# the box as a package of their own, not the trytond module.
_BOOT = '''
import json, sys, types
directory, path = sys.argv[1], json.loads(sys.argv[2])
sys.path[:] = path
package = types.ModuleType('marketing_render_box')
package.__path__ = [directory]
sys.modules['marketing_render_box'] = package
from marketing_render_box import render_box
render_box.serve(json.loads(sys.argv[3]))
'''
_ENVIRONMENT = ['PATH', 'LANG', 'LC_ALL', 'LC_CTYPE', 'TZ', 'SYSTEMROOT']
_TIMEOUT = "the template takes too long to render"
_STOPPED = ("the template stopped its renderer: it needs more memory or "
    "time than an email may")


class Box:
    "A child process that compiles and renders templates"

    def __init__(self, settings):
        self.settings = settings
        limits = {
            'memory': settings.memory,
            'placeholder': mailing.placeholder(),
            }
        environment = {
            k: os.environ[k] for k in _ENVIRONMENT if k in os.environ}
        self.process = subprocess.Popen(
            [settings.python, '-I', '-S', '-c', _BOOT,
                os.path.dirname(os.path.abspath(__file__)),
                json.dumps([p for p in sys.path if isinstance(p, str)]),
                json.dumps(limits)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=environment, close_fds=True)
        self.channel = _Channel(
            self.process.stdout.fileno(), self.process.stdin.fileno())
        # the caller reads the answers while it sends: it never waits on a
        # full pipe of a box that waits on its own full pipe
        os.set_blocking(self.process.stdin.fileno(), False)
        # the first answer says the box is ready: its start is not the
        # time of any template
        self._expect(time.monotonic() + max(60, settings.timeout), 'ready')

    @property
    def alive(self):
        return self.process.poll() is None

    def kill(self):
        "Stop the box at once"
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in [self.process.stdin, self.process.stdout]:
            try:
                pipe.close()
            except OSError:
                pass

    def close(self):
        "Let the box end"
        try:
            self.process.stdin.close()
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()

    def _deadline(self):
        return time.monotonic() + self.settings.timeout

    def _send(self, message):
        try:
            self.channel.send_reading(message, self._deadline())
        except (BoxError, OSError) as error:
            self.kill()
            raise BoxError(_TIMEOUT if str(error) == 'timeout'
                else _STOPPED) from error

    def _expect(self, deadline, *keys):
        try:
            message = self.channel.receive(deadline)
        except BoxError as error:
            self.kill()
            raise BoxError(_TIMEOUT if str(error) == 'timeout'
                else _STOPPED) from error
        if not any(k in message for k in keys):
            self.kill()
            raise BoxError("the box sent an unexpected message")
        return message

    def check(self, kind, source):
        """Compile the title or the body (kind) as the box renders it and
        return the error that refuses it, or None"""
        self._send({'op': 'check', 'kind': kind, 'source': source})
        answer = self._expect(self._deadline(), 'ok', 'error')
        return answer.get('error')

    def prepare(self, title, body):
        """Compile the title and the body in the box, unless it has them,
        and return their key and the chains of attributes they read, or
        raise Failure with why they do not compile"""
        key = json.dumps([title, body])
        self._send({'op': 'prepare', 'title': title, 'body': body})
        answer = self._expect(self._deadline(), 'paths', 'error')
        if 'error' in answer:
            raise Failure(answer['error'])
        paths = answer['paths']
        if not isinstance(paths, list):
            raise BoxError("the box sent an unexpected message")
        return key, [tuple(p) for p in paths if isinstance(p, list)
            and all(isinstance(n, str) for n in p)]

    def render(self, key, contexts, server, trap=False):
        """Render the prepared templates of key for each wire context, and
        yield, in order, a (rendered, None) or (None, (message, fault)) pair
        for each

        contexts may be made as they are taken: they are sent a few at a
        time, so that the box renders some while the next ones are made,
        and the renderings are yielded as soon as they come.  The box is
        killed when a rendering outlasts the time limit, or when this is
        closed before its end."""
        title, body = json.loads(key)
        ahead = _Ahead(contexts)
        chunk = ahead.take(FIRST_CONTEXTS)
        sent, received = len(chunk), 0
        finished = ahead.done and not sent
        # the deadline of the rendering waited for
        deadline = None
        try:
            self._send({
                    'op': 'render', 'title': title, 'body': body,
                    'contexts': chunk, 'last': ahead.done, 'trap': trap,
                    'timeout': self.settings.timeout,
                    'max_size': self.settings.max_size})
            while received < sent or not ahead.done:
                wait = True
                if not ahead.done and sent - received < AHEAD_CONTEXTS:
                    chunk = ahead.take(MORE_CONTEXTS)
                    self._send({'contexts': chunk, 'last': ahead.done})
                    sent += len(chunk)
                    wait = False
                # answer the box and yield its renderings, waiting for one
                # only when there is nothing more to send
                while received < sent and (wait or self.channel.ready()):
                    if deadline is None:
                        deadline = self._deadline()
                    message = self._expect(
                        deadline, 'rendered', 'error', 'read', 'call')
                    if 'read' in message or 'call' in message:
                        self._send(self._answer(server, message))
                        continue
                    received += 1
                    deadline, wait = None, False
                    # the box is done with the last one: a caller that
                    # stops there (zip does) leaves it ready for the next
                    # batch
                    finished = ahead.done and received == sent
                    if 'rendered' in message:
                        yield message['rendered'], None
                    else:
                        yield None, (
                            str(message['error']),
                            bool(message.get('fault')))
            finished = True
        except BoxError as error:
            # the recipient being rendered gets the error, the box is gone
            finished = True
            yield None, (str(error), True)
        finally:
            if not finished:
                # the caller stopped in the middle: the box is still busy
                self.kill()

    @staticmethod
    def _answer(server, message):
        try:
            if 'read' in message:
                handle, name = message['read']
                value = server.read(handle, name)
            else:
                handle, args, kwargs = message['call']
                value = server.call(handle, args, kwargs)
        except Refusal as refusal:
            return {'refusal': [refusal.kind, refusal.message]}
        except (ValueError, TypeError) as exception:
            # the box asked something it may not
            return {'refusal': ['refused', str(exception)]}
        return {'value': value}


class _Ahead:
    "The contexts of a rendering, taken a few at a time"

    def __init__(self, contexts):
        self.contexts = iter(contexts)
        self.done = False
        self.next = self._next()

    def _next(self):
        try:
            return next(self.contexts)
        except StopIteration:
            self.done = True

    def take(self, count):
        "The next count contexts or fewer; done tells whether any is left"
        chunk = []
        while not self.done and len(chunk) < count:
            chunk.append(self.next)
            self.next = self._next()
        return chunk


class _Pool:
    "The boxes of this process that wait for work"

    def __init__(self):
        self.lock = threading.Lock()
        self.idle = []
        self.pid = os.getpid()
        atexit.register(self.close)

    def take(self, settings):
        with self.lock:
            if self.pid != os.getpid():
                # a fork: the boxes and their pipes belong to the parent
                self.idle, self.pid = [], os.getpid()
            while self.idle:
                box = self.idle.pop()
                if box.alive and _same(box.settings, settings):
                    return box
                box.kill()
        return Box(settings)

    def give_back(self, box):
        if not box.alive:
            return
        with self.lock:
            if self.pid == os.getpid() and len(self.idle) < _IDLE_BOXES:
                self.idle.append(box)
                return
        box.close()

    def close(self):
        with self.lock:
            idle, self.idle = self.idle, []
        for box in idle:
            box.close()


# As many as the threads of a server that render at once, usually one
_IDLE_BOXES = 4
_pool = _Pool()


def _same(settings, other):
    return all(getattr(settings, n) == getattr(other, n)
        for n in Settings.__slots__)


def close_boxes():
    "End the boxes of this process that wait for work"
    _pool.close()


@contextmanager
def lease(settings):
    "A box of the pool with settings, given back at the end"
    box = _pool.take(settings)
    try:
        yield box
    except BaseException:
        box.kill()
        raise
    else:
        _pool.give_back(box)


# The box's side

def serve(limits):
    "Answer the messages of the caller on stdin and stdout until stdin ends"
    mailing.use_placeholder(limits['placeholder'])
    memory = limits.get('memory')
    if memory:
        size = int(memory) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    # the answers go to stdout, and only they
    out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    channel = _Channel(0, out)
    # the caller kills a late box: the box ends on its own only at the end
    # of its CPU budget, when its caller is gone too
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _Box(channel).run()


class _Box:
    "The loop of a box"

    def __init__(self, channel):
        self.channel = channel
        self.templates = OrderedDict()
        self.handles = {}
        # the contexts of the rendering received and not rendered yet, and
        # whether the caller sent its last ones
        self.contexts = deque()
        self.last = True

    def run(self):
        self.channel.send({'ready': True})
        while True:
            try:
                message = self.channel.receive()
            except BoxError:
                return
            operation = getattr(self, 'do_' + str(message.get('op')), None)
            if operation is None:
                return
            operation(message)

    def do_check(self, message):
        try:
            if message['kind'] == 'title':
                mailing.check_title(message['source'])
            else:
                mailing.check_body(message['source'])
        except Exception as exception:
            self.channel.send({'error': str(exception)})
        else:
            self.channel.send({'ok': True})

    def _compiled(self, title, body):
        key = (title, body)
        templates = self.templates.get(key)
        if templates is None:
            templates = mailing.compile_templates(title, body)
            mailing.check_links(templates.body)
            self.templates[key] = templates
            while len(self.templates) > KEPT_TEMPLATES:
                self.templates.popitem(last=False)
        else:
            self.templates.move_to_end(key)
        return templates

    def do_prepare(self, message):
        try:
            templates = self._compiled(message['title'], message['body'])
        except Exception as exception:
            self.channel.send({'error': str(exception)})
            return
        paths = set()
        for template in templates:
            paths |= sandbox.attribute_paths(template)
        paths = sorted(p[:MAX_DEPTH] for p in paths)[:MAX_PATHS]
        self.channel.send({'paths': [list(p) for p in paths]})

    def _receive_contexts(self, message):
        contexts = message.get('contexts')
        if not isinstance(contexts, list):
            # the caller does not speak this way: nothing to do with it
            raise SystemExit(1)
        self.contexts.extend(contexts)
        self.last = message.get('last', True) is not False

    def _contexts(self):
        "The contexts of the rendering, received as they come"
        while True:
            if not self.contexts:
                if self.last:
                    return
                try:
                    message = self.channel.receive()
                except BoxError:
                    raise SystemExit(1)
                if 'op' in message:
                    # the caller went on without the rest: it is lost
                    raise SystemExit(1)
                self._receive_contexts(message)
                continue
            yield self.contexts.popleft()

    def do_render(self, message):
        timeout = message.get('timeout')
        self.handles = {}
        self.contexts.clear()
        self._receive_contexts(message)
        try:
            templates = self._compiled(message['title'], message['body'])
        except Exception as exception:
            templates, error = None, str(exception)
        for wire in self._contexts():
            if templates is None:
                self.channel.send({'error': error, 'fault': True})
                continue
            self._limit_cpu(timeout)
            try:
                context = {_text(name): from_wire(value, self._handle)
                    for name, value in wire.items()}
                rendered = mailing.render(
                    templates, context, timeout=timeout,
                    trap=message.get('trap', False),
                    max_size=message.get('max_size'))
            except mailing.RenderError as error:
                self.channel.send(
                    {'error': str(error), 'fault': error.fault})
            except MemoryError:
                self.channel.send({'error': _STOPPED, 'fault': True})
                # what the allocation left behind is not worth keeping
                raise SystemExit(1)
            except ValueError as exception:
                # a context the wire does not carry: the caller's mistake
                self.channel.send({'error': str(exception), 'fault': True})
            else:
                self.channel.send({'rendered': {
                            'subject': rendered.subject,
                            'html': rendered.html,
                            'text': rendered.text,
                            'links': [list(link) for link in rendered.links],
                            'heaviest': rendered.heaviest,
                            }})

    @staticmethod
    def _limit_cpu(timeout):
        """Give the next rendering its CPU time and no more: past it, the
        system stops the box, also when its caller is gone"""
        used = resource.getrusage(resource.RUSAGE_SELF)
        seconds = int(used.ru_utime + used.ru_stime + (timeout or 60)) + 2
        resource.setrlimit(
            resource.RLIMIT_CPU, (seconds, resource.RLIM_INFINITY))

    def _handle(self, handle):
        number = (handle.kind, handle.number)
        value = self.handles.get(number)
        if value is None:
            if handle.kind == 'record':
                value = _Record(self, handle)
            else:
                value = _Function(self, handle)
            self.handles[number] = value
        else:
            value.give(handle.given)
        return value

    def ask(self, question):
        "Ask the caller, and return the value it answers or raise its refusal"
        self.channel.send(question)
        answer = self.channel.receive()
        while 'contexts' in answer:
            # the next contexts of the rendering, sent ahead of the answer
            self._receive_contexts(answer)
            answer = self.channel.receive()
        if 'refusal' in answer:
            kind, message = answer['refusal']
            raise self._refusal(kind, message)
        return from_wire(answer.get('value'), self._handle)

    @staticmethod
    def _refusal(kind, message):
        if kind == 'unknown':
            return sandbox.UnknownName(message)
        if kind == 'refused':
            return sandbox.SandboxError(message)
        return Failure(message)


class _Record(sandbox.Exposed):
    """A record of the caller: its fields read ahead, the others asked for
    when a template reads them"""
    __slots__ = ('_box', '_number', '_label', '_fields')

    def __init__(self, box, handle):
        self._box = box
        self._number = handle.number
        self._label = handle.label
        self._fields = {}
        self.give(handle.given)

    def give(self, given):
        for name, value in given.items():
            if isinstance(value, dict) and 'refusal' in value:
                kind, message = _list(value['refusal'], 2)
                self._fields[name] = self._box._refusal(kind, message)
            else:
                self._fields[name] = from_wire(value, self._box._handle)

    def expose(self, name):
        if name not in self._fields:
            try:
                self._fields[name] = self._box.ask(
                    {'read': [self._number, name]})
            except (sandbox.TemplateFault, Failure) as exception:
                self._fields[name] = exception
        value = self._fields[name]
        if isinstance(value, Exception):
            raise value
        return value

    def __str__(self):
        return self._label or ''

    __repr__ = __str__

    def __eq__(self, other):
        if isinstance(other, _Record):
            return self._number == other._number
        return NotImplemented

    def __hash__(self):
        return hash(self._number)


class _Function:
    "A function of the caller, which templates call with plain values"
    __slots__ = ('_box', '_number')

    def __init__(self, box, handle):
        self._box = box
        self._number = handle.number

    def give(self, given):
        pass

    def __call__(self, *args, **kwargs):
        return self._box.ask({'call': [
                    self._number, to_wire(list(args), self._unwire),
                    to_wire(kwargs, self._unwire)]})

    @staticmethod
    def _unwire(value):
        number = getattr(value, '_number', None)
        if number is not None and not isinstance(value, _Function):
            return {'handle': ['record', number, None, {}]}
        raise TypeError(f"a value of type {type(value).__name__} cannot be "
            "given to a function")
