#!/usr/bin/env python3
"""End-to-end test of Courier's web dashboard (`/ui`) in a real browser.

Run by a Rust test as `python test_dashboard.py` against a running Courier (API, workers,
PostgreSQL, Redis) and a local HTTP target. It sets data up through the API (urllib, with
`Authorization: Bearer $ADMIN_KEY`) and drives Debian's Chromium through Playwright for
what a person does in the dashboard. Nothing is downloaded: the browser is
/usr/bin/chromium (or $CHROMIUM), never `playwright install`.

Environment:
  COURIER_URL   the API's base URL, e.g. http://127.0.0.1:PORT
  ADMIN_KEY     an API key of scope admin
  READ_KEY      an API key of scope read
  TARGET_URL    a local target: /ok answers 200; /flaky/<anything> answers 500 (with a
                non-empty body) until something POSTs to /__ok, after which every path
                answers 200
  SCREENSHOTS   a directory for the PNG screenshots (sign-in, queues, jobs, job,
                schedules, audit)

Exit status 0 when every check passed; 1 with the failed step and the reason otherwise
(and SCREENSHOTS/failure.png); 2 when the environment is incomplete.
"""

import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
from contextlib import contextmanager

from playwright.sync_api import expect, sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# How long one UI condition may take before the step fails.
UI_TIMEOUT_MS = 15_000
# How long jobs may take to reach a state through the workers.
JOB_TIMEOUT_S = 60


class Failure(Exception):
    """A check that did not hold; the message says what was expected and what was seen."""


def env(name):
    value = os.environ.get(name, "").strip()
    if not value:
        print(f"test_dashboard.py: the environment variable {name} is not set", file=sys.stderr)
        sys.exit(2)
    return value


COURIER_URL = env("COURIER_URL").rstrip("/")
ADMIN_KEY = env("ADMIN_KEY")
READ_KEY = env("READ_KEY")
TARGET_URL = env("TARGET_URL").rstrip("/")
SCREENSHOTS = env("SCREENSHOTS")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

# Everything this run makes carries this tag, so that filters see only this run's jobs.
TAG = uuid.uuid4().hex[:10]

_current_step = ["setting up"]


@contextmanager
def step(name):
    _current_step[0] = name
    started = time.monotonic()
    print(f"-- {name}", flush=True)
    yield
    print(f"   ok ({time.monotonic() - started:.1f} s)", flush=True)


def check(condition, message):
    if not condition:
        raise Failure(message)


# ------------------------------------------------------------------------------ API


def http(method, url, body=None, headers=None, timeout=30):
    """One request; `body` is sent as JSON, or as is when it is bytes."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if data is not None and not isinstance(body, bytes):
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def api(method, path, body=None, key=None, expect_status=None):
    """Calls Courier's API with an API key; fails unless the answer is 2xx (or `expect_status`)."""
    status, raw = http(method, COURIER_URL + path, body,
                       {"Authorization": f"Bearer {key or ADMIN_KEY}", "Accept": "application/json"})
    wanted = (lambda s: s == expect_status) if expect_status else (lambda s: 200 <= s < 300)
    if not wanted(status):
        raise Failure(f"{method} {path} answered {status} (wanted {expect_status or '2xx'}): "
                      f"{raw[:600].decode('utf-8', 'replace')}")
    return json.loads(raw) if raw else None


def list_jobs(**filters):
    """Every job matching `filters` (query parameters of GET /v1/jobs), following the cursor."""
    jobs, cursor = [], None
    while True:
        query = dict(filters, limit="500")
        if cursor:
            query["cursor"] = cursor
        page = api("GET", "/v1/jobs?" + urllib.parse.urlencode(query))
        jobs.extend(page["jobs"])
        cursor = page.get("next_cursor")
        if not cursor:
            return jobs


def job_ids(**filters):
    return {job["id"] for job in list_jobs(**filters)}


def wait_until(condition, what, timeout_s=JOB_TIMEOUT_S):
    """Polls `condition` until it returns a true value; fails after `timeout_s` saying `what`."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.25)


def submit_dead_jobs(count, group, path_prefix):
    """Submits `count` jobs to /flaky (one attempt each) and waits until they are all dead."""
    jobs = [{
        "target": {"url": f"{TARGET_URL}/flaky/{TAG}/{path_prefix}/{i}"},
        "max_attempts": 1,
        "labels": {"run": TAG, "group": group},
    } for i in range(count)]
    ids = api("POST", "/v1/jobs/batch", {"jobs": jobs})["ids"]
    check(len(ids) == count, f"the batch accepted {len(ids)} jobs, not {count}")
    wait_until(lambda: set(ids) <= job_ids(label=f"group:{group}", state="dead"),
               f"{count} jobs of group {group} to end dead")
    return ids


# ------------------------------------------------------------------------------ browser


def shot(page, name, full_page=False):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    path = os.path.join(SCREENSHOTS, f"{name}.png")
    page.screenshot(path=path, full_page=full_page)
    print(f"   screenshot {path}", flush=True)


def goto_hash(page, hash_route):
    """Navigates inside the page (hash routing), as a bookmark or a link would."""
    page.evaluate("h => { location.hash = h; }", hash_route)


def page_fetch(page, method, path, body=None, csrf=None):
    """A fetch from the page's own context: the session cookie goes with it."""
    return page.evaluate(
        """async ([method, path, body, csrf]) => {
            const headers = {};
            if (body !== null) headers['Content-Type'] = 'application/json';
            if (csrf !== null) headers['X-CSRF-Token'] = csrf;
            const response = await fetch(path, {
                method, headers, credentials: 'same-origin',
                body: body === null ? undefined : JSON.stringify(body),
            });
            return {status: response.status, body: await response.text()};
        }""",
        [method, path, body, csrf],
    )


def session_token(page):
    answer = page_fetch(page, "GET", "/ui/session")
    check(answer["status"] == 200, f"GET /ui/session from the signed-in page answered {answer['status']}")
    return json.loads(answer["body"])["csrf_token"]


def sign_in(page, key, scope):
    expect(page.locator("#signin")).to_be_visible()
    page.fill("#key", key)
    page.press("#key", "Enter")
    expect(page.locator("#header")).to_be_visible()
    expect(page.locator("#scope")).to_have_text(scope)
    expect(page.locator("#signin")).to_have_count(0)


def courier_cookies(context):
    return context.cookies([COURIER_URL])


def refresh_until(page, locator, what, timeout_s=20):
    """Clicks the page's Refresh button until `locator` shows up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            locator.first.wait_for(state="visible", timeout=1500)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise Failure(f"timed out after {timeout_s} s waiting for {what}")
            page.click("#refresh")


def no_actions(page, where):
    """A read key's page: no action button of any kind."""
    for selector in ["[data-action]", "#bulk-retry", "#bulk-cancel", "#job-retry", "#job-cancel",
                     "#sched-trigger", "#sched-pause", "#sched-resume", "#limits-form"]:
        count = page.locator(selector).count()
        check(count == 0, f"a read key sees {count} '{selector}' on the {where} page")


# ------------------------------------------------------------------------------ the test


def run(page, context, console_problems):
    expect.set_options(timeout=UI_TIMEOUT_MS)
    page.set_default_timeout(UI_TIMEOUT_MS)

    with step("the sign-in page; a wrong key is refused"):
        page.goto(f"{COURIER_URL}/ui")
        expect(page.locator("#signin")).to_be_visible()
        expect(page.locator("#header")).to_be_hidden()
        shot(page, "sign-in")
        page.fill("#key", "courier_" + "0" * 64)
        page.click("#signin-submit")
        expect(page.locator("#error")).to_be_visible()
        expect(page.locator("#error")).to_have_text(re.compile(r"\S"))
        expect(page.locator("#signin")).to_be_visible()
        expect(page.locator("#header")).to_be_hidden()
        check(courier_cookies(context) == [],
              f"a wrong key left cookies: {[c['name'] for c in courier_cookies(context)]}")
        status = page_fetch(page, "GET", "/ui/session")["status"]
        check(status == 401, f"GET /ui/session after a wrong key answered {status}, not 401")

    with step("sign in with the admin key"):
        sign_in(page, ADMIN_KEY, "admin")
        cookies = courier_cookies(context)
        check(cookies, "signing in set no cookie")
        check(all(c["httpOnly"] for c in cookies),
              f"a session cookie is readable by scripts: {[c['name'] for c in cookies if not c['httpOnly']]}")
        check(page.evaluate("document.cookie") == "", "document.cookie shows the session")
        check(page.locator("#key").count() == 0, "the key field is still on the page")

    with step("a job submitted through the API appears in the jobs list"):
        ok_job = api("POST", "/v1/jobs", {"target": {"url": f"{TARGET_URL}/ok"}, "labels": {"run": TAG}})
        page.click("#nav-jobs")
        expect(page.locator(f'#jobs tr[data-job-id="{ok_job["id"]}"]')).to_be_visible()

    with step("jobs that end dead (1 alone, 100 for the bulk retry)"):
        solo_id = api("POST", "/v1/jobs", {
            "target": {"url": f"{TARGET_URL}/flaky/{TAG}/solo"},
            "max_attempts": 1,
            "labels": {"run": TAG, "group": f"solo-{TAG}"},
        })["id"]
        bulk_ids = submit_dead_jobs(100, f"bulk-{TAG}", "bulk")
        wait_until(lambda: api("GET", f"/v1/jobs/{solo_id}")["state"] == "dead", "the single job to end dead")

    with step("filter dead jobs by text: only they are listed, page by page"):
        page.click("#nav-jobs")
        page.select_option("#f-state", "dead")
        page.fill("#f-q", f"/flaky/{TAG}/solo")
        page.click("#f-apply")
        rows = page.locator("#jobs tbody tr[data-job-id]")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-job-id", solo_id)
        check("state=dead" in page.url and "q=" in page.url, f"the filter is not in the URL: {page.url}")

        # A wider fragment: the 101 dead jobs of this run, 50 a page, newest first.
        fragment = f"/flaky/{TAG}/"
        page.fill("#f-q", fragment)
        page.click("#f-apply")
        expect(page.locator("#f-q")).to_have_value(fragment)
        seen = []
        for expected_rows in (50, 50, 1):
            expect(rows).to_have_count(expected_rows)
            states = rows.evaluate_all("rs => rs.map(r => r.dataset.state)")
            urls = page.locator("#jobs tbody tr[data-job-id] .url").all_text_contents()
            check(set(states) == {"dead"}, f"the dead filter shows states {sorted(set(states))}")
            check(all(fragment in u for u in urls), f"a listed job's URL lacks {fragment!r}: {urls}")
            seen.extend(rows.evaluate_all("rs => rs.map(r => r.dataset.jobId)"))
            if expected_rows == 50:
                page.click("#page-older")
        expect(page.locator("#page-older")).to_be_disabled()
        check(len(seen) == len(set(seen)) == 101, f"paging showed {len(seen)} rows, {len(set(seen))} distinct, not 101")
        check(set(seen) == set(bulk_ids) | {solo_id}, "paging showed other jobs than this run's dead ones")
        check(ok_job["id"] not in seen, "the succeeded job is listed under state=dead")
        page.click("#page-newer")
        expect(rows).to_have_count(50)
        expect(rows.first).to_have_attribute("data-job-id", seen[50])

        # The filtered view survives a reload (it is all in the URL).
        page.reload()
        expect(page.locator("#f-q")).to_have_value(fragment)
        expect(page.locator("#f-state")).to_have_value("dead")

    with step("a dead job's page shows its executions and the response excerpt"):
        goto_hash(page, f"#/jobs?state=dead&q={urllib.parse.quote(f'/flaky/{TAG}/solo', safe='')}")
        page.locator(f'#jobs tr[data-job-id="{solo_id}"] a.job-link').click()
        expect(page.locator("#job-id")).to_have_text(solo_id)
        expect(page.locator("#job-state")).to_have_text("dead")
        expect(page.locator("#executions tr.execution")).to_have_count(1)
        executions = api("GET", f"/v1/jobs/{solo_id}/executions")["executions"]
        excerpt = executions[0].get("response_excerpt")
        check(excerpt, "the target's 500 answer left no response excerpt to show (TARGET_URL/flaky "
                       "must answer with a body)")
        expect(page.locator("#executions pre.excerpt")).to_have_count(1)
        shown = page.locator("#executions pre.excerpt").text_content()
        check(shown == excerpt, f"the excerpt shown {shown!r} is not the stored one {excerpt!r}")
        expect(page.locator("#job-retry")).to_be_visible()
        expect(page.locator("#job-cancel")).to_have_count(0)
        shot(page, "job", full_page=True)

    with step("bulk retry: the count is confirmed, jobs dead after it are left alone"):
        group = f"bulk-{TAG}"
        page.click("#nav-jobs")
        page.click("#f-reset")
        expect(page.locator("#f-q")).to_have_value("")
        page.select_option("#f-state", "dead")
        page.fill("#f-label", f"group:{group}")
        page.click("#f-apply")
        expect(page.locator("#jobs tbody tr[data-job-id]")).to_have_count(50)
        page.click("#bulk-retry")
        expect(page.locator("#bulk-count")).to_have_text("100")
        expect(page.locator("#bulk-confirm")).to_be_visible()
        shot(page, "jobs")

        # 20 more jobs match the same filter, but only after the count was taken.
        late_ids = submit_dead_jobs(20, group, "late")
        # From now on the target answers 200, so the retried jobs succeed.
        status, raw = http("POST", f"{TARGET_URL}/__ok", b"")
        check(200 <= status < 300, f"POST {TARGET_URL}/__ok answered {status}: {raw[:200]!r}")

        page.click("#bulk-confirm")
        expect(page.locator("#bulk-result")).to_have_attribute("data-done", "100")
        wait_until(lambda: job_ids(label=f"group:{group}", state="succeeded") == set(bulk_ids),
                   "the 100 retried jobs to succeed")
        dead_now = job_ids(label=f"group:{group}", state="dead")
        check(dead_now == set(late_ids),
              f"after the bulk retry the dead jobs of the group are {len(dead_now)}, "
              f"{len(dead_now & set(late_ids))} of them the 20 late ones; wanted exactly the 20 late ones")
        for job_id in late_ids:
            job = api("GET", f"/v1/jobs/{job_id}")
            check(job["state"] == "dead" and job["round"] == 1,
                  f"late job {job_id} is {job['state']} in round {job['round']}: the bulk retry touched it")
        for job_id in bulk_ids[:5]:
            job = api("GET", f"/v1/jobs/{job_id}")
            check(job["round"] == 2, f"retried job {job_id} is in round {job['round']}, not 2")

    with step("retry one job from its page and watch it succeed"):
        goto_hash(page, f"#/jobs/{solo_id}")
        expect(page.locator("#job-state")).to_have_text("dead")
        page.click("#job-retry")
        expect(page.locator("#job-state")).to_have_text("succeeded", timeout=JOB_TIMEOUT_S * 1000)
        expect(page.locator("#job-retry")).to_have_count(0)
        expect(page.locator('#executions tr.execution[data-round="2"]')).to_have_count(1)
        expect(page.locator('#executions tr.execution[data-round="2"]')).to_have_attribute("data-outcome", "succeeded")

    with step("a state-changing request without the CSRF header gets 403"):
        held = api("POST", "/v1/jobs", {"target": {"url": f"{TARGET_URL}/ok"}, "delay_ms": 600_000,
                                        "labels": {"run": TAG, "group": f"held-{TAG}"}})
        answer = page_fetch(page, "POST", f"/v1/jobs/{held['id']}/cancel")
        check(answer["status"] == 403, f"cancel without X-CSRF-Token answered {answer['status']}: {answer['body'][:300]}")
        answer = page_fetch(page, "POST", f"/v1/jobs/{held['id']}/cancel", csrf="not-the-token")
        check(answer["status"] == 403, f"cancel with a wrong X-CSRF-Token answered {answer['status']}")
        answer = page_fetch(page, "POST", "/v1/jobs",
                            {"target": {"url": f"{TARGET_URL}/ok"}, "labels": {"group": f"forged-{TAG}"}})
        check(answer["status"] == 403, f"submit without X-CSRF-Token answered {answer['status']}")
        check(job_ids(label=f"group:forged-{TAG}") == set(), "a job was created without the CSRF header")
        check(api("GET", f"/v1/jobs/{held['id']}")["state"] == "scheduled", "the job was cancelled without the CSRF header")
        answer = page_fetch(page, "POST", f"/v1/jobs/{held['id']}/cancel", csrf=session_token(page))
        check(answer["status"] == 200, f"cancel with the session's CSRF token answered {answer['status']}: {answer['body'][:300]}")

    queue = f"ui-{TAG}"
    with step("queues: depth, throughput charts, pause, resume and limits"):
        parked = api("POST", "/v1/jobs", {"queue": queue, "target": {"url": f"{TARGET_URL}/ok"}, "delay_ms": 600_000})
        page.click("#nav-queues")
        row = page.locator(f'#queues tr[data-queue="{queue}"]')
        expect(row).to_be_visible()
        expect(page.locator('[data-chart-queue="default"] canvas').first).to_be_visible()
        expect(page.locator(f'[data-chart-queue="{queue}"] canvas').first).to_be_visible()

        row.locator('[data-action="pause"]').click()
        expect(row).to_have_attribute("data-paused", "true")
        settings = next(q for q in api("GET", "/v1/queues")["queues"] if q["name"] == queue)
        check(settings["paused"] is True, f"the queue is not paused after Pause: {settings}")
        row.locator('[data-action="resume"]').click()
        expect(row).to_have_attribute("data-paused", "false")

        row.locator('[data-action="limits"]').click()
        page.fill("#limit-rate", "50")
        page.fill("#limit-burst", "10")
        page.fill("#limit-concurrency", "5")
        page.click("#limits-save")
        expect(page.locator("#limits-form")).to_have_count(0)
        expect(row.locator(".queue-rate")).to_contain_text("50")
        expect(row.locator(".queue-concurrency")).to_have_text("5")
        settings = next(q for q in api("GET", "/v1/queues")["queues"] if q["name"] == queue)
        check(settings["paused"] is False and settings["max_concurrency"] == 5
              and settings["rate"] and settings["rate"]["per_second"] == 50 and settings["rate"]["burst"] == 10,
              f"the queue's settings after Save are {settings}")
        shot(page, "queues", full_page=True)

    schedule = f"ui-{TAG}"
    with step("schedules: the list, a schedule's runs, trigger, pause with a note, resume"):
        api("PUT", f"/v1/schedules/{schedule}", {
            "every_ms": 3_600_000,
            "job": {"target": {"url": f"{TARGET_URL}/ok", "method": "GET"}, "max_attempts": 1},
        })
        page.click("#nav-schedules")
        link = page.locator(f'#schedules tr[data-schedule="{schedule}"] a')
        expect(link).to_be_visible()
        link.click()
        expect(page.locator("#schedule-name")).to_have_text(schedule)
        expect(page.locator("#next-occurrences li")).to_have_count(5)
        page.click("#sched-trigger")
        refresh_until(page, page.locator('#runs tr[data-run-kind="trigger"][data-run-outcome="fired"]'),
                      "the triggered occurrence in the runs")
        page.fill("#sched-note", "target under maintenance")
        page.click("#sched-pause")
        expect(page.locator("#sched-state")).to_have_attribute("data-paused", "true")
        expect(page.locator("#sched-state")).to_contain_text("target under maintenance")
        stored = api("GET", f"/v1/schedules/{schedule}")
        check(stored["paused"] is True and stored["note"] == "target under maintenance",
              f"the schedule after Pause: paused={stored['paused']}, note={stored['note']!r}")
        shot(page, "schedules", full_page=True)
        page.click("#sched-resume")
        expect(page.locator("#sched-state")).to_have_attribute("data-paused", "false")
        check(api("GET", f"/v1/schedules/{schedule}")["paused"] is False, "the schedule is still paused after Resume")

    with step("the audit log lists the bulk retry with its count"):
        page.click("#nav-audit")
        entries = page.locator("#audit tbody tr[data-audit-id]")
        expect(entries.first).to_be_visible()
        bulk_entry = page.locator('#audit tbody tr[data-audit-action*="retry"]').filter(
            has=page.locator("td.audit-count", has_text=re.compile(r"^\s*100\s*$")))
        expect(bulk_entry.first).to_be_visible()
        shot(page, "audit")

    with step("sign out"):
        page.click("#signout")
        expect(page.locator("#signin")).to_be_visible()
        expect(page.locator("#header")).to_be_hidden()
        status = page_fetch(page, "GET", "/ui/session")["status"]
        check(status == 401, f"GET /ui/session after signing out answered {status}, not 401")
        check(courier_cookies(context) == [], "signing out left the session cookie")

    with step("a read key sees no action, and its session cannot retry"):
        sign_in(page, READ_KEY, "read")

        page.click("#nav-jobs")
        page.click("#f-reset")
        expect(page.locator("#jobs tbody tr[data-job-id]").first).to_be_visible()
        no_actions(page, "jobs")

        goto_hash(page, f"#/jobs/{late_ids[0]}")
        expect(page.locator("#job-state")).to_have_text("dead")
        expect(page.locator("#executions tr.execution")).to_have_count(1)
        no_actions(page, "dead job")
        goto_hash(page, f"#/jobs/{parked['id']}")
        expect(page.locator("#job-state")).to_have_text("scheduled")
        no_actions(page, "scheduled job")

        page.click("#nav-queues")
        expect(page.locator(f'#queues tr[data-queue="{queue}"]')).to_be_visible()
        no_actions(page, "queues")

        page.click("#nav-schedules")
        expect(page.locator(f'#schedules tr[data-schedule="{schedule}"]')).to_be_visible()
        no_actions(page, "schedules")
        page.locator(f'#schedules tr[data-schedule="{schedule}"] a').click()
        expect(page.locator("#schedule-name")).to_have_text(schedule)
        expect(page.locator("#runs tbody tr[data-run-kind]").first).to_be_visible()
        no_actions(page, "schedule")

        answer = page_fetch(page, "POST", f"/v1/jobs/{late_ids[0]}/retry", csrf=session_token(page))
        check(answer["status"] == 403, f"a read session's retry answered {answer['status']}, not 403: {answer['body'][:300]}")
        check(api("GET", f"/v1/jobs/{late_ids[0]}")["state"] == "dead", "a read session's retry changed the job")

    with step("no Content-Security-Policy violation and no uncaught error in the page"):
        check(not console_problems, "the page reported:\n  " + "\n  ".join(console_problems))


def main():
    if not os.path.exists(CHROMIUM):
        print(f"test_dashboard.py: no browser at {CHROMIUM} (apt-get install chromium)", file=sys.stderr)
        return 2
    started = time.monotonic()
    user_data_dir = tempfile.mkdtemp(prefix="courier-ui-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                user_data_dir,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": 1360, "height": 900},
                locale="en-US",
                timezone_id="UTC",
            )
            page = context.pages[0] if context.pages else context.new_page()
            console_problems = []

            def on_console(message):
                text = message.text
                # Refused requests (401, 403) are logged by the browser as failed loads:
                # the test causes them on purpose.
                if message.type == "error" and not text.startswith("Failed to load resource"):
                    console_problems.append(f"console error: {text}")
                elif "Content Security Policy" in text or "Content-Security-Policy" in text:
                    console_problems.append(f"console {message.type}: {text}")

            page.on("console", on_console)
            page.on("pageerror", lambda error: console_problems.append(f"uncaught exception: {error}"))
            try:
                run(page, context, console_problems)
            except Exception as error:  # noqa: BLE001: every failure is reported the same way
                print(f"\nFAILED in step '{_current_step[0]}':", file=sys.stderr)
                if isinstance(error, Failure):
                    print(f"  {error}", file=sys.stderr)
                else:
                    traceback.print_exc()
                try:
                    print(f"  page URL: {page.url}", file=sys.stderr)
                    if page.locator("#error").is_visible():
                        print(f"  the page's #error says: {page.locator('#error').inner_text()}", file=sys.stderr)
                    if console_problems:
                        print("  the page reported:\n    " + "\n    ".join(console_problems), file=sys.stderr)
                    shot(page, "failure", full_page=True)
                except Exception as inner:  # noqa: BLE001
                    print(f"  (could not capture the page: {inner})", file=sys.stderr)
                context.close()
                return 1
            context.close()
    finally:
        shutil.rmtree(user_data_dir, ignore_errors=True)
    print(f"dashboard: every check passed in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
