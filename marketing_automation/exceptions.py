# SPDX-License-Identifier: GPL-3.0-or-later
from trytond.exceptions import UserError
from trytond.model.exceptions import ValidationError


class DomainError(ValidationError):
    pass


class ConditionError(ValidationError):
    pass


class TemplateError(ValidationError, ValueError):
    """A title or a body that is not a valid template: mailing raises it
    with why it cannot be compiled, the activity's validation with the
    message a marketer reads"""

    def __str__(self):
        if self.description:
            return super().__str__()
        return str(self.message)


class ActivityError(ValidationError):
    pass


class ActivityFault(Exception):
    """An error of an activity that is no recipient's: the activity pauses
    and its entries wait, none is consumed"""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class PreviewError(UserError):
    "A preview or a test email that a marketer asked for cannot be done"


class SendWindowError(ValidationError):
    pass
