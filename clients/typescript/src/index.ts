/**
 * Client of the mcp-relay control plane (gRPC, package `mcprelay.admin.v1`), over Connect's
 * gRPC transport for Node.js. The messages and service descriptors are generated into
 * `src/gen/` by `generate.sh` (protoc-gen-es); this module adds the connection:
 *
 * ```ts
 * import { createAdminClient } from "@mcp-relay/admin-client";
 * const admin = createAdminClient({ address: "127.0.0.1:50051" });
 * const { sessions } = await admin.sessions.listSessions({});
 * for await (const m of admin.metrics.watchMetrics({ interval: { seconds: 1n } })) { ... }
 * ```
 */
import * as net from "node:net";

import { type Client, type Interceptor, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { MetricsService, SessionService, UpstreamService } from "./gen/mcprelay/admin/v1/admin_pb.js";

export * from "./gen/mcprelay/admin/v1/admin_pb.js";

/** Where the control plane listens, and the bearer token it wants (if it has one). */
export type AdminOptions = (
  | { /** `host:port` of a TCP control plane (plaintext; loopback by default). */ address: string }
  | { /** Path of a Unix-socket control plane. */ socketPath: string }
) & {
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
};

/** The control plane's services, on one HTTP/2 connection. */
export interface AdminClient {
  sessions: Client<typeof SessionService>;
  metrics: Client<typeof MetricsService>;
  /** Routes, their endpoints, drains and the endpoint watch. */
  upstreams: Client<typeof UpstreamService>;
}

/** Creates clients of the control plane described by `options`. */
export function createAdminClient(options: AdminOptions): AdminClient {
  const interceptors: Interceptor[] = [];
  const token = options.token;
  if (token) {
    interceptors.push((next) => (request) => {
      request.header.set("authorization", `Bearer ${token}`);
      return next(request);
    });
  }
  const transport =
    "socketPath" in options
      ? createGrpcTransport({
          // Any plain host works as the :authority; the connection goes to the socket.
          baseUrl: "http://localhost",
          interceptors,
          nodeOptions: { createConnection: () => net.connect(options.socketPath) },
        })
      : createGrpcTransport({ baseUrl: `http://${options.address}`, interceptors });
  return {
    sessions: createClient(SessionService, transport),
    metrics: createClient(MetricsService, transport),
    upstreams: createClient(UpstreamService, transport),
  };
}
