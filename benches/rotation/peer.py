"""The Python peer of the benchmark: what a hand-written rotation script does (requests + hvac),
without any durability: one rotate-secret call, one KV write. Warm: the Management API token is
obtained once, before timing, and every thread keeps its own HTTP sessions.

Reads its job from the environment, prints one JSON object: latencies (seconds), wall time and
the process's own CPU time. Run by the benchmark with the project's `.tools/venv` Python.
"""

import json
import os
import resource
import threading
import time

import hvac
import requests

AUTH0 = os.environ["PEER_AUTH0_URL"]
DOMAIN = os.environ["PEER_AUTH0_DOMAIN"]
VAULT = os.environ["PEER_VAULT_ADDR"]
VAULT_TOKEN = os.environ["PEER_VAULT_TOKEN"]
CLIENTS = os.environ["PEER_CLIENTS"].split(",")
CONCURRENCY = int(os.environ["PEER_CONCURRENCY"])
COUNT = int(os.environ["PEER_COUNT"])
WARMUP = int(os.environ.get("PEER_WARMUP", "0"))


def token():
    answer = requests.post(
        f"{AUTH0}/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": os.environ["PEER_M2M_ID"],
            "client_secret": os.environ["PEER_M2M_SECRET"],
            "audience": f"https://{DOMAIN}/api/v2/",
        },
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()["access_token"]


def worker(index, bearer, jobs, latencies, lock):
    auth0 = requests.Session()
    auth0.headers["authorization"] = f"Bearer {bearer}"
    vault = hvac.Client(url=VAULT, token=VAULT_TOKEN)
    # Each worker rotates its own clients, as the service's callers do at this concurrency.
    mine = CLIENTS[index::CONCURRENCY] or CLIENTS
    done = []
    for n in range(jobs):
        client_id = mine[n % len(mine)]
        started = time.perf_counter()
        answer = auth0.post(f"{AUTH0}/api/v2/clients/{client_id}/rotate-secret", timeout=10)
        answer.raise_for_status()
        secret = answer.json()["client_secret"]
        vault.secrets.kv.v2.create_or_update_secret(
            path=f"peer/{client_id}",
            secret={"client_id": client_id, "client_secret": secret},
            mount_point="secret",
        )
        done.append(time.perf_counter() - started)
    with lock:
        latencies.extend(done)


def run(jobs_total, bearer):
    latencies, lock = [], threading.Lock()
    per_worker = [jobs_total // CONCURRENCY + (1 if i < jobs_total % CONCURRENCY else 0)
                  for i in range(CONCURRENCY)]
    threads = [threading.Thread(target=worker, args=(i, bearer, n, latencies, lock))
               for i, n in enumerate(per_worker)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - started


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


bearer = token()
if WARMUP:
    run(WARMUP, bearer)
cpu_before = cpu_seconds()
latencies, wall = run(COUNT, bearer)
print(json.dumps({
    "latencies": latencies,
    "wall_seconds": wall,
    "cpu_seconds": cpu_seconds() - cpu_before,
}))
