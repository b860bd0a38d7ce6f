"""Autoscaling (autoscaling_config): replicas follow the ongoing requests between
min_replicas and max_replicas, after upscale_delay_s / downscale_delay_s."""
import threading
import time

import requests

from conftest import app


def replicas(srv, state="RUNNING"):
    d = srv.status()["applications"]["default"]["deployments"]["A"]
    return [r for r in d["replicas"] if r["state"] == state], d


def test_scales_up_under_load_and_back_down(serve):
    srv = serve(app("autoscale.lua:app"))
    running, d = replicas(srv)
    assert len(running) == 1 and d["autoscaling"]["max_replicas"] == 3
    stop = time.monotonic() + 6
    errors, pids = [], set()

    def client():
        while time.monotonic() < stop:
            try:
                r = requests.get(srv.url("/"), timeout=20)
                if r.status_code != 200:
                    errors.append(r.status_code)
                else:
                    pids.add(r.text)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

    ts = [threading.Thread(target=client) for _ in range(6)]
    for t in ts:
        t.start()
    peak = 1
    while time.monotonic() < stop:
        peak = max(peak, len(replicas(srv)[0]))
        time.sleep(0.2)
    for t in ts:
        t.join(30)
    assert not errors, errors[:3]
    assert peak == 3, "6 clients at target 1 per replica should reach max_replicas (3), peaked at %d" % peak
    assert len(pids) >= 2
    # idle: back to min_replicas after downscale_delay_s
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(replicas(srv)[0]) != 1:
        time.sleep(0.2)
    running, d = replicas(srv)
    assert len(running) == 1 and d["num_replicas"] == 1
