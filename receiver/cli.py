"""The `vod-receiver` command: a Flask CLI group with the receiver's commands."""
import json
import os
import sys

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext
from marshmallow import ValidationError
from tabulate import tabulate

from . import admin_schemas, db, export, queries, spool
from . import handlers
from .handlers import replay


def _create_app():
    from . import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_version_option=False)
def main():
    """Receive and store Tencent Cloud VOD event notifications."""


@click.group("db")
def db_group():
    """Manage the database schema."""


@db_group.command("upgrade")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision):
    """Migrate the database to REVISION (default: the newest)."""
    db.upgrade(current_app.config["RECEIVER_DATABASE_URL"], revision)
    click.echo(f"database at {revision}: {_safe_url()}")


@db_group.command("downgrade")
@click.argument("revision")
@with_appcontext
def db_downgrade(revision):
    """Migrate the database back to REVISION."""
    from alembic import command

    command.downgrade(db.alembic_config(current_app.config["RECEIVER_DATABASE_URL"]), revision)
    click.echo(f"database at {revision}")


@db_group.command("current")
@with_appcontext
def db_current():
    """Show the database's migration revision."""
    from alembic import command

    command.current(db.alembic_config(current_app.config["RECEIVER_DATABASE_URL"]))


@click.group("spool")
def spool_group():
    """Deliveries kept on disk while the database was unavailable."""


@spool_group.command("drain")
@with_appcontext
def spool_drain():
    """Store every spooled delivery in the database now."""
    spool_dir = current_app.config["RECEIVER_SPOOL_DIR"]
    drained = spool.drain(db.writer(), spool_dir)
    left = spool.depth(spool_dir)
    click.echo(f"drained {drained}, {left} left in {spool_dir}")
    if left:
        sys.exit(1)


@spool_group.command("status")
@with_appcontext
def spool_status():
    """Show how many deliveries wait in the spool."""
    spool_dir = current_app.config["RECEIVER_SPOOL_DIR"]
    click.echo(f"{spool.depth(spool_dir)} waiting in {spool_dir}")


@click.group("events")
def events_group():
    """Look up the VOD events the receiver stored."""


@click.group("rejections")
def rejections_group():
    """Look up the requests the receiver refused, and why."""


_json_option = click.option("--json", "output", flag_value="json",
                            help="Print JSON, as the admin API answers.")
_jsonl_option = click.option("--jsonl", "output", flag_value="jsonl",
                             help="Print one JSON object per line.")


class _Rate(click.ParamType):
    """N or N/s: how many a second."""

    name = "N/s"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        text = value.strip().removesuffix("/s")
        try:
            rate = float(text)
        except ValueError:
            rate = 0
        if not 0 < rate < float("inf"):
            self.fail(f"{value!r} is not a rate: give a positive number a second, e.g. 10/s",
                      param, ctx)
        return rate


_TIME_RANGE = [
    click.option("--received-after",
                 help="Only rows received at or after this ISO 8601 instant (UTC if no offset)."),
    click.option("--received-before", help="Only rows received before this ISO 8601 instant."),
]
# The admin API's event filters; `events list`, `events export` and `replay` select with them.
_EVENT_FILTERS = [
    click.option("--event-type", help="EventType, e.g. NewFileUpload."),
    click.option("--file-id", help="FileId the event is about."),
    click.option("--source-context", help="SourceContext, exactly."),
    click.option("--source-context-prefix", help="SourceContext starting with this."),
    click.option("--procedure-task-id", help="ProcedureTaskId of the upload."),
    click.option("--task-id", help="TaskId of the event."),
    click.option("--source-type", help="SourceType, e.g. Upload or Record."),
    click.option("--format", "format_", type=click.Choice(admin_schemas.FORMATS),
                 help="Body format."),
    click.option("--channel", type=click.Choice(admin_schemas.CHANNELS),
                 help="How the event arrived."),
]


def _options(*groups):
    """Apply click options (lists of them, in order) to a command."""
    def decorate(command):
        for option in reversed([option for group in groups for option in group]):
            command = option(command)
        return command

    return decorate


def _listing_options(command):
    """The paging, time-range and output options every `list` command shares."""
    options = [
        *_TIME_RANGE,
        click.option("--limit", type=int, default=queries.DEFAULT_LIMIT, show_default=True,
                     help=f"Rows per page (at most {queries.MAX_LIMIT})."),
        click.option("--cursor", help="Start after the page that printed this cursor."),
        click.option("--all", "all_pages", is_flag=True,
                     help="Follow the cursor to the last page."),
        _json_option,
        _jsonl_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


@events_group.command("list")
@_options(_EVENT_FILTERS)
@_listing_options
@with_appcontext
def events_list(output, all_pages, format_, **options):
    """List stored events, newest first, with the admin API's filters."""
    _list(queries.list_events, admin_schemas.event_query, admin_schemas.EventSummarySchema,
          {**options, "format": format_}, output, all_pages,
          ("id", "received_at", "event_type", "format", "channel", "file_id", "source_context",
           "procedure_task_id", "delivery_count"))


@events_group.command("show")
@click.argument("event_id", type=int)
@click.option("--raw", is_flag=True, help="Write the body exactly as received, nothing else.")
@_json_option
@with_appcontext
def events_show(event_id, raw, output):
    """Show one stored event: fields, deliveries, headers and body."""
    with db.session_factory()() as session:
        _show(queries.get_event(session, event_id), "event", admin_schemas.event, raw, output)


@events_group.command("stats")
@_json_option
@with_appcontext
def events_stats(output):
    """Counts by event type, day and rejection reason, and the delivery ledger."""
    with db.session_factory()() as session:
        data = queries.stats(session)
    data["spool_depth"] = spool.depth(current_app.config["RECEIVER_SPOOL_DIR"])
    if output == "json":
        return _echo_json(admin_schemas.stats.dump(data))
    ledger = data["ledger"]
    click.echo(f"deliveries {ledger['deliveries']} = events {ledger['events']} + duplicates "
               f"{ledger['duplicates']} + rejections {ledger['rejections']}; "
               f"{data['spool_depth']} waiting in the spool")
    handled = data["handling"]
    click.echo(f"events {ledger['events']} = processed {handled['processed']} + failed "
               f"{handled['failed']} + dead {handled['dead']} + pending {handled['pending']} "
               f"({handled['running']} running) + no handler {handled['no_handler']}")
    for title, rows in (("by event type", data["by_event_type"]), ("by day (UTC)", data["by_day"]),
                        ("rejections by reason", data["rejections_by_reason"])):
        if rows:
            click.echo(f"\n{title}:\n{_table(rows, headers='keys')}")


@events_group.command("export")
@_options(_EVENT_FILTERS, _TIME_RANGE)
@click.option("--state", type=click.Choice(replay.STATES),
              help="Only events in this processing state.")
@click.argument("folder", type=click.Path(file_okay=False))
@with_appcontext
def events_export(folder, state, format_, **options):
    """Write the selected events' exact bodies into FOLDER as fixture files, with a manifest."""
    selection = replay.Selection("events", _event_filters({**options, "format": format_}), state)
    try:
        entries = export.export(current_app, selection, folder)
    except export.ExportError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"exported {_events(len(entries))} to {folder}")


@click.command("replay")
@_options(_EVENT_FILTERS, _TIME_RANGE)
@click.option("--id", "ids", type=int, multiple=True, help="This event (repeat for several).")
@click.option("--state", type=click.Choice(replay.STATES),
              help="Only events in this processing state.")
@click.option("--reason", help="Why, for the record of this replay.")
@click.option("--to", "url", help="Re-POST the exact stored bytes (with their Content-Type) to "
                                  "this URL, e.g. a staging receiver, instead of running the "
                                  "handlers.")
@click.option("--rate", type=_Rate(), metavar="N/s",
              help="With --to: at most N callbacks a second, e.g. 10/s.")
@click.option("--queue", is_flag=True, help="Mark them pending for `vod-receiver work` instead of "
                                            "running the handlers here.")
@click.option("--dry-run", is_flag=True, help="Re-parse the stored bytes with today's code and "
                                              "show what would change; act on nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before acting.")
@with_appcontext
def replay_command(ids, state, reason, url, rate, queue, dry_run, yes, format_, **options):
    """Run the handlers again for stored events selected by filters and state, or re-POST them."""
    if rate is not None and url is None:
        raise click.UsageError("--rate applies to --to only")
    if queue and url is not None:
        raise click.UsageError("--queue and --to are two different targets: give one")
    app = current_app._get_current_object()
    selection = replay.Selection("events", _event_filters({**options, "format": format_}), state,
                                 tuple(ids) or None)
    with db.session_factory(app)() as session:
        row_ids = selection.row_ids(session)
    if not row_ids:
        click.echo("no events match")
        return
    try:
        if url is not None:
            target = replay.Post(url, rate)
        elif queue:
            target = replay.Queue(app)
        else:  # the handlers `vod-receiver work` runs: RECEIVER_HANDLERS
            handlers.registry.load(app.config["RECEIVER_HANDLERS"])
            if not handlers.registry and not dry_run:
                # Run with none, every event would be settled as no_handler: not what was meant.
                raise click.ClickException("no handlers registered: set RECEIVER_HANDLERS, e.g. "
                                           "NewFileUpload=myapp.hooks:video_uploaded")
            target = replay.Handlers(app, handlers.registry)
    except replay.ReplayError as exc:
        raise click.UsageError(str(exc)) from None
    except handlers.HandlerConfigError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{_events(len(row_ids))} selected; target: {target.name}")
    if dry_run:
        changes = replay.preview(app, "events", row_ids)
        for change in changes:
            click.echo(_change_line(change))
        click.echo(f"dry run: {len(changes)} of {len(row_ids)} would parse differently today; "
                   "nothing was done")
        return
    if not yes:
        click.confirm(f"Replay {_events(len(row_ids))} to {target.name}?", abort=True)
    done = replay.run(app, selection, row_ids, target, reason=reason, origin="cli", progress=True)
    for item in replay.failed_items(app, done, limit=20):
        click.echo(f"  {item.row_id}: {item.outcome}: {item.detail}")
    counts = ", ".join(f"{outcome} {count}" for outcome, count in done.outcomes.items())
    click.echo(f"replay {done.id}: {counts}")
    if not replay.succeeded(done.outcomes):
        sys.exit(1)


@rejections_group.command("list")
@click.option("--reason", help="Why it was refused, e.g. invalid_json.")
@_listing_options
@with_appcontext
def rejections_list(output, all_pages, **options):
    """List refused requests, newest first."""
    _list(queries.list_rejections, admin_schemas.rejection_query,
          admin_schemas.RejectionSummarySchema, options, output, all_pages,
          ("id", "received_at", "reason", "status_code", "message", "remote_addr", "body_size"))


@rejections_group.command("show")
@click.argument("rejection_id", type=int)
@click.option("--raw", is_flag=True, help="Write the body exactly as received, nothing else.")
@_json_option
@with_appcontext
def rejections_show(rejection_id, raw, output):
    """Show one refused request: reason, details, headers and body."""
    with db.session_factory()() as session:
        _show(queries.get_rejection(session, rejection_id), "rejection", admin_schemas.rejection,
              raw, output)


def _event_filters(options):
    """The event filters given as options, checked as the admin API checks its parameters."""
    try:
        return admin_schemas.event_filters.load({k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        name, problems = next(iter(exc.messages.items()))
        raise click.UsageError(f"--{name.replace('_', '-')}: {' '.join(problems)}") from None


def _events(count):
    return f"{count} event{'' if count == 1 else 's'}"


def _change_line(change):
    if change.refusal is not None:
        return (f"  {change.id} {change.label}: refused today: {change.refusal.reason}: "
                f"{change.refusal.message}")
    fields = "; ".join(f"{name} {old!r} -> {new!r}" for name, (old, new) in change.fields.items())
    return f"  {change.id} {change.label}: {fields}"


def _list(query, arguments, schema, options, output, all_pages, columns):
    try:
        filters, limit, cursor = arguments.load({k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        name, problems = next(iter(exc.messages.items()))
        raise click.UsageError(f"--{name.replace('_', '-')}: {' '.join(problems)}") from None
    items, dump = [], schema(many=True).dump
    with db.session_factory()() as session:
        while True:
            page = query(session, filters, limit, cursor)
            cursor = page.next_cursor
            if output == "jsonl":  # streamed: --all over a large table starts printing at once
                for item in dump(page.items):
                    _echo_json(item)
            else:
                items += dump(page.items)
            if not (all_pages and cursor):
                break
    if output == "json":
        _echo_json({"items": items, "next_cursor": cursor})
    elif output != "jsonl":
        click.echo(_table([[item[c] for c in columns] for item in items], headers=columns))
    if cursor and output != "json":  # on stderr: stdout stays a table or JSON lines
        click.echo(f"more: --cursor {cursor}", err=True)


def _show(row, what, schema, raw, output):
    if row is None:
        raise click.ClickException(f"no {what} with this id")
    if raw:
        click.echo(row.body, nl=False)  # bytes: written to the binary stream unchanged
        return
    data = schema.dump(row)
    if output == "json":
        return _echo_json(data)
    headers, body = data.pop("headers"), data.pop("body")
    click.echo(_table(data.items(), tablefmt="plain"))
    click.echo("\nheaders:\n" + _table(headers.items(), tablefmt="plain"))
    click.echo(f"\nbody ({data['body_encoding']}):\n{body}")


def _table(rows, **kwargs):
    # IDs stay as sent: "0123" is not the number 123, nor 5285890784273533167 a float.
    return tabulate(rows, disable_numparse=True, **kwargs)


def _echo_json(data):
    click.echo(json.dumps(data, ensure_ascii=False))


@click.command("serve")
@click.option("--bind", "-b", help="Address to listen on (default: RECEIVER_BIND or 127.0.0.1:8000).")
@click.option("--workers", "-w", type=int, help="Worker processes (default: RECEIVER_WORKERS or from CPUs).")
@click.option("--migrate/--no-migrate", default=True, show_default=True,
              help="Upgrade the database before serving.")
@with_appcontext
def serve(bind, workers, migrate):
    """Migrate the database, then serve the receiver with gunicorn."""
    if migrate:
        db.upgrade(current_app.config["RECEIVER_DATABASE_URL"])
    args = [sys.executable, "-m", "gunicorn", "--config", "python:receiver.gunicorn_conf"]
    if bind:
        args += ["--bind", bind]
    if workers:
        args += ["--workers", str(workers)]
    os.execv(sys.executable, [*args, "receiver:create_app()"])


@click.command("work")
@click.option("--once", is_flag=True, help="Run what is due now, then exit (for cron and tests).")
@with_appcontext
def work(once):
    """Run the application's handlers on stored events (RECEIVER_HANDLERS, @handlers.on)."""
    from . import handlers
    from .handlers import worker

    try:
        handlers.registry.load(current_app.config["RECEIVER_HANDLERS"])
        lock = worker.worker_lock(current_app.config["RECEIVER_DATABASE_URL"])
    except (handlers.HandlerConfigError, worker.WorkerBusy) as exc:
        raise click.ClickException(str(exc)) from None
    if not handlers.registry:
        # Working without handlers would settle every new event as no_handler for good.
        raise click.ClickException("no handlers registered: set RECEIVER_HANDLERS, e.g. "
                                   "NewFileUpload=myapp.hooks:video_uploaded or myapp.hooks")
    runner = worker.Worker(current_app._get_current_object())
    bind = current_app.config.get("RECEIVER_WORKER_METRICS_BIND")
    if bind:
        from .metrics import serve_worker_metrics

        try:
            serve_worker_metrics(runner, bind)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"RECEIVER_WORKER_METRICS_BIND={bind}: {exc}") from None
    click.echo(f"worker {runner.name} on {_safe_url()}: handling "
               f"{', '.join(sorted(handlers.registry.event_types())) or 'nothing'}", err=True)
    try:
        runner.run(once=once)
    finally:
        if lock is not None:
            lock.close()
    click.echo(f"worker {runner.name} stopped: " + ", ".join(
        f"{count} {outcome}" for outcome, count in runner.counts.items()), err=True)


def _safe_url():
    from sqlalchemy.engine import make_url

    return make_url(current_app.config["RECEIVER_DATABASE_URL"]).render_as_string(hide_password=True)


def init_app(app):
    """Add the receiver's commands to the app's CLI."""
    for command in (db_group, spool_group, events_group, rejections_group, replay_command, serve,
                    work):
        app.cli.add_command(command)


if __name__ == "__main__":
    main()
