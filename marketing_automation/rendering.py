# SPDX-License-Identifier: GPL-3.0-or-later
"""How the emails of an activity are rendered: in a render box, with what
the author of its templates may read.

The templates run in a child process (``render_box.py``); this side of the
box, in the process of trytond, decides what they read:

- ``Access`` checks which models, fields and records the groups (and the
  company) of a record's ``marketing_access_context`` may read, for the
  author of the templates, each once per batch;
- ``RecordView`` is a record as templates read it: its fields within those
  rights, the records it links to as views again, the records outside them
  left out of its lists;
- ``TemplateServer`` gives the box the context of each recipient, with the
  fields its templates read given ahead, and answers the fields and the
  functions the box asks for;
- ``Renderer`` renders the emails of a batch of an activity and tells the
  failures of a recipient from the faults of the activity.
"""
import datetime
import decimal
import functools
import types

from trytond import backend
from trytond.config import config
from trytond.i18n import gettext
from trytond.model import Model
from trytond.pool import Pool
from trytond.transaction import (
    Transaction, inactive_records, without_check_access)

from . import mailing, render_box, sandbox
from .exceptions import ActivityFault
from .tools import acting_user

__all__ = [
    'RecordAccessError', 'Access', 'RecordView', 'TemplateServer',
    'Renderer', 'settings', 'check_template']

# Models and fields that no template reads, whatever the access rights say:
# what opens a session or signs a link.
_HIDDEN_MODELS = frozenset({
        'ir.session', 'ir.session.wizard', 'res.user.application',
        'res.user.device', 'res.user.login.attempt',
        'marketing.automation.email.secret'})
_USER_FIELDS = frozenset({'id', 'rec_name', 'name', 'email', 'signature'})
_PLAIN = (
    str, int, float, decimal.Decimal, datetime.date, datetime.time,
    datetime.timedelta, bytes, type(None))


def settings():
    "The limits of the render boxes, from the [marketing] section"
    timeout = config.getfloat('marketing', 'render_timeout', default=10)
    return render_box.Settings(
        # no email may render without a deadline: the box would be stuck
        timeout=timeout if timeout and timeout > 0 else 10,
        memory=config.getint('marketing', 'render_memory', default=1024),
        max_size=max_size(),
        python=config.get('marketing', 'render_python', default=None))


def max_size():
    "What an email may weigh, in bytes: [marketing] email_max_size"
    return config.getint('marketing', 'email_max_size', default=500_000)


def check_template(kind, source):
    """Compile the title or the body (kind) in a render box and raise
    mailing.TemplateError with why it is refused"""
    box_settings = settings()
    try:
        with render_box.lease(box_settings) as box:
            error = box.check(kind, source)
    except render_box.BoxError as exception:
        raise mailing.TemplateError(str(exception)) from exception
    if error:
        raise mailing.TemplateError(error)


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
            raise sandbox.SandboxError(refusal)

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
        key = record.__name__, record.id
        if key not in self._records:
            self.readable([record])
        refusal = self._records[key]
        if refusal:
            raise RecordAccessError(refusal)

    def readable(self, records):
        """The records that may be read, in their order, as Rule.check
        tells: the rules are checked in one search for those not checked
        yet, and in none for a model without rules"""
        pool = Pool()
        ModelAccess = pool.get('ir.model.access')
        Rule = pool.get('ir.rule')
        transaction = Transaction()
        unknown = {}
        for record in records:
            key = record.__name__, record.id
            if key not in self._records:
                unknown.setdefault(record.__name__, set()).add(record.id)
        for model, ids in unknown.items():
            Model = pool.get(model)
            with self._checking():
                allowed = ModelAccess.check(
                    model, 'read', raise_exception=False)
                domain = Rule.domain_get(model, mode='read')
            if not allowed:
                found = set()
            elif domain:
                with transaction.set_user(0, set_context=True), \
                        inactive_records(), without_check_access():
                    found = set(map(int, Model.search(
                                [('id', 'in', list(ids)), domain],
                                order=[])))
            else:
                found = ids
            for record_id in ids:
                # not even its id is told
                self._records[model, record_id] = (
                    None if record_id in found else
                    f"the Marketing group may not read this {model} record")
        return [r for r in records
            if not self._records[r.__name__, r.id]]

    def view(self, value):
        """The value of a field as templates see it: a record outside the
        rights is refused, and left out of a list"""
        if isinstance(value, Model):
            self.check_record(value)
            return RecordView(value, self)
        if isinstance(value, _PLAIN):
            return value
        if isinstance(value, (list, tuple)):
            records = [v for v in value if isinstance(v, Model)]
            if records:
                # not even their number tells of the records not readable
                readable = set(map(id, self.readable(records)))
                value = [v for v in value
                    if not isinstance(v, Model) or id(v) in readable]
                return tuple(
                    RecordView(v, self) if isinstance(v, Model)
                    else self.view(v) for v in value)
            return tuple(self.view(v) for v in value)
        if isinstance(value, dict):
            return {k: self.view(v) for k, v in value.items()}
        if isinstance(value, (set, frozenset)):
            return {self.view(v) for v in value}
        raise sandbox.SandboxError(
            f"a value of type {type(value).__name__} cannot be read by "
            "templates")

    def variable(self, name, value):
        """The variable of a template as it may see it: records become
        views, the datetime module its namespace of classes, functions take
        records in place of their views; a module, a class or any other
        object is refused"""
        if value is datetime:
            return sandbox.DATETIME
        if isinstance(value, (sandbox.Namespace, sandbox.Exposed)):
            return value
        if isinstance(value, type):
            if value in sandbox.CLASSES:
                return value
        elif isinstance(value, types.ModuleType):
            pass
        elif callable(value) and not isinstance(value, Model):
            return self._function(value)
        else:
            return self.view(value)
        raise sandbox.SandboxError(
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


class RecordView(sandbox.Exposed):
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
            raise sandbox.UnknownName(
                f"{Model.__name__} has no field {name!r}")
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


class TemplateServer(render_box.Server):
    """What a render box reads of the records of a batch, and the functions
    it calls, for the author of the templates

    Records (any Exposed) and functions cross as handles; the fields that
    the templates read ahead of anything else (paths such as
    ('record', 'party', 'name')) are given with each context, so that
    rendering a usual template asks nothing."""

    def __init__(self, author):
        self.author = author
        self.accesses = {}
        self.objects = []
        self.numbers = {}
        self.given = {}
        self.constants = {}

    def access(self, access_context):
        "The Access of the records whose marketing_access_context it is"
        key = repr(sorted(access_context.items()))
        access = self.accesses.get(key)
        if access is None:
            access = self.accesses[key] = Access(access_context)
        return access

    def context(self, values, access, paths):
        """The wire context of a recipient from the values of
        Activity.email_context, with the fields of paths given ahead"""
        with Transaction().set_user(self.author):
            variables = {
                name: access.variable(name, value)
                for name, value in values.items()}
            for path in paths:
                value = variables.get(path[0])
                if isinstance(value, sandbox.Exposed):
                    self._give(value, path[1:])
            return {name: self._variable_wire(value)
                for name, value in variables.items()}

    def _variable_wire(self, value):
        """The wire value of a variable: a function, a class or the
        datetime namespace, the same for every recipient, is made once"""
        if value is sandbox.DATETIME or (
                callable(value) and not isinstance(value, sandbox.Exposed)):
            # the value is kept with its wire, so that its id is not reused
            kept = self.constants.get(id(value))
            if kept is None or kept[0] is not value:
                kept = self.constants[id(value)] = (value, self._wire(value))
            return kept[1]
        return self._wire(value)

    def _give(self, value, names):
        "Read the chain of names from the Exposed value ahead"
        given = self.given.setdefault(self._number(value, 'record'), {})
        name = names[0]
        if name not in given:
            try:
                given[name] = value.expose(name)
            except backend.DatabaseOperationalError:
                raise
            except Exception as exception:
                given[name] = _refusal(exception)
        next_value = given[name]
        if len(names) > 1 and isinstance(next_value, sandbox.Exposed):
            self._give(next_value, names[1:])

    def _number(self, value, kind):
        key = (kind, str(value) if kind == 'record' else id(value))
        number = self.numbers.get(key)
        if number is None:
            number = self.numbers[key] = len(self.objects)
            self.objects.append((kind, value))
        return number

    def _wire(self, value, seen=()):
        def other(value):
            if isinstance(value, sandbox.Exposed):
                number = self._number(value, 'record')
                given = {}
                if number not in seen:
                    for name, field in self.given.get(number, {}).items():
                        given[name] = field if isinstance(
                            field, render_box.Refusal) else self._wire(
                            field, (*seen, number))
                return render_box.to_wire(render_box.Handle(
                        'record', number, str(value), given))
            if callable(value):
                return render_box.to_wire(render_box.Handle(
                        'function', self._number(value, 'function')))
            raise TypeError(f"a value of type {type(value).__name__} "
                "cannot be given to templates")
        return render_box.to_wire(value, other)

    def _object(self, number, kind):
        if (not isinstance(number, int) or isinstance(number, bool)
                or not 0 <= number < len(self.objects)
                or self.objects[number][0] != kind):
            raise ValueError("unknown handle")
        return self.objects[number][1]

    def _value(self, data):
        return render_box.from_wire(
            data, lambda handle: self._object(handle.number, handle.kind))

    def read(self, number, name):
        value = self._object(number, 'record')
        if not isinstance(name, str):
            raise ValueError("not a field name")
        with Transaction().set_user(self.author):
            try:
                return self._wire(value.expose(name))
            except backend.DatabaseOperationalError:
                raise
            except Exception as exception:
                raise _refusal(exception) from exception

    def call(self, number, args, kwargs):
        function = self._object(number, 'function')
        args, kwargs = self._value(args), self._value(kwargs)
        if not isinstance(args, list) or not isinstance(kwargs, dict) or (
                not all(isinstance(k, str) for k in kwargs)):
            raise ValueError("not the arguments of a call")
        with Transaction().set_user(self.author):
            try:
                return self._wire(function(*args, **kwargs))
            except backend.DatabaseOperationalError:
                raise
            except Exception as exception:
                raise _refusal(exception) from exception


def _refusal(exception):
    "The Refusal that tells the box the exception raised by a read or call"
    if isinstance(exception, render_box.Refusal):
        return exception
    if isinstance(exception, sandbox.UnknownName):
        return render_box.Refusal('unknown', str(exception))
    if isinstance(exception, sandbox.TemplateFault):
        return render_box.Refusal('refused', str(exception))
    return render_box.Refusal(
        'error', f"{type(exception).__name__}: {exception}")


class Renderer:
    """Renders the emails of the batches of an activity in a render box

    It reads the records for the author of the templates and tells whether
    the failures of the recipients are the templates' (a fault of the
    activity) or theirs."""

    def __init__(self, activity):
        self.activity = activity
        self.attempts = 0
        self.failures = []
        # Access is checked for the user who last wrote the templates (root,
        # who may read everything, lends the administrator's), in the company
        # of the scenario
        self.author = acting_user(activity.author)
        self.author_context = activity.scenario.author_context(self.author)
        self.settings = settings()
        # the link that only scanners follow, for the event ledger
        self.trap = config.getboolean(
            'marketing', 'event_trap', default=True)

    def fault(self, error):
        "The ActivityFault of the error of the templates"
        return ActivityFault(gettext(
                'marketing_automation.msg_activity_fault_template',
                activity=self.activity.rec_name, error=error))

    def render(self, translated, recipients, language):
        """Render the email of each recipient (with its record) with the
        templates of the translated activity, and yield each recipient with
        its Rendered email or its RenderError, in order

        Raise ActivityFault when the templates are wrong for anyone."""
        server = TemplateServer(self.author)
        with render_box.lease(self.settings) as box:
            try:
                key, paths = box.prepare(
                    translated.email_title, translated.email_template)
            except render_box.Failure as failure:
                raise self.fault(failure) from failure
            except render_box.BoxError as error:
                raise self.fault(error) from error
            accesses = [
                server.access({
                        **r.record.marketing_access_context,
                        **self.author_context})
                for r in recipients]
            # the records of the batch are checked together: one search of
            # the rules for each model and access
            with Transaction().set_user(self.author):
                for access, records in _grouped(
                        accesses, [r.record for r in recipients]):
                    access.readable(records)
            # made as the box takes them: it renders the first ones while
            # the next ones are made
            contexts = (
                server.context(
                    self._values(r, language), access, paths)
                for r, access in zip(recipients, accesses))
            results = box.render(key, contexts, server, trap=self.trap)
            for recipient, (rendered, error) in zip(recipients, results):
                self.attempts += 1
                if error is not None:
                    message, fault = error
                    exception = mailing.RenderError(message, fault=fault)
                    if fault:
                        raise self.fault(exception)
                    self.failures.append(exception)
                    yield recipient, exception
                    continue
                yield recipient, _rendered(rendered)

    def _values(self, recipient, language):
        """The variables of the templates for the recipient:
        Activity.email_context of its marketing record (a record not
        saved for a preview or a test)"""
        Record = Pool().get('marketing.automation.record')
        if recipient.entry.record is not None:
            record = Record(recipient.entry.record, record=recipient.record)
        else:
            record = Record(
                scenario=self.activity.scenario, record=recipient.record,
                uuid=recipient.uuid)
        values = self.activity.email_context(record)
        values.setdefault('language', language)
        return values

    def failed(self, exception):
        """Count the email of a recipient that the templates made unusable
        (too heavy) as a failure of their rendering"""
        self.failures.append(exception)

    def check(self):
        """Raise ActivityFault when the template failed for every recipient
        it was rendered for, and for more than one"""
        if self.failures and len(self.failures) == self.attempts > 1:
            raise self.fault(self.failures[0])


def _grouped(accesses, records):
    "The records of each access, in order"
    groups = {}
    for access, record in zip(accesses, records):
        groups.setdefault(id(access), (access, []))[1].append(record)
    return groups.values()


def _rendered(wire):
    "The Rendered email of what a box sent"
    heaviest = wire.get('heaviest')
    return mailing.Rendered(
        wire['subject'], wire['html'], wire['text'],
        tuple(mailing.Link(kind, url) for kind, url in wire['links']),
        tuple(heaviest) if heaviest else None)
