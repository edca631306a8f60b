"""Stand-in Requesty: the documented key-management API as a local HTTP server with faults.

Used in-process by the test-suite and as ``python -m standin`` by sandbox mode and benchmarks.
`StandIn` (state.py) is the whole of it; its modules are named for their jobs (see state.py).
"""

from standin.faults import Fault
from standin.protocol import Call, Reply
from standin.state import StandIn

__all__ = ["Call", "Fault", "Reply", "StandIn"]
