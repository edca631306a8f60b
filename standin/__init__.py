"""Stand-in Requesty: the documented key-management API as a local HTTP server with faults.

Used in-process by the test-suite and as ``python -m standin`` by sandbox mode and benchmarks.
"""

from standin.server import Call, Fault, StandIn

__all__ = ["Call", "Fault", "StandIn"]
