"""The chat page at GET / in a real browser: Debian's headless Chromium driven by selenium
(scripts/test.sh installs chromium, chromium-driver and selenium). Type a message, see the
reply arrive in pieces, then a second turn."""

from __future__ import annotations

import shutil

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from serve_process import ServeProcess

# Counts text changes of the assistant bubbles (one per streamed delta), so the test sees
# that the reply was streamed and not written once at the end.
OBSERVE = """
window.__updates = 0;
new MutationObserver((records) => {
  for (const r of records) {
    const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
    if (el && el.classList.contains('assistant')) window.__updates += 1;
  }
}).observe(document.getElementById('messages'),
           {childList: true, subtree: true, characterData: true});
"""


@pytest.fixture(scope="module")
def browser():
    driver_path = shutil.which("chromedriver")
    assert driver_path, "chromedriver is missing: apt-get install chromium chromium-driver"
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium") or ""
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def srv():
    with ServeProcess("--parallel", "1", "--ctx", "512", "-t", "1") as s:
        yield s


def send(browser, text):
    box = browser.find_element(By.ID, "input")
    box.clear()
    box.send_keys(text)
    browser.find_element(By.ID, "send").click()


def last_reply(browser):
    bubbles = browser.find_elements(By.CSS_SELECTOR, "#messages .msg")
    return bubbles[-1]


def test_page_streams_a_reply(browser, srv):
    browser.get(srv.url + "/")
    WebDriverWait(browser, 30).until(
        lambda b: b.find_element(By.ID, "model").text.endswith(".gguf"))
    max_tokens = browser.find_element(By.ID, "max-tokens")
    max_tokens.clear()
    max_tokens.send_keys("24")
    browser.execute_script(OBSERVE)
    send(browser, "Hello! Who are you?")
    WebDriverWait(browser, 120).until(
        lambda b: last_reply(b).get_attribute("data-state") in ("done", "error"))
    reply = last_reply(browser)
    assert reply.get_attribute("data-state") == "done", reply.text
    assert "assistant" in reply.get_attribute("class") and reply.text.strip()
    assert browser.execute_script("return window.__updates") > 3  # arrived in pieces
    # a second turn: the page sends the whole conversation
    send(browser, "Say that again, shorter.")
    WebDriverWait(browser, 120).until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "#messages .msg")) == 4
        and last_reply(b).get_attribute("data-state") in ("done", "error"))
    assert last_reply(browser).get_attribute("data-state") == "done"
    users = browser.find_elements(By.CSS_SELECTOR, "#messages .user")
    assert [u.text for u in users] == ["Hello! Who are you?", "Say that again, shorter."]
