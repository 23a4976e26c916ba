"""The journal store: schema, engines, migrations and queries."""
