-- apps/pipeline.lua — a multi-model recommender, the shape of Ray Serve's
-- model composition examples:
--   recall (in the ingress) → two Ranker deployments scoring the candidates at
--   the same time through handles → a Combiner that merges both scores.
-- Scoring is deterministic (hashes), so the same request gets the same answer.
--   actorserve run apps/pipeline.lua:app      (its 6 replicas reserve 1.75 CPUs)
--   curl -d '{"user": "alice", "k": 3}' http://localhost:8000/
local serve = require("actorserve")

-- FNV-1a over a string, as a number in [0, 1).
local function unit_hash(s)
  local h = 2166136261
  for i = 1, #s do
    h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff
  end
  return h / 4294967296.0
end

local CATALOG = {}
for i = 1, 200 do CATALOG[i] = string.format("item-%03d", i) end

-- Candidate generation: 20 items per user, chosen by hash.
local function recall(user, n)
  local scored = {}
  for _, item in ipairs(CATALOG) do
    scored[#scored + 1] = { item = item, s = unit_hash(user .. "|" .. item) }
  end
  table.sort(scored, function(a, b) return a.s > b.s end)
  local out = {}
  for i = 1, n do out[i] = scored[i].item end
  return out
end

local Ranker = serve.deployment { name = "Ranker", num_replicas = 2,
  ray_actor_options = { num_cpus = 0.25 } }

function Ranker:init(objective)
  self.objective = objective             -- "click" or "dwell"
end

function Ranker:score(user, items)
  local scores = {}
  for i, item in ipairs(items) do
    scores[i] = unit_hash(self.objective .. "|" .. user .. "|" .. item)
  end
  return scores
end

local Combiner = serve.deployment { name = "Combiner", ray_actor_options = { num_cpus = 0.25 } }

function Combiner:init(weights)
  self.weights = weights
end

-- click and dwell arrive as values: responses passed as arguments are resolved first.
function Combiner:combine(items, click, dwell, k)
  local ranked = {}
  for i, item in ipairs(items) do
    local s = self.weights.click * click[i] + self.weights.dwell * dwell[i]
    ranked[i] = { item = item, score = math.floor(s * 1e6 + 0.5) / 1e6 }
  end
  table.sort(ranked, function(a, b)
    if a.score ~= b.score then return a.score > b.score end
    return a.item < b.item
  end)
  local top = {}
  for i = 1, math.min(k, #ranked) do top[i] = ranked[i] end
  return top
end

local Recommender = serve.deployment { name = "Recommender", max_ongoing_requests = 32,
  ray_actor_options = { num_cpus = 0.5 } }

function Recommender:init(click_ranker, dwell_ranker, combiner)
  self.click, self.dwell, self.combiner = click_ranker, dwell_ranker, combiner
end

function Recommender:__call(req)
  local q = req.method == "GET" and req.query_params or req:json()
  local user = q.user
  local k = math.tointeger(tonumber(q.k or 5))
  if type(user) ~= "string" or user == "" then serve.http_error(400, "'user' must be a non-empty string") end
  if not k or k < 1 or k > 20 then serve.http_error(400, "'k' must be an integer from 1 to 20") end
  local items = recall(user, 20)
  local click = self.click:score(user, items)   -- both rankers run at once
  local dwell = self.dwell:score(user, items)
  local top = self.combiner:combine(items, click, dwell, k):result()
  return { user = user, items = top }
end

app = Recommender:bind(Ranker:bind("click"), Ranker:bind("dwell"), Combiner:bind({ click = 0.7, dwell = 0.3 }))
