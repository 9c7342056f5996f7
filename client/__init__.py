"""promptreg's thin client: prompt labels resolved in-process, kept fresh by push.

::

    from promptreg.client import PromptClient

    prompts = PromptClient("redis://localhost:6379/0", snapshot_path="/var/cache/app/prompts.msgpack")
    text = prompts.render("movie-critic", movie="Alien", criticlevel="harsh")  # no I/O

The public API is exactly ``__all__``; every other module is an implementation detail.
"""

from promptreg.client.cache import ChangeEvent
from promptreg.client.cached_version import CachedVersion
from promptreg.client.prompt_client import PromptClient
from promptreg.client.status import ClientState, ClientStatus, ErrorKind

__all__ = ["CachedVersion", "ChangeEvent", "ClientState", "ClientStatus", "ErrorKind", "PromptClient"]
