"""Inbound concerns applied to every RPC, one concern per module: request id and trace
context, auth, metrics and access log, inbound rate limits, draining, error mapping."""
