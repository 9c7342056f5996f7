"""A client process for the rollout tests: one PromptClient that prints, as one JSON line each, its
state when live and every rollout change it applies, with the variant it serves each of ``KEYS``
keys (a bitmap: 1 = candidate), until stdin closes (at most 120 s). Run as
``python -m tests.rollout_client_proc URL NAMESPACE PROMPT LABEL KEYS``.
"""

from __future__ import annotations

import json
import os
import sys
import threading

from promptreg.client import ChangeEvent, PromptClient


def assignment(client: PromptClient, name: str, label: str, keys: int) -> str:
    """Which of the keys ``user-0`` ... get the candidate, as a hex bitmap (bit i: key i)."""
    split = client._cache.split(name, label)
    if split is None:
        return "0"
    bits = 0
    for i in range(keys):
        if client.get(name, label, key=f"user-{i}") is split.candidate:
            bits |= 1 << i
    return format(bits, "x")


def main() -> None:
    url, namespace, name, label, keys = sys.argv[1:6]
    done = threading.Event()
    lock = threading.Lock()

    def wait_for_stdin_to_close() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_for_stdin_to_close, daemon=True).start()
    with PromptClient(url, namespace=namespace, client_name="rollout-test") as prompts:

        def report(event: ChangeEvent | None) -> None:
            if event is not None and (event.name != name or event.label != label):
                return
            line = {
                "pid": os.getpid(),
                "rev": prompts.status().rev if event is None else event.rev,
                "rollout": prompts.rollouts().get(name, {}).get(label),
                "version": prompts.get(name, label).version if event is None else event.version,
                "bits": assignment(prompts, name, label, int(keys)),
            }
            with lock:
                print(json.dumps(line), flush=True)

        prompts.on_change(report)
        print(json.dumps({"ready": prompts.wait_ready(20), "pid": os.getpid()}), flush=True)
        report(None)
        done.wait(120)


if __name__ == "__main__":
    main()
