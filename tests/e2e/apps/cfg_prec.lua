-- Precedence between the code's options and the config file's.
-- Code values: num_replicas 2, max_ongoing_requests 3, user_config {greeting = "code"}.
-- GET /?s=S sleeps S seconds while counting the requests this replica runs at once
-- (peak); GET /?gate=ID&dir=D touches D/ID.started, then waits for D/release (20 s max).
local serve = require("actorserve")

local function exists(p)
  local f = io.open(p, "r")
  if f then f:close() return true end
  return false
end

local function touch(p)
  local f = assert(io.open(p, "w"))
  f:write("x")
  f:close()
end

local P = serve.deployment{
  name = "P",
  num_replicas = 2,
  max_ongoing_requests = 3,
  ray_actor_options = { num_cpus = 0 },
  user_config = { greeting = "code" },
}

function P:init()
  self.cur, self.peak, self.total, self.reconf = 0, 0, 0, 0
end

function P:reconfigure(cfg)
  self.greeting = cfg.greeting
  self.reconf = self.reconf + 1
end

function P:__call(req)
  local q = req.query_params
  self.cur = self.cur + 1
  self.total = self.total + 1
  if self.cur > self.peak then self.peak = self.cur end
  if q.gate and q.dir then
    touch(q.dir .. "/" .. q.gate .. ".started")
    for _ = 1, 1000 do
      if exists(q.dir .. "/release") then break end
      serve.sleep(0.02)
    end
  end
  if q.s then serve.sleep(tonumber(q.s)) end
  self.cur = self.cur - 1
  local c = serve.get_replica_context()
  return {
    greeting = self.greeting,
    reconf = self.reconf,
    peak = self.peak,
    total = self.total,
    pid = c.pid,
    replica_id = c.replica_id,
  }
end

app = P:bind()
