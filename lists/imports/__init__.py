"""CSV imports of contacts (A5) and orders (A6): streamed, batched, idempotent, with rejects."""

from lists.imports.contacts import ContactImportSummary, import_contacts
from lists.imports.orders import OrderImportSummary, import_orders

__all__ = ["ContactImportSummary", "OrderImportSummary", "import_contacts", "import_orders"]
