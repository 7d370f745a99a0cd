"""``facemask-edge ei``: put the data set and the int8 model into an Edge Impulse project.

The API key comes from ``--api-key`` or ``EI_API_KEY`` (prefer the variable: command lines are
visible to other users of the machine) and never appears in anything this prints or writes.
"""

from __future__ import annotations

import sys
from functools import wraps

import click

from facemask_edge.edge_impulse.redact import redact, redacting, sanitized
from facemask_edge.errors import FacemaskError

__all__ = ["ei"]


def _connection_options(f):
    f = click.option("--timeout", type=float, default=30.0, show_default=True,
                     help="Seconds to wait to connect and for each answer.")(f)
    f = click.option("--ingestion-endpoint", metavar="URL",
                     help="Ingestion service (default: $EI_INGESTION_ENDPOINT or "
                          "https://ingestion.edgeimpulse.com).")(f)
    f = click.option("--api-endpoint", metavar="URL",
                     help="Studio API (default: $EI_API_ENDPOINT or "
                          "https://studio.edgeimpulse.com/v1).")(f)
    f = click.option("--api-key", metavar="KEY", envvar="EI_API_KEY", show_envvar=True,
                     help="Project API key (Studio: Dashboard > Keys). Prefer the environment "
                          "variable.")(f)
    return f


def _guarded(f):
    """Run a command with the key registered for redaction and every error key-free."""

    @wraps(f)
    def wrapper(*args, **kwargs):
        import os

        key = kwargs.get("api_key") or os.environ.get("EI_API_KEY")
        with redacting(key):
            ctx = click.get_current_context(silent=True)
            if ctx is not None and (ctx.find_root().obj or {}).get("verbose"):
                import logging

                # Every record passes the redacting record factory, whichever library logs it.
                logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, force=True,
                                    format="%(levelname)s %(name)s: %(message)s")
            try:
                return f(*args, **kwargs)
            except FacemaskError as exc:
                tail = getattr(exc, "log_tail", None)
                if tail:
                    # The job's own words, then (from the CLI edge) the one error line.
                    click.echo(f"Edge Impulse job {getattr(exc, 'job_id', '?')} log, last "
                               f"{len(tail)} lines:", err=True)
                    for line in tail:
                        click.echo(f"  | {redact(line)}", err=True)
                exc.message = redact(exc.message)
                exc.hint = redact(exc.hint) if exc.hint else exc.hint
                exc.args = (exc.message,)
                raise
            except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort,
                    KeyboardInterrupt):
                raise
            except Exception as exc:  # anything else: one key-free line, cause kept for -v
                from facemask_edge.errors import EdgeImpulseError

                err = EdgeImpulseError(redact(f"unexpected {type(exc).__name__}: {exc}")[:300])
                raise err from sanitized(exc)

    return wrapper


def _config(api_key, api_endpoint, ingestion_endpoint, timeout):
    from facemask_edge.edge_impulse.config import resolve_config

    return resolve_config(api_key, api_endpoint, ingestion_endpoint, timeout)


@click.group("ei")
def ei():
    """Edge Impulse: upload the data set, check it (status), profile and deploy the int8 model.

    Profile and deploy never replace an impulse you made in Studio unasked; best use a separate
    project (and key) for bring-your-own-model.

    Endpoints and key: --api-key/EI_API_KEY, --api-endpoint/EI_API_ENDPOINT,
    --ingestion-endpoint/EI_INGESTION_ENDPOINT.
    """


@ei.command("upload-data", short_help="Upload the data set (labels from class folders), resumably.")
@click.option("--data", "data", required=True, type=click.Path(exists=True),
              help="Data set folder (one sub-folder per class) or .zip.")
@click.option("--split-from", "split_from", type=click.Path(exists=True, file_okay=False),
              help="Run folder: train+val go to training, test to testing, as in its split.json.")
@click.option("--category", type=click.Choice(["split", "training", "testing"]), default=None,
              help="Without --split-from: where images go (default: split, Edge Impulse's own "
                   "80/20).")
@click.option("--concurrency", "-j", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Parallel uploads.")
@click.option("--retries", type=click.IntRange(1, 50), default=8, show_default=True,
              help="Attempts per image (429/5xx/timeouts/dropped connections are retried).")
@click.option("--ledger", type=click.Path(dir_okay=False),
              help="Upload ledger file (default: in the user cache, per ingestion host and "
                   "project).")
@click.option("--recheck", is_flag=True,
              help="Send images the ledger has too (e.g. after deleting samples in Studio); "
                   "Edge Impulse refuses those still there, so nothing is stored twice.")
@click.option("--dry-run", is_flag=True, help="Show what would be sent, send nothing.")
@_connection_options
@_guarded
def upload_data(data, split_from, category, concurrency, retries, ledger, recheck, dry_run,
                api_key, api_endpoint, ingestion_endpoint, timeout):
    """Upload every usable image with its label (class folder) to the project's data set.

    Safe to re-run: images already confirmed (in the ledger, or refused by Edge Impulse as
    already there) are not sent twice; an interrupted upload resumes where it stopped.
    """
    from facemask_edge.edge_impulse.config import project_for_key
    from facemask_edge.edge_impulse.ledger import Ledger, default_ledger_path
    from facemask_edge.edge_impulse.upload import RetryPolicy, plan_upload, upload_dataset
    from facemask_edge.errors import DataError, EdgeImpulseError
    from facemask_edge.progress import log

    if split_from and category:
        raise DataError("--split-from and --category both say where images go",
                        "use one: --split-from RUN_DIR follows the run's split.json")
    plan = plan_upload(data, split_from=split_from, category=category or "split")
    counts = ", ".join(f"{cat}/{label} {n}" for (cat, label), n in sorted(plan.counts().items()))
    log(f"{plan.usable} usable images in {plan.root}: {len(plan.items)} distinct ({counts})"
        + (f", {plan.copies} byte-identical copies" if plan.copies else "")
        + (f"; {len(plan.skipped_files)} file(s) do not decode and are not sent"
           if plan.skipped_files else ""))
    if dry_run:
        click.echo(f"dry run: would send up to {len(plan.items)} images; nothing sent")
        return
    cfg = _config(api_key, api_endpoint, ingestion_endpoint, timeout)
    if cfg.studio_unasked:
        # Only EI_INGESTION_ENDPOINT was given: the key is not sent to the default studio API
        # just to learn the project id; the ledger is named after a fingerprint of the key.
        project_id = None
        log(f"Edge Impulse ingestion at {cfg.ingestion_endpoint} (studio API not asked: "
            "set EI_API_ENDPOINT too to name the project)")
    else:
        project = project_for_key(cfg)
        project_id = project.id
        log(f"Edge Impulse project {project.id} ({project.name}) at {cfg.ingestion_endpoint}")
    path = ledger or default_ledger_path(cfg.ingestion_endpoint, project_id, cfg.key_id())
    with Ledger(path) as led:
        summary = upload_dataset(cfg, plan, led, project_id, concurrency=concurrency,
                                 policy=RetryPolicy(attempts=retries), recheck=recheck)
    for line in summary.lines():
        click.echo(line)
    if summary.interrupted:
        raise KeyboardInterrupt
    if summary.failed:
        raise EdgeImpulseError(f"{len(summary.failed)} image(s) failed to upload",
                               "re-run the same command to retry them; finished images are "
                               "skipped")


def _impulse_options(f):
    f = click.option("--yes", "-y", is_flag=True,
                     help="Send the model to the project's default impulse even if the project "
                          "already has impulses (replaces that impulse's model).")(f)
    f = click.option("--new-impulse", is_flag=True,
                     help="Create a new bring-your-own-model impulse for the model.")(f)
    f = click.option("--impulse", "impulse", type=int, metavar="ID",
                     help="Send the model to this impulse (replaces its model).")(f)
    f = click.option("--job-timeout", type=float, default=900.0, show_default=True,
                     help="Seconds for the whole command: every request and Edge Impulse "
                          "job.")(f)
    return f


@ei.command("profile", short_help="Profile the int8 model on Edge Impulse; compare with ours.")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--device", help="Edge Impulse profiling device (e.g. cortex-m4f-80mhz, "
                               "arduino-nano-33-ble; `ei devices` lists them). Default: the "
                               "run's board, if it has one profile_<board>.json.")
@_impulse_options
@_connection_options
@_guarded
def profile(run_dir, device, job_timeout, impulse, new_impulse, yes, api_key, api_endpoint,
            ingestion_endpoint, timeout):
    """Profile RUN_DIR/model_int8.tflite on Edge Impulse; print its RAM, flash and latency
    beside ours. Saves RUN_DIR/ei_profile.json.

    If the project already has an impulse (e.g. one trained in Studio), this refuses unless you
    choose: --impulse ID, --new-impulse or --yes. Best: a separate project for this."""
    from pathlib import Path

    from facemask_edge.boards import BOARDS
    from facemask_edge.edge_impulse.model import comparison_lines, load_run_model, profile_model
    from facemask_edge.progress import log

    load_run_model(run_dir)  # fail on a bad run before touching the network
    if device is None:
        boards = [p.stem[len("profile_"):] for p in Path(run_dir).glob("profile_*.json")]
        mapped = [BOARDS[b].ei_device for b in boards if b in BOARDS and BOARDS[b].ei_device]
        device = mapped[0] if len(mapped) == 1 else None
    cfg = _config(api_key, api_endpoint, ingestion_endpoint, timeout)
    log(f"profiling on Edge Impulse ({cfg.api_endpoint})"
        + (f", device {device}" if device else ""))
    result = profile_model(cfg, run_dir, device=device, job_timeout=job_timeout,
                           impulse=impulse, new_impulse=new_impulse, yes=yes)
    for line in comparison_lines(result):
        click.echo(line)
    click.echo(f"saved {Path(run_dir) / 'ei_profile.json'}"
               + (f" (impulse {result['impulse']})" if result.get("impulse") else ""))


@ei.command("deploy", short_help="Build the int8 model into an Edge Impulse library zip.")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--target", default="arduino", show_default=True,
              help="Edge Impulse deployment target (arduino, zip for a C++ library, ...; "
                   "`ei targets` lists them).")
@click.option("--engine", type=click.Choice(["tflite", "tflite-eon", "tflite-eon-ram-optimized"]),
              default="tflite", show_default=True, help="Inference engine of the library.")
@_impulse_options
@_connection_options
@_guarded
def deploy(run_dir, target, engine, job_timeout, impulse, new_impulse, yes, api_key,
           api_endpoint, ingestion_endpoint, timeout):
    """Build RUN_DIR/model_int8.tflite (with its labels, input scaling and resize mode) into an
    Edge Impulse library; save it as RUN_DIR/ei_<target>_<engine>.zip.

    If the project already has an impulse (e.g. one trained in Studio), this refuses unless you
    choose: --impulse ID, --new-impulse or --yes. Best: a separate project for this."""
    import json

    from facemask_edge.edge_impulse.model import RESIZE_MODE, deploy_model, load_run_model
    from facemask_edge.progress import log

    m = load_run_model(run_dir)
    cfg = _config(api_key, api_endpoint, ingestion_endpoint, timeout)
    log(f"deploying {m.path.name} ({len(m.labels)} labels, input {m.scaling}, resize "
        f"{RESIZE_MODE}) as {target}/{engine} on Edge Impulse ({cfg.api_endpoint})")
    out = deploy_model(cfg, run_dir, target=target, engine=engine, job_timeout=job_timeout,
                       impulse=impulse, new_impulse=new_impulse, yes=yes)
    meta = json.loads((out.parent / "ei_deploy.json").read_text())
    click.echo(f"saved {out} ({meta['bytes'] / 1024:.1f} KiB, {meta['files']} files, "
               f"sha256 {meta['sha256'][:12]}"
               + (f", impulse {meta['impulse']}" if meta.get("impulse") else "") + ")")


@ei.command("devices", short_help="List Edge Impulse's profiling devices.")
@_connection_options
@_guarded
def devices(api_key, api_endpoint, ingestion_endpoint, timeout):
    """List the profiling devices the project offers (values for `ei profile --device`)."""
    from facemask_edge.edge_impulse.studio import Studio

    with Studio(_config(api_key, api_endpoint, ingestion_endpoint, timeout)) as st:
        rows = st.devices()
    width = max([len(m) for m, _ in rows] + [6])
    for mcu, name in rows:
        click.echo(f"{mcu:<{width}}  {name}")


@ei.command("targets", short_help="List Edge Impulse's deployment targets.")
@_connection_options
@_guarded
def targets(api_key, api_endpoint, ingestion_endpoint, timeout):
    """List the project's deployment targets and their engines (values for `ei deploy
    --target/--engine`)."""
    from facemask_edge.edge_impulse.studio import Studio

    with Studio(_config(api_key, api_endpoint, ingestion_endpoint, timeout)) as st:
        rows = st.targets()
    width = max([len(str(t["format"])) for t in rows] + [6])
    for t in rows:
        engines = ", ".join(str(e) for e in t.get("supportedEngines") or [])
        click.echo(f"{t['format']:<{width}}  {t.get('name', '')}"
                   + (f"  [{engines}]" if engines else ""))


@ei.command("status", short_help="Compare the project's samples with the data set; --repair.")
@click.option("--data", "data", required=True, type=click.Path(exists=True),
              help="Data set folder (one sub-folder per class) or .zip.")
@click.option("--split-from", "split_from", type=click.Path(exists=True, file_okay=False),
              help="Run folder whose split.json says training/testing, as for upload-data.")
@click.option("--category", type=click.Choice(["split", "training", "testing"]), default=None,
              help="Without --split-from: where the images should be (default: split, any).")
@click.option("--ledger", type=click.Path(dir_okay=False),
              help="Upload ledger file (default: as upload-data).")
@click.option("--repair", is_flag=True,
              help="Upload missing images, relabel and move wrong samples, rebuild the ledger "
                   "from the listing. Extra samples are reported, never deleted.")
@click.option("--concurrency", "-j", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Parallel uploads for --repair.")
@_connection_options
@_guarded
def status(data, split_from, category, ledger, repair, concurrency, api_key, api_endpoint,
           ingestion_endpoint, timeout):
    """List the project's samples and compare them with the data set and its split: missing,
    extra, wrong label, wrong category. Exit status 1 while something --repair could fix is
    left."""
    from facemask_edge.edge_impulse.ledger import Ledger, default_ledger_path
    from facemask_edge.edge_impulse.status import list_project_samples, reconcile
    from facemask_edge.edge_impulse.status import repair as do_repair
    from facemask_edge.edge_impulse.studio import Studio
    from facemask_edge.edge_impulse.upload import RetryPolicy, plan_upload, upload_dataset
    from facemask_edge.errors import DataError, EdgeImpulseError
    from facemask_edge.progress import log

    if split_from and category:
        raise DataError("--split-from and --category both say where images go",
                        "use one: --split-from RUN_DIR follows the run's split.json")
    cfg = _config(api_key, api_endpoint, ingestion_endpoint, timeout)
    if cfg.studio_unasked:
        raise EdgeImpulseError("ei status lists the project's samples through the studio API, "
                               "and only the ingestion endpoint is set",
                               "set --api-endpoint / EI_API_ENDPOINT as well")
    plan = plan_upload(data, split_from=split_from, category=category or "split")
    with Studio(cfg) as st:
        project = st.project
        log(f"listing the samples of Edge Impulse project {project.id} ({project.name})")
        samples = list_project_samples(st)
        path = ledger or default_ledger_path(cfg.ingestion_endpoint, project.id)
        with Ledger(path) as led:
            rep = reconcile(plan, samples, project.id, led)
            for line in rep.lines():
                click.echo(line)
            if repair and (rep.matched or not rep.in_sync):
                def upload(sub):
                    return upload_dataset(cfg, sub, led, project.id, concurrency=concurrency,
                                          policy=RetryPolicy(), recheck=True)

                res = do_repair(st, plan, rep, led, upload)
                for line in res.lines():
                    click.echo(line)
                rep = reconcile(plan, list_project_samples(st), project.id, led)
                click.echo("after repair: " + rep.lines()[0])
    click.echo(f"ledger: {path}")
    if not rep.in_sync:
        raise EdgeImpulseError(
            f"project {rep.project_id} differs from the data set: {len(rep.missing)} missing, "
            f"{len(rep.wrong_label)} wrong label, {len(rep.wrong_category)} wrong category",
            "see the report above" + ("" if repair else "; --repair fixes these"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(ei())
