"""MediaPipe's native log lines, kept off stderr under ``--quiet``.

MediaPipe's C++ side logs through absl straight to file descriptor 2 (the XNNPACK delegate, the feedback manager,
the landmark projection), bypassing Python's ``sys.stderr``. No setting silences them (``GLOG_minloglevel`` and
``TF_CPP_MIN_LOG_LEVEL`` were tried on MediaPipe 0.10.21). ``native_info_filtered`` routes descriptor 2 through a
small filter process for the length of a command, which drops those informational and warning lines and passes
everything else on in order. A process, not a thread: when the command dies at once (a native abort, a crash), the
filter still reads what was written to the end, so the last words of a crash are never lost.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

# absl's "I/W<mmdd> <time> <thread> <file>:<line>] ..." and TensorFlow Lite's and absl's own start-up notices
NATIVE_INFO = (
    rb"^(?:[IW]\d{4} \d+:\d+:\d+\.\d+ +\d+ [\w./-]+:\d+\] "
    rb"|INFO: Created TensorFlow Lite "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called)"
)

# Ctrl-C is the command's to handle: the filter ignores it and reads on to the end of the pipe
_FILTER = r"""
import re, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
drop = re.compile(sys.argv[1].encode("latin-1"))
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    if not drop.match(line):
        out.write(line)
        out.flush()
"""


@contextlib.contextmanager
def native_info_filtered() -> Iterator[None]:
    """Within the block, lines written to descriptor 2 that match ``NATIVE_INFO`` are dropped."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no descriptor 2 (a service, a GUI): nothing to filter
        saved = None
    if saved is None:
        yield
        return
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _FILTER, NATIVE_INFO.decode("latin-1")],
                                stdin=subprocess.PIPE, stdout=saved, stderr=saved)  # fmt: skip
    except OSError:  # no process to spare: the lines stay
        os.close(saved)
        yield
        return
    os.dup2(proc.stdin.fileno(), 2)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        proc.stdin.close()  # the pipe's last write end here: the filter reads to its end and stops
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)  # longer only where a child process of the command still holds the pipe
