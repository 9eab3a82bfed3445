"""MediaPipe's native log lines, kept off stderr under ``--quiet``.

MediaPipe's C++ side logs through absl straight to file descriptor 2 (the XNNPACK delegate, the feedback manager,
the landmark projection), bypassing Python's ``sys.stderr``. No setting silences them (``GLOG_minloglevel`` and
``TF_CPP_MIN_LOG_LEVEL`` were tried on MediaPipe 0.10.21). ``native_info_filtered`` routes descriptor 2 through a
pipe for the length of a command and drops those informational and warning lines; everything else, native errors
included, goes through in order.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

# absl's "I/W<mmdd> <time> <thread> <file>:<line>] ..." and TensorFlow Lite's and absl's own start-up notices
NATIVE_INFO = re.compile(
    rb"^(?:[IW]\d{4} \d+:\d+:\d+\.\d+ +\d+ [\w./-]+:\d+\] "
    rb"|INFO: Created TensorFlow Lite "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called)"
)


@contextlib.contextmanager
def native_info_filtered() -> Iterator[None]:
    """Within the block, lines written to descriptor 2 that match ``NATIVE_INFO`` are dropped."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no descriptor 2 (a service, a GUI): nothing to filter
        yield
        return
    read_end, write_end = os.pipe()

    def pump() -> None:
        with os.fdopen(read_end, "rb") as source:
            for line in source:
                if not NATIVE_INFO.match(line):
                    with contextlib.suppress(OSError):
                        os.write(saved, line)

    thread = threading.Thread(target=pump, name="bgfs-native-logs", daemon=True)
    thread.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump reads to its end and stops
        thread.join(timeout=5)
        if not thread.is_alive():  # else a child process still holds the pipe: the pump keeps its descriptor
            os.close(saved)
