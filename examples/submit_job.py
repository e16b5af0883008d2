"""Submit a campaign to a running Ray cluster with the Jobs API (what `ray job submit` does).

    ray start --head                                   # or an existing cluster
    RAY_AUTH_MODE=token .venv/bin/python examples/submit_job.py --address http://127.0.0.1:8265 \\
        --output-dir s3://my-bucket/asiarch-runs campaign.max_candidates=20

The cluster's nodes need asiarch installed (the same environment) and, for an ``s3://``
output, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (and ``AWS_ENDPOINT_URL`` or
``storage.endpoint=...`` for MinIO and the like) in their environment. The driver runs on
the head; trials spread over every node's CPUs/GPUs unchanged (``run.trial_resources``
restricts them to nodes with a custom resource). On more than one node ``--output-dir``
must be an ``s3://`` prefix or a mount every node sees (``storage.shared_filesystem=true``);
a local directory is refused before any trial starts. Stop a job and submit the same
command again: the campaign continues where it stopped.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default="http://127.0.0.1:8265", help="the cluster's dashboard address")
    parser.add_argument("--output-dir", required=True,
                        help="where campaigns live: s3://bucket/prefix, or an absolute path every node sees")
    parser.add_argument("--python", default=sys.executable, help="the Python of the asiarch environment on the cluster")
    parser.add_argument("--no-wait", action="store_true", help="print the job id and return")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for `asiarch run`")
    args = parser.parse_args()

    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(args.address)
    command = [args.python, "-m", "asiarch.cli", "run", f"run.output_dir={args.output_dir}", *args.overrides]
    for attempt in range(30):  # a head that just started may have no job agent yet
        try:
            job_id = client.submit_job(entrypoint=shlex.join(command),
                                       runtime_env={"env_vars": {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}})
            break
        except RuntimeError as err:
            if "try again" not in str(err) or attempt == 29:
                raise
            time.sleep(2)
    print(f"submitted {job_id}: {shlex.join(command)}", flush=True)
    if args.no_wait:
        return 0
    while (status := client.get_job_status(job_id)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        time.sleep(2)
    print(client.get_job_logs(job_id)[-4000:])  # the end of the log; `ray job logs ID` prints all of it
    print(f"job {job_id}: {status}")
    return 0 if status == JobStatus.SUCCEEDED else 1


if __name__ == "__main__":
    raise SystemExit(main())
