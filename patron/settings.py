"""Patron's settings: CLI > environment (``PATRON_…``, ``__`` between levels) > TOML > defaults."""

from __future__ import annotations

import os
import tomllib
from datetime import date
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from lists.errors import ConfigurationError

APP_NAME = "patron"
ENV_PREFIX = "PATRON_"


def data_dir() -> Path:
    """The user's data directory for Patron (embedded database, demo, rejects files)."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def config_file() -> Path:
    """Where the TOML config file is looked for: ``PATRON_CONFIG`` or the user config directory."""
    explicit = os.environ.get("PATRON_CONFIG")
    if explicit:
        return Path(explicit)
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def default_database_url() -> str:
    return f"sqlite:///{data_dir() / 'patron.sqlite3'}"


class SmtpSettings(BaseModel):
    """The SMTP relay Patron hands messages to."""

    host: str = Field("127.0.0.1", description="Relay host name or address.")
    port: int = Field(2525, description="Relay port (2525: the built-in demo sink).")
    username: str | None = Field(None, description="AUTH user name, if the relay requires it.")
    password: SecretStr | None = Field(None, description="AUTH password.")
    tls: Literal["none", "starttls", "implicit"] = Field(
        "none", description="Transport security: none, starttls or implicit TLS."
    )
    pool_size: int = Field(4, ge=1, le=256, description="SMTP connections kept open per worker.")
    relays: list[str] = Field(
        default_factory=list,
        description="More relays as HOST:PORT, shared round-robin with the main one (same TLS "
        "and AUTH); a relay that refuses connections is skipped for a while.",
    )
    max_messages_per_connection: int = Field(
        100, ge=1, description="Messages sent over one connection before it is replaced."
    )
    timeout: float = Field(
        60.0, gt=0, description="Seconds to wait for a connection or a reply before giving up."
    )
    verify_certificates: bool = Field(
        True, description="Check the relay's TLS certificate (turn off only for a local sink)."
    )
    ca_file: Path | None = Field(
        None, description="PEM bundle of authorities trusted for the relay's certificate."
    )
    local_hostname: str | None = Field(
        None, description="Name given in EHLO; default the machine's host name."
    )


class SenderSettings(BaseModel):
    """Who the mail is from."""

    from_: str = Field(
        "Patron Demo Shop <news@shop.example>", alias="from", description="The From header."
    )
    return_path_domain: str | None = Field(
        None, description="Domain of the VERP Return-Path used to attribute bounces."
    )
    postal_address: str = Field(
        "Patron Demo Shop, 1 Rue de la Gare, L-4001 Esch-sur-Alzette, Luxembourg",
        description="Postal address printed in every marketing message (CAN-SPAM, CASL).",
    )
    shop_url: str = Field(
        "https://shop.example", description="The shop's web address, linked from templates."
    )

    model_config = {"populate_by_name": True}


class DkimSettings(BaseModel):
    """DKIM signing of outgoing mail."""

    domain: str | None = Field(None, description="Signing domain (d=).")
    selector: str | None = Field(None, description="Selector (s=).")
    private_key_file: Path | None = Field(None, description="PEM file with the RSA private key.")


class TrackingSettings(BaseModel):
    """The public face of ``patron serve``."""

    base_url: str = Field(
        "http://127.0.0.1:8025", description="Public base URL of `patron serve` used in links."
    )
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "::1"],
        description="Addresses whose X-Forwarded-For header is believed.",
    )


class DnsSettings(BaseModel):
    """DNS resolution for deliverability checks."""

    nameservers: list[str] = Field(
        default_factory=list,
        description="Name servers as HOST or HOST:PORT; empty means the system resolver.",
    )
    timeout: float = Field(5.0, gt=0, description="Seconds before a DNS query gives up.")


class DeliverySettings(BaseModel):
    """Pace and caps of sending."""

    rate: float = Field(100.0, gt=0, description="Global messages per second.")
    rate_per_hour: int | None = Field(None, description="Global messages per hour, if capped.")
    per_domain_concurrency: int = Field(
        5, ge=1, description="Concurrent SMTP transactions per recipient provider."
    )
    frequency_cap_hours: int = Field(
        16, ge=0, description="Skip recipients emailed by any marketing campaign this recently."
    )
    per_domain_rate: float | None = Field(
        None, gt=0, description="Messages per second per recipient provider (MX group); "
        "default only the global rate."
    )
    discount_cap_days: int = Field(
        14, ge=0, description="A discount campaign skips recipients given another discount "
        "this recently."
    )
    default_timezone: str = Field(
        "UTC", description="Time zone of recipients without one, for local-time scheduling "
        "and sending windows."
    )
    retry_initial_seconds: float = Field(
        600.0, gt=0, description="Wait before the first retry of a deferred message."
    )
    retry_multiplier: float = Field(
        2.0, ge=1, description="Each further retry waits this many times longer…"
    )
    retry_max_interval_seconds: float = Field(
        14400.0, gt=0, description="…but never longer than this between two attempts."
    )
    retry_jitter: float = Field(
        0.2, ge=0, le=1, description="Random spread of each retry wait (0.2: ±20 %)."
    )
    retry_lifetime_seconds: float = Field(
        345600.0, gt=0, description="Give up (soft bounce) once a message has been retried "
        "this long after its first attempt (default 4 days, RFC 5321 §4.5.4.1)."
    )
    unknown_outcome: Literal["hold", "resend"] = Field(
        "hold", description="A message whose outcome is unknown (connection cut after its "
        "content was sent): hold it (never resent) or resend it (may duplicate)."
    )
    slowdown_min_factor: float = Field(
        0.05, gt=0, le=1, description="Deferrals halve a provider's pace down to this share "
        "of its rate and concurrency."
    )
    slowdown_recovery_step: float = Field(
        0.1, gt=0, le=1, description="Share of full pace a slowed provider regains…"
    )
    slowdown_recovery_seconds: float = Field(
        30.0, gt=0, description="…after each period this long without a deferral."
    )
    provider_pause_minutes: float = Field(
        30.0, gt=0, description="How long a policy block (5.7.x, 554) pauses sending to that "
        "provider."
    )
    warmup_domains: dict[str, date] = Field(
        default_factory=dict, description="Sending domains under warm-up, each with its start "
        "date (TOML table, e.g. {\"shop.example\" = 2026-06-01}); empty: no warm-up."
    )
    warmup_ramp: list[int] = Field(
        default_factory=lambda: [
            50, 100, 200, 400, 700, 1000, 1500, 2000, 3000, 4000, 5000, 7000, 9000, 12000,
            15000, 20000, 25000, 32000, 40000, 50000,
        ],
        description="Daily message caps of a warming domain, day 0 first; no cap after the "
        "last day.",
    )
    complaint_warn_rate: float = Field(
        0.001, ge=0, description="Alert when a campaign's complaint rate reaches this (0.1 %)."
    )
    complaint_pause_rate: float = Field(
        0.003, ge=0, description="Pause a campaign whose complaint rate reaches this (0.3 %)."
    )
    hard_bounce_pause_rate: float = Field(
        0.05, ge=0, description="Pause a campaign (or a provider's stream) whose hard-bounce "
        "rate exceeds this."
    )
    rate_check_min_messages: int = Field(
        100, ge=1, description="Complaint and bounce rates are judged once this many messages "
        "were sent."
    )
    worker_timeout_seconds: float = Field(
        30.0, gt=0, description="A worker silent this long is presumed dead and its claims "
        "are taken over."
    )
    claim_batch: int = Field(
        500, ge=1, description="Messages a worker claims from the queue at a time."
    )
    build_threads: int = Field(
        2, ge=0, le=64, description="Threads of a worker building messages (render, assemble, "
        "sign) beside its event loop; 0 builds them on the loop itself."
    )
    poll_seconds: float = Field(
        1.0, gt=0, description="How often an idle worker looks for due messages."
    )


class WebhookSettings(BaseModel):
    """Shared secrets of the shop webhooks."""

    shopify_secret: SecretStr | None = Field(None, description="Shopify app client secret.")
    woocommerce_secret: SecretStr | None = Field(None, description="WooCommerce webhook secret.")
    stripe_secret: SecretStr | None = Field(None, description="Stripe endpoint secret (whsec_…).")
    generic_secret: SecretStr | None = Field(None, description="Secret of the generic JSON hook.")


class HygieneSettings(BaseModel):
    """List hygiene rules (A10)."""

    exclude_role_addresses: bool = Field(
        True, description="Reject role addresses (RFC 2142) on import and exclude them from sends."
    )
    exclude_disposable_domains: bool = Field(
        True, description="Reject disposable-domain addresses on import and at send time."
    )
    sunset_campaigns: int = Field(
        10, ge=1, description="Sunset after this many received campaigns with no engagement…"
    )
    sunset_days: int = Field(180, ge=1, description="…within this many days.")


class Settings(BaseSettings):
    """Everything Patron can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        populate_by_name=True,
    )

    database_url: str = Field(
        default_factory=default_database_url,
        description="SQLAlchemy URL; default SQLite in the user data directory.",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="Key for HMAC tokens and suppression hashes; generated and stored in the "
        "database at `patron init` when unset. Changing it orphans existing suppressions.",
    )
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    sender: SenderSettings = Field(default_factory=SenderSettings)
    dkim: DkimSettings = Field(default_factory=DkimSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    dns: DnsSettings = Field(default_factory=DnsSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    hygiene: HygieneSettings = Field(default_factory=HygieneSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # CLI values come in as init kwargs; the file is read by load_settings and passed as
        # the lowest layer through _TomlSource so that the environment always wins over it.
        return (init_settings, env_settings, _TomlSource(settings_cls))


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.data = read_config_file()

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


def read_config_file(path: Path | None = None) -> dict[str, Any]:
    """The TOML config file as a dict ({} when it does not exist)."""
    path = path or config_file()
    if not path.exists():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc}") from exc


def load_settings(**overrides: Any) -> Settings:
    """Build the effective settings; ``overrides`` are the CLI's values (highest precedence)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ENV_PREFIX + "__".join(str(p).upper() for p in first["loc"])
        raise ConfigurationError(f"invalid setting {where}: {first['msg']}") from exc


def setting_sources(settings: Settings, cli: dict[str, Any] | None = None) -> dict[str, str]:
    """For each dotted setting path, where its effective value came from."""
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    env = EnvSettingsSource(
        Settings, env_prefix=ENV_PREFIX, env_nested_delimiter="__", case_sensitive=False
    )()
    file_data = read_config_file()
    out: dict[str, str] = {}
    for path in _flat(settings.model_dump(by_alias=True)):
        head, _, rest = path.partition(".")
        if head in cli:
            out[path] = "cli"
        elif _has(env, head, rest):
            out[path] = "env"
        elif _has(file_data, head, rest):
            out[path] = f"file {config_file()}"
        else:
            out[path] = "default"
    return out


def _has(data: dict[str, Any], head: str, rest: str) -> bool:
    if head not in data:
        return False
    if not rest:
        return True
    value = data[head]
    return isinstance(value, dict) and rest in value


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, path + "."))
        else:
            out[path] = value
    return out


def effective_settings(
    settings: Settings, cli: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Rows of (setting, value, source, env name) with secrets masked, for `patron config`."""
    sources = setting_sources(settings, cli)
    rows = []
    for path, value in _flat(settings.model_dump(by_alias=True)).items():
        shown: Any = value
        if isinstance(value, SecretStr):
            shown = "********" if value.get_secret_value() else ""
        elif path == "database_url":
            shown = _mask_url(str(value))
        elif isinstance(value, Path):
            shown = str(value)
        rows.append(
            {
                "setting": path,
                "value": shown,
                "source": sources[path],
                "env": ENV_PREFIX + path.replace(".", "__").upper(),
            }
        )
    return rows


def _mask_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL is shown as is; the engine will report it
        return url
