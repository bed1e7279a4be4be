# The module global coord replaces (coord.raft.syncobj_adapter.install_frame_codec).
from typing import Any

zlib: Any
