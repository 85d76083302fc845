"""Rate limiters whose tokens live outside the process (one bucket for a whole deployment).

Each module implements `sidecar.resilience.RateLimiter`; the resilience core never imports
them. `redis.RedisTokenBucket` is built by `sidecar.runtime.integrations` for limits with
`store: redis`.
"""
