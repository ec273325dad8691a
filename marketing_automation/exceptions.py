# SPDX-License-Identifier: GPL-3.0-or-later
from trytond.model.exceptions import ValidationError


class DomainError(ValidationError):
    pass


class ConditionError(ValidationError):
    pass


class TemplateError(ValidationError):
    pass


class ActivityError(ValidationError):
    pass
