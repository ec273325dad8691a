# SPDX-License-Identifier: GPL-3.0-or-later
"""The sandbox in which the templates of marketers run.

Email titles and bodies are Genshi templates written by users of the
Marketing group, who are not administrators, and rendered by the cron as
root.  An expression of a template may only read what its context gives it,
and only through this module:

- every name, attribute and item an expression reads goes through `Lookup`,
  which answers from allowlists: the fields of records (as `RecordView`
  within the access rights of the Marketing group), the harmless methods of
  text, numbers, dates and containers, and the date and time classes of the
  ``datetime`` namespace; anything else is refused with `SandboxError`;
- `check_template` reads every expression of a compiled template before it
  is saved, so that a marketer learns at once which expression is refused;
- templates may not run Python blocks nor include files (`NO_INCLUDES`).

What is not on a list is refused: a method that writes, a model class, a
module, the pool, the transaction, frames, ``str.format`` and the builtins
that reach any of these.
"""
import ast
import ctypes
import datetime
import decimal
import functools
import threading
import time
import types

from genshi.template.eval import LookupBase, Suite, UndefinedError

from trytond.model import Model
from trytond.pool import Pool
from trytond.transaction import Transaction

__all__ = [
    'TemplateFault', 'SandboxError', 'UnknownName', 'Lookup', 'NO_INCLUDES',
    'Namespace', 'Exposed', 'DATETIME', 'check_template', 'expression_of',
    'MAX_RANGE', 'RenderTimeout', 'time_limit', 'RecordAccessError',
    'Access', 'RecordView']

# A loop of a template never needs more; a bigger one is a mistake or an
# attempt to keep the cron busy.
MAX_RANGE = 10000


class TemplateFault(Exception):
    """An expression of a template is wrong whoever the recipient is: the
    activity must be fixed before it sends anything"""


class SandboxError(TemplateFault):
    "An expression of a template reaches for something templates may not use"


class UnknownName(TemplateFault):
    "An expression reads a name or a field that does not exist"


class _NoIncludes:
    """The template loader of templates that may not include anything

    Genshi reads an ``xi:include`` (or a text template's include) through
    the loader of the template, by default from the server's disk."""
    auto_reload = False

    def load(self, filename, *args, **kwargs):
        raise SandboxError(
            f"templates may not include other files ({filename!r})")


NO_INCLUDES = _NoIncludes()


class Namespace:
    "A read-only set of names an expression reaches with a dot"
    __slots__ = ('_name', '_members')

    def __init__(self, name, **members):
        self._name = name
        self._members = members

    def __repr__(self):
        return self._name


class Exposed:
    """An object that tells the sandbox itself what templates may read of it

    `expose` returns the value of name or raises SandboxError (when the name
    is refused) or UndefinedError (when there is nothing of that name)."""
    __slots__ = ()

    def expose(self, name):
        raise NotImplementedError


# Date and time arithmetic through the classes, never through the module
DATETIME = Namespace(
    'datetime',
    date=datetime.date, datetime=datetime.datetime, time=datetime.time,
    timedelta=datetime.timedelta, timezone=datetime.timezone)

_TEXT = frozenset({
        'capitalize', 'casefold', 'center', 'count', 'endswith', 'find',
        'index', 'isalnum', 'isalpha', 'isdecimal', 'isdigit', 'islower',
        'isnumeric', 'isspace', 'istitle', 'isupper', 'join', 'ljust',
        'lower', 'lstrip', 'partition', 'removeprefix', 'removesuffix',
        'replace', 'rfind', 'rindex', 'rjust', 'rpartition', 'rsplit',
        'rstrip', 'split', 'splitlines', 'startswith', 'strip', 'swapcase',
        'title', 'upper', 'zfill'})
_DATE = frozenset({
        'year', 'month', 'day', 'weekday', 'isoweekday', 'isoformat',
        'isocalendar', 'strftime', 'replace', 'toordinal', 'ctime'})
_TIME = frozenset({
        'hour', 'minute', 'second', 'microsecond', 'isoformat', 'strftime',
        'replace'})
_NUMBER = frozenset({'real', 'imag', 'numerator', 'denominator'})
_DICT_METHODS = frozenset({'get', 'keys', 'values', 'items'})

# What may be read of the instances of these types (and of their
# subclasses): the first type of the list that an object is an instance of
# decides.
_INSTANCE_ATTRIBUTES = [
    (bool, frozenset()),
    (str, _TEXT),
    (int, _NUMBER),
    (float, frozenset({'real', 'imag', 'is_integer'})),
    (decimal.Decimal, frozenset({
                'quantize', 'normalize', 'to_integral_value', 'is_zero',
                'is_signed', 'copy_abs', 'copy_negate', 'real', 'imag'})),
    (datetime.datetime, _DATE | _TIME | frozenset({
                'date', 'time', 'timestamp', 'astimezone'})),
    (datetime.date, _DATE),
    (datetime.time, _TIME),
    (datetime.timedelta, frozenset({
                'days', 'seconds', 'microseconds', 'total_seconds'})),
    (dict, _DICT_METHODS),
    (tuple, frozenset({'count', 'index'})),
    (list, frozenset({'count', 'index'})),
    ]
# What may be read of the classes themselves (not of their subclasses)
_CLASS_ATTRIBUTES = {
    datetime.date: frozenset({
            'today', 'fromisoformat', 'fromordinal', 'min', 'max'}),
    datetime.datetime: frozenset({
            'today', 'now', 'fromisoformat', 'fromordinal', 'combine',
            'strptime', 'min', 'max'}),
    datetime.time: frozenset({'fromisoformat', 'min', 'max'}),
    datetime.timedelta: frozenset({'min', 'max'}),
    datetime.timezone: frozenset({'utc'}),
    }
_SUBSCRIPTABLE = (str, tuple, list, dict)
_ALLOWED_ATTRIBUTES = frozenset().union(
    *(names for _, names in _INSTANCE_ATTRIBUTES),
    *_CLASS_ATTRIBUTES.values())


def _range(*args):
    "range() of at most MAX_RANGE numbers"
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise SandboxError(
            f"range() of more than {MAX_RANGE} numbers is not allowed")
    return numbers


class RenderTimeout(SandboxError):
    "A template took longer than its time limit to render"

    def __init__(self, message="the template takes too long to render"):
        super().__init__(message)


class _Watchdog:
    """Stops the renderings that outlast their time limit

    A loop of a template is Python that no lookup of the sandbox sees, so
    its time is bounded from outside: a thread raises RenderTimeout in the
    thread whose rendering is late, which Python delivers at the next
    instruction."""

    def __init__(self):
        self._lock = threading.Lock()
        self._deadlines = {}
        self._thread = None

    def watch(self, seconds):
        "Raise RenderTimeout in this thread once seconds have passed"
        thread_id = threading.get_ident()
        with self._lock:
            self._deadlines[thread_id] = time.monotonic() + seconds
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name='marketing-template-watchdog',
                    daemon=True)
                self._thread.start()

    def release(self):
        "Stop watching this thread"
        with self._lock:
            self._deadlines.pop(threading.get_ident(), None)

    def _watch(self):
        while True:
            time.sleep(_WATCH_INTERVAL)
            with self._lock:
                now = time.monotonic()
                for thread_id, deadline in list(self._deadlines.items()):
                    if deadline <= now:
                        # once only: the entry is gone before the exception
                        # reaches the thread
                        del self._deadlines[thread_id]
                        ctypes.pythonapi.PyThreadState_SetAsyncExc(
                            ctypes.c_ulong(thread_id),
                            ctypes.py_object(RenderTimeout))


_WATCH_INTERVAL = 0.1
_watchdog = _Watchdog()


class time_limit:
    """Raise RenderTimeout in the block once it has run for seconds, or
    never with None"""
    __slots__ = ('seconds',)

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        if self.seconds is not None:
            _watchdog.watch(self.seconds)

    def __exit__(self, *exc_info):
        if self.seconds is not None:
            _watchdog.release()


# The builtins that only compute: no introspection, no attribute by name,
# no code, no file.
BUILTINS = {
    'True': True, 'False': False, 'None': None,
    'abs': abs, 'all': all, 'any': any, 'bool': bool, 'chr': chr,
    'dict': dict, 'divmod': divmod, 'enumerate': enumerate,
    'filter': filter, 'float': float, 'format': format, 'int': int,
    'iter': iter, 'len': len, 'next': next, 'list': list, 'map': map,
    'max': max, 'min': min,
    'ord': ord, 'range': _range, 'reversed': reversed, 'round': round,
    'set': set, 'sorted': sorted, 'str': str, 'sum': sum, 'tuple': tuple,
    'zip': zip,
    }


class _Builtins(dict):
    "The builtins of the code of templates, refusing the others"

    def __missing__(self, name):
        raise SandboxError(f"{name!r} is not available in templates")


# Methods written in C import through the __import__ of the calling code
# (date.strftime imports time): no template can name it, as it starts
# with '_'.
_TEMPLATE_BUILTINS = _Builtins(BUILTINS, __import__=__import__)

# Names that are refused when a template is saved, with the reason: they are
# refused at run time anyway (they are in no allowlist), but the marketer
# learns it with the expression to fix.
_REFUSED_NAMES = frozenset({
        '__import__', 'breakpoint', 'classmethod', 'compile', 'copyright',
        'credits', 'delattr', 'dir', 'eval', 'exec', 'exit', 'getattr',
        'globals', 'hasattr', 'help', 'id', 'input', 'isinstance',
        'issubclass', 'license', 'locals', 'memoryview', 'object', 'open',
        'property', 'quit', 'setattr', 'staticmethod', 'super', 'type',
        'vars', 'Markup', 'Undefined', 'UndefinedError'})
_REFUSED_ATTRIBUTES = frozenset({
        # formatting that walks attributes and items of its arguments
        'format', 'format_map',
        # classes, frames, code and functions
        'mro', 'gi_frame', 'gi_code', 'gi_yieldfrom', 'cr_frame', 'cr_code',
        'cr_await', 'ag_frame', 'ag_code', 'f_back', 'f_builtins', 'f_code',
        'f_globals', 'f_locals', 'tb_frame', 'tb_next', 'func_globals',
        'func_code', 'im_func', 'im_self', 'co_code',
        # what records can do besides being read
        'browse', 'copy', 'create', 'delete', 'export_data', 'import_data',
        'read', 'save', 'search', 'search_count', 'search_read', 'write',
        'pool', 'transaction'})


def _refusal_of_name(name):
    if name.startswith('_'):
        return f"names starting with '_' are not allowed ({name!r})"
    if name in _REFUSED_NAMES:
        return f"{name!r} is not available in templates"


def _refusal_of_attribute(name):
    if name.startswith('_'):
        return f"attributes starting with '_' are not allowed ({name!r})"
    if name in _REFUSED_ATTRIBUTES:
        if name in {'format', 'format_map'}:
            return (f"{name!r} is not allowed: write the values into the "
                "text, or use the format_* functions")
        return f"{name!r} is not available in templates"


class Lookup(LookupBase):
    """How the expressions of templates find names, attributes and items

    Genshi compiles ``a.b`` into ``lookup_attr(a, 'b')``, ``a[k]`` into
    ``lookup_item(a, (k,))`` and a free name into ``lookup_name``; each
    answers only from the allowlists."""

    @classmethod
    def globals(cls, data):
        namespace = super().globals(data)
        # Genshi leaves to Python the names it takes for locals, such as
        # the iterable of a comprehension named like its target: they find
        # the builtins of templates, not Python's
        namespace['__builtins__'] = _TEMPLATE_BUILTINS
        return namespace

    @classmethod
    def lookup_name(cls, data, name):
        if name.startswith('_'):
            raise SandboxError(_refusal_of_name(name))
        if name in data:
            return data[name]
        if name in BUILTINS:
            return BUILTINS[name]
        if name in _REFUSED_NAMES:
            raise SandboxError(_refusal_of_name(name))
        raise UnknownName(f"{name!r} is not defined")

    @classmethod
    def lookup_attr(cls, obj, key):
        return attribute(obj, key)

    @classmethod
    def lookup_item(cls, obj, key):
        if len(key) == 1:
            key = key[0]
        if isinstance(obj, Exposed):
            if not isinstance(key, str):
                raise SandboxError(
                    f"{obj!r} is read by the names of its fields")
            return attribute(obj, key)
        if isinstance(obj, _SUBSCRIPTABLE):
            return obj[key]
        if obj is None:
            raise UndefinedError(repr(key), owner=obj)
        raise SandboxError(
            f"items of {_kind(obj)} are not available in templates")

    @classmethod
    def undefined(cls, key, owner=None):
        raise UndefinedError(key, owner=owner)


def attribute(obj, key):
    "The attribute key of obj as a template may read it"
    refusal = _refusal_of_attribute(key)
    if refusal:
        raise SandboxError(refusal)
    if isinstance(obj, Exposed):
        return obj.expose(key)
    if isinstance(obj, Namespace):
        try:
            return obj._members[key]
        except KeyError:
            raise UnknownName(f"{obj!r} has no {key!r}")
    if isinstance(obj, type):
        if key in _CLASS_ATTRIBUTES.get(obj, ()):
            return getattr(obj, key)
        raise SandboxError(
            f"{key!r} of {obj.__name__} is not available in templates")
    if obj is None:
        raise UndefinedError(key, owner=obj)
    if isinstance(obj, dict) and key not in _DICT_METHODS:
        # as Genshi reads mappings: the dot reaches the item
        try:
            return obj[key]
        except KeyError:
            raise UndefinedError(key, owner=obj)
    for type_, names in _INSTANCE_ATTRIBUTES:
        if isinstance(obj, type_):
            if key in names:
                return getattr(obj, key)
            raise SandboxError(
                f"{key!r} of {_kind(obj)} is not available in templates")
    raise SandboxError(f"{_kind(obj)} cannot be read by templates")


def _kind(obj):
    "How an error names the kind of obj, without showing anything of it"
    if isinstance(obj, Exposed):
        return repr(obj)
    return f"a value of type {type(obj).__name__}"


def expression_of(exception):
    """The source of the template expression in which exception was raised,
    or None

    Genshi names the code of each expression after its source."""
    traceback = exception.__traceback__
    source = None
    while traceback is not None:
        name = traceback.tb_frame.f_code.co_name
        if name.startswith('<Expression ') and name.endswith('>'):
            try:
                source = ast.literal_eval(name[len('<Expression '):-1])
            except (ValueError, SyntaxError):
                pass
        traceback = traceback.tb_next
    if source and source != '?':
        return source


def check_template(template):
    """Raise SandboxError naming the first expression of the compiled Genshi
    template that reaches for something refused"""
    for expression in _expressions(template.stream):
        source = getattr(expression, 'source', '?')
        if isinstance(expression, Suite):
            # NewTextTemplate does not pass allow_exec on to Genshi, which
            # runs the {% python %} blocks of a title, unchecked
            raise SandboxError(
                f"{{% python {source} %}}: Python code blocks are not "
                "allowed")
        for node in ast.walk(expression.ast):
            refusal = None
            if isinstance(node, ast.Name):
                refusal = _refusal_of_name(node.id)
            elif isinstance(node, ast.Attribute):
                refusal = _refusal_of_attribute(node.attr)
            elif isinstance(node, ast.Pow):
                # a power of a power takes the server hours to compute, in
                # C, where no time limit reaches it
                refusal = "the power operator (**) is not allowed"
            if refusal:
                if source == '?':
                    source = ast.unparse(node)
                raise SandboxError(f"${{{source}}}: {refusal}")


def _expressions(stream):
    """The Genshi expressions (and Python blocks) of the events of stream
    and of their directives"""
    for kind, data, pos in stream:
        if kind in {'EXPR', 'EXEC'}:
            yield data
        elif kind == 'START':
            for _, value in data[1]:
                if isinstance(value, list):
                    yield from _expressions(value)
        elif kind == 'SUB':
            directives, substream = data
            for directive in directives:
                yield from _codes(directive)
            yield from _expressions(substream)


def _codes(value, depth=0):
    "The Genshi expressions held by a directive, whatever its kind"
    if depth > 4:
        return
    if hasattr(value, 'ast') and hasattr(value, 'code'):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _codes(item, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _codes(item, depth + 1)
    elif depth == 0:
        slots = [
            name for klass in type(value).__mro__
            for name in getattr(klass, '__slots__', ())]
        members = list(getattr(value, '__dict__', {}).values()) + [
            getattr(value, name, None) for name in slots]
        for member in members:
            yield from _codes(member, depth + 1)


# Models and fields that no template reads, whatever the access rights say:
# what opens a session or signs a link.
_HIDDEN_MODELS = frozenset({
        'ir.session', 'ir.session.wizard', 'res.user.application',
        'res.user.device', 'res.user.login.attempt',
        'marketing.automation.email.secret'})
_USER_FIELDS = frozenset({'id', 'rec_name', 'name', 'email', 'signature'})
_PLAIN = (
    str, int, float, decimal.Decimal, datetime.date, datetime.time,
    datetime.timedelta, bytes)


class RecordAccessError(Exception):
    "The Marketing group may not read this record"


class Access:
    """What the templates of one batch may read: the models, fields and
    records that the groups of context (a record's
    ``marketing_access_context``) may read, each checked once

    The checks run for the transaction's user, who must not be root: root
    may read everything."""

    def __init__(self, context):
        self.access_context = context
        self._models = {}
        self._fields = {}
        self._records = {}
        self._functions = {}

    def _checking(self):
        return Transaction().set_context(
            self.access_context, _check_access=True)

    def check_field(self, Model, name):
        "Raise SandboxError unless the field of Model may be read"
        key = Model.__name__, name
        refusal = self._fields.get(key, False)
        if refusal is False:
            refusal = self._fields[key] = self._field_refusal(Model, name)
        if refusal:
            raise SandboxError(refusal)

    def _field_refusal(self, Model, name):
        pool = Pool()
        ModelAccess = pool.get('ir.model.access')
        FieldAccess = pool.get('ir.model.field.access')
        model = Model.__name__
        lowered = name.lower()
        if (model in _HIDDEN_MODELS
                or (model == 'res.user' and name not in _USER_FIELDS)
                or 'password' in lowered or 'secret' in lowered):
            return f"{model} {name!r} is not available in templates"
        with self._checking():
            if not ModelAccess.check(model, 'read', raise_exception=False):
                return (f"the Marketing group may not read {model} "
                    "records")
            if name != 'id' and not FieldAccess.check(
                    model, [name], 'read', raise_exception=False):
                return f"the Marketing group may not read {model} {name!r}"

    def check_record(self, record):
        "Raise RecordAccessError unless the record may be read"
        key = record.__class__.__name__, record.id
        if key not in self._records:
            Rule = Pool().get('ir.rule')
            try:
                with self._checking():
                    Rule.check(key[0], [record.id])
            except Exception:
                self._records[key] = (
                    f"the Marketing group may not read {key[0]},{key[1]}")
            else:
                self._records[key] = None
        if self._records[key]:
            raise RecordAccessError(self._records[key])

    def view(self, value):
        "The value of a field as templates see it"
        if isinstance(value, Model):
            return RecordView(value, self)
        if value is None or isinstance(value, _PLAIN):
            return value
        if isinstance(value, (list, tuple)):
            return tuple(self.view(v) for v in value)
        if isinstance(value, dict):
            return {k: self.view(v) for k, v in value.items()}
        raise SandboxError(
            f"a value of type {type(value).__name__} cannot be read by "
            "templates")

    def context(self, values):
        """The variables of a template as it may see them

        Records become views, the datetime module its namespace of classes,
        functions take records in place of their views; a module, a class
        or any other object is refused."""
        return {name: self._variable(name, value)
            for name, value in values.items()}

    def _variable(self, name, value):
        if value is datetime:
            return DATETIME
        if isinstance(value, (Namespace, Exposed)):
            return value
        if isinstance(value, type):
            if value in _CLASS_ATTRIBUTES:
                return value
        elif isinstance(value, types.ModuleType):
            pass
        elif callable(value) and not isinstance(value, Model):
            return self._function(value)
        else:
            return self.view(value)
        raise SandboxError(
            f"the variable {name!r} cannot be given to templates")

    def _function(self, function):
        """function, taking the records that a template gives it as records
        rather than as their views"""
        # bound methods are new objects at each access: key them by what
        # they bind
        key = (getattr(function, '__func__', function),
            getattr(function, '__self__', None))
        wrapper = self._functions.get(key)
        if wrapper is None:
            @functools.wraps(function)
            def wrapper(*args, **kwargs):
                args = [_record_of(a) for a in args]
                kwargs = {k: _record_of(v) for k, v in kwargs.items()}
                result = function(*args, **kwargs)
                if isinstance(result, (Model, list, tuple)):
                    result = self.view(result)
                return result
            self._functions[key] = wrapper
        return wrapper


def _record_of(value):
    if isinstance(value, RecordView):
        return value._record
    return value


class RecordView(Exposed):
    """A record as templates read it: its fields, within the access rights
    of an Access, the records it links to as views again"""
    __slots__ = ('_record', '_access')

    def __init__(self, record, access):
        self._record = record
        self._access = access

    def expose(self, name):
        record = self._record
        Model = record.__class__
        if name != 'id' and name not in Model._fields:
            raise UnknownName(f"{Model.__name__} has no field {name!r}")
        self._access.check_field(Model, name)
        self._access.check_record(record)
        return self._access.view(getattr(record, name))

    def __str__(self):
        return f'{self._record.__class__.__name__},{self._record.id}'

    __repr__ = __str__

    def __eq__(self, other):
        if isinstance(other, RecordView):
            return str(self) == str(other)
        return NotImplemented

    def __hash__(self):
        return hash(str(self))
