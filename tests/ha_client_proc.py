"""A client process for the failover tests: ``get()`` in a loop until stdin closes (at most 60 s).

Prints one JSON line: lookups done, lookup errors, and every change of what it served
(``[time.time(), rev, version]``). Run as ``python -m tests.ha_client_proc URL NAMESPACE NAME LABEL``.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from promptreg.client import PromptClient


def main() -> None:
    url, namespace, name, label = sys.argv[1:5]
    done = threading.Event()

    def wait_for_stdin_to_close() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_stdin_to_close, daemon=True).start()
    lookups = errors = 0
    changes: list[list[float]] = []
    last: tuple[int, int] | None = None
    with PromptClient(url, namespace=namespace, start_timeout=10, poll_interval=1.0) as prompts:
        print(json.dumps({"ready": prompts.wait_ready(10)}), flush=True)
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            try:
                version = prompts.get(name, label).version
                lookups += 1
            except Exception:  # counted: the test asserts there are none
                errors += 1
                continue
            seen = (prompts.status().rev, version)
            if seen != last:
                changes.append([time.time(), *seen])
                last = seen
            time.sleep(0.002)
    print(json.dumps({"lookups": lookups, "errors": errors, "changes": changes}), flush=True)


if __name__ == "__main__":
    main()
