"""``durable`` options: ``-A`` finds the Durable like ``celery -A`` finds an app; store options go anywhere."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from durable_tasks import Durable
from durable_tasks.cli import main


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A Celery project laid out like ``proj/celery.py`` + ``proj/tasks.py`` (in ``include=``), on sys.path.

    The Durable instance lives in ``tasks.py``, which only ``include=`` imports: ``-A`` must import it.
    ``lonely.py`` is a Celery app without a Durable; ``onlydurable.py`` holds a Durable but no app.
    """
    name = f"proj_{uuid.uuid4().hex[:8]}"
    store = f"sqlite:///{tmp_path / 'project.sqlite3'}"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("from .celery import app as celery_app\n")
    (package / "celery.py").write_text(textwrap.dedent(f"""
        from celery import Celery
        app = Celery({name!r}, broker="memory://", include=[{name + '.tasks'!r}], set_as_current=False)
        """))
    (package / "tasks.py").write_text(textwrap.dedent(f"""
        from durable_tasks import Durable
        from .celery import app
        durable = Durable(app, store={store!r})
        """))
    (package / "lonely.py").write_text("from celery import Celery\napp = Celery('lonely', set_as_current=False)\n")
    (package / "onlydurable.py").write_text("from .tasks import durable as instance\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield {"name": name, "store": store}
    for module in [key for key in sys.modules if key == name or key.startswith(name + ".")]:
        instance = getattr(sys.modules.pop(module), "durable", None)
        if isinstance(instance, Durable):
            instance.close()


@pytest.mark.parametrize("spec", ["{p}", "{p}.celery", "{p}.celery:app", "{p}.celery.app", "{p}.tasks",
                                  "{p}.tasks:durable", "{p}.tasks.durable", "{p}.onlydurable"])
def test_app_option_accepts_what_celery_accepts_and_the_durable_itself(project: dict[str, Any], spec: str) -> None:
    app = spec.format(p=project["name"])
    upgraded = invoke("db", "upgrade", "-A", app)
    assert upgraded.exit_code == 0, upgraded.output
    assert "project.sqlite3" in upgraded.stdout, "the store of the project's Durable, not the default"
    assert invoke("--app", app, "db", "check").exit_code == 0
    assert invoke("-A", app, "runs", "list").exit_code == 0


def test_app_without_a_durable_says_where_to_create_it(project: dict[str, Any]) -> None:
    result = invoke("runs", "list", "-A", f"{project['name']}.lonely")
    assert result.exit_code == 2 and result.stdout == ""
    assert "create durable = Durable(app) in a module the app imports" in result.stderr


@pytest.mark.parametrize(("spec", "says"), [
    ("no_such_module_here", "the module 'no_such_module_here' was not found"),
    ("{p}.celery:nothing", "Cannot load"),
    ("{p}.celery:Celery", "not a Celery app or a Durable instance"),
])
def test_app_that_cannot_be_loaded_is_a_usage_error(project: dict[str, Any], spec: str, says: str) -> None:
    result = invoke("-A", spec.format(p=project["name"]), "runs", "list")
    assert result.exit_code == 2 and says in result.stderr, result.output


def test_app_and_store_together_are_refused(project: dict[str, Any], tmp_path: Path) -> None:
    result = invoke("runs", "list", "-A", project["name"], "--store", f"sqlite:///{tmp_path / 'other.sqlite3'}")
    assert result.exit_code == 2 and "drop --store/--schema" in result.stderr


@pytest.mark.parametrize("args", [
    ["db", "upgrade", "--store", "{url}"],
    ["--store", "{url}", "db", "upgrade"],
    ["db", "--store", "{url}", "upgrade"],
    ["--store", "sqlite:///{tmp}/not-this.sqlite3", "db", "upgrade", "--store", "{url}"],
])
def test_store_option_before_or_after_the_subcommand(tmp_path: Path, args: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'journal.sqlite3'}"
    result = invoke(*[arg.format(url=url, tmp=tmp_path) for arg in args])
    assert result.exit_code == 0, result.output
    assert url in result.stdout
    assert invoke("runs", "list", "--store", url).exit_code == 0
    assert not (tmp_path / "not-this.sqlite3").exists(), "the option nearest the command wins"


def test_store_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'journal.sqlite3'}"
    monkeypatch.setenv("DURABLE_STORE", url)
    assert invoke("db", "upgrade").exit_code == 0
    listed = invoke("runs", "list", "--status", "failed")
    assert listed.exit_code == 0 and "0 run(s)" in listed.stdout


def test_schema_option_after_the_subcommand_reaches_the_store(tmp_path: Path) -> None:
    result = invoke("db", "upgrade", "--store", f"sqlite:///{tmp_path / 'j.sqlite3'}", "--schema", "tenant")
    assert result.exit_code == 1 and "only supported on PostgreSQL" in result.stderr


@pytest.mark.parametrize("command", [["db", "upgrade"], ["db", "check"], ["runs", "list"], ["runs", "show"],
                                     ["runs", "resume"], ["runs", "retry-step"], ["runs", "cancel"],
                                     ["runs", "fork"], ["runs", "prune"], ["runs", "watch"], ["workers"],
                                     ["metrics", "serve"]])
def test_every_command_that_reads_the_store_takes_the_store_options(command: list[str]) -> None:
    shown = invoke(*command, "--help")
    assert shown.exit_code == 0
    assert all(flag in shown.stdout for flag in ("-A, --app APP", "--store URL", "--schema NAME"))


def test_usage_errors_exit_2_on_stderr(tmp_path: Path) -> None:
    result = invoke("runs", "list", "--status", "bogus", "--store", f"sqlite:///{tmp_path / 'j.sqlite3'}")
    assert result.exit_code == 2 and result.stdout == "" and "Invalid value for '--status'" in result.stderr
