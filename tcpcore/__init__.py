"""tcpcore: the per-packet hot path (checksums, sequence arithmetic, wire formats, reassembly,
batch I/O), compiled with Cython, each module with a pure-Python twin of identical behaviour.

``tcpcore.IMPLEMENTATION`` says which one is active ("cython" or "python");
``tcpcore.implementation(name)`` returns either one explicitly (tests run against both).
"""

from typing import TYPE_CHECKING

from ._select import MODULES, choose, implementation
from .constants import *  # noqa: F403
from .errors import MalformedPacket, TooManyHoles

IMPLEMENTATION, _active = choose()

if TYPE_CHECKING:
    # The compiled modules' .pyi stubs match their twins, so the twins' signatures stand for both.
    from ._batch_py import *  # noqa: F403
    from ._checksum_py import *  # noqa: F403
    from ._reassembly_py import *  # noqa: F403
    from ._seq_py import *  # noqa: F403
    from ._wire_py import *  # noqa: F403
else:
    globals().update(vars(_active))

__all__ = ["IMPLEMENTATION", "MODULES", "MalformedPacket", "TooManyHoles", "implementation"]
__all__ += [name for name in vars(_active)]
