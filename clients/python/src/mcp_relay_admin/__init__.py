"""Client of the mcp-relay control plane (gRPC, package ``mcprelay.admin.v1``).

The protobuf and gRPC modules are generated into ``mcprelay.admin.v1`` by
``clients/python/generate.sh``; this package adds a connection helper and a small CLI::

    from mcp_relay_admin import connect, pb

    with connect("127.0.0.1:50051") as admin:
        for s in admin.sessions.ListSessions(pb.ListSessionsRequest()).sessions:
            print(s.name, pb.SessionState.Name(s.state))
"""

from mcp_relay_admin.client import AdminClient, connect
from mcprelay.admin.v1 import admin_pb2 as pb

__all__ = ["AdminClient", "connect", "pb"]
