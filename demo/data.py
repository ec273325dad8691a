#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fill the demonstration database: parties and a running "Welcome" scenario.

    python demo/data.py CONFIG DATABASE

The scenario "Welcome" sends a welcome email to every party, then
"Thanks for your click" to those who click one of its links and "Reminder"
to those who have not opened it two minutes later.  The texts have a French
translation, which the French-speaking parties receive.
The scheduled actions of the module are set to run every minute."""
import argparse
import datetime
import sys

# In English; the French parties are marked with "fr".  One party has no
# email address, to show how the scenario reports it.
PARTIES = [
    ("Alice Johnson", "alice.johnson@example.com", None),
    ("Benjamin Carter", "ben.carter@example.org", None),
    ("Chloé Martin", "chloe.martin@example.fr", 'fr'),
    ("Daniel Kim", "daniel.kim@example.com", None),
    ("Élodie Bernard", "elodie.bernard@example.fr", 'fr'),
    ("Fatima Zahra Idrissi", "fatima.idrissi@example.org", 'fr'),
    ("George Wilson", "george.wilson@example.com", None),
    ("Hannah Schmidt", "hannah.schmidt@example.net", None),
    ("Hugo Lefèvre", "hugo.lefevre@example.fr", 'fr'),
    ("Isabel García", "isabel.garcia@example.com", None),
    ("Jack Thompson", "jack.thompson@example.co.uk", None),
    ("Julien Moreau", "julien.moreau@example.fr", 'fr'),
    ("Karen O'Brien", "karen.obrien@example.ie", None),
    ("Léa Dubois", "lea.dubois@example.fr", 'fr'),
    ("Liam Murphy", "liam.murphy@example.com", None),
    ("Manon Petit", "manon.petit@example.be", 'fr'),
    ("Mohammed Al-Sayed", "m.alsayed@example.com", None),
    ("Nathalie Roux", "nathalie.roux@example.ch", 'fr'),
    ("Oliver Brown", "oliver.brown@example.com", None),
    ("Priya Patel", "priya.patel@example.in", None),
    ("Quentin Fournier", "quentin.fournier@example.fr", 'fr'),
    ("Rachel Green", "rachel.green@example.com", None),
    ("Samuel Nguyen", "samuel.nguyen@example.com", None),
    ("Sophie Laurent", "sophie.laurent@example.fr", 'fr'),
    ("Thomas Müller", "thomas.mueller@bücher.example", None),
    ("Uma Raman", "uma.raman@example.com", None),
    ("Victor Girard", "victor.girard@example.ca", 'fr'),
    ("Wendy Clarke", "wendy.clarke@example.com", None),
    ("Yuki Tanaka", "yuki.tanaka@example.jp", None),
    ("Zoe Adams", None, None),
    ]

STYLE = (
    'font-family: Helvetica, Arial, sans-serif; font-size: 15px; '
    'line-height: 1.5; color: #222; max-width: 560px; margin: 0 auto;')
SMALL = 'font-size: 12px; color: #777;'

WELCOME_TITLE = {
    'en': "Welcome to Demo Shop, ${record.rec_name}",
    'fr': "Bienvenue chez Demo Shop, ${record.rec_name}",
    }
WELCOME = {
    'en': f'''\
<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml"
    xmlns:py="http://genshi.edgewall.org/" lang="en">
<head><title>Welcome to Demo Shop</title></head>
<body>
<div style="{STYLE}">
<h1 style="font-size: 22px;">Welcome, ${{record.rec_name}}!</h1>
<p>Thank you for joining Demo Shop.
Here are three favourites of our customers this month:</p>
<ul>
<li><a href="https://example.com/shop/coffee-beans">Single-origin coffee
beans</a>, roasted every Monday</li>
<li><a href="https://example.com/shop/teapot">The cast-iron teapot</a>
that keeps your tea hot for an hour</li>
<li><a href="https://example.com/shop/gift-box">The tasting gift box</a>,
twelve teas from six countries</li>
</ul>
<p>See you soon,<br/>The Demo Shop team</p>
<p style="{SMALL}">You receive this email because you are a customer of
Demo Shop. <a href="unsubscribe">Unsubscribe</a></p>
</div>
</body>
</html>
''',
    'fr': f'''\
<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml"
    xmlns:py="http://genshi.edgewall.org/" lang="fr">
<head><title>Bienvenue chez Demo Shop</title></head>
<body>
<div style="{STYLE}">
<h1 style="font-size: 22px;">Bienvenue, ${{record.rec_name}} !</h1>
<p>Merci d'avoir rejoint Demo Shop.
Voici trois coups de cœur de nos clients ce mois-ci :</p>
<ul>
<li><a href="https://example.com/fr/boutique/cafe">Le café d'origine
unique</a>, torréfié chaque lundi</li>
<li><a href="https://example.com/fr/boutique/theiere">La théière en
fonte</a> qui garde votre thé chaud pendant une heure</li>
<li><a href="https://example.com/fr/boutique/coffret">Le coffret
dégustation</a>, douze thés de six pays</li>
</ul>
<p>À bientôt,<br/>L'équipe Demo Shop</p>
<p style="{SMALL}">Vous recevez cet email parce que vous êtes client de
Demo Shop. <a href="unsubscribe">Se désabonner</a></p>
</div>
</body>
</html>
''',
    }

THANKS_TITLE = {
    'en': "Thanks for your visit, ${record.rec_name}",
    'fr': "Merci de votre visite, ${record.rec_name}",
    }
THANKS = {
    'en': f'''\
<div style="{STYLE}">
<p>Hello ${{record.rec_name}},</p>
<p>Thanks for having a look at our shop.
Here is 10% off your first order, with the code <b>WELCOME10</b>:
<a href="https://example.com/shop?code=WELCOME10">use it now</a>.</p>
<p>The Demo Shop team</p>
<p style="{SMALL}"><a href="unsubscribe">Unsubscribe</a></p>
</div>
''',
    'fr': f'''\
<div style="{STYLE}">
<p>Bonjour ${{record.rec_name}},</p>
<p>Merci d'avoir visité notre boutique.
Voici 10 % de remise sur votre première commande avec le code
<b>WELCOME10</b> :
<a href="https://example.com/fr/boutique?code=WELCOME10">j'en profite</a>.</p>
<p>L'équipe Demo Shop</p>
<p style="{SMALL}"><a href="unsubscribe">Se désabonner</a></p>
</div>
''',
    }

REMINDER_TITLE = {
    'en': "Did you see our welcome gift, ${record.rec_name}?",
    'fr': "Avez-vous vu notre cadeau de bienvenue, ${record.rec_name} ?",
    }
REMINDER = {
    'en': f'''\
<div style="{STYLE}">
<p>Hello ${{record.rec_name}},</p>
<p>We sent you a welcome email a little while ago.
In case you missed it, our
<a href="https://example.com/shop/gift-box">tasting gift box</a>
is waiting for you.</p>
<p>The Demo Shop team</p>
<p style="{SMALL}"><a href="unsubscribe">Unsubscribe</a></p>
</div>
''',
    'fr': f'''\
<div style="{STYLE}">
<p>Bonjour ${{record.rec_name}},</p>
<p>Nous vous avons envoyé un email de bienvenue il y a peu.
Au cas où vous l'auriez manqué, notre
<a href="https://example.com/fr/boutique/coffret">coffret dégustation</a>
vous attend.</p>
<p>L'équipe Demo Shop</p>
<p style="{SMALL}"><a href="unsubscribe">Se désabonner</a></p>
</div>
''',
    }

NAMES = {
    'scenario': {'en': "Welcome", 'fr': "Bienvenue"},
    'welcome': {'en': "Welcome email", 'fr': "Email de bienvenue"},
    'thanks': {'en': "Thanks for your click", 'fr': "Merci pour votre clic"},
    'reminder': {'en': "Reminder", 'fr': "Relance"},
    }
REMINDER_DELAY = datetime.timedelta(minutes=2)


def email_activity(key, title, template, **values):
    return dict(
        name=NAMES[key]['en'], action='send_email',
        email_title=title['en'], email_template=template['en'], **values)


def translate(record, language, **values):
    "Write the translation of the fields of record in language"
    from trytond.transaction import Transaction
    with Transaction().set_context(language=language):
        record.__class__.write([record], values)


def create():
    from trytond.pool import Pool
    from trytond.transaction import Transaction

    pool = Pool()
    User = pool.get('res.user')
    Lang = pool.get('ir.lang')
    Party = pool.get('party.party')
    Scenario = pool.get('marketing.automation.scenario')
    Cron = pool.get('ir.cron')
    ConfigWizardItem = pool.get('ir.module.config_wizard.item')

    admin, = User.search([('login', '=', 'admin')])
    langs = {l.code: l for l in Lang.search([('code', 'in', ['en', 'fr'])])}
    with Transaction().set_user(admin.id), \
            Transaction().set_context(language='en'):
        Party.create([{
                    'name': name,
                    'lang': langs[lang or 'en'].id,
                    'contact_mechanisms': [('create', [{
                                    'type': 'email',
                                    'value': address,
                                    }])] if address else [],
                    } for name, address, lang in PARTIES])

        scenario, = Scenario.create([{
                    'name': NAMES['scenario']['en'],
                    'model': 'party.party',
                    'domain': '[]',
                    'activities': [('create', [email_activity(
                                    'welcome', WELCOME_TITLE, WELCOME,
                                    children=[('create', [
                                            email_activity(
                                                'thanks', THANKS_TITLE,
                                                THANKS,
                                                event='email_clicked'),
                                            email_activity(
                                                'reminder', REMINDER_TITLE,
                                                REMINDER,
                                                event='email_opened',
                                                negative=True,
                                                delay=REMINDER_DELAY),
                                            ])])])],
                    }])
        translate(scenario, 'fr', name=NAMES['scenario']['fr'])
        welcome, = scenario.activities
        texts = {
            'welcome': (WELCOME_TITLE, WELCOME),
            'thanks': (THANKS_TITLE, THANKS),
            'reminder': (REMINDER_TITLE, REMINDER),
            }
        keys = {NAMES[k]['en']: k for k in texts}
        for activity in [welcome] + list(welcome.children):
            key = keys[activity.name]
            title, template = texts[key]
            translate(
                activity, 'fr', name=NAMES[key]['fr'],
                email_title=title['fr'], email_template=template['fr'])
        Scenario.run([scenario])

    # The module's scheduled actions run every hour and every 15 minutes;
    # the demonstration wants them every minute (trytond-cron's pace).
    crons = Cron.search([('method', 'in', [
                    'marketing.automation.scenario|trigger',
                    'marketing.automation.record.activity|process',
                    ])])
    Cron.write(crons, {
            'interval_number': 1,
            'interval_type': 'minutes',
            'next_call': None,
            })
    # Tryton's wizards of module configuration would open at the first
    # login of admin: the demonstration needs none of them
    ConfigWizardItem.write(
        ConfigWizardItem.search([('state', '=', 'open')]), {'state': 'done'})

    with_email = sum(1 for p in PARTIES if p[1])
    print('%s parties (%s with an email address, %s in French), '
        'scenario "%s" running with %s activities' % (
            len(PARTIES), with_email, sum(1 for p in PARTIES if p[2]),
            scenario.name, 1 + len(welcome.children)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('database')
    args = parser.parse_args(argv)

    from trytond.config import update_etc
    update_etc(args.config)
    from trytond.pool import Pool
    from trytond.transaction import Transaction
    Pool.start()
    with Transaction().start(args.database, 0, readonly=True):
        Pool(args.database).init()
    with Transaction().start(args.database, 0):
        create()


if __name__ == '__main__':
    sys.exit(main())
