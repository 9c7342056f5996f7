"""promptreg's thin client: prompt labels resolved in-process, kept fresh by push.

::

    from client import PromptClient

    prompts = PromptClient("redis://localhost:6379/0", snapshot_path="/var/cache/app/prompts.msgpack")
    text = prompts.render("movie-critic", movie="Alien", criticlevel="harsh")  # no I/O

The public API is exactly ``__all__``; every other module is an implementation detail.
"""

from client.cache import ChangeEvent
from client.prompt_client import PromptClient
from client.status import ClientState, ClientStatus

__all__ = ["ChangeEvent", "ClientState", "ClientStatus", "PromptClient"]
