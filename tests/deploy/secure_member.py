"""``python -m coord.member_process`` for a cluster with TLS and bearer tokens.

member_process has no credential flags of its own: this gives its Client the CA in
MEMBER_CA and the token in MEMBER_TOKEN, then runs it with the same arguments.
"""

from __future__ import annotations

import functools
import os
import sys

from coord import member_process
from coord.client import Client
from coord.client.credentials import Credentials

if __name__ == "__main__":
    creds = Credentials(token=os.environ["MEMBER_TOKEN"], ca_file=os.environ["MEMBER_CA"])
    member_process.Client = functools.partial(Client, credentials=creds)  # type: ignore[misc]
    sys.exit(member_process.main())
