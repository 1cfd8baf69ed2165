"""TLS for the HTTP and gRPC listeners: one certificate and key, an optional client CA.

With ``client_ca_file`` set, clients must present a certificate signed by that CA (mutual
TLS). TLS 1.2 is the oldest version accepted on either listener (gRPC's own minimum).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """PEM files: the server's certificate chain and key, and the CA clients must chain to."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @classmethod
    def from_settings(cls, cert_file: Path | None, key_file: Path | None,
                      client_ca_file: Path | None) -> TlsFiles | None:
        """The TLS files to use, ``None`` for plain text; refuses half a configuration."""
        if cert_file is None and key_file is None:
            if client_ca_file is not None:
                raise ConfigError("--tls-client-ca-file needs --tls-cert-file and "
                                  "--tls-key-file (mutual TLS is TLS first)")
            return None
        if cert_file is None or key_file is None:
            raise ConfigError("TLS needs both --tls-cert-file and --tls-key-file")
        for path in (cert_file, key_file, client_ca_file):
            if path is not None and not path.is_file():
                raise ConfigError(f"TLS file {path} does not exist or is not a file")
        return cls(cert_file=cert_file, key_file=key_file, client_ca_file=client_ca_file)

    def ssl_context(self) -> ssl.SSLContext:
        """A server-side context for the HTTP listener."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
            if self.client_ca_file is not None:
                context.load_verify_locations(self.client_ca_file)
                context.verify_mode = ssl.CERT_REQUIRED
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"TLS: cannot use {self.cert_file} / {self.key_file}"
                              f"{' / ' + str(self.client_ca_file) if self.client_ca_file else ''}"
                              f": {exc}") from None
        return context

    def grpc_credentials(self) -> object:
        """``grpc.ServerCredentials`` for the gRPC listener."""
        import grpc

        self.ssl_context()  # the same files, checked the same way, with a clear error
        root = self.client_ca_file.read_bytes() if self.client_ca_file else None
        return grpc.ssl_server_credentials(
            [(self.key_file.read_bytes(), self.cert_file.read_bytes())],
            root_certificates=root, require_client_auth=root is not None)
