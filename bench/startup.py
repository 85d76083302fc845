"""Start-up and idle memory: the embedded defaults, and a configuration using every backend.

Each repeat starts `python -m sidecar serve` the way a pod does and polls gRPC health until
SERVING (time from the process's start), then lets it idle a few seconds (pools opened,
first health checks done) and reads its resident memory: all of it (VmRSS), and its own
part (RssAnon; the rest is shared library code mapped from files, grpc's core alone
~10 MB, which every process mapping the same files shares). The every-backend configuration
names a service of each kind on this machine's servers (Redis, PostgreSQL, RabbitMQ, NATS,
Mosquitto), an OpenAI and an Anthropic model, S3 and SQS on a local endpoint, Kafka, HTTP,
GraphQL and WebSocket upstreams, and OTLP tracing, so every client library is loaded; the
upstreams that do not run here only fail their health checks.

The sidecar's own modules are compiled to bytecode first, as the image does at build time
(and `make run`): with PYTHONDONTWRITEBYTECODE set, as on this machine, each start would
otherwise compile them again, which would be measured as start-up.

Usage: python -m bench.startup  (BENCH_REPEATS to change the repeats)
"""

from __future__ import annotations

import compileall
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.__main__ import free_port, serve_command
from bench.results import record

REPEATS = int(os.environ.get("BENCH_REPEATS", "3")) + 2
IDLE_SECONDS = 3.0
EVERY_BACKEND = """
server: {access_log: false}
integration:
  tracing: {sampling_ratio: 0.0, otlp: {endpoint: "http://127.0.0.1:4317"}}
connections:
  pg: {type: postgres, dsn: "postgresql://postgres@127.0.0.1:5432/postgres"}
  mq: {type: rabbitmq, url: "amqp://127.0.0.1:5672/", username: guest, password: guest}
  jet: {type: nats, url: "nats://127.0.0.1:4222"}
  devices: {type: mqtt, url: "mqtt://127.0.0.1:1883"}
  events-kafka: {type: kafka, bootstrap_servers: ["127.0.0.1:9092"]}
  account:
    type: aws
    region: us-east-1
    endpoint_url: http://127.0.0.1:5000
    addressing_style: path
services:
  cache: {type: cache}
  redis: {type: cache, backend: redis, host: 127.0.0.1, port: 6379, key_prefix: "bench-startup:"}
  events: {type: pubsub, backend: redis, host: 127.0.0.1, port: 6379}
  orders: {type: sql, connection: pg}
  local: {type: sql}
  mq-topics: {type: pubsub, connection: mq}
  nats-topics: {type: pubsub, connection: jet}
  telemetry: {type: pubsub, connection: devices}
  kafka-topics: {type: pubsub, connection: events-kafka}
  files: {type: cloud, connection: account}
  jobs: {type: queue, backend: sqs, connection: account, queue: bench-jobs}
  gpt: {type: ai_model, provider: openai, endpoint: "http://127.0.0.1:9/v1"}
  claude: {type: ai_model, provider: anthropic, endpoint: "http://127.0.0.1:9"}
  chat: {type: ai_alias, deployments: [gpt/gpt-4o-mini, claude/claude-3-5-haiku-latest]}
  rest: {type: api, base_url: "http://127.0.0.1:9"}
  graph: {type: graphql, endpoint: "http://127.0.0.1:9/graphql"}
  feed: {type: websocket, url: "ws://127.0.0.1:9/feed"}
"""


def _memory_mb(pid: int) -> tuple[float, float]:
    """Resident memory, and the part of it that is the process's own (anonymous, not shared
    library code mapped from files), in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["RssAnon"].split()[0]) / 1024


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=0.2
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def start_once(config: Path | None) -> tuple[float, tuple[float, float]]:
    """Seconds from the process's start to SERVING, and MB resident (all, own) after idling."""
    address = f"127.0.0.1:{free_port()}"
    command = serve_command(config, address)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not _serving(address):
            if process.poll() is not None or time.perf_counter() - started > 30:
                raise RuntimeError(f"the sidecar did not serve ({config or 'defaults'})")
            time.sleep(0.005)
        ready = time.perf_counter() - started
        time.sleep(IDLE_SECONDS)
        return ready, _memory_mb(process.pid)
    finally:
        process.terminate()
        process.wait(10)


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    for package in ("sidecar", "generated"):
        compileall.compile_dir(root / package, quiet=1)
    print(f"\n# start-up to SERVING and idle RSS, {REPEATS} starts each, medians")
    print(
        f"{'config':<28}{'start s':>9}{'range':>13}{'idle RSS MB':>13}{'of it own MB':>14}"
        f"{'target':>18}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        every = Path(tmp) / "every.yaml"
        every.write_text(EVERY_BACKEND)
        cases = (("embedded defaults", None, 0.4, 50), ("every backend", every, None, 120))
        for label, config, start_target, rss_target in cases:
            runs = [start_once(config) for _ in range(REPEATS)]
            seconds = sorted(r for r, _ in runs)
            rss = statistics.median(m for _, (m, _) in runs)
            own = statistics.median(a for _, (_, a) in runs)
            target = f"<= {start_target} s, " if start_target else ""
            print(
                f"{label:<28}{statistics.median(seconds):>9.3f}"
                f"{f'{seconds[0]:.2f}-{seconds[-1]:.2f}':>13}{rss:>13.1f}{own:>14.1f}"
                f"{target + f'<= {rss_target} MB':>18}"
            )
            record(
                "startup",
                label,
                start_s=statistics.median(seconds),
                idle_rss_mb=rss,
                idle_anonymous_mb=own,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
