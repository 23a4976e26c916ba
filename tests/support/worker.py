"""``celery -A tests.support.worker worker``: the test app, configured from the environment."""

from tests.support.app import build_from_env

test_app = build_from_env()
app = test_app.app
durable = test_app.durable
