"""``python -m coord.member_process`` for a cluster with TLS and bearer tokens: the CA
from MEMBER_CA becomes ``--cacert``, the token in MEMBER_TOKEN goes to member_process
through COORD_MEMBER_TOKEN (its way of taking a token without a flag)."""

from __future__ import annotations

import os
import sys

from coord import member_process

if __name__ == "__main__":
    os.environ["COORD_MEMBER_TOKEN"] = os.environ["MEMBER_TOKEN"]
    sys.exit(member_process.main([*sys.argv[1:], "--cacert", os.environ["MEMBER_CA"]]))
