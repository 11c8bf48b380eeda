"""Sleeps for parameters["sleep"] seconds (default 2), then answers."""

import time


class EndpointHandler:
    def __init__(self, path):
        pass

    def __call__(self, data):
        params = data.get("parameters") or {}
        time.sleep(float(params.get("sleep", 2)))
        return {"slept": params.get("sleep", 2), "inputs": data.get("inputs")}
