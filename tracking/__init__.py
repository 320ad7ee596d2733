"""The HTTP surface for recipients and shops (ASGI): tracking, unsubscribe, webhooks."""
