"""A client process for the fleet tests: one PromptClient that reports presence until stdin closes.

Prints one JSON line when live (``client_id``, ``pid``, ``rev``), then serves until stdin closes (at
most 120 s) and closes the client. Run as
``python -m tests.fleet_client_proc URL NAMESPACE CLIENT_NAME REPORT_INTERVAL``.
"""

from __future__ import annotations

import json
import os
import sys
import threading

from promptreg.client import PromptClient


def main() -> None:
    url, namespace, name, interval = sys.argv[1:5]
    done = threading.Event()

    def wait_for_stdin_to_close() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_stdin_to_close, daemon=True).start()
    with PromptClient(url, namespace=namespace, client_name=name, report_interval=float(interval)) as prompts:
        ready = prompts.wait_ready(20)
        line = {"ready": ready, "client_id": prompts.client_id, "pid": os.getpid(), "rev": prompts.status().rev}
        print(json.dumps(line), flush=True)
        done.wait(120)


if __name__ == "__main__":
    main()
