// Preload for Node MCP servers that listen on every interface by themselves
// (e.g. @modelcontextprotocol/server-everything, which calls `app.listen(PORT)`).
//
// Usage: PORT=0 node --require tests/peers/loopback.cjs \
//          node_modules/@modelcontextprotocol/server-everything/dist/index.js streamableHttp
//
// * Forces every TCP listen() onto 127.0.0.1 (whatever host, or none, the program asked for).
// * Once the first TCP listener is bound, prints exactly one line `LISTENING <port>` on stdout,
//   with the real port (so PORT=0 gives an ephemeral port the test can read).
"use strict";
const net = require("node:net");

const HOST = "127.0.0.1";
const origListen = net.Server.prototype.listen;
let announced = false;

net.Server.prototype.listen = function patchedListen(...args) {
  // Normalise the forms listen() accepts: (options[, cb]), (port[, host][, backlog][, cb]), (path[, cb]), (handle[, cb]).
  if (args.length > 0 && typeof args[0] === "object" && args[0] !== null && !("_handle" in args[0]) && !("fd" in args[0])) {
    if (args[0].path === undefined) {
      args[0] = { ...args[0], host: HOST };
    }
  } else if (typeof args[0] === "number" || (typeof args[0] === "string" && /^\d+$/.test(args[0]))) {
    const port = Number(args[0]);
    const cb = typeof args[args.length - 1] === "function" ? args[args.length - 1] : undefined;
    args = cb ? [port, HOST, cb] : [port, HOST];
  } else if (args.length === 0 || args[0] === undefined || args[0] === null || typeof args[0] === "function") {
    // listen() / listen(cb): ephemeral port on any interface -> pin it.
    const cb = typeof args[0] === "function" ? args[0] : undefined;
    args = cb ? [0, HOST, cb] : [0, HOST];
  }
  this.once("listening", () => {
    const addr = this.address();
    if (!announced && addr && typeof addr === "object") {
      announced = true;
      process.stdout.write(`LISTENING ${addr.port}\n`);
    }
  });
  return origListen.apply(this, args);
};
