"""The review page in a real headless Chromium, against the engine on a real broker.

An analyst signs in, a request arrives live (no reload), they answer with the keyboard, the label
reaches the labels topic and the engine applies it; undo/amend sends a correction the engine applies;
two analysts in two browsers never see the same claimed item. Screenshots go to ``test-artifacts/``.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install -y chromium chromium-driver``);
without them these tests fail with that message, they do not skip.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_al.review.app import create_app
from stream_al.review.server import ReviewServer

from .engine_helpers import EngineThread, engine_settings, read_all, send_raw, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKENS = {"ana": "ana-secret-token", "bob": "bob-secret-token"}


def chromium_driver(profile: str) -> Any:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: install Debian's browser with `apt-get install -y chromium chromium-driver`")
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download a browser or driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,900", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def loop(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The engine (every event becomes a request) and the review app with its Kafka bridge."""
    import uuid

    prefix = f"t{uuid.uuid4().hex[:8]}-"
    tmp = tmp_path_factory.mktemp("review-browser")
    settings = engine_settings(
        kafka_bootstrap, prefix, tmp, budget={"fraction": 1.0}, topics={"predictions": None},
        review={"analysts": TOKENS, "db_path": str(tmp / "review.sqlite3"), "double_annotation_share": 0.0, "claim_ttl_seconds": 30},
    )
    engine = EngineThread(settings).start()
    server = ReviewServer(create_app(settings), port=0).start()
    try:
        wait_for(lambda: server.review.bridge.caught_up.is_set(), 20, "review bridge did not catch up")
        yield {"settings": settings, "engine": engine, "server": server, "store": server.review.store}
    finally:
        server.stop()
        engine.stop()


@pytest.fixture
def browser() -> Iterator[Any]:
    drivers: list[Any] = []
    profiles: list[str] = []

    def make() -> Any:
        profiles.append(tempfile.mkdtemp(prefix="chromium-profile-"))
        drivers.append(chromium_driver(profiles[-1]))
        return drivers[-1]

    try:
        yield make
    finally:
        for driver in drivers:
            driver.quit()
        for profile in profiles:
            shutil.rmtree(profile, ignore_errors=True)


def produce_events(settings: Any, ids: list[str]) -> None:
    def features(event_id: str) -> dict[str, float]:
        rng = random.Random(event_id)
        return {"x": rng.random(), "y": rng.random(), "amount": round(rng.uniform(5, 500), 2)}

    send_raw(settings, settings.topics.events,
             [orjson.dumps({"id": i, "ts": time.time(), "features": features(i)}) for i in ids])


def sign_in(driver: Any, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_until(driver, lambda d: d.find_element(By.ID, "token").is_displayed())
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin-button").click()
    wait_until(driver, lambda d: d.find_element(By.ID, "live").text == "live")


def wait_until(driver: Any, condition: Any, timeout: float = 15) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def press(driver: Any, keys: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(keys).perform()


def queue_ids(driver: Any) -> list[str]:
    """The request ids in the live queue list, read in one script (the list is re-rendered on every push)."""
    return driver.execute_script("return [...document.querySelectorAll('#queue-list .queue-row')].map(e => e.dataset.requestId)")


def card_id(driver: Any) -> str | None:
    return driver.execute_script("const c = document.getElementById('card'); return c.hidden ? null : (c.dataset.requestId || null)")


def test_a_request_arrives_live_and_a_keyboard_answer_reaches_the_engine(loop, browser):
    from selenium.webdriver.common.by import By

    settings, runner, store, url = loop["settings"], loop["engine"].runner, loop["store"], loop["server"].url
    ARTIFACTS.mkdir(exist_ok=True)
    driver = browser()
    sign_in(driver, url, TOKENS["ana"])
    assert driver.find_element(By.ID, "analyst").text == "ana"
    before = set(queue_ids(driver))

    produce_events(settings, ["live-1"])  # the engine asks about it; the page gets it without a reload
    rows = wait_until(driver, lambda d: [r for r in queue_ids(d) if r not in before] or False, 30)
    [request_id] = rows
    press(driver, "n")  # open the top item: it is claimed for ana
    wait_until(driver, lambda d: card_id(d) == request_id)
    assert driver.find_element(By.ID, "event-id").text == "live-1"
    assert "uncertainty" in driver.find_element(By.ID, "why").text or "cold start" in driver.find_element(By.ID, "why").text
    assert driver.find_element(By.ID, "features").text.count("\n") >= 2  # three features
    assert driver.find_element(By.ID, "model-version").text.isdigit()
    driver.save_screenshot(str(ARTIFACTS / "review-card.png"))
    applied = runner.engine.counters.labels_applied

    press(driver, "2")  # 2 = fraud (classes legit, fraud)
    wait_until(driver, lambda d: card_id(d) is None)
    wait_for(lambda: runner.engine.counters.labels_applied == applied + 1, 20, "the engine did not apply the label")
    labels = [orjson.loads(r.value) for r in read_all(settings, settings.topics.labels, idle_seconds=0.3)]
    mine = [m for m in labels if m["request_id"] == request_id]
    assert [(m["label"], m["annotator"]) for m in mine] == [("fraud", "ana")]
    wait_until(driver, lambda d: request_id not in queue_ids(d))

    # undo / amend with the keyboard: U brings the answer back, 1 (legit) replaces it; the engine corrects
    corrections = runner.engine.counters.corrections
    wait_until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#recent li[data-answer-id]"))
    press(driver, "u")
    wait_until(driver, lambda d: d.find_element(By.ID, "amend-banner").is_displayed())
    press(driver, "1")
    wait_for(lambda: runner.engine.counters.corrections == corrections + 1, 20, "the engine did not apply the correction")
    answers = store.stats(time.time())["analysts"]
    assert {a["analyst"]: a["amendments"] for a in answers}["ana"] == 1
    driver.save_screenshot(str(ARTIFACTS / "review-main.png"))
    assert (ARTIFACTS / "review-main.png").stat().st_size > 10_000

    driver.get(url + "/audit")
    wait_until(driver, lambda d: "ana" in d.find_element(By.ID, "analysts").text)
    driver.save_screenshot(str(ARTIFACTS / "review-audit.png"))


def test_two_analysts_never_see_the_same_claimed_item(loop, browser):
    from selenium.webdriver.common.by import By

    settings, url = loop["settings"], loop["server"].url
    ana, bob = browser(), browser()
    sign_in(ana, url, TOKENS["ana"])
    sign_in(bob, url, TOKENS["bob"])
    produce_events(settings, ["pair-1", "pair-2"])
    for driver in (ana, bob):
        wait_until(driver, lambda d: len(queue_ids(d)) >= 2, 30)

    ana.find_element(By.ID, "btn-next").click()  # a button for every key
    wait_until(ana, lambda d: card_id(d) is not None)
    taken = card_id(ana)
    wait_until(bob, lambda d: taken not in queue_ids(d))  # gone from bob's live queue at once
    press(bob, "n")
    wait_until(bob, lambda d: card_id(d) is not None)
    assert card_id(bob) != taken
    wait_until(ana, lambda d: card_id(bob) not in queue_ids(d))  # and bob's is gone from ana's
    assert taken not in queue_ids(bob)
    ARTIFACTS.mkdir(exist_ok=True)
    bob.save_screenshot(str(ARTIFACTS / "review-second-analyst.png"))

    # skip hands bob's item back; ana may take it after answering hers (with the buttons this time)
    bobs = card_id(bob)
    bob.find_element(By.ID, "btn-skip").click()
    wait_until(bob, lambda d: card_id(d) != bobs)
    ana.find_element(By.ID, "btn-label-1").click()
    wait_until(ana, lambda d: card_id(d) == bobs, 15)  # auto-advance opens the next item: bob's skipped one
