-- Load and shutdown: GET /?n=N[&s=SECONDS][&dir=D]
-- Touches D/<x-request-id> when the handler starts (evidence the request was
-- accepted), sleeps s, answers "ok:N:" followed by 1000 'z' (truncation shows).
local serve = require("actorserve")

local L = serve.deployment{
  name = "L",
  num_replicas = 2,
  max_ongoing_requests = 5,
  ray_actor_options = { num_cpus = 0 },
}

local PAD = string.rep("z", 1000)

function L:__call(req)
  local q = req.query_params
  local id = req.headers["x-request-id"]
  if q.dir and id then
    local f = io.open(q.dir .. "/" .. id, "w")
    if f then f:write("x") f:close() end
  end
  local s = tonumber(q.s or "0")
  if s > 0 then serve.sleep(s) end
  return "ok:" .. (q.n or "") .. ":" .. PAD
end

app = L:bind()
