"""``durable -A APP``: find the :class:`~durable_tasks.Durable` instance the way ``celery -A`` finds an app.

``APP`` is what ``celery -A`` accepts (``proj``, ``proj.tasks``, ``proj.tasks:app``, ``proj.tasks.app``;
a module's ``app`` or ``celery`` attribute, a package's ``celery`` submodule, or any Celery app in the
module), or names the ``Durable`` instance itself (``proj.tasks:durable``).
"""

from __future__ import annotations

import traceback
from types import ModuleType
from typing import Any

import click
from celery import Celery
from celery.app.utils import find_app
from celery.utils.imports import import_from_cwd

from durable_tasks import Durable

APP_OPTION_HINT = "'-A' / '--app'"


def load_durable(spec: str) -> Durable:
    """The ``Durable`` instance named by ``spec`` (``celery -A`` syntax, or the instance itself).

    From a Celery app it takes the instance that ``Durable(app)`` attached to the app, importing the app's
    ``include``/``imports`` modules first when the instance lives in one of them. Raises
    :class:`click.BadParameter` (exit status 2) saying what to change when nothing fits::

        load_durable("proj")               # proj.app, proj.celery, or proj/celery.py's app
        load_durable("proj.tasks:durable")  # the instance itself
    """
    target = _import_target(spec)
    if isinstance(target, Durable):
        return target
    if isinstance(target, Celery):
        return _durable_of(target, spec)
    raise click.BadParameter(
        f"{spec!r} is {_describe(target)}, not a Celery app or a Durable instance. Name your Celery app "
        "(proj, proj.celery:app) or your Durable instance (proj.tasks:durable).", param_hint=APP_OPTION_HINT)


def _import_target(spec: str) -> Any:
    try:
        return find_app(spec)
    except ModuleNotFoundError as exc:
        module = spec.partition(":")[0]
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            raise click.BadParameter(
                f"Cannot load {spec!r}: the module {exc.name!r} was not found. Run durable from the directory "
                "that contains your project, or put it on PYTHONPATH.", param_hint=APP_OPTION_HINT) from None
        raise _import_failed(spec) from exc
    except AttributeError:
        # Not a Celery app in sight: a module that only holds a Durable instance (proj.tasks with `durable`).
        found = _durable_in_module(spec)
        if found is None:
            raise click.BadParameter(
                f"{spec!r} holds no Celery app and no Durable instance. Name one, e.g. -A proj.celery:app or "
                "-A proj.tasks:durable.", param_hint=APP_OPTION_HINT) from None
        return found
    except Exception as exc:
        raise _import_failed(spec) from exc


def _import_failed(spec: str) -> click.BadParameter:
    return click.BadParameter(
        f"Cannot load {spec!r}: importing it raised an error.\n{traceback.format_exc()}",
        param_hint=APP_OPTION_HINT)


def _durable_in_module(spec: str) -> Durable | None:
    if ":" in spec:
        return None  # an attribute was named and it is missing: never substitute another object
    try:
        module = import_from_cwd(spec)
    except ImportError:
        return None
    named = getattr(module, "durable", None)
    if isinstance(named, Durable):
        return named
    return next((value for value in vars(module).values() if isinstance(value, Durable)), None)


def _durable_of(app: Celery, spec: str) -> Durable:
    durable = getattr(app, "_durable", None)
    if durable is None:
        # The instance may live in a module the app imports only when a worker starts (include=, imports=).
        app.loader.import_default_modules()
        durable = getattr(app, "_durable", None)
    if not isinstance(durable, Durable):
        raise click.BadParameter(
            f"The Celery app {app.main!r} ({spec}) has no Durable instance: create durable = Durable(app) in "
            "a module the app imports (the app's own module, or one listed in its include= or imports=).",
            param_hint=APP_OPTION_HINT)
    return durable


def _describe(value: Any) -> str:
    if isinstance(value, ModuleType):
        return f"the module {value.__name__}"
    return f"a {type(value).__module__}.{type(value).__qualname__}"
