"""Console accounts and API tokens: roles, argon2 password hashes, lock-out after failed log-ins."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..config import UsageError
from ..protocol.envelope import DEPT_ID, format_time, parse_time, utc_now
from .store import Store, accounts, api_tokens, departments, rows

ROLE_KINDS = ("operator", "office", "department", "auditor")
ACCOUNT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}\Z")
MIN_PASSWORD = 10
TOKEN = re.compile(r"^cx_([0-9a-f]{12})_([A-Za-z0-9_-]{43})\Z")
FIRST_OPERATOR = "admin"

# argon2id as OWASP's password storage cheat sheet lists it (19 MiB, 2 passes, 1 lane), not the library's
# RFC 9106 default (64 MiB, 3 passes, 4 lanes): each hash or log-in held 64 MiB more, on top of whatever ingest
# held then, and the hub's peak RSS is budgeted (150 MB). A hash made with the old parameters still verifies
# and is rehashed at its next log-in.
PASSWORD_HASH = dict(memory_cost=19 * 1024, time_cost=2, parallelism=1)
_hasher = PasswordHasher(**PASSWORD_HASH)


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against for an unknown name, so it costs as much as a wrong password.

    Made at the first log-in, not at import: argon2id takes its memory_cost while it hashes, a peak the hub
    would otherwise reach at every start.
    """
    return _hasher.hash("not a password of anyone")


class AccountError(UsageError):
    """A request about accounts or tokens that cannot be carried out, said plainly."""


@dataclass(frozen=True)
class Role:
    """operator | office | department:ID | auditor (联席会议办公室 is `office`)."""

    kind: str
    dept: str | None = None

    @classmethod
    def parse(cls, text: str) -> Role:
        kind, _, dept = text.partition(":")
        if kind not in ROLE_KINDS or (kind == "department") != bool(dept):
            raise AccountError(f"角色无效 invalid role {text!r}: operator, office, auditor or department:ID")
        if dept and not DEPT_ID.match(dept):
            raise AccountError(f"部门标识无效 invalid department id {dept!r}")
        return cls(kind, dept or None)

    def __str__(self) -> str:
        return f"{self.kind}:{self.dept}" if self.dept else self.kind


@dataclass(frozen=True)
class Account:
    name: str
    role: Role
    must_change: bool
    password_changed: str
    disabled_at: str | None
    locked_until: str | None
    last_login: str | None
    created: str

    @classmethod
    def from_row(cls, row: dict) -> Account:
        return cls(row["name"], Role(row["role"], row["dept"]), bool(row["must_change"]), row["password_changed"],
                   row["disabled_at"], row["locked_until"], row["last_login"], row["created"])


@dataclass(frozen=True)
class Token:
    token_id: str
    name: str
    role: Role
    created: str
    created_by: str | None
    revoked_at: str | None


class LoginRefused(Exception):
    """Why a log-in failed: bad_credentials | locked | disabled (shown to the user in their language)."""

    def __init__(self, reason: str, until: str | None = None):
        super().__init__(reason)
        self.reason, self.until = reason, until


def new_password() -> str:
    """A one-time password an operator can read out: 16 characters without look-alikes."""
    alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(16))


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"密码太短 the password must have at least {MIN_PASSWORD} characters")


def _require_dept(conn, role: Role) -> None:
    if role.dept and conn.execute(select(departments.c.dept).where(departments.c.dept == role.dept)).first() is None:
        raise AccountError(f"未登记的部门 unknown department {role.dept!r}; enrol it first (cx hub add-dept)")


def add_user(store: Store, name: str, role: Role, password: str | None = None, *, by: str | None = None) -> str:
    """Create an account; without a password a one-time one is made (changed at first log-in). Returns it."""
    if not ACCOUNT_NAME.match(name):
        raise AccountError(f"账号名无效 invalid account name {name!r}: letters, digits and . _ @ -, at most 64")
    one_time = password is None
    password = new_password() if one_time else password
    _check_password(password)
    now = utc_now()
    try:
        with store.writer.begin() as conn:
            _require_dept(conn, role)
            conn.execute(accounts.insert().values(
                name=name, role=role.kind, dept=role.dept, password_hash=_hasher.hash(password),
                must_change=int(one_time), created=now, created_by=by, password_changed=now, failed_logins=0))
    except IntegrityError:
        raise AccountError(f"账号已存在 account {name!r} already exists") from None
    return password


def set_password(store: Store, name: str, password: str | None = None, *, one_time: bool = False) -> str:
    """A new password (a generated one-time password when none is given); unlocks the account."""
    one_time = one_time or password is None
    password = new_password() if password is None else password
    _check_password(password)
    with store.writer.begin() as conn:
        done = conn.execute(accounts.update().where(accounts.c.name == name).values(
            password_hash=_hasher.hash(password), must_change=int(one_time), password_changed=utc_now(),
            failed_logins=0, locked_until=None))
    if done.rowcount == 0:
        raise AccountError(f"没有该账号 no account {name!r}")
    return password


def disable_user(store: Store, name: str, enabled: bool = False) -> None:
    with store.writer.begin() as conn:
        done = conn.execute(accounts.update().where(accounts.c.name == name).values(
            disabled_at=None if enabled else utc_now()))
    if done.rowcount == 0:
        raise AccountError(f"没有该账号 no account {name!r}")


def list_users(store: Store) -> list[Account]:
    with store.reader.connect() as conn:
        return [Account.from_row(r) for r in rows(conn, select(accounts).order_by(accounts.c.name))]


def get_user(store: Store, name: str) -> Account | None:
    with store.reader.connect() as conn:
        row = conn.execute(select(accounts).where(accounts.c.name == name)).first()
    return Account.from_row(row._mapping) if row else None


def has_accounts(store: Store) -> bool:
    with store.reader.connect() as conn:
        return conn.execute(select(accounts.c.name).limit(1)).first() is not None


def bootstrap_operator(store: Store) -> str | None:
    """On a hub without accounts: the first operator, `admin`, with a one-time password (returned)."""
    if has_accounts(store):
        return None
    try:
        return add_user(store, FIRST_OPERATOR, Role("operator"), by="bootstrap")
    except AccountError:
        return None  # another hub process made it first


def login(store: Store, name: str, password: str, *, attempts: int, lockout: timedelta) -> Account:
    """The account, if the password is right and the account usable; otherwise LoginRefused, with the
    failure counted and the account locked for `lockout` after `attempts` failures in a row."""
    dummy = _dummy_hash()  # before the look-up: the first log-in costs the same whatever the name
    with store.reader.connect() as conn:
        row = conn.execute(select(accounts).where(accounts.c.name == name)).first()
    if row is None:
        _verify(dummy, password)
        raise LoginRefused("bad_credentials")
    now = utc_now()
    if row.locked_until and row.locked_until > now:
        raise LoginRefused("locked", row.locked_until)
    if not _verify(row.password_hash, password):
        failed = (row.failed_logins or 0) + 1
        locked = format_time(parse_time(now) + lockout) if failed >= attempts else None
        with store.writer.begin() as conn:
            conn.execute(accounts.update().where(accounts.c.name == name).values(
                failed_logins=0 if locked else failed, locked_until=locked))
        raise LoginRefused("locked", locked) if locked else LoginRefused("bad_credentials")
    if row.disabled_at:
        raise LoginRefused("disabled")
    values = dict(failed_logins=0, locked_until=None, last_login=now)
    if _hasher.check_needs_rehash(row.password_hash):
        values["password_hash"] = _hasher.hash(password)
    with store.writer.begin() as conn:
        conn.execute(accounts.update().where(accounts.c.name == name).values(**values))
    return Account.from_row({**row._mapping, **values})


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# -- API tokens ------------------------------------------------------------------------------

def add_token(store: Store, name: str, role: Role, *, by: str | None = None) -> str:
    """A new token for a machine client; the secret is returned once and only its hash is kept."""
    if not name.strip():
        raise AccountError("give the token a name saying who uses it 请填写令牌用途")
    token_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    with store.writer.begin() as conn:
        _require_dept(conn, role)
        conn.execute(api_tokens.insert().values(
            token_id=token_id, name=name.strip()[:100], role=role.kind, dept=role.dept,
            secret_hash=hashlib.sha256(secret.encode()).hexdigest(), created=utc_now(), created_by=by))
    return f"cx_{token_id}_{secret}"


def revoke_token(store: Store, token_id: str) -> None:
    with store.writer.begin() as conn:
        done = conn.execute(api_tokens.update().where(api_tokens.c.token_id == token_id,
                                                      api_tokens.c.revoked_at.is_(None)).values(revoked_at=utc_now()))
    if done.rowcount == 0:
        raise AccountError(f"没有该有效令牌 no active token {token_id!r}")


def list_tokens(store: Store) -> list[Token]:
    with store.reader.connect() as conn:
        found = rows(conn, select(api_tokens).order_by(api_tokens.c.created))
    return [Token(t["token_id"], t["name"], Role(t["role"], t["dept"]), t["created"], t["created_by"],
                  t["revoked_at"]) for t in found]


def check_token(store: Store, presented: str) -> Token | None:
    """The token a bearer string stands for, if it is well formed, known, unrevoked and its secret matches."""
    m = TOKEN.match(presented)
    if not m:
        return None
    with store.reader.connect() as conn:
        row = conn.execute(select(api_tokens).where(api_tokens.c.token_id == m.group(1))).first()
    if row is None or row.revoked_at:
        return None
    if not hmac.compare_digest(row.secret_hash, hashlib.sha256(m.group(2).encode()).hexdigest()):
        return None
    return Token(row.token_id, row.name, Role(row.role, row.dept), row.created, row.created_by, row.revoked_at)
