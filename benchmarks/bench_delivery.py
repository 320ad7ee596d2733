"""Benchmark of delivery (D2–D4): a campaign of 25 KB personalized messages sent end to end by
`patron worker --processes N` (claims, group-committed attempt marks and outcomes, throttles,
SMTP over pooled aiosmtplib connections) to a fast local sink (benchmarks/sink.py), next to
the local limit measured in the same run: aiosmtplib sending pre-built 25 KB messages to the same
sink from N processes over the same number of connections, with no database at all.

    .venv/bin/python benchmarks/bench_delivery.py --size 1000000 [--pg-url postgresql://…/postgres]

Messages come from a cheap factory (a 25 KB body with a personalized header, unique Message-ID;
no rendering or DKIM), so the engine's own cost is what is measured; with PostgreSQL a second
run (up to PIPELINE_SIZE recipients) uses the real pipeline: the shipped newsletter rendered
per recipient, assembled and DKIM-signed, as `patron worker` does by default. The worker
processes' peak RSS is sampled throughout. SQLite runs one worker (one sender at a time by
design); PostgreSQL runs N.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, insert, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

FULL_SIZE = 1_000_000
PROCESSES = 2
CONNECTIONS = 64  # per process: enough in flight to hide the group-commit latency
MESSAGE_BYTES = 25_000
PIPELINE_SIZE = 50_000  # recipients of the real-pipeline run (rendering + DKIM per message)
DOMAINS = ("example.com", "example.net", "example.org", "example.lu")
KEY = "benchmark-key-0123456789abcdef"
SENDER = "news@shop.example"


def email_of(contact_id: int) -> str:
    return f"customer.{contact_id}@{DOMAINS[contact_id % len(DOMAINS)]}"


def _body() -> bytes:
    line = "Spring sale: everything you loved last year is back, at a price you will love more."
    lines, size = [], 0
    while size < MESSAGE_BYTES - 600:
        lines.append(line[: 76])
        size += 78
    return ("\r\n".join(lines) + "\r\n").encode()


class CheapFactory:
    """A 25 KB message per recipient: personalized headers, a unique Message-ID, a fixed body."""

    def __init__(self) -> None:
        self._body = _body()

    def build(
        self, campaign_id: int, contact_id: int, variant: int, discount_code: str | None,
        message_id_hint: str,
    ) -> Any:
        from campaigns.delivery.protocols import OutgoingMessage

        email = email_of(contact_id)
        message_id = f"<{message_id_hint}.{secrets.token_hex(6)}@shop.example>"
        head = (
            f"From: Shop <{SENDER}>\r\nTo: <{email}>\r\nSubject: Spring sale, customer "
            f"{contact_id}\r\nDate: Mon, 15 Jun 2026 12:00:00 +0000\r\nMessage-ID: {message_id}"
            "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Dear customer {contact_id},\r\n"
        ).encode()
        return OutgoingMessage(SENDER, email, head + self._body, False, message_id)


def make_factory(context: Any) -> CheapFactory:
    """`patron worker --factory benchmarks.bench_delivery:make_factory`."""
    return CheapFactory()


# -- the sink ---------------------------------------------------------------------------------


def start_sink() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "sink.py")], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[1])
    return proc, port


def stop_sink(proc: subprocess.Popen[str]) -> int:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return int(out.split()[-1])


# -- the local limit --------------------------------------------------------------------------


def _reference_process(
    port: int, connections: int, count: int, ready: Any, start: Any, out: Any
) -> None:
    import aiosmtplib

    data = CheapFactory().build(1, 1, 0, None, "ref").data

    async def main() -> float:
        per = [count // connections + (1 if i < count % connections else 0)
               for i in range(connections)]
        clients = []
        for n in per:
            if n:
                client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                                         local_hostname="bench.test")
                await client.connect()
                clients.append((client, n))
        ready.put(True)
        await asyncio.get_running_loop().run_in_executor(None, start.wait)
        began = time.perf_counter()

        async def one(client: Any, n: int) -> None:
            for i in range(n):
                await client.sendmail(SENDER, [email_of(i)], data)

        await asyncio.gather(*(one(c, n) for c, n in clients))
        seconds = time.perf_counter() - began
        for client, _ in clients:
            await client.quit()
        return seconds

    out.put(asyncio.run(main()))


def reference_rate(port: int, processes: int, connections: int, count: int) -> float:
    """Messages per second of plain aiosmtplib, pre-built bytes, same sink and connections."""
    ctx = multiprocessing.get_context("spawn")
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    per = count // processes
    procs = [
        ctx.Process(target=_reference_process, args=(port, connections, per, ready, start, out))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    for _ in procs:  # every process imported and connected: start the clock for all at once
        ready.get(timeout=120)
    start.set()
    seconds = max(out.get(timeout=600) for _ in procs)
    for p in procs:
        p.join()
    return per * processes / seconds


# -- the campaign -----------------------------------------------------------------------------


def populate(url: str, size: int, *, real_template: bool = False) -> float:
    """Migrate, add ``size`` confirmed contacts on one list and a campaign to it, and start it
    (the audience freeze writes the send log). Returns the seconds the start took. With
    ``real_template`` the campaign is the shipped newsletter, for the real pipeline."""
    from benchmarks.bench_render import FIRST, LAST, newsletter_content
    from campaigns.audience import freeze_audience
    from campaigns.delivery import controls
    from campaigns.models import Campaign, CampaignKind, CampaignList
    from campaigns.rendering import load_shipped_template
    from campaigns.service import CampaignSpec, create_campaign
    from lists.models import Contact, MailingList, Subscription
    from patron.db import make_engine, migrate

    engine = make_engine(url)
    migrate(engine)
    now = datetime.now(UTC)
    with Session(engine) as s, s.begin():
        lst = MailingList(name="customers", double_opt_in=False, created_at=now)
        s.add(lst)
        s.flush()
        for lo in range(1, size + 1, 20_000):
            ids = range(lo, min(size, lo + 19_999) + 1)
            s.execute(insert(Contact), [
                {"id": i, "email": email_of(i), "first_name": FIRST[i % len(FIRST)],
                 "last_name": LAST[i % len(LAST)], "attributes": {}, "is_role": False,
                 "is_disposable": False, "orders_count": 0, "total_spent_cents": 0,
                 "created_at": now, "updated_at": now}
                for i in ids
            ])
            s.execute(insert(Subscription), [
                {"contact_id": i, "list_id": lst.id, "status": "confirmed", "created_at": now,
                 "updated_at": now, "confirmed_at": now}
                for i in ids
            ])
        if real_template:
            campaign = create_campaign(s, CampaignSpec(
                name="Summer", kind=CampaignKind.NEWSLETTER, template="newsletter",
                template_source=load_shipped_template("newsletter").text,
                subject="{{ contact.first_name_or('Hello') }}, 20 % off the summer collection",
                lists=["customers"], content=newsletter_content(),
            ), now)
        else:
            campaign = Campaign(name="spring", slug="spring", kind="newsletter",
                                template="plain", template_source="", subject="Spring",
                                created_at=now, updated_at=now)
            s.add(campaign)
            s.flush()
            s.add(CampaignList(campaign_id=campaign.id, list_id=lst.id))
        campaign_id = campaign.id
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text(f"SELECT setval('contacts_id_seq', {size})"))
            conn.execute(text("ANALYZE"))
    began = time.perf_counter()
    with Session(engine) as s, s.begin():
        controls.send_now(
            s, campaign_id, datetime.now(UTC),
            lambda session, c, at: freeze_audience(session, c, KEY.encode(), at),
        )
    started = time.perf_counter() - began
    engine.dispose()
    return started


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def send(
    url: str, port: int, processes: int, connections: int, *,
    factory: str | None = "benchmarks.bench_delivery:make_factory",
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    env = {
        **os.environ,
        **(extra_env or {}),
        "PATRON_SECRET_KEY": KEY,
        "PATRON_SMTP__PORT": str(port),
        "PATRON_SMTP__POOL_SIZE": str(connections),
        "PATRON_SMTP__LOCAL_HOSTNAME": "bench.test",
        "PATRON_SMTP__MAX_MESSAGES_PER_CONNECTION": "1000",
        "PATRON_DELIVERY__RATE": "1000000",
        "PATRON_DELIVERY__PER_DOMAIN_CONCURRENCY": str(connections * processes),
        "PATRON_DELIVERY__POLL_SECONDS": "0.2",
    }
    args = [sys.executable, "-m", "patron", "--db", url, "worker", "--once", "--json"]
    if factory:
        args += ["--factory", factory]
    if processes > 1:
        args += ["--processes", str(processes)]
    began = time.perf_counter()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        pids = [proc.pid, *_children(proc.pid)]  # this process is a worker too
        peak = max([peak, *(_rss_kib(p) for p in pids)])
        time.sleep(0.5)
    out, _ = proc.communicate()
    seconds = time.perf_counter() - began
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers and their children
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"the worker failed with code {proc.returncode}")
    report = json.loads(out)
    workers = report.get("workers", [report])
    return {
        "processes": processes,
        "connections_per_process": connections,
        "delivered": report["delivered"],
        "seconds": round(seconds, 2),
        "msg_per_s": round(report["delivered"] / seconds, 1),
        # CPU of the worker processes (start-up included) per message: what a core spends on
        # claiming, building, sending and recording one; PostgreSQL and the sink come on top.
        "worker_cpu_ms_per_message": round(cpu * 1000 / max(1, report["delivered"]), 3),
        "peak_worker_rss_mb": round(peak / 1024, 1),
        "loop_lag_p99_ms": max(w["loop_lag_p99_ms"] for w in workers),
        "loop_lag_max_ms": max(w["loop_lag_max_ms"] for w in workers),
        "mark_batch_mean": max(w["commits"]["marks_mean_batch"] for w in workers),
        "mark_commit_ms": max(w["commits"]["marks_mean_ms"] for w in workers),
        "outcome_batch_mean": max(w["commits"]["outcomes_mean_batch"] for w in workers),
        "outcome_commit_ms": max(w["commits"]["outcomes_mean_ms"] for w in workers),
    }


def _pipeline_run(pg_url: str, port: int, size: int) -> dict[str, Any]:
    """The same campaign through the real pipeline (`patron worker` without a plugged-in
    factory): MJML newsletter rendered per recipient, MIME assembled, DKIM-signed (RSA 2048)."""
    from campaigns.message.dkim import generate_dkim_key

    url, drop = _pg_database(pg_url)
    with tempfile.TemporaryDirectory(prefix="patron-bench-dkim-") as tmp:
        key_file = Path(tmp) / "dkim.pem"
        key_file.write_bytes(generate_dkim_key(2048)[0])
        try:
            started = populate(url, size, real_template=True)
            figures = send(url, port, PROCESSES, CONNECTIONS, factory=None, extra_env={
                "PATRON_DKIM__DOMAIN": "shop.example",
                "PATRON_DKIM__SELECTOR": "s1",
                "PATRON_DKIM__PRIVATE_KEY_FILE": str(key_file),
            })
        finally:
            drop()
    figures["size"] = size
    figures["start_seconds"] = round(started, 2)
    return figures


def _pg_database(admin_url: str) -> tuple[str, Any]:
    admin = make_url(admin_url)
    if admin.drivername == "postgresql":
        admin = admin.set(drivername="postgresql+psycopg")
    name = f"patron_bench_delivery_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    return admin.set(database=name).render_as_string(hide_password=False), drop


def run(size: int, pg_url: str | None) -> dict[str, Any]:
    """Send a ``size``-recipient campaign on SQLite (1 worker) and, with ``pg_url`` (an
    administrative URL), on PostgreSQL (PROCESSES workers); measure the local limit first."""
    sink, port = start_sink()
    result: dict[str, Any] = {
        "name": "delivery",
        "size": size,
        "message_bytes": len(CheapFactory().build(1, 1, 0, None, "x").data),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
    }
    try:
        sample = max(200, min(size, 20_000))
        result["limit_1_process_msg_per_s"] = round(reference_rate(port, 1, CONNECTIONS, sample), 1)
        if pg_url:
            result["limit_msg_per_s"] = round(
                reference_rate(port, PROCESSES, CONNECTIONS, sample), 1
            )
            url, drop = _pg_database(pg_url)
            try:
                started = populate(url, size)
                pg = send(url, port, PROCESSES, CONNECTIONS)
                pg["start_seconds"] = round(started, 2)
                pg["ratio_to_limit"] = round(pg["msg_per_s"] / result["limit_msg_per_s"], 2)
                result["postgresql"] = pg
            finally:
                drop()
            result["postgresql_pipeline"] = _pipeline_run(pg_url, port, min(size, PIPELINE_SIZE))
            result["postgresql_pipeline"]["ratio_to_limit"] = round(
                result["postgresql_pipeline"]["msg_per_s"] / result["limit_msg_per_s"], 2
            )
        with tempfile.TemporaryDirectory(prefix="patron-bench-delivery-") as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"
            started = populate(url, size)
            lite = send(url, port, 1, CONNECTIONS)
            lite["start_seconds"] = round(started, 2)
            lite["ratio_to_limit"] = round(
                lite["msg_per_s"] / result["limit_1_process_msg_per_s"], 2
            )
            result["sqlite"] = lite
    finally:
        result["sink_received"] = stop_sink(sink)
    parts = []
    if "postgresql" in result:
        pg = result["postgresql"]
        parts.append(
            f"PostgreSQL, {PROCESSES} workers: {pg['msg_per_s']:,} msg/s end to end = "
            f"{pg['ratio_to_limit']:.2f} × the local limit ({result['limit_msg_per_s']:,} msg/s, "
            f"plain aiosmtplib from {PROCESSES} processes, same sink and connections); peak "
            f"worker RSS {pg['peak_worker_rss_mb']} MB"
        )
    if "postgresql_pipeline" in result:
        real = result["postgresql_pipeline"]
        parts.append(
            f"with the real pipeline (render + assemble + DKIM) on {real['size']:,} recipients: "
            f"{real['msg_per_s']:,} msg/s = {real['ratio_to_limit']:.2f} × the limit, the "
            f"workers spending {real['worker_cpu_ms_per_message']} ms of CPU per message (cheap "
            f"factory: {result['postgresql']['worker_cpu_ms_per_message']} ms)"
        )
    lite = result["sqlite"]
    parts.append(
        f"SQLite, 1 worker: {lite['msg_per_s']:,} msg/s = {lite['ratio_to_limit']:.2f} × "
        f"{result['limit_1_process_msg_per_s']:,} msg/s from 1 process; peak RSS "
        f"{lite['peak_worker_rss_mb']} MB"
    )
    result["summary"] = f"{size:,} recipients, {result['message_bytes']:,}-byte messages. " + (
        "; ".join(parts) + "."
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=FULL_SIZE, help="recipients")
    parser.add_argument("--pg-url", default=None, help="administrative PostgreSQL URL")
    args = parser.parse_args()
    print(json.dumps(run(args.size, args.pg_url)))


if __name__ == "__main__":
    main()
