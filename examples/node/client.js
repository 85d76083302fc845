// A Node.js app using the integration sidecar: stubs are built at run time from the
// repository's proto/ files with @grpc/proto-loader, and calls go through @grpc/grpc-js.
//
//   npm ci && node client.js               # the sidecar at $INTEGRATION_SIDECAR_ADDRESS
//   node client.js 127.0.0.1:50051         # or an explicit address (unix:/path works too)
//
// It runs against the sidecar's embedded defaults (`integration-sidecar serve` with no
// config): a unary cache call, a streamed AI completion from the `echo` provider, a pub/sub
// subscription, and a deliberate error whose google.rpc.ErrorInfo it decodes.
"use strict";
const path = require("path");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

// Injected pods get INTEGRATION_SIDECAR_ADDRESS; 127.0.0.1:50051 is the sidecar's default.
const address =
  process.argv[2] || process.env.INTEGRATION_SIDECAR_ADDRESS || "127.0.0.1:50051";
const protoRoot = path.resolve(__dirname, "../../proto");

const definition = loader.loadSync(
  ["integration/v1/cache.proto", "integration/v1/ai.proto", "integration/v1/pubsub.proto"],
  { includeDirs: [protoRoot], keepCase: true, longs: String, enums: String, defaults: true },
);
const v1 = grpc.loadPackageDefinition(definition).integration.v1;
const credentials = grpc.credentials.createInsecure(); // the sidecar is in the same pod
const cache = new v1.CacheService(address, credentials);
const ai = new v1.AIService(address, credentials);
const pubsub = new v1.PubSubService(address, credentials);

// A unary call as a promise, with a deadline: always set one.
const call = (client, method, request, seconds = 5) =>
  new Promise((resolve, reject) =>
    client[method](request, { deadline: Date.now() + seconds * 1000 }, (error, reply) =>
      error ? reject(error) : resolve(reply),
    ),
  );

// The sidecar's errors carry a google.rpc.Status in the `grpc-status-details-bin` trailer;
// its details hold a google.rpc.ErrorInfo whose `reason` is one of integration.v1.ErrorReason.
const rpcTypes = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: { nested: { Any: { fields: { type_url: { type: "string", id: 1 }, value: { type: "bytes", id: 2 } } } } },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: "int32", id: 1 },
                message: { type: "string", id: 2 },
                details: { rule: "repeated", type: "google.protobuf.Any", id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: "string", id: 1 },
                domain: { type: "string", id: 2 },
                metadata: { keyType: "string", type: "string", id: 3 },
              },
            },
          },
        },
      },
    },
  },
});
const Status = rpcTypes.lookupType("google.rpc.Status");
const ErrorInfo = rpcTypes.lookupType("google.rpc.ErrorInfo");

function errorInfo(error) {
  const [details] = error.metadata.get("grpc-status-details-bin");
  if (!details) return null;
  const status = Status.decode(details);
  const any = status.details.find((d) => d.type_url.endsWith("/google.rpc.ErrorInfo"));
  return any ? ErrorInfo.toObject(ErrorInfo.decode(any.value)) : null;
}

async function main() {
  // 1. A unary cache call.
  await call(cache, "Set", { key: "example:greeting", value: Buffer.from("hello"), ttl: { seconds: 60 } });
  const got = await call(cache, "Get", { key: "example:greeting" });
  console.log(`cache: found=${got.found} value=${Buffer.from(got.value).toString()}`);

  // 2. A streamed completion: the echo provider streams the last user message back.
  const stream = ai.StreamComplete(
    { target: "echo", messages: [{ role: "ROLE_USER", content: "streamed from the echo provider" }] },
    { deadline: Date.now() + 10000 },
  );
  let text = "";
  for await (const message of stream) {
    text += message.content; // print it as it comes in a real app
    if (message.end) console.log(`ai: finish=${message.end.finish_reason} text=${text}`);
  }

  // 3. A pub/sub subscription: publish once the subscription has started.
  const received = await new Promise((resolve, reject) => {
    const subscription = pubsub.Subscribe({ channels: ["example.events"] });
    subscription.on("data", (event) => {
      if (event.started) {
        call(pubsub, "Publish", { channel: "example.events", payload: Buffer.from("order 42 paid") }).catch(reject);
      } else if (event.message) {
        subscription.cancel();
        resolve(event.message);
      }
    });
    subscription.on("error", (error) => {
      if (error.code !== grpc.status.CANCELLED) reject(error);
    });
  });
  console.log(`pubsub: channel=${received.channel} payload=${received.payload.toString()}`);

  // 4. A deliberate error: an empty cache key is refused with INVALID_ARGUMENT.
  try {
    await call(cache, "Get", { key: "" });
    throw new Error("an empty key was accepted");
  } catch (error) {
    if (error.code === undefined) throw error;
    const info = errorInfo(error);
    console.log(`error: code=${grpc.status[error.code]} reason=${info && info.reason} domain=${info && info.domain}`);
  }
  for (const client of [cache, ai, pubsub]) client.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
