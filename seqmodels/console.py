"""How every command ends: a user error is one message on stderr and exit 2, Ctrl-C exit
130, so DVC (or a shell) stops without burying the cause in a stack trace."""

from __future__ import annotations

import sys
from collections.abc import Callable

from seqmodels.errors import SeqmodelsError


def guarded(name: str, action: Callable[[], int | None]) -> int:
    """Run `seqmodels NAME`'s action and return its exit code."""
    try:
        return action() or 0
    except SeqmodelsError as error:
        print(f"seqmodels {name}: error: {error.message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"seqmodels {name}: interrupted; published outputs are unchanged", file=sys.stderr)
        return 130
