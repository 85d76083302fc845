"""The webhook's serving certificate, reloaded when its files change.

cert-manager and Helm rotate the Secret behind the mounted files; kubelet swaps the files in
place (a new `..data` symlink). The injector notices on its next check and serves the new
certificate from the next TLS handshake on, without a restart. A half-written pair (the
certificate already new, the key still old) fails to load: the old certificate stays in use,
and the next change is tried again.

The swap is atomic because every handshake picks its context in the SNI callback (called once
per connection, with or without a server name) from `current`, a context that is only ever
replaced whole, never modified.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from pathlib import Path

__all__ = ["ReloadingCertificate"]

_log = logging.getLogger("sidecar.injector.tls")

Stamp = tuple[tuple[int, int, int], ...]


class ReloadingCertificate:
    """A server SSLContext whose certificate follows `cert_file` and `key_file`.

    Raises (at construction):
        OSError, ssl.SSLError: the files are missing or do not form a certificate and key.
    """

    def __init__(self, cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]):
        self._files = (Path(cert_file), Path(key_file))
        self._stamp = self._read_stamp()
        self.current = self._load()
        self.context = self._load()
        """What the server is given; its SNI callback hands each handshake `current`."""
        self.context.sni_callback = self._pick
        self.reloads = 0

    def _read_stamp(self) -> Stamp:
        stats = [path.stat() for path in self._files]
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def _load(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(*self._files)
        return context

    def _pick(self, connection: ssl.SSLObject, _name: str | None, _context: ssl.SSLContext) -> None:
        connection.context = self.current

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed since the last look; True if now serving new."""
        try:
            stamp = self._read_stamp()
        except OSError as exc:
            _log.warning("cannot stat the TLS files, keeping the current certificate: %s", exc)
            return False
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            context = self._load()
        except (OSError, ssl.SSLError) as exc:
            _log.warning("cannot load the changed TLS files, keeping the current one: %s", exc)
            return False
        self.current = context
        self.reloads += 1
        _log.info("TLS certificate reloaded from %s", self._files[0])
        return True

    async def watch(self, interval: float) -> None:
        """Check the files every `interval` seconds, forever (cancel to stop)."""
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.reload_if_changed)
