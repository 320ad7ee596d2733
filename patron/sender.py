"""The sending identity from settings: From, postal address, tracking URL and the DKIM signer
(its key file read and parsed once per process)."""

from __future__ import annotations

from campaigns.message.dkim import DkimSigner
from campaigns.pipeline import SenderIdentity
from lists.errors import ConfigurationError
from patron.settings import Settings


def sender_identity(settings: Settings) -> SenderIdentity:
    """The identity campaigns are sent with; ConfigurationError if DKIM is half configured or
    its key cannot be read."""
    return SenderIdentity(
        from_address=settings.sender.from_,
        postal_address=settings.sender.postal_address,
        tracking_base_url=settings.tracking.base_url,
        return_path_domain=settings.sender.return_path_domain,
        shop_url=settings.sender.shop_url,
        dkim=dkim_signer(settings),
    )


def dkim_signer(settings: Settings) -> DkimSigner | None:
    """The configured signer, or None when DKIM is not configured at all."""
    dkim = settings.dkim
    given = [dkim.domain, dkim.selector, dkim.private_key_file]
    if not any(given):
        return None
    if not all(given):
        raise ConfigurationError(
            "DKIM needs PATRON_DKIM__DOMAIN, PATRON_DKIM__SELECTOR and "
            "PATRON_DKIM__PRIVATE_KEY_FILE together"
        )
    assert dkim.private_key_file is not None and dkim.domain and dkim.selector
    try:
        pem = dkim.private_key_file.expanduser().read_bytes()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the DKIM key {dkim.private_key_file}: {exc.strerror}"
        ) from exc
    return DkimSigner(dkim.domain, dkim.selector, pem)
