#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
import configparser
import os

from setuptools import find_packages, setup

MODULE = 'marketing_automation'
PACKAGE = 'trytond.modules.' + MODULE
HERE = os.path.dirname(os.path.abspath(__file__))


def read(*path):
    with open(os.path.join(HERE, *path), encoding='utf-8') as fp:
        return fp.read()


def module_version():
    config = configparser.ConfigParser()
    config.read_string(read(MODULE, 'tryton.cfg'))
    return config.get('tryton', 'version')


def tryton_requirement(name):
    return f'{name} >= 8.0, < 8.3'


setup(
    name='marketing-automation-tryton',
    version=module_version(),
    description="Marketing automation scenarios for Tryton",
    long_description=read('README.rst'),
    long_description_content_type='text/x-rst',
    keywords='tryton marketing automation email scenario',
    license='GPL-3.0-or-later',
    license_files=['LICENSE'],
    package_dir={PACKAGE: MODULE},
    packages=[PACKAGE] + [
        f'{PACKAGE}.{name}' for name in find_packages(MODULE)],
    package_data={
        PACKAGE: [
            'tryton.cfg',
            'tests/tryton.cfg',
            '**/*.xml',
            '**/*.po',
            '**/*.html',
            '**/*.gif',
            '**/*.fodt',
            '**/*.svg',
            ],
        },
    python_requires='>=3.11',
    install_requires=[
        tryton_requirement('trytond'),
        tryton_requirement('trytond_party'),
        tryton_requirement('trytond_marketing'),
        tryton_requirement('trytond_web_shortener'),
        ],
    extras_require={
        'company': [tryton_requirement('trytond_company')],
        'sale': [tryton_requirement('trytond_sale')],
        'mjml': ['mrml'],
        'feedback': ['flufl.bounce >= 4'],
        'test': [
            tryton_requirement('proteus'),
            tryton_requirement('trytond_sale'),
            'aiosmtpd',
            'flufl.bounce >= 4',
            'mrml',
            'psycopg[binary,pool] >= 3',
            ],
        },
    entry_points={
        'trytond.modules': [f'{MODULE} = {PACKAGE}'],
        },
    zip_safe=False,
    classifiers=[
        'Development Status :: 4 - Beta',
        'Environment :: Plugins',
        'Framework :: Tryton',
        'Intended Audience :: Developers',
        'Intended Audience :: Information Technology',
        'Natural Language :: English',
        'Operating System :: OS Independent',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Programming Language :: Python :: 3.13',
        'Programming Language :: Python :: Implementation :: CPython',
        'Topic :: Communications :: Email',
        'Topic :: Office/Business',
        ],
    )
