"""The listening socket: plaintext or TLS (mutual TLS with a client CA), and the mode and group
of a Unix socket file.

TLS files are read again when they change. Kubernetes rotates a mounted Secret by swapping its
files in place (a new `..data` symlink); gRPC asks `ReloadingCredentials.fetch` for the
certificate configuration at every new TLS handshake, and it answers with new files once
their stamp (inode, mtime, size) differs. Connections already open keep their session; new
ones get the new certificate, without a restart. A half-written pair (the certificate already
new, the key still old) fails to load: the last good one stays in use and the next handshake
tries again. The injector's HTTPS server reloads its certificate on the same stamp rule
(`sidecar.injector.tls`); its server is aiohttp's, so the two share the idea, not code.

Usage:

    address = bind(server, "127.0.0.1:50051", config.server)
"""

from __future__ import annotations

import grp
import logging
import os
import ssl
from pathlib import Path

import grpc

from sidecar.config.server import ListenerTlsConfig, ServerConfig, UnixSocketConfig

__all__ = ["ListenerError", "ReloadingCredentials", "bind"]

_log = logging.getLogger("sidecar.listener")

Stamp = tuple[tuple[int, int, int], ...]
# While grpc creates the socket file, nobody but the owner may connect; the configured mode
# is set right after (see `_bind_unix`).
_PRIVATE_UMASK = 0o177


class ListenerError(Exception):
    """The listener cannot be set up as configured (files, group, address)."""


class ReloadingCredentials:
    """gRPC server credentials whose certificate, key and client CA follow their files.

    Args:
        tls: the `server.tls` settings.

    Raises (at construction):
        ListenerError: the files cannot be read or do not form a certificate and its key.
    """

    def __init__(self, tls: ListenerTlsConfig) -> None:
        self._tls = tls
        self._files = tuple(
            Path(p) for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p is not None
        )
        self.reloads = 0
        try:
            self._stamp = self._read_stamp()
            initial = self._load()
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ListenerError(f"cannot use the TLS files of server.tls: {exc}") from exc
        self.credentials = grpc.dynamic_ssl_server_credentials(
            initial,
            # grpc documents None from the fetcher as "keep the current configuration";
            # its type stubs leave None out.
            self.fetch,  # type: ignore[arg-type]
            require_client_authentication=tls.client_ca_file is not None,
        )

    def _read_stamp(self) -> Stamp:
        stats = [path.stat() for path in self._files]
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def _load(self) -> grpc.ServerCertificateConfiguration:
        contents = self._read_files()
        # gRPC only finds a mismatched pair at the first handshake, and then says little:
        # the ssl module checks the pair now and names the problem. It reads the files
        # itself, so they are read again after: a pair swapped meanwhile is tried later.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._files[0], self._files[1])
        if len(self._files) > 2:
            context.load_verify_locations(self._files[2])
        if self._read_files() != contents:
            raise ValueError("the TLS files changed while being read")
        cert, key, *client_ca = contents
        return grpc.ssl_server_certificate_configuration(
            [(key, cert)], client_ca[0] if client_ca else None
        )

    def _read_files(self) -> list[bytes]:
        return [path.read_bytes() for path in self._files]

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """What gRPC calls at each new handshake (on one of its own threads): a new
        configuration when the files changed and load, else None (keep the current one)."""
        try:
            stamp = self._read_stamp()
        except OSError as exc:
            _log.warning("cannot stat the TLS files, keeping the current certificate: %s", exc)
            return None
        if stamp == self._stamp:
            return None
        try:
            config = self._load()
        except (OSError, ssl.SSLError, ValueError) as exc:
            # The stamp is not taken: the next handshake tries again (the pair may be half
            # written now and whole in a moment).
            _log.warning("cannot load the changed TLS files, keeping the current ones: %s", exc)
            return None
        self._stamp = stamp
        self.reloads += 1
        _log.info("TLS certificate reloaded", extra={"cert_file": str(self._tls.cert_file)})
        return config


def bind(server: grpc.aio.Server, address: str, settings: ServerConfig) -> int:
    """Add the listening port to `server`, with TLS when `settings.tls` is set.

    Returns:
        The port bound (0 for a Unix socket, or when gRPC could not bind).

    Raises:
        ListenerError: TLS files unusable, the socket's group unknown, or the address
            refused by gRPC.
    """
    credentials = ReloadingCredentials(settings.tls).credentials if settings.tls else None
    if address.startswith("unix:"):
        return _bind_unix(server, address, credentials, settings.unix_socket)
    return _add_port(server, address, credentials)


def _add_port(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None
) -> int:
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise ListenerError(f"cannot listen on {address}: {exc}") from exc


def _bind_unix(
    server: grpc.aio.Server,
    address: str,
    credentials: grpc.ServerCredentials | None,
    socket: UnixSocketConfig,
) -> int:
    gid = _group_id(socket.group)
    path = address.removeprefix("unix:")
    # grpc creates the socket file while binding, with the mode the umask leaves: set it so
    # no one else can connect in the moment before the configured mode is applied. The
    # umask is process-wide; start-up runs before anything else creates files.
    previous = os.umask(_PRIVATE_UMASK)
    try:
        port = _add_port(server, address, credentials)
    finally:
        os.umask(previous)
    try:
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, socket.mode)
    except OSError as exc:
        raise ListenerError(f"cannot set the mode or group of {path}: {exc}") from exc
    return port


def _group_id(group: str | int | None) -> int | None:
    if group is None or isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ListenerError(
            f"server.unix_socket.group: no group named {group!r} on this system"
        ) from None
