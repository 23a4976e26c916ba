"""Where the ``durable`` command prints, and how it prints text it did not write.

Results go to stdout, errors to stderr. Text from the journal, from exceptions and from the command line is
never read as rich markup: :func:`literal` turns it into a plain :class:`~rich.text.Text` with control
characters (ANSI escapes among them) and lone surrogates shown as escapes, so ``[/]`` in an error message
cannot crash a listing, ``[postgres]`` stays visible, and ``\\x1b[31m`` cannot recolour the terminal.
"""

from __future__ import annotations

import io
import re
import sys
from typing import TextIO

from rich.console import Console
from rich.text import Text

# Piped output is read by programs and copied by people: no hard wrapping at any realistic width.
# Tables are sized to their content, so this width is a ceiling, never padding.
PIPED_WIDTH = 1_000_000

# C0 controls except newline and tab, DEL, C1 controls, lone surrogates, and the bidi overrides that can
# make a terminal show text in another order than it is stored.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def neutralise(value: object) -> str:
    r"""``value`` as text a terminal shows as is: control characters and lone surrogates become escapes.

    >>> neutralise("\x1b[31mred\udcff")
    '\\x1b[31mred\\udcff'
    """
    return _UNSAFE.sub(_escape, value if isinstance(value, str) else str(value))


def literal(value: object, style: str = "") -> Text:
    """``value`` as rich ``Text`` printed literally: no markup, no ANSI escapes, no lone surrogates."""
    return Text(neutralise(value), style=style)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def make_console(*, stderr: bool = False) -> Console:
    """A console on the current stdout (or stderr): terminal width on a tty, no hard wrapping when piped."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if _is_terminal(stream) else PIPED_WIDTH)


def tolerate_unencodable_output() -> None:
    """Print what the terminal's encoding cannot show as escapes instead of failing with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def say(message: object) -> None:
    """Print one message to stdout, literally, as one line even when long (soft wrap: copyable commands)."""
    make_console().print(literal(message), soft_wrap=True)


def warn_error(message: object) -> None:
    """Print ``error: <message>`` to stderr, the message literally and unwrapped."""
    make_console(stderr=True).print(Text.assemble(("error:", "red"), " ", literal(message)), soft_wrap=True)


def heading(console: Console, title: object) -> None:
    """A section heading ``─── title ───``, the title literal and whole however long (a rule would crop it)."""
    console.print(Text.assemble(("─── ", "dim"), literal(title, "bold"), (" ───", "dim")), soft_wrap=True)
