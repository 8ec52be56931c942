"""RabbitMQ transport shared by hub and node: topology names, connections, confirmed publishing."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # aio-pika is imported when a connection is made, so `cx --help` stays quick
    from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

# AMQP message types the records exchange carries
BATCH = "cx.batch/1"
HEARTBEAT = "cx.heartbeat/1"
RECEIPT = "cx.receipt/1"
REFUSAL = "cx.refusal/1"  # on the receipts exchange, beside receipts: the hub quarantined a department's batch


@dataclass(frozen=True)
class Topology:
    """Names of everything the hub provisions in its vhost; nodes and hub derive them the same way."""

    vhost: str = "credit-exchange"
    user_prefix: str = "cx-"  # broker users are global to the broker: tests give each run its own prefix

    records_exchange: str = "cx.records"  # topic: "<dept>.<record type>" for batches, "<dept>.heartbeat"
    ingest_queue: str = "cx.ingest"  # quorum, consumed by the hub
    dead_letter_exchange: str = "cx.dlx"  # fanout
    quarantine_queue: str = "cx.quarantine"  # quorum, what the hub could not attribute or verify
    # direct: routing key "<dept>.<node>" reaches that node's queue, "<dept>" every node of the department
    receipts_exchange: str = "cx.receipts"

    @property
    def hub_user(self) -> str:
        return f"{self.user_prefix}hub"

    def dept_user(self, dept: str) -> str:
        return f"{self.user_prefix}dept-{dept}"

    def dept_of_user(self, user: str | None) -> str | None:
        prefix = f"{self.user_prefix}dept-"
        return user[len(prefix):] if user and user.startswith(prefix) else None

    def receipts_queue(self, dept: str, node: str) -> str:
        """The quorum queue one node of a department reads its receipts and refusals from."""
        return f"cx.receipts.{dept}.{node}"

    @staticmethod
    def receipts_key(dept: str, node: str | None = None) -> str:
        """Routing key on the receipts exchange: "<dept>.<node>" for one node, "<dept>" for all of them."""
        return f"{dept}.{node}" if node else dept

    @staticmethod
    def routing_key(dept: str, kind: str) -> str:
        return f"{dept}.{kind}"


def amqp_url(base: str, user: str, password: str, vhost: str) -> str:
    """Put credentials and vhost into an amqp(s):// URL that has neither (or replace them)."""
    parts = urlsplit(base)
    host = parts.hostname or "127.0.0.1"
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}{port}"
    return urlunsplit((parts.scheme or "amqp", netloc, "/" + quote(vhost, safe=""), parts.query, ""))


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def tls_context(ca: str | os.PathLike | None, cert: str | os.PathLike | None = None,
                key: str | os.PathLike | None = None) -> ssl.SSLContext | None:
    """A TLS context for amqps:// with the federation's CA and, optionally, this party's client certificate.

    With a client certificate the broker can log the connection in by the certificate alone
    (EXTERNAL, see `connect`); the host name in the URL must be one the broker's certificate names.
    """
    if not (ca or cert):
        return None
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


def with_auth_mechanism(url: str) -> str:
    """The URL with `auth=external` added when an amqps:// URL carries no password.

    aiormq picks the SASL mechanism from the URL's `auth` query parameter (PLAIN by default, with
    guest/guest standing in for a missing user or password). Over TLS a URL without a password
    can only mean the client certificate is the credential: RabbitMQ's EXTERNAL mechanism
    (rabbitmq_auth_mechanism_ssl, `ssl_cert_login_from = common_name`) then logs the connection in
    as the user named by the certificate's CN. An explicit `auth=` in the URL is left alone, so
    `amqps://host:5671/vhost?auth=external` works with or without credentials in it.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if parts.scheme != "amqps" or parts.password or any(k == "auth" for k, _ in query):
        return url
    return urlunsplit(parts._replace(query=urlencode(query + [("auth", "external")])))


async def connect(url: str, *, ssl_context: ssl.SSLContext | None = None, name: str = "cx") -> AbstractRobustConnection:
    """A robust connection: it reconnects and re-declares consumers after a broker restart.

    amqps:// URLs without a password authenticate with the client certificate (EXTERNAL); see
    `with_auth_mechanism`. The certificate comes from `ssl_context` (`tls_context`) or from the
    URL's certfile/keyfile/cafile query parameters.
    """
    import aio_pika

    kwargs = {"client_properties": {"connection_name": name}}
    if ssl_context is not None:
        kwargs["ssl_context"] = ssl_context
    return await aio_pika.connect_robust(with_auth_mechanism(url), **kwargs)


async def confirmed_channel(connection: AbstractRobustConnection, prefetch: int = 0) -> AbstractChannel:
    """A channel with publisher confirms on, and unroutable messages raised, not dropped."""
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    if prefetch:
        await channel.set_qos(prefetch_count=prefetch)
    return channel


async def publish(
    exchange: AbstractExchange,
    routing_key: str,
    body: bytes,
    *,
    message_type: str,
    message_id: str,
    user_id: str | None = None,
    timeout: float = 30.0,
) -> None:
    """Publish a persistent message and wait for the broker's confirm (raises if refused or unroutable)."""
    import aio_pika

    message = aio_pika.Message(
        body,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        content_type="application/x-ndjson",
        type=message_type,
        message_id=message_id,
        user_id=user_id,
    )
    await exchange.publish(message, routing_key, mandatory=True, timeout=timeout)
