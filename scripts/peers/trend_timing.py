"""Times a trend page in Chromium: from navigation start until the page is loaded with its
chart in it (server, transfer, parse and layout of the inline SVG), the median of N loads.

usage: trend_timing.py URL N
"""

import shutil
import statistics
import sys

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

url, n = sys.argv[1], int(sys.argv[2])
options = Options()
for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"]:
    options.add_argument(arg)
options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))
try:
    times = []
    for _ in range(n):
        driver.get(url)
        # The chart has been laid out: its line is in the document with a size.
        ms = driver.execute_script(
            "const line = document.querySelector('#trend svg polyline.avg');"
            "if (!line || line.getBBox().width <= 0) return null;"
            "const nav = performance.getEntriesByType('navigation')[0];"
            "return nav.loadEventEnd > 0 ? nav.loadEventEnd : performance.now();"
        )
        if ms is None:
            sys.exit("the chart was not drawn")
        times.append(ms)
    print(f"Chromium draws the 7-day trend page in {statistics.median(times):.0f} ms (median of {n}; target < 500 ms)")
finally:
    driver.quit()
