"""Running the ``nnkit`` command line in the test process, its output captured."""

import contextlib
import io

from nnkit.cli import main


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``(exit status, stdout, stderr)`` of ``nnkit ARGV...``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as e:
            rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()
