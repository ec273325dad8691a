# SPDX-License-Identifier: GPL-3.0-or-later
project = 'Marketing Automation'
root_doc = 'index'
exclude_patterns = ['_build']
html_theme = 'alabaster'
