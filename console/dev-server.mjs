// A development server for the console, with no dependencies: serves console/public/ at
// /console/ with the same headers as the binary (so CSP mistakes show up here too), read
// from disk on every request (edit, reload, no cargo build), and proxies every other path
// to a running agentassist-hooks (streaming, so the change stream works through it).
//
//   node console/dev-server.mjs --target http://127.0.0.1:8080 [--port 8081]
//
// The tests can use it too (CONSOLE_FROM_SOURCE=1); CI tests the binary's own /console/.

import { readFile } from "node:fs/promises";
import { createServer, request as httpRequest } from "node:http";
import { dirname, extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const PUBLIC = resolve(dirname(fileURLToPath(import.meta.url)), "public");

/** The policy the binary sends (src/routes/console.rs). */
export const CONTENT_SECURITY_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".txt": "text/plain; charset=utf-8",
};

const SECURITY_HEADERS = {
  "content-security-policy": CONTENT_SECURITY_POLICY,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "cache-control": "no-cache",
};

function notFound(response) {
  response.writeHead(404, { "content-type": "application/problem+json", ...SECURITY_HEADERS });
  response.end(JSON.stringify({ type: "/problems/not-found", title: "Not found", status: 404 }));
}

async function serveAsset(path, response) {
  let relative;
  try {
    relative = path === "" ? "index.html" : decodeURIComponent(path);
  } catch {
    return notFound(response);
  }
  const file = normalize(join(PUBLIC, relative));
  const type = TYPES[extname(file)];
  if (!file.startsWith(PUBLIC + sep) || relative.split("/").some((part) => part.startsWith(".")) || !type) {
    return notFound(response);
  }
  try {
    const body = await readFile(file);
    response.writeHead(200, { "content-type": type, ...SECURITY_HEADERS });
    response.end(body);
  } catch {
    notFound(response);
  }
}

function proxy(target, request, response) {
  const upstream = new URL(request.url, target);
  const headers = { ...request.headers, host: upstream.host };
  const outgoing = httpRequest(upstream, { method: request.method, headers }, (answer) => {
    response.writeHead(answer.statusCode ?? 502, answer.headers);
    answer.pipe(response);
  });
  outgoing.on("error", () => {
    if (!response.headersSent) response.writeHead(502, { "content-type": "text/plain" });
    response.end("the service behind the dev server is not answering");
  });
  response.on("close", () => outgoing.destroy());
  request.pipe(outgoing);
}

/** Starts the server; resolves to `{url, close}`. */
export async function startDevServer({ target, port = 0, host = "127.0.0.1" }) {
  const server = createServer((request, response) => {
    const { pathname } = new URL(request.url, "http://dev");
    if (pathname === "/console") {
      response.writeHead(308, { location: "/console/" });
      response.end();
    } else if (pathname.startsWith("/console/")) {
      serveAsset(pathname.slice("/console/".length), response);
    } else {
      proxy(target, request, response);
    }
  });
  await new Promise((ready) => server.listen(port, host, ready));
  const address = server.address();
  return {
    url: `http://${host}:${address.port}`,
    close: () =>
      new Promise((closed) => {
        server.closeAllConnections?.();
        server.close(closed);
      }),
  };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const argument = (name, fallback) => {
    const index = process.argv.indexOf(name);
    return index === -1 ? fallback : process.argv[index + 1];
  };
  const target = argument("--target", "http://127.0.0.1:8080");
  const { url } = await startDevServer({ target, port: Number(argument("--port", "8081")) });
  console.log(`console from source at ${url}/console/ (API proxied to ${target})`);
}
