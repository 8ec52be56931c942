"""Ed25519 signing keys: generation, key ids, PEM files with safe permissions."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import ProtocolError, Reason

PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"


def key_id(raw_public_key: bytes) -> str:
    """Hex of the first 16 bytes of SHA-256 over the 32 raw public key bytes."""
    return hashlib.sha256(raw_public_key).digest()[:16].hex()


@dataclass(frozen=True)
class PublicKey:
    key: Ed25519PublicKey
    raw: bytes
    key_id: str

    @classmethod
    def from_raw(cls, raw: bytes) -> PublicKey:
        try:
            key = Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as exc:
            raise ProtocolError(Reason.BAD_KEY, "not a 32-byte Ed25519 public key") from exc
        return cls(key, raw, key_id(raw))

    @classmethod
    def from_pem(cls, pem: bytes | str) -> PublicKey:
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError as exc:
            raise ProtocolError(Reason.BAD_KEY, "not a PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ProtocolError(Reason.BAD_KEY, "the public key is not Ed25519")
        return cls.from_raw(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    @classmethod
    def load(cls, path: str | os.PathLike) -> PublicKey:
        return cls.from_pem(Path(path).read_bytes())

    def pem(self) -> str:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self.key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class SigningKey:
    key: Ed25519PrivateKey
    public: PublicKey

    @property
    def key_id(self) -> str:
        return self.public.key_id

    @classmethod
    def generate(cls) -> SigningKey:
        return cls._wrap(Ed25519PrivateKey.generate())

    @classmethod
    def _wrap(cls, key: Ed25519PrivateKey) -> SigningKey:
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(key, PublicKey.from_raw(raw))

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ProtocolError(Reason.BAD_KEY, "not an unencrypted PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ProtocolError(Reason.BAD_KEY, "the private key is not Ed25519")
        return cls._wrap(key)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SigningKey:
        """Read a private key, refusing a file that group or others can read."""
        path = Path(path)
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ProtocolError(
                Reason.KEY_FILE_INSECURE,
                f"{path} is readable by group or others (mode {stat.S_IMODE(mode):o}); "
                f"run: chmod 600 {path}",
            )
        return cls.from_pem(path.read_bytes())

    def pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    def save(self, private_path: str | os.PathLike, public_path: str | os.PathLike | None = None) -> None:
        """Write the private key with mode 0600 (created that way, never widened) and the public key."""
        private_path = Path(private_path)
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.pem())
        if public_path is not None:
            Path(public_path).write_text(self.public.pem())


def generate_key_files(directory: str | os.PathLike, name: str) -> SigningKey:
    """Create `<name>.key` (0600) and `<name>.pub` in `directory`; refuse to overwrite."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / f"{name}{PRIVATE_SUFFIX}"
    public_path = directory / f"{name}{PUBLIC_SUFFIX}"
    for existing in (private_path, public_path):
        if existing.exists():
            raise FileExistsError(f"{existing} already exists; refusing to overwrite a key")
    key = SigningKey.generate()
    key.save(private_path, public_path)
    return key
