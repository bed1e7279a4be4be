"""``coord agent``: a member as a deployable program, one per host.

It keeps a session, registers in its group and campaigns (through the public client
library only: the agent is a client, and never imports server code), and around that:

- ``config``: the YAML file (and flags), checked at load;
- ``roles``: the role endpoints for load balancers (``/master``, ``/standby``,
  ``/health``, ``/role``), as Patroni serves them;
- ``hooks``: ``pre_promote``, ``on_elected``, ``on_demoted``, ``on_lost``;
- ``child``: the command run only while master (``run:``, ``--run-while-master``);
- ``position``: this member's position (``position:``, ``position_file:``), read and
  reported for freshness-aware succession;
- ``agent``: the main loop that ties them together, and its safety rule;
- ``report``: one JSON line per event; ``signals``: SIGTERM and friends.

README "The member agent" shows a configuration; deploy/haproxy/ a load balancer in
front of three agents; deploy/systemd/coord-agent.service a unit (docs/deploy.md).
"""
