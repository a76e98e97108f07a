# mypy: ignore-errors
"""Ray Serve app for `bench/serving.py`; runs in `bench/.venvs/ray`.

    python ray_app.py --port P --model model.joblib --name logreg --config default --temp-dir D

Configs: default (max_ongoing_requests left at Ray's default), ongoing64
(max_ongoing_requests=64, access log off), batch (that plus @serve.batch, 64 rows, 2 ms).
Body: V2 JSON, one FP32 input of shape [n, 16]; answers V2 JSON with the labels.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

# Keep every Ray socket and connection on loopback: without this Ray resolves 127.0.0.1 to
# the machine's own interface address for its internal gRPC traffic.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import joblib
import numpy as np
import ray
from ray import serve
from starlette.requests import Request


def decode(payload: dict) -> np.ndarray:
    tensor = payload["inputs"][0]
    return np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])


def encode(name: str, labels: np.ndarray) -> dict:
    data = labels.tolist()
    return {
        "model_name": name,
        "outputs": [{"name": "label", "shape": [len(data)], "datatype": "INT64", "data": data}],
    }


def build(config: str, model_path: str, name: str):
    options: dict = {"ray_actor_options": {"num_cpus": 1}}
    if config != "default":
        options["max_ongoing_requests"] = 64
        options["logging_config"] = {"enable_access_log": False}

    @serve.deployment(**options)
    class Plain:
        def __init__(self) -> None:
            self.model = joblib.load(model_path)

        async def __call__(self, request: Request) -> dict:
            return encode(name, self.model.predict(decode(await request.json())))

    @serve.deployment(**options)
    class Batched:
        def __init__(self) -> None:
            self.model = joblib.load(model_path)

        @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
        async def predict(self, items: list[np.ndarray]) -> list[np.ndarray]:
            labels = self.model.predict(np.concatenate(items))
            bounds = np.cumsum([len(item) for item in items])[:-1]
            return np.split(labels, bounds)

        async def __call__(self, request: Request) -> dict:
            return encode(name, await self.predict(decode(await request.json())))

    return (Batched if config == "batch" else Plain).bind()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--config", default="default")
    parser.add_argument("--temp-dir", required=True, help="short absolute path (unix sockets)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=args.temp_dir,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(build(args.config, args.model, args.name), name=args.name, route_prefix="/")
    print(f"ray serve ready on http://127.0.0.1:{args.port}/", flush=True)
    try:
        while True:
            time.sleep(1)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
