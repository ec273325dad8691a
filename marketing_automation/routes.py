# SPDX-License-Identifier: GPL-3.0-or-later
"The routes a recipient's mail client and browser reach."
from trytond.protocols.wrappers import Response
from trytond.tools import file_open
from trytond.wsgi import app

with file_open('marketing_automation/empty.gif', mode='rb') as _file:
    EMPTY_GIF = _file.read()


@app.route('/m/empty.gif', methods={'GET', 'HEAD'})
def empty_gif(request):
    response = Response(EMPTY_GIF, mimetype='image/gif')
    # Every open must reach the server: no cache may keep the image.
    response.headers['Cache-Control'] = (
        'no-store, no-cache, must-revalidate, max-age=0')
    response.headers['Pragma'] = 'no-cache'
    response.headers['Expires'] = '0'
    return response
