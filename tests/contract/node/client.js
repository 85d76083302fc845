// A Node.js client of the sidecar built from proto/ at run time, as an app in another
// language would use it. Runs one scenario against ADDRESS and prints its findings as JSON.
"use strict";
const path = require("path");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const address = process.argv[2];
const protoRoot = path.resolve(__dirname, "../../../proto");
const definition = loader.loadSync(
  ["integration/v1/cache.proto", "integration/v1/pubsub.proto"],
  { includeDirs: [protoRoot], keepCase: true, longs: String, defaults: true },
);
const v1 = grpc.loadPackageDefinition(definition).integration.v1;
const cache = new v1.CacheService(address, grpc.credentials.createInsecure());
const pubsub = new v1.PubSubService(address, grpc.credentials.createInsecure());

const unary = (client, method, request, metadata = new grpc.Metadata()) =>
  new Promise((resolve, reject) =>
    client[method](request, metadata, (error, reply) => (error ? reject(error) : resolve(reply))),
  );

async function main() {
  const findings = {};
  const set = await unary(cache, "Set", {
    key: "node:1",
    value: Buffer.from("from node"),
    ttl: { seconds: 60 },
  });
  const got = await unary(cache, "Get", { key: "node:1" });
  findings.set_applied = set.applied;
  findings.get = { found: got.found, value: Buffer.from(got.value).toString() };

  try {
    await unary(cache, "Get", { key: "" });
    findings.empty_key = "accepted";
  } catch (error) {
    const details = error.metadata.get("grpc-status-details-bin")[0];
    findings.empty_key = {
      code: error.code,
      has_error_info: Boolean(details && details.includes("INVALID_REQUEST")),
    };
  }

  findings.message = await new Promise((resolve, reject) => {
    const stream = pubsub.Subscribe({ channels: ["node.events"] });
    stream.on("data", (event) => {
      if (event.started) {
        unary(pubsub, "Publish", { channel: "node.events", payload: Buffer.from("hi") }).catch(
          reject,
        );
      } else if (event.message) {
        stream.cancel();
        resolve({ channel: event.message.channel, payload: event.message.payload.toString() });
      }
    });
    stream.on("error", (error) => {
      if (error.code !== grpc.status.CANCELLED) reject(error);
    });
  });
  findings.batch = await new Promise((resolve, reject) => {
    const stream = pubsub.Subscribe({ channels: ["node.batch"], max_batch: 10 });
    const payloads = [];
    stream.on("data", (event) => {
      if (event.started) {
        const messages = ["a", "b", "c"].map((p) => ({
          channel: "node.batch",
          payload: Buffer.from(p),
        }));
        unary(pubsub, "PublishBatch", { messages }).catch(reject);
      } else if (event.batch) {
        payloads.push(...event.batch.messages.map((m) => m.payload.toString()));
        if (payloads.length >= 3) {
          stream.cancel();
          resolve(payloads);
        }
      }
    });
    stream.on("error", (error) => {
      if (error.code !== grpc.status.CANCELLED) reject(error);
    });
  });
  console.log(JSON.stringify(findings));
  cache.close();
  pubsub.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
