"""Subcommands that put a model to use on incoming studies: listen."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pacs_workbench.cli.base import ErrorTypes, refuses

# --- listen ------------------------------------------------------------------------------------

LISTEN_KEY_FILE = "listen.key"


def add_listen(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "listen",
        help="score incoming studies with a model package: a DICOM C-STORE SCP writing a SEG and a TID 1500 SR",
        description=(
            "Verify PACKAGE (DIR/package of `model`, with the segmentation stage's U-Net), then receive studies as a "
            "DICOM C-STORE SCP on --host (127.0.0.1 unless told otherwise) and --port, from the calling AE titles in "
            "--allow-ae only (and the peer addresses in --allow-peer, when given); every other association is "
            "rejected with a logged reason and nothing it sent is kept. A study is complete when nothing arrived for "
            "--quiet-seconds and no association that sent some of it is still open; it is then scored on the series "
            "matching the package's cohort criteria (volume with the package's preprocessing, lesions by the "
            "package's U-Net, features with its radiomics parameters, risk and risk group as `predict` gives them) "
            "and DIR/results/<study>/ receives a DICOM SEG of the lesions, a Comprehensive 3D SR (lesion volume and "
            "diameter, risk, risk group, model id) and result.json; with --store-to both are sent to a PACS. A study "
            "that cannot be scored gets a logged reason and no SR. Studies are pseudonymized with "
            "PACS_WORKBENCH_KEY_FILE's key, else with DIR/listen.key (made on the first start). SIGTERM or Ctrl-C "
            "finishes the studies in progress and exits 0; a restart scores what was received but not scored. "
            "Exits 2 when the package is refused."
        ),
    )
    p.add_argument("--package", type=Path, required=True, help="model package folder (model/package)")
    p.add_argument("--ae-title", required=True, help="this SCP's AE title")
    p.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    p.add_argument("--out", type=Path, required=True, help="folder for received studies, results and state")
    p.add_argument("--allow-ae", required=True, help="comma-separated calling AE titles accepted")
    p.add_argument(
        "--store-to", default=None,
        help="send the SEG and SR to this PACS: dimse://AET@HOST:PORT or dicomweb+http://HOST:PORT/dicom-web",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--allow-peer", default="", help="comma-separated peer IP addresses accepted (default: any)")
    p.add_argument("--workers", type=int, default=1, help="studies scored at once (default 1)")
    p.add_argument("--quiet-seconds", type=float, default=5.0, help="a study is complete after this quiet time")
    p.add_argument("--max-disk-mb", type=float, default=2048.0, help="bound of the received studies on disk (MB)")
    p.set_defaults(handler=_cmd_listen)


def _package_error() -> ErrorTypes:
    from pacs_workbench.deploy import PackageError

    return (PackageError,)


def _listen_key(out: Path) -> bytes:
    """The key of ``PACS_WORKBENCH_KEY_FILE``, else this listener's own (made once, mode 0600)."""
    import os

    from pacs_workbench.core.params import KEY_FILE_ENV
    from pacs_workbench.core.pseudonym import generate_key, load_key

    if os.environ.get(KEY_FILE_ENV):
        return load_key()
    own = out / LISTEN_KEY_FILE
    if not own.is_file():
        generate_key(own)
    return load_key(own)


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _log_setup() -> None:
    """One line per event on stderr from the listener; pyradiomics' and highdicom's chatter kept out."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    listen = logging.getLogger("pacs_workbench.listen")
    listen.addHandler(handler)
    listen.setLevel(logging.INFO)
    listen.propagate = False
    for noisy in ("radiomics", "highdicom", "pynetdicom"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


@refuses(_package_error, "{command}: refused: {exc}")
def _cmd_listen(args: argparse.Namespace) -> int:
    from pacs_workbench.deploy import StudyScorer, load_package
    from pacs_workbench.deploy.listen import Listener
    from pacs_workbench.deploy.listen_scp import StudyReceiver

    allow_ae = _items(args.allow_ae)
    if not allow_ae:
        raise ValueError("--allow-ae names no AE title: nobody could send a study")
    if args.workers < 1 or args.quiet_seconds < 0 or args.max_disk_mb <= 0:
        raise ValueError("--workers must be at least 1, --quiet-seconds at least 0, --max-disk-mb positive")
    _log_setup()
    log = logging.getLogger("pacs_workbench.listen")
    args.out.mkdir(parents=True, exist_ok=True)
    key = _listen_key(args.out)
    package = load_package(args.package)
    # One torch thread per study: a second one mostly waits on the first with this small U-Net.
    scorer = StudyScorer(package, args.out, key, store_to=args.store_to, threads=1)
    receiver = StudyReceiver(
        args.out, args.ae_title, allow_ae, key, allow_hosts=_items(args.allow_peer),
        max_bytes=int(args.max_disk_mb * 1024 * 1024),
    )  # fmt: skip
    listener = Listener(receiver, scorer, quiet_s=args.quiet_seconds, workers=args.workers)
    log.info("AE title %s, model %s, %d worker(s)", args.ae_title, package.model_id, args.workers)
    listener.run(args.host, args.port)
    log.info("stopped")
    return 0
