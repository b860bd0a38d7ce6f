# bench/ray_host.py MODULE:APP PORT — serves a Ray Serve application on PORT
# (a local Ray instance, as `serve run` does) until killed. ray 2.52 needs
# protobuf 6.x (7.x dropped FieldDescriptor.label); `make bench-deps` pins it.
import importlib
import os
import sys
import time

import ray
from ray import serve

target, port = sys.argv[1], int(sys.argv[2])
mod, var = target.split(":")
sys.path[:0] = [os.path.dirname(os.path.abspath(__file__)), os.environ.get("ANCHORS", "")]
app = getattr(importlib.import_module(mod), var)
ray.init(include_dashboard=False, logging_level="ERROR")
serve.start(http_options={"host": "127.0.0.1", "port": port})
serve.run(app, blocking=False)
print("ready", flush=True)
while True:
    time.sleep(3600)
