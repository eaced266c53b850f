"""The `vod-receiver` command: the receiver's commands, each building the app when it needs it."""
import json
import logging
import os
import sys

import click
from flask import current_app
from flask.cli import ScriptInfo, with_appcontext
from marshmallow import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from tabulate import tabulate

from . import admin_schemas, auth, config, db, events, export, handlers, queries, reparse, spool
from .handlers import replay


def _create_app():
    from . import create_app

    return create_app()


class _Group(click.Group):
    """A group whose errors a user can cause end in one line, `Error: …`, and exit status 1.

    Tracebacks stay for bugs: only bad settings, unknown migration revisions and a database
    that cannot be reached or is not migrated are turned into a line.
    """

    def invoke(self, ctx):
        """Run the command, turning a user's error into a ClickException."""
        from alembic.util import CommandError
        from sqlalchemy.exc import DBAPIError

        try:
            return super().invoke(ctx)
        except (config.ConfigError, CommandError) as exc:
            raise click.ClickException(_first_line(exc)) from None
        except DBAPIError as exc:
            message = _database_error(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None


# Not Flask's FlaskGroup: its run, shell and routes commands and its --app, --env-file and
# --debug options are Flask's development tools (`run` served without migrating), not ours.
# The commands still get an app context (with_appcontext) from the ScriptInfo set below.
@click.group(cls=_Group, invoke_without_command=True)
@click.pass_context
def main(ctx):
    """Receive and store Tencent Cloud VOD event notifications."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(0)
    for line in config.unknown():
        click.echo(f"Warning: {line}", err=True)
    config.check_environment()  # every command stops on a bad setting, before it does anything
    ctx.obj = ScriptInfo(create_app=_create_app, set_debug_flag=False)


def _first_line(exc):
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _database_error(exc):
    """One line for a database error a user causes (unreachable, not migrated); None for bugs."""
    from sqlalchemy.exc import OperationalError

    reason = _first_line(exc.orig) if exc.orig is not None else _first_line(exc)
    # 42P01: PostgreSQL's undefined_table; SQLite says "no such table".
    if getattr(exc.orig, "sqlstate", None) == "42P01" or reason.startswith("no such table"):
        return f"the database has no receiver tables ({reason}); run vod-receiver db upgrade"
    if isinstance(exc, OperationalError):
        return f"cannot use the database of RECEIVER_DATABASE_URL: {reason}"
    return None


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
    drained = spool.drain(current_app._get_current_object(), spool_dir)
    left = spool.depth(spool_dir)
    click.echo(f"drained {drained}, {left} left in {spool_dir}")
    if left:
        sys.exit(1)


@spool_group.command("status")
@with_appcontext
def spool_status():
    """Show how many deliveries wait in the spool, the oldest's age, and how many were quarantined."""
    spool_dir = current_app.config["RECEIVER_SPOOL_DIR"]
    state = spool.status(spool_dir)
    age = state["oldest_age_seconds"]
    oldest = f", the oldest {age:.0f} s old" if age is not None else ""
    click.echo(f"{state['depth']} waiting in {spool_dir}{oldest}; {state['quarantined']} "
               f"quarantined in {os.path.join(spool_dir, spool.QUARANTINE)}")


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
          ("id", "received_at", "reason", "status_code", "message", "remote_addr", "body_size",
           "resolved_event_id"))


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


@rejections_group.command("reparse")
@click.argument("ids", nargs=-1, type=int)
@click.option("--reason", help=f"Only this reason (one of {', '.join(reparse.REJUDGED_REASONS)}).")
@click.option("--received-after", help="Only rows received at or after this ISO 8601 instant.")
@click.option("--received-before", help="Only rows received before this ISO 8601 instant.")
@click.option("--dry-run", is_flag=True, help="Show what would change, change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask before storing.")
@with_appcontext
def rejections_reparse(ids, dry_run, yes, **options):
    """Re-judge refused bodies with today's parser; store those it accepts as events."""
    try:
        filters, _limit, _cursor = admin_schemas.rejection_query.load(
            {k: v for k, v in options.items() if v is not None})
        reparse.check_reason(filters.get("reason"))
    except ValidationError as exc:
        name, problems = next(iter(exc.messages.items()))
        raise click.UsageError(f"--{name.replace('_', '-')}: {' '.join(problems)}") from None
    except reparse.NotRejudged as exc:
        raise click.UsageError(f"--reason: {exc}") from None
    app = current_app._get_current_object()
    plan = reparse.reparse(app, filters, ids, dry_run=True)
    for rejection_id, why in plan.skipped:
        click.echo(f"skipped {rejection_id}: {why}", err=True)
    click.echo(f"{plan.considered} refused bodies re-judged: {plan.to_events} become events "
               f"({plan.new} new, {plan.duplicates} duplicates of events stored already), "
               f"{plan.still_refused} still refused")
    if plan.changes:
        click.echo(_table([_change_row(change) for change in plan.changes],
                          headers=("id", "received_at", "reason", "becomes")))
        if len(plan.changes) < plan.considered:
            click.echo(f"… and {plan.considered - len(plan.changes)} more")
    if dry_run or not plan.to_events:
        return
    if not yes:
        click.confirm(f"Store {plan.to_events} of them as events and mark them resolved?",
                      abort=True)
    done = reparse.reparse(app, filters, ids, dry_run=False, through_id=plan.through_id)
    click.echo(f"stored {done.to_events} as events ({done.new} new, {done.duplicates} duplicates); "
               f"{done.to_events} rejections resolved")
    if done.spooled:
        change = done.changes[-1]
        raise click.ClickException(
            f"the database failed while storing rejection {change.rejection_id}: its event was "
            "spooled (stored when the spool drains) and the run stopped; run it again later")


def _change_row(change):
    verdict = change.verdict
    if isinstance(verdict, events.Refusal):
        becomes = f"still refused: {verdict.reason}: {verdict.message[:100]}"
    else:
        key = verdict.fields.get("file_id") or verdict.fields.get("task_id") or ""
        becomes = f"{verdict.event_type} {key}".strip()
        if change.duplicate:
            becomes += f" (duplicate of event {change.event_id})" if change.event_id else " (duplicate)"
        else:
            becomes += " (new)"
        if verdict.warnings:
            becomes += f", {len(verdict.warnings)} parse warning(s)"
    return [change.rejection_id, change.received_at.isoformat(), change.reason, becomes]


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
    warnings = data.pop("parse_warnings", None)
    click.echo(_table(data.items(), tablefmt="plain"))
    if warnings:
        click.echo("\nparse warnings (fields left out or clipped; the body has them as sent):\n"
                   + _table([[w["field"], w["stored"], w["problem"]] for w in warnings],
                            headers=("field", "stored", "problem")))
    click.echo("\nheaders:\n" + _table(headers.items(), tablefmt="plain"))
    click.echo(f"\nbody ({data['body_encoding']}):\n{body}")


def _table(rows, **kwargs):
    # IDs stay as sent: "0123" is not the number 123, nor 5285890784273533167 a float.
    return tabulate(rows, disable_numparse=True, **kwargs)


def _echo_json(data):
    click.echo(json.dumps(data, ensure_ascii=False))


@click.command("upload")
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
@click.option("--source-context", help="Your correlation key (at most 250 characters); "
                                       "default: a generated one.")
@click.option("--procedure", help="Task-flow template VOD runs after the upload.")
@click.option("--storage-region", help="Storage region, e.g. ap-chongqing (VOD's default if unset).")
@click.option("--sub-app-id", type=int, help="VOD application (default: VOD_SUB_APP_ID).")
@click.option("--class-id", type=int, help="Category id (default 0, Other).")
@click.option("--media-name", help="Media name (default: the file name without extension).")
@click.option("--media-type", help="Media type, e.g. mp4 (default: the file's extension).")
@click.option("--cover", type=click.Path(dir_okay=False, path_type=str), help="A cover image to upload with it.")
@click.option("--session-context", help="Passed back in the task flow's callbacks.")
@click.option("--expire-time", help="ISO 8601 time after which VOD deletes the media.")
@_json_option
@with_appcontext
def upload(file, output, **options):
    """Upload FILE to VOD, tagged with a SourceContext; run again to resume an interrupted one."""
    from .vod.client import Client, InvalidSetting
    from .vod.upload import Uploader, UploadError

    _quiet_sdks()
    try:
        client = Client.from_env()
    except InvalidSetting as exc:
        raise click.ClickException(str(exc)) from None
    uploader = Uploader.from_url(client, current_app.config["RECEIVER_DATABASE_URL"],
                                 notice=lambda text: click.echo(text, err=True))
    with _progress_bar(enabled=output != "json") as progress:
        try:
            result = uploader.upload(file, progress=progress, **options)
        except UploadError as exc:
            if output == "json":
                _echo_json({"upload_id": exc.upload_id, "error": {
                    "step": exc.step, "code": exc.code, "message": exc.message}})
                sys.exit(1)
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            # Like a kill, which a re-run resumes from. A normal exit would first wait for the
            # COS SDK's part threads (not daemons) to send every part still queued.
            click.echo("\ninterrupted: run the same command again to resume", err=True)
            os._exit(130)
        except SQLAlchemyError as exc:
            # The upload cannot be recorded, so it is not attempted (or not finished): say so
            # in a line; a re-run resumes from whatever the row says.
            cause = getattr(exc, "orig", None) or exc
            raise click.ClickException(f"database error: {cause}".splitlines()[0]) from None
        finally:
            uploader.close()
    data = admin_schemas.upload.dump(admin_schemas.upload_data(result.record))
    if output == "json":
        return _echo_json(data)
    click.echo(f"upload {result.upload_id} committed: FileId {result.file_id}")
    click.echo(f"  MediaUrl       {result.media_url}")
    click.echo(f"  SourceContext  {result.source_context}")
    click.echo(f"  see it: vod-receiver uploads show {result.upload_id}")


def _quiet_sdks():
    # The COS SDK logs every failed request at ERROR, with tracebacks, before raising; the
    # command reports the failure itself, in one line, and records it in the upload's row.
    for name in ("qcloud_cos", "tencentcloud"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


class _progress_bar:
    """A tqdm bar (bytes, rate, time left) on a terminal; nothing when piped or with --json."""

    # An upload over in a moment never draws a bar.
    DELAY = 0.5

    def __init__(self, enabled):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None
        self.done = 0

    def __enter__(self):
        return self.report if self.enabled else None

    def report(self, done, total):
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                            delay=self.DELAY, file=sys.stderr, leave=False)
        self.bar.update(done - self.done)
        self.done = done

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


@click.group("uploads")
def uploads_group():
    """Our own uploads to VOD: their state, and whether VOD's callback came."""


@uploads_group.command("list")
@click.option("--pending", is_flag=True, default=None,
              help="Only uploads not failed whose callback has not been stored yet.")
@click.option("--older-than", help="Only uploads started longer ago than this, e.g. 10m, 2h, 1d.")
@click.option("--state", type=click.Choice(queries.UPLOAD_STATES), help="Stored state.")
@click.option("--source-context", help="SourceContext (correlation key), exactly.")
@click.option("--file-id", help="FileId VOD gave the upload.")
@click.option("--limit", type=int, default=queries.DEFAULT_LIMIT, show_default=True,
              help=f"Rows per page (at most {queries.MAX_LIMIT}).")
@click.option("--cursor", help="Start after the page that printed this cursor.")
@click.option("--all", "all_pages", is_flag=True, help="Follow the cursor to the last page.")
@_json_option
@_jsonl_option
@with_appcontext
def uploads_list(output, all_pages, **options):
    """List uploads, newest first, with their status (notified once VOD's callback is stored)."""

    def query(session, filters, limit, cursor):
        page = queries.list_uploads(session, filters, limit, cursor)
        return queries.Page([admin_schemas.upload_data(u, e) for u, e in page.items],
                            page.next_cursor)

    _list(query, admin_schemas.upload_query, admin_schemas.UploadSummarySchema, options, output,
          all_pages, ("id", "started_at", "status", "file_name", "file_size", "file_id",
                      "source_context", "event_id", "error_code"))


@uploads_group.command("show")
@click.argument("upload_id", type=int)
@_json_option
@with_appcontext
def uploads_show(upload_id, output):
    """Show one upload: its steps, VOD's answer or the error, and the event it caused."""
    with db.session_factory()() as session:
        found = queries.get_upload(session, upload_id)
        if found is None:
            raise click.ClickException("no upload with this id")
        data = admin_schemas.upload.dump(admin_schemas.upload_data(found[0], event=found[1]))
    if output == "json":
        return _echo_json(data)
    event = data.pop("event")
    click.echo(_table(data.items(), tablefmt="plain"))
    if event is not None:
        click.echo("\nevent:\n" + _table(event.items(), tablefmt="plain"))


@uploads_group.command("reconcile")
@click.option("--older-than", default="10m", show_default=True,
              help="Only uploads committed that long ago or longer, e.g. 10m, 2h.")
@_json_option
@with_appcontext
def uploads_reconcile(older_than, output):
    """Ask VOD about committed uploads with no callback: callback lost, or not in VOD?"""
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
        TencentCloudSDKException)

    from .vod.client import Client, InvalidSetting, MissingCredentials
    from .vod.reconcile import reconcile, unnotified

    _quiet_sdks()
    try:
        age = admin_schemas.upload_query.load({"older_than": older_than})[0]["older_than"]
    except ValidationError as exc:
        raise click.UsageError(f"--older-than: {' '.join(exc.messages['older_than'])}") from None
    with db.session_factory()() as session:
        uploads = unnotified(session, age)
    try:
        client = Client.from_env()
        findings = reconcile(client, uploads) if uploads else []
    except (InvalidSetting, MissingCredentials) as exc:
        raise click.ClickException(str(exc)) from None
    except TencentCloudSDKException as exc:
        raise click.ClickException(f"DescribeMediaInfos failed: {exc.get_code()}: "
                                   f"{exc.get_message()}") from None
    if output == "json":
        return _echo_json({"items": [{
            "upload_id": f.upload.id, "file_id": f.upload.file_id,
            "source_context": f.upload.source_context, "verdict": f.verdict,
            "source_context_matches": f.source_context_matches} for f in findings]})
    if not findings:
        click.echo(f"no upload committed over {older_than} ago is waiting for its callback")
    for finding in findings:
        click.echo(f"upload {finding.upload.id} (FileId {finding.upload.file_id}, "
                   f"SourceContext {finding.upload.source_context}): {finding.verdict}")


@click.command("serve")
@click.option("--bind", "-b", help="Address to listen on (default: RECEIVER_BIND or 127.0.0.1:8000).")
@click.option("--workers", "-w", help="Worker processes (default: RECEIVER_WORKERS or from CPUs).")
@click.option("--migrate/--no-migrate", default=True, show_default=True,
              help="Upgrade the database before serving.")
@with_appcontext
def serve(bind, workers, migrate):
    """Migrate the database, then serve the receiver with gunicorn."""
    # The options go through the same checks as the variables they stand for. Only given ones
    # are passed on, so that GUNICORN_CMD_ARGS still overrides the variables, as it always did.
    args = [sys.executable, "-m", "gunicorn", "--config", "python:receiver.gunicorn_conf"]
    if bind is not None:
        args += ["--bind", bind]
    if workers is not None:
        args += ["--workers", workers]
    bind = _option("--bind", "RECEIVER_BIND", bind)
    workers = _option("--workers", "RECEIVER_WORKERS", workers)
    for label, value in summary(current_app.config, bind, workers, sys.stderr.isatty()):
        click.echo(f"{label:<14} {value}", err=True)
    if migrate:
        db.upgrade(current_app.config["RECEIVER_DATABASE_URL"])
    sys.stderr.flush()  # exec replaces the process: nothing buffered would be written
    os.execv(sys.executable, [*args, "receiver:create_app()"])


def _option(option, name, given):
    if given is None:
        return config.value(name)
    try:
        return config.BY_NAME[name].parse(given.strip())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def summary(settings, bind, workers, stderr_is_terminal):
    """What `serve` is about to run, as (label, value) pairs, with every secret redacted."""
    def on(values, what):
        return f"on ({len(values)} {what}{'s' if len(values) > 1 else ''})" if values else "off"

    tokens = settings["RECEIVER_CALLBACK_TOKENS"]
    path = f"/callbacks/vod/{auth.REDACTED}" if tokens else "/callbacks/vod"
    log_format = settings["RECEIVER_LOG_FORMAT"]
    if log_format == "auto":
        log_format = ("auto (text: stderr is a terminal)" if stderr_is_terminal
                      else "auto (JSON lines: stderr is not a terminal)")
    interval = settings["RECEIVER_SPOOL_DRAIN_INTERVAL"]
    drains = f"drained every {interval} s" if interval else "automatic drains off"
    return [
        ("database", _redact_url(settings["RECEIVER_DATABASE_URL"])),
        ("spool", f"{settings['RECEIVER_SPOOL_DIR']} ({drains})"),
        ("callback path", f"POST {path}"),
        ("URL token", on(tokens, "token")),
        ("SignKey", on(settings["VOD_SIGN_KEYS"], "key")),
        ("allowlist", on(settings["RECEIVER_ALLOWED_CIDRS"], "network")),
        ("admin API", on(settings["RECEIVER_ADMIN_TOKENS"], "token").replace(
            "on (", "on at /admin/api/v1/ (")),
        ("operator page", "on at /admin/ (sign in with an admin token)"
         if settings["RECEIVER_ADMIN_TOKENS"] else "off"),
        ("workers", f"{workers}"),
        ("bind", bind if bind.startswith(("unix:", "fd://")) else f"http://{bind}"),
        ("log format", log_format),
    ]


@click.command("work")
@click.option("--once", is_flag=True, help="Run what is due now, then exit (for cron and tests).")
@with_appcontext
def work(once):
    """Run the application's handlers on stored events (RECEIVER_HANDLERS, @handlers.on)."""
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


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port for both API 3.0 and COS (0: any free port).")
@click.option("--callback-url", help="Where to push events (VOD's NotificationUrl); none: not pushed.")
@click.option("--sign-key", help="SignKey: pushes carry Sign and T made with it.")
@click.option("--sign-location", type=click.Choice(["body", "query"]), default="body", show_default=True,
              help="Where Sign and T go.")
@click.option("--secret-id", default="AKIDemulator", show_default=True, help="The API SecretId to accept.")
@click.option("--secret-key", default="emulator-secret", show_default=True, help="The API SecretKey to accept.")
@click.option("--sub-app-id", type=int, help="The only SubAppId accepted (default: any).")
@click.option("--storage-dir", type=click.Path(file_okay=False, path_type=str),
              help="Keep uploaded bytes here (default: a temporary folder, deleted on exit).")
@click.option("--temp-credential-seconds", type=int, default=1800, show_default=True,
              help="Lifetime of the COS keys ApplyUpload hands out.")
def emulator(callback_url, storage_dir, **options):
    """Run a fake VOD (API 3.0, COS uploads, event pushes) on this machine until Ctrl-C."""
    import signal
    from urllib.parse import urlsplit

    from .emulator import Emulator

    if callback_url and (urlsplit(callback_url).scheme not in ("http", "https")
                         or not urlsplit(callback_url).hostname):
        raise click.BadParameter("must be an http:// or https:// URL", param_hint="--callback-url")
    if storage_dir:
        os.makedirs(storage_dir, exist_ok=True)
    emu = Emulator(callback_url=callback_url, storage_dir=storage_dir, **options)
    try:
        emu.start()
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise click.ClickException(f"cannot listen on {options['host']}:{options['port']}: {reason}") from None
    # SIGTERM (docker stop, kill) ends it like Ctrl-C, so the temporary folder is removed.
    signal.signal(signal.SIGTERM, _interrupt)
    click.echo(f"VOD emulator on {emu.cos_endpoint} (Ctrl-C stops it)\n"
               f"  API 3.0  HttpProfile(protocol=\"http\", endpoint=\"{emu.api_endpoint}\"), "
               f"SecretId {emu.secret_id}, SecretKey {emu.secret_key}\n"
               f"  COS      CosConfig(Region=…, SecretId/SecretKey/Token from ApplyUpload, Scheme=\"http\", "
               f"IP=\"{emu.cos_ip}\", Port={emu.cos_port})\n"
               f"  pushes   {callback_url or 'none (no --callback-url)'}"
               f"{' signed with the SignKey' if options['sign_key'] else ''}\n"
               f"  storage  {emu.state.root}")
    seen_media, seen_pushes, seen_queue = set(), 0, emu.event_queue.snapshot()
    try:
        while True:
            with emu.state.changed:
                emu.state.changed.wait(0.5)
            for file_id, media in emu.state.media.items():
                if file_id not in seen_media:
                    seen_media.add(file_id)
                    click.echo(f"committed FileId {file_id}: {media.size} bytes, "
                               f"SourceContext {media.source_context!r}")
            pushes = emu.state.pushes
            for push in pushes[seen_pushes:]:
                click.echo(f"push {push.event_type} #{push.event_id} attempt {push.attempt}: {push.outcome}"
                           f"{f' HTTP {push.status}' if push.status else ''}"
                           f"{f' ({push.error})' if push.error else ''}")
            seen_pushes = len(pushes)
            queue = emu.event_queue.snapshot()  # Mode PULL (set by ModifyEventConfig)
            if queue != seen_queue:
                click.echo(f"pull queue: {queue['depth']} waiting, {queue['in_flight']} pulled and not yet "
                           f"confirmed, {queue['confirmed']} confirmed, {queue['redeliveries']} redelivered")
                seen_queue = queue
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()


main.add_command(emulator)  # on the group itself: it needs no app, database or receiver settings


@click.command("pull")
@click.option("--sub-app-id", type=int, help="VOD application (default: VOD_SUB_APP_ID).")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Serve this consumer's /metrics on this port (default: none).")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True,
              help="Address for --metrics-port.")
@click.option("--workers", type=click.IntRange(1, 16), default=2, show_default=True,
              help="Pull loops at once (their commits are shared).")
@click.option("--until-empty", is_flag=True, help="Exit after a PullEvents that returned nothing.")
@with_appcontext
def pull(sub_app_id, metrics_port, metrics_addr, workers, until_empty):
    """Consume VOD's reliable callback (PullEvents/ConfirmEvents) into the database until Ctrl-C."""
    import signal

    from .vod.client import Client, InvalidSetting, MissingCredentials
    from .vod.pull import Consumer, ConsumerError, PullMetrics

    try:
        consumer = Consumer(current_app._get_current_object(), Client.from_env(),
                            sub_app_id=sub_app_id, pull_metrics=PullMetrics())
        consumer.client.check_credentials()
        consumer.check()
    except (InvalidSetting, MissingCredentials, ConsumerError) as exc:
        raise click.ClickException(str(exc)) from None
    if metrics_port is not None:
        # A port of its own, not PROMETHEUS_MULTIPROC_DIR: the consumer is one long-lived
        # process (often on another host than the server), its "seconds since the last pull"
        # is its own, and gunicorn empties that folder whenever the server starts.
        from prometheus_client import start_http_server

        start_http_server(metrics_port, metrics_addr, registry=consumer.metrics.registry)

    def finish_batch(signum, _frame):
        if consumer.stop.is_set():  # asked twice: stop now; unconfirmed events come again
            os._exit(128 + signum)
        click.echo("stopping after this batch (again to stop now)", err=True)
        consumer.stop.set()

    signal.signal(signal.SIGINT, finish_batch)
    signal.signal(signal.SIGTERM, finish_batch)
    click.echo(f"pulling events from {consumer.client.api_endpoint or 'vod.tencentcloudapi.com'}"
               f"{f' (SubAppId {consumer.sub_app_id})' if consumer.sub_app_id else ''} into "
               f"{_safe_url()}; Ctrl-C stops after the batch in hand", err=True)
    try:
        totals = consumer.run(workers=workers, until_empty=until_empty)
    except Exception as exc:  # a refused key or SubAppId mid-run: one line, not a traceback
        from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

        if not isinstance(exc, TencentCloudSDKException):
            raise
        raise click.ClickException(f"PullEvents failed: {exc.get_code()}: {exc.get_message()}") from None
    click.echo(f"stopped: {totals.events} events in {totals.batches} batches "
               f"({', '.join(f'{k} {v}' for k, v in sorted(totals.outcomes.items())) or 'none'}), "
               f"{totals.confirmed} confirmed", err=True)


@click.group("event-config")
def event_config_group():
    """VOD's event notification settings: PUSH to a URL or PULL (reliable callback)."""


def _event_config_client():
    from .vod.client import Client, InvalidSetting, MissingCredentials

    try:
        client = Client.from_env()
        client.check_credentials()
    except (InvalidSetting, MissingCredentials) as exc:
        raise click.ClickException(str(exc)) from None
    return client


def _vod_errors(call):
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException

    from .vod.event_config import EventConfigRefused

    try:
        return call()
    except EventConfigRefused as exc:
        raise click.UsageError(str(exc)) from None
    except TencentCloudSDKException as exc:
        raise click.ClickException(f"{exc.get_code()}: {exc.get_message()}") from None


@event_config_group.command("show")
@_json_option
def event_config_show(output):
    """Show the event config (DescribeEventConfig)."""
    from .vod import event_config

    config = _vod_errors(lambda: event_config.describe(_event_config_client()))
    if output == "json":
        return _echo_json(config)
    click.echo(_table(config.items(), tablefmt="plain"))


@event_config_group.command("set")
@click.option("--mode", type=click.Choice(["PUSH", "PULL"]), help="PUSH to the URL, or PULL (reliable).")
@click.option("--url", help="The v3 callback URL (NotificationUrl); \"\" clears it.")
@click.option("--upload-switch", type=click.Choice(["ON", "OFF"]), help="NewFileUpload events.")
@click.option("--delete-switch", type=click.Choice(["ON", "OFF"]), help="FileDeleted events.")
@click.option("--persistence-switch", type=click.Choice(["ON", "OFF"]), help="PersistenceComplete events.")
@click.option("--sign-key", help="SignKey: pushes carry Sign = MD5(key + T) (up to 32 letters and digits).")
@click.option("--allow-http", is_flag=True, help="Accept a PUSH URL that is not https (test setups).")
@_json_option
def event_config_set(mode, url, upload_switch, delete_switch, persistence_switch, sign_key,
                     allow_http, output):
    """Change the event config (ModifyEventConfig) and print it before and after."""
    from .vod import event_config

    if all(v is None for v in (mode, url, upload_switch, delete_switch, persistence_switch, sign_key)):
        raise click.UsageError("nothing to change: give --mode, --url, a --*-switch or --sign-key")
    before, after = _vod_errors(lambda: event_config.change(
        _event_config_client(), mode=mode, url=url, sign_key=sign_key, allow_http=allow_http,
        switches={"upload": upload_switch, "delete": delete_switch, "persistence": persistence_switch}))
    if output == "json":
        return _echo_json({"before": before, "after": after})
    click.echo(_table([(name, before[name], after[name], "" if before[name] == after[name] else "changed")
                       for name in before], headers=("", "before", "after", ""), tablefmt="plain"))
    if sign_key is not None:
        click.echo("SignKey set (VOD does not show it back); give the receiver VOD_SIGN_KEYS too")


@event_config_group.command("state")
@_json_option
def event_config_state(output):
    """How many events wait to be pulled (DescribeEventsState; VOD's count lags a few minutes)."""
    from .vod import event_config

    count = _vod_errors(lambda: event_config.events_state(_event_config_client()))
    if output == "json":
        return _echo_json({"CountOfEventsToPull": count})
    click.echo(f"{count} events to pull")


main.add_command(event_config_group)  # like the emulator: needs no database


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _redact_url(url):
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _safe_url():
    return _redact_url(current_app.config["RECEIVER_DATABASE_URL"])


_COMMANDS = (db_group, spool_group, events_group, rejections_group, replay_command, upload,
             uploads_group, serve, work, pull)
for _command in _COMMANDS:
    main.add_command(_command)


def init_app(app):
    """Add the receiver's commands to the app's CLI (`flask --app receiver …`, test runners)."""
    for command in _COMMANDS:
        app.cli.add_command(command)


if __name__ == "__main__":
    main()
