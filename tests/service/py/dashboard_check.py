# dashboard_check.py: the dashboard in headless Chromium (Debian chromium + chromium-driver,
# pip selenium): with a reader token it lists the jobs with their status, draws a job's loss and
# reward curves from its metrics.jsonl, and counts feedback per agent; nothing is loaded from
# outside the service. Usage: dashboard_check.py N3RLHF_BINARY
import json
import os
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402


def main(binary):
    with tempfile.TemporaryDirectory() as work:
        serve = harness.Serve(binary, f"sqlite:{work}/service.db", work, extra=["--mpirun", "/bin/false"])
        try:
            for agent, n in (("support", 3), ("sales", 2)):
                for i in range(n):
                    status, _ = serve.request("POST", "/api/rlhf/feedback", {
                        "agent_id": agent, "prompt": f"p{i}", "response_chosen": "c", "response_rejected": "r"},
                        token="annotator")
                    assert status == 201, status
            job = {"job_name": "CurveJob", "algorithm": "dpo", "base_model": f"{work}/m",
                   "dataset_path": f"{work}/d.jsonl", "launcher": "kubernetes",
                   "config": {"hyperparameters": {"batch_size": 8}}}
            status, body = serve.request("POST", "/api/rlhf/jobs", job, token="operator")
            assert status == 201, body
            # The metrics file the job's rank 0 writes (logs/metrics.jsonl under output.dir).
            metrics = body["outputs"]["metrics"]
            os.makedirs(os.path.dirname(metrics), exist_ok=True)
            with open(metrics, "w") as f:
                f.write(json.dumps({"params": {"lr": 1e-5}}) + "\n")
                for step in range(1, 21):
                    f.write(json.dumps({"step": step, "wall_time": step, "loss": 0.7 - step * 0.02,
                                        "rewards/margins": step * 0.05}) + "\n")

            options = webdriver.ChromeOptions()
            for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
                options.add_argument(flag)
            options.binary_location = "/usr/bin/chromium"
            options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
            driver = webdriver.Chrome(service=DriverService("/usr/bin/chromedriver"), options=options)
            try:
                driver.get(serve.url + "/")
                token = driver.find_element(By.ID, "token")
                token.send_keys(harness.TOKENS["reader"])
                driver.find_element(By.ID, "token-save").click()
                wait = WebDriverWait(driver, 30)
                wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "true"
                           and d.find_element(By.ID, "chart").get_attribute("data-points") not in (None, "", "0"))
                rows = driver.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
                assert len(rows) == 1, len(rows)
                cells = [c.text for c in rows[0].find_elements(By.TAG_NAME, "td")]
                assert cells[1] == "CurveJob" and cells[3] == "rendered", cells
                assert cells[6] == "0.3000", cells  # the last loss
                chart = driver.find_element(By.ID, "chart")
                assert chart.get_attribute("data-series") == "loss,rewards/margins", chart.get_attribute("data-series")
                assert chart.get_attribute("data-points") == "40", chart.get_attribute("data-points")
                # The canvas has drawn pixels (not blank).
                drawn = driver.execute_script(
                    "const c=document.getElementById('chart');const d=c.getContext('2d').getImageData(0,0,c.width,c.height).data;"
                    "let n=0;for(let i=3;i<d.length;i+=4){if(d[i]>0)n++;}return n;")
                assert drawn > 500, drawn
                agents = {r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text
                          for r in driver.find_elements(By.CSS_SELECTOR, "#agents tbody tr")}
                assert agents == {"sales": "2", "support": "3"}, agents
                assert driver.find_element(By.ID, "feedback-total").text == "5"
                # Every request the page made went to the service itself.
                requests = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
                urls = [m["params"]["request"]["url"] for m in requests if m["method"] == "Network.requestWillBeSent"]
                outside = [u for u in urls if not u.startswith(serve.url)]
                assert urls and not outside, outside
                errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                assert not errors, errors
                # A wrong token shows the refusal instead of data.
                driver.execute_script("localStorage.setItem('n3rlhf-token','nope-0123456789abcdef')")
                driver.refresh()
                wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "error")
                assert "401" in driver.find_element(By.ID, "status-line").text
            finally:
                driver.quit()
        finally:
            serve.stop()
    print("dashboard_check: ok (jobs table, curves from metrics.jsonl, feedback per agent, no outside requests)")


if __name__ == "__main__":
    main(sys.argv[1])
