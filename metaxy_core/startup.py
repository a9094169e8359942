"""Start-up cost of loading our modules: what a program pays before its first line of work.

The ``metaxy`` command runs for about a second at 1M rows, a third of it loading modules, and a Dagster code
location loads the plugin on every (re)load; both are on a user's critical path.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """The cyclic garbage collector paused inside the block (as it was after), for loading our modules.

    Why: importing the package, its CLI or the Dagster plugin creates tens of thousands of objects that live
    as long as the process (modules, classes built by pydantic and dataclasses, polars' and Dagster's Python
    layers), and meanwhile the collector runs full passes over every object there is, finding nothing to
    free (CPython 3.11, A/B of whole imports: the ``metaxy`` CLI's start-up 12-16 ms of CPU less, ``import
    metaxy_dagster`` ~120 ms less). Reference counting frees everything as usual inside the block; only
    cycle detection waits for its end. Threads importing at the same time see the collector paused longer.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        # Everything loaded is moved to the oldest generation (documented: freeze moves every tracked object
        # to the permanent generation, unfreeze puts them back into the oldest one), where a full pass that
        # found them alive would have put them, without traversing them: else the first young pass after the
        # block walks all of them (~20 ms).
        gc.freeze()
        gc.unfreeze()
        if enabled:
            gc.enable()
