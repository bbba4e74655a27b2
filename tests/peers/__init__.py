"""Peers the delivery providers talk to, each a real server on 127.0.0.1 in the test process:
an SMTP sink (aiosmtpd), a webhook receiver, Twilio's Messages API, Azure Communication
Services' SMS and email APIs (HTTPS), and the moto server for SES and SNS. Each starts with
``start()`` (or as a context manager), records what it received, and can be told to refuse.
``closed_port()`` gives an address where nothing listens, to test refused connections."""

from peers.certificates import Certificates, make_certificates
from peers.http import HttpPeer, Received, closed_port, free_port

__all__ = [
    "Certificates",
    "HttpPeer",
    "Received",
    "closed_port",
    "free_port",
    "make_certificates",
]
