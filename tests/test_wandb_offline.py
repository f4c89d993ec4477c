"""W&B with a key but no W&B server that answers (a cluster node without internet): the run goes on offline
with one warning and decides within seconds. Real W&B and real sockets, all on 127.0.0.1: a port that
refuses connections, a socket that accepts and never answers, and an HTTP server that answers every
request with an error (the online start fails after the probe has passed)."""

from __future__ import annotations

import http.server
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from minillm.loggers import loggers_from_config, wandb_server_unreachable

from .conftest import ROOT
from .test_smoke import smoke_overrides

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, like a real key; never valid


@pytest.fixture
def refused_url():
    """A loopback port with nothing listening: connections are refused at once."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_url():
    """A loopback socket that accepts connections and never reads or answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_forever():
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(5)
    server.close()
    for conn in held:
        conn.close()


@pytest.fixture
def erroring_url():
    """A loopback HTTP server that answers every request with 500: reachable, but W&B cannot start."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(500, "broken W&B server")

        do_POST = do_HEAD = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def wandb_key(monkeypatch):
    """A (fake) W&B key in the environment, W&B's mode left to the project; W&B is shut down after."""
    import wandb

    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.delenv("WANDB_MODE", raising=False)  # the conftest's "offline" is restored after the test
    yield
    wandb.finish()
    wandb.teardown()  # no W&B service process outlives the test


def wandb_loggers(compose, tmp_path, caplog, *overrides):
    """make_loggers for a smoke run with ``logger=wandb``: (W&B logger, its warnings, seconds taken)."""
    cfg = compose(smoke_overrides(tmp_path, "logger=wandb", *overrides))
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="minillm.loggers"):
        loggers = loggers_from_config(cfg, tmp_path / "run")
    seconds = time.monotonic() - start
    wandb_logger = next(lg for lg in loggers if type(lg).__name__ == "WandbLogger")
    warnings = [r.getMessage() for r in caplog.records if r.name == "minillm.loggers"]
    return wandb_logger, warnings, seconds


# The decision alone, against real sockets (a fraction of a second to about a second each).


def test_the_probe_reports_a_refused_port_at_once(refused_url):
    start = time.monotonic()
    why = wandb_server_unreachable(refused_url, timeout=5)
    assert why is not None and "refused" in why.lower()
    assert time.monotonic() - start < 2


def test_the_probe_gives_up_on_a_silent_server_after_its_timeout(silent_url):
    start = time.monotonic()
    why = wandb_server_unreachable(silent_url, timeout=1)
    seconds = time.monotonic() - start
    assert why == "no answer within 1 s"
    assert 0.9 < seconds < 3


def test_the_probe_counts_any_http_answer_as_reachable(erroring_url):
    assert wandb_server_unreachable(erroring_url, timeout=5) is None  # W&B decides what a 500 means


# make_loggers with real W&B: offline at once, one warning, no online attempt.


@pytest.mark.parametrize("server", ["refused_url", "silent_url"])
def test_a_key_without_a_reachable_server_logs_offline_within_seconds(
    server, request, wandb_key, monkeypatch, compose, tmp_path, caplog
):
    url = request.getfixturevalue(server)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    # init_timeout is long: the run must decide from the probe, not by waiting for W&B to give up.
    wb, warnings, seconds = wandb_loggers(
        compose, tmp_path, caplog, "logger.probe_timeout=1", "logger.init_timeout=30"
    )
    run_dir = tmp_path / "run"
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert wb.experiment.id == run_id
    assert wb.experiment.settings.mode == "offline"
    assert len(warnings) == 1 and f"W&B server {url} cannot be reached" in warnings[0]
    assert list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert not list((run_dir / "wandb").glob("run-*"))  # online was never tried
    assert seconds < 15, seconds


def test_an_online_start_that_fails_goes_offline_with_the_same_run_id(
    erroring_url, wandb_key, monkeypatch, compose, tmp_path, caplog
):
    """The server answers the probe, but W&B cannot start online: the failed attempt still holds the
    run id in W&B's service ("run ID ... is in use"); the offline run must start with that same id."""
    monkeypatch.setenv("WANDB_BASE_URL", erroring_url)
    wb, warnings, _ = wandb_loggers(compose, tmp_path, caplog, "logger.init_timeout=2")
    run_dir = tmp_path / "run"
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert wb.experiment.id == run_id  # a resumed run keeps its W&B id, fallback or not
    assert wb.experiment.settings.mode == "offline"
    assert len(warnings) == 1 and "W&B online failed" in warnings[0], warnings
    assert list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    wb.log_metrics({"x": 1.0}, step=0)  # the offline run takes data


@pytest.mark.slow
@pytest.mark.parametrize("server", ["refused_url", "silent_url"])
def test_a_run_with_a_key_and_no_server_finishes_offline(server, request, tmp_path):
    """As a user: `python -m minillm.run ... logger=wandb` with a key and no W&B server that answers."""
    url = request.getfixturevalue(server)
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    env.update(WANDB_API_KEY=FAKE_KEY, WANDB_BASE_URL=url)
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "minillm.run",
            *smoke_overrides(tmp_path, "objective=sft", "logger=wandb", "eval.compare=false"),
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    log = out.stdout + out.stderr
    assert log.count("[minillm.loggers][WARNING]") == 1 and "cannot be reached" in log
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == 3
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    assert list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))


def test_a_netrc_login_for_the_configured_server_counts(monkeypatch, tmp_path, refused_url):
    """`wandb login` writes the key under the host of W&B's server (a self-hosted one, or W&B 0.31's
    default, api.forge.coreweave.com): that login means online, as W&B itself would read it."""
    from minillm.loggers import resolve_wandb_mode

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", refused_url)
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text(f"machine {refused_url.split('//')[1]}\n  login user\n  password {FAKE_KEY}\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert resolve_wandb_mode("auto") == "online"
    netrc_file.write_text(f"machine wandb.example.org\n  login user\n  password {FAKE_KEY}\n")
    assert resolve_wandb_mode("auto") == "offline"  # a login for another server is not one for this
