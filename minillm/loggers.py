"""Experiment loggers: a local CSV always, W&B online when logged in and offline otherwise.

W&B must never prompt and never hang: without credentials it runs in offline mode, with its files
inside the run directory (sync later with ``wandb sync``). With credentials but no W&B server that answers
(a cluster node without internet), a quick probe sends the run offline before W&B tries to go online.
"""

from __future__ import annotations

import csv
import http.client
import logging
import netrc
import os
import ssl
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import OmegaConf

from minillm.errors import MinillmError

log = logging.getLogger(__name__)
WANDB_MODES = ("auto", "online", "offline", "disabled")


def wandb_logged_in() -> bool:
    """True when an API key is available without asking: the environment, or the netrc entry that W&B
    itself would read for its server (``$NETRC`` or ``~/.netrc``; the host of ``WANDB_BASE_URL`` when
    set, W&B's default server otherwise)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        from wandb.sdk.lib import wbauth

        return bool(wbauth.read_netrc_auth(host=wandb_base_url()))
    except ImportError:  # W&B's reader moved: the entry `wandb login` wrote for its classic server
        try:
            return netrc.netrc().authenticators("api.wandb.ai") is not None
        except (FileNotFoundError, netrc.NetrcParseError, OSError):
            return False
    except Exception:  # an unreadable netrc or a malformed key: W&B would not log in with it either
        return False


def resolve_wandb_mode(requested: str) -> str:
    if requested not in WANDB_MODES:
        raise MinillmError(f"logger.mode={requested!r}; choose one of {list(WANDB_MODES)}")
    env_mode = os.environ.get("WANDB_MODE")
    if requested == "auto":
        if env_mode in ("offline", "disabled", "dryrun"):
            return "offline" if env_mode == "dryrun" else env_mode
        return "online" if wandb_logged_in() else "offline"
    if requested == "online" and not wandb_logged_in():
        log.warning("logger.mode=online but no W&B credentials found: logging offline instead")
        return "offline"
    return requested


class ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger deletes an existing ``metrics.csv``; this one keeps it when resuming.

    With ``resume_step`` the rows logged before that step are kept and the later ones (logged after the
    checkpoint, before the stop, and about to be logged again) dropped; without it the file starts over.
    """

    def __init__(self, save_dir: Path, resume_step: int | None = None):
        super().__init__(save_dir=str(save_dir), name="", version="csv")
        self._resume_step = resume_step

    @property
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        if rank_zero_only.rank != 0:  # data-parallel: rank zero alone owns the file (another rank's rename
            return super().experiment  # would hide the earlier rows from it); Lightning's no-op writer
        path = Path(self.log_dir) / "metrics.csv"
        kept: list[dict] = []
        if self._resume_step is not None and path.is_file():
            with path.open(newline="") as handle:
                kept = [r for r in csv.DictReader(handle) if int(float(r["step"])) < self._resume_step]
        if path.is_file():
            path.rename(path.with_suffix(".csv.bak"))  # never lost: the old file is set aside first
        writer = super().experiment
        if kept:
            writer.metrics = [{k: _number(v) for k, v in r.items() if v != ""} for r in kept]
            writer.save()
        path.with_suffix(".csv.bak").unlink(missing_ok=True)
        return writer


def _number(value: str):
    try:
        return int(value) if value.lstrip("-").isdigit() else float(value)
    except ValueError:
        return value


def make_loggers(
    cfg,
    run_dir: str | Path,
    resume_step: int | None = None,
    *,
    wandb: bool = False,
    project: str = "minillm",
    entity: str | None = None,
    mode: str = "auto",
    group: str | None = None,
    tags: list | tuple = (),
    init_timeout: float = 60,
    probe_timeout: float = 5,
) -> list[Logger]:
    """CSV (``csv/metrics.csv`` in the run directory), plus W&B with ``wandb`` (the ``logger`` node:
    ``_partial_``, completed with the run's config, its directory and the resume step).

    ``resume_step``: the run resumes from a checkpoint; the CSV keeps its earlier rows and W&B goes on
    with the same run id.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    loggers: list[Logger] = [ResumableCSVLogger(run_dir, resume_step)]
    if wandb:
        mode = resolve_wandb_mode(mode)
        if mode != "disabled":
            settings = dict(
                project=project,
                entity=entity,
                group=str(group or cfg.experiment_name),
                tags=[str(t) for t in tags or []],
                init_timeout=float(init_timeout),
                probe_timeout=float(probe_timeout),
            )
            loggers.append(_wandb_logger(cfg, run_dir, mode, settings))
    return loggers


def swept_values() -> list[str]:
    """In a multirun, the job's own overrides (``+arm=ablation_stabilizers/full``, ``seed=1``) as W&B tags,
    so the dashboard groups runs the way the sweep varied them."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return []
        return [str(o).lstrip("+~")[:64] for o in HydraConfig.get().overrides.task]
    except (ImportError, ValueError):
        return []


def wandb_run_id(run_dir: Path) -> str:
    """The run's W&B id, kept in the run directory so a resumed run continues the same W&B run."""
    path = run_dir / "wandb_run_id"
    if path.is_file():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id + "\n")
    return run_id


def wandb_base_url() -> str:
    """The W&B server this process would talk to: ``WANDB_BASE_URL``, W&B's settings file, or its default.

    Read the way ``wandb.setup`` reads it, into a settings object of our own: loading W&B's global settings
    now (before ``WANDB_MODE`` is set for the run) would make an offline run try to send W&B's usage
    telemetry to the server at exit, which hangs for 10 s when nothing answers.
    """
    import wandb

    try:
        settings = wandb.Settings()
        config_dir = os.environ.get("WANDB_CONFIG_DIR")
        folder = Path(config_dir).expanduser() if config_dir else Path("~/.config/wandb").expanduser()
        settings.settings_system = str(folder / "settings")
        settings.update_from_system_settings()
        settings.update_from_env_vars(dict(os.environ))
        return str(settings.base_url)
    except Exception:  # W&B's settings API moved: the environment, else W&B's own default
        return os.environ.get("WANDB_BASE_URL") or str(wandb.Settings().base_url)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a redirect is an answer; do not follow it
        return None


def wandb_server_unreachable(base_url: str, timeout: float) -> str | None:
    """Why the W&B server at ``base_url`` cannot be reached, or None when it answers.

    One HTTP request (through the proxies of the environment, as W&B's own client goes): any HTTP
    status, a redirect or a TLS handshake error counts as an answer (W&B decides what to make of it);
    a refused connection, an unknown host or silence for ``timeout`` seconds does not. The request runs
    in a daemon thread, so a name lookup that hangs cannot hold the run past ``timeout`` either.
    """
    outcome: dict[str, str] = {}

    def attempt() -> None:
        request = urllib.request.Request(base_url, method="HEAD")
        try:
            with urllib.request.build_opener(_NoRedirect).open(request, timeout=timeout):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered, with some status
        except urllib.error.URLError as err:
            if not isinstance(err.reason, ssl.SSLError):
                outcome["error"] = str(err.reason)
        except ssl.SSLError:
            pass
        except TimeoutError:
            outcome["error"] = f"no answer within {timeout:g} s"
        except (OSError, http.client.HTTPException, ValueError) as err:
            outcome["error"] = str(err) or type(err).__name__

    thread = threading.Thread(target=attempt, name="minillm-wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return f"no answer within {timeout:g} s"
    return outcome.get("error")


def _wandb_logger(cfg, run_dir: Path, mode: str, settings: dict) -> Logger:
    """A WandbLogger whose run is started here, so a W&B server that fails falls back to offline now.

    Online, the server is probed first (``logger.probe_timeout`` seconds): when nothing answers, the run
    goes offline at once with one warning and no online attempt. An online start that fails later (the
    server answers but errors, or ``logger.init_timeout`` passes) shuts W&B's service down before the
    offline run starts with the same run id: the failed attempt still holds that id in the service.
    """
    from lightning.pytorch.loggers import WandbLogger

    os.environ.setdefault("WANDB_SILENT", "true")
    # Never prompt: without a terminal wandb would otherwise ask how to log in.
    os.environ.setdefault("WANDB_DISABLE_CODE", "true")
    tags = [*settings["tags"], f"objective:{cfg.objective.name}", f"seed:{cfg.seed}"]
    tags += swept_values()
    run_id = wandb_run_id(run_dir)
    timeout, probe_timeout = settings["init_timeout"], settings["probe_timeout"]
    later = f"upload later with `wandb sync {run_dir}/wandb/offline-run-*`"

    def start(mode: str) -> Logger:
        import wandb

        os.environ["WANDB_MODE"] = mode
        logger = WandbLogger(
            project=settings["project"],
            entity=settings["entity"],
            group=settings["group"],
            name=str(cfg.run_name),
            tags=tags,
            save_dir=str(run_dir),
            mode=mode,
            id=run_id,
            resume="allow",
            config=OmegaConf.to_container(cfg, resolve=True),
            job_type=str(cfg.objective.name),
            settings=wandb.Settings(init_timeout=timeout, silent=True),
        )
        logger.experiment  # noqa: B018 - starts the run now, where a failure can be handled
        return logger

    if mode == "online" and probe_timeout > 0:
        url = wandb_base_url()
        why = wandb_server_unreachable(url, probe_timeout)
        if why is not None:
            log.warning("W&B server %s cannot be reached (%s): logging offline; %s", url, why, later)
            mode = "offline"
    try:
        logger = start(mode)
    except Exception as err:  # a W&B server that errors or times out must not stop the run
        if mode == "offline":
            raise MinillmError(f"logger: W&B could not start even offline ({err})") from None
        log.warning(
            "W&B %s failed (%s): logging offline instead; %s", mode, str(err).splitlines()[0][:200], later
        )
        _shut_down_wandb()
        mode = "offline"
        logger = start(mode)
    log.info("W&B logging %s, run id %s (files in %s/wandb)", mode, run_id, run_dir)
    return logger


def _shut_down_wandb() -> None:
    """Finish any W&B run and stop W&B's service process, which still holds a failed run's id.

    The next ``wandb.init`` starts a fresh service, so the offline run can take the same id (a resumed
    run must keep it).
    """
    import wandb

    try:
        if wandb.run is not None:
            wandb.finish(exit_code=1, quiet=True)
    except Exception as err:  # the teardown below is what matters
        log.debug("finishing the failed W&B run: %s", err)
    try:
        wandb.teardown()
    except (Exception, SystemExit) as err:  # teardown exits with the service's own non-zero status
        log.debug("stopping W&B's service: %s", err)


def loggers_from_config(cfg, run_dir: str | Path, resume_step: int | None = None) -> list[Logger]:
    """The ``logger`` node instantiated (its ``_target_``, e.g. :func:`make_loggers`) for this run."""
    from hydra.utils import instantiate

    return instantiate(cfg.logger, _convert_="all")(cfg, run_dir, resume_step=resume_step)
