"""Real servers on loopback for tests: a fault-injecting SMTP server and a DNS server."""
