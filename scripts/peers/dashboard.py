"""Drives the airlock dashboard in a real Chromium (selenium, the system's chromium-driver) and
scrapes its /metrics with a real Prometheus, against a running `airlock demo`.

usage: dashboard.py BASE_URL SCREENSHOT_DIR WORK_DIR

Prints one line per finding; exits 1 with the reason on the first failure. Every wait is
bounded in time.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

BASE, SHOTS, WORK = sys.argv[1], sys.argv[2], sys.argv[3]


def fail(why):
    print("FAILED:", why, flush=True)
    sys.exit(1)


def until(what, check, seconds):
    """Polls `check` until it returns something true, for at most `seconds`."""
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # a page between refreshes
            last = e
        time.sleep(0.5)
    fail(f"{what} (last: {last!r})")


def browser():
    options = Options()
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]:
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(options=options, service=service)


def check_pages(driver):
    # Overview: every simulated device listed, all up.
    driver.get(BASE + "/")

    def all_up():
        rows = driver.find_elements(By.CSS_SELECTOR, "#devices tbody tr")
        states = [r.find_elements(By.TAG_NAME, "td")[3].text for r in rows]
        return len(states) == 5 and all(s == "up" for s in states) and states

    states = until("every device up on the overview", all_up, 30)
    print(f"overview: {len(states)} devices up", flush=True)
    driver.save_screenshot(os.path.join(SHOTS, "overview.png"))

    driver.get(BASE + "/tags")
    until("tags listed", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#tags td.value")) > 40, 20)
    driver.save_screenshot(os.path.join(SHOTS, "tags.png"))

    # A trend: the chart draws a line with points.
    driver.get(BASE + "/trend?tag=press1/speed&range=1h")

    def line_points():
        # The longest run of the line: at least two points, or nothing is drawn.
        lines = driver.find_elements(By.CSS_SELECTOR, "#trend svg polyline.avg")
        return max([len(l.get_attribute("points").split()) for l in lines] or [0])

    points = until("a trend line with points", lambda: line_points() >= 2 and line_points(), 30)
    print(f"trend: a line of {points} points", flush=True)
    driver.save_screenshot(os.path.join(SHOTS, "trend.png"))

    # The events feed: events appear.
    driver.get(BASE + "/events")
    rows = until("an event in the feed", lambda: [r for r in driver.find_elements(By.CSS_SELECTOR, "table.events tbody tr") if len(r.find_elements(By.TAG_NAME, "td")) == 5], 30)
    print(f"events: {len(rows)} in the feed", flush=True)
    driver.save_screenshot(os.path.join(SHOTS, "events.png"))

    # The three conclusions, each in the feed filtered by its kind (the demo reaches them
    # within 90 s of its start).
    wanted = [
        ("parts_produced", "press1 produced 1000 parts this shift"),
        ("performance_drop", "press2 performance down"),
        ("maintenance_advice", "order a bearing within"),
    ]
    for kind, words in wanted:
        driver.get(BASE + "/events?kind=" + kind)
        until(f"{words!r} on the dashboard", lambda: words in driver.find_element(By.TAG_NAME, "main").text, 100)
    print("conclusions on the dashboard: parts, performance, bearing", flush=True)

    # The egress ledger lists what was sent.
    driver.get(BASE + "/ledger")
    sent = until("records in the egress ledger", lambda: [r for r in driver.find_elements(By.CSS_SELECTOR, "table.messages tbody tr") if len(r.find_elements(By.TAG_NAME, "td")) == 5], 30)
    print(f"ledger: {len(sent)} messages as sent", flush=True)
    driver.save_screenshot(os.path.join(SHOTS, "ledger.png"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_prometheus():
    target = BASE.split("//", 1)[1]
    port = free_port()
    config = os.path.join(WORK, "prometheus.yml")
    with open(config, "w") as f:
        f.write(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n"
            f"  - job_name: airlock\n    static_configs:\n      - targets: ['{target}']\n"
        )
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    log = open(os.path.join(WORK, "prometheus.log"), "w")
    p = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={os.path.join(WORK, 'tsdb')}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        def samples():
            url = f"http://127.0.0.1:{port}/api/v1/query?query=sum(airlock_device_samples_total)"
            with urllib.request.urlopen(url, timeout=5) as r:
                answer = json.load(r)
            result = answer["data"]["result"]
            return result and float(result[0]["value"][1]) > 0 and float(result[0]["value"][1])

        n = until("Prometheus to scrape a sample count above zero", samples, 60)
        print(f"prometheus: sum(airlock_device_samples_total) = {n:.0f}", flush=True)
    finally:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def main():
    os.makedirs(SHOTS, exist_ok=True)
    driver = browser()
    try:
        check_pages(driver)
    finally:
        driver.quit()
    check_prometheus()


main()
