# SPDX-License-Identifier: GPL-3.0-or-later
from . import routes

__all__ = [routes]
