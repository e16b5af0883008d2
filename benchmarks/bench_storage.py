"""What shared storage costs a trial: checkpoint upload and download, local directory vs an S3 endpoint.

Every explore and verify report carries a checkpoint of the full trainer state, which Tune
copies from the trial's scratch directory to ``storage_path`` (and back when a trial is
restored or PBT clones one). This measures exactly that copy (``pyarrow.fs.copy_files``,
Tune's own mechanism) of a real checkpoint (DeltaNet trained two steps at the default
scale: model and AdamW state) to a local directory and to an S3 endpoint: a moto server on
127.0.0.1 started by the benchmark, so it measures the protocol and client overhead, not a
network. It prints seconds per checkpoint, the S3/local ratio from this same run, and the
cost per trial at the scale's reports per trial.

Run: ``.venv/bin/python benchmarks/bench_storage.py [--repeats 10] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from rich.table import Table

from asiarch.console import output_console


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def real_checkpoint(folder: Path) -> int:
    """trainer.pt of DeltaNet after two steps at the default scale (the file every report uploads); its size."""
    import torch

    from asiarch.arch import SEEDS
    from asiarch.config import compose, load_scale, stage_scale
    from asiarch.train.protocol import prepare_data, train_mixer

    name = compose().scale.name
    scale = stage_scale(load_scale(name), 2)
    holder = {}
    train_mixer(SEEDS["deltanet"], scale, prepare_data(scale), downstream=False,
                on_trainer=lambda trainer: holder.__setitem__("trainer", trainer))
    torch.save({"trainer": holder["trainer"].state_dict(), "training_seed": 0, "design": "deltanet"},
               folder / "trainer.pt")
    return (folder / "trainer.pt").stat().st_size


def time_copies(source: Path, fs, root: str, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds to upload ``source`` to ``root`` on ``fs`` and to download it back, ``repeats`` times each."""
    import pyarrow.fs as pafs

    local = pafs.LocalFileSystem()
    up, down = [], []
    for i in range(repeats):
        target = f"{root}/checkpoint_{i:06d}"
        start = time.perf_counter()
        fs.create_dir(target)  # as Tune does before it uploads a checkpoint
        pafs.copy_files(str(source), target, source_filesystem=local, destination_filesystem=fs)
        up.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as back:
            start = time.perf_counter()
            pafs.copy_files(target, back, source_filesystem=fs, destination_filesystem=local)
            down.append(time.perf_counter() - start)
    return up, down


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=None, help="also write the table as JSON")
    args = parser.parse_args()
    console = output_console()

    import boto3
    import pyarrow.fs as pafs

    from asiarch.config import compose, load_scale
    from asiarch.storage import ObjectPath, StorageSettings

    endpoint = f"http://127.0.0.1:{free_port()}"
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p",
                               endpoint.rsplit(":", 1)[1]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
                break
            except Exception:
                time.sleep(0.3)
        with tempfile.TemporaryDirectory() as work:
            source = Path(work) / "checkpoint"
            source.mkdir()
            with console.status("training two steps for a real checkpoint"):
                size = real_checkpoint(source)
            (Path(work) / "storage").mkdir()
            s3 = ObjectPath.parse("s3://bench/tune", StorageSettings(endpoint=endpoint))
            results = {}
            for label, fs, root in (("local directory", pafs.LocalFileSystem(), str(Path(work) / "storage")),
                                    ("S3 endpoint (moto, 127.0.0.1)", s3.filesystem, s3.fs_path)):
                with console.status(f"{label}: {args.repeats} uploads and downloads"):
                    up, down = time_copies(source, fs, root, args.repeats)
                results[label] = {"upload_s": median(up), "download_s": median(down)}
    finally:
        server.kill()
    scale = load_scale(compose().scale.name)
    reports = scale.stages.reports_per_trial
    local, remote = results["local directory"], results["S3 endpoint (moto, 127.0.0.1)"]
    table = Table(title=f"Checkpoint of {size / 1e6:.1f} MB (DeltaNet at {scale.name}, model + AdamW): "
                        f"median of {args.repeats}; a trial uploads {reports} (one per report)")
    for header in ("storage", "upload s", "download s", f"per trial s ({reports} uploads)", "upload vs local"):
        table.add_column(header, justify="left" if header == "storage" else "right")
    for label, r in results.items():
        table.add_row(label, f"{r['upload_s']:.4f}", f"{r['download_s']:.4f}", f"{r['upload_s'] * reports:.3f}",
                      f"{r['upload_s'] / local['upload_s']:.1f}x")
    console.print(table)
    console.print(f"S3/local: upload {remote['upload_s'] / local['upload_s']:.1f}x, download "
                  f"{remote['download_s'] / local['download_s']:.1f}x (same run, same file)")
    if args.out:
        Path(args.out).write_text(json.dumps({"bytes": size, "reports_per_trial": reports, "results": results},
                                             indent=2))


if __name__ == "__main__":
    main()
