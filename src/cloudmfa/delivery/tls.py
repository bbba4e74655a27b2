"""The TLS client context of delivery connections: the system's CA certificates, plus those of
``CLOUDMFA_DELIVERY_CA_FILE`` for internal relays and gateways whose certificates a private CA
issued. Verification of the certificate and its host name stays on."""

from __future__ import annotations

import ssl


def client_context(ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context
