"""Message assembly: rendered per-recipient parts in, the exact signed bytes for SMTP out."""

from campaigns.message.assembly import AssembledMessage, MessageSkeleton, RecipientParts
from campaigns.message.dkim import SIGNED_FIELDS, DkimSigner, generate_dkim_key
from campaigns.message.headers import Mailbox, feedback_id, parse_mailbox
from campaigns.message.verp import VerpTag, parse_verp, verp_address

__all__ = [
    "SIGNED_FIELDS",
    "AssembledMessage",
    "DkimSigner",
    "Mailbox",
    "MessageSkeleton",
    "RecipientParts",
    "VerpTag",
    "feedback_id",
    "generate_dkim_key",
    "parse_mailbox",
    "parse_verp",
    "verp_address",
]
