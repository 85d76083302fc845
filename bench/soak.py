"""`make soak`: mixed load on every kind of upstream for SOAK_SECONDS (default 600), with a
fault injected at the start of each phase, and what callers and the process saw.

A sidecar process serves a Redis cache and pub/sub, a PostgreSQL database and an AI alias
over two fake OpenAI-compatible upstreams, each reached through its own fault-injecting TCP
proxy (`tests/faultproxy.py`). Callers in this process run Cache.Get/Set, Sql.Query,
Publish (read back by a Subscribe stream) and AI StreamComplete in loops, each call with a
deadline. Every phase (SOAK_PHASE seconds, default 30) starts with one fault on one upstream
(chosen at random, SOAK_SEED) for 5 s, the kinds real networks produce in turn: added
latency, a stall that holds the bytes and then releases them, refused connections, every
connection reset, a slow byte rate. Then it is lifted and the rest of the phase shows the recovery.

Printed: per phase the fault, the calls and the error rate during the fault and in the
phase's last 10 s (after recovery: should be ~0); at the end RSS after warm-up and at the
end (growth must stay under 10%), open file descriptors, and every call that overran its
deadline by more than 50 ms (there must be none). Exits 1 if a bound is broken.

Usage: make soak   (SOAK_SECONDS, SOAK_PHASE, SOAK_SEED)
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the fault proxy and the fake LLM are the tests'

import grpc  # noqa: E402
from ai.fake_llm import FakeLLM  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402

from bench.__main__ import free_port, start  # noqa: E402
from generated.integration.v1 import (  # noqa: E402
    ai_pb2,
    ai_pb2_grpc,
    cache_pb2,
    cache_pb2_grpc,
    pubsub_pb2,
    pubsub_pb2_grpc,
    sql_pb2,
    sql_pb2_grpc,
)

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
PHASE = float(os.environ.get("SOAK_PHASE", "30"))
SEED = int(os.environ.get("SOAK_SEED", "19"))
FAULT_SECONDS = 5.0
OVERRUN = 0.05
REDIS = ("127.0.0.1", 6379)
POSTGRES = ("127.0.0.1", 5432)
API_KEY = "soak-key"
FAULTS = ("latency", "stall", "refused", "reset", "slow")

CONFIG = """
server: {{access_log: false}}
services:
  cache: {{type: cache, backend: redis, host: 127.0.0.1, port: {redis}, key_prefix: "soak:"}}
  events: {{type: pubsub, backend: redis, host: 127.0.0.1, port: {redis}, key_prefix: "soak:"}}
  db: {{type: sql, backend: postgres, dsn: "postgresql://postgres@127.0.0.1:{postgres}/postgres"}}
  primary: {{type: ai_model, provider: openai, endpoint: "http://127.0.0.1:{ai1}/v1",
             auth: {{type: bearer, token: {key}}}, model: fake-model}}
  backup: {{type: ai_model, provider: openai, endpoint: "http://127.0.0.1:{ai2}/v1",
            auth: {{type: bearer, token: {key}}}, model: fake-model}}
  chat: {{type: ai_alias, deployments: [primary, backup]}}
"""


@dataclass
class Call:
    kind: str
    started: float
    ended: float
    code: str
    deadline: float


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)

    async def run(self, kind: str, deadline: float, call: Callable[[], Awaitable[None]]) -> None:
        started = time.monotonic()
        try:
            await call()
            code = "OK"
        except grpc.aio.AioRpcError as error:
            code = error.code().name
        self.calls.append(Call(kind, started, time.monotonic(), code, deadline))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def apply(fault: str, proxy: FaultProxy) -> None:
    """Hold `fault` on `proxy` for FAULT_SECONDS, then lift it."""
    if fault == "latency":
        proxy.latency = 0.2
    elif fault == "stall":
        proxy.paused = True
    elif fault == "refused":
        await proxy.stop_accepting()
        await proxy.cut()
    elif fault == "reset":
        proxy.resetting = True
        await proxy.cut()
    else:
        proxy.rate = 50_000
    await asyncio.sleep(FAULT_SECONDS)
    proxy.latency, proxy.paused, proxy.resetting, proxy.rate = 0.0, False, False, None
    if fault == "refused":
        await proxy.start_accepting()


async def soak() -> int:
    primary = await FakeLLM(api_key=API_KEY).start()
    backup = await FakeLLM(["Backup", "answer."], api_key=API_KEY).start()
    proxies = {
        "redis": FaultProxy(*REDIS),
        "postgres": FaultProxy(*POSTGRES),
        "ai-primary": FaultProxy("127.0.0.1", int(primary.url.rsplit(":", 1)[1])),
        "ai-backup": FaultProxy("127.0.0.1", int(backup.url.rsplit(":", 1)[1])),
    }
    for proxy in proxies.values():
        await proxy.start_accepting()
    address = f"127.0.0.1:{free_port()}"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "soak.yaml"
        config.write_text(
            CONFIG.format(
                redis=proxies["redis"].port,
                postgres=proxies["postgres"].port,
                ai1=proxies["ai-primary"].port,
                ai2=proxies["ai-backup"].port,
                key=API_KEY,
            )
        )
        command = [sys.executable, "-m", "sidecar", "serve", "--config", str(config)]
        sidecar = start("sidecar", [*command, "--listen", address], address)
        try:
            return await _drive(sidecar.process.pid, address, proxies)
        finally:
            sidecar.process.terminate()
            sidecar.process.wait(15)
            for proxy in proxies.values():
                await proxy.close()
            await primary.close()
            await backup.close()


async def _drive(pid: int, address: str, proxies: dict[str, FaultProxy]) -> int:
    recorder = Recorder()
    stop = asyncio.Event()
    received = Counter[str]()
    async with grpc.aio.insecure_channel(address) as channel:
        cache = cache_pb2_grpc.CacheServiceStub(channel)
        sql = sql_pb2_grpc.SqlServiceStub(channel)
        pubsub = pubsub_pb2_grpc.PubSubServiceStub(channel)
        ai = ai_pb2_grpc.AIServiceStub(channel)

        async def loop(kind: str, deadline: float, call: Callable[[], Awaitable[None]]) -> None:
            while not stop.is_set():
                await recorder.run(kind, deadline, call)
                await asyncio.sleep(0.01)

        async def stream_answer() -> None:
            request = ai_pb2.StreamCompleteRequest(
                target="chat", messages=[ai_pb2.ChatMessage(role=ai_pb2.ROLE_USER, content="hi")]
            )
            async for _ in ai.StreamComplete(request, timeout=5.0):
                pass

        async def subscriber() -> None:
            while not stop.is_set():
                try:
                    stream = pubsub.Subscribe(pubsub_pb2.SubscribeRequest(channels=["soak"]))
                    async for event in stream:
                        received[event.WhichOneof("event")] += 1
                        if stop.is_set():
                            stream.cancel()
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.2)

        work = [
            loop("cache.get", 1.0, lambda: cache.Get(cache_pb2.GetRequest(key="k"), timeout=1.0)),
            loop(
                "cache.set",
                1.0,
                lambda: cache.Set(cache_pb2.SetRequest(key="k", value=b"v"), timeout=1.0),
            ),
            loop(
                "sql.query",
                2.0,
                lambda: sql.Query(sql_pb2.QueryRequest(sql="SELECT 1"), timeout=2.0),
            ),
            loop(
                "pubsub.publish",
                1.0,
                lambda: pubsub.Publish(
                    pubsub_pb2.PublishRequest(channel="soak", payload=b"m"), timeout=1.0
                ),
            ),
            loop("ai.stream", 5.0, stream_answer),
            loop("ai.stream", 5.0, stream_answer),
        ]
        tasks = [asyncio.create_task(w) for w in [*work, subscriber()]]
        await asyncio.sleep(5.0)  # warm-up: connections open, pools filled
        warm_rss, warm_fds = rss_mb(pid), fds(pid)
        chooser = random.Random(SEED)
        began = time.monotonic()
        phases: list[tuple[str, str, float]] = []
        while time.monotonic() - began < SECONDS:
            # every kind of fault in turn, each on an upstream chosen at random
            fault, target = FAULTS[len(phases) % len(FAULTS)], chooser.choice(sorted(proxies))
            phase_start = time.monotonic()
            phases.append((fault, target, phase_start))
            await apply(fault, proxies[target])
            await asyncio.sleep(max(PHASE - (time.monotonic() - phase_start), 0.0))
        end_rss, end_fds = rss_mb(pid), fds(pid)
        stop.set()
        await asyncio.wait(tasks, timeout=10)
        for task in tasks:
            task.cancel()
    return _report(recorder, phases, warm_rss, end_rss, warm_fds, end_fds, received)


def _report(
    recorder: Recorder,
    phases: list[tuple[str, str, float]],
    warm_rss: float,
    end_rss: float,
    warm_fds: int,
    end_fds: int,
    received: Counter[str],
) -> int:
    print(
        f"# soak: {SECONDS:g}s, phases of {PHASE:g}s, a {FAULT_SECONDS:g}s fault each (seed {SEED})"
    )
    print(
        f"{'phase':>5} {'fault':>8} {'upstream':>11} {'calls':>7} "
        f"{'err% fault':>11} {'err% last 10s':>14}"
    )
    for index, (fault, target, started) in enumerate(phases):
        end = started + PHASE
        during = [c for c in recorder.calls if started <= c.started < started + FAULT_SECONDS]
        settled = [c for c in recorder.calls if end - 10 <= c.started < end]
        in_phase = [c for c in recorder.calls if started <= c.started < end]

        def rate(calls: list[Call]) -> float:
            return 100 * sum(c.code != "OK" for c in calls) / len(calls) if calls else 0.0

        print(
            f"{index:>5} {fault:>8} {target:>11} {len(in_phase):>7} {rate(during):>10.1f}% "
            f"{rate(settled):>13.1f}%"
        )
    overruns = [c for c in recorder.calls if c.ended - c.started > c.deadline + OVERRUN]
    codes = Counter(c.code for c in recorder.calls)
    growth = (end_rss - warm_rss) / warm_rss * 100
    print(f"calls: {len(recorder.calls)} {dict(codes)}; subscriber events: {dict(received)}")
    print(f"RSS after warm-up {warm_rss:.0f} MB, at the end {end_rss:.0f} MB ({growth:+.1f}%)")
    print(f"open file descriptors: {warm_fds} after warm-up, {end_fds} at the end")
    print(f"calls over their deadline by more than {OVERRUN * 1000:.0f} ms: {len(overruns)}")
    for call in overruns[:20]:
        print(f"  {call.kind}: {call.ended - call.started:.3f}s (deadline {call.deadline:g}s)")
    return 1 if overruns or growth >= 10 else 0


def main() -> int:
    return asyncio.run(soak())


if __name__ == "__main__":
    raise SystemExit(main())
