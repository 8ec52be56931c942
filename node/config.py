"""Configuration as data: TOML files read once into typed dataclasses, overridable by CX_* variables."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A configuration file or value that cannot be used, explained for the person who wrote it."""


class UsageError(Exception):
    """Input a command cannot work with at all (the command exits 2), explained in Chinese and English."""


def print_json(value: Any) -> None:
    """What `--format json` prints: readable, Chinese unescaped, one document."""
    import json
    import sys

    json.dump(value, sys.stdout, ensure_ascii=False, indent=1)
    print()


def listen_address(text: str) -> tuple[str, int]:
    """"host:port" (or ":port") as a (host, port) pair; the host defaults to 127.0.0.1."""
    host, _, port = text.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise ConfigError(f"listen address {text!r} is not host:port 监听地址格式错误") from None


def read_secret(value: str | None, file: str | Path | None, what: str) -> str:
    """A secret given directly (environment) or in a file; files are stripped of surrounding whitespace."""
    if value:
        return value
    if file:
        try:
            return Path(file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {what} from {file}: {exc.strerror} 无法读取{what}") from None
    raise ConfigError(f"no {what} configured 未配置{what}")


def load(cls: type[T], path: str | Path, env_prefix: str = "CX_") -> T:
    """Read a TOML file into `cls` (a dataclass of section dataclasses).

    Relative paths in fields typed `Path` are resolved against the file's folder. Any field can
    be overridden by an environment variable named CX_<SECTION>_<FIELD> (upper case).
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path} 找不到配置文件") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc} 配置文件格式错误") from None
    loaded = from_dict(cls, raw, base=path.resolve().parent, env_prefix=env_prefix, where=str(path))
    if any(f.name == "path" for f in dataclasses.fields(cls)):
        loaded = dataclasses.replace(loaded, path=path.resolve())
    return loaded


class LoadedFromFile:
    """What the hub's and the node's configurations share: a file they were read from, a [broker] section."""

    path: Path | None
    broker: Any

    @property
    def base(self) -> Path:
        """The folder relative paths are resolved against: the configuration file's."""
        return self.path.parent if self.path else Path.cwd()

    @property
    def topology(self) -> Any:
        from .transport import Topology

        return Topology(vhost=self.broker.vhost, user_prefix=self.broker.user_prefix)


def from_dict(cls: type[T], raw: dict[str, Any], *, base: Path, env_prefix: str = "CX_", where: str = "config") -> T:
    hints = typing.get_type_hints(cls)
    sections: dict[str, Any] = {}
    unknown = set(raw) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ConfigError(f"{where}: unknown section(s) {sorted(unknown)} 未知的配置节")
    for f in dataclasses.fields(cls):
        section_cls = hints[f.name]
        if not dataclasses.is_dataclass(section_cls):
            continue  # plain top-level fields (e.g. per-stream tables) are handled by the owner
        values = dict(raw.get(f.name, {}))
        sections[f.name] = _section(section_cls, values, base, f"{env_prefix}{f.name.upper()}_", f"{where} [{f.name}]")
    extra = {f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name not in sections and f.name in raw}
    return cls(**sections, **extra)


def _section(cls: type[T], values: dict[str, Any], base: Path, env_prefix: str, where: str) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} 未知的配置项")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        env = os.environ.get(env_prefix + f.name.upper())
        if env is not None:
            kwargs[f.name] = _coerce(hints[f.name], env, f"{env_prefix}{f.name.upper()}", base, from_env=True)
        elif f.name in values:
            kwargs[f.name] = _coerce(hints[f.name], values[f.name], f"{where} {f.name}", base)
        elif isinstance(f.default, Path):
            kwargs[f.name] = _coerce(Path, f.default, where, base)  # defaults are relative to the file too
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(hint: Any, value: Any, where: str, base: Path, from_env: bool = False) -> Any:
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    if optional:
        if value in ("", None):
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    try:
        if hint is Path:
            p = Path(str(value)).expanduser()
            return p if p.is_absolute() else base / p
        if hint is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if hint in (int, float):
            if isinstance(value, bool):
                raise ValueError(value)
            return hint(value)
        if hint is str:
            if not isinstance(value, str):
                raise ValueError(value)
            return value
        if typing.get_origin(hint) is list:
            if from_env:
                return [v.strip() for v in str(value).split(",") if v.strip()]
            if not isinstance(value, list):
                raise ValueError(value)
            return value
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a valid {getattr(hint, '__name__', hint)} 配置值无效") from None
    return value
