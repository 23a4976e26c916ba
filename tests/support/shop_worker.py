"""``celery -A tests.support.shop_worker worker``: the sample shop app, configured from the environment."""

import os

from tests.support.shop import build

shop = build(dict(os.environ))
app = shop.app
durable = shop.durable
