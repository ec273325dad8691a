# SPDX-License-Identifier: GPL-3.0-or-later
"""Bring the locale files of the module up to date with its strings

    .venv/bin/python scripts/translations.py [--check] [LANG ...]

The module, with sale, is activated in a throwaway SQLite database, and
trytond's own wizards collect every translatable string (set) and drop those
that are gone (clean); the strings are exported as trytond-admin
--export-translations does, in English, and make the template of every
language.  Loading the languages of every module and running trytond's
update wizard for each would take a quarter of an hour for no gain.
Each file keeps its header and its translations, gains an empty entry for
each new string and loses the strings that are gone.
The entries left to translate are listed: untranslated, fuzzy, or whose
placeholders differ from the source.
The languages are those of the files of the locale directory: a new
language starts as a file with the header of the others.

With --check nothing is written, the obsolete entries are listed too, and
the exit status is 1 when anything is listed.
"""
import argparse
import collections
import copy
import os
import re
import subprocess
import sys
import tempfile

import polib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = 'marketing_automation'
LOCALE = os.path.join(ROOT, MODULE, 'locale')
# the languages are those of the locale files: to add one, create its file
# with the header of the others
LANGUAGES = sorted(
    name[:-len('.po')] for name in os.listdir(LOCALE) if name.endswith('.po'))
DATABASE = 'translations'
PLACEHOLDER = re.compile(r'%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[a-zA-Z%]')


def activate(directory):
    "Create the database in directory with the module and the languages"
    config = os.path.join(directory, 'trytond.conf')
    with open(config, 'w') as fp:
        fp.write(f'[database]\nuri = sqlite://\npath = {directory}\n')
    password = os.path.join(directory, 'password')
    with open(password, 'w') as fp:
        fp.write('admin\n')
    open(os.path.join(directory, f'{DATABASE}.sqlite'), 'w').close()
    admin = os.path.join(os.path.dirname(sys.executable), 'trytond-admin')
    subprocess.run([
            admin, '-c', config, '-d', DATABASE, '-u', MODULE, 'sale',
            '--activate-dependencies'],
        # the admin email is asked on standard input
        input='\n', text=True, check=True, stdout=subprocess.DEVNULL,
        env=dict(os.environ, TRYTONPASSFILE=password))
    return config


def export(config):
    "Return the translatable strings of the module as an empty POFile"
    # trytond.backend reads the configuration when it is first imported
    from trytond import config as trytond_config
    trytond_config.update_etc(config)
    from trytond.ir.translation import TrytonPOFile
    from trytond.pool import Pool
    from trytond.transaction import Transaction

    Pool.start()
    pool = Pool(DATABASE)
    pool.init()
    with Transaction().start(DATABASE, 0):
        Translation = pool.get('ir.translation')
        for name, state in [
                ('ir.translation.set', 'set_'),
                ('ir.translation.clean', 'clean')]:
            Wizard = pool.get(name, type='wizard')
            session_id, _, _ = Wizard.create()
            Wizard.execute(session_id, {}, state)
            Wizard.delete(session_id)
        content = Translation.translation_export('en', MODULE)
    template = polib.pofile(
        content.decode('utf-8'), wrapwidth=78, klass=TrytonPOFile)
    for entry in template:
        entry.msgstr = ''
        if 'fuzzy' in entry.flags:
            entry.flags.remove('fuzzy')
    return template


def merge(current, template):
    """Return the entries of template, those already in current as they are
    there, and the obsolete keys of current"""
    entries = {(e.msgctxt, e.msgid): e for e in current}
    merged = [
        entries.pop((e.msgctxt, e.msgid), None) or copy.copy(e)
        for e in template]
    return merged, sorted(entries)


def placeholders(text):
    return collections.Counter(PLACEHOLDER.findall(text))


def problems(entries):
    for entry in entries:
        key = f'{entry.msgctxt} {entry.msgid!r}'
        if not entry.msgstr:
            yield f'untranslated: {key}'
        elif entry.fuzzy:
            yield f'fuzzy: {key}'
        elif ('python-format' in entry.flags
                and placeholders(entry.msgid) != placeholders(entry.msgstr)):
            yield f'placeholders differ: {key}'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--check', action='store_true',
        help="only list what is missing or wrong, write nothing")
    parser.add_argument(
        'languages', nargs='*', metavar='LANG',
        help="the languages to update or check (default: all)")
    args = parser.parse_args(argv)
    languages = args.languages or LANGUAGES

    with tempfile.TemporaryDirectory(prefix='ma-translations-') as directory:
        template = export(activate(directory))
    failed = False
    for code in languages:
        path = os.path.join(LOCALE, f'{code}.po')
        current = polib.pofile(path, wrapwidth=78, klass=type(template))
        merged, obsolete = merge(current, template)
        added = len(merged) - (len(current) - len(obsolete))
        print(f'{code}: {len(merged)} entries, {added} new, '
            f'{len(obsolete)} obsolete')
        if args.check:
            for msgctxt, msgid in obsolete:
                print(f'  obsolete: {msgctxt} {msgid!r}')
                failed = True
        else:
            current[:] = merged
            current.sort()
            current.save(path)
        for problem in problems(merged):
            print(f'  {problem}')
            failed = True
    return 1 if args.check and failed else 0


if __name__ == '__main__':
    sys.exit(main())
