"""The WebSocket capability: bridged sessions to a configured upstream WebSocket
(`upstream`, imported by the registry only when a websocket service is configured, so the
`websockets` library loads only then)."""
