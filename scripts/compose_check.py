#!/usr/bin/env python3
"""The scenario of scripts/compose-check.sh, run against a copy of the project's compose
files on the private engine that script started (DOCKER_HOST, DOCKER_CONFIG set).

    compose_check.py PROJECT_DIR scenario        # as a user would, then faults; counts
    compose_check.py PROJECT_DIR observability   # Prometheus scrapes the API and workers

Talks to Courier only through the API's published port, as a user does. Exits non-zero,
saying why, when a job is lost, a call was made twice outside a fault, a check of the
compose file's promises fails, or a step does not finish in time.
"""

import base64
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

PROJECT = sys.argv[1]
WHAT = sys.argv[2]
JOBS = int(os.environ.get("COMPOSE_CHECK_JOBS", "2000"))
SLOW_SHARE = 2  # every second job's call takes 2 s
T0 = time.time()


class Failed(Exception):
    pass


def log(msg):
    print(f"compose-check [{time.time() - T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


def run(*args, timeout=600, check=True, quiet=False):
    """Runs a command in the project directory; returns its stdout."""
    started = time.time()
    done = subprocess.run(
        list(args), cwd=PROJECT, capture_output=True, text=True, timeout=timeout
    )
    took = time.time() - started
    if not quiet:
        log(f"$ {' '.join(args)}  ({took:.1f} s, exit {done.returncode})")
    if check and done.returncode != 0:
        raise Failed(f"`{' '.join(args)}` failed (exit {done.returncode}):\n{done.stderr.strip()}")
    return done.stdout


def compose(*args, **kw):
    return run("docker", "compose", *args, **kw)


def wait_for(what, seconds, probe, every=1.0):
    deadline = time.time() + seconds
    last = None
    while time.time() < deadline:
        try:
            got = probe()
            if got:
                return got
            last = None
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(every)
    raise Failed(f"{what}: not within {seconds} s" + (f" (last error: {last})" if last else ""))


def body_of(raw):
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw.decode(errors="replace")


def http(method, url, body=None, key=None, headers=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, body_of(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, body_of(e.read())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_env(path, values):
    """`cp .env.example .env`, then the values a user sets in it."""
    text = open(path).read()
    for k, v in values.items():
        line = f"{k}={v}"
        text, n = re.subn(rf"^#? ?{re.escape(k)}=.*$", line, text, count=1, flags=re.M)
        if n == 0:
            text += f"\n{line}\n"
    open(os.path.join(PROJECT, ".env"), "w").write(text)


def containers(service):
    out = compose("ps", "-q", service, quiet=True)
    return [c for c in out.split() if c]


def inspect(container):
    return json.loads(run("docker", "inspect", container, quiet=True))[0]


def target_address():
    info = inspect("courier-check-target")
    return info["NetworkSettings"]["Networks"]["courier_egress"]["IPAddress"]


# --- the scenario ------------------------------------------------------------------------


def scenario():
    port = free_port()
    set_env(
        os.path.join(PROJECT, ".env.example"),
        {
            "REDIS_PASSWORD": secrets.token_hex(16),
            "POSTGRES_PASSWORD": secrets.token_hex(16),
            "COURIER__SECRETS__ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
            "COURIER_API_PORT": str(port),
            # The target is a container of this project: a private address, refused
            # unless named (README, Docker Compose).
            "COURIER__OUTBOUND__ALLOW": "target",
        },
    )
    api = f"http://127.0.0.1:{port}"
    t = time.time()
    compose("up", "-d", "--wait", "--wait-timeout", "300", "--no-build", "--scale", "worker=3", timeout=400)
    log(f"up -d --wait --scale worker=3: every service healthy in {time.time() - t:.1f} s")
    migrate = compose("ps", "-a", "--format", "json", "migrate", quiet=True)
    exits = [json.loads(line)["ExitCode"] for line in migrate.splitlines() if line.strip()]
    if exits != [0]:
        raise Failed(f"migrate did not exit 0: {exits}")

    run(
        "docker", "run", "-d", "--name", "courier-check-target", "--network", "courier_egress",
        "--network-alias", "target", "courier-check-target",
    )
    target = f"http://{target_address()}:8000"
    wait_for("the target", 30, lambda: http("GET", f"{target}/calls")[0] == 200, every=0.3)

    out = compose("run", "--rm", "-T", "api", "keys", "create", "--name", "admin", "--scope", "admin")
    found = re.search(r"courier_[0-9a-f]{64}", out)
    if not found:
        raise Failed(f"`keys create` printed no key:\n{out}")
    key = found.group(0)

    for path in ("/healthz", "/readyz"):
        status, body = http("GET", api + path)
        if status != 200:
            raise Failed(f"GET {path}: {status} {body}")
        log(f"GET {path}: 200 {json.dumps(body)[:200]}")

    # 2,000 jobs from 8 clients over about 40 s, each retried (same Idempotency-Key)
    # until the API answers, while the faults below land.
    ids = [None] * JOBS
    submit_errors = {"count": 0}
    lock = threading.Lock()
    pace = 40.0 / JOBS

    def client(k):
        for i in range(k, JOBS, 8):
            due = T_SUBMIT + i * pace
            if due > time.time():
                time.sleep(due - time.time())
            path = f"/slow/{i}" if i % SLOW_SHARE == 0 else f"/fast/{i}"
            body = {"target": {"url": f"http://target:8000{path}"}, "max_attempts": 10}
            deadline = time.time() + 180
            while True:
                try:
                    status, got = http(
                        "POST", f"{api}/v1/jobs", body, key, {"Idempotency-Key": f"check-{i}"}
                    )
                except OSError:
                    status, got = None, None
                if status in (200, 201):
                    ids[i] = got["id"]
                    break
                if status is not None and 400 <= status < 500 and status not in (408, 429):
                    raise Failed(f"job {i} refused: {status} {got}")
                with lock:
                    submit_errors["count"] += 1
                if time.time() > deadline:
                    raise Failed(f"job {i}: the API did not take it within 180 s")
                time.sleep(0.5)

    faults = []

    def fault(name, action):
        start = time.time()
        action()
        faults.append({"fault": name, "start": start, "end": time.time()})
        log(f"fault: {name} ({time.time() - start:.1f} s)")

    def kill_a_worker():
        victim = containers("worker")[0]
        run("docker", "kill", victim)

    def kill_api():
        compose("kill", "-s", "SIGKILL", "api")
        compose("up", "-d", "--no-build", "api", timeout=300)

    schedule = [
        (6, "worker killed (docker kill)", kill_a_worker),
        (10, "scale to 5 (--no-recreate)", lambda: compose("up", "-d", "--no-build", "--scale", "worker=5", "--no-recreate", timeout=300)),
        (16, "docker compose restart redis", lambda: compose("restart", "redis", timeout=300)),
        (24, "api killed (SIGKILL), up -d api", kill_api),
        (32, "scale to 2", lambda: compose("up", "-d", "--no-build", "--scale", "worker=2", "--no-recreate", timeout=300)),
    ]

    errors = []

    def guarded(fn, *args):
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    global T_SUBMIT
    T_SUBMIT = time.time()
    clients = [threading.Thread(target=guarded, args=(client, k)) for k in range(8)]
    for c in clients:
        c.start()
    for at, name, action in schedule:
        wait = T_SUBMIT + at - time.time()
        if wait > 0:
            time.sleep(wait)
        fault(name, action)
    for c in clients:
        c.join()
    if errors:
        raise errors[0]
    accepted = [i for i in ids if i]
    log(f"{len(accepted)} jobs accepted in {time.time() - T_SUBMIT:.1f} s "
        f"({submit_errors['count']} submissions retried while the API was away)")

    # Every job terminal, read through GET /v1/jobs as a user would.
    def states():
        found = {}
        cursor = None
        while True:
            q = "limit=500" + (f"&cursor={cursor}" if cursor else "")
            status, page = http("GET", f"{api}/v1/jobs?{q}", key=key, timeout=30)
            if status != 200:
                raise Failed(f"GET /v1/jobs: {status} {page}")
            for job in page["jobs"]:
                found[job["id"]] = job["state"]
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    t = time.time()

    def all_terminal():
        s = states()
        waiting = [i for i in accepted if s.get(i) not in ("succeeded", "dead", "cancelled")]
        return s if not waiting else None

    final = wait_for("every job terminal", 300, all_terminal, every=2)
    drained = time.time() - t
    by_state = {}
    for i in accepted:
        by_state[final.get(i, "missing")] = by_state.get(final.get(i, "missing"), 0) + 1
    lost = len(accepted) - by_state.get("succeeded", 0)

    # What the target saw.
    status, calls = http("GET", f"{target}/calls", timeout=30)
    per_job = {}
    for call in calls:
        per_job.setdefault(call["job"], []).append(call)
    never_called = [i for i in accepted if not any(c["answered"] for c in per_job.get(i, []))]
    repeated = {j: sorted(cs, key=lambda c: c["start"]) for j, cs in per_job.items() if len(cs) > 1}
    explained = {}
    unexplained = []
    kills = [f for f in faults if not f["fault"].startswith("scale")]
    for job, cs in repeated.items():
        first = cs[0]
        why = next(
            (f["fault"] for f in kills if first["start"] <= f["end"] and f["start"] <= first["end"] + 1),
            None,
        )
        if why:
            explained[why] = explained.get(why, 0) + 1
        else:
            unexplained.append((job, cs))

    # What the compose file promises of the networks.
    checks = network_checks()
    workers = containers("worker")
    alive = [c for c in workers if inspect(c)["State"]["Running"]]
    api_state = inspect(containers("api")[0])["State"]

    def health():
        got = [inspect(c)["State"].get("Health", {}).get("Status") for c in workers]
        return got if all(h == "healthy" for h in got) else None

    try:
        healthy = len(wait_for("every worker healthy", 60, health, every=2))
    except Failed:
        healthy = sum(1 for c in workers if inspect(c)["State"].get("Health", {}).get("Status") == "healthy")

    rows = [
        ("jobs submitted", JOBS),
        ("jobs accepted (2xx)", len(accepted)),
        ("jobs by state", ", ".join(f"{k} {v}" for k, v in sorted(by_state.items()))),
        ("**lost** (accepted, not succeeded)", f"**{lost}**"),
        ("accepted but never answered at the target", len(never_called)),
        ("calls at the target", len(calls)),
        ("jobs called more than once", len(repeated)),
    ]
    for why, n in sorted(explained.items()):
        rows.append((f"  of them, first call in flight at: {why}", n))
    rows.append(("  of them, near no kill", len(unexplained)))
    rows += [
        ("every job terminal, after the last submission", f"{drained:.1f} s"),
        ("submissions retried while the API was away", submit_errors["count"]),
        ("worker containers running at the end", f"{len(alive)} of {len(workers)} (scaled to 2), {healthy} healthy"),
        ("api container at the end", f"{api_state['Status']}, {api_state.get('Health', {}).get('Status', 'no health check')}"),
    ]
    rows += [(k, v) for k, v in checks]
    print("\n| figure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    print("\n| fault | at (s after the first submission) | took |\n|---|---|---|")
    for f in faults:
        print(f"| {f['fault']} | {f['start'] - T_SUBMIT:.1f} | {f['end'] - f['start']:.1f} s |")
    sys.stdout.flush()

    problems = []
    if len(accepted) != JOBS:
        problems.append(f"{JOBS - len(accepted)} jobs were never accepted")
    if lost:
        problems.append(f"{lost} jobs lost: {by_state}")
    if never_called:
        problems.append(f"{len(never_called)} jobs never answered at the target, e.g. {never_called[:3]}")
    if unexplained:
        problems.append(f"{len(unexplained)} jobs called twice near no kill, e.g. {unexplained[:2]}")
    if len(alive) != 2 or len(workers) != 2 or healthy != 2:
        problems.append(f"workers at the end: {len(alive)} running, {healthy} healthy, of {len(workers)}; 2 expected")
    if api_state.get("Health", {}).get("Status") not in ("healthy", "starting"):
        problems.append(f"the api container is {api_state}")
    problems += [v for k, v in checks if isinstance(v, str) and v.startswith("FAIL")]
    if problems:
        raise Failed("; ".join(problems))


def reaches(service, address):
    """Whether `service`'s first container opens a TCP connection to `address` (ip:port)."""
    ip, port = address.split(":")
    probe = f"timeout 3 bash -c 'echo > /dev/tcp/{ip}/{port}' 2>/dev/null"
    done = subprocess.run(
        ["docker", "compose", "exec", "-T", service, "bash", "-c", probe],
        cwd=PROJECT, capture_output=True, text=True, timeout=30,
    )
    return done.returncode == 0


def network_checks():
    """Redis and PostgreSQL publish no port and reach nothing outside `internal` (Docker
    gives an internal network's containers a default route, and drops what leaves the
    bridge: so it is tried, with the target container as the outside); the API
    publishes its port; a worker reaches the target (the same probe, as a control)."""
    out = []
    api_port = compose("port", "api", "8080", quiet=True).strip()
    out.append(("api published on", api_port or "FAIL: the api publishes no port"))
    outside = f"{target_address()}:8000"
    control = reaches("worker", outside)
    out.append(("a worker reaches the target (egress)", "yes" if control else "FAIL: no"))
    for service in ("redis", "postgres"):
        info = inspect(containers(service)[0])
        published = [b for bs in (info["NetworkSettings"]["Ports"] or {}).values() for b in (bs or [])]
        nets = sorted(info["NetworkSettings"]["Networks"])
        internal = all(
            json.loads(run("docker", "network", "inspect", n, quiet=True))[0]["Internal"] for n in nets
        )
        out_of_internal = reaches(service, outside)
        ok = not published and internal and not out_of_internal
        out.append((
            f"{service}: published ports; networks; reaches the target",
            ("" if ok else "FAIL: ")
            + f"{len(published)}; {', '.join(nets)} (internal: {internal}); {'yes' if out_of_internal else 'no'}",
        ))
    return out


# --- the observability profile -----------------------------------------------------------


def observability():
    compose("--profile", "observability", "up", "-d", "--no-build", "--no-recreate", "prometheus", timeout=300)
    compose("up", "-d", "--no-build", "--scale", "worker=3", "--no-recreate", timeout=300)
    workers = len(containers("worker"))

    def ask(path):
        # From a container on the `metrics` network: Prometheus publishes no port.
        out = run(
            "docker", "run", "--rm", "--network", "courier_metrics", "--entrypoint", "python3",
            "courier-check-target", "-c",
            f"import urllib.request; print(urllib.request.urlopen('http://prometheus:9090{path}', timeout=5).read().decode())",
            quiet=True,
        )
        return json.loads(out)["data"]

    def scraped():
        targets = ask("/api/v1/targets")["activeTargets"]
        up = [t for t in targets if t["health"] == "up"]
        jobs = {}
        for t in up:
            jobs[t["labels"]["job"]] = jobs.get(t["labels"]["job"], 0) + 1
        if jobs.get("courier-api") == 1 and jobs.get("courier-worker") == workers:
            return targets
        return None

    t = time.time()
    targets = wait_for(f"prometheus scraping the api and {workers} workers", 120, scraped, every=3)
    rules = ask("/api/v1/rules")["groups"]
    n_rules = sum(len(g["rules"]) for g in rules)
    print("\n| figure | value |\n|---|---|")
    print(f"| prometheus targets up | {len(targets)} (1 api + {workers} workers), after {time.time() - t:.0f} s |")
    for target in sorted(targets, key=lambda x: x["scrapeUrl"]):
        print(f"| target | {target['labels']['job']} {target['scrapeUrl']} {target['health']} |")
    print(f"| alert rules loaded | {n_rules} in {len(rules)} groups |")
    print("| grafana | not run: no Debian package, and no registry to pull grafana/grafana from |")
    if n_rules == 0:
        raise Failed("prometheus loaded no alert rules")
    # A Courier metric, through Prometheus, from every worker.
    status = ask("/api/v1/query?query=count(up%7Bjob%3D%22courier-worker%22%7D%3D%3D1)")
    print(f"| count(up{{job=\"courier-worker\"}}==1) | {status['result'][0]['value'][1]} |")


try:
    if WHAT == "scenario":
        scenario()
    elif WHAT == "observability":
        observability()
    else:
        raise Failed(f"unknown step {WHAT}")
except Failed as e:
    print(f"\ncompose-check: FAILED: {e}", file=sys.stderr)
    sys.exit(1)
except subprocess.TimeoutExpired as e:
    print(f"\ncompose-check: FAILED: `{' '.join(e.cmd)}` did not finish in {e.timeout} s", file=sys.stderr)
    sys.exit(1)
