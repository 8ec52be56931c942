"""The hub's configuration (hub.toml)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import config
from ..transport import amqp_url


@dataclass(frozen=True)
class HubSection:
    name: str = "Credit Exchange hub"
    signing_key: Path = Path("keys/hub.key")
    data_dir: Path = Path(".")
    # while batches queue up, derived views (timeliness, credit standing, search) wait for a lull, at most this long
    projection_max_lag_seconds: float = 60.0


@dataclass(frozen=True)
class StoreSection:
    url: str = "sqlite:///hub.db"  # relative SQLite paths are relative to the config file's folder
    sqlite_synchronous: str = "FULL"  # a receipt is only sent after the batch is on disk


@dataclass(frozen=True)
class BrokerSection:
    url: str = "amqp://127.0.0.1:5672/"  # no credentials here; the vhost comes from `vhost`
    public_url: str = ""  # what departments connect to, written into their handover files; default `url`
    vhost: str = "credit-exchange"
    user_prefix: str = "cx-"
    password_file: Path = Path("secrets/broker/hub.password")  # the hub's own broker user
    management_url: str = "http://127.0.0.1:15672"
    management_user: str = "guest"
    management_password: str = ""  # prefer CX_BROKER_MANAGEMENT_PASSWORD or the file
    management_password_file: Path | None = None
    prefetch: int = 8
    delivery_limit: int = 20  # redeliveries before a message is dead-lettered to quarantine


@dataclass(frozen=True)
class ApiSection:
    listen: str = "127.0.0.1:8470"
    metrics_listen: str = ""  # serve /metrics on this address only (e.g. "127.0.0.1:9470"); default: beside the API
    public_url: str = ""  # the API as departments reach it (written into handover files); default http://<listen>


@dataclass(frozen=True)
class ConsoleSection:
    """The web console: sessions, log-in protection, the access trail, the overview's status lights."""

    session_key_file: Path = Path("secrets/console/session.key")  # 32 random bytes; made on first start
    idle_timeout_minutes: float = 30.0  # a session unused this long ends
    session_max_hours: float = 12.0  # and any session ends after this long
    secure_cookies: str = "auto"  # auto: Secure when the request came over TLS | always | never
    lockout_attempts: int = 5  # failed log-ins in a row that lock an account …
    lockout_minutes: float = 15.0  # … for this long
    login_attempts_per_minute: int = 10  # per client address, whatever the account
    trail_flush_seconds: float = 1.0  # access-trail entries are appended (and checkpointed) at most this often
    silent_after_seconds: float = 300.0  # no heartbeat for this long: the department's light is red (silent)
    late_pending_seconds: float = 900.0  # records waiting in a node's outbox this long: amber (late)
    language: str = "zh"  # zh | en, until a user chooses


@dataclass(frozen=True)
class ComplianceSection:
    """Timeliness and the joint-meeting office's deadlines (node/hub/timeliness.py, compliance.py)."""

    calendar: Path | None = None  # holidays and make-up working days per year; default: the file shipped with cx
    obligations: Path | None = None  # the office's obligations (TOML); loaded with `cx hub obligations load`
    limits: dict[str, dict[str, int]] = field(default_factory=dict)  # {dept or "*": {record type: working days}}
    report_day: int = 10  # the monthly report for a month is made on this day of the next month
    report_langs: list[str] = field(default_factory=lambda: ["zh"])  # languages of the periodic reports
    trend_periods: int = 6  # months shown in a report's trend

    def __post_init__(self) -> None:
        if not 1 <= self.report_day <= 28:
            raise config.ConfigError(f"[compliance] report_day = {self.report_day}: give a day from 1 to 28 "
                                     "报告生成日应为1至28日")
        if not 1 <= self.trend_periods <= 36:
            raise config.ConfigError("[compliance] trend_periods: give 1 to 36 趋势期数应为1至36")
        bad = [lang for lang in self.report_langs if lang not in ("zh", "en")]
        if bad:
            raise config.ConfigError(f"[compliance] report_langs: {bad} — use zh and/or en 报告语言应为 zh 或 en")


@dataclass(frozen=True)
class PortalSection:
    """The public portal (公示查询, node/hub/portal.py) and the credit rules behind it (node/hub/credit.py)."""

    rules: Path | None = None  # publicity periods, repair, classes, labels, lists; default: the file shipped with cx
    fine_individual: int | None = None  # 较低数额罚款 for individuals, yuan; default: the rules file's
    fine_organisation: int | None = None  # … for organisations
    credit_check_max: int = 5000  # credit codes in one credit check (信用审查)
    searches_per_minute: int = 20  # searches and list pages, per client address
    views_per_minute: int = 60  # enterprise pages, proof checks and proof downloads, per client address
    per_page: int = 20  # enterprises (or list members) on a result page
    max_pages: int = 10  # result pages a search can be paged through: refine the search beyond (no bulk listing)
    records_per_page: int = 10  # records per category on an enterprise page
    contact: str = ""  # the hub operator's contact for objections, when a department has none of its own
    contacts: dict[str, str] = field(default_factory=dict)  # department id -> how a subject objects to its records

    def __post_init__(self) -> None:
        for name in ("searches_per_minute", "views_per_minute", "per_page", "max_pages", "records_per_page"):
            if not 1 <= getattr(self, name) <= 10000:
                raise config.ConfigError(f"[portal] {name} = {getattr(self, name)}: give 1 to 10000 应为1至10000")


@dataclass(frozen=True)
class HubConfig(config.LoadedFromFile):
    hub: HubSection = field(default_factory=HubSection)
    store: StoreSection = field(default_factory=StoreSection)
    broker: BrokerSection = field(default_factory=BrokerSection)
    api: ApiSection = field(default_factory=ApiSection)
    console: ConsoleSection = field(default_factory=ConsoleSection)
    compliance: ComplianceSection = field(default_factory=ComplianceSection)
    portal: PortalSection = field(default_factory=PortalSection)
    path: Path | None = None

    @classmethod
    def load(cls, path: str | Path) -> HubConfig:
        return config.load(cls, path)

    @property
    def store_url(self) -> str:
        """The SQLAlchemy URL, with a relative SQLite path made relative to the config file."""
        url = self.store.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite:///:memory:":
            return prefix + str(self.base / url[len(prefix):])
        return url

    @property
    def secrets_dir(self) -> Path:
        return self.base / "secrets"

    @property
    def handover_dir(self) -> Path:
        return self.base / "handover"

    def hub_amqp_url(self) -> str:
        password = config.read_secret(os.environ.get("CX_BROKER_PASSWORD"), self.broker.password_file,
                                      "the hub's broker password")
        return amqp_url(self.broker.url, self.topology.hub_user, password, self.broker.vhost)

    def management_password(self) -> str:
        return config.read_secret(self.broker.management_password or None, self.broker.management_password_file,
                                  "the broker management password") if (
            self.broker.management_password or self.broker.management_password_file) else "guest"

    def listen(self) -> tuple[str, int]:
        return config.listen_address(self.api.listen)

    def metrics_listen(self) -> tuple[str, int] | None:
        return config.listen_address(self.api.metrics_listen) if self.api.metrics_listen else None

    def session_key(self) -> bytes:
        """The key that encrypts console session cookies; made (mode 0600) the first time it is needed."""
        path = self.console.session_key_file
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32))
        key = path.read_bytes()
        if len(key) != 32:
            raise config.ConfigError(f"{path}: the console session key must be 32 bytes 会话密钥应为32字节; "
                                     "delete it to have a new one made (everyone logs in again)")
        return key
    def public_api_url(self) -> str:
        """Where nodes fetch checkpoints and consistency proofs (handover files carry it)."""
        if self.api.public_url:
            return self.api.public_url.rstrip("/")
        host, port = self.listen()
        return f"http://{host}:{port}"
