# SPDX-License-Identifier: GPL-3.0-or-later
"""When an email may leave: send windows and frequency caps, as pure
functions of times, free of the database.

A send window is a set of days of the week and the hours of those days, on
the wall clock of a time zone; a frequency cap is a number of emails per
rolling period.  The moments given to these functions and returned by them
are naive datetimes in UTC, as the engine keeps them; the wall clock of a
time zone is a naive datetime too.
"""
import datetime
import functools
import re
import zoneinfo
from collections import namedtuple

UTC = datetime.timezone.utc
DAYS = (
    'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday',
    'sunday')
SECOND = datetime.timedelta(seconds=1)
PERIOD_UNITS = {
    'minute': 60,
    'hour': 60 * 60,
    'day': 24 * 60 * 60,
    'week': 7 * 24 * 60 * 60,
    }

Window = namedtuple('Window', ['days', 'start', 'end'])
Window.__doc__ = """The days of the week on which a send window opens (0 for
Monday), the time it opens and the time it closes, None for the midnight
that ends the day; a window that closes before it opens closes the next
day"""
Cap = namedtuple('Cap', ['limit', 'period'])
Cap.__doc__ = """At most limit emails to a recipient in any period (a
timedelta) that ends now"""


class WindowError(ValueError):
    "A window in which no email could leave: problem is no_day or no_hour"

    def __init__(self, problem):
        super().__init__(problem)
        self.problem = problem


class CapError(ValueError):
    """A rule that is no frequency cap: problem is malformed, limit (no
    email allowed) or period (none or negative)"""

    def __init__(self, problem, rule):
        super().__init__(problem, rule)
        self.problem = problem
        self.rule = rule


@functools.cache
def _timezone_names():
    return frozenset(zoneinfo.available_timezones())


def timezones():
    "The names of the time zones that the system knows, sorted"
    return sorted(_timezone_names())


def timezone(name):
    "The time zone of name, None when the system does not know it"
    if name not in _timezone_names():
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


def window(days, start=None, end=None):
    """The Window open on days (names of DAYS) from start to end (times,
    None for midnight), or WindowError when no email could leave in it

    A window that closes at midnight, or at the time it opens, on the next
    day is written with the time it closes before the time it opens."""
    if not days:
        raise WindowError('no_day')
    start = start or datetime.time()
    if end == datetime.time():
        end = None
    if end is not None and end == start:
        raise WindowError('no_hour')
    return Window(frozenset(DAYS.index(d) for d in days), start, end)


def wall_clock(moment, tz):
    "What the wall clock of tz reads at moment"
    return moment.replace(tzinfo=UTC).astimezone(tz).replace(tzinfo=None)


def _moment(wall, tz):
    return wall.replace(tzinfo=tz).astimezone(UTC).replace(tzinfo=None)


def is_open(window, wall):
    "Whether the window is open when the wall clock reads wall"
    day, time = wall.weekday(), wall.time()
    start, end = window.start, window.end
    if end is None or end > start:
        return (day in window.days and time >= start
            and (end is None or time < end))
    # across midnight: the evening of a day of the window, or the morning
    # after it
    return ((day in window.days and time >= start)
        or ((day - 1) % 7 in window.days and time < end))


def first_moment(wall, tz):
    """The first moment at which the wall clock of tz reads wall or later

    wall.fold chooses between the two moments of a time that the change
    back to winter time shows twice; a time that the change to summer time
    skips is reached when the clock jumps past it."""
    moment = _moment(wall, tz)
    if wall_clock(moment, tz) == wall.replace(fold=0):
        return moment
    # In a gap the first fold reads the time with the offset before the
    # jump, a moment after it, and the second fold a moment before it.
    before, after = _moment(wall.replace(fold=1), tz), _moment(
        wall.replace(fold=0), tz)
    while after - before > SECOND:
        middle = before + (after - before) // 2
        middle = middle.replace(microsecond=0)
        if wall_clock(middle, tz) >= wall.replace(fold=0):
            after = middle
        else:
            before = middle
    return after


def next_opening(window, tz, now):
    "The first moment after now at which the window is open in tz"
    today = wall_clock(now, tz).date()
    openings = []
    # the day before may open a window across midnight, and a week and a
    # day ahead holds an opening of every day of the window
    for offset in range(-1, 9):
        date = today + datetime.timedelta(days=offset)
        if date.weekday() not in window.days:
            continue
        wall = datetime.datetime.combine(date, window.start)
        for fold in (0, 1):
            moment = first_moment(wall.replace(fold=fold), tz)
            if moment > now and is_open(window, wall_clock(moment, tz)):
                openings.append(moment)
    return min(openings)


def parse_caps(text):
    """The Caps of the rules of text, separated by commas: a number of
    emails, a slash and a period such as "day", "2 days" or "12 hours"
    (minute, hour, day, week); CapError for a rule that is not one"""
    caps = []
    for rule in (r.strip() for r in (text or '').split(',')):
        if not rule:
            continue
        match = re.fullmatch(
            r'(-?\d+)\s*/\s*(-?\d+)?\s*([a-z]+?)s?', rule.lower())
        if not match or match.group(3) not in PERIOD_UNITS:
            raise CapError('malformed', rule)
        limit, count, unit = match.groups()
        if int(limit) < 1:
            raise CapError('limit', rule)
        count = int(count) if count is not None else 1
        if count < 1:
            raise CapError('period', rule)
        caps.append(Cap(int(limit), datetime.timedelta(
                    seconds=count * PERIOD_UNITS[unit])))
    return caps


def longest_period(caps):
    "How far back the caps look"
    return max((c.period for c in caps), default=datetime.timedelta())


def first_fit(caps, sent, now):
    """The first moment, now or later, at which one more email fits every
    cap, the emails already sent having left at the moments of sent (those
    on their way count as sent now)"""
    fit = now
    for limit, period in caps:
        inside = sorted(m for m in sent if m > now - period)
        if len(inside) >= limit:
            # the oldest emails must leave the period until one less than
            # the limit is left
            fit = max(fit, inside[len(inside) - limit] + period)
    return fit


def share(caps, sent, now, count):
    """How many of count emails waiting for one recipient fit now, and the
    first moment at which the next one fits (None when they all fit)"""
    sent = list(sent)
    for going in range(count):
        fit = first_fit(caps, sent, now)
        if fit > now:
            return going, fit
        sent.append(now)
    return count, None
