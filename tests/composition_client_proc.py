"""A client process for the composition fleet tests: one PromptClient that prints ``{"ready": ...}``
once live, then one JSON line ``{"rev", "texts"}`` after every change it applies (``texts``: what it
serves for each prompt named), and, when stdin closes (at most 120 s), ``{"seen": [...]}``: every
distinct text a lookup of the first prompt returned meanwhile, sampled every millisecond. The
change callbacks run on the feed's thread between two messages, so each line is the state at its rev. Run as
``python -m tests.composition_client_proc URL NAMESPACE LABEL NAME...``.
"""

from __future__ import annotations

import json
import os
import sys
import threading

from promptreg.client import ChangeEvent, PromptClient


def main() -> None:
    url, namespace, label, *names = sys.argv[1:]
    done = threading.Event()
    lock = threading.Lock()

    def wait_for_stdin_to_close() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_stdin_to_close, daemon=True).start()
    with PromptClient(url, namespace=namespace, default_label=label, client_name="composition-test") as prompts:

        def report(event: ChangeEvent | None) -> None:
            texts = {}
            for name in names:
                try:
                    texts[name] = prompts.get(name).prompt_text
                except KeyError as exc:
                    texts[name] = f"error: {exc}"
            line = {"pid": os.getpid(), "rev": prompts.status().rev if event is None else event.rev, "texts": texts}
            with lock:
                print(json.dumps(line), flush=True)

        print(json.dumps({"ready": prompts.wait_ready(20), "pid": os.getpid()}), flush=True)
        prompts.on_change(report)
        report(None)
        seen: set[str] = set()
        first = names[0]
        get = prompts.get
        while not done.wait(0.001) and len(seen) < 10_000:  # sampled, not spinning: ten of these share 2 cores
            for _ in range(50):
                seen.add(get(first).prompt_text)
        with lock:
            print(json.dumps({"seen": sorted(seen)}), flush=True)


if __name__ == "__main__":
    main()
