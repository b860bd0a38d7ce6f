# bench/ray_pipeline.py — apps/pipeline.lua written for Ray Serve: the same
# deployments (Recommender, Ranker x2 bindings with 2 replicas each,
# Combiner), the same replica counts and CPU reservations, the same
# deterministic scoring, so the benchmark compares the frameworks, not the work.
from ray import serve
from starlette.requests import Request


def unit_hash(s: str) -> float:
    h = 2166136261
    for b in s.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h / 4294967296.0


CATALOG = ["item-%03d" % i for i in range(1, 201)]


def recall(user: str, n: int):
    scored = sorted(CATALOG, key=lambda item: -unit_hash(user + "|" + item))
    return scored[:n]


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.25})
class Ranker:
    def __init__(self, objective: str):
        self.objective = objective

    def score(self, user, items):
        return [unit_hash(self.objective + "|" + user + "|" + item) for item in items]


@serve.deployment(ray_actor_options={"num_cpus": 0.25})
class Combiner:
    def __init__(self, weights):
        self.weights = weights

    def combine(self, items, click, dwell, k):
        ranked = []
        for i, item in enumerate(items):
            s = self.weights["click"] * click[i] + self.weights["dwell"] * dwell[i]
            ranked.append({"item": item, "score": round(s * 1e6) / 1e6})
        ranked.sort(key=lambda r: (-r["score"], r["item"]))
        return ranked[:k]


@serve.deployment(max_ongoing_requests=32, ray_actor_options={"num_cpus": 0.5})
class Recommender:
    def __init__(self, click_ranker, dwell_ranker, combiner):
        self.click, self.dwell, self.combiner = click_ranker, dwell_ranker, combiner

    async def __call__(self, request: Request):
        q = dict(request.query_params) if request.method == "GET" else await request.json()
        user, k = q["user"], int(q.get("k", 5))
        items = recall(user, 20)
        click = self.click.score.remote(user, items)   # both rankers run at once
        dwell = self.dwell.score.remote(user, items)
        top = await self.combiner.combine.remote(items, click, dwell, k)
        return {"user": user, "items": top}


app = Recommender.bind(Ranker.bind("click"), Ranker.bind("dwell"), Combiner.bind({"click": 0.7, "dwell": 0.3}))
