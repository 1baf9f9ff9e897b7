// A webhook receiver for bench/webhooks.sh: answers every POST 200 after DELAY_MS (5 by
// default), as a real receiver doing a little work would, and counts the distinct
// webhook-ids it got. GET /count answers "<requests> <distinct>". Prints its port.
//
//   node bench/webhook-receiver.mjs            # DELAY_MS=5

import { createServer } from "node:http";

const delay = Number(process.env.DELAY_MS ?? 5);
const seen = new Set();
let requests = 0;

const server = createServer((request, response) => {
  if (request.method === "GET") {
    response.end(`${requests} ${seen.size}\n`);
    return;
  }
  request.resume();
  request.on("end", () => {
    requests += 1;
    seen.add(request.headers["webhook-id"]);
    setTimeout(() => response.end("ok"), delay);
  });
});
server.keepAliveTimeout = 60000;
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
