"""``crm-scorer``: run the worker or the demo, produce or replay events, look up scores, ..."""

from __future__ import annotations

import gc
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from schemas.errors import CrmScorerError, EventRejected, UnknownEventType
from schemas.events import decode_event
from schemas.json_schema import wire_json_schema
from streams.commands.options import (
    FileArgument,
    FormatOption,
    ItemMapOption,
    MapOption,
    PresetOption,
    checked_item_maps,
    checked_rate,
    parse_as_of,
)
from streams.commands.transactions import FileFormat, Transactions
from streams.settings import Settings, load_settings

if TYPE_CHECKING:
    from rich.console import Console

    from streams.commands.items import Catalogue

__all__ = ["cli", "main"]

logger = logging.getLogger(__name__)

cli = typer.Typer(
    name="crm-scorer",
    help="Real-time CRM scorer: churn risk, segments, value, sentiment and recommendations "
    "from a Kafka event stream into Redis. Settings come from CRM_* environment variables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        return load_settings()
    except CrmScorerError as exc:
        raise _fail(str(exc)) from None


@cli.command()
def worker(
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for Kafka and Redis at start-up.")
    ] = 30.0,
) -> None:
    """Consume CRM_EVENTS_TOPIC, keep scores in Redis, publish alerts; serve /metrics."""
    settings = _settings()  # a bad setting stops start-up before the worker's imports
    from streams.worker import run_worker

    try:
        run_worker(settings, wait=wait)
    except CrmScorerError as exc:
        raise _fail(str(exc)) from None


@cli.command()
def demo(
    events: Annotated[
        int, typer.Option(help="Events to stream through the scorer.", min=1)
    ] = 20_000,
    customers: Annotated[int, typer.Option(help="Simulated customers.", min=1)] = 800,
    seed: Annotated[int, typer.Option(help="Seed of the simulated stream.")] = 7,
    bad_ratio: Annotated[
        float, typer.Option(help="Share of malformed messages mixed in.", min=0.0, max=0.5)
    ] = 0.01,
    workers: Annotated[
        int,
        typer.Option(help="Workers in the consumer group, sharing one model.", min=1, max=8),
    ] = 1,
) -> None:
    """Run the scorer end to end on a generated stream (starts Tansu and redis-server if needed)."""
    from streams.commands.demo import DemoOptions, run_demo

    options = DemoOptions(
        events=events, customers=customers, seed=seed, bad_ratio=bad_ratio, workers=workers
    )
    try:
        run_demo(options)
    except CrmScorerError as exc:
        raise _fail(str(exc)) from None


@cli.command()
def produce(
    file: Annotated[str, typer.Argument(help="JSON-lines file of events, or - for stdin.")] = "-",
) -> None:
    """Send JSON-lines events to CRM_EVENTS_TOPIC, keyed by customer_id, exactly as written."""
    from streams.commands.producer import EventProducer

    settings = _settings()
    stream = sys.stdin.buffer if file == "-" else None
    if stream is None and not Path(file).is_file():
        raise _fail(f"no such file: {file}")
    sent = rejected = skipped = 0
    try:
        with EventProducer(settings) as producer:
            handle = stream if stream is not None else Path(file).open("rb")  # noqa: SIM115
            try:
                for line in handle:
                    raw = line.rstrip(b"\r\n")
                    if not raw.strip():
                        continue
                    try:
                        decode_event(raw)
                    except EventRejected:
                        rejected += 1
                    except UnknownEventType:
                        skipped += 1
                    producer.send_raw(raw)
                    sent += 1
            finally:
                if stream is None:
                    handle.close()
    except CrmScorerError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"sent {sent} events to {settings.events_topic}")
    if rejected:
        typer.echo(
            f"{rejected} of them are invalid: the worker sends them to {settings.dlq_topic}"
            " with the reason"
        )
    if skipped:
        typer.echo(f"{skipped} of them have a type this scorer does not know: counted and skipped")


def _read_catalogue(
    file: Path, preset: str | None, maps: list[str] | None, file_format: FileFormat | None
) -> Catalogue:
    """A catalogue file's items; a file that cannot be read ends the command."""
    from streams.commands.items import load_catalogue

    try:
        catalogue = load_catalogue(file, preset=preset, maps=maps or (), file_format=file_format)
    except CrmScorerError as exc:
        raise _fail(str(exc)) from None
    if catalogue.rejected:
        reasons = ", ".join(f"{r} {n:,}" for r, n in catalogue.rejected.most_common())
        typer.echo(f"left out of the catalogue: {reasons}", err=True)
        for reason, example in catalogue.examples.items():
            typer.echo(f"  {reason}: {example}", err=True)
    return catalogue


def _send_catalogue(
    settings: Settings,
    file: Path,
    preset: str | None,
    maps: list[str] | None,
    file_format: FileFormat | None,
    wait: float,
) -> tuple[Catalogue, int]:
    """Read a catalogue file and send it; what was read and how many items were sent."""
    from streams.commands.items import send_catalogue

    catalogue = _read_catalogue(file, preset, maps, file_format)
    try:
        return catalogue, send_catalogue(settings, catalogue.items, wait=wait)
    except CrmScorerError as exc:
        raise _fail(str(exc)) from None


@cli.command()
def items(
    file: Annotated[
        Path,
        typer.Argument(
            help="Catalogue: CSV (one row per item, or transactions: rows are gathered per "
            "item) or JSON lines in CRM_ITEMS_TOPIC's format; gzip allowed.",
            metavar="FILE",
            show_default=False,
        ),
    ],
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset",
            help="Column layout of a known source: online-retail (StockCode, Description, "
            "UnitPrice).",
            metavar="NAME",
            show_default=False,
        ),
    ] = None,
    maps: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="Source column of a catalogue field, FIELD=Column, comma-separated or repeated; "
            "applied over --preset (item_id, name, category, brand, price, description, "
            "available).",
            metavar="FIELD=Column",
            callback=checked_item_maps,
            show_default=False,
        ),
    ] = None,
    file_format: FormatOption = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for Kafka.")] = 30.0,
) -> None:
    """Send a product catalogue to CRM_ITEMS_TOPIC, one record per item keyed by item_id."""
    settings = _settings()
    catalogue, sent = _send_catalogue(settings, file, preset, maps, file_format, wait)
    typer.echo(f"sent {sent:,} items ({catalogue.available:,} available) to {settings.items_topic}")


def _read_transactions(
    console: Console,
    file: Path,
    preset: str | None,
    maps: list[str] | None,
    file_format: FileFormat | None,
) -> Transactions:
    """The file's events for replay and backtest; a file that cannot be read ends the command."""
    from streams.commands.transactions import load_transactions

    try:
        with console.status(f"reading {file}"):
            return load_transactions(file, preset=preset, maps=maps or (), file_format=file_format)
    except CrmScorerError as exc:
        raise _fail(str(exc)) from None


@cli.command()
def replay(
    file: FileArgument,
    preset: PresetOption = None,
    maps: MapOption = None,
    file_format: FormatOption = None,
    rate: Annotated[
        str | None,
        typer.Option(
            help="Events per second: 500/s or 500; max (the default) sends as fast as possible.",
            metavar="N/s",
            callback=checked_rate,
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(help="Send only the first N events in event-time order.", min=1),
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for Kafka.")] = 30.0,
    send_items: Annotated[
        bool,
        typer.Option(
            "--items/--no-items",
            help="First send the catalogue the file implies to CRM_ITEMS_TOPIC (with a preset "
            "that has one: online-retail).",
        ),
    ] = False,
) -> None:
    """Send a transactions file to CRM_EVENTS_TOPIC as events, in event-time order."""
    from rich.console import Console

    from streams.commands.replay import parse_rate, print_report
    from streams.commands.replay import replay as send_replay

    settings = _settings()
    console = Console()
    transactions = _read_transactions(console, file, preset, maps, file_format)
    if send_items:
        if preset is None:
            raise _fail("--items needs --preset: the catalogue's columns come from it")
        _, sent = _send_catalogue(settings, file, preset, None, file_format, wait)
        console.print(f"sent {sent:,} catalogue items to {settings.items_topic}")
    try:
        events = transactions.events[:limit]
        result = send_replay(settings, events, rate=parse_rate(rate), console=console, wait=wait)
    except CrmScorerError as exc:
        raise _fail(str(exc)) from None
    print_report(console, transactions, result, settings.events_topic)


@cli.command()
def backtest(
    file: FileArgument,
    as_of: Annotated[
        str,
        typer.Option(
            "--as-of",
            help="Score as of this moment (ISO-8601; no offset means UTC); later events are "
            "ignored.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option(help="Where to write the scores (CSV, one row per customer).")
    ] = Path("scores.csv"),
    preset: PresetOption = None,
    maps: MapOption = None,
    file_format: FormatOption = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Workers of one consumer group to split the customers over (as Kafka's "
            "default partitioner over CRM_TOPIC_PARTITIONS), syncing their group model every "
            "CRM_MODEL_SYNC_SECONDS of event time.",
            min=1,
            max=1024,
        ),
    ] = 1,
    items_file: Annotated[
        Path | None,
        typer.Option(
            "--items",
            help="A catalogue read before the events (JSON lines in CRM_ITEMS_TOPIC's format, "
            "or CSV with --items-preset / --items-map): recommendations come from it.",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    items_preset: Annotated[
        str | None,
        typer.Option("--items-preset", help="Column layout of the catalogue file.", metavar="NAME"),
    ] = None,
    items_maps: ItemMapOption = None,
    report: Annotated[
        Path | None,
        typer.Option(
            # "\\[": rich, which renders the help, would read "[report]" as markup.
            help="Also judge the scores on the file's events after --as-of and write one HTML "
            "page of plots here (needs the report extra: pip install 'crm-scorer\\[report]').",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    horizon_days: Annotated[
        float,
        typer.Option(help="Days after --as-of the report judges the scores on.", min=1.0),
    ] = 90.0,
) -> None:
    """Run the worker's models in-process over a file's events before --as-of; write scores."""
    from rich.console import Console

    from streams.commands.backtest import run_backtest, write_scores
    from streams.commands.progress import event_progress
    from streams.commands.report import require_plotting, write_backtest_report
    from streams.commands.report.outcomes import PurchaseRecorder
    from streams.commands.transactions import read_transactions
    from streams.numeric_threads import one_numeric_thread

    moment = parse_as_of(as_of)
    settings = _settings()
    one_numeric_thread()
    for option, path in (("--out", out), ("--report", report)):
        try:
            if path is not None:
                path.touch()  # an unwritable file fails now, not after the whole backtest
        except OSError as exc:
            raise _fail(f"cannot write {option} {path}: {exc.strerror}") from None
    if report is not None:
        try:
            require_plotting()
        except CrmScorerError as exc:
            raise _fail(str(exc)) from None
    console = Console(stderr=True)
    catalogue = None
    if items_file is not None:
        catalogue = _read_catalogue(items_file, items_preset, items_maps, None).items
    try:
        with console.status(f"reading {file}"):
            stream = read_transactions(
                file,
                preset=preset,
                maps=maps or (),
                file_format=file_format,
                before=moment.timestamp(),
            )
        recorder = PurchaseRecorder()
        with event_progress(console, stream.events_before, "scoring") as progress:
            result = run_backtest(
                recorder.watch(stream) if report is not None else stream,
                moment,
                settings.scorer_config(),
                workers=workers,
                partitions=settings.topic_partitions,
                sync_seconds=settings.model_sync_seconds,
                progress=progress,
                items=catalogue,
            )
    except CrmScorerError as exc:
        raise _fail(str(exc)) from None
    written = write_scores(result.rows, out)
    rejects = stream.report
    typer.echo(
        f"scored {result.events:,} events before {moment.isoformat()} "
        f"({result.ignored_after_cutoff:,} later ones ignored, {result.rescores:,} re-scores of "
        f"silent customers) in {result.seconds:.1f}s"
    )
    typer.echo(
        f"{result.workers} worker(s) over {settings.topic_partitions} partitions ended on "
        f"version {result.model_version} of the group model"
    )
    if result.duplicates:
        typer.echo(f"{result.duplicates:,} events repeated an earlier event's id and were ignored")
    typer.echo(f"wrote {written:,} customers' scores to {out}")
    if rejects.rejected:
        reasons = ", ".join(
            f"{reason} {count:,}" for reason, count in rejects.reasons.most_common()
        )
        typer.echo(
            f"{rejects.rejected:,} of {rejects.rows:,} rows did not become events: {reasons}"
        )
    if report is not None:
        for reason in write_backtest_report(report, result, recorder.history(), file.name,
                                            horizon_days):  # fmt: skip
            typer.echo(f"report: {reason}")
        typer.echo(f"wrote the report to {report}")


@cli.command()
def forget(
    customer_id: Annotated[str, typer.Argument(help="The customer's id, as the CRM knows it.")],
    requested_by: Annotated[
        str, typer.Option(help="Who asks: recorded in the audit record.", show_default=False)
    ],
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the worker's audit record (0: no wait).")
    ] = 120.0,
) -> None:
    """Erase a customer (GDPR art. 17): send an erasure request, print its audit record."""
    from streams.commands.erasure import await_audit_record, send_erasure_request

    settings = _settings()
    try:
        request_id, audit = send_erasure_request(settings, customer_id, requested_by)
    except CrmScorerError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"sent erasure request {request_id} to {settings.events_topic}", err=True)
    document = await_audit_record(audit, request_id, wait)
    if document is not None:
        typer.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return
    if wait > 0:
        raise _fail(
            f"no audit record of {request_id} on {settings.audit_topic} within {wait:.0f}s: "
            "is a worker of CRM_APP_ID running?",
            1,
        )


@cli.command()
def lookup(customer_id: Annotated[str, typer.Argument(help="The customer's id.")]) -> None:
    """Print a customer's score hash from Redis as JSON."""
    import redis

    from schemas.scores import Score
    from streams.pseudonyms import pseudonymiser

    settings = _settings()
    client = redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=5.0)
    try:
        fields = client.hgetall(settings.redis_prefix + pseudonymiser(settings)(customer_id))
    except redis.RedisError as exc:
        raise _fail(f"cannot read from Redis at CRM_REDIS_URL: {exc}") from None
    if not fields:
        raise _fail(f"no score for customer {customer_id!r} under {settings.redis_prefix!r}", 1)
    score = Score.from_redis(fields)
    typer.echo(orjson.dumps(score.model_dump(mode="json"), option=orjson.OPT_INDENT_2).decode())


@cli.command()
def schema() -> None:
    """Print the JSON Schema of events, scores, alerts and dead letters."""
    typer.echo(orjson.dumps(wire_json_schema(), option=orjson.OPT_INDENT_2).decode())


def main() -> None:
    """Entry point of the ``crm-scorer`` command."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # kafka-python warns about its own event loop on busy machines; only its errors matter here.
    logging.getLogger("kafka").setLevel(logging.ERROR)
    try:
        cli()
    finally:
        # Readers left to the collector go while Arrow is whole (apache/arrow#34314).
        gc.collect()


if __name__ == "__main__":
    main()
