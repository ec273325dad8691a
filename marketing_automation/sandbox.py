# SPDX-License-Identifier: GPL-3.0-or-later
"""The sandbox in which the templates of marketers run.

Email titles and bodies are Genshi templates written by users of the
Marketing group, who are not administrators.  An expression of a template
may only read what its context gives it, and only through this module:

- every name, attribute and item an expression reads goes through `Lookup`,
  which answers from allowlists: what an `Exposed` value (a record) lets
  read of itself, the harmless methods of text, numbers, dates and
  containers, and the date and time classes of the ``datetime`` namespace;
  anything else is refused with `SandboxError`;
- the operations that compute or allocate in C, where no time limit
  reaches, are bounded: repetition, shifts and products of big integers,
  ``%`` and ``format`` widths, padding, ``join`` and ``replace``, ``iter``
  with a sentinel, ``sum`` of sequences (`guarded`, `MAX_SIZE`,
  `MAX_INT_BITS`, `MAX_WIDTH`);
- `seal_template` reads every expression of a compiled template before it is
  saved or rendered, so that a marketer learns at once which expression is
  refused, and compiles it again with the guards of its operators;
- templates may not run Python blocks nor include files (`NO_INCLUDES`).

What is not on a list is refused: a model, a module, the pool, the
transaction, frames, ``str.format`` and the builtins that reach any of
these.  The module knows no database: the records that templates read are
`Exposed` values given by the caller (see ``rendering.py``), and the
renderings run in a child process that a runaway cannot outlive (see
``render_box.py``).
"""
import ast
import ctypes
import datetime
import decimal
import functools
import re
import threading
import time

from genshi.template.eval import (
    ExpressionASTTransformer, LookupBase, Suite, UndefinedError, _compile)

__all__ = [
    'TemplateFault', 'SandboxError', 'UnknownName', 'TooBig', 'Described',
    'Lookup',
    'NO_INCLUDES', 'Namespace', 'Exposed', 'DATETIME', 'seal_template',
    'expression_of', 'attribute_paths', 'MAX_RANGE', 'MAX_SIZE',
    'MAX_INT_BITS', 'MAX_WIDTH', 'RenderTimeout', 'time_limit']

# A loop of a template never needs more; a bigger one is a mistake or an
# attempt to keep the renderer busy.
MAX_RANGE = 10000
# The most characters (or items) one value of a template may hold: ten
# times what an email may weigh by default
MAX_SIZE = 5_000_000
# The most bits of an integer that a product or a shift may make
MAX_INT_BITS = 65536
# The widest padding and the greatest precision of a format
MAX_WIDTH = 10000


class TemplateFault(Exception):
    """An expression of a template is wrong whoever the recipient is: the
    activity must be fixed before it sends anything"""


class SandboxError(TemplateFault):
    "An expression of a template reaches for something templates may not use"


class UnknownName(TemplateFault):
    "An expression reads a name or a field that does not exist"


class TooBig(SandboxError):
    "An operation of a template would compute or allocate too much"


class Described(Exception):
    """An error of a value that says already what it is: an error that the
    caller of a render box tells the template"""


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
CLASSES = frozenset(_CLASS_ATTRIBUTES)
_SUBSCRIPTABLE = (str, tuple, list, dict)
_SIZED = (str, bytes, tuple, list)


# The guards of what C computes at once

def _check_size(size, what):
    if size > MAX_SIZE:
        raise TooBig(
            f"{what} would hold {size:,} characters or items, more than "
            f"the {MAX_SIZE:,} a value of a template may hold")


def _check_bits(bits, what):
    if bits > MAX_INT_BITS:
        raise TooBig(
            f"{what} would make a number of {bits:,} bits, more than the "
            f"{MAX_INT_BITS:,} a template may compute")


def _check_width(width, what):
    if width > MAX_WIDTH:
        raise TooBig(
            f"{what} of {width:,} is more than the {MAX_WIDTH:,} a template "
            "may ask for")


def _is_int(value):
    return isinstance(value, int)


def _multiply(left, right):
    if _is_int(left) and _is_int(right):
        _check_bits(
            abs(left).bit_length() + abs(right).bit_length(),
            "the product")
    elif isinstance(left, _SIZED) and _is_int(right):
        _check_size(len(left) * max(right, 0), "the repetition")
    elif isinstance(right, _SIZED) and _is_int(left):
        _check_size(len(right) * max(left, 0), "the repetition")
    return left * right


def _shift(left, right):
    if _is_int(left) and _is_int(right) and right > 0:
        _check_bits(abs(left).bit_length() + right, "the shift")
    return left << right


# A conversion of printf-style formatting: its width and precision
_PERCENT = re.compile(
    r'%(?:\([^)]*\))?[-#0 +]*(?P<width>\*|\d+)?'
    r'(?:\.(?P<precision>\*|\d+))?[hlL]?.', re.DOTALL)


def check_percent(template):
    "Raise TooBig when the % format template asks for too wide a field"
    if isinstance(template, bytes):
        template = template.decode('latin-1')
    for match in _PERCENT.finditer(template):
        for part in ['width', 'precision']:
            value = match.group(part)
            if value == '*':
                raise TooBig(
                    f"the {part} '*' of {match.group()!r} is not allowed: "
                    "write it in the format")
            if value:
                _check_width(int(value), f"the {part} {match.group()!r}")


def _modulo(left, right):
    if isinstance(left, (str, bytes)):
        check_percent(left)
    return left % right


# A format specification: [[fill]align][sign][z][#][0][width][,_][.precision]
_SPEC = re.compile(
    r'(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d*)[,_]?'
    r'(?:\.(?P<precision>\d*))?', re.DOTALL)


def check_format_spec(value, spec):
    "Raise TooBig when format(value, spec) asks for too wide a field"
    if isinstance(value, (datetime.date, datetime.time)):
        # the specification of a date is a strftime format
        _check_size(len(spec), "the format")
        return
    match = _SPEC.match(spec)
    for part in ['width', 'precision']:
        number = match.group(part) if match else None
        if number:
            _check_width(int(number), f"the {part} of {spec!r}")


def _format(value, spec=''):
    "format() with a bounded width and precision"
    if not isinstance(spec, str):
        raise TypeError("format() argument 2 must be str")
    check_format_spec(value, spec)
    return format(value, spec)


_SENTINEL_ITEMS = MAX_RANGE * 10


def _iter(*args):
    """iter(), whose form with a sentinel yields at most _SENTINEL_ITEMS
    items from Python, where the time limit reaches it"""
    if len(args) != 2:
        return iter(*args)
    function, sentinel = args
    return _sentinel_items(function, sentinel)


def _sentinel_items(function, sentinel):
    for _ in range(_SENTINEL_ITEMS):
        item = function()
        if item == sentinel:
            return
        yield item
    raise TooBig(
        f"iter() with a sentinel gave {_SENTINEL_ITEMS:,} items without "
        "reaching it")


_NUMBERS = (int, float, decimal.Decimal)


def _sum(iterable, start=0):
    "sum() of numbers: adding sequences copies them again at each item"
    if not isinstance(start, _NUMBERS):
        raise SandboxError("sum() adds numbers only: use join for texts")
    return sum(iterable, start)


def _range(*args):
    "range() of at most MAX_RANGE numbers"
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise SandboxError(
            f"range() of more than {MAX_RANGE} numbers is not allowed")
    return numbers


def _padding(method):
    "A padding method of texts whose width is bounded"
    def pad(text, width, *args):
        if _is_int(width):
            _check_width(width, f"the width of {method.__name__}()")
        return method(text, width, *args)
    return pad


def _join(separator, items):
    items = list(items)
    if all(isinstance(i, type(separator)) for i in items):
        _check_size(
            sum(map(len, items)) + len(separator) * max(len(items) - 1, 0),
            "the join")
    return separator.join(items)


def _replace(text, old, new, count=-1):
    if isinstance(old, str) and isinstance(new, str) and len(new) > len(
            old):
        found = text.count(old) if old else len(text) + 1
        if _is_int(count) and count >= 0:
            found = min(found, count)
        _check_size(
            len(text) + found * (len(new) - len(old)), "the replacement")
    return text.replace(old, new, count)


_TEXT_GUARDS = {
    'zfill': _padding(str.zfill),
    'ljust': _padding(str.ljust),
    'rjust': _padding(str.rjust),
    'center': _padding(str.center),
    }


def _text_method(text, name):
    "The method name of text, bound, with its guard when it has one"
    if name in _TEXT_GUARDS:
        guard = _TEXT_GUARDS[name]
        return lambda *args: guard(text, *args)
    if name == 'join':
        return lambda items: _join(text, items)
    if name == 'replace':
        return lambda *args: _replace(text, *args)
    return getattr(text, name)


_BINARY_GUARDS = {
    ast.Mult: '_guard_multiply',
    ast.LShift: '_guard_shift',
    ast.Mod: '_guard_modulo',
    }


class _GuardedTransformer(ExpressionASTTransformer):
    """Genshi's transformation of the expressions of templates, which also
    calls the guards of the operators that may compute too much in C"""

    def visit_BinOp(self, node):
        node = super().visit_BinOp(node)
        guard = _BINARY_GUARDS.get(type(node.op))
        if guard is None:
            return node
        call = ast.Call(
            func=ast.Name(id=guard, ctx=ast.Load()),
            args=[node.left, node.right], keywords=[])
        return ast.copy_location(call, node)


class RenderTimeout(SandboxError):
    "A template took longer than its time limit to render"

    def __init__(self, message="the template takes too long to render"):
        super().__init__(message)


class _Watchdog:
    """Stops the renderings that outlast their time limit

    A loop of a template is Python that no lookup of the sandbox sees, so
    its time is bounded from outside: a thread raises RenderTimeout in the
    thread whose rendering is late, which Python delivers at the next
    instruction.  What Python's C code does in one instruction is bounded
    by the guards, and by the child process the renderings run in."""

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
        """Stop watching this thread, and withdraw its timeout if it was
        raised but not yet delivered"""
        thread_id = threading.get_ident()
        # a NULL exception withdraws the one still pending: ready before the
        # lock, so that it is the first call made under it, before Python
        # looks for a pending exception again
        withdraw = functools.partial(
            _set_async_exception, ctypes.c_ulong(thread_id), None)
        with self._lock:
            withdraw()
            self._deadlines.pop(thread_id, None)

    def _watch(self):
        while True:
            time.sleep(_WATCH_INTERVAL)
            with self._lock:
                now = time.monotonic()
                for thread_id, deadline in list(self._deadlines.items()):
                    if deadline <= now:
                        self._fire(thread_id)

    def _fire(self, thread_id):
        """Raise RenderTimeout in the thread, once: its entry is gone before
        the exception reaches it (the lock is held)"""
        del self._deadlines[thread_id]
        _set_async_exception(
            ctypes.c_ulong(thread_id), ctypes.py_object(RenderTimeout))


_set_async_exception = ctypes.pythonapi.PyThreadState_SetAsyncExc
_WATCH_INTERVAL = 0.05
_watchdog = _Watchdog()


class time_limit:
    """Raise RenderTimeout in the block once it has run for seconds, or
    never with None; the timeout never outlives the block"""
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
# no code, no file; those that may compute too much in C are guarded.
BUILTINS = {
    'True': True, 'False': False, 'None': None,
    'abs': abs, 'all': all, 'any': any, 'bool': bool, 'chr': chr,
    'dict': dict, 'divmod': divmod, 'enumerate': enumerate,
    'filter': filter, 'float': float, 'format': _format, 'int': int,
    'iter': _iter, 'len': len, 'next': next, 'list': list, 'map': map,
    'max': max, 'min': min,
    'ord': ord, 'range': _range, 'reversed': reversed, 'round': round,
    'set': set, 'sorted': sorted, 'str': str, 'sum': _sum, 'tuple': tuple,
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
        namespace['_guard_multiply'] = _multiply
        namespace['_guard_shift'] = _shift
        namespace['_guard_modulo'] = _modulo
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
                if type_ is str:
                    return _text_method(obj, key)
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


def seal_template(template):
    """Make the compiled Genshi template safe to render: raise SandboxError
    naming its first expression that reaches for something refused or
    computes too much from its constants, and compile each expression again
    with the guards of its operators"""
    for expression in _expressions(template.stream):
        source = getattr(expression, 'source', '?')
        if isinstance(expression, Suite):
            # NewTextTemplate does not pass allow_exec on to Genshi, which
            # runs the {% python %} blocks of a title, unchecked
            raise SandboxError(
                f"{{% python {source} %}}: Python code blocks are not "
                "allowed")
        for node in ast.walk(expression.ast):
            refusal = _refusal_of_node(node)
            if refusal:
                if source == '?':
                    source = ast.unparse(node)
                raise SandboxError(f"${{{source}}}: {refusal}")
        code = expression.code
        expression.code = _compile(
            expression.ast, source, mode='eval', filename=code.co_filename,
            lineno=code.co_firstlineno, xform=_GuardedTransformer)


def _refusal_of_node(node):
    "Why the node of an expression is refused, or None"
    if isinstance(node, ast.Name):
        return _refusal_of_name(node.id)
    elif isinstance(node, ast.Attribute):
        return _refusal_of_attribute(node.attr)
    elif isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Pow):
            # a power of a power takes hours to compute, in C
            return "the power operator (**) is not allowed"
        return _constant_refusal(_try_constant, node)
    elif isinstance(node, ast.Call):
        return _constant_refusal(_try_call, node)


def _constant_refusal(attempt, node):
    "The refusal of the guard of an operation of constants, or None"
    try:
        attempt(node)
    except TooBig as exception:
        return str(exception)
    except Exception:
        # left to the rendering, which tells the recipient's error
        pass


def _constant(node):
    if not isinstance(node, ast.Constant):
        raise ValueError("not a constant")
    return node.value


def _try_constant(node):
    "Check an operation of two constants with its guard, without running it"
    guards = {
        ast.Mult: lambda l, r: (
            _check_size(len(l) * r, "the repetition")
            if isinstance(l, _SIZED) and _is_int(r)
            else _check_size(len(r) * l, "the repetition")
            if isinstance(r, _SIZED) and _is_int(l)
            else _check_bits(
                abs(l).bit_length() + abs(r).bit_length(), "the product")),
        ast.LShift: lambda l, r: _check_bits(
            abs(l).bit_length() + r, "the shift"),
        }
    if isinstance(node.op, ast.Mod):
        # the format alone tells its widths
        check_percent(_constant(node.left))
        return
    guard = guards.get(type(node.op))
    if guard:
        guard(_constant(node.left), _constant(node.right))


def _try_call(node):
    "Check a call of format() or of a padding method with constants"
    func = node.func
    if isinstance(func, ast.Name) and func.id == 'format' and len(
            node.args) == 2:
        check_format_spec(_constant(node.args[0]), _constant(node.args[1]))
    elif (isinstance(func, ast.Attribute) and func.attr in _TEXT_GUARDS
            and node.args):
        _check_width(
            _constant(node.args[0]), f"the width of {func.attr}()")


def attribute_paths(template):
    """The chains of attributes that the expressions of the compiled
    template read from a name, such as ('record', 'party', 'name'): what
    may be read ahead for each recipient"""
    paths = set()
    for expression in _expressions(template.stream):
        if isinstance(expression, Suite):
            continue
        for node in ast.walk(expression.ast):
            chain = []
            while isinstance(node, ast.Attribute):
                chain.append(node.attr)
                node = node.value
            if chain and isinstance(node, ast.Name):
                paths.add((node.id, *reversed(chain)))
    return paths


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
